//! `serve`'s scheduler loop (`shared::triggers::scheduled::local`) on tokio's paused clock: it ticks
//! once at start to catch up, then at each exact slot instant, and wakes at least every
//! minute for the sweep — without a real sleep. The engine's clock is a `ManualClock` that
//! stays put: the loop's progress comes from the instants it slept to.
//!
//! The schedule is paused, so each tick records its slots as skipped without calling
//! CircleCI (real HTTP would not mix with a paused tokio clock); the tick's firing path is
//! covered by tests/scheduled.rs.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use integration_tests::scheduled_support::{Backend, Harness, utc};
use shared::store::TriggerStatus;
use shared::triggers::scheduled::local::{LocalTick, LoopOptions, Wake, run_until_with};

const TOML: &str = r#"
[[schedule]]
name = "quarterly"
cron = "*/15 * * * *"
timezone = "UTC"
catch_up = "all"
target = { project = "gh/acme/api", branch = "main", workflow = "quarterly" }

[[schedule]]
name = "off"
cron = "* * * * *"
timezone = "UTC"
enabled = false
target = { project = "gh/acme/api", branch = "main", workflow = "off" }
"#;

#[tokio::test(start_paused = true)]
async fn ticks_at_start_at_each_slot_and_every_minute_until_shutdown() {
    let h = Harness::builder(Backend::Sqlite)
        .start_at("2026-11-28T10:07:00Z")
        .build(TOML)
        .await;
    // The schedule was last evaluated at 09:17 (09:30, 09:45 and 10:00 were missed since).
    h.scheduler.tick(utc("2026-11-28T09:17:00Z")).await.unwrap();
    h.store
        .pause(
            &shared::store::PauseScope::Schedule("quarterly".into()),
            Some("loop test"),
            None,
        )
        .await
        .unwrap();

    let (observer, mut ticks) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = h.scheduler.clone();
    let running = tokio::spawn(async move {
        let options = LoopOptions {
            observer: Some(observer),
            ..LoopOptions::default()
        };
        run_until_with(&scheduler, options, async {
            let _ = stopped.await;
        })
        .await
    });

    let mut seen: Vec<LocalTick> = Vec::new();
    while seen
        .last()
        .is_none_or(|t| t.at < utc("2026-11-28T11:00:00Z"))
    {
        seen.push(ticks.recv().await.unwrap());
    }
    stop.send(()).unwrap();
    let total = running.await.unwrap();
    assert_eq!(total, u64::try_from(seen.len()).unwrap());

    // Startup: at the clock's now, catching up the three missed slots (paused: skipped).
    assert_eq!(seen[0].wake, Wake::Startup);
    assert_eq!(seen[0].at, utc("2026-11-28T10:07:00Z"));
    assert_eq!(seen[0].outcome.as_ref().unwrap().totals().skipped, 3);

    // Slot wake-ups at exactly the slot instants; each records its one slot.
    let slots: Vec<_> = seen.iter().filter(|t| t.wake == Wake::Slot).collect();
    let slot_times: Vec<_> = slots.iter().map(|t| t.at).collect();
    assert_eq!(
        slot_times,
        [
            utc("2026-11-28T10:15:00Z"),
            utc("2026-11-28T10:30:00Z"),
            utc("2026-11-28T10:45:00Z"),
            utc("2026-11-28T11:00:00Z"),
        ]
    );
    assert!(
        slots
            .iter()
            .all(|t| t.outcome.as_ref().unwrap().totals().skipped == 1)
    );

    // Sweep wake-ups fill every gap: never more than a minute between ticks, never twice
    // for the same instant. 10:07 → 11:00 is 53 minutes: 53 wake-ups after the first.
    let gaps: Vec<_> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps.iter().all(|gap| *gap > chrono::TimeDelta::zero()));
    assert!(
        gaps.iter()
            .all(|gap| *gap <= chrono::TimeDelta::seconds(60)),
        "{gaps:?}"
    );
    assert_eq!(seen.len(), 54);
    assert!(seen.iter().all(|t| t.outcome.is_ok()));

    // History: every slot from 09:30 to 11:00 has one skipped row; the ones the loop woke
    // up for were evaluated at exactly their instant. The disabled schedule wrote nothing.
    let rows = h.history("quarterly").await;
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r.status == TriggerStatus::Skipped));
    for slot in &slot_times {
        let id = slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let row = rows
            .iter()
            .find(|r| r.detail.slot.as_deref() == Some(id.as_str()))
            .unwrap();
        assert_eq!(row.detail.evaluated_at, Some(*slot));
        assert_eq!(
            row.reason.as_deref(),
            Some("schedule:quarterly paused: loop test")
        );
    }
    assert!(h.history("off").await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_sleeping_stops_the_loop_at_once() {
    let h = Harness::builder(Backend::Sqlite)
        .start_at("2026-11-28T10:07:00Z")
        .build(TOML)
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = h.scheduler.clone();
    let started = tokio::time::Instant::now();
    let running = tokio::spawn(async move {
        let options = LoopOptions {
            sweep_interval: Duration::from_secs(30),
            observer: None,
        };
        run_until_with(&scheduler, options, async {
            let _ = stopped.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(95)).await;
    stop.send(()).unwrap();
    let ticks = running.await.unwrap();
    // Startup + wake-ups at +30 s, +60 s, +90 s; the shutdown came while sleeping to +120 s.
    assert_eq!(ticks, 4);
    assert_eq!(started.elapsed(), Duration::from_secs(95));
}
