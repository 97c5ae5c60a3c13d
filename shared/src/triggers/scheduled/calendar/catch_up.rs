//! Catch-up: which due slots fire when the scheduler was down or late, and why the others
//! don't (each skipped slot carries its reason, for the history row).

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use triggers_config::schedule::{CatchUpMode, CatchUpPolicy};

use super::slots::ScheduleSlot;

/// A slot evaluated at most this long after its instant is on time, not missed. The tick runs
/// every minute and evaluates with EventBridge's scheduled time, so on-time slots are late by
/// seconds; the grace absorbs a dropped or throttled tick without invoking catch-up rules.
pub const DEFAULT_ON_TIME_GRACE: Duration = Duration::minutes(5);

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

/// The outcome for a batch of due slots. Every input slot is in exactly one list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUpDecision {
    /// Fire these, ascending by instant.
    pub fire: Vec<ScheduleSlot>,
    /// Record these as skipped, ascending by instant.
    pub skipped: Vec<SkippedSlot>,
    /// Slots after `now` (the caller passed a window reaching into the future); neither fired
    /// nor skipped: leave them for a later tick.
    pub not_yet_due: Vec<ScheduleSlot>,
}

/// Applies the catch-up policy to due slots at `now`. Slots at most `on_time_grace` old fire;
/// older ones are *missed*: those older than the policy's `max_age` are skipped, then `skip`
/// skips the rest, `latest` fires the newest (none if an on-time slot fires), `all` fires the
/// newest `max_count`.
pub fn apply_catch_up(
    policy: &CatchUpPolicy,
    slots: impl IntoIterator<Item = ScheduleSlot>,
    now: DateTime<Utc>,
    on_time_grace: Duration,
) -> CatchUpDecision {
    let mut slots: Vec<ScheduleSlot> = slots.into_iter().collect();
    slots.sort_by_key(|slot| slot.at);
    let max_age = Duration::from_std(policy.max_age).unwrap_or(Duration::MAX);
    let mut decision = CatchUpDecision::default();
    let mut on_time = Vec::new();
    let mut missed = Vec::new();
    for slot in slots {
        let lateness = now - slot.at;
        if lateness < Duration::zero() {
            decision.not_yet_due.push(slot);
        } else if lateness <= on_time_grace {
            on_time.push(slot);
        } else if lateness > max_age && policy.mode != CatchUpMode::Skip {
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
        CatchUpMode::Latest if on_time.is_empty() => missed.len().min(1),
        CatchUpMode::Latest => 0,
        CatchUpMode::All => missed
            .len()
            .min(usize::try_from(policy.max_count).unwrap_or(usize::MAX)),
    };
    let newest_firing = on_time.last().or(missed.last()).map(|slot| slot.at);
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
    decision.fire.extend(on_time);
    decision.skipped.sort_by_key(|skipped| skipped.slot.at);
    decision
}

/// Slots older than this are skipped whatever happens, so a tick resuming after a long outage
/// may start its window here (recording one summary instead of a row per ancient slot).
pub fn oldest_relevant_slot(
    policy: &CatchUpPolicy,
    now: DateTime<Utc>,
    on_time_grace: Duration,
) -> DateTime<Utc> {
    let reach = match policy.mode {
        CatchUpMode::Skip => on_time_grace,
        CatchUpMode::Latest | CatchUpMode::All => Duration::from_std(policy.max_age)
            .unwrap_or(Duration::MAX)
            .max(on_time_grace),
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
        }
    }

    fn policy(mode: CatchUpMode, max_count: u32, max_age_hours: u64) -> CatchUpPolicy {
        CatchUpPolicy {
            mode,
            max_count,
            max_age: StdDuration::from_secs(max_age_hours * 3600),
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

    #[test]
    fn skip_fires_only_on_time_slots() {
        let now = now();
        let decision = apply_catch_up(
            &policy(CatchUpMode::Skip, 0, 24),
            hourly(now),
            now,
            DEFAULT_ON_TIME_GRACE,
        );
        assert_eq!(minutes_ago(&decision.fire, now), [0]);
        assert_eq!(decision.skipped.len(), 5);
        assert!(
            decision
                .skipped
                .iter()
                .all(|s| s.reason == SkipReason::CatchUpDisabled)
        );
        assert!(
            decision
                .skipped
                .windows(2)
                .all(|w| w[0].slot.at < w[1].slot.at)
        );
    }

    #[test]
    fn latest_fires_the_newest_missed_slot_unless_an_on_time_slot_supersedes_it() {
        let now = now();
        let without_on_time: Vec<_> = hourly(now).into_iter().skip(1).collect();
        let decision = apply_catch_up(
            &policy(CatchUpMode::Latest, 1, 24),
            without_on_time,
            now,
            DEFAULT_ON_TIME_GRACE,
        );
        assert_eq!(minutes_ago(&decision.fire, now), [60]);
        assert_eq!(decision.skipped.len(), 4);
        let by = now - Duration::hours(1);
        assert!(
            decision
                .skipped
                .iter()
                .all(|s| s.reason == SkipReason::Superseded { by })
        );

        let with_on_time = apply_catch_up(
            &policy(CatchUpMode::Latest, 1, 24),
            hourly(now),
            now,
            DEFAULT_ON_TIME_GRACE,
        );
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
    fn all_fires_the_newest_missed_slots_up_to_the_cap_plus_on_time_ones() {
        let now = now();
        let decision = apply_catch_up(
            &policy(CatchUpMode::All, 3, 24),
            hourly(now),
            now,
            DEFAULT_ON_TIME_GRACE,
        );
        assert_eq!(minutes_ago(&decision.fire, now), [180, 120, 60, 0]);
        assert_eq!(
            minutes_ago(
                &decision.skipped.iter().map(|s| s.slot).collect::<Vec<_>>(),
                now
            ),
            [300, 240]
        );
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
        let decision = apply_catch_up(
            &policy(CatchUpMode::All, 10, 2),
            hourly(now),
            now,
            DEFAULT_ON_TIME_GRACE,
        );
        assert_eq!(minutes_ago(&decision.fire, now), [120, 60, 0]);
        assert_eq!(decision.skipped.len(), 3);
        assert!(decision.skipped.iter().all(|s| matches!(
            s.reason,
            SkipReason::TooOld { max_age } if max_age == StdDuration::from_secs(7200)
        )));

        // latest: the newest missed slot is too old, so nothing catches up.
        let stale: Vec<_> = hourly(now).into_iter().skip(3).collect();
        let decision = apply_catch_up(
            &policy(CatchUpMode::Latest, 1, 2),
            stale,
            now,
            DEFAULT_ON_TIME_GRACE,
        );
        assert!(decision.fire.is_empty());
        assert_eq!(decision.skipped.len(), 3);
    }

    #[test]
    fn grace_decides_on_time_and_future_slots_are_left_alone() {
        let now = now();
        let slots = vec![slot(-1, now), slot(4, now), slot(6, now)];
        let decision = apply_catch_up(
            &policy(CatchUpMode::Skip, 0, 24),
            slots,
            now,
            DEFAULT_ON_TIME_GRACE,
        );
        assert_eq!(minutes_ago(&decision.fire, now), [4]);
        assert_eq!(decision.skipped.len(), 1);
        assert_eq!(minutes_ago(&decision.not_yet_due, now), [-1]);
    }

    #[test]
    fn oldest_relevant_slot_follows_the_policy() {
        let now = now();
        assert_eq!(
            oldest_relevant_slot(
                &policy(CatchUpMode::Skip, 0, 24),
                now,
                DEFAULT_ON_TIME_GRACE
            ),
            now - DEFAULT_ON_TIME_GRACE
        );
        assert_eq!(
            oldest_relevant_slot(&policy(CatchUpMode::All, 5, 6), now, DEFAULT_ON_TIME_GRACE),
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
