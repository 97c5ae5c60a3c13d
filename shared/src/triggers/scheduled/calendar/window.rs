//! Where evaluation of a schedule resumes: from its cursor, or from now when it is new or its
//! timing changed (no backfill from the epoch, no catch-up of another definition's slots).

use chrono::{DateTime, Duration, Utc};

use triggers_config::schedule::ScheduleTiming;

/// What the store keeps per schedule between ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleCursor {
    /// [`ScheduleTiming::fingerprint`] of the definition the cursor belongs to.
    pub fingerprint: String,
    /// Every slot up to and including this instant has been handled.
    pub evaluated_through: DateTime<Utc>,
}

/// Why the window starts where it does (worth a log line or a history note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStart {
    /// No cursor yet: the schedule is new and starts now.
    New,
    /// The cron or the zone changed: the schedule starts again now.
    Changed,
    /// Continuing from the cursor.
    Resumed,
}

/// The slots to evaluate on this tick: `due_slots(timing, from_exclusive, to_inclusive)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvaluationWindow {
    pub from_exclusive: DateTime<Utc>,
    pub to_inclusive: DateTime<Utc>,
    pub start: WindowStart,
}

/// The window for a tick at `now`. A new or changed schedule includes a slot at exactly `now`
/// (the tick of its first minute fires it) and nothing before. A cursor ahead of `now` (a clock
/// that went backwards) yields an empty window rather than moving the cursor back.
pub fn evaluation_window(
    previous: Option<&ScheduleCursor>,
    timing: &ScheduleTiming,
    now: DateTime<Utc>,
) -> EvaluationWindow {
    let starting_now = |start| EvaluationWindow {
        from_exclusive: now - Duration::nanoseconds(1),
        to_inclusive: now,
        start,
    };
    match previous {
        None => starting_now(WindowStart::New),
        Some(cursor) if cursor.fingerprint != timing.fingerprint() => {
            starting_now(WindowStart::Changed)
        }
        Some(cursor) => EvaluationWindow {
            from_exclusive: cursor.evaluated_through,
            to_inclusive: now.max(cursor.evaluated_through),
            start: WindowStart::Resumed,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::triggers::scheduled::calendar::due_slots;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn a_new_schedule_starts_at_now_inclusive_without_backfill() {
        let hourly = ScheduleTiming::new("0 * * * *", "UTC").unwrap();
        let now = utc("2026-11-28T14:00:00Z");
        let window = evaluation_window(None, &hourly, now);
        assert_eq!(window.start, WindowStart::New);
        let slots = due_slots(&hourly, window.from_exclusive, window.to_inclusive);
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].at, now);
    }

    #[test]
    fn a_changed_timing_restarts_and_an_unchanged_one_resumes() {
        let old = ScheduleTiming::new("0 2 * * *", "UTC").unwrap();
        let new = ScheduleTiming::new("0 3 * * *", "UTC").unwrap();
        let cursor = ScheduleCursor {
            fingerprint: old.fingerprint(),
            evaluated_through: utc("2026-11-20T00:00:00Z"),
        };
        let now = utc("2026-11-28T14:00:00Z");

        let changed = evaluation_window(Some(&cursor), &new, now);
        assert_eq!(changed.start, WindowStart::Changed);
        assert!(due_slots(&new, changed.from_exclusive, changed.to_inclusive).is_empty());

        let resumed = evaluation_window(Some(&cursor), &old, now);
        assert_eq!(resumed.start, WindowStart::Resumed);
        assert_eq!(resumed.from_exclusive, cursor.evaluated_through);
        assert_eq!(
            due_slots(&old, resumed.from_exclusive, resumed.to_inclusive).len(),
            9,
            "02:00 on the 20th to the 28th"
        );
    }

    #[test]
    fn a_cursor_ahead_of_the_clock_gives_an_empty_window() {
        let hourly = ScheduleTiming::new("0 * * * *", "UTC").unwrap();
        let cursor = ScheduleCursor {
            fingerprint: hourly.fingerprint(),
            evaluated_through: utc("2026-11-28T15:00:00Z"),
        };
        let window = evaluation_window(Some(&cursor), &hourly, utc("2026-11-28T14:00:00Z"));
        assert_eq!(window.from_exclusive, window.to_inclusive);
        assert!(due_slots(&hourly, window.from_exclusive, window.to_inclusive).is_empty());
    }
}
