//! Notifications the way the Lambda functions wire them (`wiring::cloud_notifications`): a
//! decision written through the store queues in the DynamoDB table's outbox (moto_server,
//! the real SDK), and the scheduled function's handler sends it on its next invocation —
//! once, signed, never again on later ticks or later writes of the same record.

use std::sync::Arc;

use integration_tests::moto::{sdk_config, unique_name};
use integration_tests::outbox_suite::{Receiver, SIGNING_KEY};
use secrecy::SecretString;
use serde_json::json;
use shared::clock::{Clock, ManualClock};
use shared::config::{ActionKind, parse_str};
use shared::notify::verify_signature;
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets, env_names};
use shared::store::{
    DynamoStore, SharedStore, SourceKind, TriggerRecord, TriggerSource, TriggerStatus,
    TriggerTarget,
};
use shared::triggers::scheduled::{Scheduler, lambda::handle};
use shared::wiring::{ContextOptions, assemble, cloud_notifications};

const TRIGGERS: &str = r#"
[circleci]
api_url = "http://127.0.0.1:9"
token = "default"

[[notify]]
name = "ops"
kind = "webhook"
on = ["rejected"]
url_secret = "ops-url"
signing_key_secret = "ops-key"
"#;

fn tick(clock: &ManualClock) -> serde_json::Value {
    json!({
        "source": "circleci-triggers.tick",
        "scheduled_time": clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_queued_by_a_function_is_sent_once_by_the_scheduled_tick() {
    let (receiver, url) = Receiver::start(&[]).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let table = unique_name("notify-lambda");
    shared::store::dynamo::create_table(&client, &table)
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(
        chrono::Utc::now() - chrono::TimeDelta::seconds(5),
    ));
    let clock_port: Arc<dyn Clock> = clock.clone();
    let triggers = parse_str(TRIGGERS, "triggers.toml").unwrap();
    let secrets: Arc<dyn Secrets> = Arc::new(CachedSecrets::new(
        LocalSecretSource::from_vars(
            [
                (
                    env_names::CIRCLECI_TOKENS.to_owned(),
                    json!({"default": "t"}).to_string(),
                ),
                (
                    env_names::NOTIFY_SECRETS.to_owned(),
                    json!({"ops-url": url, "ops-key": SIGNING_KEY}).to_string(),
                ),
            ],
            "default",
        ),
        std::time::Duration::from_secs(60),
    ));
    let store: SharedStore = Arc::new(DynamoStore::new(
        client.clone(),
        table.clone(),
        clock_port.clone(),
    ));
    let (store, sweeper) =
        cloud_notifications(store, &triggers, client, &table, &secrets, &clock_port).unwrap();
    assert!(
        sweeper.is_some(),
        "[[notify]] gives the functions a sweeper"
    );
    let context = assemble(
        triggers,
        clock_port.clone(),
        store.clone(),
        secrets,
        ContextOptions::default(),
    )
    .unwrap();
    let scheduler = Scheduler::new(context.engine, context.triggers).sending(sweeper);

    // An entry point records a refused call (as the http function and the webhook worker do).
    let mut record = TriggerRecord::new(
        TriggerSource::new(SourceKind::Http, "deploy"),
        TriggerTarget::project("gh/acme/api"),
        ActionKind::Pipeline,
        clock.now(),
    );
    record.status = TriggerStatus::Rejected;
    record.reason = Some("no such endpoint".into());
    let record = store.create_record(record).await.unwrap();
    assert_eq!(
        receiver.count(),
        0,
        "queued, not sent on the trigger's path"
    );

    let answer = handle(&scheduler, tick(&clock)).await.unwrap();
    assert_eq!(answer["outcome"], "ticked", "{answer}");
    assert_eq!(receiver.count(), 1, "the tick sent the queued notification");
    let (signature, body) = receiver.requests.lock().unwrap()[0].clone();
    assert!(verify_signature(
        &SecretString::from(SIGNING_KEY.to_owned()),
        signature.as_deref().unwrap(),
        &body,
    ));
    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent["trigger_id"], record.id.to_string());
    assert_eq!(sent["status"], "rejected");

    // A later write of the same decision, and later ticks, send nothing more.
    store.update_record(record).await.unwrap();
    clock.advance(chrono::TimeDelta::minutes(2));
    handle(&scheduler, tick(&clock)).await.unwrap();
    clock.advance(chrono::TimeDelta::hours(2));
    handle(&scheduler, tick(&clock)).await.unwrap();
    assert_eq!(receiver.count(), 1);
}
