//! `trigger ENDPOINT --param k=v ... [--branch B] [--tag T] [--select S]`: call an HTTP
//! endpoint from this machine, through the same core as the HTTP API (parameter schema,
//! branch policy, selection, exactly-once, history), with the configured CircleCI token
//! (`CIRCLECI_TOKEN` / `CIRCLECI_TOKENS[_FILE]`). Recorded with source kind `cli`.
//!
//! The record goes to the store `history` reads: the embedded store under `--data`, or the
//! DynamoDB table given by `--table` / `TRIGGERS_TABLE`.
//!
//! Exit codes: 0 triggered (or decided without acting), 1 refused or failed, 2 usage error.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use shared::clock::{Clock, SystemClock};
use shared::config::endpoint::ParameterType;
use shared::config::{TriggersFile, load_file};
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets};
use shared::store::{DynamoStore, SharedStore, SourceKind, SqliteStore, StoreSettings};
use shared::triggers::http::{
    ApiError, ApiSettings, Call, CallError, CallInput, Caller, Rejection, TriggerApi,
    check_idempotency_key,
};
use shared::wiring::{ContextOptions, assemble};

use super::pause::StoreArgs;

#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// The endpoint's name, as in its `[[endpoint]]` entry.
    endpoint: String,
    /// A declared parameter: `NAME=VALUE` (read as the parameter's declared type). Repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// A branch the endpoint's policy allows.
    #[arg(long, conflicts_with = "tag")]
    branch: Option<String>,
    /// A tag the endpoint's policy allows.
    #[arg(long)]
    tag: Option<String>,
    /// Approve/rerun/cancel endpoints: `trigger:<id>`, `pipeline:<id>`, `revision:<sha>` or `latest`.
    #[arg(long)]
    select: Option<String>,
    /// Makes a repeated command a replay of the first instead of a second trigger.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Print the trigger record as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `NAME=VALUE` pairs as JSON values of the endpoint's declared types (undeclared names
/// stay strings: the core refuses them with the list of declared ones).
fn parameters(
    triggers: &TriggersFile,
    endpoint: &str,
    pairs: &[String],
) -> anyhow::Result<Map<String, Value>> {
    let declared = triggers
        .endpoint
        .iter()
        .find(|e| e.name == endpoint)
        .map(|e| &e.parameters);
    let mut seen = BTreeSet::new();
    let mut parameters = Map::new();
    for pair in pairs {
        let Some((name, text)) = pair.split_once('=') else {
            bail!("--param `{pair}` is not NAME=VALUE");
        };
        if !seen.insert(name.to_owned()) {
            bail!("--param `{name}` is given twice");
        }
        let kind = declared
            .and_then(|d| d.get(name))
            .map_or(ParameterType::String, |schema| schema.kind);
        let value = kind
            .parse_text(text)
            .map_err(|reason| anyhow::anyhow!("--param {name}: {reason}"))?;
        let json = match value {
            shared::config::ParameterValue::String(text) => Value::String(text),
            shared::config::ParameterValue::Integer(number) => Value::from(number),
            shared::config::ParameterValue::Boolean(flag) => Value::Bool(flag),
        };
        parameters.insert(name.to_owned(), json);
    }
    Ok(parameters)
}

pub(crate) async fn open_store(
    args: &StoreArgs,
    triggers: &TriggersFile,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<SharedStore> {
    let settings = StoreSettings::from_history(&triggers.history);
    Ok(match &args.table {
        Some(table) => Arc::new(
            DynamoStore::from_environment(table.clone(), clock)
                .await
                .with_settings(settings),
        ),
        None => {
            std::fs::create_dir_all(&args.data).with_context(|| {
                format!("cannot create the data directory {}", args.data.display())
            })?;
            Arc::new(SqliteStore::open_in_dir(&args.data, clock)?.with_settings(settings))
        }
    })
}

pub fn run(config: &Path, args: TriggerArgs) -> anyhow::Result<ExitCode> {
    let triggers = load_file(config)?;
    if !triggers.endpoint.iter().any(|e| e.name == args.endpoint) {
        let known: Vec<&str> = triggers.endpoint.iter().map(|e| e.name.as_str()).collect();
        bail!(
            "{} has no [[endpoint]] named `{}` (defined: {})",
            config.display(),
            args.endpoint,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    if let Some(key) = &args.idempotency_key {
        check_idempotency_key(key)
            .map_err(|error| anyhow::anyhow!("--idempotency-key {}", error.detail))?;
    }
    let input = CallInput {
        branch: args.branch.clone(),
        tag: args.tag.clone(),
        parameters: parameters(&triggers, &args.endpoint, &args.params)?,
        select: args.select.clone(),
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".to_owned());
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = open_store(&args.store, &triggers, clock.clone()).await?;
        let source = LocalSecretSource::from_env(&triggers.circleci.token);
        let secrets: Arc<dyn Secrets> =
            Arc::new(CachedSecrets::new(source, Duration::from_secs(300)));
        let context = assemble(triggers, clock, store, secrets, ContextOptions::default())?;
        let api = TriggerApi::from_context(&context, ApiSettings::default())?;
        let call = Call {
            endpoint: args.endpoint.clone(),
            caller: Caller::Cli { user: user.clone() },
            idempotency_key: args.idempotency_key.clone(),
            input,
        };
        match api.call(call).await {
            Ok(called) => {
                let view = api.view(&called.record);
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&view)?);
                } else {
                    let replayed = if called.replayed { " (replayed)" } else { "" };
                    println!("trigger {}: {}{replayed}", view.id, called.record.status);
                    if let Some(pipeline) = &view.pipeline {
                        let number = pipeline
                            .number
                            .map(|n| format!(" #{n}"))
                            .unwrap_or_default();
                        println!("pipeline {}{number}", pipeline.id);
                        if let Some(url) = &pipeline.url {
                            println!("{url}");
                        }
                    }
                    if let Some(reason) = &view.reason {
                        println!("{reason}");
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                let audit = match &error {
                    CallError::Outcome { .. } | CallError::InProgress { .. } => None,
                    _ => {
                        api.audit_rejection(Rejection {
                            kind: SourceKind::Cli,
                            endpoint: Some(&args.endpoint),
                            client: None,
                            idempotency_key: args.idempotency_key.as_deref(),
                            error: &error.clone().into(),
                        })
                        .await
                    }
                };
                if args.json {
                    // The same problem document an HTTP caller gets (a machine format).
                    let mut body = serde_json::to_value(ApiError::from(error).problem())?;
                    if let Some(id) = audit {
                        body["trigger_id"] = Value::String(id.to_string());
                    }
                    println!("{}", serde_json::to_string_pretty(&body)?);
                } else {
                    eprintln!("refused: {error}");
                    if let CallError::Invalid { errors } = &error {
                        for field in errors {
                            eprintln!("  {}", field.summary());
                        }
                    }
                    if let Some(id) = audit {
                        eprintln!("recorded as trigger {id}");
                    }
                }
                Ok(ExitCode::from(1))
            }
        }
    })
}
