//! `explain` (`shared::operator::explain`): which rules an event matches, why the others do
//! not, and the exact CircleCI requests — offline, on CircleCI's documented payloads.
#![allow(clippy::unwrap_used)]

mod chained_support;

use chained_support::fixture;
use serde_json::{Value, json};
use shared::config::{TriggersFile, parse_str};
use shared::operator::explain::{ActionOutcomeKind, RuleVerdict, explain};
use shared::triggers::chained::rules::ChainRules;
use shared::triggers::chained::webhook::WebhookEvent;

const RULES: &str = r#"
[circleci]
api_url = "https://circleci.example.com/api/v2"
token = "default"
workflow_parameter = "run-workflow"

[[chain]]
name = "deploy-after-build"
when = { project = "gh/circleci/webhook-service", workflow = "build-test-deploy", branch = "main" }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"
workflow = "deploy"
parameters = { api_sha = "{{ revision }}", number = 7, dry_run = false }
[[chain.then]]
action = "approve"
project = "gh/acme/deploy"
job = "hold-release"
select = "origin"
token = "release-bot"
[[chain.then]]
action = "pipeline"
project = "gh/acme/docs"
branch = "main"
definition_id = "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
checkout = { branch = "main" }
config = { branch = "ci-config" }

[[chain]]
name = "release-only"
when = { project = "gh/circleci/webhook-service", branch = "release/*" }
[[chain.then]]
action = "cancel"
project = "gh/acme/smoke"
select = "latest"
branch = "main"

[[chain]]
name = "mapped"
when = { project = "gh/circleci/webhook-service", workflow = "build-test-deploy" }
[[chain.then]]
action = "pipeline"
project = "gh/acme/staging"
branch_map = [{ from = "release/*", to = "staging" }]

[[chain]]
name = "rerun-on-failure"
when = { project = "circleci/DdaVtNusHqi24D4YT3X4eu/*", workflow = "build", branch = "main", status = ["failed"] }
[[chain.then]]
action = "rerun"
project = "gh/acme/flaky"
jobs = ["integration"]
select = "latest"
branch = "{{ branch }}"

[[chain]]
name = "both-built"
after = [{ project = "gh/circleci/webhook-service", workflow = "build-test-deploy", branch = "main" }, { project = "gh/acme/web", workflow = "build", branch = "main" }]
correlate = "branch"
window = "90m"
[[chain.then]]
action = "pipeline"
project = "gh/acme/e2e"
branch = "{{ branch }}"
"#;

fn file() -> TriggersFile {
    parse_str(RULES, "explain.toml").unwrap()
}

fn explained(event: &Value) -> (shared::operator::explain::Explanation, Value) {
    let file = file();
    let rules = ChainRules::from_file(&file).unwrap();
    let event = WebhookEvent::from_json(event.clone()).unwrap();
    let explanation = explain(&rules, &file.circleci, &event);
    let json = serde_json::to_value(&explanation).unwrap();
    (explanation, json)
}

fn rule<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == name)
        .unwrap()
}

#[test]
fn a_pipeline_action_shows_the_exact_request() {
    let (explanation, json) = explained(&fixture("workflow-completed.oauth.json"));
    assert_eq!(explanation.rules.len(), 5, "every rule is explained");
    let deploy = rule(&json, "deploy-after-build");
    assert_eq!(deploy["verdict"], "matches");
    let first = &deploy["actions"][0];
    assert_eq!(first["outcome"], "request");
    assert_eq!(first["token"], "default");
    assert_eq!(first["request"]["method"], "POST");
    assert_eq!(
        first["request"]["url"],
        "https://circleci.example.com/api/v2/project/gh/acme/deploy/pipeline"
    );
    assert_eq!(
        first["request"]["body"],
        json!({
            "branch": "main",
            "parameters": {
                "api_sha": "1dc6aa69429bff4806ad6afe58d3d8f57e25973e",
                "number": 7,
                "dry_run": false,
                "run-workflow": "deploy"
            }
        })
    );
    // pipeline/run with definition, config and checkout refs.
    let run = &deploy["actions"][2];
    assert_eq!(
        run["request"]["url"],
        "https://circleci.example.com/api/v2/project/gh/acme/docs/pipeline/run"
    );
    assert_eq!(
        run["request"]["body"]["definition_id"],
        "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
    );
    assert_eq!(
        run["request"]["body"]["checkout"],
        json!({ "branch": "main" })
    );
    assert_eq!(
        run["request"]["body"]["config"],
        json!({ "branch": "ci-config" })
    );
}

#[test]
fn an_approve_says_which_selection_would_be_made() {
    let (_, json) = explained(&fixture("workflow-completed.oauth.json"));
    let approve = &rule(&json, "deploy-after-build")["actions"][1];
    assert_eq!(approve["action"], "approve");
    assert_eq!(approve["token"], "release-bot");
    let selection = approve["selection"].as_str().unwrap();
    assert!(
        selection.contains("the workflow holding approval job `hold-release` on hold"),
        "{selection}"
    );
    assert!(
        selection
            .contains("origin trigger of upstream pipeline 1285fe1d-d3a6-44fc-8886-8979558254c4"),
        "{selection}"
    );
    assert!(selection.contains("exactly one must match"), "{selection}");
    assert!(
        approve["request"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/approve/<approval_request_id of job `hold-release`>")
    );
    assert!(
        approve["reads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "GET /workflow/<id>/job")
    );
}

#[test]
fn non_matching_rules_say_why_and_skips_say_why() {
    let (_, json) = explained(&fixture("workflow-completed.oauth.json"));
    let release = rule(&json, "release-only");
    assert_eq!(release["verdict"], "no_match");
    assert_eq!(release["reasons"], json!(["branch `main` does not match"]));
    let mapped = rule(&json, "mapped");
    assert_eq!(mapped["verdict"], "matches");
    assert_eq!(mapped["actions"][0]["outcome"], "skipped");
    assert!(
        mapped["actions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no branch_map entry matches the upstream branch `main`")
    );
    let rerun = rule(&json, "rerun-on-failure");
    assert_eq!(
        rerun["reasons"][0],
        "project `gh/circleci/webhook-service` does not match"
    );
}

#[test]
fn a_fan_in_arrival_shows_its_join_key_and_what_fires() {
    let (_, json) = explained(&fixture("workflow-completed.oauth.json"));
    let both = rule(&json, "both-built");
    assert_eq!(both["verdict"], "arrives");
    let arrival = &both["arrivals"][0];
    assert_eq!(arrival["upstream"], "after[0]");
    assert_eq!(arrival["outcome"], "succeeded");
    assert_eq!(arrival["join_key"], "join#both-built#branch:main");
    assert_eq!(arrival["window"], "90m");
    assert_eq!(
        both["actions"][0]["request"]["url"],
        "https://circleci.example.com/api/v2/project/gh/acme/e2e/pipeline"
    );
}

#[test]
fn an_app_style_failure_plans_a_rerun_of_named_jobs_on_the_same_branch() {
    let (explanation, json) = explained(&fixture("workflow-completed.app.json"));
    assert_eq!(json["event"]["git_from"], "trigger_parameters");
    assert_eq!(
        json["event"]["revision"],
        "850a1519f25d14e968649cc420d1bd381715c05c"
    );
    let rerun = rule(&json, "rerun-on-failure");
    assert_eq!(rerun["verdict"], "matches");
    let action = &rerun["actions"][0];
    assert_eq!(
        action["request"]["body"],
        json!({ "jobs": ["<id of job `integration`>"] })
    );
    assert!(
        action["selection"]
            .as_str()
            .unwrap()
            .contains("the newest pipeline of gh/acme/flaky on branch `main`")
    );
    let matched: Vec<_> = explanation
        .rules
        .iter()
        .filter(|r| r.verdict == RuleVerdict::Matches)
        .collect();
    assert_eq!(matched.len(), 1);
    assert_eq!(matched[0].actions[0].outcome, ActionOutcomeKind::Request);
}

#[test]
fn the_text_form_names_requests_and_sends_nothing() {
    let (explanation, _) = explained(&fixture("job-completed.oauth.json"));
    let text = explanation.to_text();
    assert!(
        text.contains("event 8bd71c28-4969-3677-8940-3e3a61c46660 (job-completed)"),
        "{text}"
    );
    assert!(
        text.contains("rule `deploy-after-build`: no match"),
        "{text}"
    );
    assert!(
        text.contains("event is job-completed, the rule wants workflow-completed"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("nothing was sent."));

    let (explanation, _) = explained(&fixture("workflow-completed.oauth.json"));
    let text = explanation.to_text();
    assert!(text.contains("sends   POST https://circleci.example.com/api/v2/project/gh/acme/deploy/pipeline  (token `default`)"), "{text}");
}
