//! `serve`'s scheduler: the same [`Scheduler::tick`] as the Lambda, run at each exact slot
//! time instead of once a minute.
//!
//! The loop ticks once at start (the newest slot of each schedule is on time if it came at
//! most the schedule's `grace` ago; the others were missed while nothing ran and go through
//! its catch-up policy), then sleeps until the earliest next slot over the enabled
//! schedules and ticks at that instant; it also wakes at least every [`SWEEP_INTERVAL`] so
//! retries and stale claims are swept while no slot is due.
//!
//! Time: "now" is the engine's [`Clock`](crate::clock::Clock); waiting is `tokio::time`. The
//! loop keeps its own progress (the instant it last ticked for) and never goes behind it, so
//! a wall clock stepping backwards does not repeat a wake-up, and in tests a `ManualClock`
//! with `tokio::time::pause` drives it without real sleeps.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::{Scheduler, TickReport};

/// The longest the loop sleeps without ticking (for the sweep).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Why the loop woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Wake {
    /// The first tick, catching up.
    Startup,
    /// A slot of some schedule is due now.
    Slot,
    /// No slot was due within the sweep interval.
    Sweep,
}

/// One tick of the loop, as reported to an observer.
#[derive(Debug, Clone)]
pub struct LocalTick {
    /// The instant passed to [`Scheduler::tick`].
    pub at: DateTime<Utc>,
    pub wake: Wake,
    /// The report, or why the tick failed (the next wake-up tries again).
    pub outcome: Result<TickReport, String>,
}

/// Settings of [`run_until_with`].
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Longest sleep between ticks; at most a minute is sensible.
    pub sweep_interval: Duration,
    /// Receives every tick (logs, tests, a status page).
    pub observer: Option<UnboundedSender<LocalTick>>,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            sweep_interval: SWEEP_INTERVAL,
            observer: None,
        }
    }
}

/// Ticks at each slot (and at least every minute) until `shutdown` resolves; returns how
/// many ticks ran. A tick in progress when `shutdown` resolves is finished first (it may be
/// sending to CircleCI under a claim).
pub async fn run_until<S>(scheduler: &Scheduler, shutdown: S) -> u64
where
    S: Future<Output = ()>,
{
    run_until_with(scheduler, LoopOptions::default(), shutdown).await
}

/// [`run_until`] with explicit options.
pub async fn run_until_with<S>(scheduler: &Scheduler, options: LoopOptions, shutdown: S) -> u64
where
    S: Future<Output = ()>,
{
    let clock = scheduler.engine().clock().clone();
    let interval = chrono::Duration::from_std(options.sweep_interval.max(Duration::from_secs(1)))
        .unwrap_or(chrono::Duration::minutes(1));
    tokio::pin!(shutdown);

    let mut progress = clock.now();
    let mut ticks = 1;
    tick_once(scheduler, &options, progress, Wake::Startup).await;
    loop {
        let from = clock.now().max(progress);
        let sweep_at = from + interval;
        // After the last tick's instant, not after now: a slot that came while that tick was
        // still running is due at once (a zero wait), not skipped until the next sweep.
        let (target, wake) = match scheduler.next_slot_after(progress) {
            Some(slot) if slot <= sweep_at => (slot, Wake::Slot),
            _ => (sweep_at, Wake::Sweep),
        };
        let wait = (target - from).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => break,
        }
        // Exactly the slot's instant, unless the clock is already past it (a late wake-up).
        let at = target.max(clock.now());
        progress = at;
        ticks += 1;
        tick_once(scheduler, &options, at, wake).await;
    }
    tracing::info!(ticks, "local scheduler stopped");
    ticks
}

async fn tick_once(scheduler: &Scheduler, options: &LoopOptions, at: DateTime<Utc>, wake: Wake) {
    let outcome = match scheduler.tick(at).await {
        Ok(report) => {
            let totals = report.totals();
            if totals.fired + totals.skipped + totals.failed > 0 || report.sweep.attempted > 0 {
                tracing::info!(%at, ?wake, fired = totals.fired, skipped = totals.skipped,
                    failed = totals.failed, retried = report.sweep.attempted, "tick");
            }
            Ok(report)
        }
        Err(error) => {
            tracing::error!(%at, %error, "tick failed; the next wake-up tries again");
            Err(error.to_string())
        }
    };
    if let Some(observer) = &options.observer {
        // A dropped receiver only means nobody is watching.
        let _ = observer.send(LocalTick { at, wake, outcome });
    }
}
