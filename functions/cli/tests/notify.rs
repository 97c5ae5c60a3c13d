//! `[[notify]]` end to end, as a process: `serve --sandbox` with a failing job, every
//! webhook delivered twice (CircleCI's redeliveries), and sinks pointed at a receiver in
//! this test. Exactly one signed notification per failed trigger and sink arrives.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use secrecy::SecretString;
use serde_json::Value;
use shared::notify::{SIGNATURE_HEADER, verify_signature};

mod support;

use support::{SandboxProcess, history_json};

/// An upper bound, only so a broken build fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(90);
/// How long to keep listening after the last notification for a duplicate (the outbox is
/// swept every second; a duplicate would come within a sweep or two).
const QUIET: Duration = Duration::from_secs(4);

const HOOK_KEY: &str = "whsec-process-test";

const TRIGGERS: &str = r#"
[[schedule]]
name = "nightly"
cron = "0 3 * * *"
timezone = "UTC"
targets = [
  { project = "gh/acme/e2e", branch = "main" },
  { project = "gh/acme/api", branch = "main" },
]

[[notify]]
name = "ops-hook"
kind = "webhook"
on = ["failed", "ambiguous", "rejected", "workflow_failed"]
url_secret = "hook-url"
signing_key_secret = "hook-key"

[[notify]]
name = "team-slack"
kind = "slack"
on = ["workflow_failed"]
url_secret = "slack-url"
sources = ["scheduled"]

[[notify]]
name = "api-only"
kind = "slack"
on = ["workflow_failed"]
url_secret = "slack-url"
projects = ["gh/acme/api"]
"#;

#[derive(Debug, Clone)]
struct Received {
    path: String,
    signature: Option<String>,
    body: Bytes,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

async fn receive(path: &'static str, inbox: Inbox, headers: HeaderMap, body: Bytes) {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    inbox.lock().unwrap().push(Received {
        path: path.to_owned(),
        signature,
        body,
    });
}

/// The receiver: `POST /hook` and `POST /slack`, recording every request.
async fn start_receiver() -> (String, Inbox) {
    let inbox: Inbox = Arc::default();
    let router = Router::new()
        .route(
            "/hook",
            post(
                |State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes| {
                    receive("/hook", inbox, headers, body)
                },
            ),
        )
        .route(
            "/slack",
            post(
                |State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes| {
                    receive("/slack", inbox, headers, body)
                },
            ),
        )
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, inbox)
}

fn start(config: &Path, data: &Path, receiver: &str) -> SandboxProcess {
    let secrets = serde_json::json!({
        "hook-url": format!("{receiver}/hook"),
        "hook-key": HOOK_KEY,
        "slack-url": format!("{receiver}/slack"),
    })
    .to_string();
    SandboxProcess::start_with_env(
        config,
        data,
        &[
            "--sandbox-fail",
            "gh/acme/e2e:test",
            "--sandbox-duplicate-webhooks",
        ],
        &[("CIRCLECI_TRIGGERS_NOTIFY_SECRETS", &secrets)],
    )
}

fn find<'a>(records: &'a [Value], project: &str) -> Option<&'a Value> {
    records.iter().find(|r| r["target"]["project"] == project)
}

fn workflow_failed(record: &Value) -> bool {
    record["workflows"]
        .as_array()
        .is_some_and(|all| all.iter().any(|w| w["status"] == "failed"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_notifies_each_sink_once_despite_redeliveries() {
    let (receiver, inbox) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    std::fs::write(&config, TRIGGERS).unwrap();
    let data = dir.path().join("data");
    let server = start(&config, &data, &receiver);

    let ran = reqwest::Client::new()
        .post(format!("{}/sandbox/schedules/nightly/run", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ran.status(), 200);

    // Both pipelines finish: e2e's workflow fails, api's succeeds.
    let started = Instant::now();
    let records = loop {
        let records = history_json(&data, &[]);
        let e2e_done = find(&records, "gh/acme/e2e").is_some_and(workflow_failed);
        let api_done = find(&records, "gh/acme/api")
            .is_some_and(|r| r["workflows"].as_array().is_some_and(|w| !w.is_empty()));
        if e2e_done && api_done && inbox.lock().unwrap().len() >= 2 {
            break records;
        }
        assert!(
            started.elapsed() < LIMIT,
            "no failed workflow notified yet: {records:#?}\n{:#?}",
            inbox.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    tokio::time::sleep(QUIET).await;
    let received = inbox.lock().unwrap().clone();

    let failed = find(&records, "gh/acme/e2e").unwrap();
    let api = find(&records, "gh/acme/api").unwrap();
    assert!(!workflow_failed(api), "{api:#}");
    let failed_id = failed["id"].as_str().unwrap();

    // The signed webhook: exactly one, about the failed trigger, verifiable.
    let hooks: Vec<&Received> = received.iter().filter(|r| r.path == "/hook").collect();
    assert_eq!(hooks.len(), 1, "{received:#?}");
    let hook = hooks[0];
    let key = SecretString::from(HOOK_KEY);
    let signature = hook.signature.as_deref().unwrap();
    assert!(verify_signature(&key, signature, &hook.body), "{signature}");
    assert!(!verify_signature(
        &SecretString::from("another key"),
        signature,
        &hook.body
    ));
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["trigger_id"], failed_id, "{body:#}");
    assert_eq!(body["status"], "workflow_failed", "{body:#}");
    assert_eq!(body["sink"], "ops-hook");
    assert_eq!(body["source"], "schedule");
    assert_eq!(body["source_name"], "nightly");
    assert_eq!(body["project"], "gh/acme/e2e");
    assert_eq!(body["pipeline_id"], failed["pipeline"]["id"], "{body:#}");
    assert!(
        body["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["status"] == "failed"),
        "{body:#}"
    );

    // Slack: one readable line for the scheduled trigger's failed workflow; the sink
    // filtered to gh/acme/api heard nothing (api succeeded).
    let slack: Vec<&Received> = received.iter().filter(|r| r.path == "/slack").collect();
    assert_eq!(slack.len(), 1, "{received:#?}");
    assert!(slack[0].signature.is_none());
    let text: Value = serde_json::from_slice(&slack[0].body).unwrap();
    let text = text["text"].as_str().unwrap();
    assert!(
        text.contains("nightly") && text.contains("gh/acme/e2e") && text.contains(failed_id),
        "{text}"
    );

    // One per (trigger, status, sink), whatever was redelivered.
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for request in &received {
        if request.path == "/hook" {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            *per_key
                .entry(body["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert!(per_key.values().all(|count| *count == 1), "{per_key:?}");
    drop(server);
}

#[test]
fn a_bad_notify_table_is_refused_by_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    std::fs::write(
        &config,
        "[[notify]]\nname = \"ops\"\nkind = \"webhook\"\non = [\"failed\"]\nurl_secret = \"url\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let serve: Vec<&std::ffi::OsStr> = vec![
        "serve".as_ref(),
        "--sandbox".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ];
    for command in [vec!["check".as_ref()], serve] {
        let output = std::process::Command::new(support::BIN)
            .args(&command)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{command:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.contains("notify[0].kind") && text.contains("signing_key_secret"),
            "{command:?}: {text}"
        );
    }
}
