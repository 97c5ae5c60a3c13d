//! Fault injection: rate limiting, injected 5xx, latency, ambiguous creates, CI skips and
//! webhook delivery quirks. All switchable at run time through `Simulator::set_faults`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// A token-bucket rate limit applied per API token (unauthenticated requests share one bucket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Refill rate in requests per second.
    pub per_second: f64,
    /// Bucket size: requests allowed back to back from a full bucket.
    pub burst: u32,
}

/// A seeded, deterministic share of requests that fail with `Faults::fail_status`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRatio {
    /// Share of requests to fail, 0.0..=1.0.
    pub ratio: f64,
    /// Seed of the pseudo-random sequence (same seed + same request order = same failures).
    pub seed: u64,
}

/// Everything the simulator can do wrong on purpose. `Faults::default()` is a healthy CircleCI.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Token-bucket rate limit; when set, every response carries `RateLimit-*` and
    /// `X-RateLimit-*` headers and an exhausted bucket answers 429.
    pub rate_limit: Option<RateLimit>,
    /// Whether 429 responses carry `Retry-After` (seconds). Default true.
    pub retry_after_header: bool,
    /// Fail the next N API requests (matching `fail_methods`/`fail_path_contains`) with
    /// `fail_status` before they have any effect.
    pub fail_next: u32,
    /// Status used by `fail_next` and `failure_ratio` (default 503).
    pub fail_status: u16,
    /// Seeded random failures (before any effect), on top of `fail_next`.
    pub failure_ratio: Option<FailureRatio>,
    /// Methods eligible for injected failures (upper case); empty = all.
    pub fail_methods: Vec<String>,
    /// Only paths containing this substring are eligible for injected failures.
    pub fail_path_contains: Option<String>,
    /// Added to every API response (real time: use only with client timeouts in tests).
    pub latency: Duration,
    /// The next N pipeline creates create the pipeline and then answer 502 (an ambiguous
    /// create for the client).
    pub create_then_502: u32,
    /// The next N pipeline creates create nothing and answer
    /// `200 {"message": CI_SKIP_MESSAGE}`.
    pub ci_skip_next: u32,
    /// Deliver every webhook event twice (same body, same event id).
    pub duplicate_deliveries: bool,
    /// Extra delivery attempts after a non-2xx answer or a transport error.
    pub redeliver_failed: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limit: None,
            retry_after_header: true,
            fail_next: 0,
            fail_status: 503,
            failure_ratio: None,
            fail_methods: Vec::new(),
            fail_path_contains: None,
            latency: Duration::ZERO,
            create_then_502: 0,
            ci_skip_next: 0,
            duplicate_deliveries: false,
            redeliver_failed: 0,
        }
    }
}

impl Faults {
    /// A rate limit of `per_second` with `burst`.
    pub fn rate_limited(per_second: f64, burst: u32) -> Self {
        Self {
            rate_limit: Some(RateLimit { per_second, burst }),
            ..Self::default()
        }
    }
    /// Fail the next `n` requests with `status`.
    pub fn fail_next(n: u32, status: u16) -> Self {
        Self {
            fail_next: n,
            fail_status: status,
            ..Self::default()
        }
    }
}

/// Outcome of a rate-limit check: the header values to send and whether to refuse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateDecision {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// `Some(seconds)` when the request is refused.
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// Per-token buckets. Uses `tokio::time::Instant`, so a client test running with tokio's
/// paused clock sees refills follow its virtual time.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn reset(&mut self) {
        self.buckets.clear();
    }

    pub fn check(&mut self, key: &str, limit: RateLimit, now: Instant) -> RateDecision {
        let burst = f64::from(limit.burst.max(1));
        let rate = if limit.per_second.is_finite() && limit.per_second > 0.0 {
            limit.per_second
        } else {
            1e-9
        };
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            refilled_at: now,
        });
        let elapsed = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.refilled_at = now;
        let retry_after_secs = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            None
        } else {
            Some(seconds_ceil((1.0 - bucket.tokens) / rate).max(1))
        };
        RateDecision {
            limit: limit.burst,
            remaining: float_to_u32(bucket.tokens.floor()),
            reset_secs: seconds_ceil((burst - bucket.tokens) / rate),
            retry_after_secs,
        }
    }
}

fn seconds_ceil(seconds: f64) -> u64 {
    if !seconds.is_finite() || seconds <= 0.0 {
        return 0;
    }
    // Bounded to a day so a "never refills" limit still yields a sane header; float to int
    // `as` casts saturate, and the value is already integral and in range.
    seconds.ceil().min(86_400.0) as u64
}

fn float_to_u32(value: f64) -> u32 {
    // Saturating cast of a small, non-negative, integral value.
    value.max(0.0) as u32
}

/// SplitMix64: a tiny deterministic generator for `FailureRatio`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 random bits into [0, 1).
        (z >> 11) as f64 / (1_u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_rate_and_report_retry_after() {
        let limit = RateLimit {
            per_second: 2.0,
            burst: 2,
        };
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.check("a", limit, t0).remaining, 1);
        assert_eq!(limiter.check("a", limit, t0).remaining, 0);
        let refused = limiter.check("a", limit, t0);
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.reset_secs, 1);
        // Another key has its own bucket.
        assert!(limiter.check("b", limit, t0).retry_after_secs.is_none());
        // Half a second refills one request at 2/s.
        let later = t0 + Duration::from_millis(500);
        assert!(limiter.check("a", limit, later).retry_after_secs.is_none());
        assert!(limiter.check("a", limit, later).retry_after_secs.is_some());
        // Never more than the burst.
        let much_later = t0 + Duration::from_secs(3600);
        assert_eq!(limiter.check("a", limit, much_later).remaining, 1);
    }

    #[test]
    fn slow_refill_gives_long_retry_after() {
        let limit = RateLimit {
            per_second: 0.1,
            burst: 1,
        };
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        limiter.check("a", limit, t0);
        assert_eq!(limiter.check("a", limit, t0).retry_after_secs, Some(10));
    }

    #[test]
    fn split_mix_is_deterministic_and_in_range() {
        let mut a = SplitMix(42);
        let mut b = SplitMix(42);
        for _ in 0..100 {
            let x = a.next_unit();
            assert_eq!(x.to_bits(), b.next_unit().to_bits());
            assert!((0.0..1.0).contains(&x));
        }
    }
}
