//! `POST /webhooks/circleci`: the HTTP edge of the receiver. It verifies, parses and
//! queues; it acts on nothing (see [`super::queue`]: the worker does, from the queue).
//!
//! | outcome                                    | status | body                        |
//! |--------------------------------------------|--------|-----------------------------|
//! | body larger than the limit                 | 413    | problem+json                |
//! | signature missing / malformed / wrong / v2 only | 401 | problem+json without detail |
//! | no signing secret configured               | 500    | problem+json                |
//! | secrets store unreachable                  | 503    | problem+json + Retry-After  |
//! | body is not a usable event                 | 400    | problem+json naming the field |
//! | `happened_at` outside the replay window    | 400    | problem+json (queued: the worker records `rejected` rows) |
//! | queued durably                             | 202    | `{event_id, event_type, delivery}` |
//! | the queue is unavailable                   | 503    | problem+json + Retry-After  |

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::SecretString;

use super::AcceptorSettings;
use super::queue::{AcceptedDelivery, DeliveryQueue, QueueError};
use crate::clock::Clock;
use crate::http::Problem;
use crate::secrets::{SecretKind, Secrets, SecretsError};
use crate::triggers::chained::webhook::{
    EventError, SIGNATURE_HEADER, SignatureError, WebhookEvent, parse_event, verify_signature,
};

/// Where CircleCI delivers.
pub const WEBHOOK_PATH: &str = "/webhooks/circleci";

/// The metric counting deliveries refused for their signature (the template alarms on it).
pub const SIGNATURE_FAILURE_METRIC: &str = "WebhookSignatureFailures";

/// Seconds CircleCI is asked to wait when the queue could not take a delivery.
const QUEUE_RETRY_AFTER: u64 = 10;

/// The webhook edge: signing secrets, the replay window and the queue. It holds no store
/// and no CircleCI token: in AWS its role may only read the signing secrets and send to
/// the queue.
pub struct WebhookAcceptor {
    secrets: Arc<dyn Secrets>,
    queue: Arc<dyn DeliveryQueue>,
    clock: Arc<dyn Clock>,
    settings: AcceptorSettings,
    last_secret_refresh: Mutex<Option<tokio::time::Instant>>,
}

impl std::fmt::Debug for WebhookAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAcceptor")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl WebhookAcceptor {
    pub fn new(
        secrets: Arc<dyn Secrets>,
        queue: Arc<dyn DeliveryQueue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            secrets,
            queue,
            clock,
            settings: AcceptorSettings::default(),
            last_secret_refresh: Mutex::new(None),
        }
    }

    pub fn with_settings(mut self, settings: AcceptorSettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn settings(&self) -> &AcceptorSettings {
        &self.settings
    }

    /// Whether the cached signing secrets may be re-read now (and notes that they are).
    fn may_refresh_secrets(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut last = self
            .last_secret_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now.duration_since(at) < self.settings.secret_refresh_interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

/// Everything the `webhooks` function serves — the webhook route, `GET /healthz` and
/// problem+json for unknown routes and methods — composed once for the Lambda and its tests.
pub fn function_router(acceptor: Arc<WebhookAcceptor>) -> Router {
    crate::http::with_problem_fallbacks(
        webhook_router(acceptor).merge(crate::http::health_router()),
    )
}

/// The receiver's route. Merge it with others and add
/// [`crate::http::with_problem_fallbacks`] around the result.
pub fn webhook_router(acceptor: Arc<WebhookAcceptor>) -> Router {
    let limit = acceptor.settings.max_body_bytes;
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(acceptor)
}

async fn receive(
    State(acceptor): State<Arc<WebhookAcceptor>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_problem(&rejection, acceptor.settings.max_body_bytes),
    };

    // Nothing is parsed before the signature is verified.
    if let Err(refusal) = verify(&acceptor, &headers, &body).await {
        return refusal.into_response();
    }

    let event = match parse_event(&body) {
        Ok(event) => event,
        Err(error) => return event_problem(&error),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        // parse_event accepted it as JSON, which is UTF-8; kept total anyway.
        return Problem::new(StatusCode::BAD_REQUEST, "invalid-body", "Unreadable body")
            .into_response();
    };
    let now = acceptor.clock.now();
    let replay = event.check_replay_window(now, &acceptor.settings.replay_window);
    let delivery = AcceptedDelivery {
        body: text.to_owned(),
        accepted_at: now,
        refused: replay
            .as_ref()
            .err()
            .map(|replay| format!("the delivery was refused: {replay}")),
    };
    let queued = match acceptor.queue.enqueue(&delivery).await {
        Ok(id) => id,
        Err(error) => return queue_problem(&event, &error),
    };
    match replay {
        Ok(()) => {
            tracing::info!(event_id = %event.id(), event_type = event.kind().as_str(),
                project = %event.project_slug(), delivery = %queued, "webhook queued");
            (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({
                    "event_id": event.id(),
                    "event_type": event.kind().as_str(),
                    "delivery": queued,
                })),
            )
                .into_response()
        }
        Err(replay) => {
            tracing::warn!(event_id = %event.id(), %replay, delivery = %queued,
                "stale webhook event refused (its rejected rows are queued)");
            Problem::new(
                StatusCode::BAD_REQUEST,
                "stale-event",
                "Stale webhook event",
            )
            .with_detail(replay.to_string())
            .with_extension("delivery", serde_json::json!(queued))
            .into_response()
        }
    }
}

fn queue_problem(event: &WebhookEvent, error: &QueueError) -> Response {
    tracing::error!(event_id = %event.id(), %error, "webhook not queued");
    match error {
        QueueError::Unavailable(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue-unavailable",
            "Temporarily unavailable",
        )
        .with_detail("the delivery could not be queued; deliver it again (duplicates are safe)")
        .with_retry_after(QUEUE_RETRY_AFTER)
        .into_response(),
        QueueError::Refused(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
        .into_response(),
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
async fn verify(
    receiver: &WebhookAcceptor,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
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

async fn signing_secrets(receiver: &WebhookAcceptor) -> Result<Vec<SecretString>, Refusal> {
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
