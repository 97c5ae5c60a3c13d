//! Burst: N schedules due at the same instant, one tick, CircleCI rate-limited to R req/s.
//! The client must pace itself to the limit: close to the ideal time, nothing lost, nothing
//! sent twice.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use circleci_sim::Faults;
use serde::{Deserialize, Serialize};
use shared::scheduler::Scheduler;
use shared::wiring::ContextOptions;

use crate::setup::{PROJECT, system};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BurstResult {
    pub schedules: usize,
    pub rate_per_second: f64,
    pub bucket: u32,
    pub wall_seconds: f64,
    /// Requests beyond the bucket divided by the rate: no client can do better.
    pub ideal_seconds: f64,
    pub ratio_to_ideal: f64,
    pub requests: u64,
    pub requests_per_trigger: f64,
    pub rate_limited_429: u64,
    pub pipelines: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub fired: u32,
    pub failed: u32,
}

pub async fn run(count: usize, rate: f64, bucket: u32) -> anyhow::Result<BurstResult> {
    let start: DateTime<Utc> = "2026-11-28T10:00:00Z".parse()?;
    let triggers: String = (0..count)
        .map(|i| {
            format!(
                "[[schedule]]\nname = \"burst-{i:04}\"\ncron = \"0 * * * *\"\ntimezone = \"UTC\"\n\
                 target = {{ project = \"{PROJECT}\", branch = \"branch-{i:04}\", workflow = \"build\" }}\n\n"
            )
        })
        .collect();
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
    let pipelines = system.sim.pipelines();
    let mut per_branch: HashMap<String, usize> = HashMap::new();
    for pipeline in &pipelines {
        let branch = pipeline.branch.clone().unwrap_or_default();
        *per_branch.entry(branch).or_default() += 1;
    }
    let duplicated = per_branch.values().map(|n| n.saturating_sub(1)).sum();
    let lost = count.saturating_sub(per_branch.len());
    let totals = report.totals();
    let requests = counters.requests;
    let successful = requests.saturating_sub(counters.rate_limited);
    let ideal = successful.saturating_sub(u64::from(bucket)) as f64 / rate;
    Ok(BurstResult {
        schedules: count,
        rate_per_second: rate,
        bucket,
        wall_seconds: wall,
        ideal_seconds: ideal,
        ratio_to_ideal: if ideal > 0.0 { wall / ideal } else { f64::NAN },
        requests,
        requests_per_trigger: successful as f64 / count.max(1) as f64,
        rate_limited_429: counters.rate_limited,
        pipelines: pipelines.len(),
        lost,
        duplicated,
        fired: totals.fired,
        failed: totals.failed,
    })
}
