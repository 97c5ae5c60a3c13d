//! `[[chain]]` through the real loader: a valid file, and each class of error with its line.
#![allow(clippy::unwrap_used)]

use triggers_config::chain::{CompletionStatus, Correlation, EventKind};
use triggers_config::{ActionKind, ConfigIssue, ParameterValue, Selection, parse_str};

fn issues(source: &str) -> Vec<ConfigIssue> {
    match parse_str(source, "t.toml") {
        Ok(parsed) => panic!("expected errors, got {:#?}", parsed.chain),
        Err(error) => error.issues().to_vec(),
    }
}

/// Exactly one issue, on `line`, at a field ending in `field`, with `message` in its text.
fn single_issue(source: &str, line: usize, field: &str, message: &str) {
    let found = issues(source);
    assert_eq!(found.len(), 1, "expected one issue, got {found:#?}");
    let issue = &found[0];
    assert_eq!(issue.line, line, "{issue}");
    assert!(
        issue.field.ends_with(field),
        "field {:?} should end with {field:?}: {issue}",
        issue.field
    );
    assert!(
        issue.message.contains(message),
        "{:?} should mention {message:?}",
        issue.message
    );
}

const SKETCH: &str = r#"
[[chain]]
name = "deploy-after-build"
when = { project = "gh/acme/api", workflow = "build", branch = "main", status = ["success"] }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"
parameters = { api_sha = "{{ revision }}", from = "{{ project.slug }}#{{ pipeline.number }}", dry = false, count = 3 }

[[chain]]
name = "e2e-when-both-built"
after = [{ project = "gh/acme/api", workflow = "build" }, { project = "github/acme/web", workflow = "build" }]
correlate = "origin"
window = "2h"
[[chain.then]]
action = "pipeline"
project = "gh/acme/e2e"
branch = "{{ branch }}"

[[chain]]
name = "release-gate"
when = { project = "gh/acme/e2e", workflow = "e2e", branch = "main", status = ["success"] }
[[chain.then]]
action = "approve"
project = "gh/acme/deploy"
job = "hold-release"
select = "origin"

[[chain]]
name = "retry-flaky-lint"
when = { project = ["gh/acme/api", "github/acme/web"], job = ["lint", "lint-*"], upstream = "ours", status = "failed" }
[[chain.then]]
action = "rerun"
project = "gh/acme/tools"
jobs = ["lint"]
select = "latest"
branch = "main"
[[chain.then]]
action = "cancel"
project = "gh/acme/tools"
workflow = "{{ workflow.name }}"
select = "origin"

[[chain]]
name = "promote-releases"
when = { project = "gh/acme/api", tag = "v*" }
[[chain.then]]
project = "gh/acme/deploy"
branch_map = [{ from = "release/*", to = "staging" }, { from = "main", to = "production" }]
workflow = "promote-{{ tag }}"
"#;

#[test]
fn the_design_sketch_and_friends_are_valid() {
    let parsed = parse_str(SKETCH, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.chain.len(), 5);

    let deploy = &parsed.chain[0];
    assert!(!deploy.is_fan_in());
    let when = deploy.when.as_ref().unwrap();
    assert_eq!(when.event_kind(), EventKind::WorkflowCompleted);
    assert_eq!(when.statuses(), [CompletionStatus::Success]);
    let action = &deploy.then[0];
    assert_eq!(action.action, ActionKind::Pipeline);
    assert_eq!(
        action.parameters.get("api_sha"),
        Some(&ParameterValue::String("{{ revision }}".into()))
    );
    assert_eq!(
        action.parameters.get("count"),
        Some(&ParameterValue::Integer(3))
    );

    let fan_in = &parsed.chain[1];
    assert!(fan_in.is_fan_in());
    assert_eq!(fan_in.upstreams().len(), 2);
    assert_eq!(fan_in.correlate, Some(Correlation::Origin));
    assert_eq!(fan_in.window_duration().unwrap().as_secs(), 7_200);

    assert_eq!(parsed.chain[2].then[0].select, Some(Selection::Origin));

    let retry = &parsed.chain[3];
    let when = retry.when.as_ref().unwrap();
    assert_eq!(
        when.event_kind(),
        EventKind::JobCompleted,
        "`job` implies job-completed"
    );
    assert_eq!(
        when.statuses(),
        [CompletionStatus::Failed],
        "a single status may be a string"
    );
    assert_eq!(retry.then[1].action, ActionKind::Cancel);

    let promote = &parsed.chain[4];
    assert_eq!(
        promote.then[0].action,
        ActionKind::Pipeline,
        "pipeline is the default action"
    );
    assert_eq!(promote.then[0].branch_map.len(), 2);
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    single_issue(
        "[[chain]]\nname = \"a\"\nwhen = { project = \"gh/a/b\" }\nretries = 3\n[[chain.then]]\nproject = \"gh/a/c\"\nbranch = \"main\"\n",
        4,
        "",
        "unknown field `retries`",
    );
    single_issue(
        "[[chain]]\nname = \"a\"\nwhen = { project = \"gh/a/b\", branches = \"main\" }\n[[chain.then]]\nproject = \"gh/a/c\"\nbranch = \"main\"\n",
        3,
        "",
        "unknown field `branches`",
    );
    single_issue(
        "[[chain]]\nname = \"a\"\nwhen = { project = \"gh/a/b\" }\n[[chain.then]]\nproject = \"gh/a/c\"\nbranch = \"main\"\nparams = {}\n",
        7,
        "",
        "unknown field `params`",
    );
    single_issue(
        "[[chain]]\nname = \"a\"\nwhen = { project = \"gh/a/b\", status = [\"succeeded\"] }\n[[chain.then]]\nproject = \"gh/a/c\"\nbranch = \"main\"\n",
        3,
        "",
        "unknown variant `succeeded`",
    );
    single_issue(
        "[[chain]]\nname = \"a\"\nwhen = { project = \"gh/a/b\" }\n[[chain.then]]\naction = \"retry\"\nproject = \"gh/a/c\"\n",
        5,
        "",
        "unknown variant `retry`",
    );
}

#[test]
fn template_errors_point_at_the_templated_field() {
    let rule = |then: &str| {
        format!(
            "[[chain]]\nname = \"a\"\nwhen = {{ project = \"gh/a/b\", branch = \"main\" }}\n[[chain.then]]\nproject = \"gh/a/c\"\n{then}\n"
        )
    };
    single_issue(
        &rule("branch = \"main\"\nparameters = { sha = \"{{ revison }}\" }"),
        7,
        "then[0].parameters.sha",
        "unknown template variable `revison`",
    );
    single_issue(
        &rule("branch = \"{{ branch\""),
        6,
        "then[0].branch",
        "never closed",
    );
    single_issue(
        &rule("branch = \"main\"\nworkflow = \"{{ branch | upper }}\""),
        7,
        "then[0].workflow",
        "only a variable name",
    );
    single_issue(
        &rule("branch = \"main\"\nparameters = { j = \"{{ job.name }}\" }"),
        7,
        "then[0].parameters.j",
        "only set on job-completed events",
    );
    single_issue(
        &rule("branch_map = [{ from = \"main\", to = \"{{ nope }}\" }]"),
        6,
        "then[0].branch_map[0].to",
        "unknown template variable",
    );
    // A literal branch is still checked as a git ref.
    single_issue(
        &rule("branch = \"a..b\""),
        6,
        "then[0].branch",
        "not a valid branch or tag name",
    );
    // `{{ job.name }}` is fine on job-completed rules.
    parse_str(
        "[[chain]]\nname = \"a\"\nwhen = { project = \"gh/a/b\", job = \"t\", branch = \"main\" }\n[[chain.then]]\nproject = \"gh/a/c\"\nbranch = \"main\"\nparameters = { j = \"{{ job.name }}\" }\n",
        "t.toml",
    )
    .unwrap();
}

#[test]
fn matcher_errors_name_their_line() {
    let rule = |when: &str| {
        format!(
            "[[chain]]\nname = \"a\"\nwhen = {when}\n[[chain.then]]\nproject = \"gh/x/y\"\nbranch = \"main\"\n"
        )
    };
    single_issue(
        &rule("{ project = \"*/acme/api\" }"),
        3,
        "when.project[0]",
        "write the VCS out",
    );
    single_issue(
        &rule("{ project = \"svn/acme/api\" }"),
        3,
        "when.project[0]",
        "unknown VCS",
    );
    single_issue(
        &rule("{ project = \"gh/acme/[api\" }"),
        3,
        "when.project[0]",
        "not a valid pattern",
    );
    single_issue(
        &rule("{ project = \"gh/acme/api\", branch = [\"main\", \"rel/[x\"] }"),
        3,
        "when.branch[1]",
        "not a valid pattern",
    );
    single_issue(
        &rule("{ project = \"gh/acme/api\", branch = \"main\", tag = \"v*\" }"),
        3,
        "when.tag",
        "branch or a tag",
    );
    single_issue(
        &rule("{ project = \"gh/acme/api\", event = \"workflow-completed\", job = \"t\" }"),
        3,
        "when.job",
        "job-completed",
    );
    single_issue(
        &rule("{ project = \"gh/acme/api\", workflow = [] }"),
        3,
        "when.workflow",
        "empty list",
    );
    single_issue(
        &rule("{ project = [] }"),
        3,
        "when.project",
        "at least one project",
    );
}

#[test]
fn rule_level_errors() {
    // Neither `when` nor `after`: reported on the rule itself.
    single_issue(
        "[[chain]]\nname = \"a\"\n[[chain.then]]\nproject = \"gh/x/y\"\nbranch = \"main\"\n",
        1,
        "chain[0]",
        "needs `when",
    );
    single_issue(
        "[[chain]]\nname = \"has space\"\nwhen = { project = \"gh/a/b\" }\n[[chain.then]]\nproject = \"gh/x/y\"\nbranch = \"main\"\n",
        2,
        "chain[0].name",
        "may only contain",
    );
    single_issue(
        "[[chain]]\nname = \"a\"\nwhen = { project = \"gh/a/b\" }\n",
        1,
        "chain[0]",
        "at least one `[[chain.then]]`",
    );
    let twice = "[[chain]]\nname = \"a\"\nwhen = { project = \"gh/a/b\" }\n[[chain.then]]\nproject = \"gh/x/y\"\nbranch = \"main\"\n";
    single_issue(
        &format!("{twice}{twice}"),
        8,
        "chain[1].name",
        "duplicate rule name `a`",
    );
}

#[test]
fn action_errors_by_kind() {
    let rule = |then: &str| {
        format!(
            "[[chain]]\nname = \"a\"\nwhen = {{ project = \"gh/a/b\", branch = \"main\" }}\n[[chain.then]]\n{then}\n"
        )
    };
    single_issue(
        &rule("project = \"gh/x/y\""),
        4,
        "then[0]",
        "needs `branch`",
    );
    single_issue(
        &rule("project = \"gh/x/y\"\nbranch = \"main\"\ntag = \"v1\""),
        7,
        "then[0].tag",
        "not both",
    );
    single_issue(
        &rule(
            "project = \"gh/x/y\"\nbranch = \"main\"\nbranch_map = [{ from = \"*\", to = \"x\" }]",
        ),
        7,
        "then[0].branch_map",
        "only one of",
    );
    single_issue(
        &rule("project = \"gh/x/*\"\nbranch = \"main\""),
        5,
        "then[0].project",
        "not allowed in a project slug",
    );
    single_issue(
        &rule("project = \"gh/x/y\"\nbranch = \"main\"\nselect = \"origin\""),
        7,
        "then[0].select",
        "does not apply",
    );
    single_issue(
        &rule("project = \"gh/x/y\"\nbranch = \"main\"\nconfig = { branch = \"main\" }"),
        7,
        "then[0].config",
        "needs `definition_id`",
    );
    single_issue(
        &rule("project = \"gh/x/y\"\nbranch = \"main\"\nparameters = { \"1bad\" = \"x\" }"),
        7,
        "then[0].parameters.1bad",
        "not a valid pipeline parameter name",
    );

    single_issue(
        &rule("action = \"approve\"\nproject = \"gh/x/y\"\nselect = \"origin\""),
        4,
        "then[0]",
        "needs `job`",
    );
    single_issue(
        &rule("action = \"approve\"\nproject = \"gh/x/y\"\njob = \"hold\""),
        4,
        "then[0]",
        "needs `select",
    );
    single_issue(
        &rule("action = \"approve\"\nproject = \"gh/x/y\"\njob = \"hold\"\nselect = \"latest\""),
        4,
        "then[0]",
        "needs `branch`",
    );
    single_issue(
        &rule(
            "action = \"approve\"\nproject = \"gh/x/y\"\njob = \"hold\"\nselect = \"origin\"\nbranch = \"main\"",
        ),
        9,
        "then[0].branch",
        "only used with select = \"latest\"",
    );
    single_issue(
        &rule(
            "action = \"approve\"\nproject = \"gh/x/y\"\njob = \"hold\"\nselect = \"origin\"\nparameters = { a = \"b\" }",
        ),
        9,
        "then[0].parameters",
        "only a new pipeline",
    );
    // Neither `jobs` nor `from_failed`: the whole workflow; an empty list is a mistake.
    parse_str(
        &rule("action = \"rerun\"\nproject = \"gh/x/y\"\nselect = \"origin\""),
        "triggers.toml",
    )
    .expect("a rerun naming no jobs reruns the whole workflow");
    single_issue(
        &rule("action = \"rerun\"\nproject = \"gh/x/y\"\nselect = \"origin\"\njobs = []"),
        8,
        "then[0].jobs",
        "leave `jobs` out to rerun the whole workflow",
    );
    single_issue(
        &rule(
            "action = \"rerun\"\nproject = \"gh/x/y\"\nselect = \"origin\"\nfrom_failed = true\njobs = [\"a\"]",
        ),
        9,
        "then[0].jobs",
        "not both",
    );
    single_issue(
        &rule("action = \"cancel\"\nproject = \"gh/x/y\"\nselect = \"origin\"\njob = \"x\""),
        8,
        "then[0].job",
        "does not apply to action = \"cancel\"",
    );
}

#[test]
fn revision_selection_and_correlation_stay_within_one_repository() {
    let approve = |upstream: &str| {
        format!(
            "[[chain]]\nname = \"a\"\nwhen = {{ project = \"{upstream}\", workflow = \"build\", branch = \"main\" }}\n[[chain.then]]\naction = \"approve\"\nproject = \"gh/acme/api\"\njob = \"hold\"\nselect = \"revision\"\nworkflow = \"deploy\"\n"
        )
    };
    single_issue(
        &approve("gh/acme/web"),
        8,
        "then[0].select",
        "only works within one repository",
    );
    single_issue(
        &approve("gh/acme/*"),
        8,
        "then[0].select",
        "only works within one repository",
    );
    // Same repository, whichever spelling and capitalisation.
    parse_str(&approve("github/Acme/API"), "t.toml").unwrap();

    let fan_in = |second: &str| {
        format!(
            "[[chain]]\nname = \"j\"\nafter = [{{ project = \"gh/acme/api\", workflow = \"build\" }}, {{ project = \"{second}\", workflow = \"lint\" }}]\ncorrelate = \"revision\"\nwindow = \"1h\"\n[[chain.then]]\nproject = \"gh/acme/e2e\"\nbranch = \"main\"\n"
        )
    };
    single_issue(
        &fan_in("gh/acme/web"),
        4,
        "chain[0].correlate",
        "only works within one repository",
    );
    parse_str(&fan_in("github/acme/api"), "t.toml").unwrap();
}

#[test]
fn fan_in_rules() {
    let join = |after: &str, rest: &str| {
        format!(
            "[[chain]]\nname = \"j\"\n{after}\n{rest}\n[[chain.then]]\nproject = \"gh/acme/e2e\"\nbranch = \"main\"\n"
        )
    };
    let two = "after = [{ project = \"gh/acme/api\" }, { project = \"gh/acme/web\" }]";
    single_issue(
        &join(
            "after = [{ project = \"gh/acme/api\" }]",
            "correlate = \"origin\"\nwindow = \"1h\"",
        ),
        3,
        "chain[0].after",
        "at least two",
    );
    single_issue(
        &join(two, "window = \"1h\""),
        1,
        "chain[0]",
        "needs `correlate",
    );
    single_issue(
        &join(two, "correlate = \"tag\""),
        1,
        "chain[0]",
        "needs `window`",
    );
    single_issue(
        &join(two, "correlate = \"tag\"\nwindow = \"30s\""),
        5,
        "chain[0].window",
        "between 1m and 7d",
    );
    single_issue(
        &join(two, "correlate = \"tag\"\nwindow = \"2 hours\""),
        5,
        "chain[0].window",
        "unknown unit",
    );
    single_issue(
        &join(
            "after = [{ project = \"gh/acme/api\", status = \"failed\" }, { project = \"gh/acme/web\" }]",
            "correlate = \"branch\"\nwindow = \"1h\"",
        ),
        3,
        "chain[0].after[0].status",
        "does not apply",
    );
    single_issue(
        &join(
            "when = { project = \"gh/acme/api\" }",
            "correlate = \"branch\"",
        ),
        4,
        "chain[0].correlate",
        "only to fan-in",
    );
    single_issue(
        &join(
            &format!("when = {{ project = \"gh/acme/api\" }}\n{two}"),
            "correlate = \"branch\"\nwindow = \"1h\"",
        ),
        4,
        "chain[0].after",
        "not both",
    );
    parse_str(
        &join(two, "correlate = \"branch\"\nwindow = \"7d\""),
        "t.toml",
    )
    .unwrap();
}

fn pipeline_rule(
    name: &str,
    upstream: &str,
    downstream: &str,
    extra_when: &str,
    then: &str,
) -> String {
    format!(
        "[[chain]]\nname = \"{name}\"\nwhen = {{ project = \"{upstream}\"{extra_when} }}\n[[chain.then]]\nproject = \"{downstream}\"\n{then}\n"
    )
}

#[test]
fn rules_that_trigger_each_other_are_rejected_as_a_loop() {
    let a = pipeline_rule("a", "gh/acme/api", "gh/acme/web", "", "branch = \"main\"");
    let b = pipeline_rule("b", "gh/acme/web", "gh/acme/api", "", "branch = \"main\"");
    let found = issues(&format!("{a}{b}"));
    assert_eq!(found.len(), 1, "one loop is reported once: {found:#?}");
    assert_eq!(found[0].field, "chain[0].then[0].project");
    assert_eq!(found[0].line, 5);
    assert!(
        found[0].message.contains("a → b → a"),
        "{}",
        found[0].message
    );

    // Through three rules and a glob.
    let c = pipeline_rule("c", "gh/acme/e2e", "gh/acme/api", "", "branch = \"main\"");
    let a2 = pipeline_rule("a", "gh/acme/api", "gh/acme/web", "", "branch = \"main\"");
    let b2 = pipeline_rule(
        "b",
        "gh/acme/*",
        "gh/acme/e2e",
        ", workflow = \"build\"",
        "branch = \"main\"",
    );
    let found = issues(&format!("{a2}{b2}{c}"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].message.contains("a → b"), "{}", found[0].message);
}

#[test]
fn a_rule_that_acts_on_its_own_upstream_is_a_loop() {
    // "Rerun when it fails" never stops on a test that always fails.
    let source = "[[chain]]\nname = \"retry\"\nwhen = { project = \"gh/acme/api\", upstream = \"ours\", status = \"failed\" }\n[[chain.then]]\naction = \"rerun\"\nproject = \"gh/acme/api\"\nfrom_failed = true\nselect = \"revision\"\n";
    single_issue(source, 6, "chain[0].then[0].project", "retry → retry");
    // Same-as-upstream branch: unknown at check time, so assumed to match.
    single_issue(
        &pipeline_rule(
            "self",
            "github/acme/api",
            "gh/acme/api",
            ", branch = \"release/*\"",
            "branch = \"{{ branch }}\"",
        ),
        5,
        "then[0].project",
        "self → self",
    );
}

#[test]
fn rules_that_cannot_reach_each_other_are_not_a_loop() {
    // The downstream pipeline runs on `deploy`, which the upstream rule does not watch.
    let a = pipeline_rule(
        "a",
        "gh/acme/api",
        "gh/acme/web",
        ", branch = \"main\"",
        "branch = \"main\"",
    );
    let b = pipeline_rule("b", "gh/acme/web", "gh/acme/api", "", "branch = \"deploy\"");
    parse_str(&format!("{a}{b}"), "t.toml").unwrap();
    // A tag pipeline never matches a branch filter, and vice versa.
    let b = pipeline_rule("b", "gh/acme/web", "gh/acme/api", "", "tag = \"v1\"");
    parse_str(&format!("{a}{b}"), "t.toml").unwrap();
    // Mapped branches are known when every target is literal.
    let b = pipeline_rule(
        "b",
        "gh/acme/web",
        "gh/acme/api",
        "",
        "branch_map = [{ from = \"*\", to = \"staging\" }]",
    );
    parse_str(&format!("{a}{b}"), "t.toml").unwrap();
    // Cancelling produces only `canceled` completions, which a success rule ignores.
    let cancel = "[[chain]]\nname = \"stop\"\nwhen = { project = \"gh/acme/api\", branch = \"main\", status = \"failed\" }\n[[chain.then]]\naction = \"cancel\"\nproject = \"gh/acme/api\"\nselect = \"origin\"\n";
    parse_str(cancel, "t.toml").unwrap();
    // ...but not one that reacts to cancellations.
    let loops = cancel.replace("status = \"failed\"", "status = [\"failed\", \"canceled\"]");
    single_issue(&loops, 6, "then[0].project", "stop → stop");
}

#[test]
fn several_problems_are_reported_together() {
    let source = "[[chain]]\nname = \"a\"\nwhen = { project = \"gh/a/b\" }\n[[chain.then]]\nproject = \"gh/x/y\"\nbranch = \"{{ nope }}\"\n[[chain.then]]\naction = \"approve\"\nproject = \"gh/x/y\"\n";
    let found = issues(source);
    let fields: Vec<&str> = found.iter().map(|i| i.field.as_str()).collect();
    assert!(fields.contains(&"chain[0].then[0].branch"), "{fields:?}");
    assert!(fields.contains(&"chain[0].then[1]"), "{fields:?}");
    assert!(found.len() >= 3, "approve lacks job and select: {found:#?}");
}

#[test]
fn workflow_actions_only_feed_rules_watching_that_workflow() {
    let approve = |watched: &str, approved: &str| {
        format!(
            "[[chain]]\nname = \"gate\"\nwhen = {{ project = \"gh/acme/api\", workflow = \"{watched}\", branch = \"main\" }}\n[[chain.then]]\naction = \"approve\"\nproject = \"gh/acme/api\"\njob = \"hold\"\nselect = \"origin\"\nworkflow = \"{approved}\"\n"
        )
    };
    // Approving `deploy` lets `deploy` finish; the rule watches `build`.
    parse_str(&approve("build", "deploy"), "t.toml").unwrap();
    // Approving the watched workflow itself lets it complete again: a loop.
    single_issue(
        &approve("build", "build"),
        6,
        "then[0].project",
        "gate → gate",
    );
    single_issue(&approve("b*", "build"), 6, "then[0].project", "gate → gate");
}
