//! `pause NAME` / `resume NAME`: stop and restart one schedule without a redeploy.
//!
//! A pause is a flag in the trigger store (scope `schedule:NAME`) that every tick reads — the
//! Lambda's and `serve`'s alike — so it takes effect from the next tick on: the schedule's
//! slots are still evaluated and each is recorded as `skipped` with the reason given here.
//! Resuming does not fire the slots skipped meanwhile (they were decided); the next slot fires.
//!
//! The store is the one `history` reads: the embedded SQLite store under `--data` (what
//! `serve` writes), or the DynamoDB table given by `--table` / `TRIGGERS_TABLE`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use shared::clock::SystemClock;
use shared::config::{ConfigError, TriggersFile, load_file};
use shared::store::sqlite::DEFAULT_FILE_NAME;
use shared::store::{DynamoStore, FlagStore, PauseFlag, PauseScope, SqliteStore};

/// Where the trigger store is (shared by the commands that operate on it).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Directory of the embedded store (as given to `serve`).
    #[arg(long, default_value = ".circleci-triggers")]
    pub data: PathBuf,
    /// Use the DynamoDB table instead of the embedded store.
    #[arg(long, env = shared::store::dynamo::TABLE_ENV)]
    pub table: Option<String>,
}

impl StoreArgs {
    /// Opens the store's pause flags. The embedded store must exist already: pausing a
    /// store `serve` does not use (a mistyped `--data`) would silently do nothing.
    pub async fn open_flags(&self) -> anyhow::Result<Arc<dyn FlagStore>> {
        Ok(match &self.table {
            Some(table) => {
                Arc::new(DynamoStore::from_environment(table.clone(), Arc::new(SystemClock)).await)
            }
            None => {
                let path = self.data.join(DEFAULT_FILE_NAME);
                if !path.exists() {
                    bail!(
                        "no trigger store at {} (run `serve --data {}` once, or pass --table for DynamoDB)",
                        path.display(),
                        self.data.display()
                    );
                }
                Arc::new(SqliteStore::open(&path, Arc::new(SystemClock))?)
            }
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The schedule's name.
    name: String,
    /// Why (kept with the flag and written on every skipped slot's record).
    #[arg(long)]
    reason: Option<String>,
    /// Who paused it (default: $USER).
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The schedule's name.
    name: String,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run_pause(config: &Path, args: PauseArgs) -> anyhow::Result<ExitCode> {
    check_schedule_name(config, &args.name)?;
    let by = args.by.clone().or_else(|| std::env::var("USER").ok());
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let flags = args.store.open_flags().await?;
        let flag = pause(
            flags.as_ref(),
            &args.name,
            args.reason.as_deref(),
            by.as_deref(),
        )
        .await?;
        println!("{}", describe(&args.name, &flag));
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_resume(config: &Path, args: ResumeArgs) -> anyhow::Result<ExitCode> {
    check_schedule_name(config, &args.name)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let flags = args.store.open_flags().await?;
        if resume(flags.as_ref(), &args.name).await? {
            println!(
                "resumed schedule `{}`: its next slot fires (slots skipped while paused stay skipped)",
                args.name
            );
        } else {
            println!("schedule `{}` was not paused", args.name);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Sets the schedule's pause flag (again, with the new reason, if it was paused).
pub async fn pause(
    flags: &dyn FlagStore,
    name: &str,
    reason: Option<&str>,
    by: Option<&str>,
) -> anyhow::Result<PauseFlag> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    flags
        .pause(&PauseScope::Schedule(name.to_owned()), reason, by)
        .await
        .with_context(|| format!("cannot pause schedule `{name}`"))
}

/// Clears the flag; `false` if the schedule was not paused.
pub async fn resume(flags: &dyn FlagStore, name: &str) -> anyhow::Result<bool> {
    flags
        .resume(&PauseScope::Schedule(name.to_owned()))
        .await
        .with_context(|| format!("cannot resume schedule `{name}`"))
}

fn describe(name: &str, flag: &PauseFlag) -> String {
    let mut text = format!(
        "paused schedule `{name}` at {}",
        flag.paused_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if let Some(by) = &flag.paused_by {
        text.push_str(&format!(" by {by}"));
    }
    if let Some(reason) = &flag.reason {
        text.push_str(&format!(" ({reason})"));
    }
    text.push_str(&format!(
        "; its slots are recorded as skipped until `resume {name}`"
    ));
    text
}

/// A name the triggers file does not define is a typo: refuse it. Without a file at hand
/// (an operator's shell outside the repository) the name cannot be checked, only used.
fn check_schedule_name(config: &Path, name: &str) -> anyhow::Result<()> {
    match load_file(config) {
        Ok(triggers) => known_schedule(&triggers, name),
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "note: {} not found; `{name}` is not checked against the schedules",
                config.display()
            );
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

fn known_schedule(triggers: &TriggersFile, name: &str) -> anyhow::Result<()> {
    if triggers.schedule.iter().any(|s| s.name == name) {
        return Ok(());
    }
    let known: Vec<&str> = triggers.schedule.iter().map(|s| s.name.as_str()).collect();
    bail!(
        "no schedule named `{name}` in the triggers file (known: {})",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use shared::clock::ManualClock;

    fn triggers() -> TriggersFile {
        shared::config::parse_str(
            r#"
[[schedule]]
name = "nightly"
cron = "0 2 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/api", branch = "main" }
"#,
            "t.toml",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn pause_sets_the_flag_the_tick_reads_and_resume_clears_it() {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap(),
        ));
        let store = SqliteStore::in_memory(clock).unwrap();
        let flag = pause(&store, "nightly", Some("  db migration "), Some("ops"))
            .await
            .unwrap();
        assert_eq!(flag.scope.to_string(), "schedule:nightly");
        assert_eq!(flag.reason.as_deref(), Some("db migration"));
        assert_eq!(
            describe("nightly", &flag),
            "paused schedule `nightly` at 2026-11-28T09:00:00Z by ops (db migration); \
             its slots are recorded as skipped until `resume nightly`"
        );
        let stored = store
            .pause_flag(&PauseScope::Schedule("nightly".into()))
            .await
            .unwrap();
        assert_eq!(stored, Some(flag));

        assert!(resume(&store, "nightly").await.unwrap());
        assert_eq!(
            store
                .pause_flag(&PauseScope::Schedule("nightly".into()))
                .await
                .unwrap(),
            None
        );
        assert!(!resume(&store, "nightly").await.unwrap(), "already resumed");

        // A blank reason is no reason.
        let flag = pause(&store, "nightly", Some("  "), None).await.unwrap();
        assert_eq!(flag.reason, None);
    }

    #[test]
    fn unknown_schedule_names_are_refused() {
        assert!(known_schedule(&triggers(), "nightly").is_ok());
        let error = known_schedule(&triggers(), "nigthly").unwrap_err();
        assert_eq!(
            error.to_string(),
            "no schedule named `nigthly` in the triggers file (known: nightly)"
        );
    }

    #[tokio::test]
    async fn a_missing_embedded_store_is_an_error_not_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let args = StoreArgs {
            data: dir.path().join("typo"),
            table: None,
        };
        let Err(error) = args.open_flags().await else {
            panic!("opened a store that does not exist");
        };
        assert!(error.to_string().contains("no trigger store at"), "{error}");
        assert!(!dir.path().join("typo").exists());
    }
}
