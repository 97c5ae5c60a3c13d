//! Pure pieces of the receiver; the HTTP behaviour is tested over real HTTP in
//! tests/integration/tests/chained*.rs and fanin.rs.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::dispatch::{Paused, action_for, placeholder_action};
use super::fanin::humantime;
use super::*;
use crate::actions::{Action, RerunJobs, WorkflowSelector};
use crate::config::{ActionSpec, CircleCiSettings, TargetSpec, parse_str};
use crate::store::PauseFlag;
use crate::triggers::chained::rules::{ActionRequest, ExistingWorkflow, SelectionRequest};

fn spec(project: &str) -> TargetSpec {
    TargetSpec {
        project: project.into(),
        ..TargetSpec::default()
    }
}

#[test]
fn selection_requests_map_to_selectors_and_origin_uses_the_given_pipelines() {
    let settings = CircleCiSettings::default();
    let pipelines = [Uuid::from_u128(1), Uuid::from_u128(2)];
    let existing = |select| ExistingWorkflow {
        target: spec("gh/acme/deploy"),
        workflow: Some("deploy".into()),
        select,
    };
    let approve = ActionRequest::Existing {
        action: ActionSpec::Approve { job: "hold".into() },
        existing: existing(SelectionRequest::Origin {
            upstream_pipeline_id: "p".into(),
        }),
    };
    match action_for(&approve, &settings, &pipelines).unwrap() {
        Action::Approve {
            select,
            workflow,
            job,
            ..
        } => {
            assert_eq!(select, WorkflowSelector::Pipelines(pipelines.to_vec()));
            assert_eq!(workflow.as_deref(), Some("deploy"));
            assert_eq!(job, "hold");
        }
        other => panic!("{other:?}"),
    }
    let rerun = ActionRequest::Existing {
        action: ActionSpec::Rerun(RerunJobs::Jobs(vec!["it".into()])),
        existing: existing(SelectionRequest::Revision {
            revision: "abc".into(),
        }),
    };
    match action_for(&rerun, &settings, &[]).unwrap() {
        Action::Rerun { select, rerun, .. } => {
            assert_eq!(select, WorkflowSelector::Revision("abc".into()));
            assert_eq!(rerun, RerunJobs::Jobs(vec!["it".into()]));
        }
        other => panic!("{other:?}"),
    }
    let cancel = ActionRequest::Existing {
        action: ActionSpec::Cancel,
        existing: existing(SelectionRequest::Latest),
    };
    assert!(matches!(
        action_for(&cancel, &settings, &[]).unwrap(),
        Action::Cancel {
            select: WorkflowSelector::Latest,
            ..
        }
    ));
    let bad = ActionRequest::Pipeline(spec("not a slug"));
    assert!(action_for(&bad, &settings, &[]).is_err());
}

#[test]
fn a_placeholder_names_the_project_kind_and_token_only() {
    let file = parse_str(
        r#"
[[chain]]
name = "gate"
when = { project = "gh/acme/e2e", workflow = "e2e", branch = "main" }
[[chain.then]]
action = "approve"
project = "gh/acme/deploy"
job = "hold-release"
select = "origin"
token = "release"
"#,
        "t.toml",
    )
    .unwrap();
    let action = placeholder_action(&file.chain[0].then[0], &file.circleci).unwrap();
    assert_eq!(action.target().token, "release");
    let record = action.record_target();
    assert_eq!(record.project, "gh/acme/deploy");
    assert_eq!(record.job.as_deref(), Some("hold-release"));
}

#[test]
fn pause_reasons_prefer_the_rule_flag_over_all() {
    let flag = |scope: &str, reason: Option<&str>| PauseFlag {
        scope: scope.parse().unwrap(),
        reason: reason.map(str::to_owned),
        paused_by: None,
        paused_at: Utc::now(),
    };
    let mut paused = Paused::default();
    assert_eq!(paused.reason("a"), None);
    paused = Paused::for_tests(
        Some(flag("all", None)),
        vec![flag("chain:a", Some("freeze"))],
    );
    assert_eq!(
        paused.reason("a").as_deref(),
        Some("chain rule `a` is paused: freeze")
    );
    assert_eq!(
        paused.reason("b").as_deref(),
        Some("all triggers are paused")
    );
}

#[test]
fn windows_read_like_the_triggers_file() {
    assert_eq!(humantime(chrono::Duration::hours(2)), "2h");
    assert_eq!(humantime(chrono::Duration::minutes(90)), "90m");
}

#[test]
fn the_report_asks_for_a_redelivery_when_anything_is_undecided() {
    let action = |disposition, redeliver_after| ActionReport {
        rule: "r".into(),
        action_index: Some(0),
        key: "k".into(),
        disposition,
        trigger_id: None,
        status: None,
        reason: None,
        redeliver_after,
    };
    let mut report = DeliveryReport {
        event_id: "e".into(),
        event_type: "workflow-completed",
        actions: vec![action(Disposition::Decided, None)],
        joins: Vec::new(),
        closed_loop: None,
    };
    assert_eq!(report.redeliver_after(), None);
    assert!(!report.only_replays());
    report.actions.push(action(
        Disposition::InProgress,
        Some(Duration::from_secs(30)),
    ));
    report
        .actions
        .push(action(Disposition::Error, Some(Duration::from_secs(90))));
    assert_eq!(report.redeliver_after(), Some(Duration::from_secs(90)));
    assert!(report.has_errors());
}
