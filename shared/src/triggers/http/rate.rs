//! Per-client request rates, enforced through the trigger store so every Lambda instance
//! (and `serve`) counts against the same budget.
//!
//! API Gateway HTTP API throttling is per route and stage, shared by every caller, and
//! Function URLs have none: neither can stop one client from using up what others need.
//!
//! **How**: a fixed window per client, aligned to multiples of its length, counted in one
//! store item: each request is one conditional write that adds itself to the window's
//! count while the count is below the limit ([`JoinStore::take_rate_ticket`]). No room:
//! limited until the window ends. One write unit and one round trip per request; no read.
//!
//! A fixed window lets a client send up to twice its rate across a window boundary; for
//! an abuse limit that is acceptable.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::endpoint::RateLimit;
use crate::store::{JoinStore, RateTicket, StoreError};

/// Whether a request may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Limited { retry_after: Duration },
}

/// Counts requests per client in the store (only the join part of the store: the rate
/// windows live beside the fan-in joins).
#[derive(Clone)]
pub struct StoreRateLimiter {
    store: Arc<dyn JoinStore>,
    clock: Arc<dyn Clock>,
}

impl StoreRateLimiter {
    pub fn new(store: Arc<dyn JoinStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Counts one request of `client` against its current window.
    pub async fn admit(&self, client: &str, limit: RateLimit) -> Result<Admission, StoreError> {
        let now = self.clock.now();
        let ticket = RateTicket::at(client, now, limit.window, limit.requests);
        if self.store.take_rate_ticket(&ticket).await? {
            Ok(Admission::Admitted)
        } else {
            Ok(limited(ticket.window_ends_at - now))
        }
    }
}

fn limited(remaining: chrono::TimeDelta) -> Admission {
    Admission::Limited {
        retry_after: remaining
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_secs(1)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn a_window_admits_its_tickets_then_limits_until_it_ends() {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap(),
        ));
        let store = Arc::new(SqliteStore::in_memory(clock.clone()).unwrap());
        let limiter = StoreRateLimiter::new(store, clock.clone());
        let limit = RateLimit {
            requests: 3,
            window: Duration::from_secs(60),
        };
        for _ in 0..3 {
            assert_eq!(
                limiter.admit("bot", limit).await.unwrap(),
                Admission::Admitted
            );
        }
        clock.advance(chrono::Duration::seconds(20));
        assert_eq!(
            limiter.admit("bot", limit).await.unwrap(),
            Admission::Limited {
                retry_after: Duration::from_secs(40)
            }
        );
        // Another client has its own budget.
        assert_eq!(
            limiter.admit("cms", limit).await.unwrap(),
            Admission::Admitted
        );
        clock.advance(chrono::Duration::seconds(41));
        assert_eq!(
            limiter.admit("bot", limit).await.unwrap(),
            Admission::Admitted
        );
    }

    #[tokio::test]
    async fn concurrent_requests_never_exceed_the_budget() {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap(),
        ));
        let store = Arc::new(SqliteStore::in_memory(clock.clone()).unwrap());
        let limiter = StoreRateLimiter::new(store, clock);
        let limit = RateLimit {
            requests: 5,
            window: Duration::from_secs(60),
        };
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.admit("bot", limit).await.unwrap() })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            if task.await.unwrap() == Admission::Admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
    }
}
