//! Overhead: one trigger end to end, one at a time, against a simulator with no injected
//! latency and the SQLite store.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use circleci_sim::Faults;
use serde::{Deserialize, Serialize};
use shared::scheduler::Scheduler;
use shared::wiring::ContextOptions;

use crate::latency::Percentiles;
use crate::setup::{PROJECT, UNCONSTRAINED_RATE, system};

/// Triggers run before measuring (connection pool, SQLite cache, secrets cache).
const WARM_UP: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverheadResult {
    pub triggers: usize,
    pub latency_ms: Percentiles,
    pub pipelines: usize,
    pub requests_per_trigger: f64,
}

pub async fn run(triggers: usize) -> anyhow::Result<OverheadResult> {
    let start: DateTime<Utc> = "2026-11-28T10:00:00Z".parse()?;
    let schedule = format!(
        "[[schedule]]\nname = \"overhead\"\ncron = \"0 0 1 1 *\"\ntimezone = \"UTC\"\n\
         target = {{ project = \"{PROJECT}\", branch = \"main\", workflow = \"build\" }}\n"
    );
    let system = system(start, &schedule, ContextOptions::default()).await?;
    system
        .sim
        .set_faults(Faults::rate_limited(UNCONSTRAINED_RATE, 1000));
    let scheduler = Scheduler::new(
        system.context.engine.clone(),
        system.context.triggers.clone(),
    );
    for n in 0..WARM_UP {
        scheduler
            .run_now("overhead", start, Some(&format!("warm-up-{n}")))
            .await?;
    }
    system.sim.clear_requests();
    let mut samples: Vec<Duration> = Vec::with_capacity(triggers);
    for n in 0..triggers {
        // A new run id per call: each is its own claim, record and pipeline.
        let run_id = format!("run-{n}");
        let began = Instant::now();
        let report = scheduler.run_now("overhead", start, Some(&run_id)).await?;
        samples.push(began.elapsed());
        anyhow::ensure!(
            report.totals().fired == 1,
            "run {n} did not fire: {report:?}"
        );
    }
    let counters = system.sim.counters();
    Ok(OverheadResult {
        triggers,
        latency_ms: Percentiles::of(&mut samples),
        pipelines: counters.pipelines_created as usize,
        requests_per_trigger: counters.requests as f64 / triggers.max(1) as f64,
    })
}
