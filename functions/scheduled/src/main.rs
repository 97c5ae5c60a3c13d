//! Lambda `scheduled`: the EventBridge Scheduler tick. Wiring only; the logic is in `shared`.

use lambda_runtime::{LambdaEvent, service_fn};
use shared::config::{embedded_triggers_file, parse_str};
use shared::telemetry::{LogFormat, init};
use shared::triggers::scheduled::{Scheduler, lambda::handle};
use shared::wiring::{ContextOptions, lambda_context};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init(LogFormat::Json);
    let triggers = parse_str(embedded_triggers_file!(), "triggers.toml (embedded)")?;
    let context = lambda_context(triggers, ContextOptions::default()).await?;
    let scheduler = Scheduler::new(context.engine, context.triggers).sending(context.notifications);
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let scheduler = scheduler.clone();
        async move {
            handle(&scheduler, event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
