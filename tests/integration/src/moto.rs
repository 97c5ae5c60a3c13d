//! moto_server access for tests: SDK configuration, unique names, request counting.
//!
//! `./scripts/test` starts moto_server and exports `AWS_ENDPOINT_URL`. A test that needs it
//! and does not find it fails loudly: a skipped test would hide a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_config::{BehaviorVersion, Region};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// The moto_server endpoint from `AWS_ENDPOINT_URL`; panics with instructions when unset.
pub fn endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "AWS_ENDPOINT_URL is not set: run the tests with ./scripts/test, which starts moto_server \
             (or start `moto_server -H 127.0.0.1 -p PORT` and export AWS_ENDPOINT_URL yourself)"
        ),
    }
}

/// SDK configuration pointing at moto_server with static test credentials.
pub async fn sdk_config() -> aws_config::SdkConfig {
    sdk_config_for(&endpoint()).await
}

/// SDK configuration for a specific endpoint (e.g. a dedicated moto instance or a proxy).
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "moto",
        ))
        .load()
        .await
}

/// A new SQS queue on moto_server (named after `prefix`): an admin client and its URL.
pub async fn create_queue(prefix: &str) -> (aws_sdk_sqs::Client, String) {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    let url = client
        .create_queue()
        .queue_name(unique_name(prefix))
        .send()
        .await
        .expect("moto_server creates the queue")
        .queue_url()
        .expect("a created queue has a URL")
        .to_owned();
    (client, url)
}

/// A name no other test uses (moto's state is shared by every test of the run).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Counts the requests an SDK client sends (attach with `.interceptor(counter.clone())`).
/// moto's own request recorder is global to the server, so it cannot tell tests apart.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<AtomicUsize>);

impl RequestCounter {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
