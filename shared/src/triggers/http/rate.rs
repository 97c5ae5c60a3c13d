//! Per-client request rates, enforced through the trigger store so every Lambda instance
//! (and `serve`) counts against the same budget.
//!
//! API Gateway HTTP API throttling is per route and stage, shared by every caller, and
//! Function URLs have none: neither can stop one client from using up what others need.
//!
//! **How**: a fixed window per client, opened by its first request, holding
//! `requests` tickets. A request takes one free ticket by "arriving" at the window as a
//! fan-in join whose expected upstreams are the tickets ([`JoinStore::join_arrive`] records
//! each upstream once, atomically, and completes the join with exactly one arrival). No
//! free ticket, or a completed join: limited until the window ends. Concurrent requests
//! that pick the same ticket see a duplicate arrival and pick another.
//!
//! A fixed window lets a client send up to twice its rate across a window boundary; for
//! an abuse limit that is acceptable, and it costs a few store operations per request.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::IteratorRandom;

use crate::clock::Clock;
use crate::config::endpoint::RateLimit;
use crate::store::{
    ClaimKey, ClaimKind, JoinArrival, JoinOutcome, JoinStatus, JoinStore, StoreError,
};

/// Attempts to find a free ticket when concurrent requests keep taking the chosen one.
const TICKET_ATTEMPTS: usize = 6;

/// Whether a request may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Limited { retry_after: Duration },
}

/// Counts requests per client in the store (a window is a join whose upstreams are tickets,
/// so it needs only the join part of the store).
#[derive(Clone)]
pub struct StoreRateLimiter {
    store: Arc<dyn JoinStore>,
    clock: Arc<dyn Clock>,
}

impl StoreRateLimiter {
    pub fn new(store: Arc<dyn JoinStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    fn key(client: &str) -> ClaimKey {
        ClaimKey::new(ClaimKind::Other, &["rate", client])
    }

    fn tickets(limit: RateLimit) -> BTreeSet<String> {
        (1..=limit.requests).map(|n| format!("t{n}")).collect()
    }

    /// Takes one ticket of the client's current window.
    ///
    /// Optimistic: it arrives with a random ticket first (one store round trip when the
    /// window has room); a duplicate answer carries the window's state, from which the
    /// next attempt picks a free ticket.
    pub async fn admit(&self, client: &str, limit: RateLimit) -> Result<Admission, StoreError> {
        let key = Self::key(client);
        let mut expected = Self::tickets(limit);
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut window_ends = None;
        for _ in 0..TICKET_ATTEMPTS {
            // Random, so concurrent requests rarely collide on one ticket.
            let Some(ticket) = expected
                .iter()
                .filter(|t| !taken.contains(*t))
                .choose(&mut rand::rng())
                .cloned()
            else {
                let now = self.clock.now();
                return Ok(limited(window_ends.unwrap_or(now) - now));
            };
            let arrival = JoinArrival {
                key: key.clone(),
                expected: expected.clone(),
                upstream: ticket,
                succeeded: true,
                pipeline_id: None,
                trigger_id: None,
                window: limit.window,
            };
            match self.store.join_arrive(&arrival).await {
                Ok(JoinOutcome::Waiting {
                    duplicate: false, ..
                })
                | Ok(JoinOutcome::Complete {
                    fired_now: true, ..
                }) => return Ok(Admission::Admitted),
                // Someone holds that ticket: pick among the free ones.
                Ok(JoinOutcome::Waiting {
                    duplicate: true,
                    state,
                }) => {
                    taken = state.arrived.into_iter().map(|a| a.upstream).collect();
                    window_ends = Some(state.window_ends_at);
                }
                Ok(JoinOutcome::Complete { state, .. } | JoinOutcome::Closed { state, .. }) => {
                    return Ok(limited(state.window_ends_at - self.clock.now()));
                }
                // The current window was opened with other tickets (the limit changed):
                // it keeps them until it ends.
                Err(StoreError::Invalid { .. }) => {
                    let now = self.clock.now();
                    match self
                        .store
                        .join_state(&key)
                        .await?
                        .filter(|state| state.window_ends_at > now)
                    {
                        Some(state) if state.status != JoinStatus::Open => {
                            return Ok(limited(state.window_ends_at - now));
                        }
                        Some(state) => {
                            expected = state.expected.clone();
                            taken = state.arrived.into_iter().map(|a| a.upstream).collect();
                            window_ends = Some(state.window_ends_at);
                        }
                        None => {}
                    }
                }
                Err(error) => return Err(error),
            }
        }
        // Heavy contention on the last tickets: treat as used up, briefly.
        Ok(Admission::Limited {
            retry_after: Duration::from_secs(1),
        })
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
