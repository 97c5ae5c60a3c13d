//! `lint-ci` on CircleCI configs written for these tests (tests/fixtures/circleci-configs):
//! each class of problem is found, and a correct config gets no finding.
#![allow(clippy::unwrap_used)] // tests may unwrap

use shared::config::parse_str;
use shared::operator::lint_ci::{Finding, Severity, lint};

/// A nightly schedule on main and an endpoint whose caller picks the branch, both running
/// only `nightly` of gh/acme/api; a deploy chain on another project (not linted with --project).
const TRIGGERS: &str = r#"
[[schedule]]
name = "nightly-api"
cron = "0 2 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/api", branch = "main", workflow = "nightly", parameters = { report_day = "{{ slot.date }}", deep = true } }

[[endpoint]]
name = "nightly-on-demand"
target = { project = "github/acme/api", branches = ["main", "docs/*"], workflow = "nightly" }
parameters.report_day = { type = "string", required = true }

[[client]]
name = "release-bot"
endpoints = ["nightly-on-demand"]

[[chain]]
name = "deploy-after-build"
when = { project = "gh/acme/api", workflow = "build", branch = "main" }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"
workflow = "deploy"
"#;

fn findings(fixture: &str) -> Vec<Finding> {
    let triggers = parse_str(TRIGGERS, "triggers.toml").unwrap();
    let path = format!(
        "{}/tests/fixtures/circleci-configs/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    lint(&triggers, &text, Some("gh/acme/api")).unwrap()
}

/// (kind, trigger prefix, message part) of each finding.
fn has(found: &[Finding], kind: &str, trigger: &str, part: &str) -> bool {
    found
        .iter()
        .any(|f| f.kind == kind && f.trigger.starts_with(trigger) && f.message.contains(part))
}

#[test]
fn a_correctly_gated_config_with_orbs_and_nested_logic_is_silent() {
    assert_eq!(findings("correct.yml"), []);
}

#[test]
fn an_ungated_workflow_also_runs_for_every_targeted_trigger() {
    let found = findings("ungated.yml");
    assert!(
        has(
            &found,
            "also-runs",
            "schedule nightly-api",
            "workflow `build` also runs for `workflow = \"nightly\"` (it has no `when:`)"
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            "also-runs",
            "endpoint nightly-on-demand",
            "workflow `build`"
        ),
        "{found:#?}"
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found.iter().all(|f| f.severity == Severity::Error));
}

#[test]
fn a_truthy_gate_runs_for_any_workflow_and_branch_conditions_are_evaluated_per_target() {
    let found = findings("truthy-gate.yml");
    for trigger in ["schedule nightly-api", "endpoint nightly-on-demand"] {
        assert!(
            has(&found, "also-runs", trigger, "workflow `benchmarks`"),
            "{found:#?}"
        );
    }
    // The schedule runs on main: `pipeline.git.branch == "main"` is true.
    assert!(
        has(
            &found,
            "also-runs",
            "schedule nightly-api",
            "workflow `lint`"
        ),
        "{found:#?}"
    );
    // The endpoint's caller picks the branch: it depends.
    assert!(
        has(
            &found,
            "may-also-run",
            "endpoint nightly-on-demand",
            "workflow `lint`"
        ),
        "{found:#?}"
    );
    assert_eq!(found.len(), 4, "{found:#?}");
}

#[test]
fn a_missing_workflow_undeclared_parameters_and_type_mismatches_are_errors() {
    let found = findings("mistyped.yml");
    for trigger in ["schedule nightly-api", "endpoint nightly-on-demand"] {
        assert!(
            has(
                &found,
                "missing-workflow",
                trigger,
                "`workflow = \"nightly\"` names no workflow of the config (workflows: build, nightly-tests)"
            ),
            "{found:#?}"
        );
        assert!(
            has(&found, "undeclared-parameter", trigger, "`report_day`"),
            "{found:#?}"
        );
    }
    assert!(
        has(
            &found,
            "type-mismatch",
            "schedule nightly-api",
            "sends `deep` as boolean, but the config declares it `type: string`"
        ),
        "{found:#?}"
    );
    assert_eq!(found.len(), 5, "{found:#?}");
}

#[test]
fn an_enum_value_outside_the_declared_list_is_a_type_mismatch() {
    let triggers = parse_str(
        &TRIGGERS.replace("deep = true", "deep = \"yes\", tier = \"medium\""),
        "triggers.toml",
    )
    .unwrap();
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/circleci-configs/mistyped.yml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let found = lint(&triggers, &text, Some("gh/acme/api")).unwrap();
    assert!(
        has(
            &found,
            "type-mismatch",
            "schedule nightly-api",
            "`tier` = \"medium\", which is not in the config's `enum: [small, large]`"
        ),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|f| f.message.contains("`deep`")),
        "{found:#?}"
    );
}

#[test]
fn conditions_on_values_the_trigger_does_not_fix_are_warnings() {
    let found = findings("branch-dependent.yml");
    assert!(
        has(
            &found,
            "may-also-run",
            "endpoint nightly-on-demand",
            "workflow `docs` may also run"
        ),
        "{found:#?}"
    );
    // On main the schedule's `docs` condition is false, and `nightly` (or + matches) runs.
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].severity, Severity::Warning);
}

#[test]
fn without_a_project_every_pipeline_target_is_checked_and_bad_yaml_is_an_error() {
    let triggers = parse_str(TRIGGERS, "triggers.toml").unwrap();
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/circleci-configs/correct.yml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let found = lint(&triggers, &text, None).unwrap();
    // The deploy chain targets another project: its workflow is not in this config.
    assert!(
        has(
            &found,
            "missing-workflow",
            "chain deploy-after-build",
            "`workflow = \"deploy\"`"
        ),
        "{found:#?}"
    );
    assert!(lint(&triggers, "workflows: [", None).is_err());
    assert!(lint(&triggers, "version: 2.1\n", None).is_err());
}
