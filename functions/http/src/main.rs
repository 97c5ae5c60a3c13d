//! Lambda `http`: the HTTP API for external systems. Wiring only; the logic is in `shared`.

use shared::config::{embedded_triggers_file, parse_str};
use shared::telemetry::{LogFormat, init};
use shared::triggers::http::{ApiSettings, TriggerApi, function_router};
use shared::wiring::{ContextOptions, lambda_context};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let triggers = parse_str(embedded_triggers_file!(), "triggers.toml (embedded)")?;
    let context = lambda_context(triggers, ContextOptions::for_http()).await?;
    let api = TriggerApi::from_context(&context, ApiSettings::default())?;
    tracing::info!(
        endpoints = api.catalog().endpoints().count(),
        "http function ready"
    );
    lambda_http::run(function_router(api)).await
}
