//! Lambda `chained`: settles the webhook deliveries the `webhooks` function queued (SQS
//! event source mapping, partial batch failures). Wiring only; the logic is in
//! `shared::triggers::chained`.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use shared::config::{embedded_triggers_file, parse_str};
use shared::telemetry::{LogFormat, init};
use shared::triggers::chained::{Receiver, queue::sqs::handle_batch};
use shared::wiring::{ContextOptions, delivery_queue, lambda_context};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init(LogFormat::Json);
    let triggers = parse_str(embedded_triggers_file!(), "triggers.toml (embedded)")?;
    let context = lambda_context(triggers, ContextOptions::default()).await?;
    let queue = context.aws.as_ref().map(delivery_queue).transpose()?;
    let receiver = Arc::new(Receiver::from_context(&context)?);
    tracing::info!(
        rules = receiver.rules().specs().count(),
        "chained worker ready"
    );
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let (receiver, queue) = (receiver.clone(), queue.clone());
        async move {
            let answer = handle_batch(&receiver, queue.as_ref(), event.payload).await;
            answer.map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
