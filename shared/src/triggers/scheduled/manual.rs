//! Operator runs of a schedule: now, at one of its slots (`run --at`), or every slot of a
//! range (`backfill`).
//!
//! - **Exactly once per slot.** A run at a slot uses the slot's own claim key
//!   (`schedule#name#<UTC instant>#target`), the key the tick uses: a slot the tick (or an
//!   earlier run, or a backfill) already fired replays its record and sends nothing, and a
//!   slot an operator ran is a duplicate to the tick. A slot the tick *decided not to fire*
//!   (catch-up, pause, concurrency: a `skipped` record) is run under `<slot>#run`, once —
//!   replaying a skip would make "replay the missed days" impossible.
//! - **Pause is honoured.** A paused schedule (or everything paused) is refused with the
//!   flag's reason, nothing recorded, unless the request says `ignore_pause`; the override
//!   is written on the record (`detail.ignored_pause`).
//! - Recorded as the schedule's own source with `detail.manual = true` and the operator's
//!   identity (`detail.operator`: the HTTP client's name, or the CLI user), so the sweep,
//!   the stale-claim re-check and `concurrency` see it like any slot of the schedule. The
//!   concurrency policy is not applied: the operator asked for this run.
//! - Parameter templates render for the slot's instant (`run` without `--at`: now).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{
    ScheduleTick, Scheduler, SchedulerError, rfc3339, slot_key, slot_origin, target_identity,
};
use crate::config::TriggersFile;
use crate::config::schedule::{ScheduleSpec, ScheduleTiming};
use crate::engine::{EngineError, Fired};
use crate::store::{ClaimState, PauseFlag, TriggerRecord, TriggerStatus};
use crate::triggers::scheduled::calendar::{ScheduleSlot, due_slots, next_slots};

/// Most slots one backfill may fire unless the caller raises it.
pub const DEFAULT_BACKFILL_CAP: usize = 500;

/// One operator run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub schedule: String,
    /// One of the schedule's slots (its UTC instant); `None`: now, outside the cron.
    pub at: Option<DateTime<Utc>>,
    /// Without `at`: the same id runs once (a retried request replays).
    pub run_id: Option<String>,
    /// Who asked: the HTTP client's name or the CLI user.
    pub operator: String,
    /// Run even though the schedule is paused (recorded).
    pub ignore_pause: bool,
}

/// What one run did for one target.
#[derive(Debug, Clone, Serialize)]
pub struct RunTarget {
    pub target: String,
    /// `performed` (decided by this run), `replayed` (decided before: nothing sent),
    /// `in_progress` (another invocation holds the slot right now) or `conflict`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<TriggerRecord>,
}

/// What one run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub schedule: String,
    /// The slot id: its UTC instant, or `manual:<run id>` for a run now.
    pub slot: String,
    /// The instant the parameters were rendered for.
    pub at: DateTime<Utc>,
    pub counts: ScheduleTick,
    pub targets: Vec<RunTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored_pause: Option<String>,
}

impl RunReport {
    /// The slot's state in one word, for tables: the newest status over its targets, or
    /// `replayed` when nothing was decided now.
    pub fn summary(&self) -> String {
        let mut words: Vec<String> = self
            .targets
            .iter()
            .map(|target| match (&target.record, target.outcome) {
                (Some(record), "performed") => record.status.to_string(),
                (Some(record), _) => format!("already {}", record.status),
                (None, outcome) => outcome.to_owned(),
            })
            .collect();
        words.dedup();
        words.join(", ")
    }
}

/// The slots of a backfill range and what is known about them.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillPlan {
    pub schedule: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Every slot of the cron expression in `from..=to`, ascending.
    pub slots: Vec<DateTime<Utc>>,
}

/// A backfill: run every slot of the plan, in order.
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    pub plan: BackfillPlan,
    pub operator: String,
    pub ignore_pause: bool,
    /// Stop after this many slots (the rest stay for the next run: resumable).
    pub stop_after: Option<usize>,
}

/// One slot of a backfill, as it is run.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillStep {
    /// 1-based position in the plan.
    pub index: usize,
    pub total: usize,
    pub slot: DateTime<Utc>,
    pub report: RunReport,
}

/// What a backfill did, slot by slot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillReport {
    pub steps: Vec<BackfillStep>,
    /// Slot × target counts over every step.
    pub fired: u32,
    pub replayed: u32,
    pub skipped: u32,
    pub failed: u32,
    pub in_progress: u32,
    /// Slots of the plan not run (stopped early).
    pub remaining: usize,
}

impl Scheduler {
    /// Runs each slot of the plan once, in order, through [`Scheduler::run`] (so each slot
    /// fires at most once however often the backfill is repeated or interrupted), calling
    /// `progress` after each. Pacing is the CircleCI client's token bucket: a long backfill
    /// flows at the API's rate limit instead of bouncing off it. Pause is checked for every
    /// slot, so pausing the schedule stops a running backfill.
    pub async fn backfill(
        &self,
        request: &BackfillRequest,
        mut progress: impl FnMut(&BackfillStep),
    ) -> Result<BackfillReport, SchedulerError> {
        let total = request.plan.slots.len();
        let limit = request.stop_after.unwrap_or(total).min(total);
        let mut report = BackfillReport {
            remaining: total - limit,
            ..BackfillReport::default()
        };
        for (position, at) in request.plan.slots.iter().take(limit).enumerate() {
            let run = RunRequest {
                schedule: request.plan.schedule.clone(),
                at: Some(*at),
                run_id: None,
                operator: request.operator.clone(),
                ignore_pause: request.ignore_pause,
            };
            let now = self.engine.clock().now();
            let outcome = self.run(&run, now).await?;
            report.fired += outcome.counts.fired;
            report.replayed += outcome.counts.duplicates;
            report.skipped += outcome.counts.skipped;
            report.failed += outcome.counts.failed;
            report.in_progress += outcome.counts.in_progress;
            let step = BackfillStep {
                index: position + 1,
                total,
                slot: *at,
                report: outcome,
            };
            progress(&step);
            report.steps.push(step);
        }
        Ok(report)
    }

    /// Runs one schedule for an operator: at one of its slots (exactly once per slot), or
    /// now. See the module documentation.
    pub async fn run(
        &self,
        request: &RunRequest,
        now: DateTime<Utc>,
    ) -> Result<RunReport, SchedulerError> {
        let schedule = self.known(&request.schedule)?;
        let timing = definition(schedule)?;
        let ignored_pause = self.check_pause(schedule, request).await?;
        let slot = request
            .at
            .map(|at| slot_at(schedule, &timing, at, now))
            .transpose()?;
        let (slot_id, slot_at) = match (&slot, &request.run_id) {
            (Some(slot), _) => (slot.id(), slot.at),
            (None, Some(id)) => (format!("manual:{id}"), now),
            (None, None) => (
                format!(
                    "manual:{}",
                    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
                now,
            ),
        };
        let origin = slot_origin(&schedule.name, &slot_id);
        let mut report = RunReport {
            schedule: schedule.name.clone(),
            slot: slot_id.clone(),
            at: slot_at,
            counts: ScheduleTick::new(&schedule.name),
            targets: Vec::new(),
            ignored_pause: ignored_pause.clone(),
        };
        for target in schedule.targets() {
            let mut run_id = slot_id.clone();
            if slot.is_some()
                && self
                    .decided_as_skipped(&schedule.name, &slot_id, target)
                    .await?
            {
                run_id = format!("{slot_id}#run");
            }
            let mut intent = self.intent(schedule, target, &run_id, slot_at, now, origin, true)?;
            if let Some(slot) = &slot {
                intent.detail.slot_local = Some(slot.local.to_string());
                intent.detail.dst = slot.kind.note().map(str::to_owned);
            }
            intent.detail.operator = Some(request.operator.clone());
            intent.detail.ignored_pause = ignored_pause.clone();
            let fired = self.engine.fire(intent).await?;
            report.counts.count(&fired);
            let (outcome, record) = match fired {
                Fired::Performed(record) => ("performed", Some(record)),
                Fired::Replayed(record) => ("replayed", Some(record)),
                Fired::InProgress { .. } => ("in_progress", None),
                Fired::Conflict => ("conflict", None),
            };
            report.targets.push(RunTarget {
                target: target_identity(target),
                outcome,
                record,
            });
        }
        tracing::info!(schedule = %schedule.name, slot = %slot_id, operator = %request.operator,
            fired = report.counts.fired, replayed = report.counts.duplicates, "operator run");
        Ok(report)
    }

    /// The slots of `schedule` in `from..=to` (both past), refusing more than `cap`.
    pub fn backfill_plan(
        &self,
        name: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        cap: usize,
    ) -> Result<BackfillPlan, SchedulerError> {
        backfill_plan(&self.triggers, name, from, to, now, cap)
    }

    /// What is recorded for one slot per target (its newest decision), without deciding
    /// anything: for `backfill --dry-run`. `None`: never claimed (it would fire).
    pub async fn slot_states(
        &self,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<(String, Option<TriggerStatus>)>, SchedulerError> {
        let schedule = self.known(name)?;
        let slot_id = rfc3339(at);
        let mut states = Vec::new();
        for target in schedule.targets() {
            let identity = target_identity(target);
            let mut state = None;
            for id in [format!("{slot_id}#run"), slot_id.clone()] {
                if let Some(status) = self.decided_status(&schedule.name, &id, &identity).await? {
                    state = Some(status);
                    break;
                }
            }
            states.push((identity, state));
        }
        Ok(states)
    }

    fn known(&self, name: &str) -> Result<&ScheduleSpec, SchedulerError> {
        self.schedule(name)
            .ok_or_else(|| SchedulerError::UnknownSchedule {
                name: name.to_owned(),
                known: self.known_schedules(),
            })
    }

    /// `Ok(Some(note))` when paused and overridden, `Ok(None)` when not paused.
    async fn check_pause(
        &self,
        schedule: &ScheduleSpec,
        request: &RunRequest,
    ) -> Result<Option<String>, SchedulerError> {
        // Every flag in one query (one round trip, not the global flag then the schedule's).
        let flags = self
            .engine
            .store()
            .pause_flags()
            .await
            .map_err(EngineError::from)?;
        let flag = PauseFlag::for_schedule(&flags, &schedule.name);
        let Some(flag) = flag else { return Ok(None) };
        let described = match &flag.reason {
            Some(reason) => format!("{} paused: {reason}", flag.scope),
            None => format!("{} paused", flag.scope),
        };
        if request.ignore_pause {
            Ok(Some(format!(
                "{described}; run anyway by {}",
                request.operator
            )))
        } else {
            Err(SchedulerError::Paused {
                schedule: schedule.name.clone(),
                flag: described,
            })
        }
    }

    async fn decided_as_skipped(
        &self,
        schedule: &str,
        slot_id: &str,
        target: &crate::config::TargetSpec,
    ) -> Result<bool, SchedulerError> {
        let status = self
            .decided_status(schedule, slot_id, &target_identity(target))
            .await?;
        Ok(status == Some(TriggerStatus::Skipped))
    }

    /// The status of the record of a completed claim, if the claim is completed.
    async fn decided_status(
        &self,
        schedule: &str,
        slot_id: &str,
        target_id: &str,
    ) -> Result<Option<TriggerStatus>, SchedulerError> {
        let key = slot_key(schedule, slot_id, target_id);
        let store = self.engine.store();
        let Some(claim) = store
            .claim_snapshot(&key)
            .await
            .map_err(EngineError::from)?
        else {
            return Ok(None);
        };
        if claim.state != ClaimState::Completed {
            return Ok(None);
        }
        let id = crate::engine::Engine::record_id_for(&key);
        Ok(store
            .get_record(id)
            .await
            .map_err(EngineError::from)?
            .map(|record| record.status))
    }
}

/// The slots of schedule `name` in `from..=to` (both past), refusing more than `cap`. Needs
/// only the triggers file: a `backfill --api` plans here and runs each slot remotely.
pub fn backfill_plan(
    triggers: &TriggersFile,
    name: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    cap: usize,
) -> Result<BackfillPlan, SchedulerError> {
    let schedule = triggers
        .schedule
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| SchedulerError::UnknownSchedule {
            name: name.to_owned(),
            known: triggers
                .schedule
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let timing = definition(schedule)?;
    if to < from {
        return Err(SchedulerError::InvalidRange(format!(
            "--to {} is before --from {}",
            rfc3339(to),
            rfc3339(from)
        )));
    }
    if to > now {
        return Err(SchedulerError::InvalidRange(format!(
            "--to {} is in the future (now {}): future slots fire on their own",
            rfc3339(to),
            rfc3339(now)
        )));
    }
    let slots: Vec<DateTime<Utc>> = due_slots(&timing, from - Duration::nanoseconds(1), to)
        .into_iter()
        .map(|slot| slot.at)
        .collect();
    if slots.len() > cap {
        return Err(SchedulerError::InvalidRange(format!(
            "{} slots of `{name}` between {} and {}: more than the cap of {cap}; narrow the range or raise --max",
            slots.len(),
            rfc3339(from),
            rfc3339(to)
        )));
    }
    Ok(BackfillPlan {
        schedule: name.to_owned(),
        from,
        to,
        slots,
    })
}

fn definition(schedule: &ScheduleSpec) -> Result<ScheduleTiming, SchedulerError> {
    schedule
        .timing()
        .map_err(|error| SchedulerError::Definition {
            schedule: schedule.name.clone(),
            reason: error.to_string(),
        })
}

/// The slot of `schedule` at exactly `at`, if it is one and has come.
fn slot_at(
    schedule: &ScheduleSpec,
    timing: &ScheduleTiming,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<ScheduleSlot, SchedulerError> {
    let found = due_slots(timing, at - Duration::nanoseconds(1), at)
        .into_iter()
        .find(|slot| slot.at == at);
    let Some(slot) = found else {
        let previous = due_slots(timing, at - Duration::days(31), at)
            .last()
            .map(|slot| format!("previous slot {}", slot.id()));
        let next = next_slots(timing, at, 1)
            .first()
            .map(|slot| format!("next slot {}", slot.id()));
        let around: Vec<String> = previous.into_iter().chain(next).collect();
        return Err(SchedulerError::NotASlot {
            schedule: schedule.name.clone(),
            at: rfc3339(at),
            cron: schedule.cron.clone(),
            zone: schedule.timezone.clone(),
            hint: if around.is_empty() {
                String::new()
            } else {
                format!("; {}", around.join(", "))
            },
        });
    };
    if slot.at > now {
        return Err(SchedulerError::FutureSlot {
            schedule: schedule.name.clone(),
            at: slot.at,
            now,
        });
    }
    Ok(slot)
}
