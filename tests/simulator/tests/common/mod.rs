//! Helpers shared by the simulator's integration tests: a small HTTP client, a local
//! webhook receiver, the spec, and a standard project.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use circleci_sim::spec::Spec;
use circleci_sim::{JobSpec, ParameterSpec, ProjectSpec, Simulator, When, WorkflowSpec};
use serde_json::Value;

pub const TOKEN: &str = "tok-alice";

/// The spec, loaded once; a missing document fails the test loudly.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::load().unwrap_or_else(|e| panic!("{e}")))
}

/// Asserts a response body conforms to its operation's schema (errata applied).
pub fn assert_conforms(method: &str, template: &str, status: u16, body: &Value) {
    let violations = spec()
        .validate_response(method, template, status, body)
        .unwrap();
    assert!(
        violations.is_empty(),
        "{method} {template} {status} violates the spec: {violations:#?}\nbody: {body:#}"
    );
}

/// Asserts a value conforms to a named schema.
pub fn assert_schema(name: &str, body: &Value) {
    let violations = spec().validate(name, body).unwrap();
    assert!(
        violations.is_empty(),
        "{name} violated: {violations:#?}\nbody: {body:#}"
    );
}

/// A response as the tests need it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A tiny CircleCI API client for tests (the real one lives in `shared`).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(sim: &Simulator, token: &str) -> Self {
        Self {
            base: sim.base_url(),
            token: Some(token.to_owned()),
            http: reqwest::Client::new(),
        }
    }

    pub fn anonymous(sim: &Simulator) -> Self {
        Self {
            base: sim.base_url(),
            token: None,
            http: reqwest::Client::new(),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http = reqwest::Client::builder().timeout(timeout).build().unwrap();
        self
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Result<Reply> {
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.header("Circle-Token", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
            text,
        })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body))
            .await
            .unwrap()
    }

    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(reqwest::Method::POST, path, None).await.unwrap()
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(reqwest::Method::PUT, path, Some(body))
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None)
            .await
            .unwrap()
    }

    /// Jobs of a workflow, by name.
    pub async fn job(&self, workflow_id: &str, name: &str) -> Value {
        let jobs = self.get(&format!("/workflow/{workflow_id}/job")).await;
        jobs.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .cloned()
            .unwrap()
    }
}

/// `gh/acme/api`: parameters `run-workflow` (string, "build"), `deploy` (boolean, false),
/// `count` (integer, 1); workflow `build` (build 10 s → test 20 s) unless
/// `run-workflow == "nightly"`, workflow `nightly` (e2e 30 s) only then.
pub fn acme_api() -> ProjectSpec {
    ProjectSpec::new("gh/acme/api")
        .parameter(ParameterSpec::string("run-workflow", "build"))
        .parameter(ParameterSpec::boolean("deploy", false))
        .parameter(ParameterSpec::integer("count", 1))
        .workflow(
            WorkflowSpec::new("build")
                .when(When::not_equals("run-workflow", "nightly"))
                .job(JobSpec::new("build").duration(Duration::from_secs(10)))
                .job(
                    JobSpec::new("test")
                        .requires(["build"])
                        .duration(Duration::from_secs(20)),
                ),
        )
        .workflow(
            WorkflowSpec::new("nightly")
                .when(When::equals("run-workflow", "nightly"))
                .job(JobSpec::new("e2e").duration(Duration::from_secs(30))),
        )
}

/// A simulator with user `alice` (token [`TOKEN`]) and `projects`.
pub async fn sim_with(projects: Vec<ProjectSpec>) -> Simulator {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", TOKEN);
    for project in projects {
        sim.add_project(project);
    }
    sim
}

/// One received webhook delivery.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A local HTTP receiver recording every POST to `/hook`.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Status answered to deliveries (shared so tests can flip it).
    pub answer: Arc<Mutex<u16>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answer = Arc::new(Mutex::new(200_u16));
        let (log, status) = (Arc::clone(&received), Arc::clone(&answer));
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let (log, status) = (Arc::clone(&log), Arc::clone(&status));
                async move {
                    log.lock().unwrap().push(Received { headers, body });
                    StatusCode::from_u16(*status.lock().unwrap()).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hook"),
            received,
            answer,
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Creates a webhook through the API and returns the response.
pub async fn create_webhook(
    api: &Api,
    project_id: uuid::Uuid,
    url: &str,
    secret: &str,
    events: &[&str],
) -> Reply {
    api.post(
        "/webhook",
        &serde_json::json!({
            "name": "triggers",
            "events": events,
            "url": url,
            "verify-tls": false,
            "signing-secret": secret,
            "scope": {"id": project_id, "type": "project"},
        }),
    )
    .await
}
