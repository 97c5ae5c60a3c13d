//! `setup-webhooks --url URL`: registers the receiver on every project the triggers file
//! names, idempotently (see `shared::operator::setup_webhooks`). Reads the CircleCI token and the
//! webhook signing secret like `serve` does (`CIRCLECI_TOKEN(S)[_FILE]`,
//! `CIRCLECI_WEBHOOK_SECRETS[_FILE]`); the first signing secret is the current one.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use shared::circleci::{CircleCiClient, ClientOptions};
use shared::operator::setup_webhooks::{SetupRequest, apply, describe, plan, webhook_projects};
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets};
use shared::triggers::chained::WEBHOOK_PATH;

#[derive(Debug, clap::Args)]
pub struct SetupWebhooksArgs {
    /// The receiver's public URL, e.g. `https://hooks.example.com/webhooks/circleci`.
    #[arg(long)]
    url: String,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The token (by name) that manages the webhooks; default: the file's `[circleci].token`.
    #[arg(long)]
    token: Option<String>,
    /// Register the webhooks with TLS verification off (self-signed receivers only).
    #[arg(long)]
    no_verify_tls: bool,
    /// Print the plan (and results) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Path, args: SetupWebhooksArgs) -> anyhow::Result<ExitCode> {
    let triggers = shared::config::load_file(config)?;
    check_url(&args.url)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let secrets: Arc<dyn Secrets> = Arc::new(CachedSecrets::new(
            LocalSecretSource::from_env(&triggers.circleci.token),
            Duration::from_secs(300),
        ));
        let secret = secrets
            .webhook_signing_secrets()
            .await?
            .into_iter()
            .next()
            .context("no webhook signing secret is configured (CIRCLECI_WEBHOOK_SECRETS)")?;
        let client = CircleCiClient::new(&triggers.circleci.api_url, secrets, ClientOptions::default())?;
        let request = SetupRequest {
            url: args.url.clone(),
            token: args.token.clone().unwrap_or_else(|| triggers.circleci.token.clone()),
            secret,
            verify_tls: !args.no_verify_tls,
        };
        let projects = webhook_projects(&triggers);
        for pattern in &projects.patterns {
            eprintln!(
                "note: `{pattern}` is a pattern; register the webhook by hand on each project it should match"
            );
        }
        if projects.projects.is_empty() {
            println!("the triggers file names no project");
            return Ok(ExitCode::SUCCESS);
        }
        let plans = plan(&client, &request, &projects).await;
        if args.dry_run {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&plans)?);
            } else {
                for project in &plans {
                    println!("{}", describe(project));
                }
                println!("dry run: nothing was changed");
            }
            let blocked = plans.iter().any(|p| p.is_blocked());
            return Ok(if blocked { ExitCode::FAILURE } else { ExitCode::SUCCESS });
        }
        let applied = apply(&client, &request, &plans).await;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&applied)?);
        } else {
            for (project, outcome) in plans.iter().zip(&applied) {
                match &outcome.result {
                    Ok(done) => println!("{}: {done}", project.project),
                    Err(error) => println!("{}: ERROR {error}", project.project),
                }
            }
        }
        let failed = applied.iter().filter(|a| a.result.is_err()).count();
        if failed > 0 {
            eprintln!("{failed} project(s) could not be set up");
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// CircleCI delivers to https only (plain http is accepted for loopback tests).
fn check_url(url: &str) -> anyhow::Result<()> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|prefix| url.starts_with(prefix));
    if !url.starts_with("https://") && !loopback {
        bail!("--url must be https (CircleCI delivers webhooks to https URLs only): {url}");
    }
    if !url.trim_end_matches('/').ends_with(WEBHOOK_PATH) {
        eprintln!("note: the receiver listens on {WEBHOOK_PATH}; `{url}` does not end with it");
    }
    Ok(())
}
