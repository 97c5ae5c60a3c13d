//! The `chained` function's router driven with real API Gateway HTTP API (payload 2.0)
//! events, decoded by `lambda_http` exactly as `lambda_http::run` does: a signed webhook
//! in a plain and a base64 body, and a tampered one.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use lambda_http::tower::ServiceExt;
use lambda_http::{Body, IntoResponse};
use shared::clock::ManualClock;
use shared::config::parse_str;
use shared::secrets::{CachedSecrets, LocalSecretSource, env_names};
use shared::store::{PageRequest, SourceKind, SqliteStore, TriggerSource, TriggerStatus};
use shared::triggers::chained::{Receiver, function_router};
use shared::wiring::assemble;

/// The secret the fixtures are signed with.
const FIXTURE_SECRET: &str = "lambda-fixture-secret";

/// The fixture's event is a successful `build` of gh/acme/api; the rule approves a hold in
/// the pipeline of the same origin. Nothing of ours started that build, so the approval
/// is recorded as failed without a CircleCI call (the API URL points nowhere).
const TRIGGERS: &str = r#"
[circleci]
api_url = "http://127.0.0.1:9/api/v2"

[[chain]]
name = "release-gate"
when = { project = "gh/acme/api", workflow = "build", branch = "main" }
[[chain.then]]
action = "approve"
project = "gh/acme/deploy"
job = "hold-release"
select = "origin"
"#;

/// Builds the function as main.rs does (with an in-memory store and a fixed clock), then
/// invokes it with each event in turn. Returns every answer and the store.
async fn invoke_all(events: &[String]) -> (Vec<Answer>, shared::store::SharedStore) {
    let clock = Arc::new(ManualClock::new("2026-11-30T02:10:01Z".parse().unwrap()));
    let store: shared::store::SharedStore =
        Arc::new(SqliteStore::in_memory(clock.clone()).unwrap());
    let secrets = Arc::new(CachedSecrets::new(
        LocalSecretSource::from_vars(
            [
                (
                    env_names::WEBHOOK_SECRETS.to_owned(),
                    format!("[\"{FIXTURE_SECRET}\"]"),
                ),
                (
                    env_names::CIRCLECI_TOKEN.to_owned(),
                    "unused-token".to_owned(),
                ),
            ],
            "default",
        ),
        std::time::Duration::from_secs(300),
    ));
    let triggers = parse_str(TRIGGERS, "triggers.toml (test)").unwrap();
    let context = assemble(
        triggers,
        clock,
        store.clone(),
        secrets,
        Receiver::context_options(),
    )
    .unwrap();
    let receiver = Arc::new(Receiver::from_context(&context).unwrap());
    // The router main.rs runs.
    let router = function_router(receiver);
    let mut answers = Vec::new();
    for event in events {
        // Decoded as the runtime decodes it, answered as `lambda_http::run` answers.
        let request = lambda_http::request::from_str(event).unwrap();
        let response = router
            .clone()
            .oneshot(request)
            .await
            .unwrap()
            .into_response()
            .await;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = match response.into_body() {
            Body::Text(text) => text,
            Body::Binary(bytes) => String::from_utf8(bytes).unwrap(),
            _ => String::new(),
        };
        answers.push(Answer {
            status,
            content_type,
            body: serde_json::from_str(&body).unwrap_or_default(),
        });
    }
    (answers, store)
}

struct Answer {
    status: u16,
    content_type: String,
    body: serde_json::Value,
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap()
}

#[tokio::test]
async fn a_signed_webhook_in_an_http_api_event_is_decided_and_recorded() {
    // The same delivery twice: as text, then base64-encoded (what API Gateway sends for
    // some content types): byte-identical after decoding, so the signature holds and the
    // second is a duplicate.
    let (answers, store) = invoke_all(&[
        fixture("apigw-http-v2-workflow-completed.json"),
        fixture("apigw-http-v2-workflow-completed-base64.json"),
    ])
    .await;
    let first = &answers[0];
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body["event_id"],
        "0f6c2a4e-7d1b-4c8e-9a35-2b7e61d0c4f1"
    );
    assert_eq!(first.body["actions"][0]["rule"], "release-gate");
    assert_eq!(first.body["actions"][0]["status"], "failed");
    let second = &answers[1];
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["actions"][0]["disposition"], "replayed");

    let records = store
        .list_by_source(
            &TriggerSource::new(SourceKind::Chain, "release-gate"),
            PageRequest::first(10),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, TriggerStatus::Failed);
    assert!(
        records[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("no pipeline is recorded for the origin trigger")
    );
    assert_eq!(
        records[0].upstream.as_ref().unwrap().pipeline_id,
        "4a6c8e0f-2b4d-4f6a-8c0e-1f3b5d7f9a2c"
    );
}

#[tokio::test]
async fn a_tampered_body_is_refused_with_401_problem_json() {
    let event = fixture("apigw-http-v2-workflow-completed.json")
        .replace("\\\"success\\\"", "\\\"failed\\\"");
    assert!(event.contains("failed"), "the fixture's status was changed");
    let (answers, store) = invoke_all(&[event]).await;
    assert_eq!(answers[0].status, 401);
    assert_eq!(answers[0].content_type, "application/problem+json");
    assert!(answers[0].body.get("detail").is_none());
    let recent = store.list_recent(PageRequest::first(10)).await.unwrap();
    assert!(recent.items.is_empty());
}

#[tokio::test]
async fn the_health_route_answers_through_the_same_function() {
    let event = fixture("apigw-http-v2-workflow-completed.json")
        .replace("\"POST\"", "\"GET\"")
        .replace("/webhooks/circleci", "/healthz");
    let (answers, _) = invoke_all(&[event]).await;
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].body["status"], "ok");
}
