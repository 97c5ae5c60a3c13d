//! Local mode (`circleci-triggers serve`): the three trigger kinds of the Lambda functions
//! in one process, over the embedded SQLite store and secrets from the environment.
//!
//! The same routers and the same [`Scheduler::tick`] as in AWS; only the adapters differ.
//! The CLI adds the process concerns (signals, the listener, the sandbox).

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::Request;

use crate::circleci::CircleCiError;
use crate::clock::Clock;
use crate::config::TriggersFile;
use crate::http::with_problem_fallbacks;
use crate::notify::{HttpSender, Outbox, SqliteOutbox, Sweeper, with_notifications};
use crate::secrets::{CachedSecrets, LocalSecretSource, Secrets};
use crate::store::{SharedStore, SqliteStore, StoreError, StoreSettings};
use crate::triggers::chained::queue::QueueError;
use crate::triggers::chained::queue::embedded::{EmbeddedWorker, SqliteDeliveryQueue};
use crate::triggers::chained::rules::ChainRulesError;
use crate::triggers::chained::{Receiver, WebhookAcceptor, webhook_router};
use crate::triggers::http::{ApiSettings, CatalogError, TriggerApi, api_router};
use crate::triggers::scheduled::Scheduler;
use crate::wiring::{ContextOptions, LambdaContext, SECRETS_TTL, assemble};
use tower::ServiceExt;

/// Why the local server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the embedded store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    CircleCi(#[from] CircleCiError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    ChainRules(#[from] ChainRulesError),
    #[error("cannot open the webhook delivery queue: {0}")]
    Queue(#[from] QueueError),
    #[error("cannot open the notification outbox: {0}")]
    Outbox(#[from] crate::notify::NotifyError),
    #[error("cannot build the notification sender: {0}")]
    Sender(#[from] crate::notify::SendError),
}

/// Everything `serve` runs: the HTTP routes (API, webhook acceptor, health), the scheduler
/// and the webhook worker, over one engine.
pub struct LocalServer {
    pub context: LambdaContext,
    pub router: Router,
    pub scheduler: Scheduler,
    /// Drains the embedded delivery queue the webhook route fills (run it beside the server).
    pub deliveries: EmbeddedWorker,
    /// Sends queued notifications (`None` without `[[notify]]`): run it beside the server.
    pub notifications: Option<Sweeper>,
}

/// The embedded store under `directory` (created if missing), with the file's retention.
pub fn open_store(
    directory: &Path,
    triggers: &TriggersFile,
    clock: Arc<dyn Clock>,
) -> Result<SharedStore, LocalError> {
    data_dir(directory)?;
    Ok(Arc::new(
        SqliteStore::open_in_dir(directory, clock)?
            .with_settings(StoreSettings::from_history(&triggers.history)),
    ))
}

/// The embedded webhook delivery queue under `directory` (created if missing): it outlives
/// reloads of the triggers file, like the store.
pub fn open_queue(
    directory: &Path,
    clock: Arc<dyn Clock>,
) -> Result<SqliteDeliveryQueue, LocalError> {
    data_dir(directory)?;
    Ok(SqliteDeliveryQueue::open_in_dir(directory, clock)?)
}

/// The embedded notification outbox under `directory` (created if missing).
pub fn open_outbox(directory: &Path) -> Result<SqliteOutbox, LocalError> {
    data_dir(directory)?;
    Ok(SqliteOutbox::open_in_dir(directory)?)
}

/// Creates `serve`'s data directory if it is missing.
fn data_dir(directory: &Path) -> Result<(), LocalError> {
    std::fs::create_dir_all(directory).map_err(|source| LocalError::DataDir {
        path: directory.display().to_string(),
        source,
    })
}

/// Secrets from a [`LocalSecretSource`] (environment variables or files), cached like the
/// Lambdas cache Secrets Manager.
pub fn local_secrets(source: LocalSecretSource) -> Arc<dyn Secrets> {
    Arc::new(CachedSecrets::new(source, SECRETS_TTL))
}

/// The API, the webhook acceptor and `GET /healthz` on one router, with problem+json
/// fallbacks: the same routers the two HTTP Lambdas serve.
pub fn local_router(api: TriggerApi, acceptor: Arc<WebhookAcceptor>) -> Router {
    with_problem_fallbacks(
        api_router(api)
            .merge(webhook_router(acceptor))
            .merge(crate::http::health_router()),
    )
}

/// Builds the engine over the given adapters, then the routers, the scheduler and the
/// webhook worker on it. Webhooks are queued in `queue` and settled by the worker, as in AWS.
pub fn build(
    triggers: TriggersFile,
    clock: Arc<dyn Clock>,
    store: SharedStore,
    secrets: Arc<dyn Secrets>,
    queue: SqliteDeliveryQueue,
    outbox: SqliteOutbox,
) -> Result<LocalServer, LocalError> {
    let outbox: Arc<dyn Outbox> = Arc::new(outbox);
    let store = with_notifications(store, &triggers, Some(outbox.clone()));
    // The API's CircleCI calls end within the `http` function's budget, as in AWS.
    let context = assemble(triggers, clock, store, secrets, ContextOptions::for_http())?;
    let notifications = if context.triggers.notify.is_empty() {
        None
    } else {
        Some(Sweeper::new(
            outbox,
            Arc::new(HttpSender::new()?),
            context.secrets.clone(),
            context.triggers.clone(),
            context.clock.clone(),
        ))
    };
    let api = TriggerApi::from_context(&context, ApiSettings::default())?;
    let receiver = Arc::new(Receiver::from_context(&context)?);
    let acceptor = Arc::new(WebhookAcceptor::new(
        context.secrets.clone(),
        Arc::new(queue.clone()),
        context.clock.clone(),
    ));
    let scheduler = Scheduler::new(context.engine.clone(), context.triggers.clone());
    Ok(LocalServer {
        router: local_router(api, acceptor),
        scheduler,
        deliveries: EmbeddedWorker::new(queue, receiver),
        notifications,
        context,
    })
}

/// Routes that can be replaced while serving (a reloaded triggers file): requests already
/// routed finish on the routes they started on; new ones take the current routes.
#[derive(Clone)]
pub struct SwappableRouter {
    current: Arc<RwLock<Router>>,
}

impl SwappableRouter {
    pub fn new(router: Router) -> Self {
        Self {
            current: Arc::new(RwLock::new(router)),
        }
    }

    pub fn replace(&self, router: Router) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = router;
    }

    fn current(&self) -> Router {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The router to serve: every request goes to the routes current when it arrives.
    pub fn router(&self) -> Router {
        let routes = self.clone();
        Router::new().fallback(move |request: Request| {
            let router = routes.current();
            async move { router.oneshot(request).await }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    fn triggers() -> TriggersFile {
        crate::config::parse_str(
            r#"
[[endpoint]]
name = "deploy"
target = { project = "gh/acme/api" }

[[client]]
name = "bot"
endpoints = ["deploy"]
"#,
            "t.toml",
        )
        .unwrap()
    }

    async fn status(router: &Router, method: &str, uri: &str) -> StatusCode {
        router
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn the_local_router_serves_health_api_and_webhooks() {
        let dir = tempfile::tempdir().unwrap();
        let triggers = triggers();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = open_store(&dir.path().join("data"), &triggers, clock.clone()).unwrap();
        let queue = open_queue(&dir.path().join("data"), clock.clone()).unwrap();
        let secrets = local_secrets(LocalSecretSource::from_vars(
            [("CIRCLECI_WEBHOOK_SECRETS".to_owned(), "s3cret".to_owned())],
            "default",
        ));
        let outbox = open_outbox(&dir.path().join("data")).unwrap();
        let server = build(triggers, clock, store, secrets, queue, outbox).unwrap();
        assert!(dir.path().join("data").is_dir());
        assert_eq!(
            status(&server.router, "GET", "/healthz").await,
            StatusCode::OK
        );
        assert_eq!(
            status(&server.router, "GET", "/v1/openapi.json").await,
            StatusCode::OK
        );
        // No key: the API refuses; an unsigned webhook is refused too.
        assert_eq!(
            status(&server.router, "POST", "/v1/endpoints/deploy").await,
            StatusCode::UNAUTHORIZED
        );
        let webhook = status(&server.router, "POST", "/webhooks/circleci").await;
        assert_eq!(webhook, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(&server.router, "GET", "/nowhere").await,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn a_swapped_router_answers_new_requests_with_the_new_routes() {
        let swappable = SwappableRouter::new(
            Router::new().route("/old", axum::routing::get(|| async { "old" })),
        );
        let served = swappable.router();
        assert_eq!(status(&served, "GET", "/old").await, StatusCode::OK);
        assert_eq!(status(&served, "GET", "/new").await, StatusCode::NOT_FOUND);
        swappable.replace(Router::new().route("/new", axum::routing::get(|| async { "new" })));
        assert_eq!(status(&served, "GET", "/new").await, StatusCode::OK);
        assert_eq!(status(&served, "GET", "/old").await, StatusCode::NOT_FOUND);
    }

    #[test]
    fn an_unwritable_data_directory_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let error = open_store(&file.join("sub"), &triggers(), Arc::new(SystemClock))
            .err()
            .unwrap();
        assert!(matches!(error, LocalError::DataDir { .. }), "{error}");
    }
}
