//! Cold start: each Lambda release binary started under the Runtime API emulator on
//! loopback (`integration_tests::runtime_api`), with the environment `infra/template.yaml` gives it,
//! DynamoDB and Secrets Manager on moto_server, and the CircleCI simulator at the address
//! compiled into the binaries (`bench/fixtures/coldstart-triggers.toml`). Each run is one
//! process that handles two events: the first (cold) and a second (warm).
//!
//! Side by side, the same measurement of a plain Python handler (`bench/python`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use circleci_sim::{Faults, SimOptions, Simulator};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::engine::TRIGGER_METRICS;
use shared::triggers::chained::webhook::sign_v1;
use shared::triggers::http::mint_key;

use crate::latency::Spread;
use crate::moto::{ACCESS_KEY, Moto, REGION};
use crate::setup::{TOKEN, UNCONSTRAINED_RATE, WEBHOOK_SECRET, add_projects};
use integration_tests::runtime_api::{Invocation, RuntimeApi, lambda_variables, spawn_function};

/// Where the simulator listens: the `api_url` of `bench/fixtures/coldstart-triggers.toml`,
/// compiled into the binaries.
pub const SIM_ADDRESS: &str = "127.0.0.1:47831";
pub const TRIGGERS_FILE: &str = "bench/fixtures/coldstart-triggers.toml";
/// An answer later than this is a failure, not a figure.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Zip sizes measured by `scripts/build-lambdas` when `target/lambda` is absent.
const LAST_MEASURED_ZIPS: [(&str, u64); 3] = [
    ("scheduled", 4_441_237),
    ("chained", 4_577_548),
    ("http", 4_635_737),
];
const LAST_MEASURED_ZIPS_DATE: &str = "2026-11-28";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStartResult {
    pub runs: usize,
    pub functions: Vec<FunctionStart>,
    /// The same launches (but the acceptor) on the partition-parallel stand-in
    /// (`Moto::start_partitioned`): only whether requests to different partitions overlap
    /// differs.
    #[serde(default)]
    pub partitioned: Vec<FunctionStart>,
    pub zips: Vec<ZipSize>,
    /// Where the zip sizes come from (`target/lambda` now, or the last recorded build).
    pub zips_source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionStart {
    /// `scheduled`, `webhooks`, `http` or `python`.
    pub name: String,
    pub what: String,
    /// exec → first `GET /next`.
    pub to_first_next_ms: Spread,
    /// exec → the first invocation's answer.
    pub to_first_response_ms: Spread,
    /// First `/next` answered → its answer (the first invocation alone).
    pub first_invocation_ms: Spread,
    /// The second invocation of the same process: event handed out → answer.
    pub warm_invocation_ms: Spread,
    /// VmHWM after both invocations.
    pub peak_rss_mb: Spread,
    /// What the function wrote to stdout (its log lines: CloudWatch Logs ingests them) over
    /// both invocations, halved; Lambda's own START/END/REPORT lines are not included.
    #[serde(default = "Spread::empty")]
    pub log_bytes_per_invocation: Spread,
    /// The lines one decided trigger adds (those inside its `trigger` span, and its EMF
    /// metric line), per trigger: what a trigger costs in logs when it shares an invocation
    /// with others (a tick firing several slots), without the invocation's own lines.
    /// `None` for a function that decided no trigger (an empty spread's NaN would not
    /// read back from the JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes_per_trigger: Option<Spread>,
    /// Invocations answered with `response` (not `error`), of 2 × runs.
    pub ok_responses: usize,
    /// The first invocation's answer of the last run (what the function did).
    pub sample_answer: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZipSize {
    pub function: String,
    pub bytes: u64,
}

/// Which DynamoDB stand-in the functions talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StandIn {
    /// One moto_server: one request at a time.
    OneServer,
    /// Two, with the pipeline bindings' partitions on the second (requests to different
    /// partitions overlap, as in DynamoDB).
    Partitioned,
}

/// One function's launch: how to start it and the two events of a run.
struct Launch {
    name: &'static str,
    what: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    events: Box<dyn Fn(usize) -> anyhow::Result<[Value; 2]>>,
}

pub async fn run(root: &Path, runs: usize) -> anyhow::Result<ColdStartResult> {
    let binaries = root.join("target").join("release");
    for name in ["scheduled", "webhooks", "http"] {
        anyhow::ensure!(
            binaries.join(name).exists(),
            "{} is missing: build the functions with the bench's triggers file first:\n  \
             CIRCLECI_TRIGGERS_FILE={TRIGGERS_FILE} cargo build --release \
             -p scheduled-function -p chained-function -p http-function",
            binaries.join(name).display()
        );
    }
    let address: SocketAddr = SIM_ADDRESS.parse()?;
    let sim = Simulator::start_with(SimOptions {
        listen: address,
        ..SimOptions::default()
    })
    .await
    .map_err(|error| {
        anyhow::anyhow!("cannot bind the CircleCI simulator to {SIM_ADDRESS}: {error}")
    })?;
    add_projects(&sim);
    sim.set_faults(Faults::rate_limited(UNCONSTRAINED_RATE, 1000));
    let logs = root.join("target").join("bench").join("logs");
    let one_server = Moto::start().await?;
    let functions = launch_all(root, runs, &sim, &one_server, &logs, StandIn::OneServer).await?;
    drop(one_server);
    let parallel = Moto::start_partitioned().await?;
    let partitioned = launch_all(
        root,
        runs,
        &sim,
        &parallel,
        &logs.join("partitioned"),
        StandIn::Partitioned,
    )
    .await?;
    drop(parallel);
    drop(sim);
    let (zips, zips_source) = zip_sizes(root);
    Ok(ColdStartResult {
        runs,
        functions,
        partitioned,
        zips,
        zips_source,
    })
}

/// Starts every function `runs` times against `moto` (on `Partitioned`, all but the
/// acceptor, which makes no store request), its logs in `logs`.
async fn launch_all(
    root: &Path,
    runs: usize,
    sim: &Simulator,
    moto: &Moto,
    logs: &Path,
    stand_in: StandIn,
) -> anyhow::Result<Vec<FunctionStart>> {
    let binaries = root.join("target").join("release");
    let tokens = moto
        .new_secret("bench-tokens", &json!({ "default": TOKEN }).to_string())
        .await?;
    let webhook = moto
        .new_secret("bench-webhook", &json!([WEBHOOK_SECRET]).to_string())
        .await?;
    // The webhook acceptor's queue (the worker's cold start is not measured here: it is
    // invoked by the event source mapping, not on a caller's path).
    let deliveries =
        aws_sdk_sqs::Client::new(&integration_tests::moto::sdk_config_for(&moto.endpoint).await)
            .create_queue()
            .queue_name(format!(
                "bench-deliveries-{}",
                uuid::Uuid::new_v4().simple()
            ))
            .send()
            .await?
            .queue_url()
            .unwrap_or_default()
            .to_owned();
    let minted = mint_key("bench-bot");
    let keys = moto
        .new_secret(
            "bench-client-keys",
            &json!({ "bench-bot": [minted.hash.to_hex()] }).to_string(),
        )
        .await?;
    let authorization = format!("Bearer {}", minted.key.expose_secret());

    let common = |function: &str| -> Vec<(String, String)> {
        let mut env = lambda_variables(function, REGION);
        env.extend(
            [
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
                ("AWS_SECRET_ACCESS_KEY", ACCESS_KEY.to_owned()),
                ("AWS_SESSION_TOKEN", "bench".to_owned()),
                ("_HANDLER", "bootstrap".to_owned()),
                ("TZ", ":UTC".to_owned()),
                ("LANG", "en_US.UTF-8".to_owned()),
                // Instead of the real endpoints.
                ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
                // The template's Globals (LogLevel and Environment at their defaults).
                (
                    "RUST_LOG",
                    "warn,shared=info,triggers_config=info,scheduled=info,chained=info,http=info"
                        .to_owned(),
                ),
                ("TRIGGERS_ENVIRONMENT", "dev".to_owned()),
                ("TOKENS_SECRET_ID", tokens.clone()),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value)),
        );
        if let Ok(path) = std::env::var("PATH") {
            env.push(("PATH".to_owned(), path));
        }
        env
    };

    let chained_fixture: Value =
        read_json(&root.join("functions/chained/fixtures/apigw-http-v2-workflow-completed.json"))?;
    let http_fixture: Value =
        read_json(&root.join("functions/http/fixtures/function-url-post-endpoint.json"))?;
    let (python, python_version) = python_executable()?;
    let launches = vec![
        Launch {
            name: "scheduled",
            what: "scheduler tick (the Scheduler Input fixture at the current minute), then a \
               manual run of `bench-tick`"
                .to_owned(),
            program: binaries.join("scheduled"),
            args: vec![],
            env: common("scheduled"),
            events: Box::new(|run| Ok([tick_event(Utc::now()), run_event(run)])),
        },
        Launch {
            name: "webhooks",
            what: "two signed `workflow-completed` deliveries through an HTTP API (v2) event, \
               each verified and queued (SQS on moto)"
                .to_owned(),
            program: binaries.join("webhooks"),
            args: vec![],
            env: {
                let mut env = common("webhooks");
                env.push(("WEBHOOK_SECRETS_SECRET_ID".to_owned(), webhook.clone()));
                env.push(("DELIVERY_QUEUE_URL".to_owned(), deliveries.clone()));
                env
            },
            events: Box::new(move |run| {
                Ok([
                    webhook_event(&chained_fixture, (run * 2 + 1) as u64)?,
                    webhook_event(&chained_fixture, (run * 2 + 2) as u64)?,
                ])
            }),
        },
        Launch {
            name: "http",
            what: "two `POST /v1/endpoints/bench-deploy` through a Function URL event".to_owned(),
            program: binaries.join("http"),
            args: vec![],
            env: {
                let mut env = common("http");
                env.push(("CLIENT_KEYS_SECRET_ID".to_owned(), keys.clone()));
                env
            },
            events: Box::new(move |_| {
                Ok([
                    endpoint_event(&http_fixture, &authorization),
                    endpoint_event(&http_fixture, &authorization),
                ])
            }),
        },
        Launch {
            name: "python",
            what: format!(
                "{python_version} + urllib (bench/python): token secret, conditional put, \
             POST pipeline, update; started like a `provided` runtime's bootstrap, two \
             manual runs"
            ),
            program: python,
            args: vec![root.join("bench/python/bootstrap.py").display().to_string()],
            env: {
                let mut env = common("python");
                env.push(("CIRCLECI_API_URL".to_owned(), sim.base_url()));
                env.push(("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()));
                env
            },
            events: Box::new(|run| Ok([run_event(run * 2), run_event(run * 2 + 1)])),
        },
    ];

    std::fs::create_dir_all(logs)?;
    let mut functions = Vec::new();
    for launch in &launches {
        if stand_in == StandIn::Partitioned && launch.name == "webhooks" {
            continue;
        }
        eprintln!("cold start ({stand_in:?}): {} × {runs} ...", launch.name);
        functions.push(measure(launch, runs, moto, logs).await?);
    }
    Ok(functions)
}

async fn measure(
    launch: &Launch,
    runs: usize,
    moto: &Moto,
    logs: &Path,
) -> anyhow::Result<FunctionStart> {
    let mut to_next = Vec::new();
    let mut to_response = Vec::new();
    let mut first = Vec::new();
    let mut warm = Vec::new();
    let mut rss = Vec::new();
    let mut log_bytes = Vec::new();
    let mut trigger_bytes = Vec::new();
    let mut ok_responses = 0;
    let mut sample_answer = Value::Null;
    for run in 0..runs {
        // A fresh table per run: every process starts from an empty store, as a first
        // deployment would, and the tick has no state to find.
        let table = moto.new_table("bench-cold").await?;
        let api = RuntimeApi::start().await?;
        for event in (launch.events)(run)? {
            api.push(event);
        }
        let mut env = launch.env.clone();
        env.push(("TRIGGERS_TABLE".to_owned(), table));
        let began = Instant::now();
        let mut child = spawn_function(
            &launch.program,
            &launch.args,
            &env,
            &api,
            &logs.join(format!("{}-{run}.log", launch.name)),
        )?;
        let outcome = api.wait_answered(2, INVOCATION_TIMEOUT).await;
        let peak = peak_rss_kib(&child);
        stop(&mut child);
        outcome.map_err(|error| {
            anyhow::anyhow!(
                "{} run {run}: {error} (log: {})",
                launch.name,
                logs.join(format!("{}-{run}.log", launch.name)).display()
            )
        })?;
        let invocations = api.invocations();
        let log = logs.join(format!("{}-{run}.log", launch.name));
        if let Ok(text) = std::fs::read_to_string(&log) {
            log_bytes.push(text.len() as f64 / invocations.len().max(1) as f64);
            trigger_bytes.extend(log_bytes_per_trigger(&text));
        }
        let ms = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1000.0;
        if let Some(at) = api.first_next_at() {
            to_next.push(ms(began, at));
        }
        if let [cold, hot, ..] = invocations.as_slice() {
            if let (Some(cold_done), Some(hot_done)) = (cold.answered_at, hot.answered_at) {
                to_response.push(ms(began, cold_done));
                first.push(ms(cold.delivered_at, cold_done));
                warm.push(ms(hot.delivered_at, hot_done));
            }
            ok_responses += [cold, hot].iter().filter(|i| succeeded(i)).count();
            sample_answer = cold.body.clone().unwrap_or(Value::Null);
        }
        if let Some(kib) = peak {
            rss.push(kib as f64 / 1024.0);
        }
    }
    Ok(FunctionStart {
        name: launch.name.to_owned(),
        what: launch.what.clone(),
        to_first_next_ms: Spread::of(&to_next),
        to_first_response_ms: Spread::of(&to_response),
        first_invocation_ms: Spread::of(&first),
        warm_invocation_ms: Spread::of(&warm),
        peak_rss_mb: Spread::of(&rss),
        log_bytes_per_invocation: Spread::of(&log_bytes),
        log_bytes_per_trigger: (!trigger_bytes.is_empty()).then(|| Spread::of(&trigger_bytes)),
        ok_responses,
        sample_answer: summarise(sample_answer),
    })
}

/// Answered with `response`, and for HTTP events with a 2xx status, and for the scheduler
/// not rejected.
fn succeeded(invocation: &Invocation) -> bool {
    if invocation.outcome != Some("response") {
        return false;
    }
    let Some(body) = &invocation.body else {
        return false;
    };
    if let Some(status) = body.get("statusCode").and_then(Value::as_u64) {
        return (200..300).contains(&status);
    }
    body.get("outcome").and_then(Value::as_str) != Some("rejected")
}

/// Keeps the answer short in the JSON file (a tick report can be long).
fn summarise(answer: Value) -> Value {
    let text = answer.to_string();
    if text.len() <= 600 {
        answer
    } else {
        Value::String(format!("{}…", text.chars().take(600).collect::<String>()))
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The process's peak resident set (`VmHWM`, KiB), read while it is still alive.
fn peak_rss_kib(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// The real interpreter (not a pyenv shim, whose own start-up would be counted).
fn python_executable() -> anyhow::Result<(PathBuf, String)> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sys, platform, boto3; print(sys.executable); \
             print(f'Python {platform.python_version()}, boto3 {boto3.__version__}')",
        ])
        .output()
        .map_err(|error| anyhow::anyhow!("python3 is needed for the side-by-side: {error}"))?;
    anyhow::ensure!(
        output.status.success(),
        "python3 with boto3 is needed for the side-by-side (pip install boto3): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = stdout.lines();
    let executable = PathBuf::from(lines.next().unwrap_or("python3").trim());
    let version = lines.next().unwrap_or("Python").trim().to_owned();
    Ok((executable, version))
}

/// The bytes (newlines included) of the lines written inside a `trigger` span and of the
/// per-trigger EMF metric lines, divided by the number of distinct triggers; `None` when
/// the log decided no trigger.
fn log_bytes_per_trigger(log: &str) -> Option<f64> {
    let mut bytes = 0usize;
    let mut triggers = std::collections::BTreeSet::new();
    for line in log.lines() {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let trigger_span = value["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|span| span["name"] == "trigger"));
        if let Some(span) = trigger_span {
            bytes += line.len() + 1;
            triggers.insert(span["trigger_id"].to_string());
        } else if TRIGGER_METRICS
            .iter()
            .any(|name| value.get(*name).is_some())
        {
            bytes += line.len() + 1;
        }
    }
    (!triggers.is_empty()).then(|| bytes as f64 / triggers.len() as f64)
}

/// The EventBridge Scheduler input of the template, for the minute `now` falls in.
fn tick_event(now: DateTime<Utc>) -> Value {
    let minute = now
        .with_second(0)
        .and_then(|at| at.with_nanosecond(0))
        .unwrap_or(now);
    json!({
        "source": "circleci-triggers.tick",
        "scheduled_time": minute.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// A manual run of the bench schedule (always fires: a new run id each time).
fn run_event(run: usize) -> Value {
    json!({ "schedule": "bench-tick", "run_id": format!("bench-{run}-{}", uuid::Uuid::new_v4()) })
}

/// The chained fixture with a new signed `workflow-completed` body.
fn webhook_event(fixture: &Value, pipeline_number: u64) -> anyhow::Result<Value> {
    let now = Utc::now();
    let body = serde_json::to_string(&crate::storm::event(
        uuid::Uuid::new_v4(),
        pipeline_number,
        now,
    ))?;
    let secret = SecretString::from(WEBHOOK_SECRET.to_owned());
    let mut event = fixture.clone();
    event["headers"]["circleci-signature"] = json!(sign_v1(body.as_bytes(), &secret));
    event["headers"]["content-length"] = json!(body.len().to_string());
    event["requestContext"]["timeEpoch"] = json!(now.timestamp_millis());
    event["requestContext"]["requestId"] = json!(uuid::Uuid::new_v4().to_string());
    event["body"] = json!(body);
    Ok(event)
}

/// The Function URL fixture calling `bench-deploy` with a new Idempotency-Key.
fn endpoint_event(fixture: &Value, authorization: &str) -> Value {
    let path = "/v1/endpoints/bench-deploy";
    let body = json!({ "branch": "main" }).to_string();
    let mut event = fixture.clone();
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["timeEpoch"] = json!(Utc::now().timestamp_millis());
    event["requestContext"]["requestId"] = json!(uuid::Uuid::new_v4().to_string());
    event["headers"]["authorization"] = json!(authorization);
    event["headers"]["idempotency-key"] = json!(format!("bench-{}", uuid::Uuid::new_v4()));
    event["headers"]["content-length"] = json!(body.len().to_string());
    event["body"] = json!(body);
    event
}

/// `target/lambda/<function>/bootstrap.zip` when `scripts/build-lambdas` has run, else the
/// figures it last produced.
fn zip_sizes(root: &Path) -> (Vec<ZipSize>, String) {
    let built: Vec<ZipSize> = ["scheduled", "chained", "http"]
        .iter()
        .filter_map(|name| {
            let path = root
                .join("target")
                .join("lambda")
                .join(name)
                .join("bootstrap.zip");
            std::fs::metadata(path).ok().map(|meta| ZipSize {
                function: (*name).to_owned(),
                bytes: meta.len(),
            })
        })
        .collect();
    if built.len() == 3 {
        return (built, "target/lambda/*/bootstrap.zip (this run)".to_owned());
    }
    (
        LAST_MEASURED_ZIPS
            .iter()
            .map(|(name, bytes)| ZipSize {
                function: (*name).to_owned(),
                bytes: *bytes,
            })
            .collect(),
        format!(
            "scripts/build-lambdas on {LAST_MEASURED_ZIPS_DATE} (target/lambda absent at this run)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::log_bytes_per_trigger;

    #[test]
    fn a_triggers_log_share_is_its_span_lines_and_its_metric_line() {
        let invocation =
            r#"{"level":"INFO","fields":{"message":"tick"},"spans":[{"name":"tick"}]}"#;
        let decided = r#"{"level":"INFO","fields":{"message":"trigger decided"},"spans":[{"name":"schedule"},{"name":"trigger","trigger_id":"a"}]}"#;
        let other = r#"{"level":"INFO","fields":{"message":"trigger decided"},"spans":[{"name":"trigger","trigger_id":"b"}]}"#;
        let metric = r#"{"_aws":{},"Environment":"dev","TriggersTriggered":1.0}"#;
        let log = [invocation, decided, metric, other, metric, "not json"].join("\n");
        let expected = (decided.len() + other.len() + 2 * metric.len() + 4) as f64 / 2.0;
        assert_eq!(log_bytes_per_trigger(&log), Some(expected));
        assert_eq!(log_bytes_per_trigger(invocation), None);
    }
}
