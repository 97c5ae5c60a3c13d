//! Client-side pacing: one token bucket per CircleCI token, adapted from the rate-limit
//! headers CircleCI sends, so a burst flows at the server's rate instead of bouncing off it.
//!
//! Requests of one token queue behind a fair (FIFO) gate; the request at the head waits
//! until the bucket has a token, then takes it and lets the next one in. Each wait is
//! recomputed from the freshest state, so headers observed by responses in flight adjust
//! the pace of requests already queued. Time is tokio's, so tests can pause it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use rand::Rng;
use tokio::time::Instant;

/// The pace assumed for a token before CircleCI has said anything about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateDefaults {
    /// Requests that may go at once.
    pub burst: u32,
    /// Sustained requests per second.
    pub per_second: f64,
}

impl Default for RateDefaults {
    fn default() -> Self {
        // Conservative until the first answer's headers tell the real limit.
        Self {
            burst: 10,
            per_second: 10.0,
        }
    }
}

/// Never slower than one request a minute, never faster than a thousand a second: a
/// nonsensical header must not stall the client or turn pacing off.
const MIN_RATE: f64 = 1.0 / 60.0;
const MAX_RATE: f64 = 1000.0;

/// What one response said about the token's rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimitHeaders {
    pub limit: Option<f64>,
    pub remaining: Option<f64>,
    /// Time until the quota is fully restored.
    pub reset: Option<Duration>,
    /// The policy's window (`RateLimit-Policy: 100;w=60`), when sent.
    pub window: Option<Duration>,
}

impl RateLimitHeaders {
    /// Reads `RateLimit-Limit` / `-Remaining` / `-Reset` (IETF draft), their `X-RateLimit-*`
    /// spellings, the combined `RateLimit: limit=.., remaining=.., reset=..` and
    /// `RateLimit-Policy`. `None` when the response carries none of them.
    pub fn parse(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Self> {
        let number = |names: &[&str]| {
            names.iter().find_map(|name| {
                let text = headers.get(*name)?.to_str().ok()?;
                // Some servers list several policies: the first number is the effective one.
                let first = text.split([',', ';']).next()?.trim();
                first
                    .parse::<f64>()
                    .ok()
                    .filter(|value| value.is_finite() && *value >= 0.0)
            })
        };
        let mut parsed = Self {
            limit: number(&["ratelimit-limit", "x-ratelimit-limit"]),
            remaining: number(&["ratelimit-remaining", "x-ratelimit-remaining"]),
            reset: number(&["ratelimit-reset", "x-ratelimit-reset"])
                .map(|value| reset_delay(value, now)),
            window: None,
        };
        if let Some(combined) = headers.get("ratelimit").and_then(|v| v.to_str().ok()) {
            for item in combined.split([',', ';']) {
                let Some((key, value)) = item.split_once('=') else {
                    continue;
                };
                let Ok(value) = value.trim().parse::<f64>() else {
                    continue;
                };
                if !value.is_finite() || value < 0.0 {
                    continue;
                }
                match key.trim() {
                    "limit" => parsed.limit = parsed.limit.or(Some(value)),
                    "remaining" | "r" => parsed.remaining = parsed.remaining.or(Some(value)),
                    "reset" | "t" => parsed.reset = parsed.reset.or(Some(reset_delay(value, now))),
                    _ => {}
                }
            }
        }
        if let Some(policy) = headers
            .get("ratelimit-policy")
            .and_then(|v| v.to_str().ok())
        {
            let mut items = policy.split(',').next().unwrap_or_default().split(';');
            let quota = items.next().and_then(|q| q.trim().parse::<f64>().ok());
            for item in items {
                if let Some(("w", seconds)) = item.trim().split_once('=')
                    && let Ok(seconds) = seconds.trim().parse::<f64>()
                    && seconds.is_finite()
                    && seconds > 0.0
                {
                    parsed.window = Some(Duration::from_secs_f64(seconds));
                }
            }
            parsed.limit = parsed.limit.or(quota);
        }
        (parsed != Self::default()).then_some(parsed)
    }
}

/// A reset is a delay in seconds, except that some servers send a Unix time instead.
fn reset_delay(value: f64, now: DateTime<Utc>) -> Duration {
    const LOOKS_LIKE_EPOCH: f64 = 1_000_000_000.0;
    let seconds = if value >= LOOKS_LIKE_EPOCH {
        (value - now.timestamp() as f64).max(0.0)
    } else {
        value
    };
    Duration::from_secs_f64(seconds.min(86_400.0))
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let at = DateTime::parse_from_rfc2822(text).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Exponential backoff ceiling for the `attempt`-th retry (0-based): `base · 2^attempt`, capped.
pub fn backoff_ceiling(attempt: u32, base: Duration, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << attempt.min(20)).min(cap)
}

/// "Full jitter": a uniformly random wait between zero and the ceiling, so clients that
/// failed together do not retry together.
pub fn full_jitter(ceiling: Duration, rng: &mut impl Rng) -> Duration {
    Duration::from_secs_f64(rng.random_range(0.0..=ceiling.as_secs_f64()))
}

/// Why a request could not get a turn before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacingRefused {
    /// How much longer it would have had to wait (zero if it timed out in the queue).
    pub wait: Duration,
    /// Whether CircleCI had asked us to stop (429) rather than just the local pace.
    pub throttled: bool,
}

/// A view of one bucket, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketState {
    pub capacity: f64,
    pub tokens: f64,
    pub per_second: f64,
    pub blocked_for: Duration,
    pub in_flight: usize,
}

/// Where the bucket's rate comes from, most trusted last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateSource {
    Default,
    Estimated,
    Stated,
}

/// A reset at least this long makes a rate estimate from it trustworthy (rounding to whole
/// seconds is then at most a third off).
const RELIABLE_RESET: Duration = Duration::from_secs(3);

/// What we know, from our side, about when CircleCI counted one of our requests. Counts
/// are of this token's requests since the bucket was created.
#[derive(Debug, Clone, Copy)]
struct Counting {
    /// When the request was sent: CircleCI counted it no earlier.
    sent_at: Instant,
    /// How many of our requests CircleCI had certainly counted once it counted this one
    /// (those answered before it was sent, and itself).
    at_least: u64,
    /// How many it may have counted by then (every request sent before its answer came).
    at_most: u64,
    /// Its sequence number.
    seq: u64,
    /// Answers seen (with a `remaining`) when it was sent.
    answers_at_send: u64,
    /// Our other requests in flight when its answer came.
    others_in_flight: usize,
}

/// The start of a refill measurement: one answer's `remaining` and what it had counted.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    sent_at: Instant,
    answered_at: Instant,
    remaining: f64,
    at_most: u64,
}

/// Refill is measured over at least this long, so `remaining` being a whole number costs
/// at most one request per second of accuracy.
const MIN_REFILL_BASELINE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    rate_source: RateSource,
    /// Sequence number of the next request sent with this token.
    next_seq: u64,
    /// Requests sent and not yet answered.
    in_flight: usize,
    /// Answers seen with a `remaining`, numbered in the order they came.
    answers_seen: u64,
    /// The latest-sent request answered so far: its sequence number and `answers_seen`
    /// when it was sent.
    latest_answered: Option<(u64, u64)>,
    /// (number, remaining) of every answer that came after `latest_answered` was sent,
    /// its own included: the request CircleCI counted last is one of them.
    last_counted_candidates: VecDeque<(u64, f64)>,
    /// Answers that used quota (not 429s), for measuring the refill between answers.
    counted: u64,
    /// The start of the next refill measurement.
    anchor: Option<Anchor>,
    refilled_at: Instant,
    blocked_until: Option<Instant>,
}

impl Bucket {
    fn new(defaults: RateDefaults, now: Instant) -> Self {
        let capacity = f64::from(defaults.burst.max(1));
        Self {
            capacity,
            tokens: capacity,
            per_second: defaults.per_second.clamp(MIN_RATE, MAX_RATE),
            rate_source: RateSource::Default,
            next_seq: 0,
            in_flight: 0,
            answers_seen: 0,
            latest_answered: None,
            last_counted_candidates: VecDeque::new(),
            counted: 0,
            anchor: None,
            refilled_at: now,
            blocked_until: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        // While CircleCI holds the token (429), nothing accrues: `refilled_at` is then the
        // end of the hold, in the future.
        if now > self.refilled_at {
            let elapsed = (now - self.refilled_at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
            self.refilled_at = now;
        }
        if self.blocked_until.is_some_and(|until| until <= now) {
            self.blocked_until = None;
        }
    }

    /// How long until a request may go (zero: now).
    fn wait(&self, now: Instant) -> Duration {
        let for_token = if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        };
        let for_block = self
            .blocked_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        for_token.max(for_block)
    }

    /// What one answer's headers say about the token's capacity and pace.
    fn observe_limits(&mut self, seen: &RateLimitHeaders) {
        if let Some(limit) = seen.limit.filter(|limit| *limit >= 1.0) {
            self.capacity = limit;
            self.tokens = self.tokens.min(limit);
        }
        match (seen.limit, seen.remaining, seen.reset, seen.window) {
            (Some(limit), _, _, Some(window)) => {
                self.set_rate(limit / window.as_secs_f64());
                self.rate_source = RateSource::Stated;
            }
            // Without a stated window, assume the deficit refills evenly until the reset:
            // exact for a token bucket, and never faster than a fixed window allows.
            (Some(limit), Some(remaining), Some(reset), None)
                if remaining < limit
                    && !reset.is_zero()
                    && self.rate_source != RateSource::Stated =>
            {
                let estimate = (limit - remaining) / reset.as_secs_f64();
                // Resets come in whole seconds, rounded up, so an estimate is a lower bound,
                // and a poor one when the reset is short: such an estimate may raise the
                // pace but not lower it (429s and long resets do that).
                if reset >= RELIABLE_RESET || estimate > self.per_second {
                    self.set_rate(estimate);
                }
                self.rate_source = RateSource::Estimated;
            }
            _ => {}
        }
    }

    /// One answer's `remaining`, with what we know of when its request was counted.
    fn observe_remaining(&mut self, remaining: f64, now: Instant, counting: Counting) {
        // A lower bound of what is left, so it is taken up or down: exact for an answer
        // alone in flight, and while a burst queues, answers that overlapped others still
        // reveal the quota refilling faster than the pace assumed so far.
        self.tokens = self
            .left_for_new_requests(remaining, &counting)
            .min(self.capacity);
        // Two answers at least a second apart measure the refill between them: at least
        // (remaining now - (remaining then + 1) + quota used in between) over at most the
        // time between them. Quota used counts only what was certainly counted after the
        // first and up to this one, so requests in flight make the bound looser, never
        // wrong. A bucket that was full for a while, or another client on the same token,
        // only makes it lower, so it may raise our pace but never lowers it.
        let anchor = Anchor {
            sent_at: counting.sent_at,
            answered_at: now,
            remaining,
            at_most: counting.at_most,
        };
        match self.anchor {
            Some(then) if now.duration_since(then.answered_at) < MIN_REFILL_BASELINE => {}
            Some(then) => {
                let used = counting.at_least as f64 - then.at_most as f64;
                let elapsed = now.duration_since(then.sent_at).as_secs_f64();
                let refill = (remaining - (then.remaining + 1.0) + used) / elapsed;
                if self.rate_source != RateSource::Stated && refill > self.per_second {
                    self.set_rate(refill);
                }
                self.anchor = Some(anchor);
            }
            None => self.anchor = Some(anchor),
        }
    }

    /// What CircleCI has left for requests not sent yet, at least. Answers overtake each
    /// other, so the one just received may not be the request CircleCI counted last; that
    /// one is among the answers that came after the latest-sent answered request was sent
    /// (whatever was answered before then was counted before it). So the least `remaining`
    /// among them is left, less the requests still in flight, which may be counted later.
    /// The refill since those answers only adds to it.
    fn left_for_new_requests(&mut self, remaining: f64, counting: &Counting) -> f64 {
        let number = self.answers_seen;
        self.answers_seen += 1;
        if self
            .latest_answered
            .is_none_or(|(latest, _)| counting.seq > latest)
        {
            self.latest_answered = Some((counting.seq, counting.answers_at_send));
        }
        let since = self.latest_answered.map_or(0, |(_, at_send)| at_send);
        self.last_counted_candidates.push_back((number, remaining));
        while self
            .last_counted_candidates
            .front()
            .is_some_and(|(number, _)| *number < since)
        {
            self.last_counted_candidates.pop_front();
        }
        let least = self
            .last_counted_candidates
            .iter()
            .map(|(_, remaining)| *remaining)
            .fold(remaining, f64::min);
        least - counting.others_in_flight as f64
    }

    /// A request that may have used quota without telling us what was left (no rate-limit
    /// headers, or no answer at all): it may have been counted after every candidate.
    fn counted_unseen(&mut self) {
        for (_, remaining) in &mut self.last_counted_candidates {
            *remaining -= 1.0;
        }
    }

    fn set_rate(&mut self, rate: f64) {
        if rate.is_finite() {
            self.per_second = rate.clamp(MIN_RATE, MAX_RATE);
        }
    }

    fn throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        // A 429 means the pace was too fast (ours, or ours plus another client's on the
        // same token): halve it. Header estimates raise it again.
        self.per_second = (self.per_second / 2.0).max(MIN_RATE);
        match retry_after {
            Some(wait) => {
                let until = self.blocked_until.map_or(now + wait, |b| b.max(now + wait));
                self.blocked_until = Some(until);
                // When the hold ends, one request probes (its answer resyncs the count);
                // the rest follow at the pace, not as a burst saved up during the hold.
                self.tokens = 1.0;
                self.refilled_at = self.refilled_at.max(until);
            }
            None => self.tokens = self.tokens.min(0.0),
        }
    }
}

struct Slot {
    /// Fair queue of the token's requests; held while the head of the queue waits.
    gate: tokio::sync::Mutex<()>,
    bucket: Mutex<Bucket>,
}

impl Slot {
    fn bucket(&self) -> MutexGuard<'_, Bucket> {
        // The bucket is plain numbers: a panic mid-update cannot leave it unusable.
        self.bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The buckets of every token name the client has used.
pub struct Pacer {
    defaults: RateDefaults,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// The right to send one request. Hold it until the answer has been looked at: the bucket
/// uses what it knows of the requests in flight to read CircleCI's `remaining` correctly.
pub struct Turn {
    slot: Arc<Slot>,
    seq: u64,
    sent_at: Instant,
    /// Answers that had used quota when this request was sent.
    counted_at_send: u64,
    /// Answers with a `remaining` seen when this request was sent.
    answers_at_send: u64,
    answered: bool,
}

impl Turn {
    /// CircleCI answered this request. `counted`: the answer used up quota (anything but
    /// a 429). `seen`: its rate-limit headers, if any.
    pub fn answered(&mut self, counted: bool, seen: Option<&RateLimitHeaders>) {
        self.answered = true;
        let mut bucket = self.slot.bucket();
        let now = Instant::now();
        bucket.refill(now);
        if counted {
            bucket.counted += 1;
        }
        if let Some(seen) = seen {
            bucket.observe_limits(seen);
        }
        match seen.and_then(|seen| seen.remaining) {
            Some(remaining) => {
                let counting = Counting {
                    sent_at: self.sent_at,
                    at_least: self.counted_at_send + 1,
                    at_most: bucket.next_seq,
                    seq: self.seq,
                    answers_at_send: self.answers_at_send,
                    others_in_flight: bucket.in_flight.saturating_sub(1),
                };
                bucket.observe_remaining(remaining, now, counting);
            }
            None if counted => bucket.counted_unseen(),
            None => {}
        }
    }

    /// This request was answered 429: hold the token for `retry_after` (or slow down).
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let mut bucket = self.slot.bucket();
        let now = Instant::now();
        bucket.refill(now);
        bucket.throttled(now, retry_after);
    }
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn").field("seq", &self.seq).finish()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut bucket = self.slot.bucket();
        bucket.in_flight = bucket.in_flight.saturating_sub(1);
        if !self.answered {
            // A request that may or may not have used quota: refill can no longer be
            // measured across it.
            bucket.anchor = None;
            bucket.counted_unseen();
        }
    }
}

impl Pacer {
    pub fn new(defaults: RateDefaults) -> Self {
        Self {
            defaults,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, token: &str) -> Arc<Slot> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots
            .entry(token.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    gate: tokio::sync::Mutex::new(()),
                    bucket: Mutex::new(Bucket::new(self.defaults, Instant::now())),
                })
            })
            .clone()
    }

    /// Waits for this token's next turn, or refuses if it would come after `deadline`.
    pub async fn acquire(&self, token: &str, deadline: Instant) -> Result<Turn, PacingRefused> {
        let slot = self.slot(token);
        let Ok(_queue) = tokio::time::timeout_at(deadline, slot.gate.lock()).await else {
            let throttled = slot
                .bucket()
                .blocked_until
                .is_some_and(|until| until > Instant::now());
            return Err(PacingRefused {
                wait: Duration::ZERO,
                throttled,
            });
        };
        loop {
            let now = Instant::now();
            let (wait, throttled) = {
                let mut bucket = slot.bucket();
                bucket.refill(now);
                let wait = bucket.wait(now);
                if wait.is_zero() {
                    bucket.tokens -= 1.0;
                    let seq = bucket.next_seq;
                    bucket.next_seq += 1;
                    let counted_at_send = bucket.counted;
                    let answers_at_send = bucket.answers_seen;
                    bucket.in_flight += 1;
                    drop(bucket);
                    return Ok(Turn {
                        slot: slot.clone(),
                        seq,
                        sent_at: now,
                        counted_at_send,
                        answers_at_send,
                        answered: false,
                    });
                }
                (wait, bucket.blocked_until.is_some())
            };
            if now + wait > deadline {
                return Err(PacingRefused { wait, throttled });
            }
            tokio::time::sleep(wait).await;
        }
    }

    pub fn state(&self, token: &str) -> BucketState {
        let slot = self.slot(token);
        let mut bucket = slot.bucket();
        let now = Instant::now();
        bucket.refill(now);
        BucketState {
            capacity: bucket.capacity,
            tokens: bucket.tokens,
            per_second: bucket.per_second,
            blocked_for: bucket
                .blocked_until
                .map_or(Duration::ZERO, |until| until.saturating_duration_since(now)),
            in_flight: bucket.in_flight,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::HeaderValue;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn both_header_families_parse() {
        let ietf = headers(&[
            ("ratelimit-limit", "100"),
            ("ratelimit-remaining", "40"),
            ("ratelimit-reset", "30"),
        ]);
        let parsed = RateLimitHeaders::parse(&ietf, now()).unwrap();
        assert_eq!(parsed.limit, Some(100.0));
        assert_eq!(parsed.remaining, Some(40.0));
        assert_eq!(parsed.reset, Some(Duration::from_secs(30)));

        let epoch = now().timestamp() + 12;
        let legacy = headers(&[
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &epoch.to_string()),
        ]);
        let parsed = RateLimitHeaders::parse(&legacy, now()).unwrap();
        assert_eq!(parsed.remaining, Some(0.0));
        assert_eq!(
            parsed.reset,
            Some(Duration::from_secs(12)),
            "Unix time becomes a delay"
        );

        let structured = headers(&[
            ("ratelimit", "limit=50, remaining=7, reset=5"),
            ("ratelimit-policy", "50;w=10"),
        ]);
        let parsed = RateLimitHeaders::parse(&structured, now()).unwrap();
        assert_eq!(parsed.limit, Some(50.0));
        assert_eq!(parsed.remaining, Some(7.0));
        assert_eq!(parsed.window, Some(Duration::from_secs(10)));

        assert_eq!(
            RateLimitHeaders::parse(&headers(&[("ratelimit-limit", "lots")]), now()),
            None
        );
        assert_eq!(RateLimitHeaders::parse(&HeaderMap::new(), now()), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now()),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Sat, 28 Nov 2026 12:00:20 GMT")]),
                now()
            ),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Sat, 28 Nov 2026 11:00:00 GMT")]),
                now()
            ),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now()), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "soon")]), now()),
            None
        );
    }

    #[test]
    fn backoff_grows_to_the_cap_and_jitter_stays_below_the_ceiling() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        assert_eq!(backoff_ceiling(0, base, cap), Duration::from_millis(100));
        assert_eq!(backoff_ceiling(3, base, cap), Duration::from_millis(800));
        assert_eq!(backoff_ceiling(10, base, cap), cap);
        assert_eq!(backoff_ceiling(u32::MAX, base, cap), cap);
        let mut rng = StdRng::seed_from_u64(7);
        let waits: Vec<Duration> = (0..200)
            .map(|_| full_jitter(Duration::from_secs(2), &mut rng))
            .collect();
        assert!(waits.iter().all(|wait| *wait <= Duration::from_secs(2)));
        assert!(
            waits.iter().any(|wait| *wait < Duration::from_millis(500))
                && waits.iter().any(|wait| *wait > Duration::from_millis(1500)),
            "full jitter spreads over the whole range"
        );
        assert_eq!(full_jitter(Duration::ZERO, &mut rng), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_flows_at_the_rate() {
        let pacer = Pacer::new(RateDefaults {
            burst: 3,
            per_second: 2.0,
        });
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        let mut sent_at = Vec::new();
        for _ in 0..7 {
            pacer.acquire("default", far).await.unwrap();
            sent_at.push(Instant::now() - start);
        }
        let millis: Vec<u128> = sent_at.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [0, 0, 0, 500, 1000, 1500, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_are_served_in_order_at_the_rate() {
        let pacer = Arc::new(Pacer::new(RateDefaults {
            burst: 1,
            per_second: 4.0,
        }));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(60);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer.acquire("default", deadline).await.unwrap();
                    Instant::now() - start
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap().as_millis());
        }
        times.sort_unstable();
        assert_eq!(times, [0, 250, 500, 750, 1000, 1250, 1500, 1750]);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_have_separate_buckets() {
        let pacer = Pacer::new(RateDefaults {
            burst: 1,
            per_second: 0.5,
        });
        let deadline = Instant::now() + Duration::from_secs(1);
        pacer.acquire("default", deadline).await.unwrap();
        pacer.acquire("release-bot", deadline).await.unwrap();
        let refused = pacer.acquire("default", deadline).await.unwrap_err();
        assert!(!refused.throttled);
        assert_eq!(refused.wait, Duration::from_secs(2));
    }

    /// One request of `token` answered with `seen`.
    async fn answered(pacer: &Pacer, seen: RateLimitHeaders) {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut turn = pacer.acquire("default", far).await.unwrap();
        turn.answered(true, Some(&seen));
    }

    fn seen(limit: f64, remaining: f64, reset: Duration) -> RateLimitHeaders {
        RateLimitHeaders {
            limit: Some(limit),
            remaining: Some(remaining),
            reset: Some(reset),
            window: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn headers_set_capacity_rate_and_what_is_left() {
        let pacer = Pacer::new(RateDefaults::default());
        // A token bucket of 20 refilling at 1/s: 15 left, full again in 5 s.
        answered(&pacer, seen(20.0, 15.0, Duration::from_secs(5))).await;
        let state = pacer.state("default");
        assert_eq!(state.capacity, 20.0);
        assert_eq!(state.per_second, 1.0);
        assert_eq!(state.tokens, 15.0, "the server's count wins");
        assert_eq!(state.in_flight, 0);

        answered(
            &pacer,
            RateLimitHeaders {
                window: Some(Duration::from_secs(60)),
                ..seen(20.0, 0.0, Duration::from_secs(10))
            },
        )
        .await;
        let state = pacer.state("default");
        assert_eq!(state.tokens, 0.0);
        assert!(
            (state.per_second - 20.0 / 60.0).abs() < 1e-9,
            "the stated window wins"
        );

        // Nonsense cannot stop the client or switch pacing off.
        answered(
            &pacer,
            RateLimitHeaders {
                window: Some(Duration::from_secs(1_000_000)),
                ..seen(1.0, 0.0, Duration::ZERO)
            },
        )
        .await;
        assert_eq!(pacer.state("default").per_second, MIN_RATE);
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_discounts_our_requests_still_in_flight() {
        let pacer = Pacer::new(RateDefaults::default());
        let far = Instant::now() + Duration::from_secs(60);
        let mut first = pacer.acquire("default", far).await.unwrap();
        let second = pacer.acquire("default", far).await.unwrap();
        let third = pacer.acquire("default", far).await.unwrap();
        assert_eq!(pacer.state("default").in_flight, 3);
        // The first answer says 5 left; the two sent after it may not be counted in that.
        first.answered(true, Some(&seen(10.0, 5.0, Duration::from_secs(1))));
        assert_eq!(pacer.state("default").tokens, 3.0);
        drop(first);
        drop(second);
        drop(third);
        assert_eq!(pacer.state("default").in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_that_overtake_each_other_leave_the_least_remaining_of_them() {
        let pacer = Pacer::new(RateDefaults {
            burst: 10,
            per_second: 0.001,
        });
        let far = Instant::now() + Duration::from_secs(60);
        let mut a = pacer.acquire("default", far).await.unwrap();
        let mut b = pacer.acquire("default", far).await.unwrap();
        let mut c = pacer.acquire("default", far).await.unwrap();
        let left = |remaining| seen(10.0, remaining, Duration::from_secs(1));
        // CircleCI counted c, then b, then a (9, 8, 7 left); the answers come b, a, c.
        b.answered(true, Some(&left(8.0)));
        drop(b);
        let tokens = || pacer.state("default").tokens.round();
        assert_eq!(tokens(), 6.0, "8 left, less a and c in flight");
        a.answered(true, Some(&left(7.0)));
        drop(a);
        assert_eq!(tokens(), 6.0, "the least of b and a (7), less c");
        c.answered(true, Some(&left(9.0)));
        drop(c);
        // c was sent last, but a and b answered after it was sent: any of the three may
        // have been counted last, so only the least is sure.
        assert_eq!(
            tokens(),
            7.0,
            "an early count answered late does not raise it"
        );
        // A request alone in flight is exact, up or down.
        let mut d = pacer.acquire("default", far).await.unwrap();
        d.answered(true, Some(&left(9.0)));
        drop(d);
        assert_eq!(tokens(), 9.0);
        // A request that may have used quota without saying so counts as used: counted
        // g, e, f (9, 8, 7 left), f never answered.
        let mut e = pacer.acquire("default", far).await.unwrap();
        let f = pacer.acquire("default", far).await.unwrap();
        let mut g = pacer.acquire("default", far).await.unwrap();
        e.answered(true, Some(&left(8.0)));
        drop(e);
        assert_eq!(tokens(), 6.0, "8 left, less f and g in flight");
        drop(f);
        g.answered(true, Some(&left(9.0)));
        drop(g);
        assert_eq!(tokens(), 7.0, "f may have been counted after e");
    }

    #[tokio::test(start_paused = true)]
    async fn refill_is_measured_between_answers_that_were_alone_in_flight() {
        let pacer = Pacer::new(RateDefaults {
            burst: 10,
            per_second: 1.0,
        });
        // Nothing about the rate in the headers (reset absent): only the counts tell.
        let left = |remaining: f64| RateLimitHeaders {
            limit: Some(10.0),
            remaining: Some(remaining),
            reset: None,
            window: None,
        };
        answered(&pacer, left(0.0)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        // 2 s later, one request (this one) used: 7 left means at least (7 - 1 + 1) / 2 per s.
        answered(&pacer, left(7.0)).await;
        let state = pacer.state("default");
        assert_eq!(state.per_second, 3.5);
        assert_eq!(state.tokens, 7.0);

        // An answer that overlapped another request is not exact: no measurement, and it
        // can only lower the count.
        let far = Instant::now() + Duration::from_secs(60);
        let mut first = pacer.acquire("default", far).await.unwrap();
        let second = pacer.acquire("default", far).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        first.answered(true, Some(&left(10.0)));
        let state = pacer.state("default");
        assert_eq!(state.per_second, 3.5);
        assert!(state.tokens < 10.0, "{state:?}");
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn short_resets_may_raise_the_estimated_pace_but_not_lower_it() {
        let pacer = Pacer::new(RateDefaults {
            burst: 10,
            per_second: 1.0,
        });
        let limit = 10.0;
        // Empty bucket, "2 s" to full: at least 5/s, more than assumed: raise.
        answered(&pacer, seen(limit, 0.0, Duration::from_secs(2))).await;
        assert_eq!(pacer.state("default").per_second, 5.0);
        // One used, "1 s" to refill (really 0.2 s, rounded up): says 1/s, not trusted.
        answered(&pacer, seen(limit, 9.0, Duration::from_secs(1))).await;
        assert_eq!(pacer.state("default").per_second, 5.0);
        // A long reset is trusted either way: 8 missing, 4 s → 2/s.
        answered(&pacer, seen(limit, 2.0, Duration::from_secs(4))).await;
        assert_eq!(pacer.state("default").per_second, 2.0);
        // A higher short estimate is still a valid lower bound.
        answered(&pacer, seen(limit, 7.0, Duration::from_secs(1))).await;
        assert_eq!(pacer.state("default").per_second, 3.0);
    }

    /// CircleCI's side of a token, in paused time: a token bucket that counts a request
    /// halfway through its round trip and answers with whole-second resets.
    struct ModelServer {
        capacity: f64,
        per_second: f64,
        tokens: f64,
        refilled_at: Instant,
        refused: u32,
    }

    impl ModelServer {
        fn decide(&mut self) -> Option<RateLimitHeaders> {
            let now = Instant::now();
            let elapsed = (now - self.refilled_at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
            self.refilled_at = now;
            if self.tokens < 1.0 {
                self.refused += 1;
                return None;
            }
            self.tokens -= 1.0;
            let reset = ((self.capacity - self.tokens) / self.per_second).ceil();
            Some(seen(
                self.capacity,
                self.tokens.floor(),
                Duration::from_secs_f64(reset),
            ))
        }
    }

    /// `count` requests all queued at once, each taking `latency` on the wire, against a
    /// server allowing `per_second` after a burst of 10, with the pacer assuming 10/s.
    /// Returns when the last one was answered, and how many the server refused.
    async fn concurrent_burst(count: usize, per_second: f64, latency: Duration) -> (Duration, u32) {
        let pacer = Arc::new(Pacer::new(RateDefaults::default()));
        let server = Arc::new(Mutex::new(ModelServer {
            capacity: 10.0,
            per_second,
            tokens: 10.0,
            refilled_at: Instant::now(),
            refused: 0,
        }));
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        let tasks: Vec<_> = (0..count)
            .map(|_| {
                let (pacer, server) = (pacer.clone(), server.clone());
                tokio::spawn(async move {
                    let mut turn = pacer.acquire("default", far).await.unwrap();
                    tokio::time::sleep(latency / 2).await;
                    let decided = server.lock().unwrap().decide();
                    tokio::time::sleep(latency / 2).await;
                    match decided {
                        Some(seen) => turn.answered(true, Some(&seen)),
                        None => turn.throttled(Some(Duration::from_secs(1))),
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let refused = server.lock().unwrap().refused;
        (Instant::now() - start, refused)
    }

    #[tokio::test(start_paused = true)]
    async fn the_refill_is_learnt_while_many_requests_are_in_flight() {
        // 50/s with a burst of 10: the 490 requests beyond the burst need 9.8 s at best.
        // With 40 ms round trips two or three requests are always in flight, so hardly any
        // answer is alone, and whole-second resets never state a pace above 10/s. (Learning
        // from lone answers only, this took 12.3 s; with 100 ms round trips, 49 s.)
        let ideal = 490.0 / 50.0;
        let (took, refused) = concurrent_burst(500, 50.0, Duration::from_millis(40)).await;
        assert_eq!(refused, 0, "paced below the limit: no 429");
        assert!(took.as_secs_f64() <= ideal * 1.03, "40 ms: {took:?}");
        let (took, refused) = concurrent_burst(500, 50.0, Duration::from_millis(100)).await;
        assert_eq!(refused, 0);
        assert!(took.as_secs_f64() <= ideal * 1.10, "100 ms: {took:?}");
        // A server slower than the assumed 10/s: one 429 halves the pace, no second one.
        let (took, refused) = concurrent_burst(100, 5.0, Duration::from_millis(40)).await;
        assert!(refused <= 1, "{refused} refused");
        assert!(took.as_secs_f64() <= 90.0 / 5.0 * 1.05, "5/s: {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_blocks_the_token_for_retry_after_and_refuses_past_the_deadline() {
        let pacer = Pacer::new(RateDefaults {
            burst: 5,
            per_second: 5.0,
        });
        let start = Instant::now();
        let turn = pacer
            .acquire("default", start + Duration::from_secs(1))
            .await
            .unwrap();
        turn.throttled(Some(Duration::from_secs(3)));
        drop(turn);
        let refused = pacer
            .acquire("default", start + Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(refused.throttled);
        assert_eq!(refused.wait, Duration::from_secs(3));
        pacer
            .acquire("default", start + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        // Only that one probe goes when the hold ends; the next waits for the (halved) pace.
        pacer
            .acquire("default", start + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(Instant::now() - start, Duration::from_millis(3400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_without_retry_after_halves_the_pace() {
        let pacer = Pacer::new(RateDefaults {
            burst: 1,
            per_second: 8.0,
        });
        let far = Instant::now() + Duration::from_secs(60);
        pacer.acquire("default", far).await.unwrap().throttled(None);
        assert_eq!(pacer.state("default").per_second, 4.0);
        assert_eq!(pacer.state("default").tokens, 0.0);
    }
}
