//! End to end through real HTTP both ways: the simulator runs upstream pipelines and sends
//! its signed webhooks to `webhook_router()`, whose actions (pipeline, approve, rerun,
//! cancel) land back in the simulator; trigger history shows each decision and, through the
//! closed loop, what every trigger led to.
#![allow(clippy::unwrap_used)]

mod chained_support;

use std::collections::BTreeMap;
use std::time::Duration;

use chained_support::{
    ALICE_TOKEN, Harness, Options, StoreKind, WorkflowEvent, rfc3339, triggers_file,
};
use circleci_sim::{
    Faults, JobSpec, JobStatus as SimJobStatus, ParameterSpec, ProjectSpec, Simulator,
    WorkflowSpec, WorkflowStatus as SimWorkflowStatus,
};
use serde_json::json;
use shared::actions::{Action, Target};
use shared::circleci::PipelineRequest;
use shared::config::TargetSpec;
use shared::engine::{Fired, TriggerIntent};
use shared::store::{
    ClaimKey, ClaimKind, Fingerprint, SourceKind, TriggerId, TriggerRecord, TriggerSource,
    TriggerStatus,
};
use uuid::Uuid;

const API: &str = "gh/acme/api";
const DEPLOY: &str = "gh/acme/deploy";
const E2E: &str = "gh/acme/e2e";
const FLAKY: &str = "gh/acme/flaky";
const API_SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

async fn simulator() -> Simulator {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", ALICE_TOKEN);
    sim.add_project(
        ProjectSpec::new(API)
            .revision("main", API_SHA)
            .workflow(WorkflowSpec::new("build").job(JobSpec::new("test"))),
    );
    sim.add_project(
        ProjectSpec::new(DEPLOY)
            .parameter(ParameterSpec::string("api_sha", ""))
            .parameter(ParameterSpec::string("api_pipeline", ""))
            .workflow(
                WorkflowSpec::new("deploy")
                    .job(JobSpec::new("build"))
                    .job(JobSpec::approval("hold-release").requires(["build"]))
                    .job(JobSpec::new("ship").requires(["hold-release"])),
            ),
    );
    sim.add_project(ProjectSpec::new(E2E).workflow(
        WorkflowSpec::new("e2e").job(JobSpec::new("browser").duration(Duration::from_secs(30))),
    ));
    sim.add_project(
        ProjectSpec::new(FLAKY).workflow(
            WorkflowSpec::new("test")
                .job(JobSpec::new("unit"))
                .job(JobSpec::new("integration").fails_then_succeeds())
                .job(JobSpec::new("report").requires(["unit", "integration"])),
        ),
    );
    sim
}

/// Starts a pipeline as a person or another system would: not through a trigger of ours.
async fn start_pipeline(harness: &Harness, project: &str) -> Uuid {
    start_pipeline_on(harness, project, "main").await
}

/// [`start_pipeline`] on another branch (anyone who can push one can do this).
async fn start_pipeline_on(harness: &Harness, project: &str, branch: &str) -> Uuid {
    let request = PipelineRequest::on_branch(project.parse().unwrap(), branch);
    harness
        .circleci
        .trigger_pipeline("default", &request)
        .await
        .unwrap()
        .id
}

/// Fires a pipeline the way the scheduler does: one slot of one schedule is the origin of
/// every pipeline it starts.
async fn fire_scheduled(
    harness: &Harness,
    schedule: &str,
    slot: &str,
    project: &str,
) -> TriggerRecord {
    let origin = shared::triggers::scheduled::slot_origin(schedule, slot);
    let spec = TargetSpec {
        project: project.to_owned(),
        branch: Some("main".to_owned()),
        tag: None,
        workflow: None,
        parameters: BTreeMap::new(),
        definition_id: None,
        config: None,
        checkout: None,
        token: None,
    };
    let target = Target::resolve(&spec, &harness.triggers.circleci).unwrap();
    let key = ClaimKey::new(ClaimKind::Schedule, &[schedule, slot, project]);
    let intent = TriggerIntent {
        fingerprint: Fingerprint::of(key.as_str().as_bytes()),
        key,
        source: TriggerSource::new(SourceKind::Schedule, schedule),
        origin: Some(origin),
        action: Action::Pipeline { target },
        upstream: None,
        correlation: None,
        detail: Box::new(shared::store::RecordDetail {
            slot: Some(slot.to_owned()),
            ..Default::default()
        }),
    };
    match harness.engine.fire(intent).await.unwrap() {
        Fired::Performed(record) => {
            assert_eq!(
                record.status,
                TriggerStatus::Triggered,
                "{:?}",
                record.reason
            );
            record
        }
        other => panic!("expected a new trigger, got {other:?}"),
    }
}

fn pipeline_of(record: &TriggerRecord) -> Uuid {
    record.pipeline.as_ref().unwrap().id.parse().unwrap()
}

async fn record(harness: &Harness, id: TriggerId) -> TriggerRecord {
    harness.store.get_record(id).await.unwrap().unwrap()
}

const DEPLOY_AFTER_BUILD: &str = r#"
[[chain]]
name = "deploy-after-build"
when = { project = "gh/acme/api", workflow = "build", branch = "main" }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"
parameters = { api_sha = "{{ revision }}", api_pipeline = "{{ project.slug }}#{{ pipeline.number }}" }
"#;

async fn downstream_once(duplicates: bool) {
    let sim = simulator().await;
    let harness = Harness::start(&sim, DEPLOY_AFTER_BUILD).await;
    harness.register(API, &["workflow-completed"]);
    harness.register(DEPLOY, &["workflow-completed"]);
    if duplicates {
        sim.set_faults(Faults {
            duplicate_deliveries: true,
            ..Faults::default()
        });
    }
    let upstream = start_pipeline(&harness, API).await;
    sim.run_until_idle().await;

    let deliveries = sim.deliveries();
    let expected_copies = if duplicates { 2 } else { 1 };
    assert_eq!(deliveries.len(), expected_copies, "{deliveries:?}");
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "every copy is answered 2xx: {deliveries:?}"
    );
    let downstream: Vec<_> = sim
        .pipelines()
        .into_iter()
        .filter(|p| p.project_slug == DEPLOY)
        .collect();
    assert_eq!(
        downstream.len(),
        1,
        "the downstream pipeline exists exactly once"
    );
    let created = &downstream[0];
    assert_eq!(created.branch.as_deref(), Some("main"));
    assert_eq!(created.parameters["api_sha"], API_SHA);
    assert_eq!(created.parameters["api_pipeline"], "gh/acme/api#1");

    let records = harness.rule_records("deploy-after-build").await;
    assert_eq!(records.len(), 1);
    let chained = &records[0];
    assert_eq!(chained.status, TriggerStatus::Triggered);
    assert_eq!(pipeline_of(chained), created.id);
    let upstream_ref = chained.upstream.as_ref().unwrap();
    assert_eq!(upstream_ref.pipeline_id, upstream.to_string());
    assert_eq!(upstream_ref.project, API);
    assert_eq!(upstream_ref.workflow_name.as_deref(), Some("build"));
    assert_eq!(upstream_ref.revision.as_deref(), Some(API_SHA));
    assert_eq!(
        upstream_ref.trigger_id, None,
        "a person started the upstream"
    );
    assert_eq!(
        chained.origin, chained.id,
        "so the chained trigger is its own origin"
    );

    // The closed loop: the downstream's deploy workflow waits at its approval; approve it
    // by hand, and the webhook of its completion lands on the chained record.
    sim.run_until_idle().await;
    assert!(
        record(&harness, chained.id).await.workflows.is_empty(),
        "on hold is not completed"
    );
    approve_by_hand(&harness, created.id, "hold-release").await;
    sim.run_until_idle().await;
    let closed = record(&harness, chained.id).await;
    assert_eq!(closed.workflows.len(), 1, "{:?}", closed.workflows);
    assert_eq!(closed.workflows[0].name, "deploy");
    assert_eq!(closed.workflows[0].status, "success");
    assert!(closed.pipeline_final);
    assert_eq!(closed.status, TriggerStatus::Triggered);
}

async fn approve_by_hand(harness: &Harness, pipeline: Uuid, job: &str) {
    let workflow = harness.sim.workflows(pipeline).into_iter().next().unwrap();
    let hold = workflow.jobs.iter().find(|j| j.name == job).unwrap();
    assert_eq!(hold.status, SimJobStatus::OnHold);
    harness
        .circleci
        .approve_job("default", workflow.id, hold.approval_request_id.unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn end_to_end_an_upstream_build_starts_its_downstream_once_with_templated_parameters() {
    downstream_once(false).await;
}

#[tokio::test]
async fn end_to_end_duplicated_deliveries_still_start_the_downstream_once() {
    downstream_once(true).await;
}

const RELEASE_GATE: &str = r#"
[[chain]]
name = "release-gate"
when = { project = "gh/acme/e2e", workflow = "e2e", branch = "main", status = ["success"] }
[[chain.then]]
action = "approve"
project = "gh/acme/deploy"
workflow = "deploy"
job = "hold-release"
select = "origin"
"#;

#[tokio::test]
async fn approve_selects_the_hold_job_of_the_pipeline_with_the_same_origin() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, RELEASE_GATE).await;
    harness.register(E2E, &["workflow-completed"]);
    harness.register(DEPLOY, &["workflow-completed"]);
    // Two nightly slots: each started a deploy (which waits at its hold) and, for the
    // first one, the e2e run that gates it.
    let deploy_a = fire_scheduled(&harness, "nightly", "2026-11-30T02:00:00Z", DEPLOY).await;
    let deploy_b = fire_scheduled(&harness, "nightly", "2026-12-01T02:00:00Z", DEPLOY).await;
    let e2e_a = fire_scheduled(&harness, "nightly", "2026-11-30T02:00:00Z", E2E).await;
    assert_eq!(deploy_a.origin, e2e_a.origin);
    assert_ne!(deploy_a.origin, deploy_b.origin);

    sim.run_until_idle().await;
    let deliveries = sim.deliveries();
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "{deliveries:?}"
    );
    let gate = harness.rule_records("release-gate").await;
    assert_eq!(gate.len(), 1);
    assert_eq!(
        gate[0].status,
        TriggerStatus::Triggered,
        "{:?}",
        gate[0].reason
    );
    assert_eq!(
        gate[0].origin, e2e_a.origin,
        "the approval belongs to the same nightly run"
    );
    assert_eq!(
        gate[0].upstream.as_ref().unwrap().trigger_id,
        Some(e2e_a.id)
    );
    assert_eq!(
        gate[0].detail.acted_on_pipeline.map(|id| id.to_string()),
        Some(pipeline_of(&deploy_a).to_string())
    );
    assert!(matches!(
        gate[0].detail.outcome,
        Some(shared::actions::ActionOutcome::Approved { .. })
    ));

    sim.run_until_idle().await;
    let released = &sim.workflows(pipeline_of(&deploy_a))[0];
    assert_eq!(released.status, SimWorkflowStatus::Success);
    let other = &sim.workflows(pipeline_of(&deploy_b))[0];
    assert_eq!(
        other.status,
        SimWorkflowStatus::OnHold,
        "the other night's deploy is untouched"
    );

    // The closed loop saw both outcomes of slot A's triggers.
    let e2e_record = record(&harness, e2e_a.id).await;
    assert_eq!(e2e_record.workflows[0].status, "success");
    assert!(e2e_record.pipeline_final);
    assert!(record(&harness, deploy_a.id).await.pipeline_final);
    assert!(!record(&harness, deploy_b.id).await.pipeline_final);
}

#[tokio::test]
async fn an_approval_job_not_yet_on_hold_answers_503_and_the_redelivery_approves_it() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, RELEASE_GATE).await;
    let deploy = fire_scheduled(&harness, "nightly", "2026-11-30T02:00:00Z", DEPLOY).await;
    let e2e = fire_scheduled(&harness, "nightly", "2026-11-30T02:00:00Z", E2E).await;
    // The e2e workflow has finished, but deploy's build has not reached the hold yet.
    let e2e_workflow = sim.workflows(pipeline_of(&e2e))[0].clone();
    let event = json!({
        "id": Uuid::new_v4(),
        "type": "workflow-completed",
        "happened_at": rfc3339(sim.now()),
        "webhook": { "id": Uuid::new_v4(), "name": "w" },
        "project": { "id": sim.project_id(E2E).unwrap(), "name": "e2e", "slug": "github/acme/e2e" },
        "organization": { "id": Uuid::new_v4(), "name": "acme" },
        "workflow": { "id": e2e_workflow.id, "name": "e2e", "status": "success", "url": "https://x" },
        "pipeline": {
            "id": pipeline_of(&e2e), "number": 1, "trigger": { "type": "api" },
            "vcs": { "provider_name": "github", "revision": API_SHA, "branch": "main" }
        }
    });
    let answer = harness.post_signed(&event).await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert!(answer.is_problem());
    let wait: u64 = answer.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(wait >= 1);
    let failed = harness.rule_records("release-gate").await;
    assert_eq!(failed[0].status, TriggerStatus::Failed);
    assert!(failed[0].retry_at.is_some(), "the sweep would retry it too");

    // CircleCI redelivers before the retry is due: nothing new, still 503.
    assert_eq!(harness.post_signed(&event).await.status, 503);
    assert_eq!(harness.rule_records("release-gate").await[0].attempts, 1);

    // Time passes: the hold is reached and the retry is due; the next redelivery does it.
    sim.advance(Duration::from_secs(120)).await;
    assert_eq!(
        sim.workflows(pipeline_of(&deploy))[0].status,
        SimWorkflowStatus::OnHold
    );
    let answer = harness.post_signed(&event).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let approved = harness.rule_records("release-gate").await;
    assert_eq!(approved.len(), 1, "one record, two attempts");
    assert_eq!(approved[0].status, TriggerStatus::Triggered);
    assert_eq!(approved[0].attempts, 2);
    sim.run_until_idle().await;
    assert_eq!(
        sim.workflows(pipeline_of(&deploy))[0].status,
        SimWorkflowStatus::Success
    );
}

#[tokio::test]
async fn an_approve_with_nothing_to_select_is_a_recorded_failure_that_touches_nothing() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, RELEASE_GATE).await;
    harness.register(E2E, &["workflow-completed"]);
    // Someone runs e2e by hand: no trigger of ours started it, so it has no origin, and a
    // deploy on hold from a nightly run must not be approved by guessing.
    fire_scheduled(&harness, "nightly", "2026-11-30T02:00:00Z", DEPLOY).await;
    start_pipeline(&harness, E2E).await;
    sim.clear_requests();
    sim.run_until_idle().await;
    let gate = harness.rule_records("release-gate").await;
    assert_eq!(gate.len(), 1);
    assert_eq!(gate[0].status, TriggerStatus::Failed);
    assert!(gate[0].retry_at.is_none(), "selection failures are final");
    assert!(
        gate[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("no pipeline is recorded for the origin"),
        "{:?}",
        gate[0].reason
    );
    assert!(
        posts(&sim).is_empty(),
        "nothing was approved: {:?}",
        posts(&sim)
    );
    assert_eq!(
        sim.deliveries()[0].status,
        Some(200),
        "a decided failure is answered 2xx"
    );
}

#[tokio::test]
async fn rerun_from_failed_reruns_the_latest_failed_workflow() {
    let sim = simulator().await;
    let rules = r#"
[[chain]]
name = "rerun-flaky-after-api"
when = { project = "gh/acme/api", workflow = "build", branch = "main" }
[[chain.then]]
action = "rerun"
project = "gh/acme/flaky"
workflow = "test"
from_failed = true
select = "latest"
branch = "main"
"#;
    let harness = Harness::start(&sim, rules).await;
    harness.register(API, &["workflow-completed"]);
    let flaky = start_pipeline(&harness, FLAKY).await;
    sim.run_until_idle().await;
    assert_eq!(sim.workflows(flaky)[0].status, SimWorkflowStatus::Failed);

    start_pipeline(&harness, API).await;
    sim.run_until_idle().await;
    let records = harness.rule_records("rerun-flaky-after-api").await;
    assert_eq!(
        records[0].status,
        TriggerStatus::Triggered,
        "{:?}",
        records[0].reason
    );
    sim.run_until_idle().await;
    let attempts = sim.workflows(flaky);
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1].rerun_of, Some(attempts[0].id));
    assert_eq!(attempts[1].status, SimWorkflowStatus::Success);
}

#[tokio::test]
async fn cancel_stops_the_running_workflow_of_the_latest_pipeline() {
    let sim = simulator().await;
    sim.add_project(ProjectSpec::new("gh/acme/smoke").workflow(
        WorkflowSpec::new("probe").job(JobSpec::new("wait").duration(Duration::from_secs(600))),
    ));
    sim.add_project(
        ProjectSpec::new("gh/acme/broken")
            .workflow(WorkflowSpec::new("build").job(JobSpec::new("compile").fails())),
    );
    let rules = r#"
[[chain]]
name = "stop-smoke-when-broken"
when = { project = "gh/acme/broken", workflow = "build", branch = "main", status = ["failed"] }
[[chain.then]]
action = "cancel"
project = "gh/acme/smoke"
workflow = "probe"
select = "latest"
branch = "main"
"#;
    let harness = Harness::start(&sim, rules).await;
    harness.register("gh/acme/broken", &["workflow-completed"]);
    let smoke = start_pipeline(&harness, "gh/acme/smoke").await;
    start_pipeline(&harness, "gh/acme/broken").await;
    sim.advance(Duration::from_secs(15)).await;
    let records = harness.rule_records("stop-smoke-when-broken").await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].status,
        TriggerStatus::Triggered,
        "{:?}",
        records[0].reason
    );
    assert_eq!(sim.workflows(smoke)[0].status, SimWorkflowStatus::Canceled);
}

#[tokio::test]
async fn closed_loop_a_pipeline_is_final_only_when_all_its_workflows_are() {
    let sim = simulator().await;
    sim.add_project(
        ProjectSpec::new("gh/acme/mono")
            .workflow(WorkflowSpec::new("quick").job(JobSpec::new("lint")))
            .workflow(
                WorkflowSpec::new("slow").job(
                    JobSpec::new("soak")
                        .duration(Duration::from_secs(600))
                        .fails(),
                ),
            ),
    );
    let harness = Harness::start(&sim, "").await;
    harness.register("gh/acme/mono", &["workflow-completed"]);
    let trigger = fire_scheduled(&harness, "hourly", "2026-11-30T03:00:00Z", "gh/acme/mono").await;

    sim.advance(Duration::from_secs(30)).await;
    let partial = record(&harness, trigger.id).await;
    let status_of = |r: &TriggerRecord, name: &str| {
        r.workflows
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.status.clone())
    };
    assert_eq!(status_of(&partial, "quick").as_deref(), Some("success"));
    assert_eq!(
        status_of(&partial, "slow").as_deref(),
        Some("running"),
        "read from CircleCI"
    );
    assert!(!partial.pipeline_final);

    sim.run_until_idle().await;
    let done = record(&harness, trigger.id).await;
    assert_eq!(status_of(&done, "quick").as_deref(), Some("success"));
    assert_eq!(status_of(&done, "slow").as_deref(), Some("failed"));
    assert!(done.pipeline_final);
    assert_eq!(
        done.status,
        TriggerStatus::Triggered,
        "the trigger itself succeeded"
    );
    assert!(done.workflows.iter().all(|w| w.stopped_at.is_some()));
}

#[tokio::test]
async fn closed_loop_an_unauthorized_workflow_names_the_token_user() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, "").await;
    let trigger = fire_scheduled(&harness, "nightly", "2026-11-30T02:00:00Z", E2E).await;
    let workflow = sim.workflows(pipeline_of(&trigger))[0].clone();
    // The simulator has no restricted contexts: write the event CircleCI sends when a
    // workflow is refused one.
    let event = json!({
        "id": Uuid::new_v4(),
        "type": "workflow-completed",
        "happened_at": rfc3339(sim.now()),
        "webhook": { "id": Uuid::new_v4(), "name": "w" },
        "project": { "id": sim.project_id(E2E).unwrap(), "name": "e2e", "slug": "github/acme/e2e" },
        "organization": { "id": Uuid::new_v4(), "name": "acme" },
        "workflow": { "id": workflow.id, "name": "e2e", "status": "unauthorized", "url": "https://x",
                      "stopped_at": rfc3339(sim.now()) },
        "pipeline": {
            "id": pipeline_of(&trigger), "number": 1, "trigger": { "type": "api" },
            "vcs": { "provider_name": "github", "revision": API_SHA, "branch": "main" }
        }
    });
    let answer = harness.post_signed(&event).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["closed_loop"]["status"], "unauthorized");
    let updated = record(&harness, trigger.id).await;
    assert_eq!(updated.workflows[0].status, "unauthorized");
    let reason = updated.reason.as_deref().unwrap();
    assert!(reason.contains("restricted context"), "{reason}");
    assert!(reason.contains("`alice`"), "{reason}");
    let hint = updated.detail.unauthorized.as_ref().unwrap();
    assert_eq!(hint.user.as_deref(), Some("alice"));
    assert_eq!(hint.token, "default");
    // Delivered again: the same hint, not a second copy of it.
    harness.post_signed(&event).await;
    let again = record(&harness, trigger.id).await;
    assert_eq!(again.reason.as_deref(), Some(reason));
}

#[tokio::test]
async fn a_paused_rule_records_skipped_and_sends_nothing() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, DEPLOY_AFTER_BUILD).await;
    harness.register(API, &["workflow-completed"]);
    harness
        .store
        .pause(
            &shared::store::PauseScope::Chain("deploy-after-build".into()),
            Some("freeze"),
            Some("ops"),
        )
        .await
        .unwrap();
    start_pipeline(&harness, API).await;
    sim.run_until_idle().await;
    let records = harness.rule_records("deploy-after-build").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, TriggerStatus::Skipped);
    assert_eq!(
        records[0].reason.as_deref(),
        Some("chain rule `deploy-after-build` is paused: freeze")
    );
    assert!(sim.pipelines().iter().all(|p| p.project_slug != DEPLOY));
}

#[tokio::test]
async fn end_to_end_app_style_job_completed_events_without_a_workflow_object() {
    let sim = simulator().await;
    sim.add_project(
        ProjectSpec::new("gh/acme/app")
            .payload_style(circleci_sim::PayloadStyle::App)
            .revision("main", API_SHA)
            .workflow(WorkflowSpec::new("build").job(JobSpec::new("package"))),
    );
    let rules = r#"
[[chain]]
name = "deploy-after-package"
when = { project = "gh/acme/app", job = "package", branch = "main" }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "{{ branch }}"
parameters = { api_sha = "{{ revision }}", api_pipeline = "{{ job.name }}" }
"#;
    let harness = Harness::start(&sim, rules).await;
    harness.register("gh/acme/app", &["job-completed"]);
    start_pipeline(&harness, "gh/acme/app").await;
    sim.run_until_idle().await;
    let delivery = &sim.deliveries()[0];
    assert_eq!(delivery.status, Some(200));
    assert!(
        delivery.body.get("workflow").is_none(),
        "App-style job-completed has no workflow"
    );
    assert!(delivery.body["pipeline"].get("vcs").is_none());
    let deploy: Vec<_> = sim
        .pipelines()
        .into_iter()
        .filter(|p| p.project_slug == DEPLOY)
        .collect();
    assert_eq!(deploy.len(), 1);
    assert_eq!(deploy[0].branch.as_deref(), Some("main"));
    assert_eq!(deploy[0].parameters["api_sha"], API_SHA);
    assert_eq!(deploy[0].parameters["api_pipeline"], "package");
}

// ----- the trust rule at run time ----------------------------------------------------------

/// The release gate as the example file shipped it before the trust rule: approve the
/// production deploy's hold after a successful e2e run, on any branch.
const SHIPPED_RELEASE_GATE: &str = r#"
[[chain]]
name = "release-gate"
when = { project = "gh/acme/e2e", workflow = "e2e", branch = "main", status = ["success"] }
[[chain.then]]
action = "approve"
project = "gh/acme/deploy"
branch = "main"
job = "hold-release"
select = "latest"
"#;

/// POST requests CircleCI received (approvals, pipelines, reruns, cancels).
fn posts(sim: &Simulator) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect()
}

/// A deploy on main, waiting at its `hold-release` approval.
async fn production_deploy_on_hold(harness: &Harness) -> Uuid {
    let deploy = start_pipeline(harness, DEPLOY).await;
    harness.sim.run_until_idle().await;
    assert_eq!(
        harness.sim.workflows(deploy)[0].status,
        SimWorkflowStatus::OnHold
    );
    deploy
}

#[tokio::test]
async fn the_shipped_release_gate_is_refused_at_run_time_for_an_attacker_branch() {
    let sim = simulator().await;
    // The unpinned shape, as if the file had never been through `check`.
    let mut file = triggers_file(&sim, SHIPPED_RELEASE_GATE);
    file.chain[0].when.as_mut().unwrap().branch = None;
    let harness = Harness::start_with_file(&sim, file, Options::default()).await;
    harness.register(E2E, &["workflow-completed"]);
    let deploy = production_deploy_on_hold(&harness).await;

    // An attacker pushes a branch; its e2e build succeeds and CircleCI signs the webhook.
    start_pipeline_on(&harness, E2E, "attacker/x").await;
    sim.clear_requests();
    sim.run_until_idle().await;

    let delivery = &sim.deliveries()[0];
    assert_eq!(
        delivery.status,
        Some(200),
        "a decided refusal is answered 2xx"
    );
    let gate = harness.rule_records("release-gate").await;
    assert_eq!(gate.len(), 1);
    assert_eq!(gate[0].status, TriggerStatus::Rejected);
    let reason = gate[0].reason.as_deref().unwrap();
    assert!(
        reason.contains("acts on existing work") && reason.contains("pins no upstream"),
        "{reason}"
    );
    assert!(
        posts(&sim).is_empty(),
        "nothing was sent: {:?}",
        posts(&sim)
    );
    sim.run_until_idle().await;
    assert_eq!(
        sim.workflows(deploy)[0].status,
        SimWorkflowStatus::OnHold,
        "the production deploy is still held"
    );
    // A redelivery replays the refusal.
    let body = delivery.body.clone();
    let again = harness.post_signed(&body).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["actions"][0]["disposition"], "replayed");
    assert_eq!(harness.rule_records("release-gate").await.len(), 1);
}

#[tokio::test]
async fn a_pinned_release_gate_ignores_an_attacker_branch_and_approves_main() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, SHIPPED_RELEASE_GATE).await;
    harness.register(E2E, &["workflow-completed"]);
    let deploy = production_deploy_on_hold(&harness).await;

    start_pipeline_on(&harness, E2E, "attacker/x").await;
    sim.clear_requests();
    sim.run_until_idle().await;
    assert_eq!(sim.deliveries()[0].status, Some(200));
    assert!(harness.rule_records("release-gate").await.is_empty());
    assert!(posts(&sim).is_empty(), "{:?}", posts(&sim));
    assert_eq!(sim.workflows(deploy)[0].status, SimWorkflowStatus::OnHold);

    // The same build on the pinned branch does what the rule is for.
    start_pipeline(&harness, E2E).await;
    sim.run_until_idle().await;
    let gate = harness.rule_records("release-gate").await;
    assert_eq!(
        gate[0].status,
        TriggerStatus::Triggered,
        "{:?}",
        gate[0].reason
    );
    sim.run_until_idle().await;
    assert_eq!(sim.workflows(deploy)[0].status, SimWorkflowStatus::Success);
}

const GATE_FOR_OUR_RUNS: &str = r#"
[[chain]]
name = "release-gate"
when = { project = "gh/acme/e2e", workflow = "e2e", upstream = "ours" }
[[chain.then]]
action = "approve"
project = "gh/acme/deploy"
job = "hold-release"
select = "origin"
"#;

async fn upstream_ours_refuses_pipelines_we_did_not_start(store: StoreKind) {
    let sim = simulator().await;
    let options = Options {
        store,
        ..Options::default()
    };
    let harness = Harness::start_with(&sim, GATE_FOR_OUR_RUNS, options).await;
    harness.register(E2E, &["workflow-completed"]);
    let slot = "2026-11-30T02:00:00Z";
    let deploy = fire_scheduled(&harness, "nightly", slot, DEPLOY).await;
    sim.run_until_idle().await;

    // Someone runs e2e on main by hand: a real, signed, successful event — not ours.
    let by_hand = start_pipeline(&harness, E2E).await;
    sim.clear_requests();
    sim.run_until_idle().await;
    let gate = harness.rule_records("release-gate").await;
    assert_eq!(gate.len(), 1);
    assert_eq!(gate[0].status, TriggerStatus::Rejected);
    let reason = gate[0].reason.as_deref().unwrap();
    assert!(
        reason.contains("upstream = \"ours\"") && reason.contains(&by_hand.to_string()),
        "{reason}"
    );
    assert!(posts(&sim).is_empty(), "{:?}", posts(&sim));
    assert_eq!(
        sim.workflows(pipeline_of(&deploy))[0].status,
        SimWorkflowStatus::OnHold
    );

    // The e2e run of the same nightly slot is ours: found by pipeline id, it approves.
    fire_scheduled(&harness, "nightly", slot, E2E).await;
    sim.run_until_idle().await;
    let gate = harness.rule_records("release-gate").await;
    assert_eq!(gate.len(), 2);
    assert_eq!(
        gate[0].status,
        TriggerStatus::Triggered,
        "{:?}",
        gate[0].reason
    );
    sim.run_until_idle().await;
    assert_eq!(
        sim.workflows(pipeline_of(&deploy))[0].status,
        SimWorkflowStatus::Success
    );
}

#[tokio::test]
async fn upstream_ours_refuses_a_pipeline_we_did_not_start_on_sqlite() {
    upstream_ours_refuses_pipelines_we_did_not_start(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn upstream_ours_refuses_a_pipeline_we_did_not_start_on_dynamodb() {
    upstream_ours_refuses_pipelines_we_did_not_start(StoreKind::Dynamo).await;
}

#[tokio::test]
async fn hostile_branch_names_refuse_the_action_and_send_nothing() {
    let sim = simulator().await;
    let rules = r#"
[[chain]]
name = "deploy-release"
when = { project = "gh/acme/api", workflow = "build", branch = "release/*" }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"
parameters = { api_pipeline = "{{ branch }}" }
"#;
    let harness = Harness::start(&sim, rules).await;
    let hostile = [
        "release/$(id)",
        "release/`id`",
        "release/x;id",
        "release/x\nid",
        "release/ma\u{0456}n",
    ];
    for branch in hostile {
        let event = WorkflowEvent::new(API, "build", "success", sim.now()).branch(Some(branch));
        let answer = harness.post_signed(&event.json()).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let action = &answer.body["actions"][0];
        assert_eq!(action["status"], "rejected", "{branch:?}: {action}");
        let reason = action["reason"].as_str().unwrap();
        assert!(
            reason.contains("`branch`") && reason.contains("refused"),
            "{reason}"
        );
        assert!(
            !reason.contains(branch),
            "the value is not echoed: {reason}"
        );
    }
    assert!(
        sim.pipelines().iter().all(|p| p.project_slug != DEPLOY),
        "nothing was started"
    );
    // 10 KB of branch name is not an event at all: refused before any rule sees it.
    let huge = format!("release/{}", "a".repeat(10 * 1024));
    let event = WorkflowEvent::new(API, "build", "success", sim.now()).branch(Some(&huge));
    assert_eq!(harness.post_signed(&event.json()).await.status, 400);
    let records = harness.rule_records("deploy-release").await;
    assert_eq!(records.len(), hostile.len());
    assert!(records.iter().all(|r| r.status == TriggerStatus::Rejected));

    let fine = WorkflowEvent::new(API, "build", "success", sim.now()).branch(Some("release/1.4"));
    assert_eq!(harness.post_signed(&fine.json()).await.status, 200);
    let deploy: Vec<_> = sim
        .pipelines()
        .into_iter()
        .filter(|p| p.project_slug == DEPLOY)
        .collect();
    assert_eq!(deploy.len(), 1);
    assert_eq!(deploy[0].parameters["api_pipeline"], "release/1.4");
}
