//! Lambda `chained`: receives CircleCI webhooks. Wiring only; the logic is in `shared`.

use shared::config::{embedded_triggers_file, parse_str};
use shared::telemetry::{LogFormat, init};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init(LogFormat::Json);
    let triggers = parse_str(embedded_triggers_file!(), "triggers.toml (embedded)")?;
    tracing::info!(api_url = %triggers.circleci.api_url, "chained function starting");
    let router = shared::http::with_problem_fallbacks(shared::http::health_router());
    lambda_http::run(router).await
}
