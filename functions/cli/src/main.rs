//! `circleci-triggers`: check the triggers file, run the local server, and operate triggers.

mod commands;
mod sandbox;

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
    Check(commands::check::CheckArgs),
    /// Lint a .circleci/config.yml against the triggers file: workflows a `workflow = "x"` target also runs, missing workflows, undeclared or mistyped parameters.
    LintCi(commands::lint_ci::LintCiArgs),
    /// Run everything on this machine: HTTP routes, scheduler, embedded SQLite store.
    Serve(commands::serve::ServeArgs),
    /// Show the next fire times of the schedules (local and UTC, DST-adjusted ones marked).
    Next(commands::next::NextArgs),
    /// Show trigger history (embedded store under --data, or DynamoDB with --table), newest first.
    History(commands::history::HistoryArgs),
    /// Call an HTTP endpoint from here (same validation and history; source kind `cli`).
    Trigger(commands::trigger::TriggerArgs),
    /// Mint a key for an HTTP API client and print the SHA-256 for the client keys secret.
    MintKey(commands::mint_key::MintKeyArgs),
    /// Pause a schedule (a store flag every tick honours: its slots are recorded as skipped).
    Pause(commands::pause::PauseArgs),
    /// Resume a paused schedule (its next slot fires).
    Resume(commands::pause::ResumeArgs),
    /// Which chain rules a webhook body matches and the CircleCI requests they would send (sends nothing).
    Explain(commands::explain::ExplainArgs),
    /// Run a schedule now or at one of its slots (--at): once per slot; refused while paused unless --ignore-pause.
    Run(commands::run::RunArgs),
    /// Run the slots of a schedule in a range that have not fired (resumable, capped, --dry-run).
    Backfill(commands::run::BackfillArgs),
    /// Register the webhook receiver's URL on every project the triggers file names (idempotent).
    SetupWebhooks(commands::setup_webhooks::SetupWebhooksArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => commands::check::run(&cli.config, args),
        Command::LintCi(args) => commands::lint_ci::run(&cli.config, args),
        Command::History(args) => commands::history::run(args),
        Command::Trigger(args) => commands::trigger::run(&cli.config, args),
        Command::MintKey(args) => commands::mint_key::run(&cli.config, args),
        Command::Serve(args) => commands::serve::run(&cli.config, args),
        Command::Next(args) => commands::next::run(&cli.config, args),
        Command::Pause(args) => commands::pause::run_pause(&cli.config, args),
        Command::Resume(args) => commands::pause::run_resume(&cli.config, args),
        Command::Explain(args) => commands::explain::run(&cli.config, args),
        Command::Run(args) => commands::run::run(&cli.config, args),
        Command::Backfill(args) => commands::run::backfill(&cli.config, args),
        Command::SetupWebhooks(args) => commands::setup_webhooks::run(&cli.config, args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
