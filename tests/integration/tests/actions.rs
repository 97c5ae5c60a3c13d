//! Targets and actions (`shared::actions`) against the CircleCI simulator over real HTTP:
//! the `workflow` sugar, approve / rerun / cancel of exactly one selected workflow, the send
//! guard, ambiguous answers read back, and ambiguous creates reconciled. Every "no match" or
//! "several matches" case is checked against the simulator's request log: no POST was made.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use circleci_sim::{
    Faults, JobSpec, JobStatus as SimJobStatus, ParameterSpec, ProjectSpec, Simulator, When,
    WorkflowSpec, WorkflowStatus as SimWorkflowStatus,
};
use integration_tests::actions_support::{
    LoseNextAnswer, LosesAnswers, RecordedElsewhere, RecordingGuard, posts,
};
use integration_tests::circleci_client::{
    TokenFile, assert_recorded_bodies_conform, client_for, test_options,
};
use serde_json::json;
use shared::actions::{
    Action, ActionError, ActionOutcome, Actions, CreateWindow, NoGuard, Reconciled, RerunJobs,
    Target, WorkflowSelector,
};
use shared::circleci::{CircleCi, ClientOptions, JobStatus, RateDefaults, WorkflowStatus};
use shared::config::{CircleCiSettings, ParameterValue, TargetSpec};
use shared::store::StoreError;
use uuid::Uuid;

const ALICE_TOKEN: &str = "tok-alice-actions-0123456789";
const BOB_TOKEN: &str = "tok-bob-actions-0123456789";
const API: &str = "gh/acme/api";
const DEPLOY: &str = "gh/acme/deploy";
const FLAKY: &str = "gh/acme/flaky";

struct Fixture {
    sim: Simulator,
    _tokens: TokenFile,
    /// The real client, behind a wrapper that can lose one answer on request.
    circleci: Arc<LosesAnswers>,
    actions: Actions,
}

/// Three projects:
/// - `gh/acme/api`: `build` by default, `nightly` when `run-workflow` is "nightly" (the
///   documented `workflow = "x"` convention);
/// - `gh/acme/deploy`: `deploy` (build → approval `hold` → ship) and `smoke` (a long probe);
/// - `gh/acme/flaky`: `test` whose `integration` job fails on its first attempt.
///
/// Token `default` is alice's, `bob` is bob's.
async fn fixture() -> Fixture {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", ALICE_TOKEN);
    sim.add_user("bob", BOB_TOKEN);
    sim.add_project(
        ProjectSpec::new(API)
            .parameter(ParameterSpec::string("run-workflow", ""))
            .workflow(
                WorkflowSpec::new("build")
                    .when(When::equals("run-workflow", ""))
                    .job(JobSpec::new("test")),
            )
            .workflow(
                WorkflowSpec::new("nightly")
                    .when(When::equals("run-workflow", "nightly"))
                    .job(JobSpec::new("long-tests")),
            ),
    );
    sim.add_project(
        ProjectSpec::new(DEPLOY)
            .workflow(
                WorkflowSpec::new("deploy")
                    .job(JobSpec::new("build"))
                    .job(JobSpec::approval("hold").requires(["build"]))
                    .job(JobSpec::new("ship").requires(["hold"])),
            )
            .workflow(
                WorkflowSpec::new("smoke")
                    .job(JobSpec::new("probe").duration(Duration::from_secs(600))),
            ),
    );
    sim.add_project(
        ProjectSpec::new(FLAKY).workflow(
            WorkflowSpec::new("test")
                .job(JobSpec::new("unit"))
                .job(JobSpec::new("integration").fails_then_succeeds())
                .job(JobSpec::new("report").requires(["unit", "integration"])),
        ),
    );
    let tokens = TokenFile::new(&[("default", ALICE_TOKEN), ("bob", BOB_TOKEN)]).unwrap();
    // Many reads per test: pace well above the client's conservative default.
    let options = ClientOptions {
        rate: RateDefaults {
            burst: 100,
            per_second: 100.0,
        },
        ..test_options()
    };
    let client = client_for(&sim, tokens.secrets(), options).unwrap();
    let circleci = Arc::new(LoseNextAnswer::client(Arc::new(client)));
    let actions = Actions::new(circleci.clone());
    Fixture {
        sim,
        _tokens: tokens,
        circleci,
        actions,
    }
}

fn spec(project: &str, branch: Option<&str>) -> TargetSpec {
    TargetSpec {
        project: project.into(),
        branch: branch.map(str::to_owned),
        tag: None,
        workflow: None,
        parameters: BTreeMap::new(),
        definition_id: None,
        config: None,
        checkout: None,
        token: None,
    }
}

fn target(project: &str, branch: Option<&str>) -> Target {
    Target::resolve(&spec(project, branch), &CircleCiSettings::default()).unwrap()
}

async fn create(fx: &Fixture, target: &Target) -> Uuid {
    let action = Action::Pipeline {
        target: target.clone(),
    };
    match fx.actions.perform(&action, &NoGuard).await.unwrap() {
        ActionOutcome::PipelineCreated { id, .. } => id,
        other => panic!("unexpected outcome {other:?}"),
    }
}

fn approve(target: Target, select: WorkflowSelector) -> Action {
    Action::Approve {
        target,
        job: "hold".into(),
        select,
        workflow: None,
    }
}

/// The status of `job` in the latest attempt of `workflow` in the pipeline.
fn job_status(sim: &Simulator, pipeline: Uuid, workflow: &str, job: &str) -> SimJobStatus {
    let attempt = sim
        .workflows(pipeline)
        .into_iter()
        .rev()
        .find(|w| w.name == workflow)
        .unwrap_or_else(|| panic!("no workflow {workflow} in {pipeline}"));
    attempt
        .jobs
        .iter()
        .find(|j| j.name == job)
        .unwrap_or_else(|| panic!("no job {job} in {workflow}"))
        .status
}

fn workflow_status(sim: &Simulator, pipeline: Uuid, workflow: &str) -> SimWorkflowStatus {
    sim.workflows(pipeline)
        .into_iter()
        .rev()
        .find(|w| w.name == workflow)
        .unwrap()
        .status
}

#[tokio::test]
async fn workflow_sugar_runs_only_the_named_workflow() {
    let fx = fixture().await;
    let mut nightly_spec = spec(API, Some("main"));
    nightly_spec.workflow = Some("nightly".into());
    let nightly = Target::resolve(&nightly_spec, &CircleCiSettings::default()).unwrap();
    assert_eq!(
        nightly.parameters.get("run-workflow"),
        Some(&ParameterValue::String("nightly".into()))
    );

    let created = fx
        .actions
        .perform(&Action::Pipeline { target: nightly }, &NoGuard)
        .await
        .unwrap();
    let ActionOutcome::PipelineCreated { id, number, .. } = created else {
        panic!("{created:?}")
    };
    let names: Vec<String> = fx.sim.workflows(id).into_iter().map(|w| w.name).collect();
    assert_eq!(names, ["nightly"]);
    let pipeline = fx.sim.pipeline(id).unwrap();
    assert_eq!(u64::try_from(pipeline.number).unwrap(), number);
    assert_eq!(
        serde_json::Value::Object(pipeline.parameters),
        json!({"run-workflow": "nightly"})
    );
    assert_eq!(pipeline.branch.as_deref(), Some("main"));

    // Without the sugar, the config's default workflow runs instead.
    let plain = create(&fx, &target(API, Some("main"))).await;
    let names: Vec<String> = fx
        .sim
        .workflows(plain)
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["build"]);
    assert_recorded_bodies_conform(&fx.sim.requests());
}

#[tokio::test]
async fn approve_by_name_releases_the_hold_of_the_origin_pipeline_and_not_of_a_newer_one() {
    let fx = fixture().await;
    let on_main = target(DEPLOY, Some("main"));
    let older = create(&fx, &on_main).await;
    let newer = create(&fx, &on_main).await;
    let other_project = create(&fx, &target(API, Some("main"))).await;
    fx.sim.run_until_idle().await;
    for pipeline in [older, newer] {
        assert_eq!(
            job_status(&fx.sim, pipeline, "deploy", "hold"),
            SimJobStatus::OnHold
        );
    }

    // The origin knows three pipeline ids: ours, one of another project, one CircleCI
    // does not know. Only `older` is in the target project, and of its two workflows only
    // `deploy` has the approval job.
    fx.sim.clear_requests();
    let guard = RecordingGuard::allowing(&fx.sim);
    let action = approve(
        target(DEPLOY, None),
        WorkflowSelector::Pipelines(vec![other_project, older, Uuid::new_v4()]),
    );
    let outcome = fx.actions.perform(&action, &guard).await.unwrap();
    let ActionOutcome::Approved {
        pipeline_id,
        workflow_name,
        workflow_id,
        read_back,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(pipeline_id, older);
    assert_eq!(workflow_name, "deploy");
    assert!(!read_back);
    assert_eq!(
        job_status(&fx.sim, older, "deploy", "hold"),
        SimJobStatus::Success
    );
    assert_eq!(
        job_status(&fx.sim, newer, "deploy", "hold"),
        SimJobStatus::OnHold,
        "the newer pipeline's hold is untouched"
    );

    // Reads first; the guard is asked once, right before the one POST.
    let requests = fx.sim.requests();
    let asked = guard.asked_at();
    assert_eq!(asked.len(), 1);
    let after_guard = &requests[asked[0]..];
    assert_eq!(after_guard.len(), 1, "{after_guard:#?}");
    assert_eq!(after_guard[0].method, "POST");
    assert!(
        after_guard[0]
            .path
            .contains(&format!("/workflow/{workflow_id}/approve/")),
        "{}",
        after_guard[0].path
    );
    assert_eq!(posts(&requests).len(), 1);

    fx.sim.run_until_idle().await;
    assert_eq!(
        workflow_status(&fx.sim, older, "deploy"),
        SimWorkflowStatus::Success
    );
    assert_eq!(
        workflow_status(&fx.sim, newer, "deploy"),
        SimWorkflowStatus::OnHold
    );

    // `select = "latest"` on the branch picks the newer pipeline.
    let latest = approve(on_main, WorkflowSelector::Latest);
    let outcome = fx.actions.perform(&latest, &NoGuard).await.unwrap();
    assert_eq!(outcome.pipeline_id(), newer);
    assert_eq!(
        job_status(&fx.sim, newer, "deploy", "hold"),
        SimJobStatus::Success
    );
}

#[tokio::test]
async fn approve_without_exactly_one_held_job_touches_nothing() {
    let fx = fixture().await;
    let on_main = target(DEPLOY, Some("main"));
    let first = create(&fx, &on_main).await;

    // Right after the create, `build` runs and `hold` waits for it: not approvable yet, but
    // it will be (so the sweep may retry).
    fx.sim.clear_requests();
    let early = fx
        .actions
        .perform(
            &approve(on_main.clone(), WorkflowSelector::Pipeline(first)),
            &NoGuard,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            early,
            ActionError::JobNotOnHold {
                status: JobStatus::Blocked,
                ..
            }
        ),
        "{early}"
    );
    assert!(early.is_retryable());
    assert!(posts(&fx.sim.requests()).is_empty());

    let second = create(&fx, &on_main).await;
    let api_pipeline = create(&fx, &target(API, Some("main"))).await;
    fx.sim.run_until_idle().await;
    let revision = fx.sim.pipeline(first).unwrap().revision;
    assert_eq!(fx.sim.pipeline(second).unwrap().revision, revision);
    fx.sim.clear_requests();

    let named = |job: &str, workflow: Option<&str>, select| Action::Approve {
        target: on_main.clone(),
        job: job.into(),
        select,
        workflow: workflow.map(str::to_owned),
    };
    let cases = [
        (
            "two pipelines built the revision, both holding",
            approve(
                on_main.clone(),
                WorkflowSelector::Revision(revision.clone()),
            ),
            "several",
        ),
        (
            "nothing recorded for the origin",
            approve(on_main.clone(), WorkflowSelector::Pipelines(vec![])),
            "no match",
        ),
        (
            "the origin's pipelines are in another project",
            approve(
                on_main.clone(),
                WorkflowSelector::Pipelines(vec![api_pipeline]),
            ),
            "no match",
        ),
        (
            "an unknown pipeline",
            approve(on_main.clone(), WorkflowSelector::Pipeline(Uuid::new_v4())),
            "no match",
        ),
        (
            "no job of that name",
            named("hold-prod", None, WorkflowSelector::Pipeline(first)),
            "job not found",
        ),
        (
            "a build job, not an approval",
            named("build", None, WorkflowSelector::Pipeline(first)),
            "job not found",
        ),
        (
            "the named workflow has no such approval",
            named("hold", Some("smoke"), WorkflowSelector::Pipeline(first)),
            "job not found",
        ),
        (
            "no workflow of that name",
            named("hold", Some("release"), WorkflowSelector::Pipeline(first)),
            "no match",
        ),
        (
            "another revision",
            approve(on_main.clone(), WorkflowSelector::Revision("0".repeat(40))),
            "no match",
        ),
        (
            "latest on a branch without pipelines",
            approve(target(DEPLOY, Some("release")), WorkflowSelector::Latest),
            "no match",
        ),
        (
            "latest without a branch",
            approve(target(DEPLOY, None), WorkflowSelector::Latest),
            "invalid target",
        ),
    ];
    for (what, action, expected) in cases {
        let error = fx.actions.perform(&action, &NoGuard).await.unwrap_err();
        let kind = match &error {
            ActionError::SeveralMatches { candidates, .. } => {
                assert_eq!(candidates.len(), 2, "{what}");
                "several"
            }
            ActionError::NoMatch { .. } => "no match",
            ActionError::JobNotFound { .. } => "job not found",
            ActionError::InvalidTarget { .. } => "invalid target",
            other => panic!("{what}: unexpected {other}"),
        };
        assert_eq!(kind, expected, "{what}: {error}");
        assert!(!error.is_retryable() && !error.is_ambiguous(), "{what}");
    }
    assert!(
        posts(&fx.sim.requests()).is_empty(),
        "nothing may be sent when the selection fails"
    );
    for pipeline in [first, second] {
        assert_eq!(
            job_status(&fx.sim, pipeline, "deploy", "hold"),
            SimJobStatus::OnHold
        );
    }

    // Once approved, the same approval is not on hold any more: a final failure.
    fx.actions
        .perform(
            &approve(on_main.clone(), WorkflowSelector::Pipeline(first)),
            &NoGuard,
        )
        .await
        .unwrap();
    fx.sim.clear_requests();
    let again = fx
        .actions
        .perform(
            &approve(on_main, WorkflowSelector::Pipeline(first)),
            &NoGuard,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            again,
            ActionError::JobNotOnHold {
                status: JobStatus::Success,
                ..
            }
        ),
        "{again}"
    );
    assert!(!again.is_retryable());
    assert!(posts(&fx.sim.requests()).is_empty());
}

#[tokio::test]
async fn rerun_from_failed_then_by_job_name_acts_on_the_latest_attempt() {
    let fx = fixture().await;
    let on_main = target(FLAKY, Some("main"));
    let pipeline = create(&fx, &on_main).await;
    fx.sim.run_until_idle().await;
    let original = fx.sim.workflows(pipeline).remove(0);
    assert_eq!(original.status, SimWorkflowStatus::Failed);

    fx.sim.clear_requests();
    let from_failed = Action::Rerun {
        target: on_main.clone(),
        rerun: RerunJobs::FromFailed,
        select: WorkflowSelector::Pipeline(pipeline),
        workflow: Some("test".into()),
    };
    let outcome = fx.actions.perform(&from_failed, &NoGuard).await.unwrap();
    let ActionOutcome::Rerun {
        workflow_id,
        new_workflow_id: first_rerun,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(workflow_id, original.id);
    let rerun = fx.sim.workflow(first_rerun).unwrap();
    assert_eq!(rerun.rerun_of, Some(original.id));
    let sent = posts(&fx.sim.requests())
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, Some(json!({"from_failed": true})));
    let attempts: BTreeMap<String, u32> = rerun
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.attempt))
        .collect();
    assert_eq!(attempts["unit"], 0, "a job that passed is not rerun");
    assert_eq!(attempts["integration"], 1);
    fx.sim.run_until_idle().await;
    assert_eq!(
        fx.sim.workflow(first_rerun).unwrap().status,
        SimWorkflowStatus::Success
    );

    // By name, on the latest pipeline: the latest attempt (the rerun) is the one rerun.
    fx.sim.clear_requests();
    let by_name = Action::Rerun {
        target: on_main.clone(),
        rerun: RerunJobs::Jobs(vec!["unit".into()]),
        select: WorkflowSelector::Latest,
        workflow: None,
    };
    let outcome = fx.actions.perform(&by_name, &NoGuard).await.unwrap();
    let ActionOutcome::Rerun {
        workflow_id,
        new_workflow_id: second_rerun,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(workflow_id, first_rerun);
    let second = fx.sim.workflow(second_rerun).unwrap();
    assert_eq!(second.rerun_of, Some(first_rerun));
    let unit_id = rerun.jobs.iter().find(|j| j.name == "unit").unwrap().id;
    let sent = posts(&fx.sim.requests())
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, Some(json!({"jobs": [unit_id]})));
    assert!(
        sent[0]
            .path
            .ends_with(&format!("/workflow/{first_rerun}/rerun")),
        "{}",
        sent[0].path
    );
    let kept: Vec<Uuid> = rerun.jobs.iter().map(|j| j.id).collect();
    let rerun_jobs: Vec<&str> = second
        .jobs
        .iter()
        .filter(|j| !kept.contains(&j.id))
        .map(|j| j.name.as_str())
        .collect();
    assert_eq!(
        rerun_jobs,
        ["unit", "report"],
        "the job and what depends on it"
    );
    assert_recorded_bodies_conform(&fx.sim.requests());
}

#[tokio::test]
async fn rerun_without_exactly_one_finished_workflow_touches_nothing() {
    let fx = fixture().await;
    let on_main = target(FLAKY, Some("main"));
    let done = create(&fx, &on_main).await;
    fx.sim.run_until_idle().await;
    let running = create(&fx, &on_main).await;
    fx.sim.clear_requests();

    let rerun = |rerun: RerunJobs, select| Action::Rerun {
        target: on_main.clone(),
        rerun,
        select,
        workflow: None,
    };
    let revision = fx.sim.pipeline(done).unwrap().revision;
    let cases = [
        (
            "an unknown job name",
            rerun(
                RerunJobs::Jobs(vec!["unit".into(), "e2e".into()]),
                WorkflowSelector::Pipeline(done),
            ),
        ),
        (
            "no jobs",
            rerun(RerunJobs::Jobs(vec![]), WorkflowSelector::Pipeline(done)),
        ),
        (
            "a running workflow",
            rerun(RerunJobs::FromFailed, WorkflowSelector::Pipeline(running)),
        ),
        (
            "two pipelines of the revision",
            rerun(RerunJobs::FromFailed, WorkflowSelector::Revision(revision)),
        ),
    ];
    let mut kinds = Vec::new();
    for (what, action) in cases {
        let error = fx.actions.perform(&action, &NoGuard).await.unwrap_err();
        kinds.push(match error {
            ActionError::JobNotFound { ref job, .. } => {
                assert_eq!(job, "e2e", "{what}");
                "job not found"
            }
            ActionError::InvalidAction { .. } => "invalid action",
            ActionError::WorkflowState { status, .. } => {
                assert_eq!(status, WorkflowStatus::Running, "{what}");
                "state"
            }
            ActionError::SeveralMatches { .. } => "several",
            other => panic!("{what}: unexpected {other}"),
        });
    }
    assert_eq!(
        kinds,
        ["job not found", "invalid action", "state", "several"]
    );

    // A workflow that succeeded has nothing failed to rerun.
    fx.sim.run_until_idle().await;
    let fixed = rerun(RerunJobs::FromFailed, WorkflowSelector::Pipeline(done));
    fx.actions.perform(&fixed, &NoGuard).await.unwrap();
    fx.sim.run_until_idle().await;
    fx.sim.clear_requests();
    let error = fx.actions.perform(&fixed, &NoGuard).await.unwrap_err();
    assert!(
        matches!(
            error,
            ActionError::WorkflowState {
                status: WorkflowStatus::Success,
                ..
            }
        ),
        "{error}"
    );
    assert!(posts(&fx.sim.requests()).is_empty());
}

#[tokio::test]
async fn cancel_the_named_workflow_of_the_selected_revision() {
    let fx = fixture().await;
    let on_main = target(DEPLOY, Some("main"));
    let sha_a = "a".repeat(40);
    let sha_b = "b".repeat(40);
    fx.sim.set_revision(DEPLOY, "main", &sha_a).unwrap();
    let at_a = create(&fx, &on_main).await;
    fx.sim.set_revision(DEPLOY, "main", &sha_b).unwrap();
    let at_b = create(&fx, &on_main).await;
    fx.sim.clear_requests();

    // Both `deploy` and `smoke` run in the pipeline of that revision: refuse to choose.
    let unnamed = Action::Cancel {
        target: on_main.clone(),
        select: WorkflowSelector::Revision(sha_a.clone()),
        workflow: None,
    };
    let error = fx.actions.perform(&unnamed, &NoGuard).await.unwrap_err();
    let ActionError::SeveralMatches { candidates, .. } = &error else {
        panic!("{error}")
    };
    let expected: Vec<Uuid> = fx.sim.workflows(at_a).into_iter().map(|w| w.id).collect();
    assert_eq!(candidates.len(), 2);
    assert!(candidates.iter().all(|id| expected.contains(id)));
    assert!(posts(&fx.sim.requests()).is_empty());

    let named = Action::Cancel {
        target: on_main.clone(),
        select: WorkflowSelector::Revision(sha_a.to_uppercase()),
        workflow: Some("deploy".into()),
    };
    let outcome = fx.actions.perform(&named, &NoGuard).await.unwrap();
    let ActionOutcome::Canceled {
        pipeline_id,
        workflow_name,
        ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(*pipeline_id, at_a);
    assert_eq!(workflow_name, "deploy");
    assert_eq!(
        workflow_status(&fx.sim, at_a, "deploy"),
        SimWorkflowStatus::Canceled
    );
    assert_eq!(
        workflow_status(&fx.sim, at_a, "smoke"),
        SimWorkflowStatus::Running
    );
    assert_eq!(
        workflow_status(&fx.sim, at_b, "deploy"),
        SimWorkflowStatus::Running
    );
    assert_eq!(posts(&fx.sim.requests()).len(), 1);

    // Already canceled: nothing to do, nothing sent.
    fx.sim.clear_requests();
    let error = fx.actions.perform(&named, &NoGuard).await.unwrap_err();
    assert!(
        matches!(
            error,
            ActionError::WorkflowState {
                status: WorkflowStatus::Canceled,
                ..
            }
        ),
        "{error}"
    );
    assert!(posts(&fx.sim.requests()).is_empty());
}

#[tokio::test]
async fn a_refusing_guard_sends_nothing() {
    let fx = fixture().await;
    let on_main = target(DEPLOY, Some("main"));
    let pipeline = create(&fx, &on_main).await;
    fx.sim.run_until_idle().await;
    let created_before = fx.sim.pipelines().len();
    fx.sim.clear_requests();

    let guard = RecordingGuard::refusing(&fx.sim, "the claim was taken over");
    let create_error = fx
        .actions
        .perform(
            &Action::Pipeline {
                target: on_main.clone(),
            },
            &guard,
        )
        .await
        .unwrap_err();
    let approve_error = fx
        .actions
        .perform(
            &approve(on_main, WorkflowSelector::Pipeline(pipeline)),
            &guard,
        )
        .await
        .unwrap_err();
    for error in [&create_error, &approve_error] {
        assert!(
            matches!(error, ActionError::Guard(StoreError::Unavailable { message }) if message == "the claim was taken over"),
            "{error}"
        );
        assert!(!error.is_ambiguous());
    }
    assert_eq!(guard.asked_at().len(), 2);
    assert!(posts(&fx.sim.requests()).is_empty());
    assert_eq!(fx.sim.pipelines().len(), created_before);
    assert_eq!(
        job_status(&fx.sim, pipeline, "deploy", "hold"),
        SimJobStatus::OnHold
    );
}

#[tokio::test]
async fn ambiguous_approve_rerun_and_cancel_are_read_back_and_never_resent() {
    let fx = fixture().await;
    let deploy = target(DEPLOY, Some("main"));
    let held = create(&fx, &deploy).await;
    let flaky = create(&fx, &target(FLAKY, Some("main"))).await;
    fx.sim.run_until_idle().await;

    // A 502 before the approval had any effect: ambiguous, sent once, still on hold.
    fx.sim.set_faults(Faults {
        fail_methods: vec!["POST".into()],
        fail_path_contains: Some("/approve/".into()),
        ..Faults::fail_next(1, 502)
    });
    fx.sim.clear_requests();
    let action = approve(deploy.clone(), WorkflowSelector::Pipeline(held));
    let error = fx.actions.perform(&action, &NoGuard).await.unwrap_err();
    assert!(error.is_ambiguous(), "{error}");
    assert!(!error.is_retryable());
    assert_eq!(posts(&fx.sim.requests()).len(), 1, "never resent");
    assert_eq!(
        job_status(&fx.sim, held, "deploy", "hold"),
        SimJobStatus::OnHold
    );

    // The approval happened and its answer was lost: the read-back shows it.
    fx.sim.set_faults(Faults::default());
    fx.circleci.interceptor().arm();
    let outcome = fx.actions.perform(&action, &NoGuard).await.unwrap();
    assert!(
        matches!(outcome, ActionOutcome::Approved { read_back: true, pipeline_id, .. } if pipeline_id == held),
        "{outcome:?}"
    );
    assert_eq!(
        job_status(&fx.sim, held, "deploy", "hold"),
        SimJobStatus::Success
    );

    // A lost rerun answer: the one new attempt of the workflow is the rerun.
    fx.sim.clear_requests();
    fx.circleci.interceptor().arm();
    let rerun = Action::Rerun {
        target: target(FLAKY, Some("main")),
        rerun: RerunJobs::FromFailed,
        select: WorkflowSelector::Pipeline(flaky),
        workflow: None,
    };
    let outcome = fx.actions.perform(&rerun, &NoGuard).await.unwrap();
    let ActionOutcome::Rerun {
        new_workflow_id,
        workflow_id,
        read_back: true,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        fx.sim.workflow(new_workflow_id).unwrap().rerun_of,
        Some(workflow_id)
    );
    assert_eq!(posts(&fx.sim.requests()).len(), 1);

    // A lost cancel answer: the workflow reads back canceled.
    let running = create(&fx, &deploy).await;
    fx.circleci.interceptor().arm();
    let cancel = Action::Cancel {
        target: deploy,
        select: WorkflowSelector::Pipeline(running),
        workflow: Some("smoke".into()),
    };
    let outcome = fx.actions.perform(&cancel, &NoGuard).await.unwrap();
    assert!(
        matches!(
            outcome,
            ActionOutcome::Canceled {
                read_back: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        workflow_status(&fx.sim, running, "smoke"),
        SimWorkflowStatus::Canceled
    );
}

/// Pipelines that must not be mistaken for the ambiguous create: an old one of the same
/// user and branch, one by another user, one on another branch, and one recorded for
/// another trigger. Returns the recorded one.
async fn reconciliation_noise(fx: &Fixture, on_main: &Target) -> Uuid {
    create(fx, on_main).await;
    fx.sim.advance(Duration::from_secs(3600)).await;
    let mut by_bob = on_main.clone();
    by_bob.token = "bob".into();
    create(fx, &by_bob).await;
    create(fx, &target(API, Some("feature/x"))).await;
    create(fx, on_main).await
}

/// The engine's defaults: a 60 s send budget, 5 s of clock skew.
fn send_window(sent_at: chrono::DateTime<chrono::Utc>) -> CreateWindow {
    CreateWindow::of_send(sent_at, Duration::from_secs(60), Duration::from_secs(5)).unwrap()
}

async fn ambiguous_create(fx: &Fixture, target: &Target) -> Uuid {
    fx.sim.set_faults(Faults {
        create_then_502: 1,
        ..Faults::default()
    });
    fx.sim.clear_requests();
    let error = fx
        .actions
        .perform(
            &Action::Pipeline {
                target: target.clone(),
            },
            &NoGuard,
        )
        .await
        .unwrap_err();
    assert!(error.is_ambiguous(), "{error}");
    assert_eq!(posts(&fx.sim.requests()).len(), 1, "never resent");
    fx.sim.pipelines().last().unwrap().id
}

#[tokio::test]
async fn an_ambiguous_create_is_reconciled_to_the_one_pipeline_it_made() {
    let fx = fixture().await;
    let on_main = target(API, Some("main"));
    let recorded = reconciliation_noise(&fx, &on_main).await;
    let sent_at = fx.sim.now();
    let made = ambiguous_create(&fx, &on_main).await;

    fx.sim.clear_requests();
    let ledger = RecordedElsewhere::with([recorded]);
    let reconciled = fx
        .actions
        .reconcile_create(&on_main, send_window(sent_at), &ledger)
        .await
        .unwrap();
    let Reconciled::Adopted(pipeline) = reconciled else {
        panic!("{reconciled:?}")
    };
    assert_eq!(pipeline.id, made);
    assert_eq!(
        ledger.asked.load(Ordering::SeqCst),
        2,
        "only alice's API pipelines on main in the window are checked against the store"
    );
    let requests = fx.sim.requests();
    assert!(posts(&requests).is_empty(), "reconciliation only reads");
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/me")),
        "the token's user is the actor to match"
    );

    // A target without a branch builds the project's default branch: same answer.
    let default_branch = target(API, None);
    let reconciled = fx
        .actions
        .reconcile_create(&default_branch, send_window(sent_at), &ledger)
        .await
        .unwrap();
    assert!(
        matches!(&reconciled, Reconciled::Adopted(p) if p.id == made),
        "{reconciled:?}"
    );
}

#[tokio::test]
async fn an_ambiguous_create_with_two_candidates_stays_ambiguous() {
    let fx = fixture().await;
    let on_main = target(API, Some("main"));
    let recorded = reconciliation_noise(&fx, &on_main).await;
    let unrecorded = create(&fx, &on_main).await;
    let sent_at = fx.sim.now();
    let made = ambiguous_create(&fx, &on_main).await;

    let window = send_window(sent_at);
    let ledger = RecordedElsewhere::with([recorded]);
    let reconciled = fx
        .actions
        .reconcile_create(&on_main, window, &ledger)
        .await
        .unwrap();
    let Reconciled::StillAmbiguous { mut candidates } = reconciled else {
        panic!("{reconciled:?}")
    };
    candidates.sort();
    let mut expected = vec![made, unrecorded];
    expected.sort();
    assert_eq!(candidates, expected);

    // Every candidate recorded elsewhere: none left, still ambiguous.
    let all_recorded = RecordedElsewhere::with([recorded, unrecorded, made]);
    let reconciled = fx
        .actions
        .reconcile_create(&on_main, window, &all_recorded)
        .await
        .unwrap();
    assert_eq!(
        reconciled,
        Reconciled::StillAmbiguous { candidates: vec![] }
    );

    // The store cannot answer: reconciliation stops, to be retried.
    let unavailable = RecordedElsewhere::default();
    unavailable.fail.store(true, Ordering::SeqCst);
    let error = fx
        .actions
        .reconcile_create(&on_main, window, &unavailable)
        .await
        .unwrap_err();
    assert!(matches!(error, ActionError::Ledger(_)), "{error}");
    assert!(error.is_retryable());
    assert_eq!(fx.sim.pipelines().len(), 6, "reconciliation never creates");
}

#[tokio::test]
async fn select_workflow_explains_without_acting() {
    let fx = fixture().await;
    let on_main = target(DEPLOY, Some("main"));
    let pipeline = create(&fx, &on_main).await;
    fx.sim.clear_requests();
    let selected = fx
        .actions
        .select_workflow(&on_main, &WorkflowSelector::Latest, Some("smoke"))
        .await
        .unwrap();
    assert_eq!(selected.pipeline.id, pipeline);
    assert_eq!(selected.workflow.name, "smoke");
    assert_eq!(selected.workflow.status, WorkflowStatus::Running);
    assert_eq!(selected.pipeline_workflows.len(), 2);
    let prepared = fx
        .actions
        .prepare(&approve(on_main, WorkflowSelector::Latest))
        .await;
    assert!(
        matches!(prepared, Err(ActionError::JobNotOnHold { .. })),
        "{prepared:?}"
    );
    assert!(posts(&fx.sim.requests()).is_empty());
    let circleci: &dyn CircleCi = fx.circleci.as_ref();
    assert_eq!(
        circleci
            .list_pipeline_workflows("default", pipeline)
            .await
            .unwrap()
            .len(),
        2
    );
}
