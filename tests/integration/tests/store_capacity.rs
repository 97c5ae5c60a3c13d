//! What one triggered pipeline costs in DynamoDB, billed by the capacity meter (see
//! `integration_tests::capacity`: moto's own `ConsumedCapacity` is a constant) over a real
//! trigger: the engine, the real CircleCI client against the simulator over HTTP, and the
//! DynamoDB adapter on moto_server.
//!
//! Counted from the claim to the decision, the way each source fires: a schedule slot and
//! an HTTP call are their own origin; a chained trigger descends from an upstream's origin.

use std::collections::BTreeMap;
use std::sync::Arc;

use circleci_sim::{JobSpec, ProjectSpec, Simulator, WorkflowSpec};
use integration_tests::capacity::{CapacityMeter, Totals, metered_table};
use integration_tests::circleci_client::{TokenFile, client_for, test_options};
use shared::actions::{Action, Actions, Target};
use shared::clock::{Clock, ManualClock};
use shared::config::TargetSpec;
use shared::engine::{Engine, EngineSettings, Fired, TriggerIntent};
use shared::store::{
    ClaimKey, ClaimKind, DynamoStore, EventNote, Fingerprint, RecordDetail, SourceKind, TriggerId,
    TriggerSource, TriggerStatus, Upstream,
};

const TOKEN: &str = "tok-capacity-alice-0123456789";
const PROJECT: &str = "gh/acme/api";

/// What a triggered pipeline may cost: one item for claim and record, opened by one
/// `PutItem` (item 1, its `by_source` entry 1, the reconciler's `retry_due` entry 1),
/// decided by one fenced `UpdateItem` (item 1; the `retry_due` entry stays, behind the
/// sweep's cursor) alongside the new pipeline's binding (1). It was 27 WRU in 5 requests.
const MAX_WRITE_UNITS: f64 = 5.0;
/// A chained trigger is also in `by_origin` (one more index entry), and not in
/// `retry_due` when it is opened: its queued delivery is received again until it is
/// decided (`SourceKind::redelivered`), so the same 5.
const MAX_CHAINED_WRITE_UNITS: f64 = 5.0;
/// open, settle, binding (settle and binding concurrently: two round trips).
const MAX_REQUESTS: usize = 3;

struct Rig {
    meter: CapacityMeter,
    engine: Engine,
    triggers: shared::config::TriggersFile,
    _sim: Simulator,
    _tokens: TokenFile,
}

async fn rig() -> Rig {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", TOKEN);
    sim.add_project(
        ProjectSpec::new(PROJECT).workflow(WorkflowSpec::new("build").job(JobSpec::new("test"))),
    );
    let (meter, client, table) = metered_table("capacity").await;
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(chrono::Utc::now()));
    let tokens = TokenFile::new(&[("default", TOKEN)]).unwrap();
    let circleci = Arc::new(client_for(&sim, tokens.secrets(), test_options()).unwrap());
    let engine = Engine::new(
        Arc::new(DynamoStore::new(client, table, clock.clone())),
        Arc::new(Actions::new(circleci)),
        clock,
        EngineSettings::default(),
    );
    let triggers = shared::config::parse_str("", "capacity.toml").unwrap();
    meter.reset();
    Rig {
        meter,
        engine,
        triggers,
        _sim: sim,
        _tokens: tokens,
    }
}

/// What a chained trigger carries as the engine gets it (dispatch's `upstream_of` and
/// `event_detail`): the upstream pipeline, its workflow and revision, the webhook event.
fn chained_facts(intent: &mut TriggerIntent, upstream: TriggerId) {
    intent.upstream = Some(Upstream {
        project: "gh/acme/api".into(),
        pipeline_id: "5034460f-c7c4-4c43-9457-de07e2029e7b".into(),
        workflow_id: Some("fda08377-fe7e-46b1-8992-3a7aaecac9c3".into()),
        workflow_name: Some("build".into()),
        revision: Some("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".into()),
        event_id: Some("3888f21b-eaa7-38e3-8f3d-75a63bba8895".into()),
        trigger_id: Some(upstream),
    });
    intent.detail.event = Some(EventNote {
        id: "3888f21b-eaa7-38e3-8f3d-75a63bba8895".into(),
        kind: "workflow-completed".into(),
        happened_at: "2026-12-06T02:13:45.123Z".into(),
        status: "success".into(),
        job: None,
    });
    intent.detail.action_index = Some(0);
    intent.detail.slot = None;
    intent.detail.target = None;
}

fn intent(rig: &Rig, kind: SourceKind, name: &str, origin: Option<TriggerId>) -> TriggerIntent {
    // A chain passes what it learnt upstream (DESIGN.md's deploy-after-build example).
    let parameters = match kind {
        SourceKind::Chain => BTreeMap::from([
            (
                "api_sha".to_owned(),
                shared::config::ParameterValue::String(
                    "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".to_owned(),
                ),
            ),
            (
                "api_pipeline".to_owned(),
                shared::config::ParameterValue::String("gh/acme/api#1234".to_owned()),
            ),
        ]),
        _ => BTreeMap::from([(
            "reason".to_owned(),
            shared::config::ParameterValue::String("nightly".to_owned()),
        )]),
    };
    let spec = TargetSpec {
        project: PROJECT.to_owned(),
        branch: Some("main".to_owned()),
        tag: None,
        workflow: None,
        parameters,
        definition_id: None,
        config: None,
        checkout: None,
        token: None,
    };
    let target = Target::resolve(&spec, &rig.triggers.circleci).unwrap();
    let key = ClaimKey::new(
        ClaimKind::Schedule,
        &[name, &uuid::Uuid::new_v4().to_string()],
    );
    let mut intent = TriggerIntent {
        fingerprint: Fingerprint::of(key.as_str().as_bytes()),
        key,
        source: TriggerSource::new(kind, name),
        origin,
        action: Action::Pipeline { target },
        upstream: None,
        correlation: None,
        detail: Box::new(RecordDetail {
            slot: Some("2026-12-06T02:00:00Z".to_owned()),
            target: Some(PROJECT.to_owned()),
            ..Default::default()
        }),
    };
    if let (SourceKind::Chain, Some(upstream)) = (kind, origin) {
        chained_facts(&mut intent, upstream);
    }
    intent
}

/// What firing `intent` costs, after a first trigger of the same source warmed the store
/// up (its one-time source registration is not a per-trigger cost).
async fn cost_of(rig: &Rig, kind: SourceKind, name: &str, origin: Option<TriggerId>) -> Totals {
    rig.engine
        .fire(intent(rig, kind, name, origin))
        .await
        .unwrap();
    let intent = intent(rig, kind, name, origin);
    rig.meter.reset();
    match rig.engine.fire(intent).await.unwrap() {
        Fired::Performed(record) => {
            assert_eq!(
                record.status,
                TriggerStatus::Triggered,
                "{:?}",
                record.reason
            );
            assert!(record.pipeline.is_some());
        }
        other => panic!("expected a new trigger, got {other:?}"),
    }
    let billed = rig.meter.billed();
    eprintln!("{billed:#?}");
    // One write unit per item write: the item (claim + deflated record) stays under 1 KB.
    let largest = billed.iter().map(|b| b.item_bytes).max().unwrap_or(0);
    assert!(largest < 1024, "the trigger's item grew to {largest} bytes");
    rig.meter.totals()
}

fn check(what: &str, totals: Totals, max_write_units: f64) {
    println!(
        "{what}: {} requests, {} WRU, {} RRU",
        totals.requests, totals.write_units, totals.read_units
    );
    assert!(
        totals.write_units <= max_write_units,
        "{what} costs {} WRU (budget {max_write_units})",
        totals.write_units
    );
    assert_eq!(totals.read_units, 0.0, "{what} reads");
    assert!(
        totals.requests <= MAX_REQUESTS,
        "{what} makes {} store requests (budget {MAX_REQUESTS})",
        totals.requests
    );
}

#[tokio::test]
async fn a_scheduled_trigger_stays_within_its_capacity_budget() {
    let rig = rig().await;
    let totals = cost_of(&rig, SourceKind::Schedule, "nightly", None).await;
    check("scheduled", totals, MAX_WRITE_UNITS);
}

#[tokio::test]
async fn an_http_trigger_stays_within_its_capacity_budget() {
    let rig = rig().await;
    let totals = cost_of(&rig, SourceKind::Http, "deploy", None).await;
    check("http", totals, MAX_WRITE_UNITS);
}

#[tokio::test]
async fn a_chained_trigger_stays_within_its_capacity_budget() {
    let rig = rig().await;
    let upstream = TriggerId::from_uuid(uuid::Uuid::new_v4());
    let totals = cost_of(
        &rig,
        SourceKind::Chain,
        "deploy-after-build",
        Some(upstream),
    )
    .await;
    check("chained", totals, MAX_CHAINED_WRITE_UNITS);
}
