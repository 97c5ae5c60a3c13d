//! `circleci-triggers`: check the triggers file, run the local server, and operate triggers.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "circleci-triggers",
    version,
    about = "Start CircleCI pipelines from schedules, other pipelines and external systems"
)]
struct Cli {
    /// The triggers file.
    #[arg(
        long,
        global = true,
        default_value = "triggers.toml",
        env = "CIRCLECI_TRIGGERS_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the triggers file; prints file:line errors and exits 1 when it is invalid.
    Check,
    /// Run everything on this machine: HTTP routes, scheduler, embedded SQLite store.
    Serve(commands::serve::ServeArgs),
    /// Show the next fire times of the schedules (local and UTC, DST-adjusted ones marked).
    Next(commands::next::NextArgs),
    /// Show trigger history (embedded store under --data, or DynamoDB with --table), newest first.
    History(commands::history::HistoryArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check => commands::check::run(&cli.config),
        Command::History(args) => commands::history::run(args),
        Command::Serve(args) => commands::serve::run(&cli.config, args),
        Command::Next(args) => commands::next::run(&cli.config, args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
