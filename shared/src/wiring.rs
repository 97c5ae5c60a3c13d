//! The cloud adapters built from a Lambda function's environment, once per cold start:
//! the DynamoDB store (`TRIGGERS_TABLE`), Secrets Manager (the `*_SECRET_ID` variables of
//! [`SecretIds`]), the CircleCI client and the engine over them. Every Lambda `main.rs`
//! calls [`lambda_context`] and wires its own entry point to the result.

use std::sync::Arc;
use std::time::Duration;

use crate::actions::Actions;
use crate::circleci::{CircleCi, CircleCiClient, CircleCiError, ClientOptions};
use crate::clock::{Clock, SystemClock};
use crate::config::TriggersFile;
use crate::engine::{Engine, EngineSettings};
use crate::notify::{DynamoOutbox, HttpSender, Outbox, Sweeper, with_notifications};
use crate::secrets::{CachedSecrets, SecretIds, Secrets, SecretsManagerSource};
use crate::store::dynamo::TABLE_ENV;
use crate::store::{DynamoStore, SharedStore, StoreSettings};

/// How long a read secret is trusted before it is read again (a rotation takes effect
/// within this time; a 401 from CircleCI re-reads the tokens at once).
pub const SECRETS_TTL: Duration = Duration::from_secs(300);

/// What may differ between the functions.
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// The HTTP function keeps CircleCI calls inside API Gateway's 30 s integration timeout.
    pub circleci: ClientOptions,
    /// `history` is replaced by the triggers file's `[history]`.
    pub engine: EngineSettings,
    pub secrets_ttl: Duration,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            circleci: ClientOptions::default(),
            engine: EngineSettings::default(),
            secrets_ttl: SECRETS_TTL,
        }
    }
}

impl ContextOptions {
    /// The `http` function: CircleCI calls (retries included) end within 20 s, so the
    /// answer fits API Gateway's 30 s integration timeout.
    pub fn for_http() -> Self {
        Self {
            circleci: ClientOptions {
                deadline: Duration::from_secs(20),
                ..ClientOptions::default()
            },
            ..Self::default()
        }
    }
}

/// The adapters and the engine of one function instance.
#[derive(Clone)]
pub struct LambdaContext {
    pub triggers: Arc<TriggersFile>,
    pub clock: Arc<dyn Clock>,
    pub store: SharedStore,
    pub secrets: Arc<dyn Secrets>,
    pub circleci: Arc<dyn CircleCi>,
    pub engine: Engine,
    /// The AWS configuration the adapters were built from (`None` outside Lambda).
    pub aws: Option<aws_config::SdkConfig>,
    /// Sends queued notifications (`None` without `[[notify]]`): the scheduled tick runs it.
    pub notifications: Option<Arc<Sweeper>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    #[error(transparent)]
    CircleCi(#[from] CircleCiError),
    #[error(transparent)]
    Notify(#[from] crate::notify::SendError),
}

/// Builds the context from the process environment and the AWS default credential chain.
pub async fn lambda_context(
    triggers: TriggersFile,
    options: ContextOptions,
) -> Result<LambdaContext, WiringError> {
    let table = std::env::var(TABLE_ENV)
        .ok()
        .filter(|value| !value.is_empty())
        .ok_or(WiringError::MissingEnv(TABLE_ENV))?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let store: SharedStore = Arc::new(
        DynamoStore::new(dynamo.clone(), &table, clock.clone())
            .with_settings(StoreSettings::from_history(&triggers.history)),
    );
    let source = SecretsManagerSource::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        SecretIds::from_env(),
    );
    let secrets: Arc<dyn Secrets> = Arc::new(CachedSecrets::new(source, options.secrets_ttl));
    let (store, notifications) =
        cloud_notifications(store, &triggers, dynamo, &table, &secrets, &clock)?;
    let mut context = assemble(triggers, clock, store, secrets, options)?;
    context.aws = Some(aws);
    context.notifications = notifications;
    Ok(context)
}

/// With `[[notify]]`: the store wrapped so that decisions queue notifications in the
/// table's outbox, and the sweeper that sends them. Without: the store as is.
pub fn cloud_notifications(
    store: SharedStore,
    triggers: &TriggersFile,
    dynamo: aws_sdk_dynamodb::Client,
    table: &str,
    secrets: &Arc<dyn Secrets>,
    clock: &Arc<dyn Clock>,
) -> Result<(SharedStore, Option<Arc<Sweeper>>), WiringError> {
    if triggers.notify.is_empty() {
        return Ok((store, None));
    }
    let outbox: Arc<dyn Outbox> = Arc::new(DynamoOutbox::new(dynamo, table));
    let store = with_notifications(store, triggers, Some(outbox.clone()));
    let sweeper = Sweeper::new(
        outbox,
        Arc::new(HttpSender::new()?),
        secrets.clone(),
        Arc::new(triggers.clone()),
        clock.clone(),
    );
    Ok((store, Some(Arc::new(sweeper))))
}

/// The `webhooks` function's edge: the signing secrets (Secrets Manager) and the delivery
/// queue (SQS, `DELIVERY_QUEUE_URL`). No store and no CircleCI client: that role can only
/// read the signing secrets and send to the queue.
pub async fn webhook_acceptor(
    options: ContextOptions,
) -> Result<crate::triggers::chained::WebhookAcceptor, WiringError> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let source = SecretsManagerSource::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        SecretIds::from_env(),
    );
    let secrets: Arc<dyn Secrets> = Arc::new(CachedSecrets::new(source, options.secrets_ttl));
    let queue = Arc::new(delivery_queue(&aws)?);
    Ok(crate::triggers::chained::WebhookAcceptor::new(
        secrets,
        queue,
        Arc::new(SystemClock),
    ))
}

/// The delivery queue named by `DELIVERY_QUEUE_URL` (the `chained` worker shortens retry
/// delays through it).
pub fn delivery_queue(
    aws: &aws_config::SdkConfig,
) -> Result<crate::triggers::chained::queue::sqs::SqsDeliveryQueue, WiringError> {
    use crate::triggers::chained::queue::sqs::{QUEUE_URL_ENV, SqsDeliveryQueue};
    let url = std::env::var(QUEUE_URL_ENV)
        .ok()
        .filter(|value| !value.is_empty())
        .ok_or(WiringError::MissingEnv(QUEUE_URL_ENV))?;
    Ok(SqsDeliveryQueue::new(aws_sdk_sqs::Client::new(aws), url))
}

/// The engine over given adapters (also used by tests and `serve` with other adapters).
pub fn assemble(
    triggers: TriggersFile,
    clock: Arc<dyn Clock>,
    store: SharedStore,
    secrets: Arc<dyn Secrets>,
    options: ContextOptions,
) -> Result<LambdaContext, CircleCiError> {
    let circleci: Arc<dyn CircleCi> = Arc::new(CircleCiClient::new(
        &triggers.circleci.api_url,
        secrets.clone(),
        options.circleci,
    )?);
    let settings = EngineSettings {
        history: triggers.history.clone(),
        ..options.engine
    };
    let engine = Engine::new(
        store.clone(),
        Arc::new(Actions::new(circleci.clone())),
        clock.clone(),
        settings,
    );
    Ok(LambdaContext {
        triggers: Arc::new(triggers),
        clock,
        store,
        secrets,
        circleci,
        engine,
        aws: None,
        notifications: None,
    })
}
