//! CircleCI failing in every way a trigger can meet, end to end through each trigger kind —
//! the scheduler tick, the webhook receiver and the HTTP API, assembled as `serve` and the
//! Lambdas assemble them (`integration_tests::faults_support`) — asserting outcomes only:
//!
//! - every logical trigger has exactly one history row, whatever happened to it;
//! - the simulator holds exactly one pipeline per trigger recorded `triggered`, and each
//!   such record names its pipeline: nothing lost that was decided, nothing duplicated;
//! - an ambiguous create is adopted or left `ambiguous` for an operator — never resent.
//!
//! Real-time waits appear only where a real network timeout or a slow answer is the fault
//! under test, and are kept under ~2 s.
#![allow(clippy::unwrap_used)]

mod chained;
mod http;
mod scheduled;

use std::collections::BTreeSet;
use std::time::Duration;

use circleci_sim::Faults;
use integration_tests::faults_support::{System, TOKEN};
use integration_tests::scheduled_support::default_client_options;
use shared::circleci::ClientOptions;
use shared::store::{SourceKind, TriggerRecord, TriggerStatus};

/// The end-to-end invariant for one source: `logical` triggers, one history row each, and
/// the pipelines on `project` are exactly those the `triggered` rows name. Returns the rows.
async fn assert_one_row_each_and_no_stray_pipeline(
    sys: &System,
    kind: SourceKind,
    name: &str,
    project: &str,
    logical: usize,
) -> Vec<TriggerRecord> {
    let records = sys.records(kind, name).await;
    let mut ids: Vec<_> = records.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (records.len(), ids.len()),
        (logical, logical),
        "one history row per logical trigger: {records:#?}"
    );
    let recorded: BTreeSet<String> = records
        .iter()
        .filter(|r| r.status == TriggerStatus::Triggered)
        .map(|r| {
            r.pipeline
                .as_ref()
                .unwrap_or_else(|| panic!("a triggered record names its pipeline: {r:#?}"))
                .id
                .clone()
        })
        .collect();
    let triggered = records
        .iter()
        .filter(|r| r.status == TriggerStatus::Triggered)
        .count();
    assert_eq!(
        recorded.len(),
        triggered,
        "each pipeline belongs to one record"
    );
    let created: BTreeSet<String> = sys
        .pipelines_on(project)
        .iter()
        .map(|p| p.id.to_string())
        .collect();
    assert_eq!(
        created, recorded,
        "the pipelines CircleCI holds are exactly the recorded ones"
    );
    records
}

/// `detail.candidates` of an ambiguous record (what reconciliation found).
fn candidates(record: &TriggerRecord) -> Vec<String> {
    record
        .detail
        .candidates
        .as_ref()
        .map(|list| list.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// The next `next` requests with `method` (`GET`, `POST`) are answered 503.
fn http_503_on(method: &str, next: u32) -> Faults {
    Faults {
        fail_methods: vec![method.into()],
        ..Faults::fail_next(next, 503)
    }
}

/// Every request the simulator receives from now on waits `latency` before it is served;
/// the request log starts empty.
fn slow_down(sys: &System, latency: Duration) {
    sys.sim.clear_requests();
    sys.sim.set_faults(Faults {
        latency,
        ..Faults::default()
    });
}

/// The client gives up after one second: a 429 whose `Retry-After` is longer fails the
/// trigger instead of waiting.
fn one_second_deadline() -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(1),
        ..default_client_options()
    }
}

/// Someone else on the same token spends the bucket's only request, so our first request
/// meets the 429 (and CircleCI's `Retry-After` of ~1000 s, far past any deadline).
async fn spend_the_rate_limit(sys: &System) {
    sys.sim.set_faults(Faults::rate_limited(0.001, 1));
    let spent = reqwest::Client::new()
        .get(format!("{}/me", sys.sim.base_url()))
        .header("Circle-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 200);
}

/// Another tool using the same token (so the same actor) starts a pipeline on `project`'s
/// `branch` through the API, not through us. Returns its id.
async fn another_tool_creates(sys: &System, project: &str, branch: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/project/{project}/pipeline", sys.sim.base_url()))
        .header("Circle-Token", TOKEN)
        .json(&serde_json::json!({ "branch": branch }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}
