//! Lambda `webhooks`: CircleCI's signed deliveries verified and queued (202); the `chained`
//! function acts on them from the queue. Wiring only; the logic is in
//! `shared::triggers::chained::http`.

use std::sync::Arc;

use shared::telemetry::{LogFormat, init};
use shared::triggers::chained::function_router;
use shared::wiring::{ContextOptions, webhook_acceptor};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let acceptor = Arc::new(webhook_acceptor(ContextOptions::default()).await?);
    tracing::info!("webhooks function ready");
    lambda_http::run(function_router(acceptor)).await
}
