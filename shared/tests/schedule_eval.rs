//! Schedule evaluation across real DST transitions, checked against fixed instants and against
//! an independent model of cronie's main loop.
//!
//! Transition instants used below (chrono-tz data, also checked by `transitions_are_where_the_tests_expect`):
//! - Europe/Berlin: 2026-03-29T01:00Z (02:00 CET -> 03:00 CEST), 2026-10-25T01:00Z (03:00 CEST -> 02:00 CET)
//! - America/New_York: 2026-03-08T07:00Z (02:00 EST -> 03:00 EDT), 2026-11-01T06:00Z (02:00 EDT -> 01:00 EST)
//! - Australia/Lord_Howe: 2026-04-04T15:00Z (02:00 +11 -> 01:30 +10:30), 2026-10-03T15:30Z (02:00 +10:30 -> 02:30 +11)
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use shared::triggers::scheduled::calendar::{
    ScheduleSlot, ScheduleTiming, SlotKind, due_slots, next_slots,
};

fn timing(cron: &str, zone: &str) -> ScheduleTiming {
    ScheduleTiming::new(cron, zone).unwrap()
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn local(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap()
}

/// (UTC instant, nominal local time, kind) for compact comparisons.
fn described(slots: &[ScheduleSlot]) -> Vec<(String, String, SlotKind)> {
    slots
        .iter()
        .map(|slot| {
            (
                slot.id(),
                slot.local.format("%Y-%m-%d %H:%M").to_string(),
                slot.kind,
            )
        })
        .collect()
}

fn row(at: &str, local: &str, kind: SlotKind) -> (String, String, SlotKind) {
    (at.to_owned(), local.to_owned(), kind)
}

#[test]
fn transitions_are_where_the_tests_expect() {
    let offset_minutes = |zone: Tz, at: &str| {
        zone.offset_from_utc_datetime(&utc(at).naive_utc())
            .fix()
            .local_minus_utc()
            / 60
    };
    for (zone, before, after, from, to) in [
        (
            Tz::Europe__Berlin,
            "2026-03-29T00:59:59Z",
            "2026-03-29T01:00:00Z",
            60,
            120,
        ),
        (
            Tz::Europe__Berlin,
            "2026-10-25T00:59:59Z",
            "2026-10-25T01:00:00Z",
            120,
            60,
        ),
        (
            Tz::America__New_York,
            "2026-03-08T06:59:59Z",
            "2026-03-08T07:00:00Z",
            -300,
            -240,
        ),
        (
            Tz::America__New_York,
            "2026-11-01T05:59:59Z",
            "2026-11-01T06:00:00Z",
            -240,
            -300,
        ),
        (
            Tz::Australia__Lord_Howe,
            "2026-04-04T14:59:59Z",
            "2026-04-04T15:00:00Z",
            660,
            630,
        ),
        (
            Tz::Australia__Lord_Howe,
            "2026-10-03T15:29:59Z",
            "2026-10-03T15:30:00Z",
            630,
            660,
        ),
    ] {
        assert_eq!(offset_minutes(zone, before), from, "{zone} {before}");
        assert_eq!(offset_minutes(zone, after), to, "{zone} {after}");
    }
}

#[test]
fn berlin_fixed_time_fires_at_the_spring_transition_and_once_in_autumn() {
    let nightly = timing("30 2 * * *", "Europe/Berlin");
    let spring = due_slots(
        &nightly,
        utc("2026-03-27T12:00:00Z"),
        utc("2026-03-30T12:00:00Z"),
    );
    assert_eq!(
        described(&spring),
        [
            row("2026-03-28T01:30:00Z", "2026-03-28 02:30", SlotKind::Normal),
            row(
                "2026-03-29T01:00:00Z",
                "2026-03-29 02:30",
                SlotKind::ShiftedFromGap
            ),
            row("2026-03-30T00:30:00Z", "2026-03-30 02:30", SlotKind::Normal),
        ]
    );
    let autumn = due_slots(
        &nightly,
        utc("2026-10-24T12:00:00Z"),
        utc("2026-10-26T12:00:00Z"),
    );
    assert_eq!(
        described(&autumn),
        [
            row(
                "2026-10-25T00:30:00Z",
                "2026-10-25 02:30",
                SlotKind::RepeatedFirstOnly
            ),
            row("2026-10-26T01:30:00Z", "2026-10-26 02:30", SlotKind::Normal),
        ]
    );
}

#[test]
fn berlin_several_skipped_times_fire_once_at_the_transition_labelled_shifted() {
    // cronie runs this twice at 03:00 CEST; we run once per instant (README, "one run per
    // instant"), and the run says it stands for both skipped times.
    let twice_in_the_gap = timing("0,30 2 * * *", "Europe/Berlin");
    let slots = due_slots(
        &twice_in_the_gap,
        utc("2026-03-29T00:00:00Z"),
        utc("2026-03-29T12:00:00Z"),
    );
    assert_eq!(
        described(&slots),
        [row(
            "2026-03-29T01:00:00Z",
            "2026-03-29 02:00",
            SlotKind::ShiftedFromGap
        )]
    );
    assert_eq!(slots[0].cron_times, 2);

    // The transition's own wall time (03:00 CEST) is the same instant: still one run, and
    // still labelled shifted rather than normal.
    let gap_and_after = timing("0,30 2,3 * * *", "Europe/Berlin");
    let slots = due_slots(
        &gap_and_after,
        utc("2026-03-29T00:00:00Z"),
        utc("2026-03-29T02:00:00Z"),
    );
    assert_eq!(
        described(&slots),
        [
            row(
                "2026-03-29T01:00:00Z",
                "2026-03-29 02:00",
                SlotKind::ShiftedFromGap
            ),
            row("2026-03-29T01:30:00Z", "2026-03-29 03:30", SlotKind::Normal),
        ]
    );
    assert_eq!(
        slots.iter().map(|slot| slot.cron_times).collect::<Vec<_>>(),
        [3, 1]
    );
}

#[test]
fn berlin_wildcards_skip_the_gap_and_repeat_the_hour() {
    let quarter_hours = timing("*/15 * * * *", "Europe/Berlin");
    let spring = due_slots(
        &quarter_hours,
        utc("2026-03-29T00:30:00Z"),
        utc("2026-03-29T01:15:00Z"),
    );
    assert_eq!(
        described(&spring),
        [
            row("2026-03-29T00:45:00Z", "2026-03-29 01:45", SlotKind::Normal),
            row("2026-03-29T01:00:00Z", "2026-03-29 03:00", SlotKind::Normal),
            row("2026-03-29T01:15:00Z", "2026-03-29 03:15", SlotKind::Normal),
        ]
    );
    // A 23-hour and a 25-hour local day.
    let day = |from: &str, to: &str| due_slots(&quarter_hours, utc(from), utc(to)).len();
    assert_eq!(day("2026-03-28T22:59:59Z", "2026-03-29T21:59:59Z"), 23 * 4);
    assert_eq!(day("2026-10-24T21:59:59Z", "2026-10-25T22:59:59Z"), 25 * 4);

    let autumn = due_slots(
        &quarter_hours,
        utc("2026-10-25T00:40:00Z"),
        utc("2026-10-25T01:15:00Z"),
    );
    assert_eq!(
        described(&autumn),
        [
            row(
                "2026-10-25T00:45:00Z",
                "2026-10-25 02:45",
                SlotKind::RepeatedFirst
            ),
            row(
                "2026-10-25T01:00:00Z",
                "2026-10-25 02:00",
                SlotKind::RepeatedSecond
            ),
            row(
                "2026-10-25T01:15:00Z",
                "2026-10-25 02:15",
                SlotKind::RepeatedSecond
            ),
        ]
    );

    // `0 * * * *` starts the hour field with `*`: a wildcard entry, so 02:00 fires twice.
    let hourly = timing("0 * * * *", "Europe/Berlin");
    let slots = due_slots(
        &hourly,
        utc("2026-10-24T23:30:00Z"),
        utc("2026-10-25T02:30:00Z"),
    );
    assert_eq!(
        described(&slots),
        [
            row(
                "2026-10-25T00:00:00Z",
                "2026-10-25 02:00",
                SlotKind::RepeatedFirst
            ),
            row(
                "2026-10-25T01:00:00Z",
                "2026-10-25 02:00",
                SlotKind::RepeatedSecond
            ),
            row("2026-10-25T02:00:00Z", "2026-10-25 03:00", SlotKind::Normal),
        ]
    );
}

#[test]
fn new_york_transitions() {
    let half_past_two = timing("30 2 * * *", "America/New_York");
    let spring = due_slots(
        &half_past_two,
        utc("2026-03-08T00:00:00Z"),
        utc("2026-03-09T00:00:00Z"),
    );
    assert_eq!(
        described(&spring),
        [row(
            "2026-03-08T07:00:00Z",
            "2026-03-08 02:30",
            SlotKind::ShiftedFromGap
        )]
    );
    // In autumn 01:00-01:59 repeats; 02:30 exists once (EST).
    let autumn = due_slots(
        &half_past_two,
        utc("2026-11-01T00:00:00Z"),
        utc("2026-11-02T00:00:00Z"),
    );
    assert_eq!(
        described(&autumn),
        [row(
            "2026-11-01T07:30:00Z",
            "2026-11-01 02:30",
            SlotKind::Normal
        )]
    );
    let half_past_one = timing("30 1 * * *", "America/New_York");
    let repeated = due_slots(
        &half_past_one,
        utc("2026-11-01T00:00:00Z"),
        utc("2026-11-02T00:00:00Z"),
    );
    assert_eq!(
        described(&repeated),
        [row(
            "2026-11-01T05:30:00Z",
            "2026-11-01 01:30",
            SlotKind::RepeatedFirstOnly
        )]
    );
    let every_half_hour_at_one = timing("*/30 1 * * *", "America/New_York");
    let wild = due_slots(
        &every_half_hour_at_one,
        utc("2026-11-01T00:00:00Z"),
        utc("2026-11-02T00:00:00Z"),
    );
    assert_eq!(
        described(&wild),
        [
            row(
                "2026-11-01T05:00:00Z",
                "2026-11-01 01:00",
                SlotKind::RepeatedFirst
            ),
            row(
                "2026-11-01T05:30:00Z",
                "2026-11-01 01:30",
                SlotKind::RepeatedFirst
            ),
            row(
                "2026-11-01T06:00:00Z",
                "2026-11-01 01:00",
                SlotKind::RepeatedSecond
            ),
            row(
                "2026-11-01T06:30:00Z",
                "2026-11-01 01:30",
                SlotKind::RepeatedSecond
            ),
        ]
    );
}

#[test]
fn lord_howe_thirty_minute_shifts() {
    // October: 02:00-02:29 (+10:30) does not exist; 02:30 (+11) does.
    let quarter_past_two = timing("15 2 * * *", "Australia/Lord_Howe");
    let half_past_two = timing("30 2 * * *", "Australia/Lord_Howe");
    let window = (utc("2026-10-03T00:00:00Z"), utc("2026-10-04T12:00:00Z"));
    assert_eq!(
        described(&due_slots(&quarter_past_two, window.0, window.1)),
        [row(
            "2026-10-03T15:30:00Z",
            "2026-10-04 02:15",
            SlotKind::ShiftedFromGap
        )]
    );
    assert_eq!(
        described(&due_slots(&half_past_two, window.0, window.1)),
        [row(
            "2026-10-03T15:30:00Z",
            "2026-10-04 02:30",
            SlotKind::Normal
        )]
    );
    let quarter_hours = timing("*/15 * * * *", "Australia/Lord_Howe");
    let spring = due_slots(
        &quarter_hours,
        utc("2026-10-03T14:50:00Z"),
        utc("2026-10-03T15:50:00Z"),
    );
    assert_eq!(
        described(&spring),
        [
            row("2026-10-03T15:00:00Z", "2026-10-04 01:30", SlotKind::Normal),
            row("2026-10-03T15:15:00Z", "2026-10-04 01:45", SlotKind::Normal),
            row("2026-10-03T15:30:00Z", "2026-10-04 02:30", SlotKind::Normal),
            row("2026-10-03T15:45:00Z", "2026-10-04 02:45", SlotKind::Normal),
        ]
    );
    // April: 01:30-01:59 happens twice (+11, then +10:30).
    let autumn = due_slots(
        &quarter_hours,
        utc("2026-04-04T14:10:00Z"),
        utc("2026-04-04T15:30:00Z"),
    );
    assert_eq!(
        described(&autumn),
        [
            row("2026-04-04T14:15:00Z", "2026-04-05 01:15", SlotKind::Normal),
            row(
                "2026-04-04T14:30:00Z",
                "2026-04-05 01:30",
                SlotKind::RepeatedFirst
            ),
            row(
                "2026-04-04T14:45:00Z",
                "2026-04-05 01:45",
                SlotKind::RepeatedFirst
            ),
            row(
                "2026-04-04T15:00:00Z",
                "2026-04-05 01:30",
                SlotKind::RepeatedSecond
            ),
            row(
                "2026-04-04T15:15:00Z",
                "2026-04-05 01:45",
                SlotKind::RepeatedSecond
            ),
            row("2026-04-04T15:30:00Z", "2026-04-05 02:00", SlotKind::Normal),
        ]
    );
    let quarter_to_two = timing("45 1 * * *", "Australia/Lord_Howe");
    assert_eq!(
        described(&due_slots(
            &quarter_to_two,
            utc("2026-04-04T12:00:00Z"),
            utc("2026-04-05T12:00:00Z")
        )),
        [row(
            "2026-04-04T14:45:00Z",
            "2026-04-05 01:45",
            SlotKind::RepeatedFirstOnly
        )]
    );
    // 23.5- and 24.5-hour local days.
    let day = |from: &str, to: &str| due_slots(&quarter_hours, utc(from), utc(to)).len();
    assert_eq!(day("2026-10-03T13:29:59Z", "2026-10-04T12:59:59Z"), 94);
    assert_eq!(day("2026-04-04T12:59:59Z", "2026-04-05T13:29:59Z"), 98);
}

#[test]
fn tokyo_has_no_transitions_so_every_slot_is_normal() {
    let daily = timing("0 2 * * *", "Asia/Tokyo");
    let year = due_slots(
        &daily,
        utc("2025-12-31T16:59:59Z"),
        utc("2026-12-31T16:59:59Z"),
    );
    assert_eq!(year.len(), 365);
    assert!(year.iter().all(|slot| slot.kind == SlotKind::Normal));
    assert!(
        year.iter()
            .all(|slot| slot.at.hour() == 17 && slot.at.minute() == 0)
    );
    assert_eq!(year[0].local, local("2026-01-01 02:00"));
    assert_eq!(year[0].id(), "2025-12-31T17:00:00Z");
}

#[test]
fn leap_days_are_found_quickly_and_2100_is_not_one() {
    let leap = timing("0 2 29 2 *", "Europe/Berlin");
    let next = next_slots(&leap, utc("2026-11-28T00:00:00Z"), 3);
    let ids: Vec<String> = next.iter().map(ScheduleSlot::id).collect();
    assert_eq!(
        ids,
        [
            "2028-02-29T01:00:00Z",
            "2032-02-29T01:00:00Z",
            "2036-02-29T01:00:00Z"
        ]
    );
    let after_2096 = next_slots(&leap, utc("2096-03-01T00:00:00Z"), 1);
    assert_eq!(after_2096[0].local, local("2104-02-29 02:00"));
}

#[test]
fn day_of_month_or_day_of_week() {
    let thirteenth_or_friday = timing("0 12 13 * FRI", "UTC");
    let days: Vec<String> = next_slots(&thirteenth_or_friday, utc("2026-11-01T00:00:00Z"), 7)
        .iter()
        .map(|slot| slot.local.format("%a %d %b").to_string())
        .collect();
    assert_eq!(
        days,
        [
            "Fri 06 Nov",
            "Fri 13 Nov",
            "Fri 20 Nov",
            "Fri 27 Nov",
            "Fri 04 Dec",
            "Fri 11 Dec",
            "Sun 13 Dec"
        ]
    );
    // `*` in day-of-week: only the 13th counts.
    let thirteenth = timing("0 12 13 * *", "UTC");
    let days: Vec<String> = next_slots(&thirteenth, utc("2026-11-01T00:00:00Z"), 2)
        .iter()
        .map(|slot| slot.local.format("%d %b").to_string())
        .collect();
    assert_eq!(days, ["13 Nov", "13 Dec"]);
}

#[test]
fn steps_lists_ranges_and_names() {
    let office = timing("0-10/5,30 9-11 * JAN,jul mon-FRI", "Europe/Berlin");
    let slots = next_slots(&office, utc("2026-11-28T00:00:00Z"), 9);
    let local_times: Vec<String> = slots
        .iter()
        .map(|slot| slot.local.format("%a %Y-%m-%d %H:%M").to_string())
        .collect();
    assert_eq!(
        local_times,
        [
            "Fri 2027-01-01 09:00",
            "Fri 2027-01-01 09:05",
            "Fri 2027-01-01 09:10",
            "Fri 2027-01-01 09:30",
            "Fri 2027-01-01 10:00",
            "Fri 2027-01-01 10:05",
            "Fri 2027-01-01 10:10",
            "Fri 2027-01-01 10:30",
            "Fri 2027-01-01 11:00",
        ]
    );
    let sundays = timing("0 8 * * 7", "UTC");
    assert!(
        next_slots(&sundays, utc("2026-11-28T00:00:00Z"), 5)
            .iter()
            .all(|slot| slot.local.format("%a").to_string() == "Sun")
    );
}

#[test]
fn next_slots_agree_with_due_slots() {
    let quarter_hours = timing("*/15 * * * *", "Europe/Berlin");
    let after = utc("2026-10-24T20:00:00Z");
    let next = next_slots(&quarter_hours, after, 40);
    let due = due_slots(&quarter_hours, after, next[39].at);
    assert_eq!(next, due);
    assert!(next.windows(2).all(|pair| pair[0].at < pair[1].at));
}

/// cronie's main loop, minute by minute over UTC (an independent model, deliberately naive):
/// when the wall clock moved forward by more than a minute, fixed-time entries run for every
/// skipped minute, now; when it moved backwards, only wildcard entries run until it catches up
/// with the latest wall time seen; otherwise everything matching the current minute runs.
/// Returns the instants at which the entry runs, once per instant: cronie runs its queue
/// between skipped minutes, so it runs a fixed-time entry once per skipped time; we merge
/// those into one run (README, "one run per instant"), which is what is compared here.
fn cronie_model(
    timing: &ScheduleTiming,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeSet<DateTime<Utc>> {
    let matches = |wall: NaiveDateTime| {
        timing.cron.matches_date(wall.date())
            && timing.cron.matches_time(wall.hour(), wall.minute())
    };
    let wall_at = |at: DateTime<Utc>| at.with_timezone(&timing.zone).naive_local();
    let fixed = timing.cron.is_fixed_time();
    let mut runs = BTreeSet::new();
    let start = from - Duration::days(1);
    let mut latest_wall = wall_at(start);
    let mut at = start + Duration::minutes(1);
    while at <= to {
        let wall = wall_at(at);
        let mut runs_now = false;
        if wall > latest_wall + Duration::minutes(1) {
            let mut skipped = latest_wall + Duration::minutes(1);
            while skipped < wall {
                runs_now |= fixed && matches(skipped);
                skipped += Duration::minutes(1);
            }
            runs_now |= matches(wall);
        } else if wall <= latest_wall {
            runs_now |= !fixed && matches(wall);
        } else {
            runs_now |= matches(wall);
        }
        if runs_now && at > from {
            runs.insert(at);
        }
        latest_wall = latest_wall.max(wall);
        at += Duration::minutes(1);
    }
    runs
}

/// Every transition of `zone` in 2026 (by hourly offset sampling, refined to the minute).
fn transitions_2026(zone: Tz) -> Vec<DateTime<Utc>> {
    let offset = |at: DateTime<Utc>| zone.offset_from_utc_datetime(&at.naive_utc()).fix();
    let mut found = Vec::new();
    let mut at = utc("2026-01-01T00:00:00Z");
    while at < utc("2027-01-01T00:00:00Z") {
        let next = at + Duration::hours(1);
        if offset(at) != offset(next) {
            let mut minute = at;
            while offset(minute) == offset(at) {
                minute += Duration::minutes(1);
            }
            found.push(minute);
        }
        at = next;
    }
    found
}

#[test]
fn matches_a_model_of_cronie_around_every_2026_transition() {
    let zones = [
        Tz::Europe__Berlin,
        Tz::America__New_York,
        Tz::Australia__Lord_Howe,
        Tz::Pacific__Chatham,
        Tz::America__Santiago,
        Tz::Africa__Casablanca,
        Tz::Antarctica__Troll,
        Tz::Asia__Tokyo,
    ];
    let crons = [
        "30 2 * * *",
        "*/15 * * * *",
        "0 * * * *",
        "0,30 1-3 * * *",
        "*/7 2 * * *",
        "45 2,3 * * *",
        "0 0 * * *",
        "59 23 * * *",
        "15 1 * * SUN",
        "* * * * *",
    ];
    let mut windows_checked = 0;
    for zone in zones {
        let transitions = transitions_2026(zone);
        // Zones without DST are checked on an ordinary day.
        let centres = if transitions.is_empty() {
            vec![utc("2026-06-01T00:00:00Z")]
        } else {
            transitions
        };
        for centre in centres {
            let (from, to) = (centre - Duration::hours(30), centre + Duration::hours(30));
            for cron in crons {
                let schedule = ScheduleTiming::new(cron, zone.name()).unwrap();
                let evaluated: BTreeSet<DateTime<Utc>> = due_slots(&schedule, from, to)
                    .iter()
                    .map(|slot| slot.at)
                    .collect();
                let expected = cronie_model(&schedule, from, to);
                assert_eq!(evaluated, expected, "{cron} in {zone} around {centre}");
                windows_checked += 1;
            }
        }
    }
    assert!(
        windows_checked >= 10 * 12,
        "only {windows_checked} windows checked"
    );
}

#[test]
fn tick_by_tick_evaluation_fires_each_slot_exactly_once() {
    // The scheduler evaluates (previous tick, this tick]; irregular ticks (a late invocation,
    // a skipped minute) must neither lose nor repeat a slot.
    for (cron, zone, centre) in [
        ("30 2 * * *", "Europe/Berlin", "2026-03-29T01:00:00Z"),
        ("*/15 * * * *", "Europe/Berlin", "2026-10-25T01:00:00Z"),
        (
            "*/15 * * * *",
            "Australia/Lord_Howe",
            "2026-04-04T15:00:00Z",
        ),
        ("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T15:30:00Z"),
    ] {
        let schedule = timing(cron, zone);
        let (from, to) = (
            utc(centre) - Duration::hours(6),
            utc(centre) + Duration::hours(6),
        );
        let whole = due_slots(&schedule, from, to);
        let mut ticked = Vec::new();
        let mut previous = from;
        let mut step = 0;
        while previous < to {
            // 1 to 7 minutes and a few seconds: never aligned with the slots.
            step = step % 7 + 1;
            let tick = (previous + Duration::minutes(step) + Duration::seconds(13)).min(to);
            ticked.extend(due_slots(&schedule, previous, tick));
            previous = tick;
        }
        assert_eq!(ticked, whole, "{cron} in {zone}");
        assert!(!whole.is_empty());
    }
}
