//! Durable acceptance: the two delivery queues (SQS on moto_server, the embedded SQLite
//! queue of `serve`) and what the acceptor answers when a queue fails.
//!
//! What SQS does that a kind stand-in would not: a received message stays invisible, a
//! message named in `batchItemFailures` comes back only when its visibility ends (so the
//! worker shortens it for a due retry), and redelivery is at least once.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use integration_tests::moto::{RequestCounter, create_queue, sdk_config, sdk_config_for};
use serde_json::{Value, json};
use shared::actions::Actions;
use shared::clock::{Clock, ManualClock};
use shared::config::parse_str;
use shared::engine::{Engine, EngineSettings};
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets, env_names};
use shared::store::{DynamoStore, SharedStore};
use shared::triggers::chained::queue::embedded::{ReceivedDelivery, SqliteDeliveryQueue};
use shared::triggers::chained::queue::sqs::{SqsDeliveryQueue, handle_batch};
use shared::triggers::chained::queue::{
    AcceptedDelivery, DeliveryQueue, MAX_RECEIVES, QueueError, Settlement,
};
use shared::triggers::chained::{
    DeliveryReport, Receiver, WEBHOOK_PATH, WebhookAcceptor, function_router,
};
use tower::ServiceExt;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn delivery(body: &str) -> AcceptedDelivery {
    AcceptedDelivery {
        body: body.to_owned(),
        accepted_at: at("2026-12-01T10:00:00Z"),
        refused: None,
    }
}

fn retry(after: u64) -> Settlement {
    Settlement::Retry {
        after: Duration::from_secs(after),
        reason: "in progress elsewhere".to_owned(),
        report: None,
    }
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ------------------------------------------------------------------ the embedded queue

/// Receives up to 10 visible deliveries, each hidden for 120 s.
async fn take(queue: &SqliteDeliveryQueue) -> Vec<ReceivedDelivery> {
    queue.receive(10, Duration::from_secs(120)).await.unwrap()
}

#[tokio::test]
async fn the_embedded_queue_hides_received_deliveries_and_shows_retries_when_due() {
    let clock = Arc::new(ManualClock::new(at("2026-12-01T10:00:00Z")));
    let queue = SqliteDeliveryQueue::in_memory(clock.clone()).unwrap();
    let id = queue.enqueue(&delivery("{\"a\":1}")).await.unwrap();

    let first = take(&queue).await;
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].id.as_str(), first[0].receives), (id.as_str(), 1));
    assert_eq!(first[0].delivery, delivery("{\"a\":1}"));
    // Being worked on: invisible to every other receive.
    assert!(take(&queue).await.is_empty());

    // Retry in 30 s: not before.
    queue.apply(&first[0], &retry(30)).await.unwrap();
    clock.advance(chrono::Duration::seconds(29));
    assert!(take(&queue).await.is_empty());
    clock.advance(chrono::Duration::seconds(1));
    let second = take(&queue).await;
    assert_eq!(second[0].receives, 2);

    // A worker that dies mid-delivery gives it back when its visibility ends.
    clock.advance(chrono::Duration::seconds(120));
    let third = take(&queue).await;
    assert_eq!(third[0].receives, 3);
    let settled = Settlement::Settled(DeliveryReport {
        event_id: "e-1".to_owned(),
        event_type: "workflow-completed",
        actions: Vec::new(),
        joins: Vec::new(),
        closed_loop: None,
    });
    queue.apply(&third[0], &settled).await.unwrap();
    assert_eq!(queue.pending().await.unwrap(), 0);
    assert!(queue.visible_at(&id).await.unwrap().is_none(), "deleted");
}

/// Secrets from variables, cached as the functions cache them.
fn secrets(vars: &[(&str, String)]) -> Arc<dyn Secrets> {
    Arc::new(CachedSecrets::new(
        LocalSecretSource::from_vars(
            vars.iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone())),
            "default",
        ),
        Duration::from_secs(300),
    ))
}

#[tokio::test]
async fn the_embedded_queue_dead_letters_a_delivery_after_its_last_receive() {
    let clock = Arc::new(ManualClock::new(at("2026-12-01T10:00:00Z")));
    let queue = SqliteDeliveryQueue::in_memory(clock.clone()).unwrap();
    queue.enqueue(&delivery("{\"doomed\":true}")).await.unwrap();
    for attempt in 1..=MAX_RECEIVES {
        let received = take(&queue).await;
        assert_eq!(received.len(), 1, "attempt {attempt}");
        assert_eq!(received[0].receives, attempt);
        let failed = Settlement::Failed {
            reason: format!("failure {attempt}"),
            report: None,
        };
        queue.apply(&received[0], &failed).await.unwrap();
        clock.advance(chrono::Duration::minutes(10));
    }
    assert!(take(&queue).await.is_empty());
    assert_eq!(queue.pending().await.unwrap(), 0);
    let dead = queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].receives, MAX_RECEIVES);
    assert_eq!(dead[0].last_error.as_deref(), Some("failure 5"));
    assert_eq!(dead[0].delivery.body, "{\"doomed\":true}");
}

#[tokio::test]
async fn a_queued_delivery_survives_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(at("2026-12-01T10:00:00Z")));
    {
        let queue = SqliteDeliveryQueue::open_in_dir(dir.path(), clock.clone()).unwrap();
        queue.enqueue(&delivery("{\"kept\":1}")).await.unwrap();
    }
    let reopened = SqliteDeliveryQueue::open_in_dir(dir.path(), clock).unwrap();
    let received = reopened.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(received[0].delivery.body, "{\"kept\":1}");
}

// ------------------------------------------------------------------ SQS on moto_server

async fn sqs_queue() -> (aws_sdk_sqs::Client, String) {
    create_queue("deliveries").await
}

#[tokio::test]
async fn sqs_carries_the_body_as_signed_and_the_acceptance_in_attributes() {
    let (client, url) = sqs_queue().await;
    let queue = SqsDeliveryQueue::new(client.clone(), &url);
    let refused = AcceptedDelivery {
        refused: Some("the delivery was refused: too old".to_owned()),
        ..delivery("{\"id\":\"e-1\",  \"spacing\": \"kept\"}")
    };
    let id = queue.enqueue(&refused).await.unwrap();
    let received = client
        .receive_message()
        .queue_url(&url)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let message = &received.messages()[0];
    assert_eq!(message.message_id(), Some(id.as_str()));
    // Byte for byte what was verified (whitespace included).
    assert_eq!(message.body(), Some(refused.body.as_str()));
    let attributes = message.message_attributes().unwrap();
    assert_eq!(
        attributes["refused"].string_value(),
        refused.refused.as_deref()
    );
    assert_eq!(
        attributes["accepted_at"].string_value(),
        Some(refused.accepted_at.to_rfc3339().as_str())
    );
}

/// The worker over a table it cannot reach: every delivery is a retryable failure.
fn unreachable_receiver(port: u16, config: &aws_config::SdkConfig) -> Receiver {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Utc::now()));
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(config)
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    );
    let store: SharedStore = Arc::new(DynamoStore::new(client, "triggers", clock.clone()));
    let triggers = parse_str(
        "[circleci]\napi_url = \"http://127.0.0.1:9/api/v2\"\n",
        "t.toml",
    )
    .unwrap();
    let secrets = secrets(&[(env_names::CIRCLECI_TOKEN, "unused".to_owned())]);
    let circleci = Arc::new(
        shared::circleci::CircleCiClient::new(
            &triggers.circleci.api_url,
            secrets,
            shared::circleci::ClientOptions::default(),
        )
        .unwrap(),
    );
    let engine = Engine::new(
        store,
        Arc::new(Actions::new(circleci)),
        clock,
        EngineSettings::default(),
    );
    Receiver::new(engine, &triggers).unwrap()
}

fn workflow_event() -> String {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../functions/chained/fixtures/sqs-webhook-delivery.json");
    let event: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    event["Records"][0]["body"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_retry_is_named_in_the_batch_answer_and_comes_back_after_its_own_delay() {
    let config = sdk_config().await;
    let (client, url) = sqs_queue().await;
    // The worker's own client, counting what it sends.
    let sent = RequestCounter::default();
    let worker_client = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .interceptor(sent.clone())
            .build(),
    );
    let queue = SqsDeliveryQueue::new(worker_client, &url);
    SqsDeliveryQueue::new(client.clone(), &url)
        .enqueue(&delivery(&workflow_event()))
        .await
        .unwrap();
    let received = client
        .receive_message()
        .queue_url(&url)
        .visibility_timeout(540)
        .send()
        .await
        .unwrap();
    let message = &received.messages()[0];
    let event = json!({ "Records": [{
        "messageId": message.message_id().unwrap(),
        "receiptHandle": message.receipt_handle().unwrap(),
        "body": message.body().unwrap(),
        "attributes": { "ApproximateReceiveCount": "1" },
        "messageAttributes": {},
        "eventSource": "aws:sqs",
    }] });

    let receiver = unreachable_receiver(closed_port(), &config);
    let answer = handle_batch(&receiver, Some(&queue), event).await.unwrap();
    assert_eq!(
        answer,
        json!({ "batchItemFailures": [{ "itemIdentifier": message.message_id().unwrap() }] })
    );
    // One ChangeMessageVisibility (to the retry's 30 s instead of the 540 s it was received
    // with), accepted for this receipt; the message is still in flight, not deleted.
    assert_eq!(sent.count(), 1);
    let attributes = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .send()
        .await
        .unwrap();
    let in_flight = attributes.attributes().unwrap()
        [&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible]
        .clone();
    assert_eq!(in_flight, "1");
    // A receipt SQS does not know is refused, and the failure is reported, not hidden.
    let error = queue
        .retry_after("not-a-receipt", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(error, QueueError::Unavailable(_)), "{error}");
}

#[tokio::test]
async fn an_unreachable_queue_is_answered_503_so_circleci_delivers_again() {
    let config = sdk_config_for(&format!("http://127.0.0.1:{}", closed_port())).await;
    let client = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .build(),
    );
    let queue = SqsDeliveryQueue::new(client, "http://127.0.0.1:9/000000000000/deliveries");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Utc::now()));
    let secrets = secrets(&[(env_names::WEBHOOK_SECRETS, "[\"whsec-queue\"]".to_owned())]);
    let acceptor = WebhookAcceptor::new(secrets, Arc::new(queue), clock.clone());
    let mut body: Value = serde_json::from_str(&workflow_event()).unwrap();
    body["happened_at"] = json!(clock.now().to_rfc3339());
    let body = body.to_string();
    let request = axum::http::Request::post(WEBHOOK_PATH)
        .header("content-type", "application/json")
        .header(
            "circleci-signature",
            circleci_sim::signature_header("whsec-queue", body.as_bytes()),
        )
        .body(axum::body::Body::from(body))
        .unwrap();
    let response = function_router(Arc::new(acceptor))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "10");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let problem: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        problem["type"],
        "https://circleci-triggers.dev/problems/queue-unavailable"
    );
}
