//! Results of the scenarios: the table, the JSON files and `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::burst::BurstResult;
use crate::overhead::OverheadResult;
use crate::storm::StormResult;

/// The machine and build a figure was measured on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub rustc: String,
    /// `release` or `dev` (debug assertions on).
    pub profile: String,
    pub measured_at: String,
}

impl Machine {
    pub fn current() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|version| version.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            rustc,
            profile: profile(),
            measured_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// `dev` or `release`, with the release profile's settings when overridden through
/// `CARGO_PROFILE_RELEASE_*` at build time (a quicker optimised build than fat LTO).
fn profile() -> String {
    if cfg!(debug_assertions) {
        return "dev".to_owned();
    }
    let overrides: Vec<String> = [
        ("lto", option_env!("CARGO_PROFILE_RELEASE_LTO")),
        (
            "codegen-units",
            option_env!("CARGO_PROFILE_RELEASE_CODEGEN_UNITS"),
        ),
        ("opt-level", option_env!("CARGO_PROFILE_RELEASE_OPT_LEVEL")),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| format!("{name}={value}")))
    .collect();
    if overrides.is_empty() {
        "release".to_owned()
    } else {
        format!("release ({})", overrides.join(", "))
    }
}

/// One scenario's figures with the machine they came from (the JSON file's shape).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Measured<T> {
    pub machine: Machine,
    pub result: T,
}

/// The latest figures of every scenario: this run's, else the last saved ones.
#[derive(Debug, Default)]
pub struct Results {
    pub burst: Option<Measured<BurstResult>>,
    pub storm: Option<Measured<StormResult>>,
    pub overhead: Option<Measured<OverheadResult>>,
}

fn json_path(root: &Path, scenario: &str) -> PathBuf {
    root.join("target")
        .join("bench")
        .join(format!("{scenario}.json"))
}

fn load<T: DeserializeOwned>(root: &Path, scenario: &str) -> Option<T> {
    let text = std::fs::read_to_string(json_path(root, scenario)).ok()?;
    serde_json::from_str(&text).ok()
}

fn save<T: Serialize>(root: &Path, scenario: &str, value: &T) -> anyhow::Result<()> {
    let path = json_path(root, scenario);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(value)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// A row of the table: scenario, metric, measured, target, whether it is met.
struct Row {
    scenario: &'static str,
    metric: String,
    measured: String,
    target: String,
    met: Option<bool>,
}

impl Results {
    pub fn load(root: &Path) -> Self {
        Self {
            burst: load(root, "burst"),
            storm: load(root, "storm"),
            overhead: load(root, "overhead"),
        }
    }

    pub fn set_burst(&mut self, root: &Path, result: BurstResult) -> anyhow::Result<()> {
        let measured = Measured {
            machine: Machine::current(),
            result,
        };
        save(root, "burst", &measured)?;
        self.burst = Some(measured);
        Ok(())
    }

    pub fn set_storm(&mut self, root: &Path, result: StormResult) -> anyhow::Result<()> {
        let measured = Measured {
            machine: Machine::current(),
            result,
        };
        save(root, "storm", &measured)?;
        self.storm = Some(measured);
        Ok(())
    }

    pub fn set_overhead(&mut self, root: &Path, result: OverheadResult) -> anyhow::Result<()> {
        let measured = Measured {
            machine: Machine::current(),
            result,
        };
        save(root, "overhead", &measured)?;
        self.overhead = Some(measured);
        Ok(())
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        if let Some(Measured { result: b, .. }) = &self.burst {
            let within = 1.05;
            rows.push(Row {
                scenario: "burst",
                metric: format!(
                    "wall time, {} slots at {} req/s (bucket {})",
                    b.schedules, b.rate_per_second, b.bucket
                ),
                measured: format!(
                    "{:.2} s (ideal {:.2} s, ×{:.3})",
                    b.wall_seconds, b.ideal_seconds, b.ratio_to_ideal
                ),
                target: format!("≤ {within} × ideal"),
                met: Some(b.ratio_to_ideal <= within),
            });
            rows.push(Row {
                scenario: "burst",
                metric: "requests per trigger / 429s received".to_owned(),
                measured: format!("{:.2} / {}", b.requests_per_trigger, b.rate_limited_429),
                target: "—".to_owned(),
                met: None,
            });
            rows.push(Row {
                scenario: "burst",
                metric: "lost / duplicated slots".to_owned(),
                measured: format!("{} / {}", b.lost, b.duplicated),
                target: "0 / 0".to_owned(),
                met: Some(b.lost == 0 && b.duplicated == 0),
            });
        }
        if let Some(Measured { result: s, .. }) = &self.storm {
            rows.push(Row {
                scenario: "storm",
                metric: format!(
                    "triggered / unique, {} deliveries ({} concurrent)",
                    s.deliveries, s.concurrency
                ),
                measured: format!("{} / {}", s.triggered, s.unique_events),
                target: "equal".to_owned(),
                met: Some(s.triggered == s.unique_events),
            });
            rows.push(Row {
                scenario: "storm",
                metric: "receiver latency p50 / p99 (client-side)".to_owned(),
                measured: format!("{:.1} ms / {:.1} ms", s.latency_ms.p50, s.latency_ms.p99),
                target: "— (CircleCI waits 10 s)".to_owned(),
                met: None,
            });
            let statuses: Vec<String> = s
                .statuses
                .iter()
                .map(|(status, n)| format!("{status}×{n}"))
                .collect();
            rows.push(Row {
                scenario: "storm",
                metric: "answers by status / wall time".to_owned(),
                measured: format!("{} / {:.2} s", statuses.join(" "), s.wall_seconds),
                target: "—".to_owned(),
                met: None,
            });
        }
        if let Some(Measured { result: o, .. }) = &self.overhead {
            rows.push(Row {
                scenario: "overhead",
                metric: format!(
                    "one trigger end to end p50 / p99 ({} runs, {:.1} requests each)",
                    o.triggers, o.requests_per_trigger
                ),
                measured: format!("{:.2} ms / {:.2} ms", o.latency_ms.p50, o.latency_ms.p99),
                target: "our code p99 < 1 ms (see below)".to_owned(),
                met: None,
            });
        }
        rows
    }

    pub fn print_table(&self) {
        println!(
            "{:<9} {:<48} {:<36} {:<18} ok",
            "scenario", "metric", "measured", "target"
        );
        for row in self.rows() {
            println!(
                "{:<9} {:<48} {:<36} {:<18} {}",
                row.scenario,
                row.metric,
                row.measured,
                row.target,
                verdict(row.met)
            );
        }
    }

    /// Regenerates `docs/benchmarks.md` from the latest figures.
    pub fn write_docs(&self, root: &Path) -> anyhow::Result<()> {
        let mut doc = String::new();
        writeln!(doc, "# Benchmarks\n")?;
        writeln!(
            doc,
            "Generated by `cargo run --release -p bench -- all`; do not edit by hand. Every \
             scenario runs in one process against the in-repo CircleCI simulator \
             (`circleci-sim`) over loopback HTTP, with the SQLite store in a temporary \
             directory and the engine built by `shared::wiring::assemble`, as `serve` builds \
             it. The figures therefore include the simulator's own work and loopback HTTP; \
             they say nothing about AWS (DynamoDB, Lambda cold starts).\n"
        )?;
        writeln!(doc, "## Reproduce\n")?;
        writeln!(doc, "```sh")?;
        writeln!(doc, "cargo run --release -p bench -- all")?;
        writeln!(
            doc,
            "cargo run --release -p bench -- burst --count 500 --rate 50 --bucket 10"
        )?;
        writeln!(doc, "```\n")?;
        writeln!(
            doc,
            "Each run writes `target/bench/<scenario>.json` and rewrites this page from the \
             latest JSON of every scenario. The build profile that produced each figure is \
             listed under Machines: `dev` figures (`cargo run -p bench -- all`) are much \
             slower than release ones and only show the shape. The workspace's release \
             profile uses fat LTO with one codegen unit; a quicker optimised build is \
             `CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 cargo run \
             --release -p bench -- all`, recorded as such.\n"
        )?;
        writeln!(doc, "## Results\n")?;
        writeln!(doc, "| scenario | metric | measured | target | met |")?;
        writeln!(doc, "|---|---|---|---|---|")?;
        for row in self.rows() {
            writeln!(
                doc,
                "| {} | {} | {} | {} | {} |",
                row.scenario,
                row.metric,
                row.measured,
                row.target,
                verdict(row.met)
            )?;
        }
        writeln!(doc, "\n## Machines\n")?;
        writeln!(
            doc,
            "| scenario | CPUs | CPU model | rustc | profile | measured at |"
        )?;
        writeln!(doc, "|---|---|---|---|---|---|")?;
        let machines = [
            ("burst", self.burst.as_ref().map(|m| &m.machine)),
            ("storm", self.storm.as_ref().map(|m| &m.machine)),
            ("overhead", self.overhead.as_ref().map(|m| &m.machine)),
        ];
        for (scenario, machine) in machines {
            if let Some(m) = machine {
                writeln!(
                    doc,
                    "| {scenario} | {} | {} | {} | {} | {} |",
                    m.cpus, m.cpu_model, m.rustc, m.profile, m.measured_at
                )?;
            }
        }
        writeln!(doc, "\n## What the scenarios do\n")?;
        writeln!(
            doc,
            "- **burst**: N schedules (`--count`) whose slot is due at the same instant, \
             each on its own branch, evaluated by one `Scheduler::tick`, while the simulator \
             allows R requests per second per token (`--rate`, token bucket of `--bucket`). \
             The ideal time is (successful requests − bucket) ÷ R: what a client that never \
             wastes a request and never idles would take. Lost = slots without a pipeline; \
             duplicated = pipelines beyond one per slot (counted in the simulator, by branch). \
             One tick fires its slots one after another, so the wall time also holds the \
             local work of every trigger (see overhead) wherever it does not overlap the \
             client's pacing waits."
        )?;
        writeln!(
            doc,
            "- **storm**: `--deliveries` signed `workflow-completed` deliveries, 30 % of them \
             repeats of an earlier event id, posted `--concurrency` at a time to \
             `shared::receiver::webhook_router` served on 127.0.0.1. One chain rule starts a \
             downstream pipeline per event: triggered (pipelines in the simulator) must equal \
             the unique events. Latency is measured by the sender, from sending the request \
             to reading the whole answer, so it includes the rule's CircleCI call and the \
             SQLite writes. Duplicates that arrive while the first delivery of their event is \
             still being handled are answered 503 with `Retry-After` (CircleCI redelivers); \
             the status counts show how many. The simulator advertises a limit of 1000 req/s \
             in its `RateLimit` headers so that the client's pacing is not what is measured."
        )?;
        writeln!(
            doc,
            "- **overhead**: `--triggers` manual runs of a one-target schedule \
             (`Scheduler::run_now`, i.e. one `Engine::fire` each), one at a time, after a \
             warm-up, against the simulator with no injected latency. The figure is end to \
             end: claim and record in SQLite (several synchronous writes), the CircleCI \
             client (pacing, JSON, retries policy), a loopback HTTP round trip and the \
             simulator's own handling of the create. The target (p99 < 1 ms) is for our \
             code alone; this figure is an upper bound on it, not a measurement of it, so no \
             verdict is given. Separating the simulator's server-side time would need \
             instrumentation the simulator does not have yet."
        )?;
        let path = root.join("docs").join("benchmarks.md");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, doc)?;
        eprintln!("wrote {}", path.display());
        Ok(())
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "",
    }
}
