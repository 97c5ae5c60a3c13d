//! The CLI as a process: `check` exit codes and messages; `serve` answers and stops cleanly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_circleci-triggers");

fn workspace_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn check_accepts_the_example_file() {
    let output = Command::new(BIN)
        .args(["check", "--config", &workspace_file("triggers.toml")])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(": ok"));
}

/// Runs `check` on `text` written to a file; asserts exit code 1 and returns the file's
/// path and stderr.
fn check_refuses(text: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refused.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    (
        path.display().to_string(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_exits_1_with_file_line_errors() {
    let (path, stderr) =
        check_refuses("[circleci]\ntoken = \"ok\"\nworkflow_parameter = \"9lives\"\n");
    assert!(
        stderr.contains(&format!("{path}:3:1: circleci.workflow_parameter:")),
        "{stderr}"
    );
}

#[test]
fn check_refuses_an_approval_gate_that_any_branch_could_open() {
    // The release gate as the example file shipped it before the trust rule.
    let (path, stderr) = check_refuses(
        "[[chain]]\nname = \"release-gate\"\n\
         when = { project = \"gh/acme/e2e\", workflow = \"e2e\", status = [\"success\"] }\n\
         [[chain.then]]\naction = \"approve\"\nproject = \"gh/acme/deploy\"\nbranch = \"main\"\n\
         job = \"hold-release\"\nselect = \"latest\"\n",
    );
    assert!(
        stderr.contains(&format!("{path}:3:1: chain[0].when:"))
            && stderr.contains("acts on existing work")
            && stderr.contains("upstream = \"ours\""),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_missing_file() {
    let output = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/triggers.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/triggers.toml"));
}

/// Starts `serve` on a free port and returns the child and its base URL.
fn start_serve(data: &Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--config",
            &workspace_file("triggers.toml"),
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_owned();
        }
    };
    (child, url)
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn serve_answers_and_stops_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("store");
    let (mut child, url) = start_serve(&data_dir);
    assert!(data_dir.is_dir(), "serve creates its data directory");
    let http = reqwest::Client::new();

    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let document: serde_json::Value = http
        .get(format!("{url}/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    let missing = http.get(format!("{url}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );

    let wrong_method = http.delete(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );

    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "serve exits 0 after SIGTERM, got {status:?}"
    );
    assert!(
        http.get(format!("{url}/healthz")).send().await.is_err(),
        "port closed"
    );
}

#[test]
fn serve_refuses_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[circleci]\nnope = 1\n").unwrap();
    let output = Command::new(BIN)
        .args([
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.toml:2:1"));
}
