//! The two webhook binaries as Lambda runs them, under a Lambda Runtime API emulator with
//! the variables Lambda sets and the queue, table and secrets on moto_server — through the
//! same `main.rs` wiring that ships:
//! - `webhooks` answers `GET /healthz`, and a signed delivery with 202 once it is in SQS;
//! - `chained` settles that very message, handed to it as the event source mapping would.
//!
//! Between the two, the emulator holds `webhooks` at its next `/next` call: a Lambda
//! environment frozen after its answer. The message is already durable, so nothing the
//! frozen process might still have had to do can be lost.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use integration_tests::moto::{create_queue, sdk_config, unique_name};
use integration_tests::runtime_api::{assert_healthz, http_answer, invoke_binary};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::triggers::chained::webhook::sign_v1;

const SECRET: &str = "runtime-webhook-secret";

#[tokio::test]
async fn the_acceptor_binary_answers_healthz_under_the_lambda_runtime() {
    assert_healthz(
        Path::new(env!("CARGO_BIN_EXE_webhooks")),
        "webhooks",
        include_str!("../../http/fixtures/apigw-v2-get-healthz.json"),
    )
    .await;
}

/// A `workflow-completed` delivery no rule of the shipped triggers file acts on (the
/// worker reads history for it and decides nothing), dated now, in the API Gateway fixture.
fn signed_delivery() -> (String, Value) {
    let fixture: Value = serde_json::from_str(include_str!(
        "../fixtures/apigw-http-v2-workflow-completed.json"
    ))
    .unwrap();
    let mut body: Value = serde_json::from_str(fixture["body"].as_str().unwrap()).unwrap();
    body["id"] = json!(uuid::Uuid::new_v4());
    body["happened_at"] = json!(chrono::Utc::now().to_rfc3339());
    body["project"]["slug"] = json!("github/acme/runtime-unrelated");
    let body = body.to_string();
    let mut event = fixture;
    event["headers"]["circleci-signature"] = json!(sign_v1(
        body.as_bytes(),
        &SecretString::from(SECRET.to_owned())
    ));
    event["headers"]["content-length"] = json!(body.len().to_string());
    event["body"] = json!(body);
    (body_id(&event), event)
}

fn body_id(event: &Value) -> String {
    let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_delivery_is_queued_by_webhooks_then_settled_by_chained() {
    let aws = sdk_config().await;
    let (sqs, queue_url) = create_queue("runtime-deliveries").await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let secret_arn = |name: &str, value: String| {
        let secrets = secrets.clone();
        let name = unique_name(name);
        async move {
            secrets
                .create_secret()
                .name(name)
                .secret_string(value)
                .send()
                .await
                .unwrap()
                .arn()
                .unwrap()
                .to_owned()
        }
    };
    let signing = secret_arn("runtime-signing", json!([SECRET]).to_string()).await;
    let tokens = secret_arn("runtime-tokens", json!({ "default": "t" }).to_string()).await;
    let table = unique_name("runtime-chained");
    shared::store::dynamo::create_table(&aws_sdk_dynamodb::Client::new(&aws), &table)
        .await
        .unwrap();

    // The acceptor: 202 once the delivery is in the queue.
    let (event_id, event) = signed_delivery();
    let invocations = invoke_binary(
        Path::new(env!("CARGO_BIN_EXE_webhooks")),
        "webhooks",
        &[
            ("WEBHOOK_SECRETS_SECRET_ID", signing),
            ("DELIVERY_QUEUE_URL", queue_url.clone()),
        ],
        vec![event],
    )
    .await
    .unwrap();
    let (status, body) = http_answer(&invocations[0]);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["event_id"], event_id.as_str());

    // What the event source mapping receives and hands to the worker.
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .message_attribute_names("All")
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let messages = received.messages();
    assert_eq!(messages.len(), 1, "exactly the accepted delivery is queued");
    let message = &messages[0];
    assert_eq!(body["delivery"], message.message_id().unwrap());
    let queued: Value = serde_json::from_str(message.body().unwrap()).unwrap();
    assert_eq!(queued["id"], event_id.as_str());
    let accepted_at = message.message_attributes().unwrap()["accepted_at"]
        .string_value()
        .unwrap()
        .to_owned();
    let sqs_event = json!({ "Records": [{
        "messageId": message.message_id().unwrap(),
        "receiptHandle": message.receipt_handle().unwrap(),
        "body": message.body().unwrap(),
        "attributes": { "ApproximateReceiveCount": "1" },
        "messageAttributes": { "accepted_at": {
            "stringValue": accepted_at, "stringListValues": [], "binaryListValues": [],
            "dataType": "String"
        } },
        "md5OfBody": message.md5_of_body().unwrap_or_default(),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:runtime-deliveries",
        "awsRegion": "us-east-1"
    }] });

    let invocations = invoke_binary(
        Path::new(env!("CARGO_BIN_EXE_chained")),
        "chained",
        &[
            ("TRIGGERS_TABLE", table),
            ("TOKENS_SECRET_ID", tokens),
            ("DELIVERY_QUEUE_URL", queue_url),
        ],
        vec![sqs_event],
    )
    .await
    .unwrap();
    assert_eq!(invocations[0].outcome, Some("response"));
    assert_eq!(
        invocations[0].body.clone().unwrap(),
        json!({ "batchItemFailures": [] })
    );
}
