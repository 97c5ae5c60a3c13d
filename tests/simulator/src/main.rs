//! `circleci-sim`: runs the CircleCI API simulator as a process (for the sandbox mode).
//! Jobs progress in real time (optionally sped up); users and projects come from a file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use circleci_sim::{SimConfig, SimOptions, Simulator};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "CircleCI API v2 simulator")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Users and projects (JSON, or TOML when the name ends in .toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Real-time tick in milliseconds.
    #[arg(long, default_value_t = 250)]
    tick_ms: u64,
    /// Speed-up of simulated time relative to real time.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Page size of paginated lists.
    #[arg(long, default_value_t = 20)]
    page_size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let options = SimOptions {
        listen: args.listen,
        page_size: args.page_size,
        auto_advance: Some(Duration::from_millis(args.tick_ms.max(1))),
        time_scale: args.time_scale,
        log_capacity: 10_000,
        ..SimOptions::default()
    };
    let sim = Simulator::start_with(options).await?;
    if let Some(path) = &args.config {
        sim.load_config(SimConfig::from_file(path)?)?;
    }
    tracing::info!(base_url = %sim.base_url(), "circleci-sim listening");
    println!("{}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
