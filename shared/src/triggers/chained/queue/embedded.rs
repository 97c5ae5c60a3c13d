//! The embedded delivery queue of `serve`: a SQLite table with SQS's semantics (a received
//! message is invisible for a while, a retried one comes back after its delay, one received
//! [`MAX_RECEIVES`] times without settling is dead-lettered), and the worker loop that
//! drains it through the same [`settle_batch`] as the Lambda.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use super::{AcceptedDelivery, DeliveryQueue, MAX_RECEIVES, QueueError, Settlement, settle_batch};
use crate::clock::Clock;
use crate::triggers::chained::Receiver;

/// The queue's file name inside `serve`'s data directory (beside the store's).
pub const QUEUE_FILE_NAME: &str = "deliveries.sqlite3";

/// How long a received delivery stays invisible to other receives (a worker that dies
/// mid-delivery gives it back after this; the claims make the second processing safe).
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the worker looks at the queue when nothing wakes it (retries fall due).
const IDLE_POLL: Duration = Duration::from_secs(1);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    accepted_at TEXT NOT NULL,
    refused     TEXT,
    visible_at  INTEGER NOT NULL,
    receives    INTEGER NOT NULL DEFAULT 0,
    dead        INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_visible
    ON webhook_deliveries (dead, visible_at);
"#;

/// One delivery handed to a worker.
#[derive(Debug, Clone)]
pub struct ReceivedDelivery {
    pub id: String,
    /// How many times it has been received, this time included.
    pub receives: u32,
    pub delivery: AcceptedDelivery,
}

/// A dead-lettered delivery (kept for an operator to read; `serve` logs each one).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: String,
    pub receives: u32,
    pub last_error: Option<String>,
    pub delivery: AcceptedDelivery,
}

/// The embedded queue. Cheap to clone; every clone is the same queue.
#[derive(Clone)]
pub struct SqliteDeliveryQueue {
    connection: Arc<Mutex<Connection>>,
    clock: Arc<dyn Clock>,
    /// Wakes the worker when a delivery is queued (it polls too, for due retries).
    queued: Arc<Notify>,
}

impl std::fmt::Debug for SqliteDeliveryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDeliveryQueue")
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(error.to_string())
}

impl SqliteDeliveryQueue {
    /// Opens (creating if needed) [`QUEUE_FILE_NAME`] inside `directory`, in WAL mode with
    /// `synchronous = FULL`: a `202` promises the delivery survives a power cut.
    pub fn open_in_dir(directory: &Path, clock: Arc<dyn Clock>) -> Result<Self, QueueError> {
        let connection = Connection::open(directory.join(QUEUE_FILE_NAME)).map_err(unavailable)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        Self::prepare(connection, clock)
    }

    /// A private in-memory queue (tests).
    pub fn in_memory(clock: Arc<dyn Clock>) -> Result<Self, QueueError> {
        Self::prepare(Connection::open_in_memory().map_err(unavailable)?, clock)
    }

    fn prepare(connection: Connection, clock: Arc<dyn Clock>) -> Result<Self, QueueError> {
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(unavailable)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        connection.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            clock,
            queued: Arc::new(Notify::new()),
        })
    }

    async fn run<T, F>(&self, work: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, DateTime<Utc>) -> rusqlite::Result<T> + Send + 'static,
    {
        let connection = self.connection.clone();
        let now = self.clock.now();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection, now)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }

    /// Takes up to `max` visible deliveries and hides each for `visibility`.
    pub async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<ReceivedDelivery>, QueueError> {
        let hide = millis(visibility);
        self.run(move |connection, now| {
            let now_ms = now.timestamp_millis();
            let transaction = connection.transaction()?;
            let received = {
                let mut select = transaction.prepare(
                    "SELECT id, body, accepted_at, refused, receives FROM webhook_deliveries \
                     WHERE dead = 0 AND visible_at <= ?1 ORDER BY visible_at, rowid LIMIT ?2",
                )?;
                let rows = select.query_map(params![now_ms, max as i64], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<String>>(3)?,
                        row.get::<_, u32>(4)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let mut out = Vec::with_capacity(received.len());
            for (id, body, accepted_at, refused, receives) in received {
                transaction.execute(
                    "UPDATE webhook_deliveries SET visible_at = ?2, receives = receives + 1 \
                     WHERE id = ?1",
                    params![id, now_ms + hide],
                )?;
                out.push(ReceivedDelivery {
                    id,
                    receives: receives + 1,
                    delivery: AcceptedDelivery {
                        body,
                        accepted_at: parse_time(&accepted_at),
                        refused,
                    },
                });
            }
            transaction.commit()?;
            Ok(out)
        })
        .await
    }

    /// Applies what the worker decided: delete, show again after a delay, or dead-letter
    /// once it has been received [`MAX_RECEIVES`] times.
    pub async fn apply(
        &self,
        received: &ReceivedDelivery,
        settlement: &Settlement,
    ) -> Result<(), QueueError> {
        let id = received.id.clone();
        let exhausted = received.receives >= MAX_RECEIVES;
        let (delay, error) = match settlement {
            Settlement::Settled(_) => {
                return self
                    .run(move |connection, _| {
                        connection
                            .execute("DELETE FROM webhook_deliveries WHERE id = ?1", [id])
                            .map(drop)
                    })
                    .await;
            }
            Settlement::Retry { after, reason, .. } => (*after, reason.clone()),
            Settlement::Failed { reason, .. } => (super::RETRY_AFTER_FAILURE, reason.clone()),
        };
        if exhausted {
            tracing::error!(delivery = %id, receives = received.receives, reason = %error,
                "delivery dead-lettered after its last attempt");
        }
        self.run(move |connection, now| {
            connection
                .execute(
                    "UPDATE webhook_deliveries SET visible_at = ?2, dead = ?3, last_error = ?4 \
                     WHERE id = ?1",
                    params![
                        id,
                        now.timestamp_millis() + millis(delay),
                        i64::from(exhausted),
                        error
                    ],
                )
                .map(drop)
        })
        .await
    }

    /// Deliveries not settled yet (visible or not), dead ones excluded.
    pub async fn pending(&self) -> Result<usize, QueueError> {
        self.run(|connection, _| {
            connection.query_row(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE dead = 0",
                [],
                |row| row.get::<_, i64>(0).map(|n| n as usize),
            )
        })
        .await
    }

    /// The dead-lettered deliveries, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.run(|connection, _| {
            let mut select = connection.prepare(
                "SELECT id, body, accepted_at, refused, receives, last_error \
                 FROM webhook_deliveries WHERE dead = 1 ORDER BY rowid",
            )?;
            let rows = select.query_map([], |row| {
                Ok(DeadLetter {
                    id: row.get(0)?,
                    delivery: AcceptedDelivery {
                        body: row.get(1)?,
                        accepted_at: parse_time(&row.get::<_, String>(2)?),
                        refused: row.get(3)?,
                    },
                    receives: row.get(4)?,
                    last_error: row.get(5)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// The delivery with `id`, if it is still queued (tests, diagnostics).
    pub async fn visible_at(&self, id: &str) -> Result<Option<DateTime<Utc>>, QueueError> {
        let id = id.to_owned();
        self.run(move |connection, _| {
            connection
                .query_row(
                    "SELECT visible_at FROM webhook_deliveries WHERE id = ?1",
                    [id],
                    |row| row.get::<_, i64>(0),
                )
                .optional()
                .map(|at| at.and_then(DateTime::from_timestamp_millis))
        })
        .await
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for SqliteDeliveryQueue {
    async fn enqueue(&self, delivery: &AcceptedDelivery) -> Result<String, QueueError> {
        let id = uuid::Uuid::new_v4().to_string();
        let row = (
            id.clone(),
            delivery.body.clone(),
            delivery.accepted_at.to_rfc3339(),
            delivery.refused.clone(),
        );
        self.run(move |connection, now| {
            connection
                .execute(
                    "INSERT INTO webhook_deliveries (id, body, accepted_at, refused, visible_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![row.0, row.1, row.2, row.3, now.timestamp_millis()],
                )
                .map(drop)
        })
        .await?;
        self.queued.notify_one();
        Ok(id)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2)
}

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `serve`'s worker: drains the embedded queue through [`settle_batch`].
#[derive(Clone)]
pub struct EmbeddedWorker {
    queue: SqliteDeliveryQueue,
    receiver: Arc<Receiver>,
}

impl EmbeddedWorker {
    pub fn new(queue: SqliteDeliveryQueue, receiver: Arc<Receiver>) -> Self {
        Self { queue, receiver }
    }

    pub fn queue(&self) -> &SqliteDeliveryQueue {
        &self.queue
    }

    /// Settles every delivery visible now, in batches of ten (as the event source mapping
    /// hands them to the Lambda), and returns what became of each.
    pub async fn drain(&self) -> Result<Vec<(ReceivedDelivery, Settlement)>, QueueError> {
        let mut settled = Vec::new();
        loop {
            let batch = self.queue.receive(10, VISIBILITY_TIMEOUT).await?;
            if batch.is_empty() {
                return Ok(settled);
            }
            let deliveries: Vec<&AcceptedDelivery> =
                batch.iter().map(|received| &received.delivery).collect();
            let outcomes = settle_batch(&self.receiver, &deliveries).await;
            for (received, settlement) in batch.into_iter().zip(outcomes) {
                self.queue.apply(&received, &settlement).await?;
                settled.push((received, settlement));
            }
        }
    }

    /// Runs until `stop` resolves: drains whenever a delivery is queued, and at least every
    /// second (retries fall due). Deliveries being settled when `stop` resolves finish.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.drain().await {
                tracing::error!(%error, "the delivery queue could not be drained");
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.queue.queued.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }
}
