//! What can go wrong talking to CircleCI, classified so callers can decide what to do next.

use std::time::Duration;

use crate::secrets::SecretsError;

/// The outcome of a CircleCI call that did not succeed.
///
/// One invariant matters for exactly-once: for an operation that must happen at most once
/// (a trigger, a rerun, an approval, a cancel, a webhook create) **every variant except
/// [`CircleCiError::Ambiguous`] means the operation did not happen**. Anything that may
/// have reached CircleCI without a readable answer is reported as `Ambiguous` and never
/// resent by the client. (A webhook *update* is idempotent: it is retried like a read, and
/// a `Server`/`Timeout`/`Transport` error after it means "perhaps applied; safe to repeat".)
///
/// No variant carries a token: only the token's *name* and CircleCI's own messages.
#[derive(Debug, thiserror::Error)]
pub enum CircleCiError {
    /// Rejected before anything was sent (bad slug, too many or too long parameters, ...).
    #[error("invalid CircleCI request (nothing was sent): {reason}")]
    InvalidRequest { reason: String },

    /// The client itself is misconfigured (e.g. the base URL).
    #[error("CircleCI client configuration: {reason}")]
    Configuration { reason: String },

    /// The named token could not be read from the secrets store.
    #[error("CircleCI token `{token}` is not available: {source}")]
    Token {
        token: String,
        #[source]
        source: SecretsError,
    },

    /// 401, still after re-reading the token once.
    #[error("CircleCI rejected token `{token}` (401): {message}")]
    Unauthorized { token: String, message: String },

    /// 403: the token's user may not do this (e.g. a restricted context or project).
    #[error("CircleCI denied access (403): {message}")]
    Forbidden { message: String },

    /// 404: the project, pipeline, workflow or webhook does not exist (or is invisible to the token).
    #[error("not found on CircleCI (404): {message}")]
    NotFound { message: String },

    /// Any other 4xx: CircleCI's `message` says why.
    #[error("CircleCI rejected the request ({status}): {message}")]
    BadRequest { status: u16, message: String },

    /// 429 and the deadline does not leave room to wait (or attempts ran out).
    #[error("rate limited by CircleCI{}", retry_after_text(*.retry_after))]
    RateLimited { retry_after: Option<Duration> },

    /// 5xx on a call without side effects, after the retries the deadline allowed.
    #[error("CircleCI server error ({status}): {message}")]
    Server { status: u16, message: String },

    /// The deadline passed before an answer arrived, with nothing left outstanding that
    /// could have had an effect (reads, or a create that was never sent).
    #[error("CircleCI call timed out: {what}")]
    Timeout { what: String },

    /// The connection could not be made (or failed on a read), after the retries allowed.
    #[error("could not reach CircleCI: {message}")]
    Transport { message: String },

    /// A call with side effects may or may not have taken effect (timeout or 5xx after the
    /// request was sent, or a success whose body could not be read). Reconcile; never resend.
    #[error("{operation} may or may not have happened on CircleCI: {reason}")]
    Ambiguous {
        operation: &'static str,
        status: Option<u16>,
        reason: String,
    },

    /// `200 {"message": "Ignoring pipeline due to CI skip ..."}`: accepted, nothing started.
    #[error("CircleCI did not trigger a pipeline: {message}")]
    NotTriggered { message: String },

    /// A 2xx of a read whose body is not what the spec describes.
    #[error("unexpected response from CircleCI ({status}): {message}")]
    UnexpectedResponse { status: u16, message: String },
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(" (retry after {}s)", wait.as_secs_f64().ceil()),
        None => String::new(),
    }
}

impl CircleCiError {
    /// Whether the same call may succeed later (a sweep may try again). Ambiguous results
    /// are *not* retryable: they need reconciliation first.
    pub fn is_retryable(&self) -> bool {
        match self {
            CircleCiError::RateLimited { .. }
            | CircleCiError::Server { .. }
            | CircleCiError::Timeout { .. }
            | CircleCiError::Transport { .. } => true,
            CircleCiError::Token { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// Whether a call with side effects may have taken effect despite the error.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, CircleCiError::Ambiguous { .. })
    }

    /// The HTTP status CircleCI answered with, when the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            CircleCiError::Unauthorized { .. } => Some(401),
            CircleCiError::Forbidden { .. } => Some(403),
            CircleCiError::NotFound { .. } => Some(404),
            CircleCiError::RateLimited { .. } => Some(429),
            CircleCiError::BadRequest { status, .. }
            | CircleCiError::Server { status, .. }
            | CircleCiError::UnexpectedResponse { status, .. } => Some(*status),
            CircleCiError::Ambiguous { status, .. } => *status,
            CircleCiError::NotTriggered { .. } => Some(200),
            _ => None,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        CircleCiError::InvalidRequest {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_ambiguous_may_have_happened_and_it_is_not_retryable() {
        let ambiguous = CircleCiError::Ambiguous {
            operation: "trigger pipeline",
            status: Some(502),
            reason: "502 after the request was sent".into(),
        };
        assert!(ambiguous.is_ambiguous());
        assert!(!ambiguous.is_retryable());
        assert_eq!(ambiguous.status(), Some(502));

        let server = CircleCiError::Server {
            status: 503,
            message: "down".into(),
        };
        assert!(!server.is_ambiguous());
        assert!(server.is_retryable());

        let rejected = CircleCiError::BadRequest {
            status: 400,
            message: "Unexpected request body provided.".into(),
        };
        assert!(!rejected.is_retryable());
        assert!(!rejected.is_ambiguous());
    }

    #[test]
    fn token_errors_are_retryable_only_when_the_store_was_unavailable() {
        let missing = CircleCiError::Token {
            token: "default".into(),
            source: SecretsError::UnknownToken {
                name: "default".into(),
            },
        };
        assert!(!missing.is_retryable());
        let outage = CircleCiError::Token {
            token: "default".into(),
            source: SecretsError::Unavailable {
                kind: crate::secrets::SecretKind::CircleCiTokens,
                message: "throttled".into(),
            },
        };
        assert!(outage.is_retryable());
    }

    #[test]
    fn rate_limited_message_mentions_the_wait() {
        let error = CircleCiError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            error.to_string(),
            "rate limited by CircleCI (retry after 30s)"
        );
        let error = CircleCiError::RateLimited { retry_after: None };
        assert_eq!(error.to_string(), "rate limited by CircleCI");
    }
}
