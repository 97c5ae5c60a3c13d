//! The trigger lifecycle: one code path that turns a logical trigger into exactly one
//! CircleCI side effect and a history row, whatever the entry point (schedule tick, webhook,
//! HTTP call, CLI).
//!
//! ```text
//! claim(key, fingerprint) ──won──▶ record `received` ──▶ mark SENDING ──▶ CircleCI ──▶ record outcome ──▶ complete claim
//!        │                                              (fenced; if it fails, nothing is sent)
//!        ├─completed──▶ replay the stored record
//!        ├─in progress─▶ tell the caller (HTTP: 409 + Retry-After; webhook: 5xx so CircleCI redelivers)
//!        ├─ambiguous───▶ adopt the claim and reconcile (resend only if a recheck finds nothing)
//!        └─conflict────▶ same key, different request
//! ```
//!
//! **One record per logical trigger.** The record id is derived from the claim key, so a
//! holder that takes over an expired lease (the first one crashed) finds and continues the
//! same record instead of leaving an orphan.
//!
//! **Retries.** A failure that CircleCI guarantees had no effect (rate limited past the
//! deadline, 5xx/timeout before sending, token unavailable) completes the claim with a
//! `failed` record carrying `retry_at` (schedules and chains only; an HTTP caller owns its
//! retries). [`Engine::retry`] makes the next attempt under its own claim
//! (`<key>#attempt<N>`), so a sweep and a redelivery racing for it perform it once.
//!
//! **Rechecks.** An ambiguous create (5xx, timeout or a dropped connection after the
//! request left) is reconciled at once. When reconciliation finds no pipeline, or cannot
//! look, a scheduled or chained record stays `ambiguous` with `retry_at` at the end of the
//! reconciliation window: the sweep then looks again over the same window, adopts what it
//! finds, and sends again only when there is still nothing, so a create CircleCI never
//! received is not lost and one it did receive is not duplicated. Several candidates always
//! go to an operator.
//!
//! **Truth after the send.** Once the claim is marked sending, no failure is reported as
//! "nothing happened": [`EngineError::OutcomeUnknown`]. A record is created with a
//! reconcile time (`retry_at` = creation + lease), so [`Engine::sweep`] re-drives any
//! record still `received` past its claim's lease: a `sending` claim is adopted and
//! reconciled (never resent without a look), an unsent schedule slot is performed, an
//! unsent HTTP call is recorded `failed`. A chain record is the exception
//! ([`SourceKind::redelivered`](crate::store::SourceKind::redelivered)): its delivery
//! stays queued until every trigger it caused is decided, and the next receive adopts
//! and reconciles the claim the same way; it enters the sweep only with a planned retry
//! or recheck.
//!
//! **Fencing.** Each action runs under one [`SendBudget`] shorter than the lease, and a
//! holder writes its outcome only after a fenced renew of its claim, so a holder frozen
//! past its lease neither sends nor overwrites whoever adopted its claim.

mod ledger;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Instrument;

use crate::actions::{
    Action, ActionError, ActionOutcome, Actions, CreateWindow, Reconciled, SendGuard,
};
use crate::circleci::SendBudget;
use crate::clock::Clock;
use crate::config::HistorySettings;
use crate::store::{
    ClaimGrant, ClaimKey, ClaimOutcome, ClaimResult, ClaimState, ClaimStore, Fingerprint,
    PipelineRef, RecordDetail, RetryPlan, SharedStore, StoreError, TriggerId, TriggerRecord,
    TriggerSource, TriggerStatus, Upstream, redact_parameters,
};

pub use ledger::StoreLedger;

/// Tunables of the lifecycle.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How long a claim is held before another invocation may take it over. Must exceed the
    /// longest function timeout plus a margin, so a live holder is never overtaken.
    pub lease: Duration,
    /// How long after an ambiguous create the recheck looks again (schedules and chains).
    /// At least `send_budget` + `clock_skew`, so a pipeline CircleCI made exists by then.
    pub reconcile_window: Duration,
    /// The deadline of one action, CircleCI calls included, from the start of the attempt:
    /// shorter than `lease`, so a holder never sends after its lease could have been taken
    /// over, and the upper bound of when an ambiguous create's pipeline can have been made.
    pub send_budget: Duration,
    /// How far CircleCI's clock may be from ours when matching `created_at`.
    pub clock_skew: Duration,
    /// Attempts (first try included) before a retryable failure is given up.
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt, capped at `max_retry_delay`.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// Which parameter values history must not keep.
    pub history: HistorySettings,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(120),
            reconcile_window: Duration::from_secs(120),
            send_budget: Duration::from_secs(60),
            clock_skew: Duration::from_secs(5),
            max_attempts: 5,
            retry_delay: Duration::from_secs(60),
            max_retry_delay: Duration::from_secs(3600),
            history: HistorySettings::default(),
        }
    }
}

/// One logical trigger, as an entry point describes it.
#[derive(Debug, Clone)]
pub struct TriggerIntent {
    /// The exactly-once key (schedule slot, webhook event + rule + action, client + Idempotency-Key, join).
    pub key: ClaimKey,
    /// A digest of the request; the same key with another fingerprint is a conflict.
    pub fingerprint: Fingerprint,
    pub source: TriggerSource,
    /// The root trigger this one descends from (chains); `None` makes it its own origin.
    pub origin: Option<TriggerId>,
    pub action: Action,
    pub upstream: Option<Upstream>,
    pub correlation: Option<String>,
    /// Source-specific facts kept on the record (slot, event id, client, ...).
    pub detail: Box<RecordDetail>,
}

/// What happened to an intent.
#[derive(Debug, Clone)]
pub enum Fired {
    /// This call decided the trigger; the record says how it ended.
    Performed(TriggerRecord),
    /// It had been decided before (duplicate delivery, replayed request): the stored record.
    Replayed(TriggerRecord),
    /// Another invocation holds the claim right now.
    InProgress { retry_after: Duration },
    /// The key belongs to a different request.
    Conflict,
}

impl Fired {
    pub fn record(&self) -> Option<&TriggerRecord> {
        match self {
            Fired::Performed(record) | Fired::Replayed(record) => Some(record),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A completed claim points at a record that is gone (expired or deleted).
    #[error("claim `{key}` is completed but its trigger record is missing")]
    MissingRecord { key: ClaimKey },
    /// Something the decision depends on (CircleCI) could not be asked; try again later.
    #[error("{reason}")]
    Unavailable { reason: String },
    /// A stored record could not be turned back into an action (written by another release).
    #[error("trigger record {id} cannot be retried: {reason}")]
    NotRetryable { id: TriggerId, reason: String },
    /// The claim was marked sending, so CircleCI may have acted, and the outcome could not
    /// be recorded. Never "nothing happened": the record stays `received` with its claim
    /// `sending` for the reconciler (the sweep), which looks the pipeline up and never
    /// resends without that look. `record` is what the caller may show (status `ambiguous`).
    #[error("trigger {}: CircleCI may have acted, but the outcome could not be recorded: {reason}", record.id)]
    OutcomeUnknown {
        record: Box<TriggerRecord>,
        reason: String,
    },
}

impl EngineError {
    /// Whether the same intent may succeed if tried again (answer 5xx / 503, let the sweep or
    /// a redelivery come back).
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Store(error) => error.is_retryable(),
            EngineError::Unavailable { .. } => true,
            // The same intent again (same key) adopts and reconciles; it never resends blind.
            EngineError::OutcomeUnknown { .. } => true,
            EngineError::MissingRecord { .. } | EngineError::NotRetryable { .. } => false,
        }
    }
}

/// The trigger lifecycle over a store, CircleCI actions and a clock.
#[derive(Clone)]
pub struct Engine {
    store: SharedStore,
    actions: Arc<Actions>,
    clock: Arc<dyn Clock>,
    settings: Arc<EngineSettings>,
}

impl Engine {
    pub fn new(
        store: SharedStore,
        actions: Arc<Actions>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
    ) -> Self {
        Self {
            store,
            actions,
            clock,
            settings: Arc::new(settings),
        }
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    pub fn actions(&self) -> &Actions {
        &self.actions
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The id of the record a claim key stands for (stable across holders and attempts).
    pub fn record_id_for(key: &ClaimKey) -> TriggerId {
        key.record_id()
    }

    /// Claims the intent and, when this call wins, performs its action once.
    pub async fn fire(&self, intent: TriggerIntent) -> Result<Fired, EngineError> {
        let span = tracing::info_span!(
            "trigger",
            trigger_id = %Self::record_id_for(&intent.key),
            source = %intent.source,
            project = %intent.action.target().project,
            action = intent.action.kind().as_str(),
        );
        self.fire_inner(intent).instrument(span).await
    }

    async fn fire_inner(&self, intent: TriggerIntent) -> Result<Fired, EngineError> {
        let lease = self.settings.lease;
        // A create's claim starts out sending: its next step is the request (one write
        // fewer; a holder that dies before sending leaves it ambiguous, and reconciliation
        // finds nothing and sends).
        let sending = matches!(intent.action, Action::Pipeline { .. });
        let opened = self
            .store
            .open_trigger(
                &intent.key,
                &intent.fingerprint,
                lease,
                self.new_record(&intent),
                sending,
            )
            .await?;
        match opened.outcome {
            ClaimOutcome::Won(grant) => {
                let record = match opened.record {
                    Some(record) => record,
                    None => self.open_record(&intent, &grant).await?,
                };
                self.attempt(
                    &intent.key,
                    grant,
                    record,
                    &intent.action,
                    opened.marked_sending,
                )
                .await
                .map(Fired::Performed)
            }
            ClaimOutcome::Completed { result, .. } => self
                .replay(&intent.key, &result, opened.record)
                .await
                .map(Fired::Replayed),
            ClaimOutcome::InProgress {
                lease_expires_at, ..
            } => Ok(Fired::InProgress {
                retry_after: self.until(lease_expires_at),
            }),
            ClaimOutcome::Ambiguous { sending_since, .. } => {
                let grant = match self.store.adopt_ambiguous(&intent.key, lease).await {
                    Ok(grant) => grant,
                    // Someone else adopted it first: they reconcile.
                    Err(StoreError::NotAmbiguous { .. } | StoreError::LostClaim { .. }) => {
                        return Ok(Fired::InProgress {
                            retry_after: Duration::from_secs(5),
                        });
                    }
                    Err(error) => return Err(error.into()),
                };
                let record = self.open_record(&intent, &grant).await?;
                self.reconcile_adopted(&intent.key, grant, record, &intent.action, sending_since)
                    .await
                    .map(Fired::Performed)
            }
            ClaimOutcome::Conflict => Ok(Fired::Conflict),
        }
    }

    /// Records a decision that performs nothing (skipped, rejected) under the intent's claim,
    /// so duplicates of it replay the same answer.
    pub async fn decide_without_action(
        &self,
        intent: TriggerIntent,
        status: TriggerStatus,
        reason: String,
    ) -> Result<Fired, EngineError> {
        let mut decided = self.new_record(&intent);
        decided.status = status;
        decided.reason = Some(reason.clone());
        let opened = self
            .store
            .open_trigger(
                &intent.key,
                &intent.fingerprint,
                self.settings.lease,
                decided,
                false,
            )
            .await?;
        match opened.outcome {
            ClaimOutcome::Won(grant) => {
                let mut record = match opened.record {
                    Some(record) => record,
                    None => self.open_record(&intent, &grant).await?,
                };
                record.status = status;
                record.reason = Some(reason);
                record.retry_at = None;
                record.updated_at = self.clock.now();
                let record = self
                    .store
                    .settle_trigger(&intent.key, grant.owner, self.settings.lease, record)
                    .await?;
                Ok(Fired::Performed(record))
            }
            ClaimOutcome::Completed { result, .. } => self
                .replay(&intent.key, &result, opened.record)
                .await
                .map(Fired::Replayed),
            ClaimOutcome::InProgress {
                lease_expires_at, ..
            } => Ok(Fired::InProgress {
                retry_after: self.until(lease_expires_at),
            }),
            ClaimOutcome::Ambiguous { .. } => Ok(Fired::InProgress {
                retry_after: Duration::from_secs(5),
            }),
            ClaimOutcome::Conflict => Ok(Fired::Conflict),
        }
    }

    /// Makes the next attempt of a record that failed retryably (the sweep, or a redelivery
    /// that found the claim completed with a retryable failure). Does nothing when the record
    /// is not due or another invocation already took this attempt.
    pub async fn retry(&self, record: TriggerRecord) -> Result<Option<TriggerRecord>, EngineError> {
        let now = self.clock.now();
        if !Self::is_due_for_retry(&record, now) {
            return Ok(None);
        }
        if record.status == TriggerStatus::Received {
            return self.redrive(record).await;
        }
        let Some(base_key) = record.claim_key.clone() else {
            return Err(EngineError::NotRetryable {
                id: record.id,
                reason: "the record has no claim key".into(),
            });
        };
        let plan = record
            .detail
            .retry
            .clone()
            .ok_or_else(|| EngineError::NotRetryable {
                id: record.id,
                reason: "no usable action on the record".into(),
            })?;
        let attempt_key = ClaimKey::from_stored(format!(
            "{}#attempt{}",
            base_key.as_str(),
            record.attempts + 1
        ));
        let fingerprint = Fingerprint::of(record.id.to_string().as_bytes());
        let span = tracing::info_span!(
            "trigger_retry",
            trigger_id = %record.id,
            source = %record.source,
            project = %record.target.project,
            attempt = record.attempts + 1,
        );
        async {
            match self
                .store
                .claim(&attempt_key, &fingerprint, self.settings.lease)
                .await?
            {
                ClaimOutcome::Won(grant) if record.status == TriggerStatus::Ambiguous => self
                    .recheck(&attempt_key, grant, record, &plan.action)
                    .await
                    .map(Some),
                ClaimOutcome::Won(grant) => self
                    .attempt(&attempt_key, grant, record, &plan.action, false)
                    .await
                    .map(Some),
                // That attempt sent and could not record its outcome: reconcile it.
                ClaimOutcome::Ambiguous { sending_since, .. } => {
                    match self
                        .store
                        .adopt_ambiguous(&attempt_key, self.settings.lease)
                        .await
                    {
                        Ok(grant) => self
                            .reconcile_adopted(
                                &attempt_key,
                                grant,
                                record,
                                &plan.action,
                                sending_since,
                            )
                            .await
                            .map(Some),
                        Err(StoreError::NotAmbiguous { .. } | StoreError::LostClaim { .. }) => {
                            Ok(None)
                        }
                        Err(error) => Err(error.into()),
                    }
                }
                // Done or being done by someone else.
                _ => Ok(None),
            }
        }
        .instrument(span)
        .await
    }

    /// Whether [`Engine::retry`] would act on the record now: a retryable failure or an
    /// ambiguous create awaiting its recheck, of a swept source, whose time has come.
    pub fn is_due_for_retry(record: &TriggerRecord, now: DateTime<Utc>) -> bool {
        let swept = matches!(
            record.status,
            TriggerStatus::Failed | TriggerStatus::Ambiguous
        ) && record.source.kind.swept();
        // Any source's record left `received` past its claim's lease is reconciled.
        let stranded = record.status == TriggerStatus::Received;
        (swept || stranded) && record.retry_at.is_some_and(|at| at <= now)
    }

    /// The reconciler's part of the sweep: a record left `received` past its claim's lease
    /// (its holder died, froze, or could not record the outcome). A claim left `sending` is
    /// adopted and reconciled — the pipeline looked up, never resent without that look. A
    /// claim that never reached `sending` sent nothing: a schedule or chain is taken over
    /// and performed (no chain trigger depends on CircleCI redelivering; a schedule slot is
    /// left to the tick's stale-claim recheck, which applies pause and concurrency); an HTTP
    /// or CLI call is recorded `failed` (its caller was told nothing happened, or got no
    /// answer) and its key freed for the caller's retry.
    async fn redrive(&self, record: TriggerRecord) -> Result<Option<TriggerRecord>, EngineError> {
        let id = record.id;
        let not_retryable = |reason: &str| EngineError::NotRetryable {
            id,
            reason: reason.into(),
        };
        let key = record
            .claim_key
            .clone()
            .ok_or_else(|| not_retryable("the record has no claim key"))?;
        let plan = record
            .detail
            .retry
            .clone()
            .ok_or_else(|| not_retryable("no usable action on the record"))?;
        let now = self.clock.now();
        let lease = self.settings.lease;
        let snapshot = match self.store.claim_snapshot(&key).await? {
            Some(snapshot) if snapshot.state != ClaimState::Completed => snapshot,
            // Completed (or gone) meanwhile: the record is not stranded; take it out.
            _ => {
                crate::store::modify_record(self.store.as_ref(), id, |stored| {
                    if stored.status == TriggerStatus::Received {
                        stored.retry_at = None;
                    }
                })
                .await?;
                return Ok(None);
            }
        };
        if snapshot.lease_expires_at > now {
            return Ok(None); // a live holder
        }
        match snapshot.state {
            ClaimState::Sending => {
                let grant = match self.store.adopt_ambiguous(&key, lease).await {
                    Ok(grant) => grant,
                    Err(StoreError::NotAmbiguous { .. } | StoreError::LostClaim { .. }) => {
                        return Ok(None);
                    }
                    Err(error) => return Err(error.into()),
                };
                let sending_since = snapshot.sending_since.unwrap_or(snapshot.updated_at);
                tracing::warn!(trigger_id = %id, "reconciling a record left sending");
                self.reconcile_adopted(&key, grant, record, &plan.action, sending_since)
                    .await
                    .map(Some)
            }
            _ if record.source.kind == crate::store::SourceKind::Schedule => Ok(None),
            _ => {
                let grant = match self.store.claim(&key, &snapshot.fingerprint, lease).await? {
                    ClaimOutcome::Won(grant) => grant,
                    _ => return Ok(None),
                };
                if record.source.kind.swept() {
                    tracing::warn!(trigger_id = %id, "performing a record left received");
                    return self
                        .attempt(&key, grant, record, &plan.action, false)
                        .await
                        .map(Some);
                }
                let mut record = record;
                record.status = TriggerStatus::Failed;
                record.retry_at = None;
                record.updated_at = now;
                record.reason =
                    Some("the call's handler stopped before sending: nothing was triggered".into());
                record.detail.retryable = Some(true);
                let record = self.save_fenced(&key, &grant, record).await?;
                let _ = self.store.release(&key, grant.owner).await;
                emit_metrics(&record);
                Ok(Some(record))
            }
        }
    }

    /// The recheck of an ambiguous create (under its own attempt claim): look again over the
    /// original window; adopt a single pipeline, leave several to an operator, and send
    /// again only when there is still none.
    async fn recheck(
        &self,
        key: &ClaimKey,
        grant: ClaimGrant,
        mut record: TriggerRecord,
        action: &Action,
    ) -> Result<TriggerRecord, EngineError> {
        let Action::Pipeline { target } = action else {
            // Only creates are rechecked; anything else is an operator's.
            record.retry_at = None;
            let record = self.save_fenced(key, &grant, record).await?;
            self.finish_claim(key, &grant, &record).await?;
            return Ok(record);
        };
        let sent_at = record.detail.sent_at.unwrap_or(record.updated_at);
        let cause = ActionError::CircleCi(crate::circleci::CircleCiError::Ambiguous {
            operation: "an earlier create",
            status: None,
            reason: "its answer was lost".into(),
        });
        record.updated_at = self.clock.now();
        match self
            .reconcile_into(&mut record, target, sent_at, &cause)
            .await
        {
            // Still nothing where the first create would be: it never reached CircleCI.
            Lookup::Nothing => self.attempt(key, grant, record, action, false).await,
            lookup => {
                // A look that failed counts as an attempt, so rechecks end.
                if lookup == Lookup::Failed {
                    record.attempts += 1;
                }
                self.plan_recheck(&mut record, sent_at, lookup);
                let record = self.save_fenced(key, &grant, record).await?;
                self.finish_claim(key, &grant, &record).await?;
                emit_metrics(&record);
                Ok(record)
            }
        }
    }

    /// After reconciliation left a create ambiguous: when nothing (or nothing yet) was found
    /// for a swept source, schedule a recheck at the end of the window; otherwise an
    /// operator decides.
    fn plan_recheck(&self, record: &mut TriggerRecord, sent_at: DateTime<Utc>, lookup: Lookup) {
        let recheck = matches!(lookup, Lookup::Nothing | Lookup::Failed)
            && record.source.kind.swept()
            && record.attempts < self.settings.max_attempts;
        if !recheck {
            record.retry_at = None;
            return;
        }
        let window = chrono::Duration::from_std(self.settings.reconcile_window).unwrap_or_default();
        let at = (sent_at + window).max(self.clock.now() + chrono::Duration::seconds(1));
        record.retry_at = Some(at);
        record.detail.sent_at = Some(sent_at);
        if let Some(reason) = record.reason.as_mut() {
            reason.push_str(&format!(
                "; looking again after {} and sending again only if there is still no pipeline",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
    }

    /// Runs one sweep: retries every due schedule/chain record (up to `limit`).
    /// Returns how many attempts were made; failures of single records are logged, not fatal.
    pub async fn sweep(&self, limit: u32) -> Result<SweepReport, EngineError> {
        self.sweep_leaving_slots(limit)
            .await
            .map(|(report, _)| report)
    }

    /// [`Engine::sweep`], also handing back the schedule records it found still `received`
    /// and left alone (a slot whose claim never reached `sending`: the tick decides it
    /// again, applying pause and concurrency), so the tick needs no query of its own.
    pub async fn sweep_leaving_slots(
        &self,
        limit: u32,
    ) -> Result<(SweepReport, Vec<TriggerRecord>), EngineError> {
        let mut report = SweepReport::default();
        let mut left = Vec::new();
        for record in self.store.due_for_retry(limit).await? {
            let id = record.id;
            let slot = (record.source.kind == crate::store::SourceKind::Schedule
                && record.status == TriggerStatus::Received)
                .then(|| record.clone());
            match self.retry(record).await {
                Ok(Some(record)) => {
                    report.attempted += 1;
                    if record.status == TriggerStatus::Triggered {
                        report.succeeded += 1;
                    }
                }
                Ok(None) => {
                    report.skipped += 1;
                    left.extend(slot);
                }
                Err(error @ EngineError::NotRetryable { .. }) => {
                    report.errors += 1;
                    tracing::error!(trigger_id = %id, %error, "giving up on the record");
                    // Take it out of the retry index so it cannot starve the sweep.
                    let reason = error.to_string();
                    let _ = crate::store::modify_record(self.store.as_ref(), id, move |record| {
                        record.retry_at = None;
                        record.reason = Some(reason.clone());
                    })
                    .await;
                }
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(trigger_id = %id, %error, "retry failed");
                }
            }
        }
        Ok((report, left))
    }

    // ----------------------------------------------------------------- internals

    fn until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.clock.now())
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    }

    /// The record a completed claim's result names: `found` when the store already read it
    /// (the failed claim write's old item), else read by id.
    async fn replay(
        &self,
        key: &ClaimKey,
        result: &ClaimResult,
        found: Option<TriggerRecord>,
    ) -> Result<TriggerRecord, EngineError> {
        let id = result
            .trigger_id
            .unwrap_or_else(|| Self::record_id_for(key));
        if let Some(record) = found.filter(|record| record.id == id) {
            return Ok(record);
        }
        self.store
            .get_record(id)
            .await?
            .ok_or_else(|| EngineError::MissingRecord { key: key.clone() })
    }

    /// The intent's record: created on the first attempt, found again after a takeover.
    async fn open_record(
        &self,
        intent: &TriggerIntent,
        grant: &ClaimGrant,
    ) -> Result<TriggerRecord, EngineError> {
        let id = Self::record_id_for(&intent.key);
        if (grant.taken_over || grant.attempt > 1)
            && let Some(existing) = self.store.get_record(id).await?
        {
            return Ok(existing);
        }
        match self.store.create_record(self.new_record(intent)).await {
            Ok(record) => Ok(record),
            Err(StoreError::RecordExists { .. }) => {
                self.store
                    .get_record(id)
                    .await?
                    .ok_or_else(|| EngineError::MissingRecord {
                        key: intent.key.clone(),
                    })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The record an intent starts as (`received`), before it is stored.
    fn new_record(&self, intent: &TriggerIntent) -> TriggerRecord {
        let id = Self::record_id_for(&intent.key);
        let now = self.clock.now();
        let target = intent.action.target();
        let mut record = TriggerRecord::new(
            intent.source.clone(),
            // The action's view: approve/rerun/cancel add the job and workflow they act on.
            intent.action.record_target(),
            intent.action.kind(),
            now,
        );
        record.id = id;
        record.origin = intent.origin.unwrap_or(id);
        record.parameters = target
            .parameters
            .iter()
            .map(|(name, value)| (name.clone(), parameter_json(value)))
            .collect();
        redact_parameters(&self.settings.history, &mut record.parameters);
        record.claim_key = Some(intent.key.clone());
        record.upstream = intent.upstream.clone();
        record.correlation = intent.correlation.clone();
        record.detail = intent.detail.clone();
        // Kept so the sweep can redo (schedules, chains) or reconcile (every source) the
        // action without the original event or request.
        record.detail.retry = Some(RetryPlan {
            action: intent.action.clone(),
        });
        // The reconciler's time: a record still `received` after its claim's lease is
        // re-driven by the sweep (deciding it clears this). In DynamoDB it is one index
        // write per trigger (the entry stays when the trigger is decided; the sweep reads
        // from a cursor), so a source whose queue hands the trigger out again until it is
        // decided (chains) goes without it: the next receive adopts the claim instead.
        if !intent.source.kind.redelivered() {
            record.retry_at = Some(now + lease_delta(self.settings.lease));
        }
        record
    }

    /// One attempt of the action under a won claim, ending with the claim completed (or
    /// released when nothing could have been sent and the failure was the store's).
    async fn attempt(
        &self,
        key: &ClaimKey,
        grant: ClaimGrant,
        mut record: TriggerRecord,
        action: &Action,
        marked_sending: bool,
    ) -> Result<TriggerRecord, EngineError> {
        record.attempts += 1;
        let guard = ClaimSendGuard {
            store: self.store.clone(),
            key: key.clone(),
            grant: grant.clone(),
            clock: self.clock.clone(),
            marked: marked_sending,
            sent_at: std::sync::Mutex::new(None),
        };
        // One deadline for the whole action, ending no later than the lease: no request
        // starts after the claim could have been taken over (a holder frozen mid-action).
        // For a create whose claim was opened already sending, this is the only guard
        // before the request (there is no `mark_sending` to refuse an expired lease).
        let lease_left = (grant.lease_expires_at - self.clock.now())
            .to_std()
            .unwrap_or_default();
        let budget = SendBudget::starting_now(
            self.clock.clone(),
            self.settings
                .send_budget
                .min(self.settings.lease)
                .min(lease_left),
        );
        let result = budget.run(self.actions.perform(action, &guard)).await;
        let sent_at = guard.sent_at();
        let mut fresh_answer = true;
        let now = self.clock.now();
        record.updated_at = now;
        match result {
            Ok(outcome) => apply_outcome(&mut record, &outcome),
            Err(ActionError::Guard(reason)) => {
                // mark_sending failed: nothing was sent. Give the claim back when we still
                // hold it so a retry (sweep, redelivery) can take it.
                tracing::warn!(%reason, "could not mark the claim sending; nothing sent");
                let _ = self.store.release(key, grant.owner).await;
                return Err(EngineError::Store(StoreError::Unavailable {
                    message: format!("could not mark the claim sending: {reason}"),
                }));
            }
            Err(error) if error.is_ambiguous() => {
                // Reconciliation may adopt a pipeline this holder did not create: its
                // binding must precede the record (the narrow path below).
                fresh_answer = false;
                let sent_at = sent_at.unwrap_or(now);
                match action {
                    Action::Pipeline { target } => {
                        let lookup = self
                            .reconcile_into(&mut record, target, sent_at, &error)
                            .await;
                        self.plan_recheck(&mut record, sent_at, lookup);
                    }
                    _ => {
                        record.status = TriggerStatus::Ambiguous;
                        record.reason = Some(error.to_string());
                        record.retry_at = None;
                    }
                }
            }
            Err(error) => self.record_failure(&mut record, &error, now),
        }
        if !matches!(
            record.status,
            TriggerStatus::Failed | TriggerStatus::Ambiguous
        ) {
            // Only a failed record or a create awaiting its recheck waits for the sweep;
            // anything else leaving `retry_at` set would sit at the head of the retry index
            // forever (the sweep skips it).
            record.retry_at = None;
        }
        let record = if fresh_answer {
            match self.settle(key, &grant, record.clone()).await {
                Ok(saved) => saved,
                Err(error) if sent_at.is_some() => return Err(outcome_unknown(record, &error)),
                Err(error) => return Err(error),
            }
        } else {
            let record = match self.save_fenced(key, &grant, record.clone()).await {
                Ok(saved) => saved,
                Err(error) if sent_at.is_some() => return Err(outcome_unknown(record, &error)),
                Err(error) => return Err(error),
            };
            if let Err(error) = self.finish_claim(key, &grant, &record).await {
                if sent_at.is_none() {
                    return Err(error);
                }
                // The record holds the outcome; the claim stays `sending` until the same
                // intent comes again and completes it from the record.
                tracing::warn!(%key, %error, "outcome recorded, claim not completed");
            }
            record
        };
        emit_metrics(&record);
        tracing::info!(status = %record.status, reason = record.reason.as_deref(), "trigger decided");
        Ok(record)
    }

    /// A claim whose holder was sending when its lease ran out: find out what happened.
    async fn reconcile_adopted(
        &self,
        key: &ClaimKey,
        grant: ClaimGrant,
        mut record: TriggerRecord,
        action: &Action,
        sending_since: DateTime<Utc>,
    ) -> Result<TriggerRecord, EngineError> {
        if record.status == TriggerStatus::Triggered && record.pipeline.is_some() {
            // The holder recorded the outcome but died before completing the claim.
        } else {
            record.updated_at = self.clock.now();
            let error = ActionError::CircleCi(crate::circleci::CircleCiError::Ambiguous {
                operation: "the previous holder's request",
                status: None,
                reason: "its lease expired while sending".into(),
            });
            match action {
                Action::Pipeline { target } => {
                    let lookup = self
                        .reconcile_into(&mut record, target, sending_since, &error)
                        .await;
                    self.plan_recheck(&mut record, sending_since, lookup);
                }
                _ => {
                    record.status = TriggerStatus::Ambiguous;
                    record.reason = Some(error.to_string());
                    record.retry_at = None;
                }
            }
            record = match self.save_fenced(key, &grant, record.clone()).await {
                Ok(saved) => saved,
                Err(error) => return Err(outcome_unknown(record, &error)),
            };
        }
        self.finish_claim(key, &grant, &record).await?;
        emit_metrics(&record);
        Ok(record)
    }

    async fn reconcile_into(
        &self,
        record: &mut TriggerRecord,
        target: &crate::actions::Target,
        sent_at: DateTime<Utc>,
        cause: &ActionError,
    ) -> Lookup {
        let ledger = StoreLedger::new(self.store.clone(), record.id);
        let looked = match CreateWindow::of_send(
            sent_at,
            self.settings.send_budget,
            self.settings.clock_skew,
        ) {
            Ok(window) => self.actions.reconcile_create(target, window, &ledger).await,
            Err(error) => Err(error),
        };
        match looked {
            Ok(Reconciled::Adopted(pipeline)) => {
                record.status = TriggerStatus::Triggered;
                record.reason = Some(format!(
                    "adopted pipeline {} after an ambiguous create ({cause})",
                    pipeline.id
                ));
                record.pipeline = Some(PipelineRef {
                    id: pipeline.id.to_string(),
                    number: Some(u64::try_from(pipeline.number).unwrap_or(0)),
                    url: None,
                });
                record.revision = pipeline.revision().map(str::to_owned);
                Lookup::Adopted
            }
            Ok(Reconciled::StillAmbiguous { candidates }) if candidates.is_empty() => {
                record.status = TriggerStatus::Ambiguous;
                record.reason = Some(format!("{cause}; reconciliation found no pipeline"));
                record.detail.candidates = Some(Vec::new());
                Lookup::Nothing
            }
            Ok(Reconciled::StillAmbiguous { candidates }) => {
                record.status = TriggerStatus::Ambiguous;
                record.reason = Some(format!(
                    "{cause}; reconciliation found {} candidate pipeline(s): an operator must decide",
                    candidates.len()
                ));
                record.detail.candidates = Some(candidates.clone());
                Lookup::Candidates
            }
            Err(error) => {
                record.status = TriggerStatus::Ambiguous;
                record.reason = Some(format!("{cause}; reconciliation failed: {error}"));
                Lookup::Failed
            }
        }
    }

    fn record_failure(&self, record: &mut TriggerRecord, error: &ActionError, now: DateTime<Utc>) {
        record.reason = Some(error.to_string());
        if let ActionError::CircleCi(crate::circleci::CircleCiError::NotTriggered { .. }) = error {
            record.status = TriggerStatus::NotTriggered;
            record.retry_at = None;
            return;
        }
        record.status = TriggerStatus::Failed;
        record.retry_at = if error.is_retryable()
            && record.source.kind.swept()
            && record.attempts < self.settings.max_attempts
        {
            let delay = retry_delay(&self.settings, record.attempts, error);
            Some(now + chrono::Duration::from_std(delay).unwrap_or_default())
        } else {
            None
        };
        record.detail.retryable = Some(error.is_retryable());
    }

    /// Writes the holder's decision and completes its claim in one fenced write
    /// ([`TriggerLedger::settle_trigger`]); a claim taken over meanwhile gets the late
    /// holder's certain facts only ([`Self::offer_late_outcome`]), and a record changed
    /// meanwhile (the closed loop) is re-read and re-applied on the narrow path.
    async fn settle(
        &self,
        key: &ClaimKey,
        grant: &ClaimGrant,
        record: TriggerRecord,
    ) -> Result<TriggerRecord, EngineError> {
        match self
            .store
            .settle_trigger(key, grant.owner, self.settings.lease, record.clone())
            .await
        {
            Ok(saved) => Ok(saved),
            Err(error @ StoreError::LostClaim { .. }) => {
                tracing::warn!(%key, "claim taken over meanwhile: this holder's outcome is not written");
                self.offer_late_outcome(key, &record, error.into()).await
            }
            Err(StoreError::StaleRecord { .. }) => {
                let saved = self.save_fenced(key, grant, record).await?;
                self.finish_claim(key, grant, &saved).await?;
                Ok(saved)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Saves what the holder of `grant` decided, fenced by the claim: the holder renews its
    /// lease first, which fails once the claim was taken over or adopted (another owner),
    /// so a holder that was frozen past its lease never overwrites the new holder's record.
    /// The renewal also gives the write a fresh lease; a write that then meets a newer
    /// version (the closed loop added an outcome) is re-applied after renewing again.
    async fn save_fenced(
        &self,
        key: &ClaimKey,
        grant: &ClaimGrant,
        record: TriggerRecord,
    ) -> Result<TriggerRecord, EngineError> {
        match self.fence(key, grant).await {
            Ok(()) => {}
            Err(refused @ EngineError::Store(StoreError::LostClaim { .. })) => {
                return self.offer_late_outcome(key, &record, refused).await;
            }
            Err(error) => return Err(error),
        }
        match self.store.update_record(record.clone()).await {
            Ok(saved) => Ok(saved),
            Err(StoreError::StaleRecord { .. }) => match self.fence(key, grant).await {
                Ok(()) => self.save(record).await,
                Err(refused @ EngineError::Store(StoreError::LostClaim { .. })) => {
                    self.offer_late_outcome(key, &record, refused).await
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error.into()),
        }
    }

    /// A holder refused by the fence may still know something for certain: CircleCI
    /// answered its create with a pipeline (it was sent before the deadline, the answer came
    /// after the lease). That fact fills a record that holds no pipeline yet (the adopter
    /// found nothing and awaits a recheck); a record that already names a pipeline or is
    /// otherwise decided is never touched. Anything else the late holder has is dropped.
    async fn offer_late_outcome(
        &self,
        key: &ClaimKey,
        ours: &TriggerRecord,
        refused: EngineError,
    ) -> Result<TriggerRecord, EngineError> {
        let created = matches!(
            ours.detail.outcome,
            Some(ActionOutcome::PipelineCreated { .. })
        ) && ours.pipeline.is_some();
        if !created {
            return Err(refused);
        }
        for _ in 0..8 {
            let Some(mut stored) = self.store.get_record(ours.id).await? else {
                return Err(refused);
            };
            let open = stored.pipeline.is_none()
                && matches!(
                    stored.status,
                    TriggerStatus::Received | TriggerStatus::Ambiguous
                );
            if !open {
                return Err(refused);
            }
            stored.status = TriggerStatus::Triggered;
            stored.pipeline = ours.pipeline.clone();
            stored.retry_at = None;
            stored.reason = Some(format!(
                "the create's answer came after its holder's lease (claim `{key}`): its pipeline is recorded"
            ));
            stored.detail.outcome = ours.detail.outcome.clone();
            stored.detail.candidates = None;
            stored.updated_at = self.clock.now();
            match self.store.update_record(stored).await {
                Ok(saved) => {
                    tracing::warn!(%key, "late create answer recorded on a record that had no pipeline");
                    return Ok(saved);
                }
                Err(StoreError::StaleRecord { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(refused)
    }

    async fn fence(&self, key: &ClaimKey, grant: &ClaimGrant) -> Result<(), EngineError> {
        match self
            .store
            .renew(key, grant.owner, self.settings.lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(error @ StoreError::LostClaim { .. }) => {
                tracing::warn!(%key, "claim taken over meanwhile: this holder's outcome is not written");
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn save(&self, record: TriggerRecord) -> Result<TriggerRecord, EngineError> {
        match self.store.update_record(record.clone()).await {
            Ok(saved) => Ok(saved),
            // Someone (the closed loop) touched it meanwhile: re-apply our fields.
            Err(StoreError::StaleRecord { id }) => {
                let ours = record;
                crate::store::modify_record(self.store.as_ref(), id, move |stored| {
                    stored.status = ours.status;
                    stored.reason = ours.reason.clone();
                    stored.attempts = ours.attempts;
                    stored.retry_at = ours.retry_at;
                    stored.pipeline = ours.pipeline.clone();
                    stored.revision = ours.revision.clone();
                    stored.detail = ours.detail.clone();
                    stored.updated_at = ours.updated_at;
                })
                .await
                .map_err(EngineError::from)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn finish_claim(
        &self,
        key: &ClaimKey,
        grant: &ClaimGrant,
        record: &TriggerRecord,
    ) -> Result<(), EngineError> {
        let result = ClaimResult::trigger(record.id);
        match self.store.complete(key, grant.owner, &result).await {
            Ok(()) => Ok(()),
            Err(StoreError::LostClaim { .. }) => {
                // Our lease ran out while working and someone took over. The record already
                // holds the truth; the new holder finds it.
                tracing::warn!(%key, "claim lost before completion; the record stands");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Counts of one sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub attempted: u32,
    pub succeeded: u32,
    pub skipped: u32,
    pub errors: u32,
}

/// What reconciliation of an ambiguous create found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Exactly one pipeline: adopted.
    Adopted,
    /// Several: an operator decides.
    Candidates,
    /// None (yet): recheck at the end of the window, then send again if still none.
    Nothing,
    /// CircleCI could not be asked: recheck later.
    Failed,
}

/// Marks the claim SENDING right before the side-effecting request, remembering when.
struct ClaimSendGuard {
    store: Arc<dyn ClaimStore>,
    key: ClaimKey,
    grant: ClaimGrant,
    clock: Arc<dyn Clock>,
    /// The claim was written already sending (`TriggerLedger::open_trigger`).
    marked: bool,
    sent_at: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl ClaimSendGuard {
    fn sent_at(&self) -> Option<DateTime<Utc>> {
        *self
            .sent_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl SendGuard for ClaimSendGuard {
    async fn before_send(&self) -> Result<(), StoreError> {
        if !self.marked {
            self.store.mark_sending(&self.key, self.grant.owner).await?;
        }
        *self
            .sent_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(self.clock.now());
        Ok(())
    }
}

/// What a caller is told when a failure follows `mark_sending`: CircleCI may have acted.
fn outcome_unknown(mut record: TriggerRecord, cause: &EngineError) -> EngineError {
    let reason = cause.to_string();
    record.status = TriggerStatus::Ambiguous;
    record.retry_at = None;
    record.reason = Some(format!(
        "CircleCI may have acted, but the outcome could not be recorded ({reason}); \
         the reconciler looks the pipeline up and never resends without that look"
    ));
    EngineError::OutcomeUnknown {
        record: Box::new(record),
        reason,
    }
}

fn apply_outcome(record: &mut TriggerRecord, outcome: &ActionOutcome) {
    record.status = TriggerStatus::Triggered;
    record.retry_at = None;
    record.reason = None;
    match outcome {
        ActionOutcome::PipelineCreated { id, number, .. } => {
            record.pipeline = Some(PipelineRef {
                id: id.to_string(),
                number: Some(*number),
                url: None,
            });
        }
        ActionOutcome::Approved { pipeline_id, .. }
        | ActionOutcome::Rerun { pipeline_id, .. }
        | ActionOutcome::Canceled { pipeline_id, .. } => {
            // The pipeline acted on belongs to another trigger: keep it in the detail, not
            // as this record's pipeline (each pipeline id maps to one record).
            record.detail.acted_on_pipeline = Some(*pipeline_id);
        }
    }
    record.detail.outcome = Some(outcome.clone());
}

/// Exponential backoff from the configured delay, honouring CircleCI's Retry-After.
fn retry_delay(settings: &EngineSettings, attempts: u32, error: &ActionError) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    let backoff = settings
        .retry_delay
        .saturating_mul(1u32 << exponent)
        .min(settings.max_retry_delay);
    match error {
        ActionError::CircleCi(crate::circleci::CircleCiError::RateLimited {
            retry_after: Some(wait),
        }) => backoff.max(*wait),
        _ => backoff,
    }
}

/// A lease as a time span, plus a second so the claim has surely expired by then.
fn lease_delta(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
        + chrono::Duration::seconds(1)
}

fn parameter_json(value: &crate::config::ParameterValue) -> serde_json::Value {
    match value {
        crate::config::ParameterValue::Boolean(b) => serde_json::json!(b),
        crate::config::ParameterValue::Integer(i) => serde_json::json!(i),
        crate::config::ParameterValue::String(s) => serde_json::json!(s),
    }
}

/// The metrics a decided trigger emits, one per outcome: triggered, failed, ambiguous.
pub const TRIGGER_METRICS: [&str; 3] = ["TriggersTriggered", "TriggersFailed", "TriggersAmbiguous"];

/// CloudWatch Embedded Metric Format: one JSON line per decided trigger; in Lambda the log
/// line becomes the `TriggersFailed` / `TriggersAmbiguous` / `TriggersTriggered` metrics the
/// template's alarms watch. Locally it is just a log line.
fn emit_metrics(record: &TriggerRecord) {
    let [triggered, failed, ambiguous] = TRIGGER_METRICS;
    let metric = match record.status {
        TriggerStatus::Triggered => triggered,
        TriggerStatus::Failed => failed,
        // A create awaiting its recheck is not an operator's yet: no alarm.
        TriggerStatus::Ambiguous if record.retry_at.is_some() => return,
        TriggerStatus::Ambiguous => ambiguous,
        _ => return,
    };
    crate::telemetry::emit_metric(metric, 1.0, &[("Source", record.source.kind.as_str())]);
}
