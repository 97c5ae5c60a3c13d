//! `explain --event FILE`: which chain rules a webhook body matches (and why the others do
//! not), and the exact CircleCI requests they would send. Offline: nothing is sent, no
//! history is read (selection by origin is described, not resolved).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use shared::operator::explain::explain;
use shared::triggers::chained::rules::ChainRules;
use shared::triggers::chained::webhook::WebhookEvent;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// A webhook body as CircleCI sends it (JSON).
    #[arg(long)]
    event: PathBuf,
    /// The event type (CircleCI's `circleci-event-type` header): `workflow-completed` or
    /// `job-completed`. Needed only when the body has no `type`; must agree when it has.
    #[arg(long)]
    event_type: Option<String>,
    /// Print the explanation as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Path, args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let triggers = shared::config::load_file(config)?;
    let text = std::fs::read_to_string(&args.event)
        .with_context(|| format!("cannot read the event file {}", args.event.display()))?;
    let mut body: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.event.display()))?;
    if let Some(kind) = &args.event_type {
        match body.get("type").and_then(|t| t.as_str()) {
            Some(stated) if stated != kind => {
                bail!("the body says `type = {stated}` but --event-type says `{kind}`")
            }
            Some(_) => {}
            None => match body.as_object_mut() {
                Some(object) => {
                    object.insert("type".into(), serde_json::json!(kind));
                }
                None => bail!("{} is not a JSON object", args.event.display()),
            },
        }
    }
    let event = WebhookEvent::from_json(body)
        .with_context(|| format!("{} is not a usable webhook event", args.event.display()))?;
    let rules = ChainRules::from_file(&triggers)?;
    let explanation = explain(&rules, &triggers.circleci, &event);
    let text = if args.json {
        serde_json::to_string_pretty(&explanation)? + "\n"
    } else {
        explanation.to_text()
    };
    // `explain ... | head` closes the pipe early; that is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}
