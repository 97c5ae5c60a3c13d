//! Slots: the instants a schedule fires at, with the DST rules of the module docs.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use triggers_config::schedule::ScheduleTiming;

/// How a slot relates to its nominal local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// The local time exists once; the slot fires then.
    Normal,
    /// Fixed-time entry whose local time was skipped (clocks sprang forward): fires once at the
    /// transition, also standing for every other time of the expression that lands on that
    /// instant ([`ScheduleSlot::cron_times`]).
    ShiftedFromGap,
    /// Fixed-time entry whose local time happened twice (clocks fell back): fires at the first
    /// occurrence only.
    RepeatedFirstOnly,
    /// Wildcard entry, repeated local time, first occurrence (it fires again at the second).
    RepeatedFirst,
    /// Wildcard entry, repeated local time, second occurrence.
    RepeatedSecond,
}

impl SlotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Normal => "normal",
            SlotKind::ShiftedFromGap => "shifted_from_gap",
            SlotKind::RepeatedFirstOnly => "repeated_first_only",
            SlotKind::RepeatedFirst => "repeated_first",
            SlotKind::RepeatedSecond => "repeated_second",
        }
    }

    /// A short explanation for people, `None` for a normal slot.
    pub fn note(self) -> Option<&'static str> {
        match self {
            SlotKind::Normal => None,
            SlotKind::ShiftedFromGap => Some("skipped local time: fired at transition"),
            SlotKind::RepeatedFirstOnly => Some("repeated hour: first occurrence only"),
            SlotKind::RepeatedFirst => Some("repeated hour: first occurrence, fires again"),
            SlotKind::RepeatedSecond => Some("repeated hour: second occurrence"),
        }
    }

    /// Merge order when two candidate slots fall on the same instant: the higher one is kept.
    /// A skipped time wins, so the one run at a spring-forward transition says it was shifted
    /// even when the expression also names the transition's own wall time.
    fn precedence(self) -> u8 {
        match self {
            SlotKind::ShiftedFromGap => 3,
            SlotKind::RepeatedFirstOnly | SlotKind::RepeatedFirst | SlotKind::RepeatedSecond => 2,
            SlotKind::Normal => 1,
        }
    }
}

/// One firing of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScheduleSlot {
    /// The instant it fires; a slot's identity (claim keys use it).
    pub at: DateTime<Utc>,
    /// The nominal wall time the cron expression named (for a shifted slot, the earliest
    /// skipped time it stands for).
    pub local: NaiveDateTime,
    pub kind: SlotKind,
    /// How many times of the cron expression fire as this one slot: 1, except at a
    /// spring-forward transition, where every skipped time (and the transition's own wall
    /// time, if named) lands on the same instant and fires once — cronie would run each.
    pub cron_times: u16,
}

impl ScheduleSlot {
    /// The slot's identity as text: its UTC instant in RFC 3339, e.g. `2026-03-29T01:00:00Z`.
    pub fn id(&self) -> String {
        self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// The wall time at which it actually fires, with the zone's offset.
    pub fn local_in(&self, zone: Tz) -> DateTime<Tz> {
        self.at.with_timezone(&zone)
    }
}

/// The slots with `from_exclusive < at <= to_inclusive`, ascending by instant.
///
/// Cost is proportional to the matching days in the window times the cron's times per day:
/// non-matching months are skipped whole, minutes are never stepped through one by one.
pub fn due_slots(
    timing: &ScheduleTiming,
    from_exclusive: DateTime<Utc>,
    to_inclusive: DateTime<Utc>,
) -> Vec<ScheduleSlot> {
    // Far outside any real schedule, local-time arithmetic would leave chrono's range.
    let from_exclusive = from_exclusive.max(earliest_supported());
    let to_inclusive = to_inclusive.min(latest_supported());
    if to_inclusive <= from_exclusive {
        return Vec::new();
    }
    // A slot fires within a day of its nominal local time (a skipped interval is shorter than a
    // day, and a repeated time maps to itself), so two days of margin catch every candidate;
    // the instant filter below decides.
    let margin = Duration::days(2);
    let first_date = local_date(timing.zone, from_exclusive - margin);
    let last_date = local_date(timing.zone, to_inclusive + margin);
    let mut by_instant: BTreeMap<DateTime<Utc>, ScheduleSlot> = BTreeMap::new();
    let mut next = timing.cron.next_date(first_date, last_date);
    while let Some(date) = next {
        for hour in timing.cron.hours() {
            for minute in timing.cron.minutes() {
                let Some(local) = date.and_hms_opt(hour, minute, 0) else {
                    continue;
                };
                for slot in resolve(timing, local).into_iter().flatten() {
                    if slot.at > from_exclusive && slot.at <= to_inclusive {
                        merge(&mut by_instant, slot);
                    }
                }
            }
        }
        next = date
            .succ_opt()
            .and_then(|following| timing.cron.next_date(following, last_date));
    }
    by_instant.into_values().collect()
}

/// How far [`next_slots`] looks ahead, in years.
pub const LOOK_AHEAD_YEARS: i64 = 100;

/// The end of [`next_slots`]' look-ahead from `after`: [`LOOK_AHEAD_YEARS`] later, or the end
/// of the supported range if that comes first. Fewer slots than asked for means none other
/// falls before this instant.
pub fn look_ahead_end(after: DateTime<Utc>) -> DateTime<Utc> {
    after
        .checked_add_signed(Duration::days(LOOK_AHEAD_YEARS * 366))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .min(latest_supported())
}

/// The next `count` slots strictly after `after`, ascending, up to [`look_ahead_end`].
pub fn next_slots(
    timing: &ScheduleTiming,
    after: DateTime<Utc>,
    count: usize,
) -> Vec<ScheduleSlot> {
    let horizon = look_ahead_end(after);
    let mut found = Vec::with_capacity(count.min(1024));
    let mut from = after;
    // Windows double in length, so a rare date (29 February) costs a handful of calls and a
    // frequent one (every minute) computes barely more than it returns.
    let mut span = Duration::hours(6);
    while found.len() < count && from < horizon {
        let to = from
            .checked_add_signed(span)
            .unwrap_or(horizon)
            .min(horizon);
        let wanted = count - found.len();
        found.extend(due_slots(timing, from, to).into_iter().take(wanted));
        from = to;
        span = (span * 2).min(Duration::days(4 * 366));
    }
    found
}

/// Evaluation covers years 1900 to 9999 (chrono-tz's data ends long before either matters).
fn earliest_supported() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1900, 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MIN_UTC, |naive| naive.and_utc())
}

fn latest_supported() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 30)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |naive| naive.and_utc())
}

fn local_date(zone: Tz, instant: DateTime<Utc>) -> NaiveDate {
    instant.with_timezone(&zone).date_naive()
}

/// One slot per instant: candidates on the same instant (only at a spring-forward transition)
/// become one slot with the kind of the highest precedence and the earliest local time of that
/// kind, counting every candidate in `cron_times`.
fn merge(by_instant: &mut BTreeMap<DateTime<Utc>, ScheduleSlot>, slot: ScheduleSlot) {
    by_instant
        .entry(slot.at)
        .and_modify(|kept| {
            let better = slot.kind.precedence() > kept.kind.precedence()
                || (slot.kind.precedence() == kept.kind.precedence() && slot.local < kept.local);
            let cron_times = kept.cron_times.saturating_add(slot.cron_times);
            if better {
                *kept = slot;
            }
            kept.cron_times = cron_times;
        })
        .or_insert(slot);
}

/// The slots (none, one or two) a matching local time produces.
fn resolve(timing: &ScheduleTiming, local: NaiveDateTime) -> [Option<ScheduleSlot>; 2] {
    let slot = |at: DateTime<Utc>, kind| {
        Some(ScheduleSlot {
            at,
            local,
            kind,
            cron_times: 1,
        })
    };
    match timing.zone.from_local_datetime(&local) {
        LocalResult::Single(at) => [slot(at.to_utc(), SlotKind::Normal), None],
        LocalResult::Ambiguous(one, other) => {
            let (first, second) = if one <= other {
                (one, other)
            } else {
                (other, one)
            };
            if timing.cron.is_fixed_time() {
                [slot(first.to_utc(), SlotKind::RepeatedFirstOnly), None]
            } else {
                [
                    slot(first.to_utc(), SlotKind::RepeatedFirst),
                    slot(second.to_utc(), SlotKind::RepeatedSecond),
                ]
            }
        }
        LocalResult::None if timing.cron.is_fixed_time() => [
            transition_past(timing.zone, local).and_then(|at| slot(at, SlotKind::ShiftedFromGap)),
            None,
        ],
        LocalResult::None => [None, None],
    }
}

/// The first instant whose wall time is later than `local`, a time inside a skipped interval:
/// the transition that skipped it.
fn transition_past(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let wall = |instant: i64| {
        DateTime::from_timestamp(instant, 0).map(|at| at.with_timezone(&zone).naive_local())
    };
    let nominal = local.and_utc().timestamp();
    // UTC offsets stay within ±26 hours (LMT included), so the wall time is before `local`
    // at the low end and after it at the high end. Wall time only jumps over `local` at the
    // transition, so the search is well defined.
    let (mut before, mut after) = (nominal - 26 * 3600, nominal + 26 * 3600);
    if wall(before)? > local || wall(after)? <= local {
        return None;
    }
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        if wall(middle)? > local {
            after = middle;
        } else {
            before = middle;
        }
    }
    DateTime::from_timestamp(after, 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn timing(cron: &str, zone: &str) -> ScheduleTiming {
        ScheduleTiming::new(cron, zone).unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn gap_transition_is_found_to_the_second() {
        let local = NaiveDate::from_ymd_opt(2026, 3, 29)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(
            transition_past(Tz::Europe__Berlin, local),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn an_empty_or_reversed_window_has_no_slots() {
        let every_minute = timing("* * * * *", "UTC");
        let at = utc("2026-11-28T12:00:00Z");
        assert!(due_slots(&every_minute, at, at).is_empty());
        assert!(due_slots(&every_minute, at, at - Duration::hours(1)).is_empty());
        assert_eq!(
            due_slots(&every_minute, at - Duration::minutes(1), at).len(),
            1
        );
    }

    #[test]
    fn the_end_of_time_is_not_a_panic() {
        let daily = timing("0 2 * * *", "Europe/Berlin");
        assert!(next_slots(&daily, DateTime::<Utc>::MAX_UTC - Duration::days(3), 5).is_empty());
        let late = utc("9999-12-20T00:00:00Z");
        let slots = next_slots(&daily, late, 30);
        assert_eq!(slots.len(), 10, "{slots:?}");
        assert_eq!(slots[0].at, utc("9999-12-20T01:00:00Z"));
        let early = DateTime::<Utc>::MIN_UTC;
        assert!(due_slots(&daily, early, early + Duration::days(2)).is_empty());
    }

    #[test]
    fn same_instant_candidates_merge_into_one_shifted_slot() {
        // 02:00 and 02:30 are skipped in Berlin on 2026-03-29 and shift to 01:00 UTC, which is
        // also 03:00 CEST: three times of the expression, one run, labelled shifted.
        let two_and_three = timing("0,30 2,3 29 3 *", "Europe/Berlin");
        let slots = due_slots(
            &two_and_three,
            utc("2026-03-29T00:00:00Z"),
            utc("2026-03-29T03:00:00Z"),
        );
        assert_eq!(slots.len(), 2, "{slots:?}");
        assert_eq!(slots[0].kind, SlotKind::ShiftedFromGap);
        assert_eq!(slots[0].at, utc("2026-03-29T01:00:00Z"));
        assert_eq!(slots[0].local.to_string(), "2026-03-29 02:00:00");
        assert_eq!(slots[0].cron_times, 3);
        assert_eq!(slots[1].kind, SlotKind::Normal);
        assert_eq!(slots[1].at, utc("2026-03-29T01:30:00Z"));
        assert_eq!(slots[1].cron_times, 1);
    }
}
