//! Every error answer of the HTTP trigger API: an RFC 9457 problem with a stable `type`
//! (`https://circleci-triggers.dev/problems/<kind>`), a title, a detail, and extension
//! members a program can act on (`errors`, `trigger_id`, `retryable`, `retry_with_new_key`).

use std::time::Duration;

use axum::http::StatusCode;
use axum::http::header::ALLOW;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::CallError;
use super::request::FieldError;
use super::view::TriggerView;
use crate::http::Problem;
use crate::store::{TriggerId, TriggerRecord, TriggerStatus};

/// The `type` suffixes, one per kind of error. Clients may match on them.
pub mod kinds {
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not-found";
    pub const METHOD_NOT_ALLOWED: &str = "method-not-allowed";
    pub const PAYLOAD_TOO_LARGE: &str = "payload-too-large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported-media-type";
    pub const MALFORMED_REQUEST: &str = "malformed-request";
    pub const INVALID_REQUEST: &str = "invalid-request";
    pub const IDEMPOTENCY_KEY_REUSED: &str = "idempotency-key-reused";
    pub const REQUEST_IN_PROGRESS: &str = "request-in-progress";
    pub const RATE_LIMITED: &str = "rate-limited";
    pub const CIRCLECI_RATE_LIMITED: &str = "circleci-rate-limited";
    pub const CIRCLECI_UNAVAILABLE: &str = "circleci-unavailable";
    pub const CIRCLECI_TIMEOUT: &str = "circleci-timeout";
    pub const CIRCLECI_REJECTED: &str = "circleci-rejected";
    pub const WORKFLOW_NOT_ACTIONABLE: &str = "workflow-not-actionable";
    pub const OUTCOME_UNKNOWN: &str = "outcome-unknown";
    pub const SERVICE_UNAVAILABLE: &str = "service-unavailable";
    pub const INTERNAL: &str = "internal";
}

// Documentation only: answers are built with `shared::http::Problem`; this is its shape
// with the extension members this API adds.
/// An RFC 9457 problem: what went wrong, and what a program can do about it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// `https://circleci-triggers.dev/problems/<kind>`; stable per kind of error.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
    /// Every violated rule (`invalid-request`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
    /// The trigger record of this request (also written for rejected requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trigger_id: Option<String>,
    /// The trigger, when the request got as far as CircleCI.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub trigger: Option<Box<TriggerView>>,
    /// Whether the same request may succeed later.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub retryable: Option<bool>,
    /// `true`: nothing was done, and this answer is stored under the Idempotency-Key, so a
    /// retry needs a new key. `false`: retry with the same key (it is safe).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub retry_with_new_key: Option<bool>,
}

/// How a failed trigger failed, read from its record (see [`classify_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    CircleCiRateLimited {
        retry_after: Option<Duration>,
    },
    CircleCiTimeout,
    CircleCiUnavailable,
    /// CircleCI refused (4xx): retrying the same request will not help.
    CircleCiRejected,
    /// The selection found no single workflow in the state the action needs.
    NotActionable,
    /// The request cannot be sent as built (caught before sending).
    Invalid,
    /// Our own configuration (token names, client setup) is wrong.
    Misconfigured,
    /// Trigger history could not be read while acting.
    StoreUnavailable,
}

/// Classifies a failure by the text the engine recorded (`ActionError`'s Display). The
/// unit tests pin every variant, so a changed message fails a test instead of a mapping.
pub fn classify_failure(reason: &str) -> FailureClass {
    let starts = |prefix: &str| reason.starts_with(prefix);
    if starts("rate limited by CircleCI") {
        FailureClass::CircleCiRateLimited {
            retry_after: retry_after_in(reason),
        }
    } else if starts("CircleCI call timed out") {
        FailureClass::CircleCiTimeout
    } else if starts("CircleCI server error")
        || starts("could not reach CircleCI")
        || starts("unexpected response from CircleCI")
    {
        FailureClass::CircleCiUnavailable
    } else if starts("CircleCI token `") {
        if reason.contains("(will retry)") {
            FailureClass::CircleCiUnavailable
        } else {
            FailureClass::Misconfigured
        }
    } else if starts("CircleCI rejected")
        || starts("CircleCI denied access")
        || starts("not found on CircleCI")
    {
        FailureClass::CircleCiRejected
    } else if starts("invalid CircleCI request")
        || starts("invalid target:")
        || starts("invalid action:")
    {
        FailureClass::Invalid
    } else if starts("CircleCI client configuration") {
        FailureClass::Misconfigured
    } else if starts("no match:")
        || reason.contains(" workflows match (")
        || starts("no job `")
        || starts("approval job `")
        || starts("workflow `")
    {
        FailureClass::NotActionable
    } else if starts("trigger history unavailable") || starts("not sent:") {
        FailureClass::StoreUnavailable
    } else {
        FailureClass::CircleCiUnavailable
    }
}

/// `... (retry after 30s)` → 30 s.
fn retry_after_in(reason: &str) -> Option<Duration> {
    let (_, rest) = reason.split_once("(retry after ")?;
    let seconds: f64 = rest.split_once('s')?.0.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.ceil()))
}

/// An error answer of the HTTP edge: a call the trigger API refused, or a request the edge
/// could not read as a call at all.
#[derive(Debug, Clone)]
pub enum ApiError {
    Call(CallError),
    MethodNotAllowed { allow: &'static str },
    PayloadTooLarge { limit: usize },
    UnsupportedMediaType,
    Malformed { reason: String },
}

impl From<CallError> for ApiError {
    fn from(error: CallError) -> Self {
        ApiError::Call(error)
    }
}

/// A problem answer plus the headers it needs.
pub struct ProblemResponse {
    pub problem: Problem,
    pub allow: Option<&'static str>,
}

impl IntoResponse for ProblemResponse {
    fn into_response(self) -> Response {
        let mut response = self.problem.into_response();
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(ALLOW, axum::http::HeaderValue::from_static(allow));
        }
        response
    }
}

fn seconds(duration: Duration) -> u64 {
    duration.as_secs_f64().ceil().max(1.0) as u64
}

impl ApiError {
    /// The problem kind (suffix of `type`).
    pub fn kind(&self) -> &'static str {
        self.shape().1
    }

    pub fn status(&self) -> StatusCode {
        self.shape().0
    }

    fn shape(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Call(CallError::Unauthorized) => (
                StatusCode::UNAUTHORIZED,
                kinds::UNAUTHORIZED,
                "Unauthorized",
            ),
            ApiError::Call(CallError::Forbidden { .. }) => (
                StatusCode::FORBIDDEN,
                kinds::FORBIDDEN,
                "Not allowed for this client",
            ),
            ApiError::Call(CallError::EndpointNotFound)
            | ApiError::Call(CallError::TriggerNotFound) => {
                (StatusCode::NOT_FOUND, kinds::NOT_FOUND, "Not found")
            }
            ApiError::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                kinds::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ),
            ApiError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                kinds::PAYLOAD_TOO_LARGE,
                "Request body too large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                kinds::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            ApiError::Malformed { .. } => (
                StatusCode::BAD_REQUEST,
                kinds::MALFORMED_REQUEST,
                "Malformed request",
            ),
            ApiError::Call(CallError::Invalid { .. }) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                kinds::INVALID_REQUEST,
                "The request breaks the endpoint's contract",
            ),
            ApiError::Call(CallError::IdempotencyKeyReused) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                kinds::IDEMPOTENCY_KEY_REUSED,
                "Idempotency-Key reused for a different request",
            ),
            ApiError::Call(CallError::InProgress { .. }) => (
                StatusCode::CONFLICT,
                kinds::REQUEST_IN_PROGRESS,
                "A request with this Idempotency-Key is in progress",
            ),
            ApiError::Call(CallError::RateLimited { .. }) => (
                StatusCode::TOO_MANY_REQUESTS,
                kinds::RATE_LIMITED,
                "Too many requests from this client",
            ),
            ApiError::Call(CallError::Unavailable { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                kinds::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
            ),
            ApiError::Call(CallError::Internal { .. }) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                kinds::INTERNAL,
                "Internal error",
            ),
            ApiError::Call(CallError::Outcome { record, .. }) => outcome_shape(record),
        }
    }

    /// The reason kept on the audit record of a rejected request.
    pub fn audit_reason(&self) -> String {
        let mut reason = match self {
            ApiError::Call(CallError::Unauthorized) => {
                "unauthorized: unknown client or wrong key".to_owned()
            }
            ApiError::Call(CallError::Forbidden { endpoint }) => {
                format!("forbidden: the client may not call endpoint `{endpoint}`")
            }
            ApiError::Call(CallError::EndpointNotFound) => "no such endpoint".to_owned(),
            ApiError::Call(CallError::Invalid { errors }) => {
                let listed: Vec<String> = errors.iter().take(10).map(FieldError::summary).collect();
                format!("invalid request: {}", listed.join("; "))
            }
            other => format!("{}: {}", other.kind(), other.detail()),
        };
        if reason.chars().count() > 1000 {
            reason = reason.chars().take(1000).collect::<String>() + "…";
        }
        reason
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Call(CallError::Unauthorized) => {
                "send `Authorization: Bearer <client>.<secret>` with a current key of a configured client".into()
            }
            ApiError::Call(CallError::Forbidden { endpoint }) => {
                format!("this client is not allowed to use endpoint `{endpoint}`")
            }
            ApiError::Call(CallError::EndpointNotFound) => "no endpoint of that name".into(),
            ApiError::Call(CallError::TriggerNotFound) => "no trigger of that id among this client's endpoints".into(),
            ApiError::MethodNotAllowed { allow } => format!("this route accepts {allow}"),
            ApiError::PayloadTooLarge { limit } => {
                format!("the body must be at most {limit} bytes")
            }
            ApiError::UnsupportedMediaType => {
                "send the body as `Content-Type: application/json`".into()
            }
            ApiError::Malformed { reason } => reason.clone(),
            ApiError::Call(CallError::Invalid { errors }) => format!(
                "{} problem(s); see `errors`",
                errors.len()
            ),
            ApiError::Call(CallError::IdempotencyKeyReused) => {
                "this Idempotency-Key was used for a request with another endpoint, ref, parameters or selection; use a new key for a new request".into()
            }
            ApiError::Call(CallError::InProgress { retry_after }) => format!(
                "retry with the same Idempotency-Key after {}s to get its answer",
                seconds(*retry_after)
            ),
            ApiError::Call(CallError::RateLimited { retry_after }) => format!(
                "this client's request rate is used up; retry after {}s",
                seconds(*retry_after)
            ),
            ApiError::Call(CallError::Unavailable { reason, retry_after }) => format!(
                "{reason}; nothing was triggered, retry with the same Idempotency-Key after {}s",
                seconds(*retry_after)
            ),
            ApiError::Call(CallError::Internal { .. }) => "the error was logged; nothing was triggered".into(),
            ApiError::Call(CallError::Outcome { record, .. }) => outcome_detail(record),
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.shape();
        let mut problem = Problem::new(status, kind, title).with_detail(self.detail());
        match self {
            ApiError::Call(CallError::Invalid { errors }) => {
                problem = problem
                    .with_extension("errors", serde_json::to_value(errors).unwrap_or_default());
            }
            ApiError::Call(CallError::InProgress { retry_after })
            | ApiError::Call(CallError::RateLimited { retry_after })
            | ApiError::Call(CallError::Unavailable { retry_after, .. }) => {
                problem = problem
                    .with_retry_after(seconds(*retry_after))
                    .with_extension("retryable", true.into());
            }
            ApiError::Call(CallError::Outcome { record, view }) => {
                let retryable = record.detail.retryable.unwrap_or(false);
                problem = problem
                    .with_extension("trigger_id", record.id.to_string().into())
                    .with_extension(
                        "trigger",
                        serde_json::to_value(view.as_ref()).unwrap_or_default(),
                    )
                    .with_extension("retryable", retryable.into())
                    .with_extension(
                        "retry_with_new_key",
                        (record.status == TriggerStatus::Failed && retryable).into(),
                    );
                if let TriggerStatus::Failed = record.status
                    && let FailureClass::CircleCiRateLimited { retry_after } =
                        classify_failure(record.reason.as_deref().unwrap_or_default())
                {
                    problem = problem
                        .with_retry_after(seconds(retry_after.unwrap_or(Duration::from_secs(60))));
                }
            }
            _ => {}
        }
        problem
    }

    /// The answer, with the audit record's id when one was written.
    pub fn response(&self, audit: Option<TriggerId>) -> Response {
        let mut problem = self.problem();
        if let Some(id) = audit {
            problem = problem.with_extension("trigger_id", id.to_string().into());
        }
        let allow = match self {
            ApiError::MethodNotAllowed { allow } => Some(*allow),
            _ => None,
        };
        ProblemResponse { problem, allow }.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.response(None)
    }
}

fn outcome_shape(record: &TriggerRecord) -> (StatusCode, &'static str, &'static str) {
    match record.status {
        TriggerStatus::Ambiguous => (
            StatusCode::BAD_GATEWAY,
            kinds::OUTCOME_UNKNOWN,
            "CircleCI may or may not have acted",
        ),
        _ => match classify_failure(record.reason.as_deref().unwrap_or_default()) {
            FailureClass::CircleCiRateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                kinds::CIRCLECI_RATE_LIMITED,
                "CircleCI is rate limiting",
            ),
            FailureClass::CircleCiTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                kinds::CIRCLECI_TIMEOUT,
                "CircleCI did not answer in time",
            ),
            FailureClass::CircleCiUnavailable => (
                StatusCode::BAD_GATEWAY,
                kinds::CIRCLECI_UNAVAILABLE,
                "CircleCI is unavailable",
            ),
            FailureClass::CircleCiRejected => (
                StatusCode::BAD_GATEWAY,
                kinds::CIRCLECI_REJECTED,
                "CircleCI refused the request",
            ),
            FailureClass::NotActionable => (
                StatusCode::CONFLICT,
                kinds::WORKFLOW_NOT_ACTIONABLE,
                "No single workflow to act on",
            ),
            FailureClass::Invalid => (
                StatusCode::UNPROCESSABLE_ENTITY,
                kinds::INVALID_REQUEST,
                "The request cannot be sent to CircleCI",
            ),
            FailureClass::Misconfigured => (
                StatusCode::INTERNAL_SERVER_ERROR,
                kinds::INTERNAL,
                "The service is misconfigured",
            ),
            FailureClass::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                kinds::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
            ),
        },
    }
}

fn outcome_detail(record: &TriggerRecord) -> String {
    let reason = record.reason.as_deref().unwrap_or("no reason recorded");
    match record.status {
        TriggerStatus::Ambiguous => format!(
            "{reason}. Do not retry with a new Idempotency-Key: an operator reconciles trigger {}; \
             retrying with the same key returns this answer",
            record.id
        ),
        _ => {
            let retryable = record.detail.retryable.unwrap_or(false);
            if retryable {
                format!(
                    "{reason}. Nothing was done on CircleCI; this answer is stored under the \
                     Idempotency-Key, so retry with a new key"
                )
            } else {
                format!("{reason}. Nothing was done on CircleCI; retrying will not help")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::actions::ActionError;
    use crate::circleci::{CircleCiError, JobStatus, WorkflowStatus};
    use crate::secrets::{SecretKind, SecretsError};

    fn class(error: impl Into<ActionError>) -> FailureClass {
        classify_failure(&error.into().to_string())
    }

    #[test]
    fn every_circleci_error_maps_to_a_class() {
        let cases: Vec<(CircleCiError, FailureClass)> = vec![
            (
                CircleCiError::RateLimited {
                    retry_after: Some(Duration::from_secs(30)),
                },
                FailureClass::CircleCiRateLimited {
                    retry_after: Some(Duration::from_secs(30)),
                },
            ),
            (
                CircleCiError::RateLimited { retry_after: None },
                FailureClass::CircleCiRateLimited { retry_after: None },
            ),
            (
                CircleCiError::Timeout { what: "x".into() },
                FailureClass::CircleCiTimeout,
            ),
            (
                CircleCiError::Server {
                    status: 503,
                    message: "down".into(),
                },
                FailureClass::CircleCiUnavailable,
            ),
            (
                CircleCiError::Transport {
                    message: "reset".into(),
                },
                FailureClass::CircleCiUnavailable,
            ),
            (
                CircleCiError::UnexpectedResponse {
                    status: 200,
                    message: "?".into(),
                },
                FailureClass::CircleCiUnavailable,
            ),
            (
                CircleCiError::Unauthorized {
                    token: "default".into(),
                    message: "no".into(),
                },
                FailureClass::CircleCiRejected,
            ),
            (
                CircleCiError::Forbidden {
                    message: "no".into(),
                },
                FailureClass::CircleCiRejected,
            ),
            (
                CircleCiError::NotFound {
                    message: "project".into(),
                },
                FailureClass::CircleCiRejected,
            ),
            (
                CircleCiError::BadRequest {
                    status: 400,
                    message: "Branch not found".into(),
                },
                FailureClass::CircleCiRejected,
            ),
            (
                CircleCiError::InvalidRequest { reason: "x".into() },
                FailureClass::Invalid,
            ),
            (
                CircleCiError::Configuration { reason: "x".into() },
                FailureClass::Misconfigured,
            ),
            (
                CircleCiError::Token {
                    token: "default".into(),
                    source: SecretsError::Unavailable {
                        kind: SecretKind::CircleCiTokens,
                        message: "throttled".into(),
                    },
                },
                FailureClass::CircleCiUnavailable,
            ),
            (
                CircleCiError::Token {
                    token: "deployer".into(),
                    source: SecretsError::UnknownToken {
                        name: "deployer".into(),
                    },
                },
                FailureClass::Misconfigured,
            ),
        ];
        for (error, expected) in cases {
            let text = error.to_string();
            assert_eq!(class(error), expected, "{text}");
        }
    }

    #[test]
    fn every_action_error_maps_to_a_class() {
        let workflow = Uuid::from_u128(1);
        let cases: Vec<(ActionError, FailureClass)> = vec![
            (
                ActionError::InvalidTarget { reason: "x".into() },
                FailureClass::Invalid,
            ),
            (
                ActionError::InvalidAction { reason: "x".into() },
                FailureClass::Invalid,
            ),
            (
                ActionError::NoMatch { what: "x".into() },
                FailureClass::NotActionable,
            ),
            (
                ActionError::SeveralMatches {
                    what: "x".into(),
                    candidates: vec![workflow, Uuid::from_u128(2)],
                },
                FailureClass::NotActionable,
            ),
            (
                ActionError::JobNotFound {
                    job: "hold".into(),
                    workflow: "deploy".into(),
                },
                FailureClass::NotActionable,
            ),
            (
                ActionError::JobNotOnHold {
                    job: "hold".into(),
                    workflow: "deploy".into(),
                    workflow_id: workflow,
                    status: JobStatus::Success,
                },
                FailureClass::NotActionable,
            ),
            (
                ActionError::WorkflowState {
                    workflow: "deploy".into(),
                    workflow_id: workflow,
                    status: WorkflowStatus::Running,
                    reason: "still running",
                },
                FailureClass::NotActionable,
            ),
            (
                ActionError::Ledger(crate::store::StoreError::Unavailable {
                    message: "x".into(),
                }),
                FailureClass::StoreUnavailable,
            ),
            (
                ActionError::Guard(crate::store::StoreError::Unavailable {
                    message: "x".into(),
                }),
                FailureClass::StoreUnavailable,
            ),
        ];
        for (error, expected) in cases {
            let text = error.to_string();
            assert_eq!(classify_failure(&text), expected, "{text}");
        }
    }

    #[test]
    fn invalid_requests_list_their_errors_and_limits_carry_retry_after() {
        let error = ApiError::Call(CallError::Invalid {
            errors: vec![FieldError::body("/branch", "nope")],
        });
        let response = error.response(Some(TriggerId::from_uuid(Uuid::from_u128(9))));
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let limited = ApiError::Call(CallError::RateLimited {
            retry_after: Duration::from_millis(1500),
        })
        .into_response();
        assert_eq!(limited.headers()["retry-after"], "2");
        let method = ApiError::MethodNotAllowed { allow: "POST" }.into_response();
        assert_eq!(method.headers()["allow"], "POST");
    }
}
