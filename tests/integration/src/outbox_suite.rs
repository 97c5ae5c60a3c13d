//! The notification [`Outbox`] conformance suite, run against both adapters by
//! `tests/notify_outbox.rs`: SQLite on a temp file, and DynamoDB on moto_server through the
//! real AWS SDK (each case on its own table). Time is a [`ManualClock`]; nothing sleeps.

use std::any::Any;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, Duration, TimeZone, Utc};
use shared::clock::{Clock, ManualClock};
use shared::notify::{
    DynamoOutbox, HttpSender, MAX_ATTEMPTS, Notification, NotifyOn, Outbox, SIGNATURE_HEADER,
    SqliteOutbox, Sweeper, retry_delay,
};
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets, env_names};

use crate::store_suite::serialized_moto;

/// An outbox the suite can build fresh, and what must live as long as it.
pub struct OutboxFixture {
    pub outbox: Arc<dyn Outbox>,
    pub _keep_alive: Box<dyn Any + Send + Sync>,
}

#[async_trait]
pub trait OutboxUnderTest: Send + Sync {
    async fn fixture(&self) -> OutboxFixture;
}

/// SQLite on a file in a fresh temp dir (as `serve` runs it).
pub struct Sqlite;

#[async_trait]
impl OutboxUnderTest for Sqlite {
    async fn fixture(&self) -> OutboxFixture {
        let dir = tempfile::tempdir().unwrap();
        OutboxFixture {
            outbox: Arc::new(SqliteOutbox::open_in_dir(dir.path()).unwrap()),
            _keep_alive: Box::new(dir),
        }
    }
}

/// DynamoDB on moto_server, a table of its own.
pub struct Dynamo;

#[async_trait]
impl OutboxUnderTest for Dynamo {
    async fn fixture(&self) -> OutboxFixture {
        let (config, proxy) = serialized_moto().await;
        let client = aws_sdk_dynamodb::Client::new(&config);
        let table = crate::moto::unique_name("notify");
        shared::store::dynamo::create_table(&client, &table)
            .await
            .unwrap();
        OutboxFixture {
            outbox: Arc::new(DynamoOutbox::new(client, table)),
            _keep_alive: Box::new(proxy),
        }
    }
}

pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap()
}

/// A notification of `trigger` for `status` and `sink`.
pub fn notification(trigger: &str, status: NotifyOn, sink: &str) -> Notification {
    Notification {
        id: Notification::dedup_key(trigger, status, sink),
        sink: sink.to_owned(),
        status: status.as_str().to_owned(),
        trigger_id: trigger.to_owned(),
        source: "schedule".to_owned(),
        source_name: "nightly".to_owned(),
        project: "gh/acme/e2e".to_owned(),
        reason: Some("CircleCI answered 500".to_owned()),
        pipeline_id: None,
        pipeline_url: None,
        workflows: Vec::new(),
        happened_at: start_time(),
    }
}

fn ids(pending: &[shared::notify::Pending]) -> Vec<String> {
    pending.iter().map(|p| p.notification.id.clone()).collect()
}

pub async fn enqueue_is_deduplicated_per_trigger_status_and_sink(adapter: &dyn OutboxUnderTest) {
    let fixture = adapter.fixture().await;
    let outbox = &fixture.outbox;
    let t = start_time();
    let first = notification("t1", NotifyOn::Failed, "ops");
    assert!(outbox.enqueue(&first, t).await.unwrap());
    // A redelivery, a replay or a later update of the same record: nothing new.
    assert!(!outbox.enqueue(&first, t).await.unwrap());
    assert!(
        !outbox
            .enqueue(&first, t + Duration::hours(1))
            .await
            .unwrap()
    );
    // Another status or another sink is another notification.
    assert!(
        outbox
            .enqueue(&notification("t1", NotifyOn::WorkflowFailed, "ops"), t)
            .await
            .unwrap()
    );
    assert!(
        outbox
            .enqueue(&notification("t1", NotifyOn::Failed, "slack"), t)
            .await
            .unwrap()
    );
    let due = outbox.due(t, 10).await.unwrap();
    assert_eq!(due.len(), 3, "{due:#?}");
    let stored = due.iter().find(|p| p.notification.id == first.id).unwrap();
    assert_eq!(stored.notification, first);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.due_at, t);
}

pub async fn due_entries_come_earliest_first_and_only_when_due(adapter: &dyn OutboxUnderTest) {
    let fixture = adapter.fixture().await;
    let outbox = &fixture.outbox;
    let t = start_time();
    for (trigger, offset) in [("late", 60), ("first", 0), ("middle", 30)] {
        let n = notification(trigger, NotifyOn::Rejected, "ops");
        outbox
            .enqueue(&n, t + Duration::seconds(offset))
            .await
            .unwrap();
    }
    assert!(
        outbox
            .due(t - Duration::seconds(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = outbox.due(t + Duration::seconds(30), 10).await.unwrap();
    assert_eq!(
        ids(&due),
        ["first#rejected#ops", "middle#rejected#ops"],
        "{due:#?}"
    );
    let one = outbox.due(t + Duration::seconds(60), 1).await.unwrap();
    assert_eq!(ids(&one), ["first#rejected#ops"]);
}

pub async fn take_is_exclusive_and_moves_the_entry(adapter: &dyn OutboxUnderTest) {
    let fixture = adapter.fixture().await;
    let outbox = &fixture.outbox;
    let t = start_time();
    outbox
        .enqueue(&notification("t1", NotifyOn::Ambiguous, "ops"), t)
        .await
        .unwrap();
    let seen = outbox.due(t, 10).await.unwrap().remove(0);
    let next = t + Duration::seconds(30);
    let taken = outbox.take(&seen, next).await.unwrap().unwrap();
    assert_eq!((taken.attempts, taken.due_at), (1, next));
    // A second sweeper holding the same (now stale) view gets nothing.
    assert!(outbox.take(&seen, next).await.unwrap().is_none());
    assert!(outbox.due(t, 10).await.unwrap().is_empty());
    let again = outbox.due(next, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].attempts, again[0].due_at), (1, next));
}

pub async fn remove_keeps_the_dedup_key(adapter: &dyn OutboxUnderTest) {
    let fixture = adapter.fixture().await;
    let outbox = &fixture.outbox;
    let t = start_time();
    let n = notification("t1", NotifyOn::Failed, "ops");
    outbox.enqueue(&n, t).await.unwrap();
    let seen = outbox.due(t, 10).await.unwrap().remove(0);
    let taken = outbox
        .take(&seen, t + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    outbox.remove(&taken).await.unwrap();
    assert!(
        outbox
            .due(t + Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Delivered is delivered: the same notification is never queued again.
    assert!(!outbox.enqueue(&n, t + Duration::hours(2)).await.unwrap());
    assert!(
        outbox
            .due(t + Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

// ------------------------------------------------------------------------ the sweeper

/// What the receiver got: the signature header (if any) and the body.
pub type ReceivedRequests = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// A sink receiver on loopback answering a scripted list of statuses (then 200).
#[derive(Clone, Default)]
pub struct Receiver {
    script: Arc<Mutex<Vec<u16>>>,
    pub requests: ReceivedRequests,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> (Self, String) {
        let receiver = Receiver {
            script: Arc::new(Mutex::new(script.iter().rev().copied().collect())),
            requests: Arc::default(),
        };
        let router = Router::new()
            .route(
                "/sink",
                post(
                    |State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes| async move {
                        let signature = headers
                            .get(SIGNATURE_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        receiver.requests.lock().unwrap().push((signature, body));
                        let status = receiver.script.lock().unwrap().pop().unwrap_or(200);
                        StatusCode::from_u16(status).unwrap()
                    },
                ),
            )
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/sink", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (receiver, url)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

pub const SIGNING_KEY: &str = "whsec-suite";

/// A sweeper over `outbox` for a `webhook` sink `ops` pointed at `url`.
pub fn sweeper(outbox: Arc<dyn Outbox>, url: &str, clock: Arc<ManualClock>) -> Sweeper {
    let triggers = shared::config::parse_str(
        r#"
[[notify]]
name = "ops"
kind = "webhook"
on = ["failed", "ambiguous", "rejected", "workflow_failed"]
url_secret = "ops-url"
signing_key_secret = "ops-key"
"#,
        "t.toml",
    )
    .unwrap();
    let secrets: Arc<dyn Secrets> = Arc::new(CachedSecrets::new(
        LocalSecretSource::from_vars(
            [(
                env_names::NOTIFY_SECRETS.to_owned(),
                serde_json::json!({"ops-url": url, "ops-key": SIGNING_KEY}).to_string(),
            )],
            "default",
        ),
        std::time::Duration::from_secs(60),
    ));
    Sweeper::new(
        outbox,
        Arc::new(HttpSender::new().unwrap()),
        secrets,
        Arc::new(triggers),
        clock,
    )
}

pub async fn a_500_then_200_is_retried_once_and_delivered_once(adapter: &dyn OutboxUnderTest) {
    let fixture = adapter.fixture().await;
    let (receiver, url) = Receiver::start(&[500]).await;
    let clock = Arc::new(ManualClock::new(start_time()));
    let sweeper = sweeper(fixture.outbox.clone(), &url, clock.clone());
    let n = notification("t1", NotifyOn::Failed, "ops");
    fixture.outbox.enqueue(&n, clock.now()).await.unwrap();

    let first = sweeper.sweep().await.unwrap();
    assert_eq!((first.failed, first.delivered), (1, 0), "{first:?}");
    assert_eq!(receiver.count(), 1);
    // Not before its backoff.
    clock.advance(Duration::seconds(29));
    assert_eq!(sweeper.sweep().await.unwrap(), Default::default());
    clock.advance(Duration::seconds(1));
    let second = sweeper.sweep().await.unwrap();
    assert_eq!((second.failed, second.delivered), (0, 1), "{second:?}");
    assert_eq!(receiver.count(), 2);
    clock.advance(Duration::seconds(7200));
    assert_eq!(sweeper.sweep().await.unwrap(), Default::default());
    assert_eq!(receiver.count(), 2);

    // Both requests carried the same signed body.
    let requests = receiver.requests.lock().unwrap().clone();
    let key = secrecy::SecretString::from(SIGNING_KEY);
    for (signature, body) in &requests {
        assert!(shared::notify::verify_signature(
            &key,
            signature.as_deref().unwrap(),
            body
        ));
        let sent: Notification = serde_json::from_slice(body).unwrap();
        assert_eq!(sent, n);
    }
}

pub async fn eight_failures_are_given_up_on_the_backoff_schedule(adapter: &dyn OutboxUnderTest) {
    let fixture = adapter.fixture().await;
    let (receiver, url) = Receiver::start(&[503; 20]).await;
    let clock = Arc::new(ManualClock::new(start_time()));
    let sweeper = sweeper(fixture.outbox.clone(), &url, clock.clone());
    fixture
        .outbox
        .enqueue(&notification("t1", NotifyOn::Rejected, "ops"), clock.now())
        .await
        .unwrap();
    let mut waited = Vec::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let report = sweeper.sweep().await.unwrap();
        assert_eq!(receiver.count(), attempt as usize);
        if attempt < MAX_ATTEMPTS {
            assert_eq!(report.failed, 1, "attempt {attempt}: {report:?}");
            // Due exactly after its delay, not a second earlier.
            let delay = retry_delay(attempt);
            clock.advance(Duration::from_std(delay).unwrap() - Duration::seconds(1));
            assert_eq!(sweeper.sweep().await.unwrap(), Default::default());
            clock.advance(Duration::seconds(1));
            waited.push(delay.as_secs());
        } else {
            assert_eq!(report.given_up, 1, "{report:?}");
        }
    }
    assert_eq!(waited, [30, 60, 120, 240, 480, 960, 1920]);
    clock.advance(Duration::days(1));
    assert_eq!(sweeper.sweep().await.unwrap(), Default::default());
    assert_eq!(receiver.count(), MAX_ATTEMPTS as usize);
}

pub async fn two_sweepers_send_a_notification_once(adapter: &dyn OutboxUnderTest) {
    let fixture = adapter.fixture().await;
    let (receiver, url) = Receiver::start(&[]).await;
    let clock = Arc::new(ManualClock::new(start_time()));
    let one = sweeper(fixture.outbox.clone(), &url, clock.clone());
    let two = sweeper(fixture.outbox.clone(), &url, clock.clone());
    for trigger in ["a", "b", "c"] {
        fixture
            .outbox
            .enqueue(&notification(trigger, NotifyOn::Failed, "ops"), clock.now())
            .await
            .unwrap();
    }
    let (first, second) = tokio::join!(one.sweep(), two.sweep());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        first.delivered + second.delivered,
        3,
        "{first:?} {second:?}"
    );
    assert_eq!(receiver.count(), 3);
}
