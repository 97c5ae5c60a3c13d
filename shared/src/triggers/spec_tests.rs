//! One action spec, three trigger kinds: the same `action`/`job`/`jobs`/`from_failed`
//! fields written in a schedule, a chain rule and an endpoint become the same [`Action`].
#![allow(clippy::unwrap_used)]

use std::path::Path;

use crate::actions::{Action, RerunJobs, WorkflowSelector};
use crate::config::{ActionKind, ActionSpec, TriggersFile, parse_str};
use crate::triggers::chained::action_for;
use crate::triggers::chained::rules::ChainRules;
use crate::triggers::chained::webhook::{WebhookEvent, parse_event};
use crate::triggers::http::Catalog;
use crate::triggers::http::request::{CallInput, validate};
use crate::triggers::scheduled::schedule_action;

/// Each action kind with its fields as written, and the spec they must read as.
fn specs() -> Vec<(&'static str, ActionSpec)> {
    vec![
        (r#"action = "pipeline""#, ActionSpec::Pipeline),
        (
            "action = \"approve\"\njob = \"hold-release\"",
            ActionSpec::Approve {
                job: "hold-release".into(),
            },
        ),
        (
            r#"action = "rerun""#,
            ActionSpec::Rerun(RerunJobs::Workflow),
        ),
        (
            "action = \"rerun\"\nfrom_failed = true",
            ActionSpec::Rerun(RerunJobs::FromFailed),
        ),
        (
            "action = \"rerun\"\njobs = [\"deploy\", \"smoke\"]",
            ActionSpec::Rerun(RerunJobs::Jobs(vec!["deploy".into(), "smoke".into()])),
        ),
        (r#"action = "cancel""#, ActionSpec::Cancel),
    ]
}

/// The same fields in all three places (the selection each kind needs for an existing
/// workflow: the newest pipeline on `main`).
fn file(fields: &str, pipeline: bool) -> TriggersFile {
    let select = if pipeline { "" } else { "select = \"latest\"" };
    let chain_branch = "branch = \"main\"";
    let text = format!(
        r#"
[[schedule]]
name = "nightly"
cron = "0 2 * * *"
timezone = "UTC"
{fields}
{select}
target = {{ project = "gh/acme/deploy", branch = "main" }}

[[chain]]
name = "after-build"
when = {{ project = "gh/acme/api", workflow = "build", branch = "main" }}
[[chain.then]]
project = "gh/acme/deploy"
{chain_branch}
{fields}
{select}

[[endpoint]]
name = "deploy"
{fields}
{select}
target = {{ project = "gh/acme/deploy", branch = "main" }}
"#
    );
    parse_str(&text, "triggers.toml").unwrap_or_else(|e| panic!("{fields}: {e}"))
}

fn event() -> WebhookEvent {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/integration/fixtures/webhooks/workflow-completed.oauth.json");
    parse_event(&std::fs::read(path).unwrap()).unwrap()
}

/// What an action does, apart from where (each kind resolves its target its own way).
fn what(action: &Action) -> (ActionKind, Option<&str>, Option<&RerunJobs>) {
    match action {
        Action::Approve { job, .. } => (ActionKind::Approve, Some(job.as_str()), None),
        Action::Rerun { rerun, .. } => (ActionKind::Rerun, None, Some(rerun)),
        other => (other.kind(), None, None),
    }
}

fn expected(spec: &ActionSpec) -> (ActionKind, Option<&str>, Option<&RerunJobs>) {
    match spec {
        ActionSpec::Approve { job } => (ActionKind::Approve, Some(job.as_str()), None),
        ActionSpec::Rerun(jobs) => (ActionKind::Rerun, None, Some(jobs)),
        other => (other.kind(), None, None),
    }
}

#[test]
fn every_action_kind_means_the_same_in_every_trigger_kind() {
    let event = event();
    for (fields, spec) in specs() {
        let file = file(fields, spec == ActionSpec::Pipeline);

        let scheduled =
            schedule_action(&file.schedule[0], file.schedule[0].targets()[0], &file).unwrap();

        let rules = ChainRules::compile(&file.chain).unwrap();
        let matched = rules.matching(&event);
        assert_eq!(matched.len(), 1, "{fields}: {matched:#?}");
        let request = matched[0].plan.ready().unwrap();
        let chained = action_for(request, &file.circleci, &[]).unwrap();

        let catalog = Catalog::new(&file).unwrap();
        let endpoint = catalog.endpoint("deploy").unwrap();
        let valid = validate(endpoint, &CallInput::default()).unwrap();
        let target =
            crate::triggers::http::endpoint_target(endpoint, &valid, &file.circleci).unwrap();
        let http = Action::from_spec(&endpoint.action, target, WorkflowSelector::Latest, None);

        for (kind, action) in [
            ("scheduled", &scheduled),
            ("chained", &chained),
            ("http", &http),
        ] {
            assert_eq!(what(action), expected(&spec), "{kind}: {fields}");
            assert_eq!(
                action.target().project.canonical(),
                "gh/acme/deploy",
                "{kind}"
            );
        }
    }
}

/// The regression: a schedule's `rerun` without `jobs` reran only the failed jobs (and so
/// refused a workflow that had succeeded) while `check` said it reruns the whole workflow.
#[test]
fn a_schedule_rerun_without_jobs_reruns_the_whole_workflow() {
    let file = file(r#"action = "rerun""#, false);
    let action = schedule_action(&file.schedule[0], file.schedule[0].targets()[0], &file).unwrap();
    assert!(matches!(
        action,
        Action::Rerun {
            rerun: RerunJobs::Workflow,
            select: WorkflowSelector::Latest,
            ..
        }
    ));
}
