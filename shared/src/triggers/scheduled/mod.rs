//! The tick: evaluates every schedule up to an instant, fires each due slot once, records
//! every decision, then sweeps.
//!
//! The same [`Scheduler::tick`] runs in the `scheduled` Lambda (EventBridge Scheduler invokes
//! it every minute with the scheduled time, see [`lambda`]) and in `serve` (at each exact slot
//! time, see [`local`]).
//!
//! First the scheduler's state item (one read): when the triggers file's schedules are those
//! it was saved for (same digest), no schedule lags and its `next_due` is after `now`, the
//! tick is **idle** — nothing is evaluated or written, whatever the number of schedules.
//! Otherwise, per schedule (its cursor from the state, or from the per-schedule definitions
//! when the file changed or a schedule lags; up to [`SCHEDULES_AT_ONCE`] schedules side by
//! side, their results taken in file order):
//! 1. disabled → nothing fires (its entry is marked disabled, so enabling it again changes
//!    its fingerprint and it starts from then);
//! 2. the evaluation window runs from the cursor to `now` (a new or changed schedule starts
//!    at now: no backfill); a cursor older than [`MAX_SCAN`] is evaluated from there on and
//!    the part before it is summarised when it holds a slot;
//! 3. the newest due slot is on time if `now` is within the schedule's `grace` of it, every
//!    other due slot is missed (lateness is defined in `schedule::catch_up`); the catch-up
//!    policy splits the missed ones into fire (recorded with `caught_up`) and skip; every
//!    skipped slot, and every slot of a paused schedule, is recorded as `skipped` with the
//!    reason (after a long outage the newest [`MAX_SKIPPED_ROWS`] one by one and the older
//!    ones in one summary row); the pause flags are read once per tick (one query), when
//!    the first slot is to fire;
//! 4. each firing slot × target is claimed (`schedule#name#slot#target`, the slot being its
//!    UTC instant), the concurrency policy is applied (forbid / replace against the previous
//!    pipeline of the same target, see [`concurrency`]), and the action runs through the
//!    [`Engine`]; a slot's targets run concurrently and share one origin (for fan-in);
//! 5. the state (and the definitions, when they changed) is saved only after every schedule
//!    was handled, so a tick that failed half-way is redone by the next one — claims make
//!    that safe; a schedule whose evaluation failed keeps its cursor and marks the state
//!    `behind`.
//!
//! Then the sweep: the engine retries schedule and chain records that failed retryably and
//! are due (HTTP triggers are never retried: their callers own their retries), and the
//! scheduler re-checks its own stale claims — a schedule record still `received` after its
//! claim's lease ran out means the invocation that claimed it died (the sweep's query of the
//! retry index returns it); the slot is decided again under the same key (the claim is
//! taken over, or adopted and reconciled when the dead holder had started sending).

pub mod calendar;
mod concurrency;
mod event;
pub mod lambda;
pub mod local;
mod manual;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use crate::actions::{Action, Target, WorkflowSelector};
use crate::config::schedule::{ConcurrencyMode, ConcurrencyPolicy, ScheduleSpec, SlotValues};
use crate::config::{ActionKind, TargetSpec, TriggersFile};
use crate::engine::{Engine, EngineError, Fired, SweepReport, TriggerIntent};
use crate::store::{
    ClaimKey, ClaimKind, ClaimState, Fingerprint, MissedSlots, PauseFlag, PreviousPipeline,
    RecordDetail, ReplacedPipeline, ScheduleDefinitions, ScheduleEntry, SchedulerState, SourceKind,
    TriggerId, TriggerRecord, TriggerSource, TriggerStatus, TriggerStore,
};
use crate::triggers::scheduled::calendar::{
    ScheduleCursor, ScheduleSlot, SkippedSlot, apply_catch_up, due_slots, evaluation_window,
    next_slots,
};

pub use event::{TickEvent, TickEventError, TickRequest};
pub use manual::{
    BackfillPlan, BackfillReport, BackfillRequest, BackfillStep, DEFAULT_BACKFILL_CAP, RunReport,
    RunRequest, RunTarget, backfill_plan,
};

/// How many schedules a tick evaluates at once (each waits on CircleCI for its due slots;
/// the client's pacing still applies across them).
const SCHEDULES_AT_ONCE: usize = 8;
/// How many records the engine's sweep retries per tick.
const SWEEP_LIMIT: u32 = 50;
/// A tick evaluates at most this far back; an older cursor (a schedule that was not evaluated
/// for a month) is summarised from there on instead of enumerating every slot.
pub const MAX_SCAN: Duration = Duration::days(31);
/// Skipped slots recorded one by one per schedule and tick; older ones share one summary row
/// (an every-minute schedule after a day's outage would otherwise write 1440 rows).
pub const MAX_SKIPPED_ROWS: usize = 100;

/// How far ahead of the clock a requested tick instant may be (clock skew between
/// EventBridge and this host); anything later is refused.
pub const MAX_TICK_AHEAD: Duration = Duration::minutes(2);

/// Why a tick (or a manual run) could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A tick for an instant ahead of the clock would evaluate (and fire) future slots and
    /// move the cursors past them.
    #[error("refusing to tick for {at}: it is more than {}s ahead of the clock ({now})", MAX_TICK_AHEAD.num_seconds())]
    FutureTick {
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// A manual run named a schedule the triggers file does not have.
    #[error("no schedule named `{name}` (known: {known})")]
    UnknownSchedule { name: String, known: String },
    /// An operator run of a paused schedule without `ignore_pause`.
    #[error(
        "schedule `{schedule}` is paused ({flag}); nothing was run. Resume it, or run it anyway \
         with --ignore-pause (recorded on the run)"
    )]
    Paused { schedule: String, flag: String },
    /// `--at` names an instant that is not one of the schedule's slots.
    #[error("{at} is not a slot of schedule `{schedule}` ({cron} in {zone}){hint}")]
    NotASlot {
        schedule: String,
        at: String,
        cron: String,
        zone: String,
        hint: String,
    },
    /// `--at` names a slot that has not come yet.
    #[error("slot {at} of schedule `{schedule}` is in the future (now {now}); it fires on its own")]
    FutureSlot {
        schedule: String,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// A backfill range that is empty, reversed, in the future or over the cap.
    #[error("{0}")]
    InvalidRange(String),
    /// The schedule's definition cannot be evaluated (only for a file that skipped `check`).
    #[error("schedule `{schedule}`: {reason}")]
    Definition { schedule: String, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl SchedulerError {
    /// Whether the same request may succeed later (the store or CircleCI was unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            SchedulerError::UnknownSchedule { .. }
            | SchedulerError::FutureTick { .. }
            | SchedulerError::Paused { .. }
            | SchedulerError::NotASlot { .. }
            | SchedulerError::FutureSlot { .. }
            | SchedulerError::InvalidRange(_)
            | SchedulerError::Definition { .. } => false,
            SchedulerError::Engine(error) => error.is_retryable(),
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TickReport {
    pub at: Option<DateTime<Utc>>,
    pub schedules: Vec<ScheduleTick>,
    pub sweep: SweepReport,
    /// Stale schedule claims decided again.
    pub rechecked: u32,
}

impl TickReport {
    /// Totals over every schedule.
    pub fn totals(&self) -> ScheduleTick {
        let mut total = ScheduleTick::default();
        for tick in &self.schedules {
            total.fired += tick.fired;
            total.skipped += tick.skipped;
            total.failed += tick.failed;
            total.duplicates += tick.duplicates;
            total.in_progress += tick.in_progress;
        }
        total
    }

    /// Schedules that could not be evaluated this tick (retried by the next one).
    pub fn errors(&self) -> impl Iterator<Item = &ScheduleTick> {
        self.schedules.iter().filter(|tick| tick.error.is_some())
    }
}

/// What one tick (or manual run) did for one schedule, counted per slot × target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScheduleTick {
    pub schedule: String,
    /// Actions performed (pipelines started, jobs approved, ...).
    pub fired: u32,
    /// Recorded as skipped (catch-up, pause, concurrency).
    pub skipped: u32,
    /// Tried and failed (retried by the sweep when retryable).
    pub failed: u32,
    /// Decided before (by an earlier or a concurrent tick): nothing done.
    pub duplicates: u32,
    /// Held by another invocation right now (re-checked by a later sweep if it dies).
    pub in_progress: u32,
    /// Set when the schedule could not be evaluated this tick (it is retried next tick).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ScheduleTick {
    pub(crate) fn new(schedule: &str) -> Self {
        Self {
            schedule: schedule.to_owned(),
            ..Self::default()
        }
    }

    pub(crate) fn count(&mut self, fired: &Fired) {
        match fired {
            Fired::Performed(record) => match record.status {
                TriggerStatus::Triggered => self.fired += 1,
                TriggerStatus::Skipped => self.skipped += 1,
                _ => self.failed += 1,
            },
            Fired::Replayed(_) | Fired::Conflict => self.duplicates += 1,
            Fired::InProgress { .. } => self.in_progress += 1,
        }
    }
}

/// Evaluates schedules against the store and fires through the engine.
#[derive(Clone)]
pub struct Scheduler {
    engine: Engine,
    triggers: Arc<TriggersFile>,
    current: Arc<CurrentDefinitions>,
    /// In Lambda the tick also sends due notifications (`serve` runs its own loop).
    notifications: Option<Arc<crate::notify::Sweeper>>,
}

impl Scheduler {
    pub fn new(engine: Engine, triggers: Arc<TriggersFile>) -> Self {
        let current = Arc::new(CurrentDefinitions::of(&triggers));
        Self {
            engine,
            triggers,
            current,
            notifications: None,
        }
    }

    /// Sends due notifications after every scheduled invocation (the Lambda tick).
    pub fn sending(mut self, notifications: Option<Arc<crate::notify::Sweeper>>) -> Self {
        self.notifications = notifications;
        self
    }

    pub fn notifications(&self) -> Option<&crate::notify::Sweeper> {
        self.notifications.as_deref()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn triggers(&self) -> &TriggersFile {
        &self.triggers
    }

    /// The same file, shared (no copy).
    pub fn shared_triggers(&self) -> Arc<TriggersFile> {
        self.triggers.clone()
    }

    /// Handles one invocation: a regular tick (refused when its instant is ahead of the
    /// clock by more than [`MAX_TICK_AHEAD`]), or a manual run of one schedule at the engine
    /// clock's now.
    pub async fn handle(&self, request: TickRequest) -> Result<TickReport, SchedulerError> {
        match request {
            TickRequest::Tick { at } => {
                let now = self.engine.clock().now();
                if at > now + MAX_TICK_AHEAD {
                    return Err(SchedulerError::FutureTick { at, now });
                }
                Ok(self.tick(at).await?)
            }
            TickRequest::RunSchedule { schedule, run_id } => {
                let now = self.engine.clock().now();
                self.run_now(&schedule, now, run_id.as_deref()).await
            }
        }
    }

    /// Evaluates every schedule up to `now`, then sweeps. A schedule whose evaluation fails
    /// is reported and retried on the next tick; a store outage fails the whole tick.
    ///
    /// An idle tick — the triggers file's schedules are those the stored state was computed
    /// for, no schedule lags, and the earliest next slot is after `now` — reads the one
    /// scheduler state item and evaluates nothing: the same requests for 1 or 1,000
    /// schedules, and no write.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<TickReport, EngineError> {
        let mut report = TickReport {
            at: Some(now),
            ..TickReport::default()
        };
        let state = self.engine.store().scheduler_state().await?;
        let idle = state.as_ref().is_some_and(|state| {
            state.digest == self.current.digest
                && !state.behind
                && state.next_due.is_none_or(|due| now < due)
        });
        if idle {
            tracing::debug!(%now, "no schedule due");
        } else {
            self.evaluate_all(state.as_ref(), now, &mut report).await?;
        }
        let (sweep, left) = self.engine.sweep_leaving_slots(SWEEP_LIMIT).await?;
        report.sweep = sweep;
        report.rechecked = self.recheck_stale_claims(left, now).await?;
        Ok(report)
    }

    /// Evaluates every schedule from its cursor to `now` and saves the scheduler state (with
    /// the per-schedule definitions when they changed).
    async fn evaluate_all(
        &self,
        state: Option<&SchedulerState>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), EngineError> {
        let store = self.engine.store();
        // The stored definitions are implied by the state while the digest is the file's
        // and no schedule has an instant of its own; otherwise they are read.
        let implied = state.filter(|state| state.digest == self.current.digest && !state.behind);
        let stored = match (state, implied) {
            (Some(_), None) => store.schedule_definitions().await?,
            _ => None,
        };
        let cursor = |name: &str| -> Option<ScheduleCursor> {
            let state = state?;
            let (fingerprint, own) = match (&stored, implied) {
                (Some(stored), _) => {
                    let entry = stored.schedules.get(name)?;
                    (entry.fingerprint.clone(), entry.evaluated_through)
                }
                (None, Some(_)) => (self.current.entries.get(name)?.clone(), None),
                (None, None) => return None,
            };
            Some(ScheduleCursor {
                fingerprint,
                evaluated_through: own.unwrap_or(state.evaluated_through),
            })
        };
        let pauses = PauseLookup::default();
        let mut entries = BTreeMap::new();
        let mut behind = false;
        // Schedules are evaluated side by side (a bounded number at once), their results
        // taken in file order: a tick's duration is then about its slowest schedule's, not
        // the sum of every due schedule's CircleCI answers (a hundred nightly schedules due
        // at midnight, one after another, would outlast the function's 60 s timeout), and
        // triggers due in the same tick share the invocation's time.
        // (Collected first: a stream mapped by a closure makes the tick's future lose `Send`
        // to a higher-ranked lifetime error.)
        let pending: Vec<_> = self
            .triggers
            .schedule
            .iter()
            .map(|schedule| {
                let span = tracing::info_span!("schedule", source = %schedule.name);
                let previous = cursor(&schedule.name);
                let pauses = &pauses;
                async move {
                    let result = self
                        .evaluate(schedule, previous.as_ref(), now, pauses)
                        .instrument(span)
                        .await;
                    (schedule, previous, result)
                }
            })
            .collect();
        let evaluations = futures::stream::iter(pending)
            .buffered(SCHEDULES_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        for (schedule, previous, result) in evaluations {
            match result {
                Ok((tick, through)) => {
                    report.schedules.push(tick);
                    entries.insert(
                        schedule.name.clone(),
                        ScheduleEntry {
                            fingerprint: self.current.entry(&schedule.name),
                            evaluated_through: (through != now).then_some(through),
                        },
                    );
                }
                // The store is down: nothing can be decided or recorded; fail the tick.
                Err(EngineError::Store(error)) if error.is_retryable() => {
                    return Err(EngineError::Store(error));
                }
                // Sent, but not recorded (the store went away): fail the tick too; the
                // sweep reconciles the slot once its lease is over.
                Err(error @ EngineError::OutcomeUnknown { .. }) => return Err(error),
                // Anything else stays with this schedule: its cursor does not move, so the
                // next tick evaluates the same slots again (decided ones replay).
                Err(error) => {
                    tracing::error!(schedule = %schedule.name, %error, "schedule not evaluated");
                    behind = true;
                    if let Some(previous) = previous {
                        entries.insert(
                            schedule.name.clone(),
                            ScheduleEntry {
                                fingerprint: previous.fingerprint,
                                evaluated_through: Some(previous.evaluated_through),
                            },
                        );
                    }
                    report.schedules.push(ScheduleTick {
                        error: Some(error.to_string()),
                        ..ScheduleTick::new(&schedule.name)
                    });
                }
            }
        }
        let definitions = ScheduleDefinitions::new(entries);
        let next_due = self.next_due(&definitions, now);
        let behind = behind || definitions.has_own_instants();
        let unchanged = match (&stored, implied) {
            (Some(stored), _) => *stored == definitions,
            (None, Some(_)) => definitions.digest == self.current.digest && !behind,
            (None, None) => false,
        };
        let next = SchedulerState {
            digest: definitions.digest.clone(),
            evaluated_through: now,
            next_due,
            behind,
            updated_at: now,
        };
        let saved = store
            .save_scheduler_state(&next, (!unchanged).then_some(&definitions))
            .await?;
        if !saved {
            tracing::info!(%now, "a later tick saved the scheduler state first");
        }
        Ok(())
    }

    /// The earliest slot over every enabled schedule after the instant it was evaluated
    /// through.
    fn next_due(
        &self,
        definitions: &ScheduleDefinitions,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.triggers
            .schedule
            .iter()
            .filter(|schedule| schedule.enabled)
            .filter_map(|schedule| {
                let timing = schedule.timing().ok()?;
                let through = definitions
                    .schedules
                    .get(&schedule.name)
                    .and_then(|entry| entry.evaluated_through)
                    .unwrap_or(now);
                next_slots(&timing, through, 1).first().map(|slot| slot.at)
            })
            .min()
    }

    /// Runs one schedule now, outside its cron (the raw Lambda input
    /// `{"schedule": "<name>"}`): [`Scheduler::run`] without a slot, as operator
    /// `lambda-invoke`. A paused schedule is refused. `run_id` makes a repeated request (the
    /// same id) run once; without one, each call is its own run.
    pub async fn run_now(
        &self,
        name: &str,
        now: DateTime<Utc>,
        run_id: Option<&str>,
    ) -> Result<TickReport, SchedulerError> {
        let report = self
            .run(
                &RunRequest {
                    schedule: name.to_owned(),
                    at: None,
                    run_id: run_id.map(str::to_owned),
                    operator: "lambda-invoke".to_owned(),
                    ignore_pause: false,
                },
                now,
            )
            .await?;
        Ok(TickReport {
            at: Some(now),
            schedules: vec![report.counts],
            ..TickReport::default()
        })
    }

    /// The earliest slot strictly after `after` over every enabled schedule (for `serve`).
    pub fn next_slot_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.triggers
            .schedule
            .iter()
            .filter(|schedule| schedule.enabled)
            .filter_map(|schedule| schedule.timing().ok())
            .filter_map(|timing| next_slots(&timing, after, 1).first().map(|slot| slot.at))
            .min()
    }

    fn schedule(&self, name: &str) -> Option<&ScheduleSpec> {
        self.triggers.schedule.iter().find(|s| s.name == name)
    }

    fn known_schedules(&self) -> String {
        let names: Vec<&str> = self
            .triggers
            .schedule
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }

    /// Evaluates one schedule from `cursor` to `now`; returns what it did and the instant
    /// it is now evaluated through.
    async fn evaluate(
        &self,
        schedule: &ScheduleSpec,
        cursor: Option<&ScheduleCursor>,
        now: DateTime<Utc>,
        pauses: &PauseLookup,
    ) -> Result<(ScheduleTick, DateTime<Utc>), EngineError> {
        let store = self.engine.store();
        let mut tick = ScheduleTick::new(&schedule.name);
        let invalid = |reason: String| EngineError::NotRetryable {
            id: slot_origin(&schedule.name, "definition"),
            reason,
        };
        let timing = schedule.timing().map_err(|e| invalid(e.to_string()))?;
        let catch_up = schedule
            .catch_up_policy()
            .map_err(|e| invalid(e.to_string()))?;

        if !schedule.enabled {
            // Nothing fires; re-enabling it changes its fingerprint, so it starts from then.
            return Ok((tick, now));
        }

        let window = evaluation_window(cursor, &timing, now);
        // A cursor from long ago: enumerate only the last MAX_SCAN; the rest is summarised
        // when it holds a slot (idle ticks do not move cursors, so a yearly schedule's cursor
        // is old without anything having been missed).
        let scan_from = window.from_exclusive.max(now - MAX_SCAN);
        let unscanned = (window.from_exclusive < scan_from
            && next_slots(&timing, window.from_exclusive, 1)
                .first()
                .is_some_and(|slot| slot.at <= scan_from))
        .then_some(window.from_exclusive);
        let slots = due_slots(&timing, scan_from, window.to_inclusive);
        let decision = apply_catch_up(&catch_up, slots, now);
        let paused = if decision.fire.is_empty() {
            None
        } else {
            pauses.flag(store.as_ref(), &schedule.name).await?
        };

        let overflow = decision.skipped.len().saturating_sub(MAX_SKIPPED_ROWS);
        let (summarised, one_by_one) = decision.skipped.split_at(overflow);
        if !summarised.is_empty() || unscanned.is_some() {
            self.record_missed_summary(schedule, summarised, unscanned, scan_from, now, &mut tick)
                .await?;
        }
        for skipped in one_by_one {
            let reason = skipped.reason.to_string();
            for target in schedule.targets() {
                let intent = self.slot_intent(schedule, target, &skipped.slot, now)?;
                let fired = self.skip(intent, reason.clone()).await?;
                tick.count(&fired);
            }
        }
        let policy = schedule
            .concurrency_policy()
            .map_err(|e| invalid(e.to_string()))?;
        for slot in &decision.fire {
            // A slot's targets are independent triggers (each its own claim and record):
            // they fire side by side, and each outcome is counted.
            let caught_up = decision.on_time != Some(*slot);
            let (policy, paused) = (&policy, paused.as_ref());
            let outcomes = futures::future::join_all(schedule.targets().into_iter().map(
                |target| async move {
                    let mut intent = self.slot_intent(schedule, target, slot, now)?;
                    if caught_up {
                        // Missed (see `schedule::catch_up`), fired by the catch-up policy.
                        intent.detail.caught_up = true;
                    }
                    self.decide(schedule, policy, intent, paused, now).await
                },
            ))
            .await;
            let mut failure: Option<EngineError> = None;
            for outcome in outcomes {
                match outcome {
                    Ok(fired) => tick.count(&fired),
                    // The gravest failure is reported: one that fails the whole tick first.
                    Err(error) => {
                        if failure
                            .as_ref()
                            .is_none_or(|kept| !fails_tick(kept) && fails_tick(&error))
                        {
                            failure = Some(error);
                        }
                    }
                }
            }
            if let Some(error) = failure {
                return Err(error);
            }
        }
        // Slots after now (none, unless the window reached into the future) wait.
        let through = decision
            .not_yet_due
            .first()
            .map_or(window.to_inclusive, |slot| {
                slot.at - Duration::nanoseconds(1)
            });
        Ok((tick, through))
    }

    /// Decides one due slot × target: pause, then the concurrency policy, then the action.
    async fn decide(
        &self,
        schedule: &ScheduleSpec,
        policy: &ConcurrencyPolicy,
        intent: TriggerIntent,
        paused: Option<&PauseFlag>,
        now: DateTime<Utc>,
    ) -> Result<Fired, EngineError> {
        if let Some(flag) = paused {
            let reason = match &flag.reason {
                Some(reason) => format!("{} paused: {reason}", flag.scope),
                None => format!("{} paused", flag.scope),
            };
            return self.skip(intent, reason).await;
        }
        let guarded =
            schedule.action == ActionKind::Pipeline && policy.mode != ConcurrencyMode::Allow;
        if !guarded || self.already_decided(&intent.key).await? {
            // A decided slot replays without asking CircleCI anything.
            return self.engine.fire(intent).await;
        }
        // The check reads CircleCI before the claim is taken: two ticks racing for the same
        // slot may both look (and, for replace, both cancel the same workflows, which
        // CircleCI treats as a no-op); only the claim holder decides.
        let previous = self
            .previous_pipeline(schedule, &intent, policy, now)
            .await
            .map_err(|reason| EngineError::Unavailable {
                reason: format!("could not check the previous pipeline: {reason}"),
            })?;
        let mut intent = intent;
        match previous {
            concurrency::Previous::None => {}
            concurrency::Previous::Finished { record } => {
                intent.detail.previous_pipeline = Some(previous_note(&record, "finished"));
            }
            concurrency::Previous::Stale { record, age } => {
                // Recorded: an operator can see why a held pipeline no longer blocks.
                intent.detail.previous_pipeline = Some(PreviousPipeline {
                    age_seconds: Some(age.num_seconds()),
                    stale_after_seconds: Some(policy.stale_after.as_secs()),
                    ..previous_note(&record, "stale")
                });
            }
            concurrency::Previous::Running(running) => match policy.mode {
                ConcurrencyMode::Forbid => {
                    let reason = format!(
                        "previous pipeline {} is still running ({}; concurrency = \"forbid\")",
                        running.label(),
                        running.statuses()
                    );
                    intent.detail.blocked_by = Some(running.record.id);
                    return self.skip(intent, reason).await;
                }
                ConcurrencyMode::Replace | ConcurrencyMode::Allow => {
                    let outcome = self.cancel_running(&intent, &running).await;
                    intent.detail.replaced = Some(ReplacedPipeline {
                        trigger_id: running.record.id,
                        pipeline: running.pipeline_id.to_string(),
                        canceled_workflows: outcome.canceled,
                        cancel_failed: outcome.failed,
                    });
                }
            },
        }
        self.engine.fire(intent).await
    }

    /// Records a decision not to act, under the slot's claim (duplicates replay it).
    async fn skip(&self, mut intent: TriggerIntent, reason: String) -> Result<Fired, EngineError> {
        // Kept so a re-check after a crash mid-decision makes the same decision.
        intent.detail.skip_reason = Some(reason.clone());
        self.engine
            .decide_without_action(intent, TriggerStatus::Skipped, reason)
            .await
    }

    async fn already_decided(&self, key: &ClaimKey) -> Result<bool, EngineError> {
        Ok(self
            .engine
            .store()
            .claim_snapshot(key)
            .await?
            .is_some_and(|claim| claim.state == ClaimState::Completed))
    }

    /// One row per target standing for many missed slots (after a long outage).
    async fn record_missed_summary(
        &self,
        schedule: &ScheduleSpec,
        summarised: &[SkippedSlot],
        unscanned_from: Option<DateTime<Utc>>,
        scan_from: DateTime<Utc>,
        now: DateTime<Utc>,
        tick: &mut ScheduleTick,
    ) -> Result<(), EngineError> {
        let first = summarised.first().map(|s| s.slot.at);
        let last = summarised.last().map_or(scan_from, |s| s.slot.at);
        let from = unscanned_from.or(first).unwrap_or(scan_from);
        let slot_id = format!("missed:{}..{}", rfc3339(from), rfc3339(last));
        let mut parts = Vec::new();
        if let Some(unscanned_from) = unscanned_from {
            parts.push(format!(
                "slots between {} and {} were not evaluated (more than {} days since the last evaluation)",
                rfc3339(unscanned_from),
                rfc3339(scan_from),
                MAX_SCAN.num_days()
            ));
        }
        if let (Some(first), Some(last)) = (summarised.first(), summarised.last()) {
            let reasons: BTreeSet<String> =
                summarised.iter().map(|s| s.reason.to_string()).collect();
            parts.push(format!(
                "{} missed slot(s) from {} to {} not fired and not recorded one by one: {}",
                summarised.len(),
                rfc3339(first.slot.at),
                rfc3339(last.slot.at),
                reasons.into_iter().collect::<Vec<_>>().join("; ")
            ));
        }
        let reason = parts.join("; ");
        tracing::warn!(schedule = %schedule.name, %reason, "long gap since the last evaluation");
        let origin = slot_origin(&schedule.name, &slot_id);
        for target in schedule.targets() {
            let mut intent = self.intent(schedule, target, &slot_id, last, now, origin, false)?;
            intent.detail.missed = Some(MissedSlots {
                count: summarised.len(),
                from,
                to: last,
                first_missed: first,
                evaluated_from: unscanned_from.map(|_| scan_from),
            });
            let fired = self.skip(intent, reason.clone()).await?;
            tick.count(&fired);
        }
        Ok(())
    }

    fn slot_intent(
        &self,
        schedule: &ScheduleSpec,
        target: &TargetSpec,
        slot: &ScheduleSlot,
        now: DateTime<Utc>,
    ) -> Result<TriggerIntent, EngineError> {
        let slot_id = slot.id();
        let origin = slot_origin(&schedule.name, &slot_id);
        let mut intent = self.intent(schedule, target, &slot_id, slot.at, now, origin, false)?;
        intent.detail.slot_local = Some(slot.local.to_string());
        intent.detail.dst = slot.kind.note().map(str::to_owned);
        Ok(intent)
    }

    /// One slot × target as an intent; `slot_at` is the instant the target's parameter
    /// templates (`{{ slot.utc }}`, ...) are rendered for.
    #[allow(clippy::too_many_arguments)]
    fn intent(
        &self,
        schedule: &ScheduleSpec,
        target: &TargetSpec,
        slot_id: &str,
        slot_at: DateTime<Utc>,
        now: DateTime<Utc>,
        origin: TriggerId,
        manual: bool,
    ) -> Result<TriggerIntent, EngineError> {
        let action = schedule_action_at(schedule, target, &self.triggers, slot_at)
            .map_err(|reason| EngineError::NotRetryable { id: origin, reason })?;
        let target_id = target_identity(target);
        let key = slot_key(&schedule.name, slot_id, &target_id);
        Ok(TriggerIntent {
            fingerprint: slot_fingerprint(&key),
            key,
            source: TriggerSource::new(SourceKind::Schedule, &schedule.name),
            origin: Some(origin),
            action,
            upstream: None,
            correlation: None,
            detail: Box::new(RecordDetail {
                slot: Some(slot_id.to_owned()),
                target: Some(target_id),
                manual,
                evaluated_at: Some(now),
                ..RecordDetail::default()
            }),
        })
    }

    /// Decides again the schedule slots whose claim holder died before deciding (record
    /// still `received` after the claim's lease, found by the sweep's query of the retry
    /// index, where every undecided record is): the same key, so the claim is taken over
    /// (or adopted and reconciled when the holder had started sending) and the slot happens
    /// at most once. A slot that was being skipped is skipped; otherwise pause and the
    /// concurrency policy are applied as now.
    async fn recheck_stale_claims(
        &self,
        left: Vec<TriggerRecord>,
        now: DateTime<Utc>,
    ) -> Result<u32, EngineError> {
        let lease = Duration::from_std(self.engine.settings().lease).unwrap_or(Duration::MAX);
        let clock_now = self.engine.clock().now();
        let mut rechecked = 0;
        let stale = left.into_iter().filter(|record| {
            record.status == TriggerStatus::Received && clock_now - record.updated_at > lease
        });
        for record in stale {
            let Some(schedule) = self.schedule(&record.source.name) else {
                continue; // a schedule no longer in the file: left for an operator
            };
            let id = record.id;
            match self.redecide(schedule, record, now).await {
                Ok(Some(fired)) => {
                    rechecked += 1;
                    tracing::warn!(trigger_id = %id, outcome = ?fired.record().map(|r| r.status),
                        "stale schedule claim decided again");
                }
                Ok(None) => {}
                Err(EngineError::Store(error)) if error.is_retryable() => {
                    return Err(EngineError::Store(error));
                }
                Err(error) => {
                    tracing::error!(trigger_id = %id, %error, "stale schedule claim not decided");
                }
            }
        }
        Ok(rechecked)
    }

    async fn redecide(
        &self,
        schedule: &ScheduleSpec,
        record: TriggerRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<Fired>, EngineError> {
        let detail = &record.detail;
        let (Some(slot_id), Some(target_id)) = (detail.slot.as_deref(), detail.target.as_deref())
        else {
            return Ok(None);
        };
        let Some(target) = schedule
            .targets()
            .into_iter()
            .find(|t| target_identity(t) == target_id)
        else {
            tracing::warn!(trigger_id = %record.id, target = target_id,
                "stale claim of a target the schedule no longer has; left for an operator");
            return Ok(None);
        };
        let manual = detail.manual;
        // A slot id is its instant; a run-now's parameters were rendered for its creation.
        let slot_at = DateTime::parse_from_rfc3339(slot_id.split('#').next().unwrap_or(slot_id))
            .map_or(record.created_at, |at| at.with_timezone(&Utc));
        let mut intent = self.intent(
            schedule,
            target,
            slot_id,
            slot_at,
            now,
            record.origin,
            manual,
        )?;
        if record.claim_key.as_ref() != Some(&intent.key) {
            return Ok(None);
        }
        intent.detail = record.detail.clone();
        if let Some(reason) = &detail.skip_reason {
            return self.skip(intent, reason.clone()).await.map(Some);
        }
        if manual {
            return self.engine.fire(intent).await.map(Some);
        }
        // Every flag in one query (one round trip, not the global flag then the schedule's).
        let paused =
            PauseFlag::for_schedule(&self.engine.store().pause_flags().await?, &schedule.name);
        let policy = schedule
            .concurrency_policy()
            .map_err(|e| EngineError::NotRetryable {
                id: record.id,
                reason: e.to_string(),
            })?;
        self.decide(schedule, &policy, intent, paused.as_ref(), now)
            .await
            .map(Some)
    }
}

/// All triggers of one slot share this origin, so a fan-in can wait for them together.
pub fn slot_origin(schedule: &str, slot_id: &str) -> TriggerId {
    let key = ClaimKey::new(ClaimKind::Schedule, &[schedule, slot_id]);
    Engine::record_id_for(&key)
}

/// The exactly-once key of one slot of one schedule for one target.
pub fn slot_key(schedule: &str, slot_id: &str, target_identity: &str) -> ClaimKey {
    ClaimKey::new(ClaimKind::Schedule, &[schedule, slot_id, target_identity])
}

/// The key says everything a slot is; a changed definition (other parameters) of the same
/// slot is the same trigger, not a conflict, so a re-check after a redeploy still decides it.
fn slot_fingerprint(key: &ClaimKey) -> Fingerprint {
    Fingerprint::of(key.as_str().as_bytes())
}

/// A target's stable identity inside a schedule (its position may change between deploys).
pub fn target_identity(target: &TargetSpec) -> String {
    let reference = match (&target.branch, &target.tag) {
        (Some(branch), _) => format!("branch:{branch}"),
        (None, Some(tag)) => format!("tag:{tag}"),
        (None, None) => "default".to_owned(),
    };
    match &target.workflow {
        Some(workflow) => format!("{}@{reference}/{workflow}", target.project),
        None => format!("{}@{reference}", target.project),
    }
}

/// The action a schedule performs on one target for the slot at `slot_at`: the target's
/// parameter templates rendered in the schedule's zone, then resolved.
pub(crate) fn schedule_action_at(
    schedule: &ScheduleSpec,
    spec: &TargetSpec,
    triggers: &TriggersFile,
    slot_at: DateTime<Utc>,
) -> Result<Action, String> {
    let zone = schedule.timing().map_err(|e| e.to_string())?.zone;
    let rendered = schedule
        .render_target(spec, SlotValues { at: slot_at, zone })
        .map_err(|e| e.to_string())?;
    schedule_action(schedule, &rendered, triggers)
}

/// One target of a schedule as it would be sent for the slot at `slot_at`: parameter
/// templates rendered in the schedule's zone, the `workflow` sugar applied (`next
/// --show-parameters` prints this).
pub fn target_at(
    schedule: &ScheduleSpec,
    spec: &TargetSpec,
    settings: &crate::config::CircleCiSettings,
    slot_at: DateTime<Utc>,
) -> Result<Target, String> {
    let zone = schedule.timing().map_err(|e| e.to_string())?.zone;
    let rendered = schedule
        .render_target(spec, SlotValues { at: slot_at, zone })
        .map_err(|e| e.to_string())?;
    Target::resolve(&rendered, settings).map_err(|e| e.to_string())
}

/// The action a schedule performs on one target, parameters as written.
pub(crate) fn schedule_action(
    schedule: &ScheduleSpec,
    spec: &TargetSpec,
    triggers: &TriggersFile,
) -> Result<Action, String> {
    let action = schedule.action_fields().spec().map_err(|e| e.to_string())?;
    let target = Target::resolve(spec, &triggers.circleci).map_err(|e| e.to_string())?;
    // A slot has no origin pipeline or revision to select by: schedules act on the latest.
    Ok(Action::from_spec(
        &action,
        target,
        WorkflowSelector::Latest,
        spec.workflow.clone(),
    ))
}

fn previous_note(record: &TriggerRecord, state: &str) -> PreviousPipeline {
    PreviousPipeline {
        state: state.to_owned(),
        trigger_id: record.id,
        pipeline: record.pipeline.as_ref().map(|p| p.id.clone()),
        number: record.pipeline.as_ref().and_then(|p| p.number),
        age_seconds: None,
        stale_after_seconds: None,
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Errors that fail the whole tick rather than one schedule.
fn fails_tick(error: &EngineError) -> bool {
    matches!(error, EngineError::Store(error) if error.is_retryable())
        || matches!(error, EngineError::OutcomeUnknown { .. })
}

/// The schedules of the triggers file as the scheduler state records them, computed once.
#[derive(Debug, Clone, Default)]
struct CurrentDefinitions {
    /// Name → entry fingerprint ([`entry_fingerprint`]).
    entries: BTreeMap<String, String>,
    digest: String,
}

impl CurrentDefinitions {
    fn of(triggers: &TriggersFile) -> Self {
        let entries: BTreeMap<String, String> = triggers
            .schedule
            .iter()
            .map(|schedule| (schedule.name.clone(), entry_fingerprint(schedule)))
            .collect();
        let digest = ScheduleDefinitions::digest_of(
            entries
                .iter()
                .map(|(name, fingerprint)| (name.as_str(), fingerprint.as_str())),
        );
        Self { entries, digest }
    }

    fn entry(&self, name: &str) -> String {
        self.entries.get(name).cloned().unwrap_or_default()
    }
}

/// What the stored definitions say of a schedule: its timing's fingerprint (cron and zone),
/// marked when disabled, so that enabling it again starts it from then.
fn entry_fingerprint(schedule: &ScheduleSpec) -> String {
    match schedule.timing() {
        Ok(timing) if schedule.enabled => timing.fingerprint(),
        Ok(timing) => format!("{} (disabled)", timing.fingerprint()),
        Err(error) => format!("invalid: {error}"),
    }
}

/// Pause flags for one tick: every flag in one query, read when the first slot is to fire.
#[derive(Debug, Default)]
struct PauseLookup {
    flags: tokio::sync::OnceCell<Vec<PauseFlag>>,
}

impl PauseLookup {
    /// The global flag, else the schedule's own. The flags are read once per tick, by the
    /// first schedule with a slot to fire (the others wait for that one read).
    async fn flag(
        &self,
        store: &dyn TriggerStore,
        schedule: &str,
    ) -> Result<Option<PauseFlag>, EngineError> {
        let flags = self
            .flags
            .get_or_try_init(|| async { store.pause_flags().await })
            .await?;
        Ok(PauseFlag::for_schedule(flags, schedule))
    }
}
