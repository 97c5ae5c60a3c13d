//! Shared set-up of the receiver tests (`chained*.rs`, `fanin*.rs`): the CircleCI
//! simulator, a store (embedded SQLite, or DynamoDB on moto_server), the real CircleCI
//! client and engine, and `webhook_router()` served over real HTTP on 127.0.0.1:0.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use circleci_sim::{Simulator, signature_header};
use integration_tests::circleci_client::{client_for, test_options};
use integration_tests::webhook_rig::SettlingWebhooks;
use serde_json::{Value, json};
use shared::actions::Actions;
use shared::circleci::{CircleCi, ClientOptions, RateDefaults};
use shared::clock::{Clock, ManualClock};
use shared::config::{TriggersFile, parse_str};
use shared::engine::{Engine, EngineSettings};
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets, env_names};
use shared::store::{
    DynamoStore, PageRequest, SharedStore, SourceKind, SqliteStore, TriggerRecord, TriggerSource,
};
use shared::triggers::chained::{AcceptorSettings, Receiver, WEBHOOK_PATH};
use tempfile::TempDir;
use uuid::Uuid;

pub const ALICE_TOKEN: &str = "tok-alice-chained-0123456789";
pub const SECRET: &str = "whsec-current-5b1f0c3e9a";
pub const OLD_SECRET: &str = "whsec-previous-77d2e4a1b0";

/// The simulator's clock, for the engine and the store: webhooks the simulator sends are
/// dated on it, so the replay window is measured on the same time line.
pub struct SimClock(pub Simulator);

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// Which store backs the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    /// DynamoDB on moto_server (needs `AWS_ENDPOINT_URL`; fails loudly without it).
    Dynamo,
}

pub struct Options {
    /// `None`: the simulator's clock.
    pub clock: Option<Arc<ManualClock>>,
    pub store: StoreKind,
    pub settings: AcceptorSettings,
    pub webhook_secrets: Vec<String>,
    pub engine: EngineSettings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: None,
            store: StoreKind::Sqlite,
            settings: AcceptorSettings::default(),
            webhook_secrets: vec![SECRET.to_owned()],
            engine: EngineSettings::default(),
        }
    }
}

/// The secrets as files, read through the real local adapter (cached for an hour, so only
/// a refresh sees a rewrite, as with Secrets Manager).
pub struct SecretFiles {
    dir: TempDir,
}

impl SecretFiles {
    fn new(webhook_secrets: &[String]) -> Self {
        let files = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(
            files.tokens_path(),
            json!({ "default": ALICE_TOKEN }).to_string(),
        )
        .unwrap();
        files.write_webhook_secrets(webhook_secrets);
        files
    }

    fn tokens_path(&self) -> PathBuf {
        self.dir.path().join("tokens.json")
    }

    fn webhook_path(&self) -> PathBuf {
        self.dir.path().join("webhook-secrets.json")
    }

    /// Rewrites the signing secrets (a rotation in the secrets store).
    pub fn write_webhook_secrets(&self, secrets: &[String]) {
        std::fs::write(self.webhook_path(), json!(secrets).to_string()).unwrap();
    }

    pub fn port(&self) -> Arc<dyn Secrets> {
        let source = LocalSecretSource::from_vars(
            [
                (
                    env_names::CIRCLECI_TOKENS_FILE.to_owned(),
                    self.tokens_path().display().to_string(),
                ),
                (
                    env_names::WEBHOOK_SECRETS_FILE.to_owned(),
                    self.webhook_path().display().to_string(),
                ),
            ],
            "default",
        );
        Arc::new(CachedSecrets::new(source, Duration::from_secs(3600)))
    }
}

/// Aborts the served router when the harness is dropped.
struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Harness {
    pub sim: Simulator,
    pub clock: Arc<dyn Clock>,
    pub store: SharedStore,
    pub engine: Engine,
    pub receiver: Arc<Receiver>,
    pub settings: AcceptorSettings,
    /// The acceptor's queue and worker (settled before each answer: see `webhook_rig`).
    pub webhooks: SettlingWebhooks,
    pub triggers: TriggersFile,
    pub circleci: Arc<dyn CircleCi>,
    /// `http://127.0.0.1:PORT/webhooks/circleci`
    pub url: String,
    pub http: reqwest::Client,
    pub secrets: SecretFiles,
    _server: ServerTask,
    _keep_alive: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// A `[circleci]` section pointing at the simulator, then `rules`.
pub fn triggers_file(sim: &Simulator, rules: &str) -> TriggersFile {
    let text = format!(
        "[circleci]\napi_url = \"{}\"\ntoken = \"default\"\n\n{rules}",
        sim.base_url()
    );
    match parse_str(&text, "triggers.toml (test)") {
        Ok(file) => file,
        Err(error) => panic!("test triggers file is invalid: {error}\n{text}"),
    }
}

impl Harness {
    pub async fn start(sim: &Simulator, rules: &str) -> Harness {
        Self::start_with(sim, rules, Options::default()).await
    }

    pub async fn start_with(sim: &Simulator, rules: &str, options: Options) -> Harness {
        Self::start_with_file(sim, triggers_file(sim, rules), options).await
    }

    /// Over a triggers file as given (tests use it for a file that skipped `check`).
    pub async fn start_with_file(
        sim: &Simulator,
        triggers: TriggersFile,
        options: Options,
    ) -> Harness {
        let clock: Arc<dyn Clock> = match &options.clock {
            Some(manual) => manual.clone(),
            None => Arc::new(SimClock(sim.clone())),
        };
        let mut keep_alive: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        let store: SharedStore = match options.store {
            StoreKind::Sqlite => Arc::new(SqliteStore::in_memory(clock.clone()).unwrap()),
            StoreKind::Dynamo => {
                let proxy = integration_tests::store_suite::serial_proxy::start(
                    integration_tests::moto::endpoint(),
                )
                .await;
                let client = aws_sdk_dynamodb::Client::new(
                    &integration_tests::moto::sdk_config_for(&proxy.url).await,
                );
                let table = integration_tests::moto::unique_name("chained");
                shared::store::dynamo::create_table(&client, &table)
                    .await
                    .unwrap();
                keep_alive.push(Box::new(proxy));
                Arc::new(DynamoStore::new(client, table, clock.clone()))
            }
        };
        let secrets = SecretFiles::new(&options.webhook_secrets);
        let secrets_port = secrets.port();
        let client_options = ClientOptions {
            rate: RateDefaults {
                burst: 200,
                per_second: 200.0,
            },
            ..test_options()
        };
        let circleci: Arc<dyn CircleCi> =
            Arc::new(client_for(sim, secrets_port.clone(), client_options).unwrap());
        let engine = Engine::new(
            store.clone(),
            Arc::new(Actions::new(circleci.clone())),
            clock.clone(),
            options.engine,
        );
        let receiver = Arc::new(Receiver::new(engine.clone(), &triggers).unwrap());
        let webhooks = SettlingWebhooks::new(receiver.clone(), clock.clone());
        let router = webhooks.router(secrets_port, clock.clone(), options.settings.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Harness {
            sim: sim.clone(),
            clock,
            store,
            engine,
            receiver,
            settings: options.settings,
            webhooks,
            triggers,
            circleci,
            url: format!("http://{addr}{WEBHOOK_PATH}"),
            http: reqwest::Client::new(),
            secrets,
            _server: ServerTask(server),
            _keep_alive: keep_alive,
        }
    }

    /// Replaces the rules as a redeploy (Lambda) or a reload (`serve`) does: a new receiver
    /// over the same store, engine and secrets, served at a new address (`url` follows).
    pub async fn reload(&mut self, rules: &str) {
        let triggers = triggers_file(&self.sim, rules);
        let receiver = Arc::new(Receiver::new(self.engine.clone(), &triggers).unwrap());
        let webhooks = SettlingWebhooks::new(receiver.clone(), self.clock.clone());
        let router = webhooks.router(
            self.secrets.port(),
            self.clock.clone(),
            self.settings.clone(),
        );
        self.webhooks = webhooks;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        self.receiver = receiver;
        self.triggers = triggers;
        self.url = format!("http://{addr}{WEBHOOK_PATH}");
        self._server = ServerTask(server);
    }

    /// Registers the receiver as a webhook of `project` in the simulator.
    pub fn register(&self, project: &str, events: &[&str]) {
        self.sim
            .add_webhook(project, &self.url, SECRET, events)
            .unwrap();
    }

    /// POSTs `body` with exactly these extra headers.
    pub async fn post_raw(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::read(request.send().await.unwrap()).await
    }

    /// POSTs `event` signed with `secret`, as CircleCI would.
    pub async fn post_signed_with(&self, event: &Value, secret: &str) -> Answer {
        let body = serde_json::to_vec(event).unwrap();
        let signature = signature_header(secret, &body);
        let kind = event["type"]
            .as_str()
            .unwrap_or("workflow-completed")
            .to_owned();
        self.post_raw(
            body,
            &[
                ("circleci-signature", &signature),
                ("circleci-event-type", &kind),
            ],
        )
        .await
    }

    pub async fn post_signed(&self, event: &Value) -> Answer {
        self.post_signed_with(event, SECRET).await
    }

    /// Every trigger record, newest first.
    pub async fn records(&self) -> Vec<TriggerRecord> {
        self.store
            .list_recent(PageRequest::first(500))
            .await
            .unwrap()
            .items
    }

    /// The records of one chain rule, newest first.
    pub async fn rule_records(&self, rule: &str) -> Vec<TriggerRecord> {
        self.store
            .list_by_source(
                &TriggerSource::new(SourceKind::Chain, rule),
                PageRequest::first(500),
            )
            .await
            .unwrap()
            .items
    }
}

/// A response, read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
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
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            content_type,
            retry_after,
            body,
        }
    }

    pub fn is_problem(&self) -> bool {
        self.content_type == "application/problem+json"
    }
}

/// CircleCI's documented webhook samples: `$CIRCLECI_FIXTURES`, else
/// `<workspace>/../shared/fixtures/circleci-webhooks`. Missing → the test fails loudly.
pub fn fixtures_dir() -> PathBuf {
    let dir = match std::env::var("CIRCLECI_FIXTURES") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/circleci-webhooks"),
    };
    assert!(
        dir.is_dir(),
        "CircleCI's webhook fixtures are missing at {} (set CIRCLECI_FIXTURES)",
        dir.display()
    );
    dir
}

pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A `workflow-completed` body in the OAuth-style family, written to CircleCI's documented
/// shape (our own, so tests control ids, times and statuses).
pub struct WorkflowEvent {
    pub project: String,
    pub pipeline_id: String,
    pub pipeline_number: u64,
    pub workflow: String,
    pub status: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub revision: String,
    pub happened_at: DateTime<Utc>,
    pub event_id: String,
}

impl WorkflowEvent {
    pub fn new(project: &str, workflow: &str, status: &str, happened_at: DateTime<Utc>) -> Self {
        Self {
            project: project.to_owned(),
            pipeline_id: Uuid::new_v4().to_string(),
            pipeline_number: 42,
            workflow: workflow.to_owned(),
            status: status.to_owned(),
            branch: Some("main".to_owned()),
            tag: None,
            revision: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            happened_at,
            event_id: Uuid::new_v4().to_string(),
        }
    }

    pub fn pipeline(mut self, id: impl ToString) -> Self {
        self.pipeline_id = id.to_string();
        self
    }

    pub fn branch(mut self, branch: Option<&str>) -> Self {
        self.branch = branch.map(str::to_owned);
        self
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = Some(tag.to_owned());
        self.branch = None;
        self
    }

    pub fn revision(mut self, revision: &str) -> Self {
        self.revision = revision.to_owned();
        self
    }

    pub fn event_id(mut self, id: &str) -> Self {
        self.event_id = id.to_owned();
        self
    }

    pub fn json(&self) -> Value {
        let (provider, rest) = self.project.split_once('/').unwrap();
        let long = match provider {
            "gh" => "github",
            "bb" => "bitbucket",
            other => other,
        };
        let mut vcs = json!({
            "provider_name": long,
            "origin_repository_url": format!("https://github.com/{rest}"),
            "target_repository_url": format!("https://github.com/{rest}"),
            "revision": self.revision,
            "commit": { "subject": "change", "body": "" },
        });
        if let Some(branch) = &self.branch {
            vcs["branch"] = json!(branch);
        }
        if let Some(tag) = &self.tag {
            vcs["tag"] = json!(tag);
        }
        json!({
            "id": self.event_id,
            "type": "workflow-completed",
            "happened_at": rfc3339(self.happened_at),
            "webhook": { "id": Uuid::new_v4(), "name": "circleci-triggers" },
            "project": {
                "id": Uuid::new_v4(),
                "name": rest.rsplit('/').next().unwrap(),
                "slug": format!("{long}/{rest}"),
            },
            "organization": { "id": Uuid::new_v4(), "name": rest.split('/').next().unwrap() },
            "workflow": {
                "id": Uuid::new_v4(),
                "name": self.workflow,
                "created_at": rfc3339(self.happened_at - chrono::Duration::minutes(3)),
                "stopped_at": rfc3339(self.happened_at),
                "url": "https://app.circleci.com/pipelines/workflows/x",
                "status": self.status,
            },
            "pipeline": {
                "id": self.pipeline_id,
                "number": self.pipeline_number,
                "created_at": rfc3339(self.happened_at - chrono::Duration::minutes(4)),
                "trigger": { "type": "webhook" },
                "vcs": vcs,
            },
        })
    }
}
