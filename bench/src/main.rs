//! `cargo run --release -p bench -- [scenario]`: measures the trigger paths against the
//! in-process CircleCI simulator over loopback HTTP with the SQLite store, prints a table,
//! writes `target/bench/<scenario>.json` and regenerates `docs/benchmarks.md`.

mod burst;
mod coldstart;
mod idle_tick;
mod latency;
mod moto;
mod overhead;
mod report;
mod setup;
mod storm;
mod timing;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N schedules due at once, then N concurrent endpoint calls, against a rate-limited
    /// CircleCI.
    Burst,
    /// Signed webhook deliveries (30 % duplicates) posted concurrently to the receiver.
    Storm,
    /// One trigger at a time end to end, with a zero-latency simulator (SQLite, DynamoDB).
    Overhead,
    /// The Lambda release binaries (and a Python handler) under a Runtime API emulator.
    Coldstart,
    /// DynamoDB requests and units of a scheduler tick with nothing due, by schedule count.
    IdleTick,
    /// Every scenario.
    All,
}

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of circleci-triggers against the CircleCI simulator")]
struct Cli {
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Burst: schedules due at the same instant.
    #[arg(long, default_value_t = 500)]
    count: usize,
    /// Burst: the simulator's rate limit, requests per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Burst: the simulator's token-bucket size.
    #[arg(long, default_value_t = 10)]
    bucket: u32,
    /// Burst: endpoint calls in flight at once.
    #[arg(long, default_value_t = 500)]
    endpoint_concurrency: usize,
    /// Storm: deliveries posted (30 % of them duplicates by event id).
    #[arg(long, default_value_t = 1000)]
    deliveries: usize,
    /// Storm: deliveries in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Overhead: triggers measured with SQLite (after a short warm-up).
    #[arg(long, default_value_t = 1000)]
    triggers: usize,
    /// Overhead: triggers measured with DynamoDB on moto_server.
    #[arg(long, default_value_t = 300)]
    dynamo_triggers: usize,
    /// Idle tick: schedule counts measured.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 1000])]
    schedules: Vec<usize>,
    /// Cold start: processes started per function.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Workspace root (where `target/bench/` and `docs/benchmarks.md` are written).
    #[arg(long, default_value_os_t = workspace_root())]
    root: PathBuf,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut results = report::Results::load(&cli.root);
    if matches!(cli.scenario, Scenario::Burst | Scenario::All) {
        eprintln!(
            "burst: {} schedules, {} req/s, bucket {} ...",
            cli.count, cli.rate, cli.bucket
        );
        let result = burst::run(cli.count, cli.rate, cli.bucket).await?;
        results.set_burst(&cli.root, result)?;
        eprintln!(
            "burst: {} endpoint calls ({} in flight), {} req/s, bucket {} ...",
            cli.count, cli.endpoint_concurrency, cli.rate, cli.bucket
        );
        let result =
            burst::run_endpoints(cli.count, cli.rate, cli.bucket, cli.endpoint_concurrency).await?;
        results.set_burst_endpoints(&cli.root, result)?;
    }
    if matches!(cli.scenario, Scenario::Storm | Scenario::All) {
        eprintln!(
            "storm: {} deliveries, {} concurrent ...",
            cli.deliveries, cli.concurrency
        );
        let result = storm::run(cli.deliveries, cli.concurrency).await?;
        results.set_storm(&cli.root, result)?;
    }
    if matches!(cli.scenario, Scenario::Overhead | Scenario::All) {
        eprintln!(
            "overhead: {} (SQLite) and {} (DynamoDB) triggers, one at a time ...",
            cli.triggers, cli.dynamo_triggers
        );
        let result = overhead::run(cli.triggers, cli.dynamo_triggers).await?;
        results.set_overhead(&cli.root, result)?;
    }
    if matches!(cli.scenario, Scenario::IdleTick | Scenario::All) {
        let result = idle_tick::run(&cli.schedules).await?;
        results.set_idle_tick(&cli.root, result)?;
    }
    if matches!(cli.scenario, Scenario::Coldstart | Scenario::All) {
        eprintln!("cold start: {} runs per function ...", cli.runs);
        let result = coldstart::run(&cli.root, cli.runs).await?;
        results.set_coldstart(&cli.root, result)?;
    }
    results.print_table();
    results.write_docs(&cli.root)?;
    Ok(())
}
