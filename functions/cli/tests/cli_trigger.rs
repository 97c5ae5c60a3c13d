//! `trigger` and `mint-key` as processes: the HTTP endpoint's contract applied locally, with
//! the configured token, recorded with source kind `cli` in the embedded store.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use circleci_sim::{ParameterSpec, ProjectSpec, Simulator, WorkflowSpec};
use shared::clock::SystemClock;
use shared::secrets::ClientKeyHash;
use shared::store::{
    HistoryStore, PageRequest, SourceKind, SqliteStore, TriggerSource, TriggerStatus,
};

const BIN: &str = env!("CARGO_BIN_EXE_circleci-triggers");
const TOKEN: &str = "tok-cli-trigger-0123456789";

fn config(dir: &Path, api_url: &str) -> String {
    let path = dir.join("triggers.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[circleci]
api_url = "{api_url}"

[[endpoint]]
name = "deploy-staging"
target = {{ project = "gh/acme/deploy", branches = ["main", "release/*"] }}
parameters.version = {{ type = "string", pattern = '^\d+\.\d+\.\d+$', required = true }}
parameters.shards = {{ type = "integer", default = 1 }}

[[client]]
name = "release-bot"
endpoints = ["deploy-staging"]
"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env("CIRCLECI_TOKEN", TOKEN)
            .env_remove("TRIGGERS_TABLE")
            .env_remove("CIRCLECI_TOKENS")
            .env_remove("CIRCLECI_TOKENS_FILE")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_applies_the_endpoint_contract_and_records_a_cli_trigger() {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("operator", TOKEN);
    sim.add_project(
        ProjectSpec::new("gh/acme/deploy")
            .parameter(ParameterSpec::string("version", ""))
            .parameter(ParameterSpec::integer("shards", 1))
            .workflow(WorkflowSpec::new("deploy").job(circleci_sim::JobSpec::new("ship"))),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sim.base_url());
    let data = dir.path().join("data").display().to_string();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--config",
            &config,
            "trigger",
            "deploy-staging",
            "--data",
            &data,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };

    let output = run(base(&[
        "--param",
        "version=1.4.2",
        "--param",
        "shards=3",
        "--branch",
        "release/1.4",
        "--json",
    ]))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    // The engine's metric lines (one-line EMF JSON) share stdout; the view is the
    // pretty-printed object after them.
    let stdout = text(&output.stdout);
    let start = stdout.find("{\n").unwrap();
    let view: serde_json::Value = serde_json::from_str(&stdout[start..]).unwrap();
    assert_eq!(view["status"], "triggered");
    assert_eq!(view["source"], "cli");
    let pipelines = sim.pipelines();
    assert_eq!(pipelines.len(), 1);
    assert_eq!(
        pipelines[0].parameters["shards"], 3,
        "read as the declared integer"
    );
    assert_eq!(pipelines[0].branch.as_deref(), Some("release/1.4"));

    // The same contract as over HTTP: refused, exit 1, nothing triggered, recorded.
    let refused = run(base(&[
        "--param",
        "version=latest",
        "--branch",
        "feature/x",
    ]))
    .await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("/parameters/version"), "{stderr}");
    assert!(stderr.contains("/branch"), "{stderr}");
    assert_eq!(sim.pipelines().len(), 1);
    let usage = run(base(&["--param", "shards=three"])).await;
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage.stderr));

    let store = SqliteStore::open_in_dir(Path::new(&data), Arc::new(SystemClock)).unwrap();
    let records = store
        .list_by_source(
            &TriggerSource::new(SourceKind::Cli, "deploy-staging"),
            PageRequest::first(10),
        )
        .await
        .unwrap()
        .items;
    let statuses: Vec<TriggerStatus> = records.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [TriggerStatus::Rejected, TriggerStatus::Triggered],
        "newest first"
    );
    assert!(records[1].detail.operator.is_some());
}

#[test]
fn mint_key_prints_a_key_and_the_hash_of_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "https://circleci.com/api/v2");
    let output = Command::new(BIN)
        .args(["--config", &config, "mint-key", "release-bot", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let minted: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = minted["key"].as_str().unwrap();
    let (client, secret) = key.split_once('.').unwrap();
    assert_eq!(client, "release-bot");
    assert!(secret.len() >= 43, "256 random bits");
    assert_eq!(minted["sha256"], ClientKeyHash::of(secret).to_hex());

    let again = Command::new(BIN)
        .args(["--config", &config, "mint-key", "release-bot", "--json"])
        .output()
        .unwrap();
    let second: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_ne!(second["key"], minted["key"]);

    let unknown = Command::new(BIN)
        .args(["--config", &config, "mint-key", "stranger"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("no [[client]] named `stranger`"));
    let forced = Command::new(BIN)
        .args(["--config", &config, "mint-key", "stranger", "--force"])
        .output()
        .unwrap();
    assert!(forced.status.success());
    assert!(text(&forced.stdout).contains("stranger."));
    let dotted = Command::new(BIN)
        .args(["--config", &config, "mint-key", "a.b", "--force"])
        .output()
        .unwrap();
    assert_eq!(
        dotted.status.code(),
        Some(2),
        "a `.` would split the key wrongly"
    );
}
