//! The HTTP API as deployed, on this machine: the router served over real HTTP, DynamoDB
//! and Secrets Manager on moto_server (a fresh table and fresh secrets per test), and the
//! CircleCI simulator. Every documented answer is checked against `docs/openapi.json`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use circleci_sim::spec::Spec;
use circleci_sim::{JobSpec, ParameterSpec, ProjectSpec, Simulator, WorkflowSpec};
use integration_tests::circleci_client::test_options;
use integration_tests::moto::unique_name;
use integration_tests::request_cost::DynamoRecorder;
use integration_tests::store_suite::{self, serial_proxy::SerialProxy};
use reqwest::header::HeaderMap;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::circleci::{ClientOptions, RateDefaults};
use shared::clock::ManualClock;
use shared::secrets::{CachedSecrets, SecretIds, SecretsManagerSource};
use shared::store::{
    DynamoStore, PageRequest, SharedStore, SourceKind, StoreSettings, TriggerId, TriggerRecord,
    TriggerSource,
};
use shared::triggers::http::{ApiSettings, TriggerApi, function_router, mint_key};
use shared::wiring::{ContextOptions, assemble};

pub const TOKEN: &str = "tok-alice-http-api-0123456789";
pub const DEPLOY: &str = "gh/acme/deploy";

/// The triggers file of every test (`{api_url}` is the simulator).
pub fn triggers_file(api_url: &str) -> String {
    format!(
        r#"
[circleci]
api_url = "{api_url}"
token = "default"

[[endpoint]]
name = "deploy-staging"
description = "Deploy a release to staging"
target = {{ project = "{DEPLOY}", branch = "main", branches = ["main", "release/*"], parameters = {{ env = "staging" }} }}
parameters.version = {{ type = "string", pattern = '^\d+\.\d+\.\d+$', required = true, max_length = 32 }}
parameters.dry_run = {{ type = "boolean", default = false }}
parameters.region = {{ type = "string", enum = ["eu", "us"], default = "eu" }}
parameters.shards = {{ type = "integer", minimum = 1, maximum = 8, default = 2 }}
parameters.note = {{ type = "string" }}

[[endpoint]]
name = "approve-release"
action = "approve"
job = "hold-release"
target = {{ project = "{DEPLOY}", branch = "main" }}

[[endpoint]]
name = "deploy-prod"
target = {{ project = "{DEPLOY}", branch = "main", parameters = {{ env = "prod" }} }}

[[endpoint]]
name = "deploy-ghost"
target = {{ project = "gh/acme/ghost", branch = "main" }}

[[client]]
name = "release-bot"
endpoints = ["deploy-staging", "approve-release", "deploy-ghost"]

[[client]]
name = "cms"
endpoints = ["deploy-staging"]
rate_limit = "3/1m"

[[client]]
name = "admin"
endpoints = ["deploy-prod"]

[[client]]
name = "ops"
operator = true

[[schedule]]
name = "nightly-deploy"
cron = "0 2 * * *"
timezone = "Europe/Berlin"
target = {{ project = "{DEPLOY}", branch = "main", parameters = {{ env = "nightly", day = "{{{{ slot.date }}}}" }} }}
"#
    )
}

/// Client keys minted for the test; `release-bot` has two (a rotation in progress).
pub struct Keys {
    pub bot: String,
    pub bot_previous: String,
    pub cms: String,
    pub admin: String,
    /// `operator = true`: may run schedules.
    pub ops: String,
}

pub struct Options {
    pub circleci: ClientOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            circleci: ClientOptions {
                // Many reads per test: pace well above the client's conservative default.
                rate: RateDefaults {
                    burst: 200,
                    per_second: 200.0,
                },
                ..test_options()
            },
        }
    }
}

pub struct Harness {
    pub sim: Simulator,
    pub url: String,
    pub http: reqwest::Client,
    pub keys: Keys,
    pub clock: Arc<ManualClock>,
    pub store: SharedStore,
    pub api: TriggerApi,
    /// Every DynamoDB request the served API (and `store`) sends.
    pub dynamo_requests: DynamoRecorder,
    _proxy: SerialProxy,
    _server: tokio::task::JoinHandle<()>,
}

/// One answer, with its body parsed.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem kind (suffix of `type`).
    pub fn kind(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or("")
    }

    pub fn trigger_id(&self) -> TriggerId {
        let id = self.body["trigger_id"]
            .as_str()
            .or_else(|| self.body["id"].as_str())
            .unwrap_or_else(|| panic!("no trigger id in {}", self.body));
        id.parse().unwrap()
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Harness {
        let sim = Simulator::start().await.unwrap();
        sim.add_user("alice", TOKEN);
        sim.add_project(
            ProjectSpec::new(DEPLOY)
                .parameter(ParameterSpec::string("version", ""))
                .parameter(ParameterSpec::boolean("dry_run", false))
                .parameter(ParameterSpec::string("region", "eu"))
                .parameter(ParameterSpec::integer("shards", 1))
                .parameter(ParameterSpec::string("env", ""))
                .parameter(ParameterSpec::string("day", ""))
                .workflow(
                    WorkflowSpec::new("deploy")
                        .job(JobSpec::new("build"))
                        .job(JobSpec::approval("hold-release").requires(["build"]))
                        .job(JobSpec::new("ship").requires(["hold-release"])),
                ),
        );

        let (aws, proxy) = store_suite::serialized_moto().await;
        let dynamo_requests = DynamoRecorder::default();
        let dynamo = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&aws)
                .interceptor(dynamo_requests.clone())
                .build(),
        );
        let table = unique_name("http-api");
        shared::store::dynamo::create_table(&dynamo, &table)
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let triggers =
            shared::config::parse_str(&triggers_file(&sim.base_url()), "test.toml").unwrap();
        let store: SharedStore = Arc::new(
            DynamoStore::new(dynamo, table, clock.clone())
                .with_settings(StoreSettings::from_history(&triggers.history)),
        );

        let bot = mint_key("release-bot");
        let bot_previous = mint_key("release-bot");
        let cms = mint_key("cms");
        let admin = mint_key("admin");
        let ops = mint_key("ops");
        let secrets_manager = aws_sdk_secretsmanager::Client::new(&aws);
        let tokens_id = unique_name("circleci-tokens");
        let keys_id = unique_name("client-keys");
        for (name, value) in [
            (&tokens_id, json!({ "default": TOKEN })),
            (
                &keys_id,
                json!({
                    "release-bot": [bot_previous.hash.to_hex(), bot.hash.to_hex()],
                    "cms": [cms.hash.to_hex()],
                    "admin": [admin.hash.to_hex()],
                    "ops": [ops.hash.to_hex()],
                }),
            ),
        ] {
            secrets_manager
                .create_secret()
                .name(name)
                .secret_string(value.to_string())
                .send()
                .await
                .unwrap();
        }
        let source = SecretsManagerSource::new(
            secrets_manager,
            SecretIds {
                circleci_tokens: Some(tokens_id),
                webhook_signing_secrets: None,
                client_key_hashes: Some(keys_id),
                notify_secrets: None,
            },
        );
        let secrets = Arc::new(CachedSecrets::new(source, Duration::from_secs(60)));
        let context = assemble(
            triggers,
            clock.clone(),
            store.clone(),
            secrets,
            ContextOptions {
                circleci: options.circleci,
                ..ContextOptions::default()
            },
        )
        .unwrap();
        let api = TriggerApi::from_context(
            &context,
            ApiSettings {
                refresh_interval: Duration::ZERO,
                ..ApiSettings::default()
            },
        )
        .unwrap();
        let router = function_router(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Harness {
            sim,
            url,
            http: reqwest::Client::new(),
            keys: Keys {
                bot: bot.key.expose_secret().to_owned(),
                bot_previous: bot_previous.key.expose_secret().to_owned(),
                cms: cms.key.expose_secret().to_owned(),
                admin: admin.key.expose_secret().to_owned(),
                ops: ops.key.expose_secret().to_owned(),
            },
            clock,
            store,
            api,
            dynamo_requests,
            _proxy: proxy,
            _server: server,
        }
    }

    /// Sends a request and checks its answer against the OpenAPI document.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let request = request.build().unwrap();
        let method = request.method().as_str().to_ascii_lowercase();
        let path = request.url().path().to_owned();
        let response = self.http.execute(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        let answer = Answer {
            status,
            headers,
            body,
        };
        conforms(&method, &path, &answer);
        answer
    }

    pub fn post(&self, endpoint: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(format!("{}/v1/endpoints/{endpoint}", self.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request
    }

    /// `POST /v1/endpoints/{endpoint}` with a JSON body.
    pub async fn call(
        &self,
        endpoint: &str,
        key: &str,
        idempotency_key: Option<&str>,
        body: Value,
    ) -> Answer {
        let mut request = self.post(endpoint, Some(key)).json(&body);
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        self.send(request).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.send(
            self.http
                .get(format!("{}{path}", self.url))
                .bearer_auth(key),
        )
        .await
    }

    pub async fn record(&self, id: TriggerId) -> TriggerRecord {
        self.store.get_record(id).await.unwrap().unwrap()
    }

    /// Every record of an endpoint (HTTP source), newest first.
    pub async fn records(&self, endpoint: &str) -> Vec<TriggerRecord> {
        self.store
            .list_by_source(
                &TriggerSource::new(SourceKind::Http, endpoint),
                PageRequest::first(500),
            )
            .await
            .unwrap()
            .items
    }

    /// The pipelines the simulator created.
    pub fn pipelines(&self) -> usize {
        self.sim.pipelines().len()
    }
}

/// The OpenAPI document the server publishes, raw and as the simulator's validator reads it.
fn document() -> &'static (Value, Spec) {
    static DOCUMENT: OnceLock<(Value, Spec)> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let document: Value =
            serde_json::from_str(&shared::triggers::http::openapi::document_json()).unwrap();
        (document.clone(), Spec::from_value(document))
    })
}

fn template(path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "endpoints", _] => Some("/v1/endpoints/{name}"),
        ["v1", "triggers"] => Some("/v1/triggers"),
        ["v1", "triggers", _] => Some("/v1/triggers/{id}"),
        ["v1", "openapi.json"] => Some("/v1/openapi.json"),
        ["v1", "schedules", _, "runs"] => Some("/v1/schedules/{name}/runs"),
        ["v1", "status"] => Some("/v1/status"),
        _ => None,
    }
}

/// Asserts a documented answer has its documented status, media type and body shape.
fn conforms(method: &str, path: &str, answer: &Answer) {
    let Some(template) = template(path) else {
        return;
    };
    let (document, spec) = document();
    let escaped = template.replace('~', "~0").replace('/', "~1");
    let Some(responses) = document.pointer(&format!("/paths/{escaped}/{method}/responses")) else {
        // Methods the route does not have: the 405 problem is all there is to check.
        assert_eq!(
            answer.status, 405,
            "{method} {path}: undocumented operation"
        );
        assert_eq!(answer.body["status"], 405);
        return;
    };
    let documented = responses.get(answer.status.to_string()).unwrap_or_else(|| {
        panic!(
            "{method} {path} answered {} which its operation does not document: {}",
            answer.status, answer.body
        )
    });
    let content_type = answer.header("content-type").unwrap_or("");
    let (media, schema) = documented["content"]
        .as_object()
        .and_then(|content| content.iter().next())
        .map(|(media, content)| (media.clone(), content["schema"].clone()))
        .unwrap();
    assert!(
        content_type.starts_with(&media),
        "{method} {path} {}: content-type {content_type}, documented {media}",
        answer.status
    );
    let violations = spec.validate_against(&schema, &answer.body).unwrap();
    assert!(
        violations.is_empty(),
        "{method} {path} {} does not match its documented schema: {violations:?}\n{}",
        answer.status,
        answer.body
    );
    if answer.status >= 400 {
        let kind = answer.kind();
        assert!(
            answer.body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("https://circleci-triggers.dev/problems/")),
            "{}",
            answer.body
        );
        assert!(!kind.is_empty());
        assert_eq!(answer.body["status"], answer.status);
    }
}

/// JSON of `n` parameters `p0..` (for size tests).
pub fn many_parameters(n: usize) -> Value {
    let map: BTreeMap<String, Value> = (0..n).map(|i| (format!("p{i}"), json!("x"))).collect();
    json!(map)
}
