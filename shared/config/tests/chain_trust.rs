//! The trust rule for chains (`triggers_config::trust`) through the real loader: rules that
//! act on existing work or carry event values pin their upstream, or `check` refuses them
//! with file:line and the reason.
#![allow(clippy::unwrap_used)]

use triggers_config::chain::UpstreamOrigin;
use triggers_config::trust::{self, Pin, UpstreamTrust};
use triggers_config::{ActionKind, ConfigIssue, Selection, parse_str};

fn issues(source: &str) -> Vec<ConfigIssue> {
    match parse_str(source, "t.toml") {
        Ok(parsed) => panic!("expected errors, got {:#?}", parsed.chain),
        Err(error) => error.issues().to_vec(),
    }
}

/// The `release-gate` rule as the example file shipped it before the trust rule: an
/// approval of the production deploy's hold job after *any* successful e2e run.
const SHIPPED_RELEASE_GATE: &str = r#"
[[chain]]
name = "release-gate"
when = { project = "gh/acme/e2e", workflow = "e2e", status = ["success"] }
[[chain.then]]
action = "approve"
project = "gh/acme/deploy"
branch = "main"
job = "hold-release"
select = "latest"
"#;

#[test]
fn the_shipped_release_gate_shape_is_refused_at_check() {
    let found = issues(SHIPPED_RELEASE_GATE);
    assert_eq!(found.len(), 1, "{found:#?}");
    let issue = &found[0];
    assert_eq!(
        (issue.file.as_str(), issue.line, issue.field.as_str()),
        ("t.toml", 4, "chain[0].when")
    );
    for needle in [
        "then[0]: action = \"approve\" acts on existing work",
        "must be pinned",
        "fork PR",
        "`branch` / `tag`",
        "upstream = \"ours\"",
        "dangerously_trust_any_upstream = true",
    ] {
        assert!(issue.message.contains(needle), "{needle}: {issue}");
    }
    // Each fix is accepted: a pinned branch, `upstream = "ours"`, or the loud opt-out.
    for fixed in [
        SHIPPED_RELEASE_GATE.replace(
            "workflow = \"e2e\",",
            "workflow = \"e2e\", branch = \"main\",",
        ),
        SHIPPED_RELEASE_GATE.replace(
            "workflow = \"e2e\",",
            "workflow = \"e2e\", upstream = \"ours\",",
        ),
        SHIPPED_RELEASE_GATE.replace(
            "name = \"release-gate\"",
            "name = \"release-gate\"\ndangerously_trust_any_upstream = true",
        ),
    ] {
        let parsed = parse_str(&fixed, "t.toml").unwrap_or_else(|e| panic!("{e}\n{fixed}"));
        assert_eq!(parsed.chain[0].then[0].action, ActionKind::Approve);
    }
}

#[test]
fn rerun_and_cancel_act_on_existing_work_too() {
    for then in [
        "action = \"rerun\"\nproject = \"gh/acme/e2e\"\nfrom_failed = true\nselect = \"origin\"",
        "action = \"cancel\"\nproject = \"gh/acme/e2e\"\nselect = \"origin\"",
    ] {
        let source = format!(
            "[[chain]]\nname = \"r\"\nwhen = {{ project = \"gh/acme/api\" }}\n[[chain.then]]\n{then}\n"
        );
        let found = issues(&source);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            (found[0].line, found[0].field.as_str()),
            (3, "chain[0].when")
        );
        assert!(
            found[0].message.contains("acts on existing work"),
            "{}",
            found[0]
        );
    }
}

#[test]
fn every_templated_field_carries_event_values() {
    let rule = |then: &str| {
        format!(
            "[[chain]]\nname = \"d\"\nwhen = {{ project = \"gh/acme/api\", workflow = \"build\" }}\n[[chain.then]]\nproject = \"gh/acme/deploy\"\n{then}\n"
        )
    };
    for (then, field) in [
        ("branch = \"{{ branch }}\"", "`branch`"),
        ("tag = \"{{ tag }}\"", "`tag`"),
        (
            "branch = \"main\"\nworkflow = \"{{ workflow.name }}\"",
            "`workflow`",
        ),
        (
            "branch_map = [{ from = \"main\", to = \"x\" }, { from = \"release/*\", to = \"{{ branch }}\" }]",
            "`branch_map[1].to`",
        ),
        (
            "branch = \"main\"\nparameters = { fixed = \"text\", sha = \"v-{{ revision }}\" }",
            "`parameters.sha`",
        ),
    ] {
        let found = issues(&rule(then));
        assert_eq!(found.len(), 1, "{then}: {found:#?}");
        assert_eq!(found[0].field, "chain[0].when", "{then}");
        assert!(
            found[0]
                .message
                .contains(&format!("{field} carries values from the event downstream")),
            "{then}: {}",
            found[0]
        );
    }
    // Fixed text only: a new pipeline of trusted code, nothing from the event.
    for then in [
        "branch = \"main\"\nparameters = { fixed = \"text\", n = 3 }",
        "branch_map = [{ from = \"*\", to = \"staging\" }]",
        "tag = \"v1.0.0\"\nworkflow = \"deploy\"",
    ] {
        parse_str(&rule(then), "t.toml").unwrap_or_else(|e| panic!("{then}: {e}"));
    }
}

#[test]
fn a_pattern_pins_only_when_it_starts_with_literal_text() {
    for pinned in ["main", "release/*", "release/**", "v*", "hotfix-?"] {
        assert!(trust::pattern_pins(pinned), "{pinned}");
    }
    for open in ["*", "**", "**/main", "?ain", "[a-z]*", "{main,dev}", "\\*"] {
        assert!(!trust::pattern_pins(open), "{open}");
    }
    let approve = |when: &str| {
        format!(
            "[[chain]]\nname = \"g\"\nwhen = {{ project = \"gh/acme/e2e\", {when} }}\n[[chain.then]]\naction = \"approve\"\nproject = \"gh/acme/deploy\"\njob = \"hold\"\nselect = \"origin\"\n"
        )
    };
    for when in [
        "branch = \"*\"",
        "branch = [\"main\", \"**\"]",
        "tag = \"*\"",
        "branch = \"{main,dev}\"",
    ] {
        let found = issues(&approve(when));
        assert_eq!(found.len(), 1, "{when}: {found:#?}");
        assert!(
            found[0]
                .message
                .contains("starts with a wildcard pins nothing"),
            "{when}: {}",
            found[0]
        );
    }
    for when in [
        "branch = [\"main\", \"release/*\"]",
        "tag = \"v*\"",
        "upstream = \"ours\"",
        "branch = \"*\", upstream = \"ours\"",
    ] {
        let parsed = parse_str(&approve(when), "t.toml").unwrap_or_else(|e| panic!("{when}: {e}"));
        assert_eq!(
            trust::upstream_trust(&parsed.chain[0]),
            UpstreamTrust::Pinned,
            "{when}"
        );
    }
}

#[test]
fn upstream_ours_parses_and_pins() {
    let source = "[[chain]]\nname = \"g\"\nwhen = { project = \"gh/acme/e2e\", upstream = \"ours\" }\n[[chain.then]]\naction = \"cancel\"\nproject = \"gh/acme/deploy\"\nselect = \"origin\"\n";
    let parsed = parse_str(source, "t.toml").unwrap();
    let when = parsed.chain[0].when.as_ref().unwrap();
    assert_eq!(when.upstream, Some(UpstreamOrigin::Ours));
    assert_eq!(trust::pin(when), Pin::Ours);
    assert_eq!(trust::unpinned_action(&parsed.chain[0], 0), None);
    let found = issues(&source.replace("\"ours\"", "\"theirs\""));
    assert!(
        found[0].message.contains("unknown variant `theirs`"),
        "{}",
        found[0]
    );
}

#[test]
fn fan_in_pins_every_upstream_unless_it_joins_on_origin() {
    let join = |first: &str, correlate: &str| {
        format!(
            "[[chain]]\nname = \"j\"\nafter = [{{ project = \"gh/acme/api\"{first} }},\n  {{ project = \"gh/acme/web\", branch = \"main\" }}]\ncorrelate = \"{correlate}\"\nwindow = \"1h\"\n[[chain.then]]\nproject = \"gh/acme/e2e\"\nbranch = \"main\"\nparameters = {{ sha = \"{{{{ revision }}}}\" }}\n"
        )
    };
    let found = issues(&join("", "branch"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (found[0].line, found[0].field.as_str()),
        (3, "chain[0].after[0]")
    );
    assert!(
        found[0].message.contains("`parameters.sha` carries values"),
        "{}",
        found[0]
    );
    parse_str(&join(", branch = \"main\"", "branch"), "t.toml").unwrap();
    parse_str(&join(", upstream = \"ours\"", "tag"), "t.toml").unwrap();
    // Only pipelines this service started have an origin: joining on it pins every upstream.
    let origin = parse_str(&join("", "origin"), "t.toml").unwrap();
    assert_eq!(
        trust::upstream_trust(&origin.chain[0]),
        UpstreamTrust::Pinned
    );
}

#[test]
fn the_opt_out_is_loud_and_per_rule() {
    let source = SHIPPED_RELEASE_GATE.replace(
        "name = \"release-gate\"",
        "name = \"release-gate\"\ndangerously_trust_any_upstream = true",
    );
    let parsed = parse_str(&source, "t.toml").unwrap();
    assert!(parsed.chain[0].dangerously_trust_any_upstream);
    assert_eq!(
        trust::upstream_trust(&parsed.chain[0]),
        UpstreamTrust::OptedOut
    );
    assert_eq!(trust::OPT_OUT, "dangerously_trust_any_upstream");
    // Spelled any other way it is an unknown field, not a silent opt-out.
    let found = issues(&source.replace("dangerously_trust_any_upstream", "trust_any_upstream"));
    assert!(
        found[0]
            .message
            .contains("unknown field `trust_any_upstream`"),
        "{}",
        found[0]
    );
}

#[test]
fn the_example_file_ships_pinned_rules_and_origin_selection() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../triggers.toml");
    let file = triggers_config::load_file(&path).unwrap();
    let mut approvals = 0;
    for chain in &file.chain {
        assert!(!chain.dangerously_trust_any_upstream, "{}", chain.name);
        assert_ne!(
            trust::upstream_trust(chain),
            UpstreamTrust::OptedOut,
            "{}",
            chain.name
        );
        for (index, action) in chain.then.iter().enumerate() {
            assert_eq!(trust::unpinned_action(chain, index), None, "{}", chain.name);
            if action.action != ActionKind::Pipeline {
                approvals += 1;
                assert_eq!(action.select, Some(Selection::Origin), "{}", chain.name);
                assert!(
                    chain
                        .upstreams()
                        .iter()
                        .all(|m| trust::pin(m) == Pin::Refs || trust::pin(m) == Pin::Ours),
                    "{}",
                    chain.name
                );
            }
        }
    }
    assert!(approvals > 0, "the example shows an approval gate");
}
