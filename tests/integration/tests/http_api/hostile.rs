//! Hostile input: every case is a 4xx, triggers nothing and leaves an audit record.

use axum::body::Body;
use serde_json::json;
use shared::store::TriggerStatus;
use tower::ServiceExt;

use crate::harness::{Answer, Harness, many_parameters};

async fn assert_refused(h: &Harness, answer: &Answer, status: u16, reason_part: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(h.pipelines(), 0);
    let record = h.record(answer.trigger_id()).await;
    assert_eq!(record.status, TriggerStatus::Rejected);
    let reason = record.reason.unwrap();
    assert!(reason.contains(reason_part), "{reason}");
    assert!(
        reason.len() <= 1100,
        "reasons are bounded: {}",
        reason.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_bodies_are_413_whether_declared_or_streamed() {
    let h = Harness::start().await;
    let huge = format!(
        r#"{{"parameters": {{"version": "1.0.0", "blob": "{}"}}}}"#,
        "x".repeat(6 * 1024 * 1024)
    );
    let declared = h
        .send(
            h.post("deploy-staging", Some(&h.keys.bot))
                .header("Content-Type", "application/json")
                .body(huge.clone()),
        )
        .await;
    assert_eq!(declared.kind(), "payload-too-large");
    assert_refused(&h, &declared, 413, "65536 bytes").await;

    // No Content-Length: the limit holds while reading.
    let router = shared::triggers::http::function_router(h.api.clone());
    let chunks = futures::stream::iter(
        huge.into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let request = http::Request::post("/v1/endpoints/deploy-staging")
        .header("authorization", format!("Bearer {}", h.keys.bot))
        .header("content-type", "application/json")
        .body(Body::from_stream(chunks))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 413);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let streamed = Answer {
        status: 413,
        headers: Default::default(),
        body: problem,
    };
    assert_refused(&h, &streamed, 413, "65536 bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_utf8_is_400() {
    let h = Harness::start().await;
    let mut bytes = br#"{"parameters": {"version": "1.0.0", "note": ""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bytes.extend_from_slice(br#""}}"#);
    let answer = h
        .send(
            h.post("deploy-staging", Some(&h.keys.bot))
                .header("Content-Type", "application/json")
                .body(bytes),
        )
        .await;
    assert_eq!(answer.kind(), "malformed-request");
    assert_refused(&h, &answer, 400, "not valid JSON").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traversal_control_characters_and_shell_syntax_in_refs_are_422() {
    let h = Harness::start().await;
    for branch in [
        "../../etc/passwd",
        "release/../main",
        "release/\u{0}x",
        "release/a\nb",
        "release/\u{1b}[31mred",
        "-rf",
        // `release/*` lets the caller choose a release branch, not shell syntax.
        "release/$(id)",
        "release/`id`",
        "release/x;id",
        "release/ma\u{0456}n",
    ] {
        let answer = h
            .call(
                "deploy-staging",
                &h.keys.bot,
                None,
                json!({"branch": branch, "parameters": {"version": "1.0.0"}}),
            )
            .await;
        assert_eq!(answer.body["errors"][0]["pointer"], "/branch", "{branch:?}");
        assert_refused(&h, &answer, 422, "/branch").await;
    }
    let tag = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            None,
            json!({"tag": "v1..2", "parameters": {"version": "1.0.0"}}),
        )
        .await;
    assert_refused(&h, &tag, 422, "/tag").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn too_many_and_too_long_parameters_are_422() {
    let h = Harness::start().await;
    let many = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            None,
            json!({"parameters": many_parameters(101)}),
        )
        .await;
    assert!(
        many.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("101 parameters")
    );
    assert_refused(&h, &many, 422, "101 parameters").await;

    let long = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            None,
            json!({"parameters": {"version": "x".repeat(513)}}),
        )
        .await;
    assert_refused(&h, &long, 422, "513 characters").await;

    let long_name = "n".repeat(5_000);
    let named = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            None,
            json!({"parameters": {long_name.clone(): 1, "version": "1.0.0"}}),
        )
        .await;
    assert!(
        !named.body.to_string().contains(&long_name),
        "caller text is not echoed in full"
    );
    assert_refused(&h, &named, 422, "at most 128 characters").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_idempotency_keys_and_endpoint_names_are_refused() {
    let h = Harness::start().await;
    let body = json!({"parameters": {"version": "1.0.0"}});
    for key in ["has space".to_owned(), "k".repeat(256)] {
        let answer = h
            .call("deploy-staging", &h.keys.bot, Some(&key), body.clone())
            .await;
        assert_eq!(answer.body["errors"][0]["header"], "Idempotency-Key");
        assert_refused(&h, &answer, 422, "Idempotency-Key").await;
    }
    let long_name = "e".repeat(3_000);
    let answer = h.call(&long_name, &h.keys.bot, None, body.clone()).await;
    assert_refused(&h, &answer, 404, "no such endpoint").await;
    let record = h.record(answer.trigger_id()).await;
    assert_eq!(record.source.name, "(invalid endpoint name)");
    let encoded = h.call("deploy%2Fstaging", &h.keys.bot, None, body).await;
    assert_refused(&h, &encoded, 404, "no such endpoint").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shell_syntax_in_an_unpatterned_string_is_422() {
    let h = Harness::start().await;
    // `note` declares no pattern: it takes plain text only.
    for note in ["$(id)", "`id`", "a; id", "a\nb", "-rf", "\u{ff04}(id)"] {
        let answer = h
            .call(
                "deploy-staging",
                &h.keys.bot,
                None,
                json!({"parameters": {"version": "1.0.0", "note": note}}),
            )
            .await;
        assert_eq!(
            answer.body["errors"][0]["pointer"], "/parameters/note",
            "{note:?}: {}",
            answer.body
        );
        assert_refused(&h, &answer, 422, "without `pattern`").await;
    }
    let fine = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            None,
            json!({"branch": "release/1.4", "parameters": {"version": "1.4.0", "note": "ticket:OPS-12"}}),
        )
        .await;
    assert_eq!(fine.status, 202, "{}", fine.body);
}
