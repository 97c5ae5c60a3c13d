//! The HTTP API under CircleCI faults. An HTTP caller owns its retries: the same
//! Idempotency-Key replays the stored answer; a new key is a new logical trigger.

use circleci_sim::Faults;
use integration_tests::faults_support::{DEPLOY, ENDPOINT, System};
use integration_tests::scheduled_support::Backend;
use shared::store::{SourceKind, TriggerStatus};

use super::{
    another_tool_creates, assert_one_row_each_and_no_stray_pipeline, candidates, http_503_on,
    one_second_deadline, spend_the_rate_limit,
};

fn problem_kind(body: &serde_json::Value) -> &str {
    body["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or("")
}

/// The create makes its pipeline and answers 502: the caller gets 202 with the adopted
/// pipeline, and repeating the request (same key) replays it without sending anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_then_502_is_adopted_and_a_repeated_request_replays_it() {
    let sys = System::builder(Backend::Sqlite).build().await;
    sys.sim.set_faults(Faults {
        create_then_502: 1,
        ..Faults::default()
    });
    let answer = sys.call("release-1", "1.2.3").await;
    assert_eq!(answer.status, 202, "{:#}", answer.body);
    let pipelines = sys.pipelines_on(DEPLOY);
    assert_eq!(pipelines.len(), 1);
    assert_eq!(answer.body["pipeline"]["id"], pipelines[0].id.to_string());
    for _ in 0..2 {
        let again = sys.call("release-1", "1.2.3").await;
        assert_eq!(again.status, 202);
        assert_eq!(again.body["id"], answer.body["id"]);
    }
    assert_eq!(sys.creates_sent(), 1, "never resent");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Http, ENDPOINT, DEPLOY, 1)
            .await;
    assert_eq!(records[0].status, TriggerStatus::Triggered);
}

/// A 5xx to the create itself: 502 `outcome-unknown` (CircleCI may have acted), recorded
/// `ambiguous` with no candidate found, never resent — the same key replays the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5xx_on_the_create_is_outcome_unknown_and_never_resent() {
    let sys = System::builder(Backend::Sqlite).build().await;
    sys.sim.set_faults(http_503_on("POST", 1));
    let answer = sys.call("release-2", "1.2.4").await;
    assert_eq!(
        (answer.status, problem_kind(&answer.body)),
        (502, "outcome-unknown"),
        "{:#}",
        answer.body
    );
    let again = sys.call("release-2", "1.2.4").await;
    assert_eq!(again.status, 502);
    assert_eq!(sys.creates_sent(), 1, "never resent");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Http, ENDPOINT, DEPLOY, 1)
            .await;
    assert_eq!(records[0].status, TriggerStatus::Ambiguous);
    assert!(candidates(&records[0]).is_empty());
}

/// CircleCI rate limits past the deadline: 429 with CircleCI's wait, the row `failed`
/// without a retry time (HTTP callers own their retries; the sweep leaves it). The same key
/// replays the 429 and sends nothing; a new key after the limit lifts (a fresh instance)
/// triggers once. Two logical triggers, two rows, one pipeline. On DynamoDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_past_the_deadline_is_answered_and_only_a_new_key_triggers_on_dynamodb() {
    let mut sys = System::builder(Backend::Dynamo)
        .client_options(one_second_deadline())
        .build()
        .await;
    spend_the_rate_limit(&sys).await;

    let limited = sys.call("release-3", "1.2.5").await;
    assert_eq!(
        (limited.status, problem_kind(&limited.body)),
        (429, "circleci-rate-limited"),
        "{:#}",
        limited.body
    );
    assert_eq!(limited.body["retry_with_new_key"], true);
    assert!(limited.retry_after.is_some_and(|s| s > 1), "{limited:?}");
    let failed = sys.records(SourceKind::Http, ENDPOINT).await;
    assert_eq!(
        (failed[0].status, failed[0].retry_at),
        (TriggerStatus::Failed, None)
    );
    let sweep = sys.instance().context.engine.sweep(100).await.unwrap();
    assert_eq!(sweep.attempted, 0, "HTTP triggers are never swept");

    sys.sim.set_faults(Faults::default());
    sys.restart().await;
    let replayed = sys.call("release-3", "1.2.5").await;
    assert_eq!(replayed.status, 429, "the key holds its answer");
    assert!(sys.pipelines_on(DEPLOY).is_empty());
    let fresh = sys.call("release-3b", "1.2.5").await;
    assert_eq!(fresh.status, 202, "{:#}", fresh.body);

    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Http, ENDPOINT, DEPLOY, 2)
            .await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r.status == TriggerStatus::Triggered)
            .count(),
        1
    );
}

/// Another tool on the same token started a pipeline on the endpoint's branch a minute
/// before our create, whose 503 leaves the outcome unknown. That pipeline was created
/// before the claim was marked sending, so it cannot be ours: it is not adopted (the old
/// ±120 s window took it), the call is `outcome-unknown` with no candidate, and nothing is
/// resent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tools_pipeline_created_before_the_send_is_never_adopted() {
    let sys = System::builder(Backend::Sqlite).build().await;
    let theirs = another_tool_creates(&sys, DEPLOY, "release").await;
    sys.advance(chrono::TimeDelta::seconds(60)).await;
    sys.sim.set_faults(http_503_on("POST", 1));
    let answer = sys.call("release-theirs", "1.2.5").await;
    assert_eq!(
        (answer.status, problem_kind(&answer.body)),
        (502, "outcome-unknown"),
        "their pipeline {theirs} must not be adopted: {:#}",
        answer.body
    );
    let records = sys.records(SourceKind::Http, ENDPOINT).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].status, TriggerStatus::Ambiguous);
    assert_eq!(records[0].pipeline, None, "{:#?}", records[0]);
    assert!(candidates(&records[0]).is_empty(), "{:#?}", records[0]);
    let ids: Vec<String> = sys.pipeline_ids_on(DEPLOY);
    assert_eq!(
        ids,
        vec![theirs],
        "ours never reached CircleCI and was not resent"
    );
}
