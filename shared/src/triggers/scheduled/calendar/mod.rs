//! Schedule evaluation: which slots of a `[[schedule]]` are due, pure and clock-free.
//!
//! **Daylight saving time follows cronie (Vixie cron), the rules operators already know.**
//! A schedule whose minute and hour fields both start with something other than `*`
//! (`30 2 * * *`, `0 9,17 * * MON-FRI`) is *fixed-time*: when the clocks spring forward over
//! its local time, it fires once, at the instant of the transition (`30 2 * * *` in
//! Europe/Berlin on 2026-03-29 fires at 03:00 CEST = 01:00 UTC); when the clocks fall back and
//! its local time happens twice, it fires once, at the first occurrence. A schedule whose
//! minute or hour field starts with `*` (`*/15 * * * *`, `0 * * * *`, `5 */2 * * *`) follows
//! the wall clock: its slots inside the skipped interval do not fire, and its slots inside the
//! repeated interval fire again in the second occurrence. **One run per instant:** where
//! cronie runs a fixed-time entry once per skipped time (`0,30 2 * * *` in Europe/Berlin: two
//! runs at 03:00 CEST), every time that lands on the transition instant — the skipped ones and
//! the transition's own wall time if the expression names it (`0,30 2,3 * * *`) — fires as one
//! slot, labelled [`SlotKind::ShiftedFromGap`] with the earliest skipped time and a count of the
//! times it stands for ([`ScheduleSlot::cron_times`]). The rules hold for any zone and any shift
//! (Australia/Lord_Howe moves by 30 minutes); zones without DST (UTC, Asia/Tokyo) never need
//! them. Time-zone data is chrono-tz's compiled IANA database (transitions up to 2099).
//!
//! Every slot has one UTC instant ([`ScheduleSlot::at`]), which is what a claim is keyed on,
//! so a slot can never fire twice, whatever the wall clock does. A new schedule, or one whose
//! cron or zone changed, starts from now ([`evaluation_window`]): no backfill.
//!
//! Catch-up (`skip | latest | all`, capped by count and age) is applied to the due slots by
//! [`apply_catch_up`], which also defines lateness: only the newest due slot of a tick can be
//! on time, and only within the schedule's `grace`.

mod catch_up;
mod slots;
mod window;

pub use catch_up::{
    CatchUpDecision, SkipReason, SkippedSlot, apply_catch_up, oldest_relevant_slot,
};
pub use slots::{LOOK_AHEAD_YEARS, ScheduleSlot, SlotKind, due_slots, look_ahead_end, next_slots};
pub use triggers_config::schedule::{
    CatchUpMode, CatchUpPolicy, ConcurrencyMode, ConcurrencyPolicy, ScheduleError, ScheduleSpec,
    ScheduleTiming,
};
pub use window::{EvaluationWindow, ScheduleCursor, WindowStart, evaluation_window};
