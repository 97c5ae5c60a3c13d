//! The `scheduled` Lambda's handler, kept here so `main.rs` is wiring only and tests drive
//! the same function with real event JSON.
//!
//! EventBridge Scheduler invokes the function asynchronously every minute with the template's
//! `Input` (`{"source":"circleci-triggers.tick","scheduled_time":"<aws.scheduler.scheduled-time>"}`);
//! the scheduled time is the tick's instant. An operator may invoke it with
//! `{"schedule": "<name>"}` (optionally `"run_id"`) to run one schedule now.
//!
//! What the invocation answers:
//! - the tick completed → `Ok`, and the `TickSucceeded` metric (the template's dead-man's
//!   switch watches it). Failed triggers inside it are history rows; the retryable ones are
//!   retried by the next tick's sweep;
//! - the input can never succeed (bad shape, unknown schedule, a time ahead of the clock)
//!   or the failure is not retryable → logged and `Ok` with `"outcome": "rejected"` /
//!   `"failed"`: Lambda retries async invocations that return an error, and retrying these
//!   cannot help;
//! - the tick could not complete for a reason that passes (the store was unavailable) →
//!   `Err`: the function's error alarm sees it; the next tick redoes the work from the
//!   schedules' cursors (claims make that safe).

use serde_json::{Value, json};

use super::{Scheduler, SchedulerError, TickEvent, TickReport, TickRequest};

/// Metric emitted after every completed tick (not after manual runs).
pub const TICK_SUCCEEDED_METRIC: &str = "TickSucceeded";

/// A tick that did not complete and is worth an alarm (retryable: the next tick redoes it).
#[derive(Debug, thiserror::Error)]
#[error("the tick did not complete: {0}")]
pub struct TickFailed(#[source] pub SchedulerError);

/// Handles one invocation payload; see the module docs for what is `Ok` and what is `Err`.
pub async fn handle(scheduler: &Scheduler, payload: Value) -> Result<Value, TickFailed> {
    let request = match TickEvent::parse(payload) {
        Ok(request) => request,
        Err(error) => {
            tracing::error!(%error, "scheduled invocation rejected");
            return Ok(json!({ "outcome": "rejected", "reason": error.to_string() }));
        }
    };
    let is_tick = matches!(request, TickRequest::Tick { .. });
    let handled = scheduler.handle(request).await;
    // Whatever the tick did: what other invocations queued is due too (never fails it).
    if let Some(sweeper) = scheduler.notifications() {
        match sweeper.sweep().await {
            Ok(sweep) => tracing::info!(
                delivered = sweep.delivered,
                failed = sweep.failed,
                given_up = sweep.given_up,
                "notifications swept"
            ),
            Err(error) => {
                tracing::error!(%error, "notifications not swept; the next tick tries again")
            }
        }
    }
    match handled {
        Ok(report) => {
            log_report(&report, is_tick);
            let mut metrics = Vec::new();
            if is_tick {
                crate::telemetry::emit_metric(
                    TICK_SUCCEEDED_METRIC,
                    1.0,
                    &[("Source", "schedule")],
                );
                metrics.push(TICK_SUCCEEDED_METRIC);
            }
            Ok(json!({
                "outcome": if is_tick { "ticked" } else { "ran" },
                "report": report,
                "metrics": metrics,
            }))
        }
        Err(
            error @ (SchedulerError::UnknownSchedule { .. } | SchedulerError::FutureTick { .. }),
        ) => {
            tracing::error!(%error, "scheduled invocation rejected");
            Ok(json!({ "outcome": "rejected", "reason": error.to_string() }))
        }
        Err(error) if error.is_retryable() => {
            tracing::error!(%error, "tick failed; the next tick redoes it");
            Err(TickFailed(error))
        }
        Err(error) => {
            tracing::error!(%error, "tick failed and retrying cannot help");
            Ok(json!({ "outcome": "failed", "retryable": false, "reason": error.to_string() }))
        }
    }
}

fn log_report(report: &TickReport, is_tick: bool) {
    let totals = report.totals();
    for failed in report.errors() {
        tracing::error!(schedule = %failed.schedule, error = failed.error.as_deref().unwrap_or(""),
            "schedule not evaluated; the next tick retries it");
    }
    tracing::info!(
        tick = is_tick,
        at = ?report.at,
        fired = totals.fired,
        skipped = totals.skipped,
        failed = totals.failed,
        duplicates = totals.duplicates,
        in_progress = totals.in_progress,
        retried = report.sweep.attempted,
        retried_ok = report.sweep.succeeded,
        rechecked = report.rechecked,
        "tick done"
    );
}
