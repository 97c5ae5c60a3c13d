//! The webhook receiver: CircleCI's signed `workflow-completed` / `job-completed` deliveries
//! turned into chained triggers, fan-in joins and closed-loop outcomes.
//!
//! ```text
//! POST /webhooks/circleci                                  (the `webhooks` function)
//!   ├─ body > limit ───────────────▶ 413
//!   ├─ signature (v1, any secret) ─▶ 401, no detail (+ WebhookSignatureFailures metric)
//!   ├─ parse ──────────────────────▶ 400 naming the field
//!   ├─ replay window ──────────────▶ queued as refused ▶ 400 (the worker records `rejected` rows)
//!   └─ queued durably (SQS / SQLite) ▶ 202; the queue unavailable ▶ 503 + Retry-After
//! worker, per queued delivery                                (the `chained` function / serve)
//!        upstream = history.find_by_pipeline(event.pipeline)     origin, upstream trigger id
//!        trust: `upstream = "ours"` needs that record; unpinned exposed actions ─▶ `rejected` row
//!        when-rules → one claim per (event, rule, action index) → Engine::fire
//!        fan-in     → JoinStore::join_arrive → fires once per join generation
//!        closed loop: the pipeline is ours → record the workflow outcome (+ pipeline_final)
//!      any retryable failure or in-progress claim ─▶ back to the queue after its delay
//!      (the claims make the retry safe); otherwise the delivery is settled.
//! ```
//!
//! The modules: [`webhook`] (CircleCI's payloads and the v1 signature), [`rules`] (matching,
//! planning, fan-in joins), [`http`] (the acceptor's axum router and status mapping),
//! [`queue`] (durable acceptance: the queue port, SQS, the embedded queue, the worker), `dispatch`
//! (when-rules and the action each planned request becomes), `trust` (whether the upstream
//! may drive the action), `fanin` and `closed_loop`. The CLI's dry run and webhook setup
//! live in [`crate::operator`].

mod closed_loop;
mod dispatch;
pub(crate) mod fanin;
pub mod http;
pub mod queue;
pub mod rules;
mod trust;
pub mod webhook;

use std::time::Duration;

use serde::Serialize;

use crate::config::{CircleCiSettings, TriggersFile};
use crate::engine::{Engine, EngineError};
use crate::store::{StoreError, TriggerId, TriggerStatus};
use crate::triggers::chained::rules::{ChainRules, ChainRulesError};
use crate::triggers::chained::webhook::{MAX_BODY_BYTES, ReplayWindow, WebhookEvent};

pub use dispatch::{action_for, selection_of};
pub use fanin::{join_key, upstream_name};
pub use http::{WEBHOOK_PATH, WebhookAcceptor, function_router, webhook_router};

/// Tunables of the webhook edge ([`WebhookAcceptor`]).
#[derive(Debug, Clone)]
pub struct AcceptorSettings {
    /// Events older than this (or too far in the future) are rejected.
    pub replay_window: ReplayWindow,
    /// Largest body read; larger ones are answered 413 before anything else.
    pub max_body_bytes: usize,
    /// A signature that matches no cached secret re-reads the secrets at most this often
    /// (a rotation shows up at once without letting forged requests hammer the store).
    pub secret_refresh_interval: Duration,
}

impl Default for AcceptorSettings {
    fn default() -> Self {
        Self {
            replay_window: ReplayWindow::default(),
            max_body_bytes: MAX_BODY_BYTES,
            secret_refresh_interval: Duration::from_secs(60),
        }
    }
}

/// What acts on verified deliveries: the chain rules over the engine. Build it once per
/// process (Lambda init, `serve`); the queue's worker calls it.
pub struct Receiver {
    engine: Engine,
    rules: ChainRules,
    circleci: CircleCiSettings,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("rules", &self.rules.specs().count())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Compiles the file's chain rules (a validated file always compiles).
    pub fn new(engine: Engine, triggers: &TriggersFile) -> Result<Self, ChainRulesError> {
        Ok(Self {
            engine,
            rules: ChainRules::from_file(triggers)?,
            circleci: triggers.circleci.clone(),
        })
    }

    /// The receiver of a Lambda function (or `serve`) over its wired adapters.
    pub fn from_context(context: &crate::wiring::LambdaContext) -> Result<Self, ChainRulesError> {
        Self::new(context.engine.clone(), &context.triggers)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn rules(&self) -> &ChainRules {
        &self.rules
    }

    /// Acts on one verified, parsed event that is inside the replay window: chained
    /// actions, fan-in arrivals, the closed loop. Duplicates of an event do nothing new.
    pub async fn process(&self, event: &WebhookEvent) -> Result<DeliveryReport, ReceiverError> {
        let upstream = self
            .engine
            .store()
            .find_by_pipeline(&event.pipeline().id)
            .await?;
        let mut report = DeliveryReport::new(event);
        let paused = dispatch::paused_rules(self, event).await?;
        for matched in self.rules.matching(event) {
            let (rule, index) = (matched.rule.as_str(), matched.action_index);
            let outcome = match trust::action_refusal(self, rule, index, event, upstream.as_ref()) {
                Some(reason) => {
                    let status = TriggerStatus::Rejected;
                    let upstream = upstream.as_ref();
                    dispatch::record_without_action(self, event, upstream, &matched, status, reason)
                        .await
                }
                None => {
                    dispatch::run_matched(self, event, upstream.as_ref(), &paused, matched).await
                }
            };
            report.actions.push(outcome);
        }
        for arrival in self.rules.join_arrivals(event) {
            if let Some(reason) = trust::arrival_refusal(self, &arrival, event, upstream.as_ref()) {
                let rows =
                    fanin::reject_arrival(self, event, upstream.as_ref(), &arrival, &reason).await;
                report.actions.extend(rows);
                continue;
            }
            let (join, rows) =
                fanin::arrive(self, event, upstream.as_ref(), &paused, arrival).await?;
            report.joins.push(join);
            report.actions.extend(rows);
        }
        if let Some(record) = upstream {
            report.closed_loop = closed_loop::record_outcome(self, event, &record).await?;
        }
        Ok(report)
    }

    /// Records a `rejected` row for every action and join arrival a stale event would have
    /// caused (redeliveries of it replay the same rows). Returns what was decided.
    pub async fn reject_stale(
        &self,
        event: &WebhookEvent,
        reason: &str,
    ) -> Result<DeliveryReport, ReceiverError> {
        let upstream = self
            .engine
            .store()
            .find_by_pipeline(&event.pipeline().id)
            .await?;
        let mut report = DeliveryReport::new(event);
        for matched in self.rules.matching(event) {
            report.actions.push(
                dispatch::record_without_action(
                    self,
                    event,
                    upstream.as_ref(),
                    &matched,
                    TriggerStatus::Rejected,
                    reason.to_owned(),
                )
                .await,
            );
        }
        for arrival in self.rules.join_arrivals(event) {
            let rows =
                fanin::reject_arrival(self, event, upstream.as_ref(), &arrival, reason).await;
            report.actions.extend(rows);
        }
        Ok(report)
    }
}

/// A failure that stops the whole delivery (per-action failures are in the report).
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("CircleCI could not be read: {0}")]
    CircleCi(#[from] crate::circleci::CircleCiError),
}

impl ReceiverError {
    /// Whether a redelivery may succeed (answer 503 rather than 500).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReceiverError::Store(error) => error.is_retryable(),
            ReceiverError::Engine(error) => error.is_retryable(),
            ReceiverError::CircleCi(error) => error.is_retryable(),
        }
    }
}

/// What one delivery did; the body of the 2xx answer (and of a 503's `report` member).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    pub event_id: String,
    pub event_type: &'static str,
    /// Every history decision this delivery made or replayed (chained actions, join
    /// firings, rejected / skipped rows).
    pub actions: Vec<ActionReport>,
    /// Fan-in arrivals.
    pub joins: Vec<JoinReport>,
    /// The trigger record of the reported pipeline, when one of ours started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_loop: Option<ClosedLoopReport>,
}

impl DeliveryReport {
    fn new(event: &WebhookEvent) -> Self {
        Self {
            event_id: event.id().to_owned(),
            event_type: event.kind().as_str(),
            actions: Vec::new(),
            joins: Vec::new(),
            closed_loop: None,
        }
    }

    /// When CircleCI should deliver again: an action is in progress elsewhere or failed in
    /// a way a later attempt may fix. `None`: everything is decided.
    pub fn redeliver_after(&self) -> Option<Duration> {
        self.actions.iter().filter_map(|a| a.redeliver_after).max()
    }

    /// An action hit an error no redelivery is known to fix (answer 500 so it is seen).
    pub fn has_errors(&self) -> bool {
        self.actions
            .iter()
            .any(|a| a.disposition == Disposition::Error)
    }

    /// Whether every recorded decision was already there (a duplicate delivery).
    pub fn only_replays(&self) -> bool {
        self.actions
            .iter()
            .all(|a| a.disposition == Disposition::Replayed)
    }
}

/// How one action's claim was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// This delivery decided it (performed, skipped, rejected or failed: see `status`).
    Decided,
    /// Decided by an earlier delivery: nothing new was done.
    Replayed,
    /// Another invocation holds the claim right now.
    InProgress,
    /// The claim key belongs to a different request (never expected: logged).
    Conflict,
    /// The store or the engine failed; see `reason`.
    Error,
}

/// One history decision of a delivery.
#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    pub rule: String,
    /// Position in the rule's `then` list; `None` for a join's own rows (closed, expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_index: Option<usize>,
    pub key: String,
    pub disposition: Disposition,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<TriggerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<TriggerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when CircleCI should deliver the event again.
    #[serde(skip)]
    pub redeliver_after: Option<Duration>,
}

/// What one arrival did to its join.
#[derive(Debug, Clone, Serialize)]
pub struct JoinReport {
    pub rule: String,
    /// `after[i]`: which upstream of the rule this event completed.
    pub upstream: String,
    /// `<correlate>:<value>`; `None` when the event had nothing to correlate on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    pub state: JoinProgress,
    /// Upstreams still awaited.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinProgress {
    Waiting,
    /// This upstream had already arrived in this generation.
    Duplicate,
    /// Every upstream succeeded: the rule fired (this arrival or an earlier one).
    Complete,
    /// A failed upstream closed the join.
    Closed,
    /// The event has no value for the rule's correlation (recorded, joins nothing).
    Uncorrelated,
}

/// The closed loop's update of the reported pipeline's trigger record.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedLoopReport {
    pub trigger_id: TriggerId,
    pub workflow: String,
    pub status: String,
    pub pipeline_final: bool,
}

/// The claim key's text, for reports.
fn key_text(key: &crate::store::ClaimKey) -> String {
    key.as_str().to_owned()
}

#[cfg(test)]
mod tests;
