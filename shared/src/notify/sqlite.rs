//! The outbox of `serve`: `notifications.sqlite3` beside the store and the delivery queue.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{DEDUP_RETENTION, Notification, NotifyError, Outbox, Pending};

/// The outbox's file name inside `serve`'s data directory.
pub const OUTBOX_FILE_NAME: &str = "notifications.sqlite3";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS notify_dedup (
    id         TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS notify_pending (
    id       TEXT PRIMARY KEY,
    body     TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    due_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_pending_due ON notify_pending (due_at, id);
"#;

/// The embedded outbox. Cheap to clone; every clone is the same outbox.
#[derive(Clone)]
pub struct SqliteOutbox {
    connection: Arc<Mutex<Connection>>,
}

fn unavailable(error: impl std::fmt::Display) -> NotifyError {
    NotifyError::Unavailable(error.to_string())
}

impl SqliteOutbox {
    /// Opens (creating if needed) [`OUTBOX_FILE_NAME`] inside `directory`.
    pub fn open_in_dir(directory: &Path) -> Result<Self, NotifyError> {
        let connection = Connection::open(directory.join(OUTBOX_FILE_NAME)).map_err(unavailable)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        Self::prepare(connection)
    }

    /// A private in-memory outbox (tests).
    pub fn in_memory() -> Result<Self, NotifyError> {
        Self::prepare(Connection::open_in_memory().map_err(unavailable)?)
    }

    fn prepare(connection: Connection) -> Result<Self, NotifyError> {
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(unavailable)?;
        connection.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    async fn run<T, F>(&self, work: F) -> Result<T, NotifyError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, NotifyError> + Send + 'static,
    {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(unavailable)?
    }
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn enqueue(
        &self,
        notification: &Notification,
        due_at: DateTime<Utc>,
    ) -> Result<bool, NotifyError> {
        let id = notification.id.clone();
        let body = serde_json::to_string(notification).map_err(unavailable)?;
        let expires = (due_at + chrono::Duration::seconds(DEDUP_RETENTION.as_secs() as i64))
            .timestamp_millis();
        let due = due_at.timestamp_millis();
        self.run(move |connection| {
            let transaction = connection.transaction().map_err(unavailable)?;
            // An expired dedup key is forgotten (compared in code, as the store does).
            transaction
                .execute(
                    "DELETE FROM notify_dedup WHERE id = ?1 AND expires_at <= ?2",
                    params![id, due],
                )
                .map_err(unavailable)?;
            let inserted = transaction
                .execute(
                    "INSERT OR IGNORE INTO notify_dedup (id, expires_at) VALUES (?1, ?2)",
                    params![id, expires],
                )
                .map_err(unavailable)?;
            if inserted == 1 {
                transaction
                    .execute(
                        "INSERT INTO notify_pending (id, body, attempts, due_at) VALUES (?1, ?2, 0, ?3)",
                        params![id, body, due],
                    )
                    .map_err(unavailable)?;
            }
            transaction.commit().map_err(unavailable)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Pending>, NotifyError> {
        let now = now.timestamp_millis();
        self.run(move |connection| {
            let mut select = connection
                .prepare(
                    "SELECT id, body, attempts, due_at FROM notify_pending \
                     WHERE due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
                )
                .map_err(unavailable)?;
            let rows = select
                .query_map(params![now, i64::from(limit)], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, u32>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .map_err(unavailable)?;
            let mut found = Vec::new();
            for row in rows {
                let (id, body, attempts, due_at) = row.map_err(unavailable)?;
                let notification =
                    serde_json::from_str(&body).map_err(|error| NotifyError::Corrupt {
                        key: id.clone(),
                        reason: error.to_string(),
                    })?;
                let due_at = DateTime::from_timestamp_millis(due_at).ok_or_else(|| {
                    NotifyError::Corrupt {
                        key: id,
                        reason: "due time out of range".into(),
                    }
                })?;
                found.push(Pending {
                    notification,
                    attempts,
                    due_at,
                });
            }
            Ok(found)
        })
        .await
    }

    async fn take(
        &self,
        pending: &Pending,
        next_due: DateTime<Utc>,
    ) -> Result<Option<Pending>, NotifyError> {
        let id = pending.notification.id.clone();
        let attempts = pending.attempts;
        let next = next_due.timestamp_millis();
        let taken = self
            .run(move |connection| {
                let changed = connection
                    .execute(
                        "UPDATE notify_pending SET attempts = attempts + 1, due_at = ?3 \
                     WHERE id = ?1 AND attempts = ?2",
                        params![id, attempts, next],
                    )
                    .map_err(unavailable)?;
                Ok(changed == 1)
            })
            .await?;
        Ok(taken.then(|| Pending {
            notification: pending.notification.clone(),
            attempts: attempts + 1,
            due_at: next_due,
        }))
    }

    async fn remove(&self, pending: &Pending) -> Result<(), NotifyError> {
        let id = pending.notification.id.clone();
        self.run(move |connection| {
            connection
                .execute("DELETE FROM notify_pending WHERE id = ?1", params![id])
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}
