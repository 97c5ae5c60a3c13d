//! The operator's console, as a process: `serve --sandbox` with the repository's own
//! `triggers.toml`. The banner's commands are run exactly as printed (through `sh`), a
//! `--sandbox-fail` job fails and a rerun from failed succeeds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An upper bound for a cascade, only so a broken build fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(120);

/// The repository's example triggers file.
fn repo_triggers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../triggers.toml")
}

mod support;

use support::{BIN, SandboxProcess, history_json};

/// A running `serve --sandbox` over a data directory of its own.
struct Sandbox {
    process: SandboxProcess,
    url: String,
    banner: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    fn start(config: &Path, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let process = SandboxProcess::start(config, &data, extra);
        Self {
            url: process.url.clone(),
            banner: process.banner.clone(),
            process,
            data,
            _dir: dir,
        }
    }

    /// Runs the `nightly-api` schedule now through the sandbox's run route; must be 2xx.
    fn run_nightly_api(&self) {
        let run = format!(
            "curl -X POST {}/sandbox/schedules/nightly-api/run",
            self.url
        );
        let (status, body) = paste(&run);
        assert!((200..300).contains(&status), "{status} {body}");
    }

    /// The banner's `curl` commands, as printed.
    fn commands(&self) -> Vec<String> {
        self.banner
            .lines()
            .filter_map(|line| line.find("curl ").map(|at| line[at..].to_owned()))
            .collect()
    }

    /// The banner's line starting with `prefix`, without it.
    fn line(&self, prefix: &str) -> String {
        self.process
            .banner_value(prefix)
            .unwrap_or_else(|| panic!("no `{prefix}` in the banner:\n{}", self.banner))
    }

    fn history(&self) -> Vec<Value> {
        history_json(&self.data, &["--limit", "500"])
    }

    /// Polls history until `done` finds a record.
    fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> Option<Value>) -> Value {
        let started = Instant::now();
        loop {
            let records = self.history();
            if let Some(found) = done(&records) {
                return found;
            }
            assert!(started.elapsed() < LIMIT, "{what}: {records:#?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Runs a command line through `sh`, as a user pasting it would, adding only curl's
/// options to print the status code and fail on a refused connection; returns (status, body).
fn paste(command: &str) -> (u16, String) {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("{command} -sS -w '\\n%{{http_code}}'"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "`{command}`: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_owned())
}

fn by_source<'a>(records: &'a [Value], kind: &str, name: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["source"]["kind"] == kind && r["source"]["name"] == name)
        .collect()
}

fn workflow_statuses(record: &Value) -> Vec<String> {
    record["workflows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["status"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_banners_commands_work_when_pasted() {
    let sandbox = Sandbox::start(&repo_triggers(), &[]);
    let commands = sandbox.commands();
    // One endpoint call per client with a callable endpoint, and a schedule run.
    assert!(
        commands
            .iter()
            .any(|c| c.contains("/v1/endpoints/deploy-staging")),
        "{}",
        sandbox.banner
    );
    assert!(
        commands.iter().any(|c| c.contains("/sandbox/schedules/")),
        "{}",
        sandbox.banner
    );
    for command in &commands {
        let (status, body) = paste(command);
        assert!(
            (200..300).contains(&status),
            "`{command}` → {status} {body}"
        );
    }
    // Each pasted call is a trigger in history that reached CircleCI.
    let records = sandbox.history();
    let deploy = by_source(&records, "http", "deploy-staging");
    assert_eq!(deploy.len(), 1, "{records:#?}");
    assert_eq!(deploy[0]["status"], "triggered", "{:#}", deploy[0]);
    assert!(
        deploy[0]["parameters"]["version"]
            .as_str()
            .is_some_and(regex_like_semver),
        "{:#}",
        deploy[0]
    );
    assert!(
        !by_source(&records, "schedule", "nightly-api").is_empty(),
        "{records:#?}"
    );
}

/// `^\d+\.\d+\.\d+$`, the pattern of `deploy-staging`'s `version` in triggers.toml.
fn regex_like_semver(value: &str) -> bool {
    let parts: Vec<&str> = value.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[test]
fn a_sandbox_fail_job_fails_its_workflow_and_a_rerun_from_failed_succeeds() {
    let sandbox = Sandbox::start(&repo_triggers(), &["--sandbox-fail", "gh/acme/e2e:test"]);
    let run = sandbox
        .commands()
        .into_iter()
        .find(|c| c.contains("/sandbox/schedules/nightly-api/run"))
        .unwrap_or_else(|| panic!("no run command:\n{}", sandbox.banner));
    let (status, body) = paste(&run);
    assert!((200..300).contains(&status), "{status} {body}");

    // nightly-api → api + web nightly → fan-in e2e, whose `test` job fails.
    let e2e = sandbox.wait_for("the e2e workflow has not failed", |records| {
        by_source(records, "chain", "e2e-when-both-built")
            .into_iter()
            .find(|r| workflow_statuses(r).iter().any(|s| s == "failed"))
            .cloned()
    });
    assert_eq!(e2e["status"], "triggered", "{e2e:#}");
    // The upstream nightly pipelines were not made to fail.
    let records = sandbox.history();
    for upstream in by_source(&records, "schedule", "nightly-api") {
        let statuses = workflow_statuses(upstream);
        assert!(
            !statuses.is_empty() && statuses.iter().all(|s| s == "success"),
            "{upstream:#}"
        );
    }
    // release-gate waits for a successful e2e: nothing approved.
    assert!(by_source(&records, "chain", "release-gate").is_empty());

    // rerun-e2e (from_failed) on the failed pipeline: the rerun of `test` succeeds.
    let key = sandbox.line("sandbox client key release-bot:");
    let pipeline = e2e["pipeline"]["id"].as_str().unwrap().to_owned();
    let (status, body) = paste(&format!(
        "curl -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \
         -d '{{\"select\":\"{pipeline}\"}}' {}/v1/endpoints/rerun-e2e",
        sandbox.url
    ));
    assert!((200..300).contains(&status), "{status} {body}");
    let records = sandbox.history();
    let rerun = by_source(&records, "http", "rerun-e2e");
    assert_eq!(rerun.len(), 1, "{records:#?}");
    assert_eq!(rerun[0]["status"], "triggered", "{:#}", rerun[0]);
    assert_eq!(rerun[0]["detail"]["acted_on_pipeline"], pipeline.as_str());
    let new_workflow = rerun[0]["detail"]["outcome"]["new_workflow_id"].clone();
    assert!(new_workflow.is_string(), "{:#}", rerun[0]);
    // The rerun's workflow succeeds, which is what release-gate waits for: it approves.
    let gate = sandbox.wait_for("the rerun has not succeeded", |records| {
        by_source(records, "chain", "release-gate")
            .into_iter()
            .find(|r| r["upstream"]["workflow_id"] == new_workflow)
            .cloned()
    });
    assert_eq!(gate["detail"]["event"]["status"], "success", "{gate:#}");
}

#[test]
fn sandbox_fail_must_name_a_sandbox_project_and_job() {
    for (flag, expected) in [
        ("gh/acme/e2e:deploy", "build and test"),
        ("gh/acme/nope:test", "names no such project"),
    ] {
        let output = Command::new(BIN)
            .args(["serve", "--sandbox", "--listen", "127.0.0.1:0", "--config"])
            .arg(repo_triggers())
            .args([
                "--data",
                "/nonexistent/never-created",
                "--sandbox-fail",
                flag,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag}: {stderr}");
        assert!(stderr.contains(expected), "{flag}: {stderr}");
    }
}

/// Runs `history` with `args` against the sandbox's store; its stdout.
fn history_text(sandbox: &Sandbox, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("history")
        .args(args)
        .arg("--data")
        .arg(&sandbox.data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "history {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The cell of `column` in `line`, given the header line (columns are aligned).
fn cell<'a>(header: &str, line: &'a str, column: &str) -> &'a str {
    let at = header.find(column).unwrap();
    line[at..].split("  ").next().unwrap().trim()
}

#[test]
fn history_shows_outcomes_acted_on_pipelines_one_origin_per_tree_and_follows() {
    let sandbox = Sandbox::start(&repo_triggers(), &[]);
    // --follow from an empty history: every row it prints was written after it started.
    let mut follower = Command::new(BIN)
        .args(["history", "--follow", "--json", "--data"])
        .arg(&sandbox.data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let followed = BufReader::new(follower.stdout.take().unwrap());
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in followed.lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });

    sandbox.run_nightly_api();
    let gate = sandbox.wait_for("release-gate has not approved", |records| {
        by_source(records, "chain", "release-gate")
            .into_iter()
            .find(|r| r["status"] == "triggered")
            .cloned()
    });
    let records = sandbox.history();
    let schedule_rows = by_source(&records, "schedule", "nightly-api");
    assert_eq!(schedule_rows.len(), 2, "{records:#?}");
    let origin = schedule_rows[0]["origin"].as_str().unwrap().to_owned();

    // The table: every row of the cascade carries the same ORIGIN; the approve row names
    // the pipeline it acted on and what it did; pipelines show their workflows' outcomes.
    let table = history_text(&sandbox, &["--origin", &origin]);
    let lines: Vec<&str> = table.lines().collect();
    let header = lines[0];
    assert!(header.contains("OUTCOME"), "{table}");
    assert!(lines.len() >= 6, "{table}");
    for line in &lines[1..] {
        assert_eq!(cell(header, line, "ORIGIN"), origin, "{table}");
    }
    let approve = lines
        .iter()
        .find(|l| l.contains("chain:release-gate"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        cell(header, approve, "PIPELINE").starts_with("on #"),
        "{table}"
    );
    assert_eq!(
        cell(header, approve, "OUTCOME"),
        "approved in build",
        "{table}"
    );
    let e2e = lines
        .iter()
        .find(|l| l.contains("chain:e2e-when-both-built"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        cell(header, e2e, "OUTCOME").contains("e2e:success"),
        "{table}"
    );

    // show: the schedule's api target, the fan-in and the approval under it, as a tree.
    let api = schedule_rows
        .iter()
        .find(|r| r["target"]["project"] == "gh/acme/api")
        .unwrap();
    let tree = history_text(&sandbox, &["show", api["id"].as_str().unwrap()]);
    let tree_lines: Vec<&str> = tree.lines().collect();
    assert!(
        tree_lines[0].starts_with("schedule:nightly-api  triggered  gh/acme/api"),
        "{tree}"
    );
    let fan_in = tree_lines
        .iter()
        .position(|l| l.contains("chain:e2e-when-both-built"))
        .unwrap_or_else(|| panic!("{tree}"));
    assert!(tree_lines[fan_in].contains("fan-in, also after"), "{tree}");
    let approval = tree_lines
        .iter()
        .position(|l| l.contains(&gate["id"].as_str().unwrap().to_owned()))
        .unwrap_or_else(|| panic!("{tree}"));
    assert!(approval > fan_in, "{tree}");
    let indent = |line: &str| line.find("chain:").unwrap_or(0);
    assert!(
        indent(tree_lines[approval]) > indent(tree_lines[fan_in]),
        "{tree}"
    );
    // The origin id (no record of its own for a two-target slot) shows both trees.
    let both = history_text(&sandbox, &["show", &origin]);
    assert_eq!(
        both.lines()
            .filter(|l| l.starts_with("schedule:nightly-api"))
            .count(),
        2,
        "{both}"
    );

    // --follow printed each record of the cascade once, as it was written.
    let started = Instant::now();
    let mut streamed = std::collections::HashSet::new();
    while streamed.len() < records.len() && started.elapsed() < LIMIT {
        if let Ok(line) = received.recv_timeout(Duration::from_millis(500)) {
            let record: Value = serde_json::from_str(&line).unwrap();
            assert!(
                streamed.insert(record["id"].as_str().unwrap().to_owned()),
                "streamed twice: {line}"
            );
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let ids: std::collections::HashSet<String> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, ids);
}

/// Debian's `chromium` (or `$CHROMIUM`). Missing is a failure, not a skip: `./scripts/test`
/// installs it.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed: the status page test needs Debian's chromium package \
             (`apt-get install chromium`; ./scripts/test installs it)"
        )
    })
}

/// Loads `url` in headless Chromium; returns the DOM after load. Panics on any console
/// message (the page has no script: any message is an error, e.g. a failed load).
fn load_page(url: &str, screenshot: Option<&Path>) -> String {
    let mut command = Command::new(chromium());
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1400,1400",
    ]);
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let output = command.arg(url).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chromium failed: {stderr}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_status_page_shows_the_sandbox_cascade_in_chromium() {
    let sandbox = Sandbox::start(&repo_triggers(), &[]);
    let page = format!("{}/", sandbox.url);
    let empty = load_page(&page, None);
    assert!(empty.contains("no triggers yet"), "{empty}");
    assert!(
        empty.contains("nightly-api") && empty.contains("Europe/Berlin"),
        "{empty}"
    );

    sandbox.run_nightly_api();
    // Watch the page (not history) until the approval at the end of the cascade shows.
    let started = Instant::now();
    let dom = loop {
        let dom = load_page(&page, None);
        if dom.contains("chain:release-gate") && dom.contains("approved in") {
            break dom;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the cascade never showed:\n{dom}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // One origin tree: the two schedule targets at depth 0, the chains below, the
    // approval below the fan-in; each pipeline's workflows with their outcomes.
    let records = sandbox.history();
    let origin = by_source(&records, "schedule", "nightly-api")[0]["origin"]
        .as_str()
        .unwrap()
        .to_owned();
    let tree_at = dom
        .find(&format!("data-origin=\"{origin}\""))
        .unwrap_or_else(|| panic!("no tree for {origin}:\n{dom}"));
    let tree = &dom[tree_at
        ..dom[tree_at..]
            .find("</table>")
            .map_or(dom.len(), |e| tree_at + e)];
    let depth_of = |source: &str| {
        let at = tree
            .find(source)
            .unwrap_or_else(|| panic!("{source} not in {tree}"));
        let row = &tree[tree[..at].rfind("<tr").unwrap()..at];
        let depth = row.split("data-depth=\"").nth(1).unwrap();
        depth[..depth.find('"').unwrap()].parse::<u32>().unwrap()
    };
    assert_eq!(depth_of("schedule:nightly-api"), 0);
    assert_eq!(depth_of("chain:e2e-when-both-built"), 1);
    assert_eq!(depth_of("chain:deploy-after-build"), 1);
    assert_eq!(depth_of("chain:release-gate"), 2);
    // The approval links the deploy pipeline it acted on.
    let gate_row = &tree[tree.find("chain:release-gate").unwrap()..];
    let gate_row = &gate_row[..gate_row.find("</tr>").unwrap()];
    assert!(
        gate_row.contains("href=\"https://app.circleci.com/pipelines/github/acme/deploy/"),
        "{gate_row}"
    );
    assert!(tree.contains("e2e: success"), "{tree}");
    assert!(tree.contains("nightly: success"), "{tree}");
    assert!(dom.contains("Needs attention (0)"), "{dom}");
    assert!(dom.contains("approve hold-release gh/acme/deploy"), "{dom}");

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    load_page(&page, Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        shot.display()
    );
}

#[test]
fn a_failed_workflow_is_listed_as_needing_attention() {
    let sandbox = Sandbox::start(&repo_triggers(), &["--sandbox-fail", "gh/acme/e2e:test"]);
    sandbox.run_nightly_api();
    let started = Instant::now();
    let page = loop {
        let (status, page) = paste(&format!("curl {}/", sandbox.url));
        assert_eq!(status, 200, "{page}");
        if page.contains("Needs attention (1)") {
            break page;
        }
        assert!(
            started.elapsed() < LIMIT,
            "nothing needs attention:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let attention =
        &page[page.find("id=\"attention\"").unwrap()..page.find("id=\"recent\"").unwrap()];
    assert!(
        attention.contains("chain:e2e-when-both-built"),
        "{attention}"
    );
    assert!(attention.contains("e2e: failed"), "{attention}");
}
