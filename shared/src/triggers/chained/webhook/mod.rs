//! CircleCI webhooks: signature verification and event parsing.
//!
//! The receiver's order is fixed by [`receive`]: verify the signature over the raw body
//! (nothing is parsed before that), parse and normalise, then reject replays. What it
//! returns is ready for rule matching (`crate::triggers::chained::rules`) and deduplication on
//! [`WebhookEvent::id`].

pub mod event;
pub mod signature;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

pub use event::{
    EventError, EventStatus, FieldProblem, GitInfo, GitSource, JobInfo, MAX_BODY_BYTES,
    PipelineInfo, ProjectInfo, ReplayError, ReplayWindow, WebhookEvent, WorkflowInfo, parse_event,
};
pub use signature::{SIGNATURE_HEADER, SignatureError, sign_v1, verify_signature};

/// The header naming the event type (the body's `type` is authoritative).
pub const EVENT_TYPE_HEADER: &str = "circleci-event-type";

/// Why a delivery was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookError {
    /// Answer 401 without detail; log the variant.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Answer 400 with the message: the sender (CircleCI) is authenticated.
    #[error(transparent)]
    Event(#[from] EventError),
    /// Answer 4xx; a replayed delivery must not trigger anything.
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// Verifies, parses and replay-checks one delivery.
pub fn receive(
    signature_header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    now: DateTime<Utc>,
    window: &ReplayWindow,
) -> Result<WebhookEvent, WebhookError> {
    verify_signature(signature_header, body, secrets)?;
    let event = parse_event(body)?;
    event.check_replay_window(now, window)?;
    Ok(event)
}
