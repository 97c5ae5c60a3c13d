//! A minimal Lambda Runtime API on loopback: hands out queued events on
//! `GET /2018-06-01/runtime/invocation/next` and records when each was asked for, handed
//! out and answered. Enough for the `lambda_runtime` crate and for a plain Python loop.
//! Used by the function binaries' tests (`functions/*/tests/runtime.rs`) and `bench coldstart`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::Notify;

pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:bench";

/// The variables the Lambda service sets in a `provided.al2023` environment (the runtime API
/// address is added by whoever starts the process), for a function named `function`.
pub fn lambda_variables(function: &str, region: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_FUNCTION_NAME", format!("bench-{function}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/bench/{function}"),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", region.to_owned()),
        ("AWS_DEFAULT_REGION", region.to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Starts a function binary against the emulator with exactly `env` (plus the runtime API
/// address), its output to `log`.
pub fn spawn_function(
    program: &std::path::Path,
    args: &[String],
    env: &[(String, String)],
    api: &RuntimeApi,
    log: &std::path::Path,
) -> std::io::Result<std::process::Child> {
    let log = std::fs::File::create(log)?;
    std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", &api.address)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(log.try_clone()?))
        .stderr(std::process::Stdio::from(log))
        .spawn()
}

/// What happened to one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub delivered_at: Instant,
    pub answered_at: Option<Instant>,
    /// `response` or `error`.
    pub outcome: Option<&'static str>,
    pub body: Option<Value>,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Value>,
    first_next_at: Option<Instant>,
    init_error: Option<String>,
    invocations: Vec<Invocation>,
}

#[derive(Clone, Default)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

/// A running emulator; dropping it stops the server.
pub struct RuntimeApi {
    pub address: String,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start() -> anyhow::Result<RuntimeApi> {
        let shared = Shared::default();
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(RuntimeApi {
            address,
            shared,
            server,
        })
    }

    pub fn push(&self, event: Value) {
        self.lock().queue.push_back(event);
        self.shared.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn first_next_at(&self) -> Option<Instant> {
        self.lock().first_next_at
    }

    pub fn invocations(&self) -> Vec<Invocation> {
        self.lock().invocations.clone()
    }

    /// Waits until `count` invocations were answered (or the function reported an init
    /// error, or `timeout` passed).
    pub async fn wait_answered(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            {
                let inner = self.lock();
                if let Some(error) = &inner.init_error {
                    anyhow::bail!("the function reported an init error: {error}");
                }
                let answered = inner
                    .invocations
                    .iter()
                    .filter(|i| i.answered_at.is_some())
                    .count();
                if answered >= count {
                    return Ok(());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                !left.is_zero(),
                "{count} invocation(s) not answered within {timeout:?}"
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Long-polls like the real API: the caller waits until an event is queued.
async fn next(State(shared): State<Shared>) -> Response {
    loop {
        let notified = shared.changed.notified();
        {
            let mut inner = shared
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            inner.first_next_at.get_or_insert(now);
            if let Some(event) = inner.queue.pop_front() {
                let request_id = uuid::Uuid::new_v4().to_string();
                inner.invocations.push(Invocation {
                    request_id: request_id.clone(),
                    delivered_at: now,
                    answered_at: None,
                    outcome: None,
                    body: None,
                });
                let deadline_ms = chrono::Utc::now().timestamp_millis() + 30_000;
                let mut headers = HeaderMap::new();
                let mut set = |name: &'static str, value: String| {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        headers.insert(name, value);
                    }
                };
                set("lambda-runtime-aws-request-id", request_id);
                set("lambda-runtime-deadline-ms", deadline_ms.to_string());
                set("lambda-runtime-invoked-function-arn", FUNCTION_ARN.into());
                set(
                    "lambda-runtime-trace-id",
                    "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
                );
                set("content-type", "application/json".into());
                return (StatusCode::OK, headers, event.to_string()).into_response();
            }
        }
        notified.await;
    }
}

fn answer(shared: &Shared, id: &str, outcome: &'static str, body: &Bytes) -> StatusCode {
    let mut inner = shared
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let found = inner
        .invocations
        .iter_mut()
        .find(|i| i.request_id == id && i.answered_at.is_none());
    let status = match found {
        Some(invocation) => {
            invocation.answered_at = Some(Instant::now());
            invocation.outcome = Some(outcome);
            invocation.body = serde_json::from_slice(body).ok();
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    };
    drop(inner);
    shared.changed.notify_waiters();
    status
}

async fn response(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&shared, &id, "response", &body)
}

async fn error(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&shared, &id, "error", &body)
}

async fn init_error(State(shared): State<Shared>, body: Bytes) -> StatusCode {
    shared
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .init_error = Some(String::from_utf8_lossy(&body).into_owned());
    shared.changed.notify_waiters();
    StatusCode::ACCEPTED
}

/// Runs a function binary as Lambda would (its variables, the caller's AWS endpoint and
/// credentials, then `extra`), hands it `events` in order and returns the invocations once
/// all are answered. The process is stopped before returning; its log is in the error.
pub async fn invoke_binary(
    program: &std::path::Path,
    function: &str,
    extra: &[(&str, String)],
    events: Vec<Value>,
) -> anyhow::Result<Vec<Invocation>> {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned());
    let mut env = lambda_variables(function, &region);
    for name in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_EC2_METADATA_DISABLED",
        "PATH",
    ] {
        if let Ok(value) = std::env::var(name) {
            env.push((name.to_owned(), value));
        }
    }
    env.push(("RUST_LOG".to_owned(), "info".to_owned()));
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let api = RuntimeApi::start().await?;
    let count = events.len();
    for event in events {
        api.push(event);
    }
    let dir = tempfile::tempdir()?;
    let log = dir.path().join(format!("{function}.log"));
    let mut child = spawn_function(program, &[], &env, &api, &log)?;
    let outcome = api.wait_answered(count, Duration::from_secs(30)).await;
    let _ = child.kill();
    let _ = child.wait();
    match outcome {
        Ok(()) => Ok(api.invocations()),
        Err(error) => {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!("{function}: {error}; its log:\n{log}")
        }
    }
}

/// Starts an HTTP function's binary under the emulator and checks that it answers the API
/// Gateway event for `GET /healthz` (`fixture`) with 200 and `{"status": "ok"}`.
pub async fn assert_healthz(program: &std::path::Path, function: &str, fixture: &str) {
    let event: Value = serde_json::from_str(fixture).expect("the healthz fixture is JSON");
    let invocations = invoke_binary(
        program,
        function,
        // Set for every function: health reads no table and sends nothing to the queue.
        &[
            ("TRIGGERS_TABLE", "healthz-reads-no-table".to_owned()),
            (
                "DELIVERY_QUEUE_URL",
                "http://127.0.0.1:9/healthz-sends-nothing".to_owned(),
            ),
        ],
        vec![event],
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(invocations[0].outcome, Some("response"), "{function}");
    let (status, body) = http_answer(&invocations[0]);
    assert_eq!(status, 200, "{function}: {body}");
    assert_eq!(body["status"], "ok", "{function}: {body}");
}

/// The API Gateway (HTTP API, payload 2.0) answer of an invocation: status and JSON body.
pub fn http_answer(invocation: &Invocation) -> (u16, Value) {
    let body = invocation.body.clone().unwrap_or(Value::Null);
    let status = body["statusCode"].as_u64().unwrap_or(0) as u16;
    let text = body["body"].as_str().unwrap_or_default();
    let parsed = serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()));
    (status, parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop a function runs: `/next` gives the queued event with the request id, the
    /// answer is recorded against it, an unknown id is refused.
    #[tokio::test]
    async fn hands_out_events_and_records_answers() {
        let api = RuntimeApi::start().await.unwrap();
        api.push(serde_json::json!({ "n": 1 }));
        let http = reqwest::Client::new();
        let base = format!("http://{}/2018-06-01/runtime", api.address);
        let next = http
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        let id = next.headers()["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(next.headers().contains_key("lambda-runtime-deadline-ms"));
        assert_eq!(
            next.json::<Value>().await.unwrap(),
            serde_json::json!({ "n": 1 })
        );
        let unknown = http
            .post(format!("{base}/invocation/nope/response"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 400);
        let answered = http
            .post(format!("{base}/invocation/{id}/response"))
            .body(r#"{"ok":true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 202);
        api.wait_answered(1, Duration::from_secs(5)).await.unwrap();
        let invocations = api.invocations();
        assert_eq!(invocations.len(), 1);
        assert_eq!(invocations[0].outcome, Some("response"));
        assert_eq!(invocations[0].body, Some(serde_json::json!({ "ok": true })));
        assert!(api.first_next_at().is_some());
    }
}
