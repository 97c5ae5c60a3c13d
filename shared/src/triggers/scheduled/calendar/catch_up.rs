//! Catch-up: which due slots fire when the scheduler was down or late, and why the others
//! don't (each skipped slot carries its reason, for the history row).
//!
//! **Lateness is defined once, here.** A tick evaluates a schedule's window (its cursor, the
//! instant through which every slot was decided, to the tick's own instant). The newest due
//! slot of that window is *on time* when the tick's instant is at most the schedule's `grace`
//! after it; every other due slot is *missed*. The tick's instant is the time it stands for
//! (the Lambda: EventBridge Scheduler's scheduled time, the same in the scheduler's retries of
//! that tick; `serve`: the slot instant it woke for, or its start), not the moment the code
//! runs, so every delivery of one tick decides alike. An older slot in the window is missed
//! whatever its lateness: a later slot of the same schedule came before this tick, so the
//! tick for the older one should have run and did not.
//!
//! An on-time slot always fires; missed slots go through the policy: those older than
//! `max_catch_up_age` are skipped, then `skip` fires none, `latest` fires the newest (none when
//! the on-time slot fires), `all` fires the newest `max_catch_up`.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use triggers_config::schedule::{CatchUpMode, CatchUpPolicy};

use super::slots::ScheduleSlot;

/// Why a due slot does not fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Missed, and the schedule says `catch_up = "skip"`.
    CatchUpDisabled,
    /// Missed by more than `max_catch_up_age`.
    TooOld { max_age: std::time::Duration },
    /// `catch_up = "latest"`: a newer slot fires instead.
    Superseded { by: DateTime<Utc> },
    /// `catch_up = "all"`: more missed slots than `max_catch_up`; the newest ones fire.
    OverLimit { max_count: u32 },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::CatchUpDisabled => f.write_str("missed slot; catch_up = \"skip\""),
            SkipReason::TooOld { max_age } => write!(
                f,
                "missed by more than max_catch_up_age ({}s)",
                max_age.as_secs()
            ),
            SkipReason::Superseded { by } => write!(
                f,
                "missed slot superseded by the slot at {}; catch_up = \"latest\"",
                by.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            SkipReason::OverLimit { max_count } => write!(
                f,
                "more than max_catch_up ({max_count}) missed slots; only the newest fire"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedSlot {
    pub slot: ScheduleSlot,
    pub reason: SkipReason,
}

/// The outcome for a batch of due slots. Every input slot is in exactly one of `on_time`,
/// `caught_up`, `skipped` and `not_yet_due`; `fire` is `caught_up` then `on_time`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUpDecision {
    /// Fire these, ascending by instant.
    pub fire: Vec<ScheduleSlot>,
    /// The slot of `fire` that is on time, if any (the newest due slot, within the grace).
    pub on_time: Option<ScheduleSlot>,
    /// Record these as skipped, ascending by instant.
    pub skipped: Vec<SkippedSlot>,
    /// Slots after `now` (the caller passed a window reaching into the future); neither fired
    /// nor skipped: leave them for a later tick.
    pub not_yet_due: Vec<ScheduleSlot>,
}

impl CatchUpDecision {
    /// The missed slots that fire anyway (the policy caught them up), ascending.
    pub fn caught_up(&self) -> impl Iterator<Item = &ScheduleSlot> {
        self.fire
            .iter()
            .filter(move |slot| Some(**slot) != self.on_time)
    }
}

/// Applies the catch-up policy to the due slots of one evaluation window, for a tick at `now`
/// (see the module docs: only the newest due slot can be on time, within `policy.grace`).
pub fn apply_catch_up(
    policy: &CatchUpPolicy,
    slots: impl IntoIterator<Item = ScheduleSlot>,
    now: DateTime<Utc>,
) -> CatchUpDecision {
    let mut slots: Vec<ScheduleSlot> = slots.into_iter().collect();
    slots.sort_by_key(|slot| slot.at);
    let mut decision = CatchUpDecision::default();
    let due_count = slots.partition_point(|slot| slot.at <= now);
    decision.not_yet_due = slots.split_off(due_count);
    let mut due = slots;
    let grace = Duration::from_std(policy.grace).unwrap_or(Duration::MAX);
    if due.last().is_some_and(|newest| now - newest.at <= grace) {
        decision.on_time = due.pop();
    }

    let max_age = Duration::from_std(policy.max_age).unwrap_or(Duration::MAX);
    let mut missed = Vec::with_capacity(due.len());
    for slot in due {
        if now - slot.at > max_age && policy.mode != CatchUpMode::Skip {
            decision.skipped.push(SkippedSlot {
                slot,
                reason: SkipReason::TooOld {
                    max_age: policy.max_age,
                },
            });
        } else {
            missed.push(slot);
        }
    }
    let firing_missed: usize = match policy.mode {
        CatchUpMode::Skip => 0,
        CatchUpMode::Latest if decision.on_time.is_none() => missed.len().min(1),
        CatchUpMode::Latest => 0,
        CatchUpMode::All => missed
            .len()
            .min(usize::try_from(policy.max_count).unwrap_or(usize::MAX)),
    };
    let newest_firing = decision
        .on_time
        .or(missed.last().copied())
        .map(|slot| slot.at);
    let skipped_count = missed.len() - firing_missed;
    for slot in missed.drain(..skipped_count) {
        let reason = match (policy.mode, newest_firing) {
            (CatchUpMode::Latest, Some(by)) => SkipReason::Superseded { by },
            (CatchUpMode::All, _) => SkipReason::OverLimit {
                max_count: policy.max_count,
            },
            _ => SkipReason::CatchUpDisabled,
        };
        decision.skipped.push(SkippedSlot { slot, reason });
    }
    decision.fire = missed;
    decision.fire.extend(decision.on_time);
    decision.skipped.sort_by_key(|skipped| skipped.slot.at);
    decision
}

/// Slots older than this are skipped whatever happens, so a tick resuming after a long outage
/// may start its window here (recording one summary instead of a row per ancient slot).
pub fn oldest_relevant_slot(policy: &CatchUpPolicy, now: DateTime<Utc>) -> DateTime<Utc> {
    let grace = Duration::from_std(policy.grace).unwrap_or(Duration::MAX);
    let reach = match policy.mode {
        CatchUpMode::Skip => grace,
        CatchUpMode::Latest | CatchUpMode::All => Duration::from_std(policy.max_age)
            .unwrap_or(Duration::MAX)
            .max(grace),
    };
    now.checked_sub_signed(reach)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration as StdDuration;

    use super::*;
    use crate::triggers::scheduled::calendar::SlotKind;

    fn slot(minutes_ago: i64, now: DateTime<Utc>) -> ScheduleSlot {
        let at = now - Duration::minutes(minutes_ago);
        ScheduleSlot {
            at,
            local: at.naive_utc(),
            kind: SlotKind::Normal,
            cron_times: 1,
        }
    }

    fn policy(mode: CatchUpMode, max_count: u32, max_age_hours: u64) -> CatchUpPolicy {
        CatchUpPolicy {
            mode,
            max_count,
            max_age: StdDuration::from_secs(max_age_hours * 3600),
            grace: StdDuration::from_secs(120),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T14:00:00Z")
            .unwrap()
            .to_utc()
    }

    /// Hourly slots 0..=5 hours ago, newest last after sorting.
    fn hourly(now: DateTime<Utc>) -> Vec<ScheduleSlot> {
        (0..=5).map(|hours| slot(hours * 60, now)).collect()
    }

    fn minutes_ago(slots: &[ScheduleSlot], now: DateTime<Utc>) -> Vec<i64> {
        slots.iter().map(|s| (now - s.at).num_minutes()).collect()
    }

    fn skipped_minutes_ago(decision: &CatchUpDecision, now: DateTime<Utc>) -> Vec<i64> {
        let slots: Vec<ScheduleSlot> = decision.skipped.iter().map(|s| s.slot).collect();
        minutes_ago(&slots, now)
    }

    #[test]
    fn skip_fires_only_the_on_time_slot() {
        let now = now();
        let decision = apply_catch_up(&policy(CatchUpMode::Skip, 0, 24), hourly(now), now);
        assert_eq!(minutes_ago(&decision.fire, now), [0]);
        assert_eq!(decision.on_time.map(|s| s.at), Some(now));
        assert_eq!(decision.caught_up().count(), 0);
        assert_eq!(
            skipped_minutes_ago(&decision, now),
            [300, 240, 180, 120, 60]
        );
        assert!(
            decision
                .skipped
                .iter()
                .all(|s| s.reason == SkipReason::CatchUpDisabled)
        );
    }

    #[test]
    fn latest_fires_the_newest_missed_slot_unless_the_on_time_slot_supersedes_it() {
        let now = now();
        let without_on_time: Vec<_> = hourly(now).into_iter().skip(1).collect();
        let decision = apply_catch_up(&policy(CatchUpMode::Latest, 1, 24), without_on_time, now);
        assert_eq!(minutes_ago(&decision.fire, now), [60]);
        assert_eq!(decision.on_time, None);
        assert_eq!(decision.caught_up().count(), 1);
        assert_eq!(decision.skipped.len(), 4);
        let by = now - Duration::hours(1);
        assert!(
            decision
                .skipped
                .iter()
                .all(|s| s.reason == SkipReason::Superseded { by })
        );

        let with_on_time = apply_catch_up(&policy(CatchUpMode::Latest, 1, 24), hourly(now), now);
        assert_eq!(minutes_ago(&with_on_time.fire, now), [0]);
        assert_eq!(with_on_time.skipped.len(), 5);
        assert!(
            with_on_time
                .skipped
                .iter()
                .all(|s| s.reason == SkipReason::Superseded { by: now })
        );
    }

    #[test]
    fn all_fires_the_newest_missed_slots_up_to_the_cap_plus_the_on_time_one() {
        let now = now();
        let decision = apply_catch_up(&policy(CatchUpMode::All, 3, 24), hourly(now), now);
        assert_eq!(minutes_ago(&decision.fire, now), [180, 120, 60, 0]);
        let caught_up: Vec<ScheduleSlot> = decision.caught_up().copied().collect();
        assert_eq!(minutes_ago(&caught_up, now), [180, 120, 60]);
        assert_eq!(skipped_minutes_ago(&decision, now), [300, 240]);
        assert!(
            decision
                .skipped
                .iter()
                .all(|s| s.reason == SkipReason::OverLimit { max_count: 3 })
        );
    }

    #[test]
    fn the_age_cap_applies_before_the_mode() {
        let now = now();
        let decision = apply_catch_up(&policy(CatchUpMode::All, 10, 2), hourly(now), now);
        assert_eq!(minutes_ago(&decision.fire, now), [120, 60, 0]);
        assert_eq!(decision.skipped.len(), 3);
        assert!(decision.skipped.iter().all(|s| matches!(
            s.reason,
            SkipReason::TooOld { max_age } if max_age == StdDuration::from_secs(7200)
        )));

        // latest: the newest missed slot is too old, so nothing catches up.
        let stale: Vec<_> = hourly(now).into_iter().skip(3).collect();
        let decision = apply_catch_up(&policy(CatchUpMode::Latest, 1, 2), stale, now);
        assert!(decision.fire.is_empty());
        assert_eq!(decision.skipped.len(), 3);
    }

    #[test]
    fn only_the_newest_due_slot_can_be_on_time_and_only_within_the_grace() {
        let now = now();
        // Every slot is within the two-minute grace, but a later one came before this tick:
        // only the newest is on time, the others were missed.
        let minutely = vec![slot(2, now), slot(1, now), slot(0, now)];
        let decision = apply_catch_up(&policy(CatchUpMode::Skip, 0, 24), minutely, now);
        assert_eq!(minutes_ago(&decision.fire, now), [0]);
        assert_eq!(skipped_minutes_ago(&decision, now), [2, 1]);

        // The newest slot exactly at the grace is on time; a second later it is missed.
        let at_grace = apply_catch_up(&policy(CatchUpMode::Skip, 0, 24), [slot(2, now)], now);
        assert_eq!(minutes_ago(&at_grace.fire, now), [2]);
        let past_grace = apply_catch_up(
            &policy(CatchUpMode::Skip, 0, 24),
            [slot(2, now)],
            now + Duration::seconds(1),
        );
        assert!(past_grace.fire.is_empty());
        assert_eq!(past_grace.skipped.len(), 1);

        // A zero grace: only a tick at the slot's own instant is on time.
        let strict = CatchUpPolicy {
            grace: StdDuration::ZERO,
            ..policy(CatchUpMode::Skip, 0, 24)
        };
        assert_eq!(apply_catch_up(&strict, [slot(0, now)], now).fire.len(), 1);
        let late = apply_catch_up(&strict, [slot(0, now)], now + Duration::seconds(1));
        assert!(late.fire.is_empty());
    }

    #[test]
    fn future_slots_are_left_alone_and_do_not_count_as_newer() {
        let now = now();
        let slots = vec![slot(-1, now), slot(1, now), slot(6, now)];
        let decision = apply_catch_up(&policy(CatchUpMode::Skip, 0, 24), slots, now);
        assert_eq!(minutes_ago(&decision.fire, now), [1]);
        assert_eq!(skipped_minutes_ago(&decision, now), [6]);
        assert_eq!(minutes_ago(&decision.not_yet_due, now), [-1]);
    }

    #[test]
    fn oldest_relevant_slot_follows_the_policy() {
        let now = now();
        assert_eq!(
            oldest_relevant_slot(&policy(CatchUpMode::Skip, 0, 24), now),
            now - Duration::minutes(2)
        );
        assert_eq!(
            oldest_relevant_slot(&policy(CatchUpMode::All, 5, 6), now),
            now - Duration::hours(6)
        );
    }

    #[test]
    fn reasons_read_well_in_history() {
        let by = now();
        assert_eq!(
            SkipReason::Superseded { by }.to_string(),
            "missed slot superseded by the slot at 2026-11-28T14:00:00Z; catch_up = \"latest\""
        );
        assert_eq!(
            SkipReason::TooOld {
                max_age: StdDuration::from_secs(21_600)
            }
            .to_string(),
            "missed by more than max_catch_up_age (21600s)"
        );
    }
}
