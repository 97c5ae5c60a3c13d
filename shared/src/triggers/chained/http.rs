//! `POST /webhooks/circleci`: the HTTP edge of the receiver, and how every outcome maps
//! to a status CircleCI understands (2xx: done, do not resend; anything else: resend).
//!
//! | outcome                                    | status | body                        |
//! |--------------------------------------------|--------|-----------------------------|
//! | body larger than the limit                 | 413    | problem+json                |
//! | signature missing / malformed / wrong / v2 only | 401 | problem+json without detail |
//! | no signing secret configured               | 500    | problem+json                |
//! | secrets store unreachable                  | 503    | problem+json + Retry-After  |
//! | body is not a usable event                 | 400    | problem+json naming the field |
//! | `happened_at` outside the replay window    | 400    | problem+json (rows recorded) |
//! | everything decided (or a duplicate)        | 200    | the delivery report         |
//! | a claim in progress / retryable failure / deadline | 503 | problem+json + Retry-After |
//! | a failure no redelivery is known to fix    | 500    | problem+json                |

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::SecretString;
use tracing::Instrument;

use super::{DeliveryReport, Receiver, ReceiverError};
use crate::http::Problem;
use crate::secrets::{SecretKind, SecretsError};
use crate::triggers::chained::webhook::{
    EventError, SIGNATURE_HEADER, SignatureError, parse_event, verify_signature,
};

/// Where CircleCI delivers.
pub const WEBHOOK_PATH: &str = "/webhooks/circleci";

/// The metric counting deliveries refused for their signature (the template alarms on it).
pub const SIGNATURE_FAILURE_METRIC: &str = "WebhookSignatureFailures";

/// Seconds CircleCI is asked to wait when the deadline passed with work still running.
const DEADLINE_RETRY_AFTER: u64 = 10;

/// The receiver's routes. Merge it with others and add
/// [`crate::http::with_problem_fallbacks`] around the result.
/// Everything the `chained` function serves — the webhook route, `GET /healthz` and
/// problem+json for unknown routes and methods — composed once for the Lambda and its tests.
pub fn function_router(receiver: Arc<Receiver>) -> Router {
    crate::http::with_problem_fallbacks(
        webhook_router(receiver).merge(crate::http::health_router()),
    )
}

pub fn webhook_router(receiver: Arc<Receiver>) -> Router {
    let limit = receiver.settings.max_body_bytes;
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(receiver)
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_problem(&rejection, receiver.settings.max_body_bytes),
    };

    // Nothing is parsed before the signature is verified.
    if let Err(refusal) = verify(&receiver, &headers, &body).await {
        return refusal.into_response();
    }

    let event = match parse_event(&body) {
        Ok(event) => event,
        Err(error) => return event_problem(&error),
    };
    let span = tracing::info_span!(
        "webhook",
        event_id = %event.id(),
        event_type = event.kind().as_str(),
        project = %event.project_slug(),
        pipeline_id = %event.pipeline().id,
    );
    let deadline = receiver.settings.deadline;
    let now = receiver.engine.clock().now();
    if let Err(replay) = event.check_replay_window(now, &receiver.settings.replay_window) {
        let reason = format!("the delivery was refused: {replay}");
        tracing::warn!(parent: &span, %replay, "stale webhook event refused");
        let task = {
            let receiver = receiver.clone();
            async move { receiver.reject_stale(&event, &reason).await }
        };
        return match within(deadline, task.instrument(span)).await {
            Ok(Ok(report)) if !report.actions.is_empty() && report.only_replays() => {
                // Every decision it could cause was made before: a late duplicate.
                (StatusCode::OK, axum::Json(report)).into_response()
            }
            Ok(Ok(report)) => Problem::new(
                StatusCode::BAD_REQUEST,
                "stale-event",
                "Stale webhook event",
            )
            .with_detail(replay.to_string())
            .with_extension("recorded", serde_json::json!(report.actions))
            .into_response(),
            Ok(Err(error)) => receiver_problem(&error),
            Err(unfinished) => unfinished.into_response(),
        };
    }

    let task = {
        let receiver = receiver.clone();
        async move { receiver.process(&event).await }
    };
    match within(deadline, task.instrument(span)).await {
        Ok(Ok(report)) => report_response(report),
        Ok(Err(error)) => receiver_problem(&error),
        Err(unfinished) => unfinished.into_response(),
    }
}

/// Why a delivery was refused before its body was read.
enum Refusal {
    Signature(SignatureError),
    SecretsUnavailable,
    NotConfigured,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Signature(error) => {
                // Logged for us; the sender learns nothing about which check failed.
                tracing::warn!(reason = %error, "webhook signature refused");
                crate::telemetry::emit_metric(SIGNATURE_FAILURE_METRIC, 1.0, &[]);
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                    .into_response()
            }
            Refusal::SecretsUnavailable => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "secrets-unavailable",
                "Signing secrets unavailable",
            )
            .with_detail("the webhook signing secrets could not be read; deliver again later")
            .with_retry_after(30)
            .into_response(),
            Refusal::NotConfigured => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "not-configured",
                "Receiver not configured",
            )
            .with_detail("no webhook signing secret is configured")
            .into_response(),
        }
    }
}

/// Verifies `circleci-signature` against every configured secret. A signature that
/// matches none re-reads the secrets once (rate-limited), so a secret added during a
/// rotation is picked up before its cache expires.
async fn verify(receiver: &Receiver, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let header = match headers.get(SIGNATURE_HEADER).map(|value| value.to_str()) {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(_)) => return Err(Refusal::Signature(SignatureError::Malformed)),
    };
    let secrets = signing_secrets(receiver).await?;
    match verify_signature(header, body, &secrets) {
        Err(SignatureError::Mismatch) if receiver.may_refresh_secrets() => {
            receiver
                .secrets
                .refresh(SecretKind::WebhookSigningSecrets)
                .await;
            let secrets = signing_secrets(receiver).await?;
            check(verify_signature(header, body, &secrets))
        }
        other => check(other),
    }
}

fn check(result: Result<(), SignatureError>) -> Result<(), Refusal> {
    match result {
        Ok(()) => Ok(()),
        Err(SignatureError::NoSecrets) => Err(Refusal::NotConfigured),
        Err(error) => Err(Refusal::Signature(error)),
    }
}

async fn signing_secrets(receiver: &Receiver) -> Result<Vec<SecretString>, Refusal> {
    receiver
        .secrets
        .webhook_signing_secrets()
        .await
        .map_err(|error: SecretsError| {
            tracing::error!(%error, "webhook signing secrets unavailable");
            if error.is_retryable() {
                Refusal::SecretsUnavailable
            } else {
                Refusal::NotConfigured
            }
        })
}

/// Work that did not produce an answer.
enum Unfinished {
    Deadline,
    Panicked,
}

impl IntoResponse for Unfinished {
    fn into_response(self) -> Response {
        match self {
            Unfinished::Deadline => {
                tracing::warn!("webhook not finished within the deadline; asking for a redelivery");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "deadline",
                    "Not finished in time",
                )
                .with_detail(
                    "the event is still being processed; deliver it again (duplicates are safe)",
                )
                .with_retry_after(DEADLINE_RETRY_AFTER)
                .into_response()
            }
            Unfinished::Panicked => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            )
            .into_response(),
        }
    }
}

/// Runs `work` on its own task and waits at most `deadline` for it. Work still running at
/// the deadline is not cancelled (cancelling could cut a create request in half); it keeps
/// going while the runtime lets it, and the claims make the redelivery safe.
async fn within<T, F>(deadline: Duration, work: F) -> Result<T, Unfinished>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let task = tokio::spawn(work);
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::error!(%error, "webhook processing panicked");
            Err(Unfinished::Panicked)
        }
        Err(_) => Err(Unfinished::Deadline),
    }
}

fn report_response(report: DeliveryReport) -> Response {
    tracing::info!(
        actions = report.actions.len(),
        joins = report.joins.len(),
        closed_loop = report.closed_loop.is_some(),
        "webhook processed"
    );
    if let Some(wait) = report.redeliver_after() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "redeliver",
            "Not everything was decided",
        )
        .with_detail("an action is in progress elsewhere or failed in a way a redelivery may fix")
        .with_retry_after(wait.as_secs().max(1))
        .with_extension("report", serde_json::to_value(&report).unwrap_or_default())
        .into_response();
    }
    if report.has_errors() {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "An action could not be decided",
        )
        .with_extension("report", serde_json::to_value(&report).unwrap_or_default())
        .into_response();
    }
    (StatusCode::OK, axum::Json(report)).into_response()
}

fn receiver_problem(error: &ReceiverError) -> Response {
    tracing::warn!(%error, retryable = error.is_retryable(), "webhook not processed");
    if error.is_retryable() {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
        )
        .with_detail("trigger history or CircleCI is unavailable; deliver again later")
        .with_retry_after(30)
        .into_response()
    } else {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
        .into_response()
    }
}

fn body_problem(rejection: &BytesRejection, limit: usize) -> Response {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Problem::new(status, "payload-too-large", "Payload too large")
            .with_detail(format!(
                "webhook bodies of at most {limit} bytes are accepted"
            ))
            .into_response();
    }
    Problem::new(status, "invalid-body", "Unreadable body")
        .with_detail(rejection.body_text())
        .into_response()
}

fn event_problem(error: &EventError) -> Response {
    let status = match error {
        EventError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut problem = Problem::new(status, "invalid-event", "Invalid webhook event")
        .with_detail(error.to_string());
    if let Some(path) = error.path() {
        problem = problem.with_extension("field", serde_json::json!(path));
    }
    problem.into_response()
}
