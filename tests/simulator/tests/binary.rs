//! The `circleci-sim` binary: starts from a config file and serves in real time.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn binary_serves_users_and_projects_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sim.json");
    std::fs::write(
        &config,
        r#"{"users": [{"login": "sandbox", "tokens": [{"token": "sandbox-token"}]}],
            "projects": [{"slug": "gh/acme/api", "workflows": [{"name": "build", "jobs": [{"name": "j", "duration": 0.05}]}]}]}"#,
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_circleci-sim"))
        .args(["--listen", "127.0.0.1:0", "--tick-ms", "10", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/api/v2"),
        "{base}"
    );

    let http = reqwest::Client::new();
    let me: serde_json::Value = http
        .get(format!("{base}/me"))
        .header("Circle-Token", "sandbox-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["login"], "sandbox");
    let created: serde_json::Value = http
        .post(format!("{base}/project/gh/acme/api/pipeline"))
        .header("Circle-Token", "sandbox-token")
        .json(&serde_json::json!({"branch": "main"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    // Real-time mode: the 50 ms job finishes on its own; poll with a generous deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let workflows: serde_json::Value = http
            .get(format!("{base}/pipeline/{id}/workflow"))
            .header("Circle-Token", "sandbox-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if workflows["items"][0]["status"] == "success" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workflow never finished: {workflows}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
}
