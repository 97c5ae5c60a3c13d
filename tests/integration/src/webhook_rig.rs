//! The webhook path as the rule tests drive it: the real acceptor over an embedded queue,
//! and the real worker settling what it queued **before** the HTTP answer goes back.
//!
//! In production the acceptor answers `202` and the worker settles later (SQS, or
//! `serve`'s loop). The rule tests (matching, actions, fan-in, trust, the closed loop) want
//! to read what a delivery decided from its answer, as CircleCI's simulator records it, so
//! this layer waits for the worker and reports its settlement in the status codes a
//! synchronous receiver would give:
//!
//! | settlement                      | answer                                     |
//! |---------------------------------|--------------------------------------------|
//! | settled                         | 200 + the delivery report                  |
//! | retry, with a report            | 503 `redeliver` + Retry-After + `report`   |
//! | retry after a store/CircleCI error | 503 `unavailable` + Retry-After         |
//! | failed                          | 500 `internal` (+ `report`)                |
//!
//! Refusals by the acceptor (401, 400, 413, 503) pass through as they are, with the
//! acceptor's own status in `x-acceptor-status` on every answer. The acceptance itself
//! (`202`, nothing done before the worker runs) is tested without this layer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::clock::Clock;
use shared::http::Problem;
use shared::secrets::Secrets;
use shared::triggers::chained::queue::Settlement;
use shared::triggers::chained::queue::embedded::{EmbeddedWorker, SqliteDeliveryQueue};
use shared::triggers::chained::{AcceptorSettings, Receiver, WebhookAcceptor, function_router};
use tokio::sync::Mutex;

/// The header carrying the acceptor's own status.
pub const ACCEPTOR_STATUS: &str = "x-acceptor-status";

/// The acceptor, its queue and the worker, wired as `serve` wires them.
#[derive(Clone)]
pub struct SettlingWebhooks {
    pub queue: SqliteDeliveryQueue,
    pub worker: EmbeddedWorker,
    /// What became of each delivery a drain settled, by queue id (a concurrent request's
    /// drain may have settled ours).
    settled: Arc<Mutex<HashMap<String, Response>>>,
}

impl SettlingWebhooks {
    pub fn new(receiver: Arc<Receiver>, clock: Arc<dyn Clock>) -> Self {
        let queue = SqliteDeliveryQueue::in_memory(clock).expect("an in-memory queue opens");
        Self::over(queue, receiver)
    }

    /// Over a queue that outlives this process (as SQS outlives a Lambda environment).
    pub fn over(queue: SqliteDeliveryQueue, receiver: Arc<Receiver>) -> Self {
        Self {
            worker: EmbeddedWorker::new(queue.clone(), receiver),
            queue,
            settled: Arc::default(),
        }
    }

    /// The `webhooks` function's router over this queue, settling before it answers.
    pub fn router(
        &self,
        secrets: Arc<dyn Secrets>,
        clock: Arc<dyn Clock>,
        settings: AcceptorSettings,
    ) -> Router {
        self.accepting_router(secrets, clock, settings)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                settle_before_answering,
            ))
    }

    /// The `webhooks` function's router over this queue as it runs in production: it
    /// answers once the delivery is queued; nothing is settled until [`Self::worker`] runs.
    pub fn accepting_router(
        &self,
        secrets: Arc<dyn Secrets>,
        clock: Arc<dyn Clock>,
        settings: AcceptorSettings,
    ) -> Router {
        let acceptor = WebhookAcceptor::new(secrets, Arc::new(self.queue.clone()), clock)
            .with_settings(settings);
        function_router(Arc::new(acceptor))
    }

    /// Settles what is visible now; returns the answers by delivery id.
    async fn drain(&self) {
        let mut settled = self.settled.lock().await;
        let drained = self
            .worker
            .drain()
            .await
            .expect("the embedded queue drains");
        for (received, settlement) in drained {
            settled.insert(received.id, answer_for(&settlement));
        }
    }
}

async fn settle_before_answering(
    State(rig): State<SettlingWebhooks>,
    request: Request,
    next: Next,
) -> Response {
    let accepted = next.run(request).await;
    let status = accepted.status();
    let (parts, body) = accepted.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let queued = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|body| body["delivery"].as_str().map(str::to_owned));
    let acceptor_status = HeaderValue::from(status.as_u16());
    let Some(id) = queued else {
        let mut response = Response::from_parts(parts, Body::from(bytes));
        response
            .headers_mut()
            .insert(ACCEPTOR_STATUS, acceptor_status);
        return response;
    };
    rig.drain().await;
    let settled = rig.settled.lock().await.remove(&id);
    let mut response = match (status, settled) {
        // A stale event: its rejected rows are recorded; the acceptor's 400 stands.
        (StatusCode::ACCEPTED, Some(answer)) => answer,
        (_, _) => Response::from_parts(parts, Body::from(bytes)),
    };
    response
        .headers_mut()
        .insert(ACCEPTOR_STATUS, acceptor_status);
    response
}

fn answer_for(settlement: &Settlement) -> Response {
    let report = settlement
        .report()
        .map(|report| serde_json::to_value(report).unwrap_or_default());
    match (settlement, report) {
        (Settlement::Settled(_), Some(report)) => {
            (StatusCode::OK, axum::Json(report)).into_response()
        }
        (Settlement::Retry { after, .. }, Some(report)) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "redeliver",
            "Not everything was decided",
        )
        .with_retry_after(after.as_secs().max(1))
        .with_extension("report", report)
        .into_response(),
        (Settlement::Retry { after, reason, .. }, None) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
        )
        .with_detail(reason.clone())
        .with_retry_after(after.as_secs().max(1))
        .into_response(),
        (_, report) => {
            let mut problem = Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "An action could not be decided",
            );
            if let Some(report) = report {
                problem = problem.with_extension("report", report);
            }
            problem.into_response()
        }
    }
}
