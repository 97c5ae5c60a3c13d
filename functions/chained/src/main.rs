//! Lambda `chained`: CircleCI webhooks → chain rules → actions. Wiring only; the logic is in
//! `shared::triggers::chained`.

use std::sync::Arc;

use shared::config::{embedded_triggers_file, parse_str};
use shared::telemetry::{LogFormat, init};
use shared::triggers::chained::{Receiver, function_router};
use shared::wiring::lambda_context;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let triggers = parse_str(embedded_triggers_file!(), "triggers.toml (embedded)")?;
    let context = lambda_context(triggers, Receiver::context_options()).await?;
    let receiver = Arc::new(Receiver::from_context(&context)?);
    tracing::info!(
        rules = receiver.rules().specs().count(),
        "chained function ready"
    );
    lambda_http::run(function_router(receiver)).await
}
