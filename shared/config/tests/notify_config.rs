//! `[[notify]]`: a valid sink loads with its filters; each mistake is named with its field.

use triggers_config::notify::{NotifyKind, NotifyOn};
use triggers_config::parse_str;

fn messages(source: &str) -> Vec<String> {
    match parse_str(source, "t.toml") {
        Ok(parsed) => panic!("expected errors, got {parsed:?}"),
        Err(error) => error
            .issues()
            .iter()
            .map(|issue| format!("{}:{}: {}", issue.line, issue.field, issue.message))
            .collect(),
    }
}

#[test]
fn a_webhook_and_a_slack_sink_load_with_their_filters() {
    let parsed = parse_str(
        r#"
[[notify]]
name = "ops-hook"
kind = "webhook"
on = ["failed", "workflow_failed"]
url_secret = "ops-url"
signing_key_secret = "ops-key"
sources = ["scheduled", "chained"]
projects = ["github/acme/e2e"]

[[notify]]
name = "team-slack"
kind = "slack"
on = ["rejected", "ambiguous"]
url_secret = "slack-url"
"#,
        "t.toml",
    )
    .unwrap();
    let [hook, slack] = parsed.notify.as_slice() else {
        panic!("two sinks expected")
    };
    assert_eq!(hook.kind, NotifyKind::Webhook);
    assert_eq!(
        hook.statuses(),
        vec![NotifyOn::Failed, NotifyOn::WorkflowFailed]
    );
    assert!(hook.accepts_source("schedule") && hook.accepts_source("chain"));
    assert!(!hook.accepts_source("http"));
    // gh ≡ github.
    assert!(hook.accepts_project("gh/acme/e2e"));
    assert!(!hook.accepts_project("gh/acme/api"));
    assert_eq!(slack.kind, NotifyKind::Slack);
    assert!(slack.accepts_source("http") && slack.accepts_project("gh/any/thing"));
    assert!(slack.wants(NotifyOn::Rejected) && !slack.wants(NotifyOn::Failed));
}

#[test]
fn each_mistake_is_named_with_its_line_and_field() {
    let found = messages(
        r#"
[[notify]]
name = "hook"
kind = "webhook"
on = ["failed", "exploded", "failed"]
url_secret = "url"

[[notify]]
name = "slack"
kind = "slack"
on = []
url_secret = "slack url"
signing_key_secret = "key"
sources = ["cron"]
projects = ["acme/e2e"]

[[notify]]
name = "hook"
kind = "webhook"
on = ["rejected"]
url_secret = "same"
signing_key_secret = "same"
"#,
    );
    let expected = [
        "4:notify[0].kind: a `webhook` sink needs `signing_key_secret`",
        "5:notify[0].on[1]: `exploded` is not a status to notify on",
        "5:notify[0].on[2]: `failed` is listed twice",
        "11:notify[1].on: must name at least one status",
        "12:notify[1].url_secret: `slack url` may only contain",
        "13:notify[1].signing_key_secret: a `slack` sink is not signed",
        "14:notify[1].sources[0]: `cron` is not a trigger kind",
        "15:notify[1].projects[0]:",
        "22:notify[2].signing_key_secret: must be another entry than `url_secret`",
        "18:notify[2].name: notify `hook` is already defined (notify[0])",
    ];
    for want in expected {
        assert!(
            found.iter().any(|message| message.starts_with(want)),
            "missing `{want}` in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn an_unknown_kind_or_key_is_refused() {
    let found = messages(
        "[[notify]]\nname = \"x\"\nkind = \"email\"\non = [\"failed\"]\nurl_secret = \"u\"\n",
    );
    assert!(found[0].starts_with("3:notify[0].kind:"), "{found:?}");
    let found = messages(
        "[[notify]]\nname = \"x\"\nkind = \"slack\"\non = [\"failed\"]\nurl = \"https://hooks\"\n",
    );
    assert!(found[0].contains("unknown field `url`"), "{found:?}");
}
