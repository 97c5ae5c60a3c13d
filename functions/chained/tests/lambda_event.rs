//! The webhook functions driven with real event JSON: the `webhooks` acceptor's router with
//! API Gateway HTTP API (payload 2.0) events, decoded by `lambda_http` exactly as
//! `lambda_http::run` does (a signed webhook in a plain and a base64 body, a tampered one),
//! and the `chained` worker's handler with the SQS events the event source mapping sends.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use lambda_http::tower::ServiceExt;
use lambda_http::{Body, IntoResponse};
use serde_json::{Value, json};
use shared::clock::ManualClock;
use shared::config::parse_str;
use shared::secrets::{CachedSecrets, LocalSecretSource, env_names};
use shared::store::{PageRequest, SourceKind, SqliteStore, TriggerSource, TriggerStatus};
use shared::triggers::chained::queue::embedded::{ReceivedDelivery, SqliteDeliveryQueue};
use shared::triggers::chained::queue::sqs::handle_batch;
use shared::triggers::chained::{Receiver, WebhookAcceptor, function_router};
use shared::wiring::{ContextOptions, LambdaContext, assemble};

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

/// The two functions as their main.rs build them (an in-memory store, an in-memory queue
/// standing in for SQS, a fixed clock).
struct Functions {
    context: LambdaContext,
    queue: SqliteDeliveryQueue,
    receiver: Receiver,
    store: shared::store::SharedStore,
}

fn functions() -> Functions {
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
        clock.clone(),
        store.clone(),
        secrets,
        ContextOptions::default(),
    )
    .unwrap();
    Functions {
        queue: SqliteDeliveryQueue::in_memory(clock).unwrap(),
        receiver: Receiver::from_context(&context).unwrap(),
        context,
        store,
    }
}

/// Invokes the `webhooks` router (the one its main.rs runs) with each event in turn.
async fn invoke_all(functions: &Functions, events: &[String]) -> Vec<Answer> {
    let acceptor = WebhookAcceptor::new(
        functions.context.secrets.clone(),
        Arc::new(functions.queue.clone()),
        functions.context.clock.clone(),
    );
    let router = function_router(Arc::new(acceptor));
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
    answers
}

/// The SQS event the event source mapping would hand the `chained` function for these
/// received messages (the committed fixture's shape, with their ids and bodies).
fn sqs_event(received: &[ReceivedDelivery]) -> Value {
    let template: Value = serde_json::from_str(&fixture("sqs-webhook-delivery.json")).unwrap();
    let records: Vec<Value> = received
        .iter()
        .map(|message| {
            let mut record = template["Records"][0].clone();
            record["messageId"] = json!(message.id);
            record["receiptHandle"] = json!(format!("receipt-{}", message.id));
            record["body"] = json!(message.delivery.body);
            record["attributes"]["ApproximateReceiveCount"] = json!(message.receives.to_string());
            record["messageAttributes"]["accepted_at"]["stringValue"] =
                json!(message.delivery.accepted_at.to_rfc3339());
            record
        })
        .collect();
    json!({ "Records": records })
}

async fn chain_records(store: &shared::store::SharedStore) -> Vec<shared::store::TriggerRecord> {
    store
        .list_by_source(
            &TriggerSource::new(SourceKind::Chain, "release-gate"),
            PageRequest::first(10),
        )
        .await
        .unwrap()
        .items
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
async fn a_signed_webhook_is_queued_with_202_and_decided_only_by_the_worker() {
    let functions = functions();
    // The same delivery twice: as text, then base64-encoded (what API Gateway sends for
    // some content types): byte-identical after decoding, so the signature holds.
    let answers = invoke_all(
        &functions,
        &[
            fixture("apigw-http-v2-workflow-completed.json"),
            fixture("apigw-http-v2-workflow-completed-base64.json"),
        ],
    )
    .await;
    for answer in &answers {
        assert_eq!(answer.status, 202, "{}", answer.body);
        assert_eq!(
            answer.body["event_id"],
            "0f6c2a4e-7d1b-4c8e-9a35-2b7e61d0c4f1"
        );
        assert!(answer.body["delivery"].is_string(), "{}", answer.body);
    }
    // The acceptor decided nothing: no history before the worker runs.
    assert!(chain_records(&functions.store).await.is_empty());
    assert_eq!(functions.queue.pending().await.unwrap(), 2);

    // The worker, handed both as one SQS batch: the first decides, the duplicate replays.
    let received = functions
        .queue
        .receive(10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(received.len(), 2);
    let answer = handle_batch(&functions.receiver, None, sqs_event(&received))
        .await
        .unwrap();
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    let records = chain_records(&functions.store).await;
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
async fn the_worker_settles_the_committed_sqs_event_and_refuses_a_non_batch() {
    let functions = functions();
    let event: Value = serde_json::from_str(&fixture("sqs-webhook-delivery.json")).unwrap();
    let answer = handle_batch(&functions.receiver, None, event.clone())
        .await
        .unwrap();
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    assert_eq!(chain_records(&functions.store).await.len(), 1);
    // Redelivered by SQS (at least once): nothing new.
    handle_batch(&functions.receiver, None, event)
        .await
        .unwrap();
    assert_eq!(chain_records(&functions.store).await.len(), 1);

    // A record whose body is not an event is named for a retry (then the dead-letter queue).
    let mut broken: Value = serde_json::from_str(&fixture("sqs-webhook-delivery.json")).unwrap();
    broken["Records"][0]["body"] = json!("{not json");
    let answer = handle_batch(&functions.receiver, None, broken)
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({ "batchItemFailures": [{ "itemIdentifier": "5f0c3b9e-1a2d-4e6f-8b7c-9d0e1f2a3b4c" }] })
    );
    // Not an SQS event at all: the invocation fails (SQS retries the whole batch).
    let error = handle_batch(&functions.receiver, None, json!({ "source": "aws.events" }))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not an SQS batch"), "{error}");
}

#[tokio::test]
async fn a_tampered_body_is_refused_with_401_problem_json() {
    let event = fixture("apigw-http-v2-workflow-completed.json")
        .replace("\\\"success\\\"", "\\\"failed\\\"");
    assert!(event.contains("failed"), "the fixture's status was changed");
    let functions = functions();
    let answers = invoke_all(&functions, &[event]).await;
    assert_eq!(answers[0].status, 401);
    assert_eq!(answers[0].content_type, "application/problem+json");
    assert!(answers[0].body.get("detail").is_none());
    assert_eq!(
        functions.queue.pending().await.unwrap(),
        0,
        "nothing was queued"
    );
}

#[tokio::test]
async fn the_health_route_answers_through_the_same_function() {
    let event = fixture("apigw-http-v2-workflow-completed.json")
        .replace("\"POST\"", "\"GET\"")
        .replace("/webhooks/circleci", "/healthz");
    let answers = invoke_all(&functions(), &[event]).await;
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].body["status"], "ok");
}
