//! CircleCI failing in each way, and what the caller is told: the status, whether to
//! retry, and whether a retry needs a new Idempotency-Key.

use std::time::Duration;

use circleci_sim::Faults;
use serde_json::json;
use shared::circleci::{ClientOptions, RateDefaults};
use shared::store::TriggerStatus;

use crate::harness::{Harness, Options, TOKEN};

const VERSION: &str = "1.2.3";

fn body() -> serde_json::Value {
    json!({"parameters": {"version": VERSION}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn circleci_refusing_the_request_is_502_and_not_worth_retrying() {
    let h = Harness::start().await;
    let answer = h
        .call("deploy-ghost", &h.keys.bot, Some("ghost"), json!({}))
        .await;
    assert_eq!(
        (answer.status, answer.kind()),
        (502, "circleci-rejected"),
        "{}",
        answer.body
    );
    assert_eq!(answer.body["retryable"], false);
    assert_eq!(answer.body["retry_with_new_key"], false);
    assert_eq!(answer.body["trigger"]["status"], "failed");
    let record = h.record(answer.trigger_id()).await;
    assert_eq!(record.status, TriggerStatus::Failed);
    assert_eq!(record.retry_at, None, "HTTP triggers are never swept");
    // The stored answer is replayed under the same key.
    let replay = h
        .call("deploy-ghost", &h.keys.bot, Some("ghost"), json!({}))
        .await;
    assert_eq!(replay.status, 502);
    assert_eq!(replay.body["trigger_id"], answer.body["trigger_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ci_skip_is_decided_without_a_pipeline() {
    let h = Harness::start().await;
    h.sim.set_faults(Faults {
        ci_skip_next: 1,
        ..Faults::default()
    });
    let answer = h.call("deploy-staging", &h.keys.bot, None, body()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "not_triggered");
    assert!(answer.body.get("pipeline").is_none());
    assert_eq!(h.pipelines(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_lost_after_the_create_is_reconciled_not_resent() {
    let h = Harness::start().await;
    h.sim.set_faults(Faults {
        create_then_502: 1,
        ..Faults::default()
    });
    let answer = h.call("deploy-staging", &h.keys.bot, None, body()).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let pipelines = h.sim.pipelines();
    assert_eq!(pipelines.len(), 1, "never sent twice");
    assert_eq!(answer.body["pipeline"]["id"], pipelines[0].id.to_string());
    assert!(
        answer.body["reason"]
            .as_str()
            .unwrap()
            .contains("adopted pipeline"),
        "{}",
        answer.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn circleci_still_limiting_at_the_deadline_is_429_with_its_retry_after() {
    let h = Harness::start_with(Options {
        circleci: ClientOptions {
            deadline: Duration::from_secs(3),
            ..Options::default().circleci
        },
    })
    .await;
    h.sim.set_faults(Faults::rate_limited(0.001, 1));
    // Someone else on the same token used the only request of the bucket.
    let spent = reqwest::Client::new()
        .get(format!("{}/me", h.sim.base_url()))
        .header("Circle-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 200);

    let answer = h.call("deploy-staging", &h.keys.bot, None, body()).await;
    assert_eq!(
        (answer.status, answer.kind()),
        (429, "circleci-rate-limited"),
        "{}",
        answer.body
    );
    let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after > 3, "CircleCI's wait, not ours: {retry_after}");
    assert_eq!(answer.body["retryable"], true);
    assert_eq!(
        answer.body["retry_with_new_key"], true,
        "nothing was started, and the key holds this answer"
    );
    assert_eq!(h.pipelines(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn circleci_unavailable_is_502_and_retryable() {
    let h = Harness::start().await;
    h.sim.set_faults(Faults {
        fail_next: 1_000,
        fail_status: 503,
        fail_methods: vec!["GET".into()],
        ..Faults::default()
    });
    let answer = h
        .call(
            "approve-release",
            &h.keys.bot,
            None,
            json!({"select": "pipeline:5034460f-c7c4-4c43-9457-de07e2029e7b"}),
        )
        .await;
    assert_eq!(
        (answer.status, answer.kind()),
        (502, "circleci-unavailable"),
        "{}",
        answer.body
    );
    assert_eq!(answer.body["retryable"], true);
    let posts = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 0, "no approval was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn circleci_too_slow_is_504() {
    let h = Harness::start_with(Options {
        circleci: ClientOptions {
            deadline: Duration::from_millis(1_500),
            request_timeout: Duration::from_millis(300),
            rate: RateDefaults {
                burst: 100,
                per_second: 100.0,
            },
            ..Options::default().circleci
        },
    })
    .await;
    h.sim.set_faults(Faults {
        latency: Duration::from_secs(2),
        ..Faults::default()
    });
    let answer = h
        .call(
            "approve-release",
            &h.keys.bot,
            None,
            json!({"select": "revision:0123456789abcdef0123456789abcdef01234567"}),
        )
        .await;
    assert_eq!(
        (answer.status, answer.kind()),
        (504, "circleci-timeout"),
        "{}",
        answer.body
    );
    assert_eq!(answer.body["retryable"], true);
}
