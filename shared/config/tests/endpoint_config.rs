//! `[[endpoint]]` and `[[client]]` in the triggers file: the model and file:line errors.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::time::Duration;

use triggers_config::endpoint::{EndpointSelect, ParameterType, RateLimit};
use triggers_config::{ActionKind, ConfigError, ConfigIssue, ParameterValue, parse_str};

fn issues(source: &str) -> Vec<ConfigIssue> {
    match parse_str(source, "triggers.toml") {
        Ok(_) => panic!("expected the file to be rejected:\n{source}"),
        Err(ConfigError::Invalid(issues)) => issues,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// Asserts one issue names `field` on `line` with a message containing `part`.
#[track_caller]
fn assert_issue(found: &[ConfigIssue], line: usize, field: &str, part: &str) {
    assert!(
        found
            .iter()
            .any(|i| i.line == line && i.field == field && i.message.contains(part)),
        "no issue at line {line} for `{field}` containing {part:?}; found:\n{}",
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const FULL: &str = r#"
[circleci]
token = "ci-bot"

[[endpoint]]
name = "deploy-staging"
description = "Deploy a release to staging"
action = "pipeline"
target = { project = "gh/acme/deploy", branch = "main", branches = ["main", "release/*"], parameters = { env = "staging" } }
parameters.version = { type = "string", pattern = '^\d+\.\d+\.\d+$', required = true, max_length = 32 }
parameters.dry_run = { type = "boolean", default = false }
parameters.shards = { type = "integer", minimum = 1, maximum = 8, default = 2 }
parameters.region = { type = "string", enum = ["eu", "us"], default = "eu" }

[[endpoint]]
name = "approve-release"
action = "approve"
job = "hold-release"
select = "latest"
target = { project = "gh/acme/deploy", branch = "main", workflow = "deploy" }

[[endpoint]]
name = "rerun-e2e"
action = "rerun"
from_failed = true
target = { project = "gh/acme/e2e", tags = ["v*"] }

[[client]]
name = "release-bot"
endpoints = ["deploy-staging", "approve-release"]
rate_limit = "30/1m"

[[client]]
name = "cms"
endpoints = ["deploy-staging"]
"#;

#[test]
fn endpoints_and_clients_parse_with_their_schemas_and_policies() {
    let file = parse_str(FULL, "triggers.toml").unwrap();
    let [deploy, approve, rerun] = file.endpoint.as_slice() else {
        panic!("three endpoints expected");
    };
    assert_eq!(deploy.action, ActionKind::Pipeline);
    assert_eq!(deploy.target.branch.as_deref(), Some("main"));
    assert_eq!(deploy.target.branches, ["main", "release/*"]);
    assert_eq!(
        deploy.target.parameters.get("env"),
        Some(&ParameterValue::String("staging".into()))
    );
    let version = &deploy.parameters["version"];
    assert_eq!(version.kind, ParameterType::String);
    assert!(version.required);
    assert_eq!(version.max_length, Some(32));
    assert_eq!(
        deploy.parameters["dry_run"].default,
        Some(ParameterValue::Boolean(false))
    );
    assert_eq!(deploy.parameters["shards"].maximum, Some(8));
    assert_eq!(
        deploy.parameters["region"].allowed.as_ref().unwrap().len(),
        2
    );

    assert_eq!(approve.action, ActionKind::Approve);
    assert_eq!(approve.job.as_deref(), Some("hold-release"));
    assert_eq!(approve.select, EndpointSelect::Latest);
    assert_eq!(rerun.from_failed, Some(true));
    assert_eq!(rerun.select, EndpointSelect::Caller, "the default");

    let [bot, cms] = file.client.as_slice() else {
        panic!("two clients expected");
    };
    assert!(bot.may_call("approve-release"));
    assert!(!cms.may_call("approve-release"));
    assert_eq!(
        bot.rate(),
        Some(RateLimit {
            requests: 30,
            window: Duration::from_secs(60)
        })
    );
    assert_eq!(cms.rate(), None);
}

#[test]
fn a_file_without_endpoints_or_clients_is_fine() {
    let file = parse_str("[circleci]\ntoken = \"x\"\n", "t.toml").unwrap();
    assert!(file.endpoint.is_empty());
    assert!(file.client.is_empty());
}

#[test]
fn endpoint_names_must_be_unique_and_fit_a_url() {
    let found = issues(
        r#"
[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy" }

[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy" }

[[endpoint]]
name = "../admin"
target = { project = "gh/acme/deploy" }

[[endpoint]]
name = "with space"
target = { project = "gh/acme/deploy" }
"#,
    );
    assert_issue(
        &found,
        7,
        "endpoint[1].name",
        "duplicate endpoint name `deploy`",
    );
    assert_issue(&found, 11, "endpoint[2].name", "part of the URL");
    assert_issue(&found, 15, "endpoint[3].name", "may only contain");
}

#[test]
fn targets_are_checked_like_every_other_target_plus_the_branch_policy() {
    let found = issues(
        r#"
[[endpoint]]
name = "a"
target = { project = "acme/deploy", branch = "../etc", branches = ["release/[", "main", "main"] }

[[endpoint]]
name = "b"
target = { project = "gh/acme/deploy", branch = "main", tag = "v1" }

[[endpoint]]
name = "c"
action = "approve"
job = "hold"
target = { project = "gh/acme/deploy", parameters = { x = 1 }, definition_id = "8b6b1a5e-1c8f-4b39-9d5c-1e2f3a4b5c6d" }
"#,
    );
    assert_issue(&found, 4, "endpoint[0].target.project", "");
    assert_issue(
        &found,
        4,
        "endpoint[0].target.branch",
        "not a valid branch or tag name",
    );
    assert_issue(
        &found,
        4,
        "endpoint[0].target.branches[0]",
        "not a valid pattern",
    );
    assert_issue(&found, 4, "endpoint[0].target.branches", "twice");
    assert_issue(&found, 8, "endpoint[1].target.tag", "not both");
    assert_issue(
        &found,
        14,
        "endpoint[2].target.parameters",
        "only to action = \"pipeline\"",
    );
    assert_issue(
        &found,
        14,
        "endpoint[2].target.definition_id",
        "only to action = \"pipeline\"",
    );
}

#[test]
fn every_schema_rule_is_checked() {
    let found = issues(
        r#"
[circleci]
workflow_parameter = "run-workflow"

[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy", workflow = "deploy", parameters = { env = "prod" } }
parameters.1bad = { type = "string" }
parameters.env = { type = "string" }
parameters.run-workflow = { type = "string" }
parameters.flag = { type = "boolean", pattern = "x", max_length = 3, minimum = 1 }
parameters.count = { type = "integer", minimum = 5, maximum = 1, default = 9 }
parameters.regex = { type = "string", pattern = "(unclosed" }
parameters.both = { type = "string", required = true, default = "x" }
parameters.choice = { type = "string", enum = ["ok", "way-too-long"], max_length = 5, default = "nope" }
parameters.empty = { type = "string", enum = [] }
parameters.mixed = { type = "integer", enum = ["1"] }
parameters.long = { type = "string", max_length = 513 }
parameters.float = { type = "string", default = 1.5 }
"#,
    );
    // A float default is a type error of TOML decoding: reported alone, before validation.
    assert_eq!(found.len(), 1, "{found:?}");
    assert_issue(&found, 19, "endpoint[0].parameters.float.default", "");

    let found = issues(
        r#"
[circleci]
workflow_parameter = "run-workflow"

[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy", workflow = "deploy", parameters = { env = "prod" } }
parameters.1bad = { type = "string" }
parameters.env = { type = "string" }
parameters.run-workflow = { type = "string" }
parameters.flag = { type = "boolean", pattern = "x", max_length = 3, minimum = 1 }
parameters.count = { type = "integer", minimum = 5, maximum = 1, default = 9 }
parameters.regex = { type = "string", pattern = "(unclosed" }
parameters.both = { type = "string", required = true, default = "x" }
parameters.choice = { type = "string", enum = ["ok", "way-too-long"], max_length = 5, default = "nope" }
parameters.empty = { type = "string", enum = [] }
parameters.mixed = { type = "integer", enum = ["1"] }
parameters.long = { type = "string", max_length = 513 }
"#,
    );
    let at = "endpoint[0].parameters";
    assert_issue(
        &found,
        8,
        &format!("{at}.1bad"),
        "not a valid pipeline parameter name",
    );
    assert_issue(
        &found,
        9,
        &format!("{at}.env"),
        "fixed in `target.parameters`",
    );
    assert_issue(
        &found,
        10,
        &format!("{at}.run-workflow"),
        "set by `target.workflow`",
    );
    assert_issue(
        &found,
        11,
        &format!("{at}.flag.pattern"),
        "applies to string parameters",
    );
    assert_issue(
        &found,
        11,
        &format!("{at}.flag.max_length"),
        "applies to string parameters",
    );
    assert_issue(
        &found,
        11,
        &format!("{at}.flag.minimum"),
        "applies to integer parameters",
    );
    assert_issue(&found, 12, &format!("{at}.count.minimum"), "above maximum");
    assert_issue(
        &found,
        12,
        &format!("{at}.count.default"),
        "must be at most 1",
    );
    assert_issue(&found, 13, &format!("{at}.regex.pattern"), "error:");
    assert_issue(
        &found,
        14,
        &format!("{at}.both.default"),
        "drop `default` or `required`",
    );
    assert_issue(
        &found,
        15,
        &format!("{at}.choice.enum[1]"),
        "can never be accepted",
    );
    assert_issue(
        &found,
        15,
        &format!("{at}.choice.default"),
        "must be one of",
    );
    assert_issue(&found, 16, &format!("{at}.empty.enum"), "accepts nothing");
    assert_issue(
        &found,
        17,
        &format!("{at}.mixed.enum[0]"),
        "must be an integer",
    );
    assert_issue(
        &found,
        18,
        &format!("{at}.long.max_length"),
        "between 1 and 512",
    );
}

#[test]
fn too_many_parameters_in_all_are_refused() {
    let mut source = String::from(
        "[[endpoint]]\nname = \"big\"\ntarget = { project = \"gh/acme/deploy\", parameters = { fixed = 1 } }\n",
    );
    for index in 0..100 {
        source.push_str(&format!("parameters.p{index} = {{ type = \"string\" }}\n"));
    }
    let found = issues(&source);
    assert!(
        found
            .iter()
            .any(|i| i.field == "endpoint[0].parameters"
                && i.message.contains("101 parameters in all")),
        "{found:?}"
    );
}

#[test]
fn action_fields_must_fit_the_action() {
    let found = issues(
        r#"
[[endpoint]]
name = "p"
job = "hold"
select = "latest"
target = { project = "gh/acme/deploy", branch = "main" }

[[endpoint]]
name = "approve"
action = "approve"
target = { project = "gh/acme/deploy" }
parameters.x = { type = "string" }

[[endpoint]]
name = "rerun"
action = "rerun"
from_failed = true
jobs = ["test"]
target = { project = "gh/acme/deploy" }

[[endpoint]]
name = "cancel"
action = "cancel"
select = "latest"
target = { project = "gh/acme/deploy" }
"#,
    );
    assert_issue(
        &found,
        4,
        "endpoint[0].job",
        "does not apply to action = \"pipeline\"",
    );
    assert_issue(&found, 5, "endpoint[0].select", "does not apply");
    assert_issue(&found, 8, "endpoint[1]", "needs `job`");
    assert_issue(&found, 12, "endpoint[1].parameters", "takes no parameters");
    assert_issue(&found, 18, "endpoint[2].jobs", "not both");
    assert_issue(
        &found,
        24,
        "endpoint[3].select",
        "needs a branch or tag policy",
    );
}

#[test]
fn clients_name_known_endpoints_and_a_valid_rate() {
    let found = issues(
        r#"
[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy" }

[[client]]
name = "bot.v2"
endpoints = ["deploy", "deploy", "nope"]
rate_limit = "lots"

[[client]]
name = "cms"
endpoints = []

[[client]]
name = "cms"
endpoints = ["deploy"]
rate_limit = "1000/1m"
"#,
    );
    assert_issue(&found, 7, "client[0].name", "may only contain");
    assert_issue(&found, 8, "client[0].endpoints[1]", "listed twice");
    assert_issue(
        &found,
        8,
        "client[0].endpoints[2]",
        "no endpoint named `nope` (defined: deploy)",
    );
    assert_issue(&found, 9, "client[0].rate_limit", "not a rate");
    assert_issue(&found, 13, "client[1].endpoints", "at least one endpoint");
    assert_issue(&found, 16, "client[2].name", "duplicate client name `cms`");
    assert_issue(&found, 18, "client[2].rate_limit", "between 1 and 500");
}

#[test]
fn unknown_fields_are_rejected_with_their_line() {
    let found = issues(
        r#"
[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy" }
parameters.version = { type = "string", regex = "x" }
"#,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 5);
    assert!(
        found[0].message.contains("unknown field `regex`"),
        "{found:?}"
    );
}
