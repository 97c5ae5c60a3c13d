//! Durable acceptance: a verified webhook delivery is persisted to a queue and answered
//! `202` at once; the actions it causes run from the queue, never after the answer.
//!
//! ```text
//! POST /webhooks/circleci ── verify, parse, replay window ── DeliveryQueue::enqueue ──▶ 202
//!                                                              │ (SQS in AWS, SQLite in `serve`)
//!                        worker (SQS event source mapping / serve's loop) ◀─┘
//!                          settle(): Receiver::process (or reject_stale) → Settlement
//!                            Settled → delete · Retry → visible again after `after`
//!                            Failed  → retried until the redrive limit, then dead-lettered
//! ```
//!
//! Why: a Lambda environment is frozen the moment its response is sent. Work "left running"
//! after a 503 at a deadline resumes minutes later, after a redelivery took the claim over.
//! Answering only after the delivery is durable, and working only inside an invocation that
//! is not answered yet (the worker's), means nothing runs while frozen; a worker frozen
//! mid-send loses its lease, and the fence refuses its late writes.
//!
//! Duplicates are expected (CircleCI redelivers, SQS is at-least-once): the claims make a
//! second processing replay what the first decided.

pub mod embedded;
pub mod sqs;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::{DeliveryReport, Receiver, ReceiverError};
use crate::triggers::chained::webhook::parse_event;

/// How often a delivery is received before it is dead-lettered (SQS: the redrive policy's
/// `maxReceiveCount`, kept equal in the template; `serve`: the embedded queue's limit).
pub const MAX_RECEIVES: u32 = 5;

/// A verified delivery, as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedDelivery {
    /// The body exactly as CircleCI signed it (already verified and parsed once).
    pub body: String,
    pub accepted_at: DateTime<Utc>,
    /// Set when the event was outside the replay window at acceptance: the worker records
    /// a `rejected` row for each decision it would have caused, and performs none.
    pub refused: Option<String>,
}

/// Why a delivery could not be queued (the sender is asked to deliver again).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the delivery queue is unavailable: {0}")]
    Unavailable(String),
    #[error("the delivery queue refused the message: {0}")]
    Refused(String),
}

/// Where verified deliveries wait for the worker.
#[async_trait::async_trait]
pub trait DeliveryQueue: Send + Sync {
    /// Persists `delivery`; `Ok` only once it is durable. Returns the queue's message id.
    async fn enqueue(&self, delivery: &AcceptedDelivery) -> Result<String, QueueError>;
}

/// What became of one received delivery.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Every decision is made (or replayed): remove it from the queue.
    Settled(DeliveryReport),
    /// An action is in progress elsewhere, or failed in a way a later attempt may fix:
    /// make it visible again after `after`.
    Retry {
        after: Duration,
        reason: String,
        report: Option<DeliveryReport>,
    },
    /// Nothing a retry is known to fix. It is still retried up to [`MAX_RECEIVES`] (a
    /// transient cause may hide behind it), then dead-lettered where an alarm sees it.
    Failed {
        reason: String,
        report: Option<DeliveryReport>,
    },
}

impl Settlement {
    pub fn is_settled(&self) -> bool {
        matches!(self, Settlement::Settled(_))
    }

    pub fn report(&self) -> Option<&DeliveryReport> {
        match self {
            Settlement::Settled(report) => Some(report),
            Settlement::Retry { report, .. } | Settlement::Failed { report, .. } => report.as_ref(),
        }
    }
}

/// How long a delivery whose store or CircleCI call failed waits before its next attempt.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Acts on one queued delivery: the worker's whole job, the same in Lambda and `serve`.
pub async fn settle(receiver: &Receiver, delivery: &AcceptedDelivery) -> Settlement {
    let event = match parse_event(delivery.body.as_bytes()) {
        Ok(event) => event,
        Err(error) => {
            // Parsed at acceptance; only a message not written by the acceptor lands here.
            return Settlement::Failed {
                reason: format!("the queued body is not a webhook event: {error}"),
                report: None,
            };
        }
    };
    let span = tracing::info_span!(
        "delivery",
        event_id = %event.id(),
        event_type = event.kind().as_str(),
        project = %event.project_slug(),
        pipeline_id = %event.pipeline().id,
    );
    let work = async {
        match &delivery.refused {
            Some(reason) => receiver.reject_stale(&event, reason).await,
            None => receiver.process(&event).await,
        }
    };
    let outcome = work.instrument(span.clone()).await;
    let settlement = settlement_of(outcome);
    match &settlement {
        Settlement::Settled(report) => tracing::info!(
            parent: &span,
            actions = report.actions.len(),
            joins = report.joins.len(),
            closed_loop = report.closed_loop.is_some(),
            "delivery settled"
        ),
        Settlement::Retry { after, reason, .. } => tracing::warn!(
            parent: &span,
            after_secs = after.as_secs(),
            %reason,
            "delivery will be retried"
        ),
        Settlement::Failed { reason, .. } => {
            // Retried up to MAX_RECEIVES, then dead-lettered (the template alarms there).
            tracing::error!(parent: &span, %reason, "delivery failed");
        }
    }
    settlement
}

/// Settles a batch: distinct deliveries concurrently, identical ones (a redelivery queued
/// beside the original) once, sharing the outcome — settled concurrently they would only
/// find each other's claim in progress and come back for nothing.
pub async fn settle_batch(
    receiver: &Receiver,
    deliveries: &[&AcceptedDelivery],
) -> Vec<Settlement> {
    let mut distinct: Vec<&AcceptedDelivery> = Vec::new();
    let slots: Vec<usize> = deliveries
        .iter()
        .map(
            |delivery| match distinct.iter().position(|seen| same_event(seen, delivery)) {
                Some(slot) => slot,
                None => {
                    distinct.push(delivery);
                    distinct.len() - 1
                }
            },
        )
        .collect();
    let outcomes =
        futures::future::join_all(distinct.iter().map(|delivery| settle(receiver, delivery))).await;
    slots
        .into_iter()
        .map(|slot| outcomes[slot].clone())
        .collect()
}

/// The same delivery, whenever it was accepted.
fn same_event(a: &AcceptedDelivery, b: &AcceptedDelivery) -> bool {
    a.body == b.body && a.refused == b.refused
}

fn settlement_of(outcome: Result<DeliveryReport, ReceiverError>) -> Settlement {
    match outcome {
        Ok(report) => {
            if let Some(after) = report.redeliver_after() {
                Settlement::Retry {
                    after: after.max(Duration::from_secs(1)),
                    reason: "an action is in progress elsewhere or failed in a way a retry may fix"
                        .to_owned(),
                    report: Some(report),
                }
            } else if report.has_errors() {
                Settlement::Failed {
                    reason: "an action could not be decided".to_owned(),
                    report: Some(report),
                }
            } else {
                Settlement::Settled(report)
            }
        }
        Err(error) if error.is_retryable() => Settlement::Retry {
            after: RETRY_AFTER_FAILURE,
            reason: error.to_string(),
            report: None,
        },
        Err(error) => Settlement::Failed {
            reason: error.to_string(),
            report: None,
        },
    }
}
