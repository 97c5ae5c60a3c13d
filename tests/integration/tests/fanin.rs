//! Fan-in (`after = [...]`) through `webhook_router()` over HTTP: out-of-order, duplicated,
//! concurrent and failed upstreams, window expiry, a branch join firing again in its next
//! window, and origin correlation of two pipelines one schedule slot started (end to end
//! with the simulator). Joins live in the real store (SQLite; one test on DynamoDB/moto).
#![allow(clippy::unwrap_used)]

mod chained_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chained_support::{ALICE_TOKEN, Answer, Harness, Options, StoreKind, WorkflowEvent};
use chrono::{DateTime, Utc};
use circleci_sim::{JobSpec, ProjectSpec, Simulator, WorkflowSpec};
use serde_json::Value;
use shared::actions::{Action, Target};
use shared::clock::ManualClock;
use shared::config::TargetSpec;
use shared::engine::{Fired, TriggerIntent};
use shared::store::{
    ClaimKey, ClaimKind, Fingerprint, SourceKind, TriggerRecord, TriggerSource, TriggerStatus,
};
use uuid::Uuid;

const API: &str = "gh/acme/api";
const WEB: &str = "gh/acme/web";
const E2E: &str = "gh/acme/e2e";

fn fan_in(correlate: &str, window: &str) -> String {
    format!(
        r#"
[[chain]]
name = "e2e-when-both-built"
after = [{{ project = "{API}", workflow = "build" }}, {{ project = "{WEB}", workflow = "build" }}]
correlate = "{correlate}"
window = "{window}"
[[chain.then]]
action = "pipeline"
project = "{E2E}"
branch = "main"
"#
    )
}

async fn simulator() -> Simulator {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", ALICE_TOKEN);
    for project in [API, WEB] {
        sim.add_project(
            ProjectSpec::new(project)
                .workflow(WorkflowSpec::new("build").job(JobSpec::new("compile"))),
        );
    }
    sim.add_project(
        ProjectSpec::new(E2E).workflow(WorkflowSpec::new("e2e").job(JobSpec::new("browser"))),
    );
    sim
}

/// A harness on a manual clock (fan-in windows are measured on it).
async fn manual(correlate: &str, window: &str) -> (Simulator, Harness, Arc<ManualClock>) {
    manual_on(correlate, window, StoreKind::Sqlite).await
}

async fn manual_on(
    correlate: &str,
    window: &str,
    store: StoreKind,
) -> (Simulator, Harness, Arc<ManualClock>) {
    let sim = simulator().await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let harness = Harness::start_with(
        &sim,
        &fan_in(correlate, window),
        Options {
            clock: Some(clock.clone()),
            store,
            ..Options::default()
        },
    )
    .await;
    (sim, harness, clock)
}

fn e2e_pipelines(sim: &Simulator) -> usize {
    sim.pipelines()
        .iter()
        .filter(|p| p.project_slug == E2E)
        .count()
}

fn build(project: &str, status: &str, at: DateTime<Utc>) -> WorkflowEvent {
    WorkflowEvent::new(project, "build", status, at)
}

fn join_state(answer: &Answer) -> &str {
    answer.body["joins"][0]["state"]
        .as_str()
        .unwrap_or_default()
}

/// Delivers until the receiver answers 2xx, as CircleCI redelivers a 5xx.
async fn deliver(harness: &Harness, event: &Value) -> Answer {
    for _ in 0..20 {
        let answer = harness.post_signed(event).await;
        if answer.status != 503 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still 503 after 20 deliveries");
}

#[tokio::test]
async fn arrivals_in_any_order_fire_once_and_duplicates_only_replay() {
    let (sim, harness, clock) = manual("branch", "2h").await;
    let t0 = clock.now_utc();

    // web first, then a duplicate delivery of it.
    let web = build(WEB, "success", t0).json();
    let first = harness.post_signed(&web).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(join_state(&first), "waiting");
    assert_eq!(
        first.body["joins"][0]["missing"],
        serde_json::json!(["after[0]"])
    );
    assert_eq!(first.body["joins"][0]["correlation"], "branch:main");
    let duplicate = harness.post_signed(&web).await;
    assert_eq!(duplicate.status, 200);
    assert_eq!(join_state(&duplicate), "duplicate");
    // Another web pipeline on main in the same window: the upstream already arrived.
    let web_again = build(WEB, "success", t0).json();
    assert_eq!(
        join_state(&harness.post_signed(&web_again).await),
        "duplicate"
    );
    assert_eq!(e2e_pipelines(&sim), 0);

    clock.advance(chrono::Duration::minutes(20));
    let api = build(API, "success", clock.now_utc()).json();
    let fired = harness.post_signed(&api).await;
    assert_eq!(fired.status, 200, "{:?}", fired.body);
    assert_eq!(join_state(&fired), "complete");
    assert_eq!(fired.body["actions"][0]["status"], "triggered");
    assert_eq!(fired.body["actions"][0]["disposition"], "decided");
    assert_eq!(e2e_pipelines(&sim), 1);

    // The completing event delivered again, and a late arrival in the same window: both
    // go through the same claim and replay.
    let again = harness.post_signed(&api).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["actions"][0]["disposition"], "replayed");
    let late = harness
        .post_signed(&build(API, "success", clock.now_utc()).json())
        .await;
    assert_eq!(late.status, 200);
    assert_eq!(late.body["actions"][0]["disposition"], "replayed");
    assert_eq!(e2e_pipelines(&sim), 1);

    let records = harness.rule_records("e2e-when-both-built").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, TriggerStatus::Triggered);
    assert_eq!(records[0].correlation.as_deref(), Some("branch:main"));
    let join = records[0].detail.join.as_ref().unwrap();
    assert_eq!(join.generation, 1);
    assert_eq!(join.arrived.len(), 2);
}

#[tokio::test]
async fn concurrent_arrivals_fire_each_join_exactly_once() {
    concurrent_arrivals(StoreKind::Sqlite, 8).await;
}

#[tokio::test]
async fn concurrent_arrivals_fire_each_join_exactly_once_on_dynamodb() {
    // Fewer joins: moto behind the serialising proxy is slow, and four already race.
    concurrent_arrivals(StoreKind::Dynamo, 4).await;
}

async fn concurrent_arrivals(store: StoreKind, joins: usize) {
    let (sim, harness, clock) = manual_on("branch", "2h", store).await;
    let harness = Arc::new(harness);
    let now = clock.now_utc();
    let branches: Vec<String> = (0..joins).map(|i| format!("release/{i}")).collect();
    let mut deliveries = Vec::new();
    for branch in &branches {
        for project in [API, WEB, API, WEB] {
            // Each upstream twice (CircleCI duplicates), all at once.
            let event = build(project, "success", now).branch(Some(branch)).json();
            let harness = harness.clone();
            deliveries.push(tokio::spawn(async move { deliver(&harness, &event).await }));
        }
    }
    for delivery in deliveries {
        let answer = delivery.await.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    assert_eq!(
        e2e_pipelines(&sim),
        branches.len(),
        "one e2e per branch, never two"
    );
    let records = harness.rule_records("e2e-when-both-built").await;
    let triggered: Vec<&TriggerRecord> = records
        .iter()
        .filter(|r| r.status == TriggerStatus::Triggered)
        .collect();
    assert_eq!(triggered.len(), branches.len());
    let mut correlations: Vec<&str> = triggered
        .iter()
        .map(|r| r.correlation.as_deref().unwrap())
        .collect();
    correlations.sort_unstable();
    correlations.dedup();
    assert_eq!(correlations.len(), branches.len());
}

#[tokio::test]
async fn a_failed_upstream_closes_the_join_and_the_closing_is_recorded() {
    let (sim, harness, clock) = manual("branch", "2h").await;
    let t0 = clock.now_utc();
    let failed = build(WEB, "failed", t0).json();
    let closed = harness.post_signed(&failed).await;
    assert_eq!(closed.status, 200, "{:?}", closed.body);
    assert_eq!(join_state(&closed), "closed");
    let rows = harness.rule_records("e2e-when-both-built").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, TriggerStatus::Skipped);
    let reason = rows[0].reason.as_deref().unwrap();
    assert!(
        reason.contains("after[1] (gh/acme/web, workflow build) ended `failed`"),
        "{reason}"
    );
    assert_eq!(rows[0].correlation.as_deref(), Some("branch:main"));

    // The other upstream succeeding afterwards fires nothing; its row replays the closing.
    let api = harness.post_signed(&build(API, "success", t0).json()).await;
    assert_eq!(join_state(&api), "closed");
    assert_eq!(api.body["actions"][0]["disposition"], "replayed");
    assert_eq!(harness.post_signed(&failed).await.status, 200);
    assert_eq!(e2e_pipelines(&sim), 0);
    assert_eq!(harness.rule_records("e2e-when-both-built").await.len(), 1);
}

#[tokio::test]
async fn a_join_that_misses_its_window_expires_and_a_new_window_starts() {
    let (sim, harness, clock) = manual("branch", "2h").await;
    let t0 = clock.now_utc();
    assert_eq!(
        join_state(&harness.post_signed(&build(API, "success", t0).json()).await),
        "waiting"
    );

    clock.advance(chrono::Duration::hours(3));
    let web = harness
        .post_signed(&build(WEB, "success", clock.now_utc()).json())
        .await;
    assert_eq!(web.status, 200, "{:?}", web.body);
    assert_eq!(
        join_state(&web),
        "waiting",
        "web opened generation 2 on its own"
    );
    assert_eq!(web.body["joins"][0]["generation"], 2);
    assert_eq!(e2e_pipelines(&sim), 0, "api and web were three hours apart");
    let rows = harness.rule_records("e2e-when-both-built").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, TriggerStatus::Skipped);
    let reason = rows[0].reason.as_deref().unwrap();
    assert!(reason.contains("expired"), "{reason}");
    assert!(
        reason.contains("after[1] (gh/acme/web, workflow build) did not succeed within 2h"),
        "{reason}"
    );

    clock.advance(chrono::Duration::minutes(10));
    let api = harness
        .post_signed(&build(API, "success", clock.now_utc()).json())
        .await;
    assert_eq!(join_state(&api), "complete");
    assert_eq!(e2e_pipelines(&sim), 1);
}

#[tokio::test]
async fn a_branch_join_fires_again_in_its_next_window() {
    let (sim, harness, clock) = manual("branch", "2h").await;
    for day in 0..3 {
        let now = clock.now_utc();
        harness
            .post_signed(&build(API, "success", now).json())
            .await;
        let fired = harness
            .post_signed(&build(WEB, "success", now).json())
            .await;
        assert_eq!(
            join_state(&fired),
            "complete",
            "day {day}: {:?}",
            fired.body
        );
        assert_eq!(fired.body["joins"][0]["generation"], day + 1);
        // A late arrival on the same day does nothing new.
        harness
            .post_signed(&build(API, "success", now).json())
            .await;
        assert_eq!(e2e_pipelines(&sim), day as usize + 1);
        clock.advance(chrono::Duration::days(1));
    }
    let records = harness.rule_records("e2e-when-both-built").await;
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.status == TriggerStatus::Triggered));
}

#[tokio::test]
async fn an_event_without_the_correlated_value_is_recorded_and_joins_nothing() {
    let (sim, harness, clock) = manual("tag", "2h").await;
    // A branch pipeline has no tag.
    let answer = harness
        .post_signed(&build(API, "success", clock.now_utc()).json())
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(join_state(&answer), "uncorrelated");
    let rows = harness.rule_records("e2e-when-both-built").await;
    assert_eq!(rows[0].status, TriggerStatus::Skipped);
    assert!(rows[0].reason.as_deref().unwrap().contains("has no tag"));
    // Tags join.
    let now = clock.now_utc();
    harness
        .post_signed(&build(API, "success", now).tag("v1.2.0").json())
        .await;
    let fired = harness
        .post_signed(&build(WEB, "success", now).tag("v1.2.0").json())
        .await;
    assert_eq!(join_state(&fired), "complete");
    assert_eq!(fired.body["joins"][0]["correlation"], "tag:v1.2.0");
    assert_eq!(e2e_pipelines(&sim), 1);
}

/// Fires `project` the way the scheduler does for one slot (all share the slot's origin).
async fn fire_scheduled(harness: &Harness, slot: &str, project: &str) -> TriggerRecord {
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
    let key = ClaimKey::new(ClaimKind::Schedule, &["nightly", slot, project]);
    let intent = TriggerIntent {
        fingerprint: Fingerprint::of(key.as_str().as_bytes()),
        key,
        source: TriggerSource::new(SourceKind::Schedule, "nightly"),
        origin: Some(shared::triggers::scheduled::slot_origin("nightly", slot)),
        action: Action::Pipeline {
            target: Target::resolve(&spec, &harness.triggers.circleci).unwrap(),
        },
        upstream: None,
        correlation: None,
        detail: Box::new(shared::store::RecordDetail {
            slot: Some(slot.to_owned()),
            ..Default::default()
        }),
    };
    match harness.engine.fire(intent).await.unwrap() {
        Fired::Performed(record) => record,
        other => panic!("{other:?}"),
    }
}

async fn origin_join_end_to_end(store: StoreKind) {
    let sim = simulator().await;
    let harness = Harness::start_with(
        &sim,
        &fan_in("origin", "2h"),
        Options {
            store,
            ..Options::default()
        },
    )
    .await;
    for project in [API, WEB, E2E] {
        harness.register(project, &["workflow-completed"]);
    }
    // Slot A starts api and web; slot B starts only api (its join waits forever).
    let api_a = fire_scheduled(&harness, "2026-11-30T02:00:00Z", API).await;
    let web_a = fire_scheduled(&harness, "2026-11-30T02:00:00Z", WEB).await;
    let api_b = fire_scheduled(&harness, "2026-12-01T02:00:00Z", API).await;
    assert_eq!(api_a.origin, web_a.origin);
    sim.run_until_idle().await;
    assert!(
        sim.deliveries().iter().all(|d| d.status == Some(200)),
        "{:?}",
        sim.deliveries()
    );

    assert_eq!(e2e_pipelines(&sim), 1, "only slot A's join is complete");
    let fired = harness.rule_records("e2e-when-both-built").await;
    assert_eq!(fired.len(), 1);
    let e2e = &fired[0];
    assert_eq!(e2e.status, TriggerStatus::Triggered);
    assert_eq!(
        e2e.origin, api_a.origin,
        "the e2e run belongs to the nightly slot that built both"
    );
    assert_eq!(
        e2e.correlation.as_deref(),
        Some(format!("origin:{}", api_a.origin).as_str())
    );
    let upstream_trigger = e2e.upstream.as_ref().unwrap().trigger_id.unwrap();
    assert!(upstream_trigger == api_a.id || upstream_trigger == web_a.id);

    // The closed loop ran for every pipeline, including the one the join started.
    sim.run_until_idle().await;
    for id in [api_a.id, web_a.id, api_b.id, e2e.id] {
        let record = harness.store.get_record(id).await.unwrap().unwrap();
        assert!(record.pipeline_final, "{id}: {:?}", record.workflows);
        assert_eq!(record.workflows[0].status, "success");
    }
    let history_of_origin = harness
        .store
        .list_by_origin(api_a.origin, None, shared::store::PageRequest::first(50))
        .await
        .unwrap()
        .items;
    assert_eq!(
        history_of_origin.len(),
        3,
        "api, web and the e2e they led to"
    );
    let pipeline = Uuid::parse_str(&e2e.pipeline.as_ref().unwrap().id).unwrap();
    assert_eq!(sim.pipeline(pipeline).unwrap().project_slug, E2E);
}

#[tokio::test]
async fn origin_correlation_joins_the_two_pipelines_one_schedule_slot_started() {
    origin_join_end_to_end(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn origin_correlation_on_dynamodb() {
    origin_join_end_to_end(StoreKind::Dynamo).await;
}

#[tokio::test]
async fn an_upstream_no_trigger_of_ours_started_cannot_join_by_origin() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, &fan_in("origin", "2h")).await;
    let answer = harness
        .post_signed(&build(API, "success", sim.now()).json())
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(join_state(&answer), "uncorrelated");
    let rows = harness.rule_records("e2e-when-both-built").await;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("was not started by a trigger of this service")
    );
}

trait NowUtc {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        shared::clock::Clock::now(self)
    }
}

#[tokio::test]
async fn an_upstream_ours_fan_in_refuses_arrivals_from_pipelines_we_did_not_start() {
    let sim = simulator().await;
    let rules = fan_in("branch", "2h").replace(
        "workflow = \"build\" }",
        "workflow = \"build\", upstream = \"ours\" }",
    );
    assert_eq!(rules.matches("upstream = \"ours\"").count(), 2);
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let options = Options {
        clock: Some(clock.clone()),
        ..Options::default()
    };
    let harness = Harness::start_with(&sim, &rules, options).await;
    let t0 = clock.now_utc();
    // Both upstreams built by someone else: signed, successful, on the same branch.
    for project in [API, WEB] {
        let answer = harness
            .post_signed(&build(project, "success", t0).json())
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert!(
            answer.body["joins"].as_array().unwrap().is_empty(),
            "{:?}",
            answer.body
        );
        assert_eq!(answer.body["actions"][0]["status"], "rejected");
        let reason = answer.body["actions"][0]["reason"].as_str().unwrap();
        assert!(
            reason.contains("not counted") && reason.contains("upstream = \"ours\""),
            "{reason}"
        );
    }
    assert_eq!(e2e_pipelines(&sim), 0, "the join never formed");
    let records = harness.rule_records("e2e-when-both-built").await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.status == TriggerStatus::Rejected));
}
