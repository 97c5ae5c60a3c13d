//! `cargo run --release -p bench -- [scenario]`: measures the trigger paths against the
//! in-process CircleCI simulator over loopback HTTP with the SQLite store, prints a table,
//! writes `target/bench/<scenario>.json` and regenerates `docs/benchmarks.md`.

mod burst;
mod latency;
mod overhead;
mod report;
mod setup;
mod storm;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N schedules due at once against a rate-limited CircleCI.
    Burst,
    /// Signed webhook deliveries (30 % duplicates) posted concurrently to the receiver.
    Storm,
    /// One trigger at a time end to end, with a zero-latency simulator.
    Overhead,
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
    /// Storm: deliveries posted (30 % of them duplicates by event id).
    #[arg(long, default_value_t = 1000)]
    deliveries: usize,
    /// Storm: deliveries in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Overhead: triggers measured (after a short warm-up).
    #[arg(long, default_value_t = 1000)]
    triggers: usize,
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
        eprintln!("overhead: {} triggers, one at a time ...", cli.triggers);
        let result = overhead::run(cli.triggers).await?;
        results.set_overhead(&cli.root, result)?;
    }
    results.print_table();
    results.write_docs(&cli.root)?;
    Ok(())
}
