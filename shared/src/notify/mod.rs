//! Failure notifications: `[[notify]]` sinks told about failed, ambiguous and rejected
//! triggers and failed workflows, without ever slowing or failing the trigger path.
//!
//! ```text
//! record written ──▶ NotifyingStore ──enqueue (dedup per trigger+status+sink)──▶ Outbox
//!                                                                                  │
//!                   sweeper (scheduled tick / serve loop) ◀──due, oldest first────┘
//!                        └─▶ Slack / signed webhook; failure → backoff 30 s·2ⁿ (≤ 1 h), 8 attempts
//! ```
//!
//! **Where decisions are seen.** Every decision leaves a history row, but not every one is
//! made by the engine (a rejected webhook or HTTP call, a workflow result merged by the
//! closed loop). [`NotifyingStore`] wraps the store: after a record write succeeds it looks
//! at the record and enqueues what the sinks want. The write's result is returned as it
//! was; an enqueue failure is logged, never returned.
//!
//! **Exactly one per trigger, status and sink.** The outbox's enqueue is a conditional
//! insert of a dedup key `NOTIFY#<trigger>#<status>#<sink>` together with the pending entry;
//! a redelivered webhook, a replay or a later update of the same record finds the key and
//! queues nothing. A sweeper takes a due entry by a conditional bump of its attempt count
//! (which also moves it to its next retry time), sends, and deletes it on success: two
//! sweepers racing for an entry send it once, and a sweeper that dies mid-send is covered
//! by the retry time it already wrote.

mod dynamo;
mod observe;
mod send;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use dynamo::DynamoOutbox;
pub use observe::{Notifier, NotifyingStore, with_notifications};
pub use send::{HttpSender, SIGNATURE_HEADER, SendError, Sender, sign, verify_signature};
pub use sqlite::{OUTBOX_FILE_NAME, SqliteOutbox};
pub use triggers_config::notify::{NotifyKind, NotifyOn, NotifySpec};

use crate::clock::Clock;
use crate::config::TriggersFile;
use crate::secrets::Secrets;

/// Attempts (the first included) before a notification is given up.
pub const MAX_ATTEMPTS: u32 = 8;
/// Delay after the first failed attempt; doubled per attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest delay between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// How long a dedup key is kept (a redelivery or retry of the trigger comes within days).
pub const DEDUP_RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// The delay before attempt `attempts + 1`, after `attempts` failed ones.
pub fn retry_delay(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << exponent).min(MAX_RETRY)
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the notification outbox is unavailable: {0}")]
    Unavailable(String),
    #[error("stored notification {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

/// A workflow of the trigger's pipeline, as the notification shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedWorkflow {
    pub id: String,
    pub name: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What a sink is told: also the webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The dedup key: `<trigger>#<status>#<sink>`; stable across redeliveries.
    pub id: String,
    pub sink: String,
    pub status: String,
    pub trigger_id: String,
    /// `schedule`, `chain`, `http` or `cli`, as history names them.
    pub source: String,
    /// The schedule, rule or endpoint.
    pub source_name: String,
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflows: Vec<NotifiedWorkflow>,
    /// When the decision was recorded.
    pub happened_at: DateTime<Utc>,
}

impl Notification {
    pub fn dedup_key(trigger: &str, status: NotifyOn, sink: &str) -> String {
        format!("{trigger}#{}#{sink}", status.as_str())
    }

    /// One readable line (Slack's text, logs).
    pub fn summary(&self) -> String {
        let what = match self.status.as_str() {
            "workflow_failed" => "a workflow failed",
            "failed" => "failed",
            "ambiguous" => "is ambiguous (an operator must look)",
            "rejected" => "was rejected",
            other => other,
        };
        let mut line = format!(
            "{} `{}` → {} {what}",
            self.source, self.source_name, self.project
        );
        let failed: Vec<&str> = self
            .workflows
            .iter()
            .filter(|w| matches!(w.status.as_str(), "failed" | "error" | "failing"))
            .map(|w| w.name.as_str())
            .collect();
        if !failed.is_empty() {
            line.push_str(&format!(" ({})", failed.join(", ")));
        }
        if let Some(reason) = &self.reason {
            line.push_str(&format!(": {reason}"));
        }
        if let Some(url) = &self.pipeline_url {
            line.push_str(&format!(" <{url}|pipeline>"));
        }
        line.push_str(&format!(" [trigger {}]", self.trigger_id));
        line
    }
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub notification: Notification,
    /// Attempts made so far.
    pub attempts: u32,
    pub due_at: DateTime<Utc>,
}

/// The outbox port: durable, deduplicated, ordered by due time.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Queues `notification` due at `due_at` unless its id was ever queued: `true` when
    /// queued now, `false` for a duplicate.
    async fn enqueue(
        &self,
        notification: &Notification,
        due_at: DateTime<Utc>,
    ) -> Result<bool, NotifyError>;

    /// Up to `limit` entries due at `now`, earliest first.
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Pending>, NotifyError>;

    /// Takes an entry for one attempt: if it still has `pending.attempts` attempts, counts
    /// one more and moves it to `next_due` (where it is retried if this attempt fails or
    /// its sender dies), and returns it as it now is. `None`: someone else took it, or it
    /// is gone.
    async fn take(
        &self,
        pending: &Pending,
        next_due: DateTime<Utc>,
    ) -> Result<Option<Pending>, NotifyError>;

    /// Removes the entry as last seen (delivered, or given up); its dedup key stays.
    async fn remove(&self, pending: &Pending) -> Result<(), NotifyError>;
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotifySweep {
    pub delivered: u32,
    pub failed: u32,
    pub given_up: u32,
    /// Taken by another sweeper first.
    pub skipped: u32,
}

/// Sends due notifications: the scheduled Lambda's tick and `serve`'s loop.
#[derive(Clone)]
pub struct Sweeper {
    outbox: Arc<dyn Outbox>,
    sender: Arc<dyn Sender>,
    secrets: Arc<dyn Secrets>,
    triggers: Arc<TriggersFile>,
    clock: Arc<dyn Clock>,
}

/// Entries looked at per sweep.
pub const SWEEP_BATCH: u32 = 25;

impl Sweeper {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        sender: Arc<dyn Sender>,
        secrets: Arc<dyn Secrets>,
        triggers: Arc<TriggersFile>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            outbox,
            sender,
            secrets,
            triggers,
            clock,
        }
    }

    /// One pass over what is due now.
    pub async fn sweep(&self) -> Result<NotifySweep, NotifyError> {
        let now = self.clock.now();
        let mut report = NotifySweep::default();
        for pending in self.outbox.due(now, SWEEP_BATCH).await? {
            let id = pending.notification.id.clone();
            let sink = self
                .triggers
                .notify
                .iter()
                .find(|sink| sink.name == pending.notification.sink);
            let Some(sink) = sink.filter(|_| pending.attempts < MAX_ATTEMPTS) else {
                // The sink was removed from the file, or a sender died on the last attempt.
                self.give_up(&pending, "no attempt left or the sink is gone")
                    .await?;
                report.given_up += 1;
                continue;
            };
            let attempt = pending.attempts + 1;
            let next_due = now + to_chrono(retry_delay(attempt));
            let Some(taken) = self.outbox.take(&pending, next_due).await? else {
                report.skipped += 1;
                continue;
            };
            match self
                .sender
                .send(sink, self.secrets.as_ref(), &pending.notification)
                .await
            {
                Ok(()) => {
                    self.outbox.remove(&taken).await?;
                    tracing::info!(notification = %id, sink = %sink.name, attempt, "notification delivered");
                    report.delivered += 1;
                }
                Err(error) if attempt >= MAX_ATTEMPTS => {
                    self.give_up(&taken, &error.to_string()).await?;
                    report.given_up += 1;
                }
                Err(error) => {
                    tracing::warn!(notification = %id, sink = %sink.name, attempt, %error,
                        retry_at = %next_due, "notification not delivered; will retry");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    async fn give_up(&self, pending: &Pending, reason: &str) -> Result<(), NotifyError> {
        self.outbox.remove(pending).await?;
        tracing::error!(notification = %pending.notification.id, sink = %pending.notification.sink,
            attempts = pending.attempts, %reason, "notification given up");
        crate::telemetry::emit_metric(
            GIVEN_UP_METRIC,
            1.0,
            &[("Sink", pending.notification.sink.as_str())],
        );
        Ok(())
    }
}

/// The metric a given-up notification counts in (the SAM template alarms on it).
pub const GIVEN_UP_METRIC: &str = "NotificationsGivenUp";

/// How often `serve`'s loop looks for due notifications.
pub const LOCAL_POLL: Duration = Duration::from_secs(1);

/// `serve`'s loop: sweeps every [`LOCAL_POLL`] until `stop` resolves (after the sweep it
/// is in). Errors are logged; the next pass tries again.
pub async fn run_until(sweeper: &Sweeper, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        match sweeper.sweep().await {
            Ok(report) if report != NotifySweep::default() => {
                tracing::debug!(?report, "notifications swept")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "notification sweep failed; trying again"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(LOCAL_POLL) => {}
        }
    }
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_30_seconds_and_caps_at_an_hour() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }
}
