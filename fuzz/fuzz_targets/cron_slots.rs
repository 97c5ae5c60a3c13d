//! Cron expressions: parsing, and the next slots in a time zone.
//!
//! Input, one item a line: the cron expression, an IANA zone, the start instant (Unix
//! seconds) and how many slots to ask for (text, so seeds are readable and mutations stay
//! meaningful). Beyond "no panic":
//! - a parsed expression prints as text that parses to the same expression;
//! - the next slots are strictly after the start, ascending, at most as many as asked, each
//!   on a local time the expression matches, resolved by the DST rule its kind names, and
//!   within the 100-year horizon.
#![no_main]

use chrono::{DateTime, Duration, LocalResult, TimeZone, Timelike, Utc};
use libfuzzer_sys::fuzz_target;
use shared::triggers::scheduled::calendar::{ScheduleTiming, SlotKind, next_slots};
use triggers_config::cron::CronExpr;

/// Slots asked for at most: enough to cross a DST transition with an hourly cron.
const MAX_COUNT: usize = 48;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let cron_text = lines.next().unwrap_or_default();
    let zone_text = lines.next().unwrap_or_default().trim();
    let start: i64 = lines.next().unwrap_or_default().trim().parse().unwrap_or(0);
    let count: usize = lines.next().unwrap_or_default().trim().parse().unwrap_or(5);
    let count = count.min(MAX_COUNT);

    let cron = match cron_text.parse::<CronExpr>() {
        Ok(cron) => cron,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert_eq!(cron.as_str().parse::<CronExpr>().as_ref(), Ok(&cron));
    let zone = if zone_text.is_empty() {
        "UTC"
    } else {
        zone_text
    };
    let Ok(timing) = ScheduleTiming::new(cron.as_str(), zone) else {
        return;
    };
    let Some(after) = DateTime::<Utc>::from_timestamp(start, 0) else {
        return;
    };

    let slots = next_slots(&timing, after, count);
    assert!(slots.len() <= count);
    let horizon = after
        .checked_add_signed(Duration::days(100 * 366 + 2))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut previous = after;
    for slot in &slots {
        assert!(
            slot.at > previous,
            "{} not after {previous}: {slots:?}",
            slot.at
        );
        assert!(slot.at <= horizon, "{} beyond the horizon", slot.at);
        previous = slot.at;
        let local = slot.local;
        assert!(
            cron.matches_date(local.date())
                && cron.matches_time(local.hour(), local.minute())
                && local.second() == 0,
            "{local} does not match `{cron}`"
        );
        match (slot.kind, timing.zone.from_local_datetime(&local)) {
            (SlotKind::Normal, LocalResult::Single(at)) => assert_eq!(at.to_utc(), slot.at),
            (SlotKind::ShiftedFromGap, LocalResult::None) => {
                assert!(cron.is_fixed_time(), "only fixed-time entries shift");
                // Fires at the transition: within a day after the skipped wall time.
                let nominal = local.and_utc();
                assert!(
                    slot.at > nominal - Duration::hours(26)
                        && slot.at < nominal + Duration::hours(26),
                    "{local} shifted to {}",
                    slot.at
                );
            }
            (SlotKind::RepeatedFirstOnly, LocalResult::Ambiguous(a, b)) => {
                assert!(cron.is_fixed_time());
                assert_eq!(a.to_utc().min(b.to_utc()), slot.at);
            }
            (SlotKind::RepeatedFirst, LocalResult::Ambiguous(a, b)) => {
                assert!(!cron.is_fixed_time());
                assert_eq!(a.to_utc().min(b.to_utc()), slot.at);
            }
            (SlotKind::RepeatedSecond, LocalResult::Ambiguous(a, b)) => {
                assert!(!cron.is_fixed_time());
                assert_eq!(a.to_utc().max(b.to_utc()), slot.at);
            }
            (kind, resolved) => {
                panic!("{local} in {zone} is {resolved:?} but the slot is {kind:?}")
            }
        }
    }
});
