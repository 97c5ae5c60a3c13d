//! HTTP triggers for external systems: named endpoints, scoped client keys, a parameter
//! contract, idempotent calls and a history API.
//!
//! - [`TriggerApi`]: the core shared by the HTTP API and the CLI's `trigger` command —
//!   validate a call against its endpoint, turn it into one [`TriggerIntent`] and fire it
//!   through the [`Engine`] (claims, exactly-once, history).
//! - [`api_router`]: the axum routes (`/v1/endpoints/{name}`, `/v1/triggers`,
//!   `/v1/triggers/{id}`, `/v1/openapi.json`), run by the `http` Lambda and by `serve`.
//!
//! **Idempotency.** A call is claimed under `client#<client>#<Idempotency-Key>` with a
//! fingerprint of the canonical request (endpoint, action, ref, parameters after defaults,
//! selection): the same key and request replays the stored answer, another request under
//! the key is refused (422), and a duplicate while the first is still running gets 409 with
//! Retry-After. Without a key, each call gets a fresh one. Requests refused before they are
//! claimed (scope, validation, limits) do not consume the key; each leaves its own
//! `rejected` record. A request without a valid key leaves nothing durable (no record, none
//! of its text stored): a metric and a rate-limited log line (see `handlers`).
//!
//! **Retries.** HTTP records are never retried by the scheduler's sweep: the answer tells
//! the caller whether and how to retry (see [`problem`]).

pub mod auth;
pub mod catalog;
mod error;
mod handlers;
pub mod history;
pub mod openapi;
pub mod operator;
pub mod problem;
pub mod rate;
pub mod request;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

pub use auth::{AuthFailure, MintedKey, authenticate, mint_key};
pub use catalog::{Catalog, CatalogError, Client, Endpoint};
pub use error::CallError;
pub use handlers::{api_router, function_router};
pub use problem::ApiError;
pub use rate::{Admission, StoreRateLimiter};
pub use request::{CallInput, FieldError, SelectSpec, ValidCall};
pub use view::{TriggerPage, TriggerView};

use crate::actions::{Action, Target, WorkflowSelector};
use crate::circleci::{CircleCi, GitRef};
use crate::config::{ActionKind, CircleCiSettings, TargetSpec, TriggersFile};
use crate::engine::{Engine, EngineError, Fired, TriggerIntent};
use crate::secrets::Secrets;
use crate::store::{
    ClaimKey, ClaimKind, RecordDetail, SourceKind, TriggerId, TriggerRecord, TriggerSource,
    TriggerStatus, TriggerTarget, origin_pipelines,
};

/// Default body limit: a request is a few hundred bytes; 64 KiB leaves room for 100
/// parameters of 512 characters.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Longest Idempotency-Key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// At most this many log lines about unauthenticated requests per window (each says how
/// many were left out before it); the `ApiAuthFailures` metric counts every one.
const UNAUTHENTICATED_LOG_LINES: u32 = 10;
const UNAUTHENTICATED_LOG_WINDOW: Duration = Duration::from_secs(60);

/// Tunables of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Larger bodies get 413.
    pub body_limit: usize,
    /// `GET /v1/triggers/{id}` asks CircleCI again only when the record is older than this.
    pub refresh_interval: Duration,
    pub default_page_size: u32,
    pub max_page_size: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            refresh_interval: Duration::from_secs(5),
            default_page_size: 20,
            max_page_size: 100,
        }
    }
}

/// Who calls an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An authenticated client of the HTTP API.
    Client(String),
    /// An operator running `circleci-triggers trigger` (with the configured token).
    Cli { user: String },
}

impl Caller {
    fn source_kind(&self) -> SourceKind {
        match self {
            Caller::Client(_) => SourceKind::Http,
            Caller::Cli { .. } => SourceKind::Cli,
        }
    }
}

/// One call of an endpoint.
#[derive(Debug, Clone)]
pub struct Call {
    pub endpoint: String,
    pub caller: Caller,
    /// The caller's Idempotency-Key (already checked); `None`: this call is its own trigger.
    pub idempotency_key: Option<String>,
    pub input: CallInput,
}

/// A call that was decided (a pipeline created, a job approved, ... or not triggered).
#[derive(Debug, Clone)]
pub struct Called {
    pub record: TriggerRecord,
    /// The answer of an earlier call with the same Idempotency-Key.
    pub replayed: bool,
}

struct Inner {
    engine: Engine,
    catalog: Catalog,
    secrets: Arc<dyn Secrets>,
    circleci: Arc<dyn CircleCi>,
    limiter: StoreRateLimiter,
    settings: ApiSettings,
    app_url: String,
    /// Log lines about unauthenticated requests (they leave nothing else behind).
    unauthenticated_log: crate::telemetry::LogSampler,
    /// Operator runs of schedules (`POST /v1/schedules/{name}/runs`).
    scheduler: crate::triggers::scheduled::Scheduler,
}

/// The HTTP trigger core. Cheap to clone.
#[derive(Clone)]
pub struct TriggerApi {
    inner: Arc<Inner>,
}

impl TriggerApi {
    /// `circleci` is the port the engine's actions use (for refreshing records).
    pub fn new(
        file: &TriggersFile,
        engine: Engine,
        secrets: Arc<dyn Secrets>,
        circleci: Arc<dyn CircleCi>,
        settings: ApiSettings,
    ) -> Result<Self, CatalogError> {
        let catalog = Catalog::new(file)?;
        let limiter = StoreRateLimiter::new(engine.store().clone(), engine.clock().clone());
        Ok(Self {
            inner: Arc::new(Inner {
                scheduler: crate::triggers::scheduled::Scheduler::new(
                    engine.clone(),
                    Arc::new(file.clone()),
                ),
                app_url: view::app_url(&file.circleci.api_url),
                engine,
                catalog,
                secrets,
                circleci,
                limiter,
                settings,
                unauthenticated_log: crate::telemetry::LogSampler::new(
                    UNAUTHENTICATED_LOG_WINDOW,
                    UNAUTHENTICATED_LOG_LINES,
                ),
            }),
        })
    }

    /// Over the adapters of a Lambda function (or `serve`).
    pub fn from_context(
        context: &crate::wiring::LambdaContext,
        settings: ApiSettings,
    ) -> Result<Self, CatalogError> {
        Self::new(
            &context.triggers,
            context.engine.clone(),
            context.secrets.clone(),
            context.circleci.clone(),
            settings,
        )
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.inner.settings
    }

    pub fn secrets(&self) -> &dyn Secrets {
        self.inner.secrets.as_ref()
    }

    /// Runs schedules for operator clients.
    pub fn scheduler(&self) -> &crate::triggers::scheduled::Scheduler {
        &self.inner.scheduler
    }

    pub fn rate_limiter(&self) -> &StoreRateLimiter {
        &self.inner.limiter
    }

    /// Whether a line about an unauthenticated request may be logged now: `Some(left out
    /// since the last one)`.
    pub(crate) fn sample_unauthenticated_log(&self) -> Option<u64> {
        self.inner
            .unauthenticated_log
            .admit(std::time::Instant::now())
    }

    /// How a record is shown.
    pub fn view(&self, record: &TriggerRecord) -> TriggerView {
        TriggerView::of(record, &self.inner.app_url)
    }

    /// Validates the call against its endpoint and fires it once (per Idempotency-Key).
    /// Authentication, scope and rate are the entry point's business.
    pub async fn call(&self, call: Call) -> Result<Called, CallError> {
        let endpoint = self
            .inner
            .catalog
            .endpoint(&call.endpoint)
            .ok_or(CallError::EndpointNotFound)?;
        let valid = request::validate(endpoint, &call.input)
            .map_err(|errors| CallError::Invalid { errors })?;
        let fingerprint = valid.fingerprint(endpoint);
        let action = self.action(endpoint, &valid, &call.caller).await?;
        let idempotency_key = call.idempotency_key.clone();
        let key_part = idempotency_key
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let (key, client) = match &call.caller {
            Caller::Client(client) => (
                ClaimKey::new(ClaimKind::Client, &[client, &key_part]),
                Some(client.clone()),
            ),
            Caller::Cli { .. } => (ClaimKey::new(ClaimKind::Other, &["cli", &key_part]), None),
        };
        let detail = RecordDetail {
            client,
            idempotency_key,
            operator: match &call.caller {
                Caller::Cli { user } => Some(user.clone()),
                Caller::Client(_) => None,
            },
            select: valid.select.as_ref().map(SelectSpec::canonical),
            ..RecordDetail::default()
        };
        let intent = TriggerIntent {
            key,
            fingerprint,
            source: TriggerSource::new(call.caller.source_kind(), endpoint.name()),
            origin: None,
            action,
            upstream: None,
            correlation: None,
            detail: Box::new(detail),
        };
        let fired = match self.inner.engine.fire(intent).await {
            // After `mark_sending` the answer is never "nothing happened": 502
            // `outcome-unknown` with the trigger's id (the reconciler finds the pipeline).
            Err(EngineError::OutcomeUnknown { record, reason }) => {
                tracing::warn!(trigger_id = %record.id, %reason, "outcome unknown after sending");
                Fired::Performed(*record)
            }
            other => other.map_err(engine_error)?,
        };
        let (record, replayed) = match fired {
            Fired::Performed(record) => (record, false),
            Fired::Replayed(record) => (record, true),
            Fired::InProgress { retry_after } => {
                return Err(CallError::InProgress { retry_after });
            }
            Fired::Conflict => return Err(CallError::IdempotencyKeyReused),
        };
        match record.status {
            TriggerStatus::Failed | TriggerStatus::Ambiguous | TriggerStatus::Rejected => {
                let view = self.view(&record);
                Err(CallError::Outcome {
                    record: Box::new(record),
                    view: Box::new(view),
                })
            }
            _ => Ok(Called { record, replayed }),
        }
    }

    /// The action a valid call asks for, with the workflow selection resolved.
    async fn action(
        &self,
        endpoint: &Endpoint,
        valid: &ValidCall,
        caller: &Caller,
    ) -> Result<Action, CallError> {
        let target = endpoint_target(endpoint, valid, &self.inner.catalog.circleci)?;
        let selector = match &valid.select {
            Some(select) => self.selector(select, &target, caller).await?,
            None => WorkflowSelector::Latest,
        };
        Ok(Action::from_spec(&endpoint.action, target, selector, None))
    }

    /// Resolves a caller's selection; a trigger id must be one the caller may see.
    async fn selector(
        &self,
        select: &SelectSpec,
        target: &Target,
        caller: &Caller,
    ) -> Result<WorkflowSelector, CallError> {
        let store = self.inner.engine.store();
        let unavailable = |error: crate::store::StoreError| CallError::Unavailable {
            reason: format!("trigger history: {error}"),
            retry_after: Duration::from_secs(1),
        };
        let (id, explicit) = match select {
            SelectSpec::Pipeline(id) => return Ok(WorkflowSelector::Pipeline(*id)),
            SelectSpec::Revision(sha) => return Ok(WorkflowSelector::Revision(sha.clone())),
            SelectSpec::Latest => return Ok(WorkflowSelector::Latest),
            SelectSpec::Trigger(id) => (*id, true),
            SelectSpec::TriggerOrPipeline(uuid) => (TriggerId::from_uuid(*uuid), false),
        };
        let record = store
            .get_record(id)
            .await
            .map_err(unavailable)?
            .filter(|record| self.visible_to(record, caller));
        let Some(record) = record else {
            return if explicit {
                Err(CallError::Invalid {
                    errors: vec![FieldError::body(
                        "/select",
                        format!("no trigger {id} among this client's endpoints"),
                    )],
                })
            } else {
                Ok(WorkflowSelector::Pipeline(id.as_uuid()))
            };
        };
        // The selected trigger's own pipelines, then those of the triggers it caused.
        let mut pipelines: Vec<Uuid> = record.pipelines().collect();
        for id in origin_pipelines(store.as_ref(), record.id, &target.project.canonical())
            .await
            .map_err(unavailable)?
        {
            if !pipelines.contains(&id) {
                pipelines.push(id);
            }
        }
        if pipelines.is_empty() {
            return Err(CallError::Invalid {
                errors: vec![FieldError::body(
                    "/select",
                    format!("trigger {id} has no pipeline (it is {})", record.status),
                )],
            });
        }
        Ok(WorkflowSelector::Pipelines(pipelines))
    }

    /// Whether a caller may see a record: a client sees its own calls of endpoints it may
    /// still call (not another client's of the same endpoint); an operator sees everything.
    pub fn visible_to(&self, record: &TriggerRecord, caller: &Caller) -> bool {
        match caller {
            Caller::Cli { .. } => true,
            Caller::Client(name) => {
                history::is_own(record, name)
                    && self
                        .inner
                        .catalog
                        .client(name)
                        .is_some_and(|client| client.may_call(&record.source.name))
            }
        }
    }

    /// Writes the `rejected` record of a refused call; `None` if the store refused too (logged).
    pub async fn audit_rejection(&self, rejection: Rejection<'_>) -> Option<TriggerId> {
        let now = self.inner.engine.clock().now();
        let endpoint = rejection
            .endpoint
            .and_then(|name| self.inner.catalog.endpoint(name));
        let (source_name, target, action) = match endpoint {
            Some(endpoint) => {
                let spec = &endpoint.spec;
                (
                    spec.name.clone(),
                    TriggerTarget {
                        project: spec.target.project.clone(),
                        branch: spec.target.branch.clone(),
                        tag: spec.target.tag.clone(),
                        workflow: spec.target.workflow.clone(),
                        job: spec.job.clone(),
                        definition_id: spec.target.definition_id.clone(),
                    },
                    spec.action,
                )
            }
            None => (
                audit_name(rejection.endpoint),
                TriggerTarget::default(),
                ActionKind::Pipeline,
            ),
        };
        let mut record = TriggerRecord::new(
            TriggerSource::new(rejection.kind, source_name),
            target,
            action,
            now,
        );
        record.status = TriggerStatus::Rejected;
        record.reason = Some(rejection.error.audit_reason());
        *record.detail = RecordDetail {
            client: rejection.client.map(str::to_owned),
            idempotency_key: rejection.idempotency_key.map(str::to_owned),
            http_status: Some(rejection.error.status().as_u16()),
            problem: Some(rejection.error.kind().to_owned()),
            ..RecordDetail::default()
        };
        match self.inner.engine.store().create_record(record).await {
            Ok(record) => Some(record.id),
            Err(error) => {
                tracing::error!(%error, problem = rejection.error.kind(), "could not record a rejected request");
                None
            }
        }
    }

    /// A record as a caller may see it (refreshed from CircleCI while its pipeline runs).
    pub async fn trigger(
        &self,
        id: TriggerId,
        caller: &Caller,
    ) -> Result<TriggerRecord, CallError> {
        let record = self
            .inner
            .engine
            .store()
            .get_record(id)
            .await
            .map_err(store_error)?
            .filter(|record| self.visible_to(record, caller))
            .ok_or(CallError::TriggerNotFound)?;
        Ok(history::refresh(self, record).await)
    }
}

/// What is known about a refused call, for its audit record.
#[derive(Debug)]
pub struct Rejection<'a> {
    pub kind: SourceKind,
    /// The endpoint name as requested (may not exist).
    pub endpoint: Option<&'a str>,
    /// The authenticated client (only authenticated requests are recorded).
    pub client: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub error: &'a ApiError,
}

/// The source name of a refused call to an unknown endpoint: the requested name when it
/// could be an endpoint name, else a placeholder (caller text is not stored verbatim).
fn audit_name(requested: Option<&str>) -> String {
    match requested {
        Some(name)
            if !name.is_empty()
                && name.len() <= crate::config::endpoint::MAX_ENDPOINT_NAME_LEN
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            name.to_owned()
        }
        _ => "(invalid endpoint name)".to_owned(),
    }
}

fn engine_error(error: EngineError) -> CallError {
    if error.is_retryable() {
        tracing::warn!(%error, "trigger store unavailable");
        CallError::Unavailable {
            reason: "the trigger store is unavailable".into(),
            retry_after: Duration::from_secs(1),
        }
    } else {
        tracing::error!(%error, "trigger failed in the engine");
        CallError::Internal {
            reason: error.to_string(),
        }
    }
}

pub(crate) fn store_error(error: crate::store::StoreError) -> CallError {
    if error.is_retryable() {
        CallError::Unavailable {
            reason: "the trigger store is unavailable".into(),
            retry_after: Duration::from_secs(1),
        }
    } else {
        tracing::error!(%error, "trigger store error");
        CallError::Internal {
            reason: error.to_string(),
        }
    }
}

/// Checks an Idempotency-Key: 1 to 255 visible ASCII characters.
pub fn check_idempotency_key(key: &str) -> Result<(), FieldError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(FieldError::header(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::header(
            "Idempotency-Key",
            "may only contain visible ASCII characters (no spaces or control characters)",
        ));
    }
    Ok(())
}

/// Where a valid call acts: the endpoint's target with the caller's ref and parameters.
pub(crate) fn endpoint_target(
    endpoint: &Endpoint,
    valid: &ValidCall,
    circleci: &CircleCiSettings,
) -> Result<Target, CallError> {
    let mut target_spec: TargetSpec = endpoint.spec.target.base_spec();
    (target_spec.branch, target_spec.tag) = match &valid.git_ref {
        Some(GitRef::Branch(name)) => (Some(name.clone()), None),
        Some(GitRef::Tag(name)) => (None, Some(name.clone())),
        None => (None, None),
    };
    target_spec.parameters.extend(valid.parameters.clone());
    Target::resolve(&target_spec, circleci).map_err(|error| {
        // The caller's parts were checked; what remains is the file's (or CircleCI's
        // limits on the combination, e.g. the total parameter count).
        CallError::Invalid {
            errors: vec![FieldError::body("", error.to_string())],
        }
    })
}
