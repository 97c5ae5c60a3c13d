//! `serve --sandbox` end to end, as a process: an HTTP endpoint call creates a pipeline in
//! the in-process simulator, its completion webhook comes back signed, a chain cascades to
//! a second project, and `history --json --data DIR` reads both back from the store.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// An upper bound for the cascade, only so a broken build fails instead of hanging.
const CASCADE_LIMIT: Duration = Duration::from_secs(90);

const TRIGGERS: &str = r#"
[[endpoint]]
name = "build-api"
target = { project = "gh/acme/api", branch = "main" }

[[client]]
name = "ci-bot"
endpoints = ["build-api"]

[[schedule]]
name = "nightly"
cron = "0 3 * * *"
timezone = "UTC"
target = { project = "gh/acme/api", branch = "main" }

[[chain]]
name = "deploy-after-api"
when = { project = "gh/acme/api", workflow = "build" }
then = [{ project = "gh/acme/deploy", branch = "main" }]
"#;

mod support;

use support::{BIN, SandboxProcess as Server, history_json};

/// The server, its URL, the printed client key of `ci-bot` and the banner.
fn start(config: &Path, data: &Path) -> (Server, String, String, String) {
    let (server, url, key, banner, _later) = start_with_output(config, data);
    (server, url, key, banner)
}

/// [`start`], also returning the output lines after `listening on`.
fn start_with_output(
    config: &Path,
    data: &Path,
) -> (Server, String, String, String, mpsc::Receiver<String>) {
    start_with_args(config, data, &[])
}

fn start_with_args(
    config: &Path,
    data: &Path,
    extra: &[&str],
) -> (Server, String, String, String, mpsc::Receiver<String>) {
    let mut server = Server::start(config, data, extra);
    let key = server
        .banner_value("sandbox client key ci-bot: ")
        .unwrap_or_else(|| panic!("no client key in the banner:\n{}", server.banner));
    let later = server.take_output();
    let (url, banner) = (server.url.clone(), server.banner.clone());
    (server, url, key, banner, later)
}

fn history(data: &Path) -> Vec<Value> {
    history_json(data, &[])
}

fn find<'a>(records: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    records
        .iter()
        .find(|r| r["source"]["kind"] == kind && r["source"]["name"] == name)
}

fn terminate(server: &mut Server) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_call_cascades_through_a_chain_and_lands_in_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    std::fs::write(&config, TRIGGERS).unwrap();
    let data = dir.path().join("data");
    let (mut server, url, key, banner) = start(&config, &data);
    assert!(banner.contains("SANDBOX MODE"), "{banner}");
    assert!(banner.contains("gh/acme/api, gh/acme/deploy"), "{banner}");

    let http = reqwest::Client::new();
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // A wrong key is refused and starts nothing.
    let refused = http
        .post(format!("{url}/v1/endpoints/build-api"))
        .bearer_auth("ci-bot.not-the-key")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let called = http
        .post(format!("{url}/v1/endpoints/build-api"))
        .bearer_auth(&key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = called.status();
    let body: Value = called.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");

    // The simulator runs the jobs in (accelerated) real time, then sends the webhook.
    let started = Instant::now();
    let records = loop {
        let records = history(&data);
        if find(&records, "chain", "deploy-after-api").is_some_and(|r| r["status"] != "received") {
            break records;
        }
        assert!(
            started.elapsed() < CASCADE_LIMIT,
            "no chain trigger yet: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let upstream = find(&records, "http", "build-api").unwrap();
    assert_eq!(upstream["status"], "triggered", "{upstream:#}");
    assert_eq!(upstream["target"]["project"], "gh/acme/api");
    let chained = find(&records, "chain", "deploy-after-api").unwrap();
    assert_eq!(chained["status"], "triggered", "{chained:#}");
    assert_eq!(chained["target"]["project"], "gh/acme/deploy");
    // The cascade keeps the root: the chained trigger's origin is the HTTP trigger.
    assert_eq!(chained["origin"], upstream["id"], "{chained:#}");

    let exit = terminate(&mut server);
    assert!(exit.success(), "serve exited with {exit}");
    // Nothing was lost on the way out: the store still holds both.
    let after = history(&data);
    assert!(find(&after, "http", "build-api").is_some());
    assert!(find(&after, "chain", "deploy-after-api").is_some());
}

#[test]
fn sandbox_speed_without_sandbox_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    std::fs::write(&config, TRIGGERS).unwrap();
    let output = Command::new(BIN)
        .args([
            "serve",
            "--sandbox-speed",
            "5",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--sandbox"));
}

const TWO_ENDPOINTS: &str = r#"
[[endpoint]]
name = "build-api"
target = { project = "gh/acme/api", branch = "main" }

[[endpoint]]
name = "nightly-api"
target = { project = "gh/acme/api", branch = "main", workflow = "build" }

[[client]]
name = "ci-bot"
endpoints = ["build-api"]
"#;

fn hangup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn call(http: &reqwest::Client, url: &str, key: &str, endpoint: &str) -> u16 {
    http.post(format!("{url}/v1/endpoints/{endpoint}"))
        .bearer_auth(key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_file_and_a_file_failing_check_keeps_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    std::fs::write(&config, TWO_ENDPOINTS).unwrap();
    let data = dir.path().join("data");
    let (mut server, url, key, _banner, output) = start_with_output(&config, &data);
    let http = reqwest::Client::new();
    let before = call(&http, &url, &key, "nightly-api").await;
    assert!(
        (400..500).contains(&before),
        "not allowed yet, got {before}"
    );

    // Allow the client the second endpoint, then reload.
    std::fs::write(
        &config,
        TWO_ENDPOINTS.replace(
            r#"endpoints = ["build-api"]"#,
            r#"endpoints = ["build-api", "nightly-api"]"#,
        ),
    )
    .unwrap();
    hangup(&server);
    let started = Instant::now();
    loop {
        let status = call(&http, &url, &key, "nightly-api").await;
        if (200..300).contains(&status) {
            break;
        }
        assert!(started.elapsed() < CASCADE_LIMIT, "not reloaded: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A file that fails check is refused; the running configuration keeps serving.
    std::fs::write(&config, "[[endpoint]]\nname = 3\n").unwrap();
    hangup(&server);
    let refused = loop {
        let line = output
            .recv_timeout(CASCADE_LIMIT)
            .expect("no log line about the refused file");
        if line.contains("fails check") {
            break line;
        }
    };
    assert!(
        refused.contains("keeping the running configuration"),
        "{refused}"
    );
    assert!((200..300).contains(&call(&http, &url, &key, "nightly-api").await));

    let exit = terminate(&mut server);
    assert!(exit.success(), "serve exited with {exit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_run_in_the_sandbox_fires_and_cascades() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    std::fs::write(&config, TRIGGERS).unwrap();
    let data = dir.path().join("data");
    let (mut server, url, _key, banner) = start(&config, &data);
    assert!(
        banner.contains("/sandbox/schedules/nightly/run"),
        "{banner}"
    );
    let http = reqwest::Client::new();

    let unknown = http
        .post(format!("{url}/sandbox/schedules/weekly/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let problem: Value = unknown.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("nightly"),
        "{problem}"
    );

    let ran = http
        .post(format!("{url}/sandbox/schedules/nightly/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(ran.status(), 200);
    let report: Value = ran.json().await.unwrap();
    assert_eq!(report["schedules"][0]["fired"], 1, "{report:#}");

    let started = Instant::now();
    let records = loop {
        let records = history(&data);
        if find(&records, "chain", "deploy-after-api").is_some_and(|r| r["status"] != "received") {
            break records;
        }
        assert!(
            started.elapsed() < CASCADE_LIMIT,
            "no chain trigger yet: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let scheduled = find(&records, "schedule", "nightly").unwrap();
    assert_eq!(scheduled["status"], "triggered", "{scheduled:#}");
    let chained = find(&records, "chain", "deploy-after-api").unwrap();
    // A schedule slot is the root of everything it started, the cascade included.
    assert_eq!(chained["origin"], scheduled["origin"], "{chained:#}");

    let exit = terminate(&mut server);
    assert!(exit.success(), "serve exited with {exit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_trigger_finishes_it_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    std::fs::write(&config, TRIGGERS).unwrap();
    let data = dir.path().join("data");
    // Every simulated CircleCI answer takes 1.5 s: the trigger is observably in flight.
    let (mut server, url, key, _banner, _output) =
        start_with_args(&config, &data, &["--sandbox-latency-ms", "1500"]);
    let call = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("{url}/v1/endpoints/build-api"))
            .bearer_auth(&key)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap())
    });
    // The engine records the trigger as received before it calls CircleCI.
    let started = Instant::now();
    loop {
        let records = history(&data);
        if find(&records, "http", "build-api").is_some_and(|r| r["status"] == "received") {
            break;
        }
        assert!(
            started.elapsed() < CASCADE_LIMIT,
            "never in flight: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let exit = terminate(&mut server);
    assert!(exit.success(), "serve exited with {exit}");
    let (status, body) = call.await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    let records = history(&data);
    let record = find(&records, "http", "build-api").unwrap();
    assert_eq!(record["status"], "triggered", "{record:#}");
    assert_eq!(record["id"], body["id"]);
}

/// `circleci-triggers` as a process with `args`; (exit code, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `run --at` against `serve` through the operator route, twice: one pipeline, the second
/// answered from the slot's record. A paused schedule is refused by `run` (and by the
/// sandbox's run-now) until `--ignore-pause`, which the record keeps.
#[tokio::test(flavor = "multi_thread")]
async fn run_at_a_slot_through_serve_fires_once_and_pause_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    let triggers = format!("{TRIGGERS}\n[[client]]\nname = \"ops\"\noperator = true\n");
    std::fs::write(&config, &triggers).unwrap();
    let data = dir.path().join("data");
    let (mut server, url, _key, banner) = start(&config, &data);
    let ops_key = banner
        .lines()
        .find_map(|line| line.strip_prefix("sandbox client key ops: "))
        .unwrap_or_else(|| panic!("no ops key:\n{banner}"))
        .trim()
        .to_owned();
    // The newest 03:00 UTC slot that has come.
    let now = chrono::Utc::now();
    let today = now.date_naive().and_hms_opt(3, 0, 0).unwrap().and_utc();
    let slot = if today <= now {
        today
    } else {
        today - chrono::Duration::days(1)
    };
    let at = slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let config_arg = config.to_str().unwrap();
    let env = [("CIRCLECI_TRIGGERS_KEY", ops_key.as_str())];
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "nightly",
            "--config",
            config_arg,
            "--api",
            url.as_str(),
        ];
        args.extend_from_slice(extra);
        cli(&args, &env)
    };

    let (code, out, err) = run(&["--at", &at]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("nightly {at}: triggered")), "{out}");
    let (code, out, err) = run(&["--at", &at]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("already decided (triggered): nothing sent"),
        "{out}"
    );
    let (code, out, _) = run(&["--at", "2000-01-01T03:30:00Z"]);
    assert_eq!(code, 1);
    assert!(out.contains("is not a slot of schedule `nightly`"), "{out}");

    let data_arg = data.to_str().unwrap();
    let (code, out, err) = cli(
        &[
            "pause", "nightly", "--reason", "freeze", "--config", config_arg, "--data", data_arg,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(&["--run-id", "CHG-1"]);
    assert_eq!(code, 1);
    assert!(out.contains("schedule:nightly paused: freeze"), "{out}");
    assert!(out.contains("--ignore-pause"), "{out}");
    let http = reqwest::Client::new();
    let sandbox = http
        .post(format!("{url}/sandbox/schedules/nightly/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(sandbox.status(), 409);
    let (code, out, err) = run(&["--run-id", "CHG-1", "--ignore-pause"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("pause overridden: schedule:nightly paused: freeze; run anyway by ops"),
        "{out}"
    );

    let records: Vec<Value> = history(&data)
        .into_iter()
        .filter(|r| r["source"]["kind"] == "schedule")
        .collect();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(
        records.iter().all(|r| r["detail"]["operator"] == "ops"),
        "{records:#?}"
    );
    assert!(
        records.iter().any(|r| r["detail"]["slot"] == at.as_str()),
        "{records:#?}"
    );
    let exit = terminate(&mut server);
    assert!(exit.success(), "serve exited with {exit}");
}

/// `lint-ci` exits 1 on errors and 0 on a correct config (fixtures of `shared`).
#[test]
fn lint_ci_exit_codes_follow_the_findings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    std::fs::write(
        &config,
        r#"
[[schedule]]
name = "nightly-api"
cron = "0 2 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/api", branch = "main", workflow = "nightly", parameters = { report_day = "{{ slot.date }}", deep = true } }
"#,
    )
    .unwrap();
    let fixture = |name: &str| {
        format!(
            "{}/../../shared/tests/fixtures/circleci-configs/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    let config_arg = config.to_str().unwrap();
    let (code, out, err) = cli(
        &["lint-ci", &fixture("correct.yml"), "--config", config_arg],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 error(s), 0 warning(s)"), "{out}");
    let (code, out, _) = cli(
        &["lint-ci", &fixture("ungated.yml"), "--config", config_arg],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error[also-runs]: schedule nightly-api"),
        "{out}"
    );
    let (code, out, _) = cli(
        &[
            "check",
            "--config",
            config_arg,
            "--ci",
            &fixture("mistyped.yml"),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error[missing-workflow]"), "{out}");
}

/// `backfill --api` against `serve`: three daily slots fire with a progress line each and a
/// summary table; the same command again continues without sending anything; `--dry-run`
/// and a range over the cap send nothing.
#[test]
fn backfill_through_serve_fires_each_slot_once_and_a_rerun_replays() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    let triggers = format!("{TRIGGERS}\n[[client]]\nname = \"ops\"\noperator = true\n");
    std::fs::write(&config, &triggers).unwrap();
    let data = dir.path().join("data");
    let (mut server, url, _key, banner) = start(&config, &data);
    let ops_key = banner
        .lines()
        .find_map(|line| line.strip_prefix("sandbox client key ops: "))
        .unwrap()
        .trim()
        .to_owned();
    let now = chrono::Utc::now();
    let today = now.date_naive().and_hms_opt(3, 0, 0).unwrap().and_utc();
    let last = if today <= now {
        today
    } else {
        today - chrono::Duration::days(1)
    };
    let from = (last - chrono::Duration::days(2) - chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let config_arg = config.to_str().unwrap();
    let env = [("CIRCLECI_TRIGGERS_KEY", ops_key.as_str())];
    let backfill = |extra: &[&str]| {
        let mut args = vec![
            "backfill",
            "nightly",
            "--config",
            config_arg,
            "--api",
            url.as_str(),
            "--from",
            from.as_str(),
            "--to",
            to.as_str(),
        ];
        args.extend_from_slice(extra);
        cli(&args, &env)
    };

    let (code, out, err) = backfill(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("backfill nightly: 3 slot(s)"), "{out}");
    let (code, _, err) = backfill(&["--max", "2"]);
    assert_eq!(code, 2);
    assert!(err.contains("3 slots of `nightly`"), "{err}");
    assert!(history(&data).is_empty());

    let (code, out, err) = backfill(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("/3  ")).count(),
        3,
        "{err}"
    );
    assert!(err.contains("[####################] 3/3"), "{err}");
    assert!(out.contains("3 slot(s): 3 triggered"), "{out}");
    let (code, out, err) = backfill(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 slot(s): 3 already decided"), "{out}");
    let schedule_records = history(&data)
        .into_iter()
        .filter(|r| r["source"]["kind"] == "schedule")
        .count();
    assert_eq!(schedule_records, 3);
    let exit = terminate(&mut server);
    assert!(exit.success(), "serve exited with {exit}");
}
