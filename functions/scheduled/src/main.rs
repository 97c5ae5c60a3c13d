//! Lambda `scheduled`: the EventBridge Scheduler tick. Wiring only; the logic is in `shared`.

use lambda_runtime::{LambdaEvent, service_fn};
use shared::config::{embedded_triggers_file, parse_str};
use shared::telemetry::{LogFormat, init};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init(LogFormat::Json);
    let triggers = parse_str(embedded_triggers_file!(), "triggers.toml (embedded)")?;
    tracing::info!(api_url = %triggers.circleci.api_url, "scheduled function starting");
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move {
            tracing::info!(input = %event.payload, "tick received");
            Ok::<_, lambda_runtime::Error>(())
        },
    ))
    .await
}
