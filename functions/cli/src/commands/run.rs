//! `run SCHEDULE [--at SLOT]` and `backfill SCHEDULE --from T --to T`: operator runs of a
//! schedule, exactly once per slot (the slot's claim key is the tick's).
//!
//! Two ways to reach the deployment, the same core either way (`Scheduler::run`):
//! - `--api URL` (or `CIRCLECI_TRIGGERS_API`): `POST /v1/schedules/{name}/runs` on the `http`
//!   function or on `serve`, with an `operator = true` client's key in
//!   `CIRCLECI_TRIGGERS_KEY`. The client's name is recorded as the operator.
//! - otherwise, in this process against the store `history` reads (`--data`, or `--table`
//!   for DynamoDB) with the configured CircleCI token; the operator is `$USER`.
//!
//! A paused schedule is refused unless `--ignore-pause` (recorded on each run).
//! Exit codes: 0 done (fired or already fired), 1 refused or failed, 2 usage error.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use shared::clock::{Clock, SystemClock};
use shared::config::{TriggersFile, load_file};
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets};
use shared::triggers::scheduled::{
    BackfillRequest, BackfillStep, DEFAULT_BACKFILL_CAP, RunRequest, Scheduler, backfill_plan,
};
use shared::wiring::{ContextOptions, assemble};

use super::pause::StoreArgs;
use super::trigger::open_store;

/// Where the runs are made.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The deployed HTTP API (or `serve`), e.g. https://<api-id>.execute-api.<region>.amazonaws.com;
    /// the key of an `operator = true` client is read from CIRCLECI_TRIGGERS_KEY.
    #[arg(long, env = "CIRCLECI_TRIGGERS_API")]
    api: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The schedule's name.
    schedule: String,
    /// One of the schedule's slots (RFC 3339, e.g. 2026-03-29T01:00:00Z); default: now.
    #[arg(long, value_parser = parse_instant)]
    at: Option<DateTime<Utc>>,
    /// Without --at: a repeated command with the same id replays instead of running again.
    #[arg(long, conflicts_with = "at")]
    run_id: Option<String>,
    /// Run even though the schedule is paused (recorded on the run).
    #[arg(long)]
    ignore_pause: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The schedule's name.
    schedule: String,
    /// First instant of the range (RFC 3339), inclusive.
    #[arg(long, value_parser = parse_instant)]
    from: DateTime<Utc>,
    /// Last instant of the range (RFC 3339), inclusive; not in the future.
    #[arg(long, value_parser = parse_instant)]
    to: DateTime<Utc>,
    /// List the slots (and, against a store, what each already has) without running any.
    #[arg(long)]
    dry_run: bool,
    /// Refuse a range with more slots than this.
    #[arg(long, default_value_t = DEFAULT_BACKFILL_CAP)]
    max: usize,
    /// Run the paused schedule's slots anyway (recorded on each run).
    #[arg(long)]
    ignore_pause: bool,
    #[command(flatten)]
    target: Target,
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.to_utc())
        .map_err(|error| format!("`{text}` is not an RFC 3339 instant ({error})"))
}

fn operator_name() -> String {
    std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
}

/// One slot's answer, in the shape the HTTP route answers (`ScheduleRunView`).
struct Answer {
    ok: bool,
    body: Value,
}

impl Answer {
    fn summary(&self) -> String {
        if !self.ok {
            // The route's words for the body field are the CLI's flag here.
            let detail = self.body["detail"]
                .as_str()
                .unwrap_or("no detail")
                .replace("`\"ignore_pause\": true`", "--ignore-pause");
            return format!("refused: {detail}");
        }
        let fired = self.body["fired"].as_u64().unwrap_or(0);
        let replayed = self.body["replayed"].as_u64().unwrap_or(0);
        let mut statuses: Vec<String> = self.body["triggers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["status"].as_str().map(str::to_owned))
            .collect();
        statuses.dedup();
        let statuses = statuses.join(", ");
        match (fired, replayed) {
            (0, 0) => "in progress elsewhere".to_owned(),
            (0, _) => format!("already decided ({statuses}): nothing sent"),
            _ => statuses,
        }
    }
}

/// Makes runs, remotely or in this process.
enum Runner {
    Api {
        client: reqwest::Client,
        base: String,
        key: SecretString,
    },
    Local {
        scheduler: Scheduler,
        clock: Arc<dyn Clock>,
    },
}

impl Runner {
    async fn open(triggers: &TriggersFile, target: &Target) -> anyhow::Result<Self> {
        if let Some(api) = &target.api {
            let key = std::env::var("CIRCLECI_TRIGGERS_KEY").map_err(|_| {
                anyhow::anyhow!(
                    "--api needs CIRCLECI_TRIGGERS_KEY: the key of a client with `operator = true`"
                )
            })?;
            return Ok(Runner::Api {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()?,
                base: api.trim_end_matches('/').to_owned(),
                key: SecretString::from(key),
            });
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = open_store(&target.store, triggers, clock.clone()).await?;
        let source = LocalSecretSource::from_env(&triggers.circleci.token);
        let secrets: Arc<dyn Secrets> =
            Arc::new(CachedSecrets::new(source, Duration::from_secs(300)));
        let context = assemble(
            triggers.clone(),
            clock.clone(),
            store,
            secrets,
            ContextOptions::default(),
        )?;
        Ok(Runner::Local {
            scheduler: Scheduler::new(context.engine.clone(), context.triggers.clone()),
            clock,
        })
    }

    async fn run(&self, request: &RunRequest) -> anyhow::Result<Answer> {
        match self {
            Runner::Api { client, base, key } => {
                let mut body = json!({"ignore_pause": request.ignore_pause});
                if let Some(at) = request.at {
                    body["at"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                }
                if let Some(id) = &request.run_id {
                    body["run_id"] = json!(id);
                }
                let response = client
                    .post(format!("{base}/v1/schedules/{}/runs", request.schedule))
                    .bearer_auth(key.expose_secret())
                    .json(&body)
                    .send()
                    .await
                    .context("the API did not answer")?;
                let ok = response.status().is_success();
                let body: Value = response
                    .json()
                    .await
                    .context("the API's answer is not JSON")?;
                Ok(Answer { ok, body })
            }
            Runner::Local { scheduler, clock } => {
                let run = RunRequest {
                    operator: operator_name(),
                    ..request.clone()
                };
                match scheduler.run(&run, clock.now()).await {
                    Ok(report) => Ok(Answer {
                        ok: true,
                        body: local_view(&report),
                    }),
                    Err(error) if error.is_retryable() => Err(error.into()),
                    Err(error) => Ok(Answer {
                        ok: false,
                        body: json!({"detail": error.to_string()}),
                    }),
                }
            }
        }
    }
}

/// The HTTP route's answer shape for a local run.
fn local_view(report: &shared::triggers::scheduled::RunReport) -> Value {
    let triggers: Vec<Value> = report
        .targets
        .iter()
        .filter_map(|t| t.record.as_ref())
        .map(|record| {
            json!({
                "id": record.id.to_string(),
                "status": record.status.to_string(),
                "reason": record.reason,
                "pipeline": record.pipeline.as_ref().map(|p| json!({"id": p.id, "number": p.number})),
            })
        })
        .collect();
    let performed = report
        .targets
        .iter()
        .filter(|t| t.outcome == "performed")
        .count();
    json!({
        "schedule": report.schedule,
        "slot": report.slot,
        "at": report.at,
        "fired": performed,
        "replayed": report.counts.duplicates,
        "in_progress": report.counts.in_progress,
        "ignored_pause": report.ignored_pause,
        "triggers": triggers,
    })
}

pub fn run(config: &Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    let triggers = load_file(config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let runner = Runner::open(&triggers, &args.target).await?;
        let request = RunRequest {
            schedule: args.schedule.clone(),
            at: args.at,
            run_id: args.run_id.clone(),
            operator: operator_name(),
            ignore_pause: args.ignore_pause,
        };
        let answer = runner.run(&request).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&answer.body)?);
        } else {
            let slot = answer.body["slot"].as_str().unwrap_or("-");
            println!("{} {slot}: {}", args.schedule, answer.summary());
            for trigger in answer.body["triggers"].as_array().into_iter().flatten() {
                let pipeline = trigger["pipeline"]["number"]
                    .as_u64()
                    .map(|n| format!(" pipeline #{n}"))
                    .unwrap_or_default();
                println!(
                    "  trigger {} {}{pipeline}",
                    trigger["id"].as_str().unwrap_or("?"),
                    trigger["status"].as_str().unwrap_or("?")
                );
            }
            if let Some(note) = answer.body["ignored_pause"].as_str() {
                println!("  pause overridden: {note}");
            }
        }
        Ok(if answer.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

pub fn backfill(config: &Path, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let triggers = load_file(config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let runner = Runner::open(&triggers, &args.target).await?;
        // The plan comes from the triggers file (the one the deployment was built with).
        let plan = backfill_plan(
            &triggers,
            &args.schedule,
            args.from,
            args.to,
            Utc::now(),
            args.max,
        )
        .map_err(|error| anyhow::anyhow!("{error}"))?;
        let total = plan.slots.len();
        println!(
            "backfill {}: {total} slot(s) from {} to {}",
            args.schedule,
            args.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            args.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if args.dry_run {
            for at in &plan.slots {
                let state = match &runner {
                    Runner::Local { scheduler, .. } => {
                        let states = scheduler
                            .slot_states(&args.schedule, *at)
                            .await
                            .map_err(|error| anyhow::anyhow!("{error}"))?;
                        states
                            .iter()
                            .map(|(target, status)| match status {
                                Some(status) if status.to_string() == "skipped" => {
                                    format!("{target}: skipped before, would run")
                                }
                                Some(status) => format!("{target}: already {status}"),
                                None => format!("{target}: would run"),
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    }
                    Runner::Api { .. } => "would run unless already fired".to_owned(),
                };
                println!(
                    "  {}  {state}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut failed = false;
        match &runner {
            Runner::Local { scheduler, .. } => {
                let request = BackfillRequest {
                    plan,
                    operator: operator_name(),
                    ignore_pause: args.ignore_pause,
                    stop_after: None,
                };
                let report = scheduler
                    .backfill(&request, |step: &BackfillStep| {
                        let summary = local_summary(step);
                        progress(step.index, step.total, step.slot, &summary);
                    })
                    .await;
                match report {
                    Ok(report) => {
                        for step in &report.steps {
                            rows.push((rfc3339(step.slot), local_summary(step)));
                        }
                        failed = report.failed > 0;
                    }
                    Err(error) => {
                        eprintln!("stopped: {error}");
                        failed = true;
                    }
                }
            }
            Runner::Api { .. } => {
                for (index, at) in plan.slots.iter().enumerate() {
                    let request = RunRequest {
                        schedule: args.schedule.clone(),
                        at: Some(*at),
                        run_id: None,
                        operator: operator_name(),
                        ignore_pause: args.ignore_pause,
                    };
                    let answer = runner.run(&request).await?;
                    let summary = answer.summary();
                    progress(index + 1, total, *at, &summary);
                    rows.push((rfc3339(*at), summary));
                    if !answer.ok {
                        eprintln!(
                            "stopped at {}: re-run the same command to continue",
                            rfc3339(*at)
                        );
                        failed = true;
                        break;
                    }
                }
            }
        }
        print!("{}", summary_table(&rows));
        Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

fn local_summary(step: &BackfillStep) -> String {
    let counts = &step.report.counts;
    match (
        counts.fired,
        counts.duplicates,
        counts.failed,
        counts.skipped,
    ) {
        (0, 0, 0, 0) => "in progress elsewhere".to_owned(),
        (0, _, 0, 0) => format!("already decided ({}): nothing sent", step.report.summary()),
        _ => step.report.summary(),
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One plain-text progress line per slot (no progress-bar crate in the workspace).
fn progress(index: usize, total: usize, at: DateTime<Utc>, summary: &str) {
    const WIDTH: usize = 20;
    let done = (index * WIDTH).checked_div(total).unwrap_or(WIDTH);
    eprintln!(
        "[{}{}] {index}/{total}  {}  {summary}",
        "#".repeat(done),
        ".".repeat(WIDTH - done),
        rfc3339(at)
    );
}

fn summary_table(rows: &[(String, String)]) -> String {
    let mut out = String::new();
    let width = rows
        .iter()
        .map(|(slot, _)| slot.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let _ = writeln!(out, "{:<width$}  OUTCOME", "SLOT");
    let mut tally: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (slot, outcome) in rows {
        let _ = writeln!(out, "{slot:<width$}  {outcome}");
        let class = if outcome.starts_with("already") {
            "already decided"
        } else if outcome.starts_with("refused") {
            "refused"
        } else {
            outcome.as_str()
        };
        *tally.entry(class).or_default() += 1;
    }
    let totals: Vec<String> = tally.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(out, "{} slot(s): {}", rows.len(), totals.join(", "));
    out
}
