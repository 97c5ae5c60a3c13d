//! Fault injection: rate limiting, injected 5xx, ambiguous creates, CI skips, latency.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use circleci_sim::{CI_SKIP_MESSAGE, FailureRatio, Faults};
use common::{Api, TOKEN, acme_api, sim_with};
use serde_json::json;

#[tokio::test]
async fn rate_limit_sends_headers_then_429_with_retry_after() {
    let sim = sim_with(vec![acme_api()]).await;
    // Refill so slow that no token comes back during the test.
    sim.set_faults(Faults::rate_limited(0.01, 3));
    let api = Api::new(&sim, TOKEN);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let reply = api.get("/me").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("ratelimit-limit"), Some("3"));
        assert_eq!(reply.header("x-ratelimit-limit"), Some("3"));
        assert!(
            reply
                .header("ratelimit-reset")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        assert_eq!(
            reply.header("ratelimit-remaining"),
            reply.header("x-ratelimit-remaining")
        );
        assert!(reply.header("retry-after").is_none());
        remaining.push(
            reply
                .header("ratelimit-remaining")
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(remaining, vec![2, 1, 0]);

    let limited = api.get("/me").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body, json!({"message": "Rate limit exceeded."}));
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));

    // Buckets are per token: another user still has a full bucket.
    sim.add_user("bob", "tok-bob");
    assert_eq!(Api::new(&sim, "tok-bob").get("/me").await.status, 200);
    let counters = sim.counters();
    assert_eq!(counters.rate_limited, 1);
    assert_eq!(counters.requests, 5);
    // A refused create creates nothing.
    assert_eq!(
        api.post("/project/gh/acme/api/pipeline", &json!({}))
            .await
            .status,
        429
    );
    assert!(sim.pipelines().is_empty());
}

#[tokio::test]
async fn rate_limit_can_omit_retry_after() {
    let sim = sim_with(vec![]).await;
    sim.set_faults(Faults {
        retry_after_header: false,
        ..Faults::rate_limited(0.01, 1)
    });
    let api = Api::new(&sim, TOKEN);
    assert_eq!(api.get("/me").await.status, 200);
    let limited = api.get("/me").await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_none());
    assert!(limited.header("ratelimit-reset").is_some());
}

#[tokio::test]
async fn no_rate_limit_means_no_rate_limit_headers() {
    let sim = sim_with(vec![]).await;
    let reply = Api::new(&sim, TOKEN).get("/me").await;
    assert!(reply.header("ratelimit-limit").is_none());
    assert!(reply.header("x-ratelimit-remaining").is_none());
}

#[tokio::test]
async fn fail_next_fails_exactly_n_requests_before_any_effect() {
    let sim = sim_with(vec![acme_api()]).await;
    sim.set_faults(Faults::fail_next(2, 503));
    let api = Api::new(&sim, TOKEN);
    let first = api.post("/project/gh/acme/api/pipeline", &json!({})).await;
    assert_eq!(first.status, 503);
    assert!(
        first
            .header("content-type")
            .unwrap()
            .starts_with("text/html"),
        "gateways answer HTML"
    );
    assert_eq!(api.get("/me").await.status, 503);
    assert_eq!(api.get("/me").await.status, 200);
    assert!(sim.pipelines().is_empty(), "a failed request has no effect");
    assert_eq!(sim.faults().fail_next, 0);
    assert_eq!(sim.counters().injected_failures, 2);

    sim.set_faults(Faults::fail_next(1, 500));
    let json_failure = api.get("/me").await;
    assert_eq!(json_failure.status, 500);
    assert_eq!(json_failure.body["message"], "Internal server error.");
}

#[tokio::test]
async fn injected_failures_can_target_methods_and_paths() {
    let sim = sim_with(vec![acme_api()]).await;
    sim.set_faults(Faults {
        fail_methods: vec!["GET".into()],
        fail_path_contains: Some("/workflow".into()),
        ..Faults::fail_next(1, 502)
    });
    let api = Api::new(&sim, TOKEN);
    let created = api.post("/project/gh/acme/api/pipeline", &json!({})).await;
    assert_eq!(created.status, 201);
    assert_eq!(api.get("/me").await.status, 200);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/pipeline/{id}/workflow")).await.status,
        502
    );
    assert_eq!(
        api.get(&format!("/pipeline/{id}/workflow")).await.status,
        200
    );
}

#[tokio::test]
async fn seeded_failure_ratio_is_deterministic() {
    async fn pattern(seed: u64) -> Vec<u16> {
        let sim = sim_with(vec![]).await;
        sim.set_faults(Faults {
            failure_ratio: Some(FailureRatio { ratio: 0.5, seed }),
            ..Faults::default()
        });
        let api = Api::new(&sim, TOKEN);
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(api.get("/me").await.status);
        }
        statuses
    }
    let a = pattern(7).await;
    assert_eq!(a, pattern(7).await);
    assert_ne!(a, pattern(8).await);
    let failures = a.iter().filter(|s| **s == 503).count();
    assert!(
        (5..=35).contains(&failures),
        "about half should fail, got {failures}/40"
    );
    assert!(a.iter().all(|s| *s == 200 || *s == 503));
}

#[tokio::test]
async fn create_then_502_creates_exactly_one_pipeline() {
    let sim = sim_with(vec![acme_api()]).await;
    sim.set_faults(Faults {
        create_then_502: 1,
        ..Faults::default()
    });
    let api = Api::new(&sim, TOKEN);
    let reply = api
        .post("/project/gh/acme/api/pipeline", &json!({"branch": "main"}))
        .await;
    assert_eq!(reply.status, 502);
    assert!(
        reply.body.is_null(),
        "the body is an HTML error page: {}",
        reply.text
    );
    let pipelines = sim.pipelines();
    assert_eq!(
        pipelines.len(),
        1,
        "the pipeline was created despite the 502"
    );
    assert_eq!(pipelines[0].created_by, "alice");

    // The client can find it by listing the branch; the next create is normal.
    let listed = api.get("/project/gh/acme/api/pipeline?branch=main").await;
    assert_eq!(listed.body["items"][0]["id"], json!(pipelines[0].id));
    assert_eq!(
        api.post("/project/gh/acme/api/pipeline/run", &json!({}))
            .await
            .status,
        201
    );
    assert_eq!(sim.pipelines().len(), 2);
}

#[tokio::test]
async fn ci_skip_answers_200_with_a_message_and_creates_nothing() {
    let sim = sim_with(vec![acme_api()]).await;
    sim.set_faults(Faults {
        ci_skip_next: 2,
        ..Faults::default()
    });
    let api = Api::new(&sim, TOKEN);
    for path in [
        "/project/gh/acme/api/pipeline/run",
        "/project/gh/acme/api/pipeline",
    ] {
        let reply = api.post(path, &json!({})).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, json!({ "message": CI_SKIP_MESSAGE }));
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap()
                .starts_with("Ignoring pipeline due to CI skip")
        );
    }
    assert!(sim.pipelines().is_empty());
    assert_eq!(
        api.post("/project/gh/acme/api/pipeline", &json!({}))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn latency_delays_answers_past_a_client_timeout() {
    let sim = sim_with(vec![]).await;
    sim.set_faults(Faults {
        latency: Duration::from_secs(30),
        ..Faults::default()
    });
    let api = Api::new(&sim, TOKEN).with_timeout(Duration::from_millis(100));
    let error = api
        .send(reqwest::Method::GET, "/me", None)
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
}
