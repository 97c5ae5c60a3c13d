//! One deadline for a whole action, whatever client makes its calls.
//!
//! The engine runs each action under a [`SendBudget`] shorter than the claim's lease: every
//! CircleCI call made inside it gets at most what is left (the client narrows its own
//! deadline, as [`super::CircleCiClient::with_deadline`] would), and no request is started
//! once the budget has passed — measured on the monotonic clock *and* on the injected
//! [`Clock`]. A Lambda environment frozen after `mark_sending` and thawed minutes later
//! (when its claim may have been adopted and the create sent by someone else) therefore
//! never starts its create: the client refuses with a timeout before sending, which means
//! nothing happened.
//!
//! The budget is a task-local, so it reaches the client through any wrapper of the
//! [`super::CircleCi`] port (interceptors, the benchmark's timing) without a parameter on
//! every operation.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::clock::Clock;

tokio::task_local! {
    static BUDGET: SendBudget;
}

/// The deadline of one action (see the module docs).
#[derive(Clone)]
pub struct SendBudget {
    at: Instant,
    clock: Arc<dyn Clock>,
    until: DateTime<Utc>,
}

impl std::fmt::Debug for SendBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBudget")
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

impl SendBudget {
    /// A budget of `length` from now, on both clocks.
    pub fn starting_now(clock: Arc<dyn Clock>, length: Duration) -> Self {
        let until = clock.now() + chrono::TimeDelta::from_std(length).unwrap_or_default();
        Self {
            at: Instant::now() + length,
            clock,
            until,
        }
    }

    /// Runs `work` with every CircleCI call inside it bounded by this budget.
    pub async fn run<F: Future>(self, work: F) -> F::Output {
        BUDGET.scope(self, work).await
    }

    /// The budget of the action being run on this task, if any.
    pub(crate) fn current() -> Option<SendBudget> {
        BUDGET.try_with(Clone::clone).ok()
    }

    /// The monotonic deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.at
    }

    /// Whether the budget is spent, on either clock.
    pub(crate) fn passed(&self) -> bool {
        Instant::now() >= self.at || self.clock.now() >= self.until
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn a_budget_is_seen_inside_its_scope_only_and_passes_on_the_injected_clock() {
        let start = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Arc::new(ManualClock::new(start));
        let budget = SendBudget::starting_now(clock.clone(), Duration::from_secs(60));
        assert!(SendBudget::current().is_none());
        let passed = budget
            .run(async {
                let inside = SendBudget::current().unwrap();
                let before = inside.passed();
                clock.advance(chrono::TimeDelta::seconds(61));
                (before, inside.passed())
            })
            .await;
        assert_eq!(passed, (false, true));
        assert!(SendBudget::current().is_none());
    }
}
