//! Overhead: one trigger end to end, one at a time, against a simulator with no injected
//! latency, with the SQLite store and with DynamoDB on moto_server. The store and the
//! CircleCI client are wrapped in timing decorators (`crate::timing`): the time in our code
//! is the end-to-end time minus the time spent inside them.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use circleci_sim::Faults;
use serde::{Deserialize, Serialize};
use shared::triggers::scheduled::Scheduler;
use shared::wiring::ContextOptions;

use crate::latency::Percentiles;
use crate::moto::Moto;
use crate::setup::{PROJECT, UNCONSTRAINED_RATE, Variant, system_with};
use crate::timing::Meter;

/// Triggers run before measuring (connection pool, SQLite cache, secrets cache).
const WARM_UP: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverheadResult {
    pub sqlite: StoreOverhead,
    pub dynamo: StoreOverhead,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreOverhead {
    pub store: String,
    pub triggers: usize,
    pub end_to_end_ms: Percentiles,
    /// End to end minus store and CircleCI time, per trigger.
    pub our_code_ms: Percentiles,
    pub store_ms: Percentiles,
    pub circleci_ms: Percentiles,
    pub store_requests_per_trigger: f64,
    pub circleci_requests_per_trigger: f64,
    pub pipelines: usize,
}

pub async fn run(sqlite_triggers: usize, dynamo_triggers: usize) -> anyhow::Result<OverheadResult> {
    let sqlite = measure("SQLite", sqlite_triggers, None).await?;
    let moto = Moto::start().await?;
    let table = moto.new_table("bench-overhead").await?;
    let dynamo = measure(
        "DynamoDB (moto_server)",
        dynamo_triggers,
        Some((moto.dynamo(), table)),
    )
    .await?;
    drop(moto);
    Ok(OverheadResult { sqlite, dynamo })
}

async fn measure(
    store: &str,
    triggers: usize,
    dynamo: Option<(aws_sdk_dynamodb::Client, String)>,
) -> anyhow::Result<StoreOverhead> {
    let start: DateTime<Utc> = "2026-11-28T10:00:00Z".parse()?;
    let schedule = format!(
        "[[schedule]]\nname = \"overhead\"\ncron = \"0 0 1 1 *\"\ntimezone = \"UTC\"\n\
         target = {{ project = \"{PROJECT}\", branch = \"main\", workflow = \"build\" }}\n"
    );
    let store_meter = Arc::new(Meter::default());
    let circleci_meter = Arc::new(Meter::default());
    let system = system_with(
        start,
        &schedule,
        ContextOptions::default(),
        Variant {
            dynamo,
            store_meter: Some(store_meter.clone()),
            circleci_meter: Some(circleci_meter.clone()),
            ..Variant::default()
        },
    )
    .await?;
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
    let (store_calls_before, _) = store_meter.read();
    let (circleci_calls_before, _) = circleci_meter.read();
    let mut end_to_end = Vec::with_capacity(triggers);
    let mut ours = Vec::with_capacity(triggers);
    let mut in_store = Vec::with_capacity(triggers);
    let mut in_circleci = Vec::with_capacity(triggers);
    for n in 0..triggers {
        // A new run id per call: each is its own claim, record and pipeline.
        let run_id = format!("run-{n}");
        let (_, store_before) = store_meter.read();
        let (_, circleci_before) = circleci_meter.read();
        let began = Instant::now();
        let report = scheduler.run_now("overhead", start, Some(&run_id)).await?;
        let total = began.elapsed();
        let store_spent = store_meter.read().1.saturating_sub(store_before);
        let circleci_spent = circleci_meter.read().1.saturating_sub(circleci_before);
        anyhow::ensure!(
            report.totals().fired == 1,
            "run {n} did not fire: {report:?}"
        );
        end_to_end.push(total);
        // The ports are called one after another, so the subtraction is exact up to the
        // timer's resolution; saturate rather than go negative.
        ours.push(
            total
                .saturating_sub(store_spent)
                .saturating_sub(circleci_spent),
        );
        in_store.push(store_spent);
        in_circleci.push(circleci_spent);
    }
    let per_trigger = |calls: u64| calls as f64 / triggers.max(1) as f64;
    let counters = system.sim.counters();
    Ok(StoreOverhead {
        store: store.to_owned(),
        triggers,
        end_to_end_ms: Percentiles::of(&mut end_to_end),
        our_code_ms: Percentiles::of(&mut ours),
        store_ms: Percentiles::of(&mut in_store),
        circleci_ms: Percentiles::of(&mut in_circleci),
        store_requests_per_trigger: per_trigger(store_meter.read().0 - store_calls_before),
        circleci_requests_per_trigger: per_trigger(circleci_meter.read().0 - circleci_calls_before),
        pipelines: counters.pipelines_created as usize,
    })
}
