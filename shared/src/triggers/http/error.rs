//! Why a call to the HTTP trigger API was not performed, as the domain decides it. No HTTP
//! here: the edge (`problem.rs`) maps each case to a status and a problem+json document, and
//! the CLI prints it as text.

use std::time::Duration;

use super::request::FieldError;
use super::view::TriggerView;
use crate::store::TriggerRecord;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("unknown client or wrong key")]
    Unauthorized,
    #[error("the client may not use endpoint `{endpoint}`")]
    Forbidden { endpoint: String },
    #[error("no endpoint of that name")]
    EndpointNotFound,
    #[error("no trigger of that id among this client's endpoints")]
    TriggerNotFound,
    #[error("the request breaks the endpoint's contract: {}", summary(errors))]
    Invalid { errors: Vec<FieldError> },
    /// The Idempotency-Key was used before for a different request.
    #[error("the Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    /// The first request with this Idempotency-Key is still being processed.
    #[error("a request with this Idempotency-Key is in progress")]
    InProgress { retry_after: Duration },
    /// The client's own request rate.
    #[error("the client's request rate is used up")]
    RateLimited { retry_after: Duration },
    /// Something we depend on (store, secrets) is down for now.
    #[error("temporarily unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    /// A bug or a misconfiguration; details go to the log, not to the caller.
    #[error("internal error")]
    Internal { reason: String },
    /// The trigger was decided and did not succeed (the record says how).
    #[error("trigger {} is {}: {}", record.id, record.status, record.reason.as_deref().unwrap_or("no reason recorded"))]
    Outcome {
        record: Box<TriggerRecord>,
        view: Box<TriggerView>,
    },
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(FieldError::summary)
        .collect::<Vec<_>>()
        .join("; ")
}
