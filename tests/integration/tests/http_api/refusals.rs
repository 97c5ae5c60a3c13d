//! Refused requests: the status, the problem, nothing triggered, and the audit record.

use chrono::Duration as Delta;
use serde_json::{Value, json};
use shared::store::TriggerStatus;

use crate::harness::{Answer, Harness};

/// Asserts the request was refused with `status`/`kind`, triggered nothing, and left a
/// `rejected` record; returns that record as JSON.
async fn refused(h: &Harness, answer: &Answer, status: u16, kind: &str) -> Value {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.kind(), kind, "{}", answer.body);
    assert_eq!(h.pipelines(), 0, "nothing may be triggered");
    let record = h.record(answer.trigger_id()).await;
    assert_eq!(record.status, TriggerStatus::Rejected);
    assert!(record.reason.as_deref().is_some_and(|r| !r.is_empty()));
    assert_eq!(record.detail.http_status, Some(status));
    assert_eq!(record.detail.problem.as_deref(), Some(kind));
    serde_json::to_value(&record).unwrap()
}

/// Every record in the store, whatever its source.
async fn all_records(h: &Harness) -> usize {
    h.store
        .list_recent(shared::store::PageRequest::first(100))
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_client_and_a_wrong_secret_get_the_same_401_and_leave_nothing() {
    let h = Harness::start().await;
    let body = json!({"parameters": {"version": "1.0.0"}, "note": "planted-text"});
    let secret = h.keys.bot.split_once('.').unwrap().1.to_owned();
    let wrong_secret = format!("release-bot.{}", "A".repeat(secret.len()));
    let unknown_client = format!("intruder.{secret}");
    let mut problems = Vec::new();
    for key in [wrong_secret.as_str(), unknown_client.as_str()] {
        let answer = h
            .call(
                "deploy-staging",
                key,
                Some("attacker-chosen-key"),
                body.clone(),
            )
            .await;
        assert_eq!((answer.status, answer.kind()), (401, "unauthorized"));
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        assert!(
            answer.body.get("trigger_id").is_none(),
            "no record: {}",
            answer.body
        );
        problems.push(answer.body.clone());
    }
    assert_eq!(problems[0], problems[1], "indistinguishable answers");

    let missing = h.send(h.post("deploy-staging", None).json(&body)).await;
    let basic = h
        .send(
            h.post("deploy-staging", None)
                .header("Authorization", "Basic cmVsZWFzZS1ib3Q6eA==")
                .json(&body),
        )
        .await;
    let read = h.get("/v1/triggers", &wrong_secret).await;
    for answer in [&missing, &basic, &read] {
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert!(answer.body.get("trigger_id").is_none());
    }
    assert_eq!(h.pipelines(), 0, "nothing may be triggered");
    assert_eq!(
        all_records(&h).await,
        0,
        "unauthenticated requests leave no row"
    );

    // The same key of an authenticated client is recorded with its refusal, as before.
    let authenticated = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            Some("attacker-chosen-key"),
            json!({"parameters": {"version": "nope"}}),
        )
        .await;
    let record = refused(&h, &authenticated, 422, "invalid-request").await;
    assert_eq!(record["detail"]["client"], "release-bot");
    assert_eq!(all_records(&h).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calling_an_endpoint_out_of_scope_is_403() {
    let h = Harness::start().await;
    let answer = h
        .call(
            "approve-release",
            &h.keys.cms,
            None,
            json!({"select": "latest"}),
        )
        .await;
    let record = refused(&h, &answer, 403, "forbidden").await;
    assert_eq!(record["source"]["name"], "approve-release");
    assert_eq!(record["detail"]["client"], "cms");
    let admin = h
        .call(
            "deploy-staging",
            &h.keys.admin,
            None,
            json!({"parameters": {"version": "1.0.0"}}),
        )
        .await;
    refused(&h, &admin, 403, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_endpoints_and_triggers_are_404_and_other_methods_405() {
    let h = Harness::start().await;
    let unknown = h.call("deploy-nowhere", &h.keys.bot, None, json!({})).await;
    let record = refused(&h, &unknown, 404, "not-found").await;
    assert_eq!(record["source"]["name"], "deploy-nowhere");

    let trigger = h
        .get(
            "/v1/triggers/0190b8c2-6c0e-7d4e-8a51-1f0e4c3b2a19",
            &h.keys.bot,
        )
        .await;
    assert_eq!((trigger.status, trigger.kind()), (404, "not-found"));
    let not_an_id = h.get("/v1/triggers/not-a-uuid", &h.keys.bot).await;
    assert_eq!(not_an_id.status, 404);

    let get_endpoint = h
        .send(
            h.http
                .get(format!("{}/v1/endpoints/deploy-staging", h.url))
                .bearer_auth(&h.keys.bot),
        )
        .await;
    assert_eq!(get_endpoint.header("allow"), Some("POST"));
    assert_eq!(
        (get_endpoint.status, get_endpoint.kind()),
        (405, "method-not-allowed")
    );
    assert!(
        get_endpoint.body.get("trigger_id").is_none(),
        "answered before authentication: nothing recorded"
    );
    assert_eq!(h.records("deploy-staging").await.len(), 0);
    let delete = h
        .send(h.http.delete(format!("{}/v1/triggers", h.url)))
        .await;
    assert_eq!((delete.status, delete.kind()), (405, "method-not-allowed"));
    let nowhere = h.send(h.http.get(format!("{}/v2/anything", h.url))).await;
    assert_eq!((nowhere.status, nowhere.kind()), (404, "not-found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_that_are_not_json_are_415_or_400() {
    let h = Harness::start().await;
    let text = h
        .send(
            h.post("deploy-staging", Some(&h.keys.bot))
                .header("Content-Type", "text/plain")
                .body("version=1.0.0"),
        )
        .await;
    refused(&h, &text, 415, "unsupported-media-type").await;
    let untyped = h
        .send(
            h.post("deploy-staging", Some(&h.keys.bot))
                .body(r#"{"parameters": {"version": "1.0.0"}}"#),
        )
        .await;
    refused(&h, &untyped, 415, "unsupported-media-type").await;
    let broken = h
        .send(
            h.post("deploy-staging", Some(&h.keys.bot))
                .header("Content-Type", "application/json")
                .body(r#"{"parameters": {"version": "1.0.0""#),
        )
        .await;
    refused(&h, &broken, 400, "malformed-request").await;
    let array = h
        .send(
            h.post("deploy-staging", Some(&h.keys.bot))
                .header("Content-Type", "application/json")
                .body("[]"),
        )
        .await;
    refused(&h, &array, 422, "invalid-request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_schema_rule_is_enforced_and_every_violation_listed() {
    let h = Harness::start().await;
    let answer = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            Some("bad-params"),
            json!({
                "branch": "main",
                "tag": "v1",
                "surprise": 1,
                "parameters": {
                    "version": "1.4",
                    "dry_run": "yes",
                    "region": "mars",
                    "shards": 9,
                    "env": "prod",
                    "extra": true
                }
            }),
        )
        .await;
    let record = refused(&h, &answer, 422, "invalid-request").await;
    let errors: Vec<(String, String)> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["pointer"].as_str().unwrap_or("").to_owned(),
                e["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // The body's shape is checked first: an unknown member stops there.
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "/surprise");
    assert!(record["reason"].as_str().unwrap().contains("/surprise"));

    let answer = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            Some("bad-params"),
            json!({
                "branch": "main",
                "tag": "v1",
                "parameters": {
                    "version": "1.4",
                    "dry_run": "yes",
                    "region": "mars",
                    "shards": 9,
                    "env": "prod",
                    "extra": true,
                    "float": 1.5
                }
            }),
        )
        .await;
    assert_eq!(answer.status, 422);
    let errors: Vec<String> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["pointer"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "/parameters/version does not match the pattern",
        "/parameters/dry_run must be a boolean, not a string",
        "/parameters/region must be one of \"eu\", \"us\"",
        "/parameters/shards must be at most 8",
        "/parameters/env not declared by this endpoint",
        "/parameters/extra not declared",
        "/parameters/float not declared",
        "/tag give a branch or a tag, not both",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected:?} missing from {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 8, "{errors:#?}");

    for (body, pointer, detail) in [
        (json!({}), "/parameters/version", "required (a string)"),
        (
            json!({"parameters": {"version": "12345678901.0.0000000000000000000"}}),
            "/parameters/version",
            "at most 32",
        ),
        (
            json!({"parameters": {"version": "1.0.0", "shards": 0}}),
            "/parameters/shards",
            "at least 1",
        ),
        (
            json!({"parameters": {"version": "1.0.0", "shards": "2"}}),
            "/parameters/shards",
            "must be an integer",
        ),
        (
            json!({"parameters": {"version": 100}}),
            "/parameters/version",
            "must be a string",
        ),
        (
            json!({"parameters": {"version": null}}),
            "/parameters/version",
            "must be a string",
        ),
        (
            json!({"parameters": {"version": "1.0.0"}, "select": "latest"}),
            "/select",
            "starts a new pipeline",
        ),
        (
            json!({"parameters": ["1.0.0"]}),
            "/parameters",
            "must be an object",
        ),
    ] {
        let answer = h
            .call("deploy-staging", &h.keys.bot, None, body.clone())
            .await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        let first = &answer.body["errors"][0];
        assert_eq!(first["pointer"], pointer, "{body}: {}", answer.body);
        assert!(
            first["detail"].as_str().unwrap().contains(detail),
            "{body}: {}",
            answer.body
        );
    }
    assert_eq!(h.pipelines(), 0);
    // A refused request does not consume its Idempotency-Key.
    let fixed = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            Some("bad-params"),
            json!({"parameters": {"version": "1.4.0"}}),
        )
        .await;
    assert_eq!(fixed.status, 202, "{}", fixed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clients_own_rate_answers_429_until_its_window_ends() {
    let h = Harness::start().await;
    // Windows are aligned to multiples of their length (a minute here): start on one.
    let now = shared::clock::Clock::now(h.clock.as_ref());
    let next_minute = now
        - Delta::seconds(i64::from(chrono::Timelike::second(&now)))
        - Delta::nanoseconds(i64::from(chrono::Timelike::nanosecond(&now)))
        + Delta::minutes(1);
    h.clock.set(next_minute);
    let body = json!({"parameters": {"version": "1.0.0"}});
    for _ in 0..3 {
        let answer = h
            .call("deploy-staging", &h.keys.cms, None, body.clone())
            .await;
        assert_eq!(answer.status, 202, "{}", answer.body);
    }
    h.clock.advance(Delta::seconds(20));
    let limited = h
        .call("deploy-staging", &h.keys.cms, None, body.clone())
        .await;
    assert_eq!((limited.status, limited.kind()), (429, "rate-limited"));
    assert_eq!(limited.header("retry-after"), Some("40"));
    let record = h.record(limited.trigger_id()).await;
    assert_eq!(record.status, TriggerStatus::Rejected);
    assert_eq!(record.detail.client.as_deref(), Some("cms"));
    let reads = h.get("/v1/triggers", &h.keys.cms).await;
    assert_eq!(reads.status, 429, "reads count against the same budget");
    // Other clients are not affected.
    let bot = h
        .call("deploy-staging", &h.keys.bot, None, body.clone())
        .await;
    assert_eq!(bot.status, 202);
    h.clock.advance(Delta::seconds(41));
    let again = h.call("deploy-staging", &h.keys.cms, None, body).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(h.pipelines(), 5);
}
