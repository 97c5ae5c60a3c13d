//! Burst: N schedules due at the same instant, one tick, CircleCI rate-limited to R req/s.
//! The client must pace itself to the limit: close to the ideal time, nothing lost, nothing
//! sent twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use circleci_sim::Faults;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::secrets::env_names;
use shared::triggers::http::{ApiSettings, TriggerApi, function_router, mint_key};
use shared::triggers::scheduled::Scheduler;
use shared::wiring::ContextOptions;

use crate::setup::{PROJECT, Variant, system, system_with};
use crate::timing::Meter;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BurstResult {
    /// `schedules` (one tick) or `endpoints` (concurrent HTTP API calls).
    #[serde(default)]
    pub source: String,
    pub schedules: usize,
    pub rate_per_second: f64,
    pub bucket: u32,
    pub wall_seconds: f64,
    /// Requests beyond the bucket divided by the rate: no client can do better.
    pub ideal_seconds: f64,
    /// `None` when the bucket holds the whole burst (nothing to compare with).
    pub ratio_to_ideal: Option<f64>,
    pub requests: u64,
    pub requests_per_trigger: f64,
    pub rate_limited_429: u64,
    pub pipelines: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub fired: u32,
    pub failed: u32,
    /// Endpoints: HTTP status → calls answered with it.
    #[serde(default)]
    pub statuses: BTreeMap<u16, usize>,
    /// Endpoints: calls in flight at once.
    #[serde(default)]
    pub concurrency: usize,
    /// Endpoints: from the start to the first CircleCI call, the first call's start to the
    /// last call's end, and from then to the last answer (seconds).
    #[serde(default)]
    pub phases: Option<Phases>,
    /// Schedules: the same kind of tick with CircleCI answering slowly and no rate limit
    /// (what evaluating due schedules side by side is for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_answers: Option<SlowTick>,
}

/// One tick of `schedules` due schedules while every CircleCI answer takes `answer_ms`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SlowTick {
    pub schedules: usize,
    pub answer_ms: u64,
    pub wall_seconds: f64,
    /// One schedule after another: `schedules` × the answer time.
    pub one_at_a_time_seconds: f64,
    pub lost: usize,
    pub duplicated: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Phases {
    pub lead_in_seconds: f64,
    pub circleci_span_seconds: f64,
    pub tail_seconds: f64,
}

/// When every burst's tick runs (an hour's slot, so every hourly schedule is due).
const START: &str = "2026-11-28T10:00:00Z";

/// `count` hourly schedules on one project, each on its own branch.
fn due_schedules(count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "[[schedule]]\nname = \"burst-{i:04}\"\ncron = \"0 * * * *\"\ntimezone = \"UTC\"\n\
                 target = {{ project = \"{PROJECT}\", branch = \"branch-{i:04}\", workflow = \"build\" }}\n\n"
            )
        })
        .collect()
}

/// How many schedules the slow tick has due, and how long each CircleCI answer takes: a
/// hundred nightly builds at midnight, each create answered in half a second.
const SLOW_SCHEDULES: usize = 100;
const SLOW_ANSWER: std::time::Duration = std::time::Duration::from_millis(500);

/// One tick of [`SLOW_SCHEDULES`] due schedules with CircleCI answering in [`SLOW_ANSWER`].
async fn slow_tick() -> anyhow::Result<SlowTick> {
    let start: DateTime<Utc> = START.parse()?;
    let system = system(
        start,
        &due_schedules(SLOW_SCHEDULES),
        ContextOptions::default(),
    )
    .await?;
    system.sim.set_faults(Faults {
        latency: SLOW_ANSWER,
        ..Faults::default()
    });
    let scheduler = Scheduler::new(
        system.context.engine.clone(),
        system.context.triggers.clone(),
    );
    let began = Instant::now();
    scheduler.tick(start).await?;
    let wall_seconds = began.elapsed().as_secs_f64();
    let (_, lost, duplicated) = lost_and_duplicated(&system.sim, SLOW_SCHEDULES);
    Ok(SlowTick {
        schedules: SLOW_SCHEDULES,
        answer_ms: SLOW_ANSWER.as_millis() as u64,
        wall_seconds,
        one_at_a_time_seconds: SLOW_SCHEDULES as f64 * SLOW_ANSWER.as_secs_f64(),
        lost,
        duplicated,
    })
}

pub async fn run(count: usize, rate: f64, bucket: u32) -> anyhow::Result<BurstResult> {
    let start: DateTime<Utc> = START.parse()?;
    let triggers = due_schedules(count);
    let system = system(start, &triggers, ContextOptions::default()).await?;
    system.sim.set_faults(Faults::rate_limited(rate, bucket));
    system.sim.clear_requests();
    let scheduler = Scheduler::new(
        system.context.engine.clone(),
        system.context.triggers.clone(),
    );

    let began = Instant::now();
    let report = scheduler.tick(start).await?;
    let wall = began.elapsed().as_secs_f64();

    let counters = system.sim.counters();
    let (pipelines, lost, duplicated) = lost_and_duplicated(&system.sim, count);
    let totals = report.totals();
    let requests = counters.requests;
    let successful = requests.saturating_sub(counters.rate_limited);
    let ideal = successful.saturating_sub(u64::from(bucket)) as f64 / rate;
    Ok(BurstResult {
        source: "schedules".to_owned(),
        schedules: count,
        rate_per_second: rate,
        bucket,
        wall_seconds: wall,
        ideal_seconds: ideal,
        ratio_to_ideal: (ideal > 0.0).then(|| wall / ideal),
        requests,
        requests_per_trigger: successful as f64 / count.max(1) as f64,
        rate_limited_429: counters.rate_limited,
        pipelines,
        lost,
        duplicated,
        fired: totals.fired,
        failed: totals.failed,
        statuses: BTreeMap::new(),
        concurrency: 1,
        phases: None,
        slow_answers: Some(slow_tick().await?),
    })
}

/// Lost and duplicated, from the simulator's pipelines (one expected per branch).
fn lost_and_duplicated(sim: &circleci_sim::Simulator, count: usize) -> (usize, usize, usize) {
    let pipelines = sim.pipelines();
    let mut per_branch: HashMap<String, usize> = HashMap::new();
    for pipeline in &pipelines {
        let branch = pipeline.branch.clone().unwrap_or_default();
        *per_branch.entry(branch).or_default() += 1;
    }
    let duplicated = per_branch.values().map(|n| n.saturating_sub(1)).sum();
    let lost = count.saturating_sub(per_branch.len());
    (pipelines.len(), lost, duplicated)
}

/// Burst of endpoint calls: N `POST /v1/endpoints/{name}` (each its own branch and
/// Idempotency-Key), `concurrency` in flight, to the HTTP API router served on loopback,
/// CircleCI rate-limited to R req/s.
pub async fn run_endpoints(
    count: usize,
    rate: f64,
    bucket: u32,
    concurrency: usize,
) -> anyhow::Result<BurstResult> {
    let start: DateTime<Utc> = START.parse()?;
    let triggers = format!(
        "[[endpoint]]\nname = \"burst\"\naction = \"pipeline\"\n\
         target = {{ project = \"{PROJECT}\", branch = \"main\", branches = [\"main\", \"burst/*\"], workflow = \"build\" }}\n\n\
         [[client]]\nname = \"bench-bot\"\nendpoints = [\"burst\"]\n"
    );
    let minted = mint_key("bench-bot");
    let keys = serde_json::json!({ "bench-bot": [minted.hash.to_hex()] }).to_string();
    let circleci_meter = Arc::new(Meter::default());
    let system = system_with(
        start,
        &triggers,
        ContextOptions::for_http(),
        Variant {
            secret_vars: vec![(env_names::CLIENT_KEYS.to_owned(), keys)],
            circleci_meter: Some(circleci_meter.clone()),
            ..Variant::default()
        },
    )
    .await?;
    let api = TriggerApi::from_context(&system.context, ApiSettings::default())?;
    let router = function_router(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/endpoints/burst", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    system.sim.set_faults(Faults::rate_limited(rate, bucket));
    system.sim.clear_requests();

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let key = minted.key.expose_secret().to_owned();
    let began = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..count)
        .map(|i| {
            let request = http
                .post(&url)
                .bearer_auth(&key)
                .header("Idempotency-Key", format!("burst-{i:04}"))
                .json(&serde_json::json!({ "branch": format!("burst/{i:04}") }));
            async move {
                match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        status
                    }
                    Err(_) => 0,
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let ended = Instant::now();
    let wall = ended.duration_since(began).as_secs_f64();
    server.abort();
    let phases = circleci_meter.span().map(|(first, last)| Phases {
        lead_in_seconds: first.saturating_duration_since(began).as_secs_f64(),
        circleci_span_seconds: last.saturating_duration_since(first).as_secs_f64(),
        tail_seconds: ended.saturating_duration_since(last).as_secs_f64(),
    });

    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for status in &statuses {
        *by_status.entry(*status).or_default() += 1;
    }
    let counters = system.sim.counters();
    let (pipelines, lost, duplicated) = lost_and_duplicated(&system.sim, count);
    let requests = counters.requests;
    let successful = requests.saturating_sub(counters.rate_limited);
    let ideal = successful.saturating_sub(u64::from(bucket)) as f64 / rate;
    let created = statuses.iter().filter(|s| (200..300).contains(*s)).count();
    Ok(BurstResult {
        source: "endpoints".to_owned(),
        schedules: count,
        rate_per_second: rate,
        bucket,
        wall_seconds: wall,
        ideal_seconds: ideal,
        ratio_to_ideal: (ideal > 0.0).then(|| wall / ideal),
        requests,
        requests_per_trigger: successful as f64 / count.max(1) as f64,
        rate_limited_429: counters.rate_limited,
        pipelines,
        lost,
        duplicated,
        fired: u32::try_from(created).unwrap_or(u32::MAX),
        failed: u32::try_from(count - created).unwrap_or(u32::MAX),
        statuses: by_status,
        concurrency,
        phases,
        slow_answers: None,
    })
}
