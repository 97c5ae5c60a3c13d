//! The whole system under CircleCI faults (`tests/faults_circleci`): the three trigger kinds
//! — the scheduler tick, the webhook receiver and the HTTP API — assembled by
//! `shared::wiring::assemble` exactly as `serve` and the Lambdas are, over one store (SQLite
//! on a temp file, or DynamoDB on moto_server behind the serialising proxy), one
//! [`ManualClock`] moved in lockstep with the simulator, and the simulator over real HTTP.
//!
//! An [`Instance`] is what one process (or one Lambda instance) holds: a CircleCI client with
//! its own pacing memory, the engine, and the served routers. [`System::fresh_instance`] makes
//! another one over the same store, as a second invocation would be.
//!
//! The store and the secrets can be injected ([`SystemBuilder::store`],
//! [`SystemBuilder::secrets`]) so the store and Secrets Manager fault tests
//! (`tests/faults_store.rs`, `tests/faults_secrets.rs`) run the same system with the
//! adapter under test behind a switchable proxy.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use circleci_sim::{
    JobSpec, ParameterSpec, PipelineView, ProjectSpec, SimOptions, Simulator, WorkflowSpec,
    signature_header,
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::circleci::ClientOptions;
use shared::clock::{Clock, ManualClock};
use shared::engine::EngineSettings;
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets, env_names};
use shared::store::{
    DynamoStore, PageRequest, SharedStore, SourceKind, SqliteStore, TriggerRecord, TriggerSource,
};
use shared::triggers::chained::queue::embedded::SqliteDeliveryQueue;
use shared::triggers::chained::{AcceptorSettings, Receiver, WEBHOOK_PATH};
use shared::triggers::http::{ApiSettings, TriggerApi, function_router, mint_key};
use shared::triggers::scheduled::lambda::TickFailed;
use shared::triggers::scheduled::{Scheduler, TickReport};
use shared::wiring::{ContextOptions, LambdaContext, assemble};

use crate::scheduled_support::{Backend, default_client_options};
use crate::webhook_rig::SettlingWebhooks;

/// The token (named `default`) every target uses; its user is `alice`.
pub const TOKEN: &str = "tok-faults-alice-0123456789";
/// The webhook signing secret.
pub const WEBHOOK_SECRET: &str = "whsec-faults-0123456789abcdef";
/// Where schedules start pipelines (branch `main`).
pub const API: &str = "gh/acme/api";
/// Where the chain rule (branch `main`) and the endpoint (branch `release`) start pipelines.
pub const DEPLOY: &str = "gh/acme/deploy";
/// The upstream project whose `build` workflow the chain rule follows.
pub const UPSTREAM: &str = "gh/acme/app";
/// The chain rule's name.
pub const RULE: &str = "deploy-after-build";
/// The endpoint's name.
pub const ENDPOINT: &str = "deploy-release";
/// The API client allowed to call the endpoint.
pub const CLIENT: &str = "bot";

/// A `[[schedule]]` table: `name` starts a pipeline on [`API`] (branch `main`) every five
/// minutes and catches up every slot it missed.
pub fn every_five_minutes(name: &str) -> String {
    format!(
        r#"
[[schedule]]
name = "{name}"
cron = "*/5 * * * *"
timezone = "UTC"
catch_up = "all"
concurrency = "allow"
target = {{ project = "{API}", branch = "main" }}
"#
    )
}

/// Makes the store from the system's clock (the clock is the builder's).
type StoreFactory = Box<dyn FnOnce(Arc<dyn Clock>) -> SharedStore + Send>;

/// How to build a [`System`].
pub struct SystemBuilder {
    backend: Backend,
    store: Option<StoreFactory>,
    secrets: Option<(Arc<dyn Secrets>, String)>,
    start: DateTime<Utc>,
    schedules: String,
    client: ClientOptions,
    engine: EngineSettings,
}

impl SystemBuilder {
    /// `[[schedule]]` tables added to the triggers file (none by default, so the receiver
    /// and API tests tick nothing).
    pub fn schedules(mut self, toml: &str) -> Self {
        self.schedules = toml.to_owned();
        self
    }

    /// When the test clock (and the simulator's) starts.
    pub fn start(mut self, at: DateTime<Utc>) -> Self {
        self.start = at;
        self
    }

    /// The store `make` builds over the system's clock, instead of the backend's own.
    pub fn store(
        mut self,
        make: impl FnOnce(Arc<dyn Clock>) -> SharedStore + Send + 'static,
    ) -> Self {
        self.store = Some(Box::new(make));
        self
    }

    /// Secrets the test provides instead of the local ones. They must serve [`TOKEN`] as
    /// the `default` token, [`WEBHOOK_SECRET`], and the hash of `client_key` for [`CLIENT`].
    pub fn secrets(mut self, secrets: Arc<dyn Secrets>, client_key: String) -> Self {
        self.secrets = Some((secrets, client_key));
        self
    }

    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.client = options;
        self
    }

    pub fn engine(mut self, settings: EngineSettings) -> Self {
        self.engine = settings;
        self
    }

    pub async fn build(self) -> System {
        let sim = Simulator::start_with(SimOptions {
            start_time: Some(self.start),
            ..SimOptions::default()
        })
        .await
        .unwrap();
        sim.add_user("alice", TOKEN);
        sim.add_project(
            ProjectSpec::new(API)
                .parameter(ParameterSpec::string("run-workflow", ""))
                .workflow(WorkflowSpec::new("nightly").job(JobSpec::new("test"))),
        );
        sim.add_project(
            ProjectSpec::new(DEPLOY)
                .parameter(ParameterSpec::string("upstream_sha", ""))
                .parameter(ParameterSpec::string("version", ""))
                .workflow(WorkflowSpec::new("deploy").job(JobSpec::new("ship"))),
        );
        let clock = Arc::new(ManualClock::new(self.start));
        let mut keep_alive: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        let store: SharedStore = match (self.store, self.backend) {
            (Some(make), _) => make(clock.clone()),
            (None, Backend::Sqlite) => {
                let dir = tempfile::tempdir().unwrap();
                let store = SqliteStore::open_in_dir(dir.path(), clock.clone()).unwrap();
                keep_alive.push(Box::new(dir));
                Arc::new(store)
            }
            (None, Backend::Dynamo) => {
                // moto applies conditional writes without a lock; the proxy serialises them
                // as DynamoDB would (see store_suite::serial_proxy).
                let (aws, proxy) = crate::store_suite::serialized_moto().await;
                let client = aws_sdk_dynamodb::Client::new(&aws);
                let table = crate::moto::unique_name("faults");
                shared::store::dynamo::create_table(&client, &table)
                    .await
                    .unwrap();
                keep_alive.push(Box::new(proxy));
                Arc::new(DynamoStore::new(client, table, clock.clone()))
            }
        };
        let (secrets, client_key) = self.secrets.unwrap_or_else(local_secrets);
        let triggers_text = triggers_file(&sim.base_url(), &self.schedules);
        let queue = SqliteDeliveryQueue::in_memory(clock.clone()).expect("a queue opens");
        let mut system = System {
            instance: None,
            queue,
            sim,
            clock,
            store,
            client_key,
            secrets,
            triggers_text,
            client: self.client,
            engine: self.engine,
            http: reqwest::Client::new(),
            _keep_alive: keep_alive,
        };
        system.instance = Some(system.fresh_instance().await);
        system
    }
}

/// The secrets of one process's environment, and the client key they accept.
fn local_secrets() -> (Arc<dyn Secrets>, String) {
    let minted = mint_key(CLIENT);
    let source = LocalSecretSource::from_vars(
        [
            (env_names::CIRCLECI_TOKEN.to_owned(), TOKEN.to_owned()),
            (
                env_names::WEBHOOK_SECRETS.to_owned(),
                WEBHOOK_SECRET.to_owned(),
            ),
            (
                env_names::CLIENT_KEYS.to_owned(),
                json!({ CLIENT: [minted.hash.to_hex()] }).to_string(),
            ),
        ],
        "default",
    );
    let secrets = Arc::new(CachedSecrets::new(source, Duration::from_secs(3600)));
    (secrets, minted.key.expose_secret().to_owned())
}

/// The triggers file: one chain rule and one endpoint, plus the test's schedules.
fn triggers_file(api_url: &str, schedules: &str) -> String {
    format!(
        r#"
[circleci]
api_url = "{api_url}"
token = "default"

[[chain]]
name = "{RULE}"
when = {{ project = "{UPSTREAM}", workflow = "build", branch = "main" }}
[[chain.then]]
action = "pipeline"
project = "{DEPLOY}"
branch = "main"
parameters = {{ upstream_sha = "{{{{ revision }}}}" }}

[[endpoint]]
name = "{ENDPOINT}"
target = {{ project = "{DEPLOY}", branch = "release" }}
parameters.version = {{ type = "string", required = true }}

[[client]]
name = "{CLIENT}"
endpoints = ["{ENDPOINT}"]

{schedules}
"#
    )
}

/// Aborts a served router when dropped.
struct Served(tokio::task::JoinHandle<()>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(router: axum::Router) -> (String, Served) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, Served(task))
}

/// What one process holds: its own CircleCI client (pacing memory), engine and routers.
pub struct Instance {
    pub context: LambdaContext,
    pub scheduler: Scheduler,
    /// `http://127.0.0.1:PORT/webhooks/circleci`
    pub webhook_url: String,
    /// `http://127.0.0.1:PORT` (the `/v1` API).
    pub api_url: String,
    /// The acceptor's queue (the system's) and this process's worker.
    pub webhooks: SettlingWebhooks,
    _servers: [Served; 2],
}

/// The system: simulator, store, clock, and the current [`Instance`].
pub struct System {
    pub sim: Simulator,
    pub clock: Arc<ManualClock>,
    pub store: SharedStore,
    /// The `bot` client's key for the endpoint.
    pub client_key: String,
    instance: Option<Instance>,
    /// The webhook delivery queue: it outlives every instance, as SQS outlives a process.
    queue: SqliteDeliveryQueue,
    secrets: Arc<dyn Secrets>,
    triggers_text: String,
    client: ClientOptions,
    engine: EngineSettings,
    http: reqwest::Client,
    _keep_alive: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// An HTTP answer, read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub content_type: String,
    pub body: Value,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after").and_then(|v| v.parse().ok());
        let content_type = header("content-type").unwrap_or_default();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            retry_after,
            content_type,
            body,
        }
    }

    /// The problem's `type` URI (empty when the body is not a problem).
    pub fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    /// A retryable "come back later" problem: 503, problem+json.
    pub fn assert_unavailable(&self, context: &str) {
        assert_eq!(self.status, 503, "{context}: {self:?}");
        assert_eq!(
            self.content_type, "application/problem+json",
            "{context}: {self:?}"
        );
        // The API says `service-unavailable`; the webhook receiver `unavailable` (refused
        // before any decision) or `redeliver` (an action's claim could not be decided).
        let kind = self.problem_type().rsplit('/').next().unwrap_or_default();
        assert!(
            ["service-unavailable", "unavailable", "redeliver"].contains(&kind),
            "{context}: {self:?}"
        );
    }
}

impl System {
    /// Defaults: SQLite, 2026-11-28T10:00:00Z, no schedules, fast client backoff with pacing
    /// well above what a test needs, the engine's defaults (lease 120 s).
    pub fn builder(backend: Backend) -> SystemBuilder {
        SystemBuilder {
            backend,
            store: None,
            secrets: None,
            start: crate::scheduled_support::utc("2026-11-28T10:00:00Z"),
            schedules: String::new(),
            client: default_client_options(),
            engine: EngineSettings::default(),
        }
    }

    pub fn instance(&self) -> &Instance {
        self.instance.as_ref().unwrap()
    }

    /// A new process over the same store, clock and secrets: a new CircleCI client (no pacing
    /// memory), engine and routers.
    pub async fn fresh_instance(&self) -> Instance {
        let triggers = shared::config::parse_str(&self.triggers_text, "faults.toml").unwrap();
        let clock: Arc<dyn Clock> = self.clock.clone();
        let context = assemble(
            triggers,
            clock,
            self.store.clone(),
            self.secrets.clone(),
            ContextOptions {
                circleci: self.client.clone(),
                engine: self.engine.clone(),
                secrets_ttl: Duration::from_secs(3600),
            },
        )
        .unwrap();
        let scheduler = Scheduler::new(context.engine.clone(), context.triggers.clone());
        let receiver = Receiver::new(context.engine.clone(), &context.triggers).unwrap();
        let webhooks = SettlingWebhooks::over(self.queue.clone(), Arc::new(receiver));
        let api = TriggerApi::from_context(
            &context,
            ApiSettings {
                refresh_interval: Duration::ZERO,
                ..ApiSettings::default()
            },
        )
        .unwrap();
        let (receiver_url, receiver_served) = serve(webhooks.router(
            context.secrets.clone(),
            context.clock.clone(),
            AcceptorSettings::default(),
        ))
        .await;
        let (api_url, api_served) = serve(function_router(api)).await;
        Instance {
            context,
            scheduler,
            webhook_url: format!("{receiver_url}{WEBHOOK_PATH}"),
            api_url,
            webhooks,
            _servers: [receiver_served, api_served],
        }
    }

    /// Replaces the current instance with a fresh one (the next invocation is a new process).
    pub async fn restart(&mut self) {
        self.instance = Some(self.fresh_instance().await);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves both clocks forward by `by`; the simulator runs its jobs meanwhile.
    pub async fn advance(&self, by: TimeDelta) {
        self.advance_to(self.clock.now() + by).await;
    }

    pub async fn advance_to(&self, at: DateTime<Utc>) {
        assert!(at >= self.clock.now(), "the test clock only moves forward");
        self.clock.set(at);
        let behind = (at - self.sim.now()).to_std().unwrap_or_default();
        self.sim.advance(behind).await;
    }

    /// One tick of the current instance at the clock's now.
    pub async fn tick(&self) -> TickReport {
        self.instance()
            .scheduler
            .tick(self.clock.now())
            .await
            .unwrap()
    }

    /// One invocation of the `scheduled` Lambda's handler at the clock's now: what the
    /// Lambda answers, an error included.
    pub async fn lambda_tick(&self) -> Result<Value, TickFailed> {
        let at = self
            .clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        shared::triggers::scheduled::lambda::handle(
            &self.instance().scheduler,
            json!({ "source": "circleci-triggers.tick", "scheduled_time": at }),
        )
        .await
    }

    /// Delivers a signed webhook body to the current instance, as CircleCI would.
    pub async fn deliver(&self, event: &Value) -> Answer {
        let body = serde_json::to_vec(event).unwrap();
        let signature = signature_header(WEBHOOK_SECRET, &body);
        let kind = event["type"].as_str().unwrap_or("workflow-completed");
        let response = self
            .http
            .post(&self.instance().webhook_url)
            .header("content-type", "application/json")
            .header("circleci-signature", signature)
            .header("circleci-event-type", kind)
            .body(body)
            .send()
            .await
            .unwrap();
        Answer::read(response).await
    }

    /// The queue's next receive of every delivery visible now (what SQS does after a
    /// delivery's visibility timeout, with or without CircleCI redelivering): how many
    /// deliveries were received and how many of them were settled.
    pub async fn receive_queued(&self) -> (usize, usize) {
        let drained = self
            .instance()
            .webhooks
            .worker
            .drain()
            .await
            .expect("the embedded queue drains");
        let settled = drained.iter().filter(|(_, s)| s.is_settled()).count();
        (drained.len(), settled)
    }

    /// `POST /v1/endpoints/{ENDPOINT}` as the `bot` client.
    pub async fn call(&self, idempotency_key: &str, version: &str) -> Answer {
        let response = self
            .http
            .post(format!(
                "{}/v1/endpoints/{ENDPOINT}",
                self.instance().api_url
            ))
            .bearer_auth(&self.client_key)
            .header("Idempotency-Key", idempotency_key)
            .json(&json!({ "parameters": { "version": version } }))
            .send()
            .await
            .unwrap();
        Answer::read(response).await
    }

    /// A `workflow-completed` event of the upstream's `build` on `main` (a new event id),
    /// dated now: the chain rule starts one `DEPLOY` pipeline for it.
    pub fn upstream_build_succeeded(&self) -> Value {
        let at = self.clock.now();
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        json!({
            "id": uuid::Uuid::new_v4(),
            "type": "workflow-completed",
            "happened_at": stamp(at),
            "webhook": { "id": uuid::Uuid::new_v4(), "name": "circleci-triggers" },
            "project": { "id": uuid::Uuid::new_v4(), "name": "app", "slug": "github/acme/app" },
            "organization": { "id": uuid::Uuid::new_v4(), "name": "acme" },
            "workflow": {
                "id": uuid::Uuid::new_v4(),
                "name": "build",
                "created_at": stamp(at - TimeDelta::minutes(3)),
                "stopped_at": stamp(at),
                "url": "https://app.circleci.com/pipelines/workflows/x",
                "status": "success",
            },
            "pipeline": {
                "id": uuid::Uuid::new_v4(),
                "number": 7,
                "created_at": stamp(at - TimeDelta::minutes(4)),
                "trigger": { "type": "webhook" },
                "vcs": {
                    "provider_name": "github",
                    "origin_repository_url": "https://github.com/acme/app",
                    "target_repository_url": "https://github.com/acme/app",
                    "revision": "0123456789abcdef0123456789abcdef01234567",
                    "branch": "main",
                    "commit": { "subject": "change", "body": "" },
                },
            },
        })
    }

    /// Every record of one source, newest first.
    pub async fn records(&self, kind: SourceKind, name: &str) -> Vec<TriggerRecord> {
        let source = TriggerSource::new(kind, name);
        let mut records = Vec::new();
        let mut request = PageRequest::first(100);
        loop {
            let page = self.store.list_by_source(&source, request).await.unwrap();
            records.extend(page.items);
            match page.next {
                Some(cursor) => request = PageRequest::after(100, cursor),
                None => return records,
            }
        }
    }

    /// Every record of every source, newest first.
    pub async fn all_records(&self) -> Vec<TriggerRecord> {
        self.store
            .list_recent(PageRequest::first(500))
            .await
            .unwrap()
            .items
    }

    /// The pipelines the simulator created on `project` (e.g. [`DEPLOY`]).
    pub fn pipelines_on(&self, project: &str) -> Vec<PipelineView> {
        let repo = project.split_once('/').map_or(project, |(_, repo)| repo);
        self.sim
            .pipelines()
            .into_iter()
            .filter(|p| p.project_slug.ends_with(&format!("/{repo}")))
            .collect()
    }

    /// The ids of the pipelines the simulator created on `project`.
    pub fn pipeline_ids_on(&self, project: &str) -> Vec<String> {
        self.pipelines_on(project)
            .iter()
            .map(|p| p.id.to_string())
            .collect()
    }

    /// How many pipeline creates (`POST .../pipeline` or `.../pipeline/run`) reached the
    /// simulator since the last `clear_requests`.
    pub fn creates_sent(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.contains("/pipeline"))
            .count()
    }

    /// Waits (real time, bounded) until the simulator has received `n` API requests since
    /// the last `clear_requests` — received, not answered: the count moves before any
    /// latency is served.
    pub async fn requests_received(&self, n: u64) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while self.sim.counters().requests < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "the simulator did not receive {n} requests in 10 s"
        );
    }
}
