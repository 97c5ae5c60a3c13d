//! Tracing setup: JSON lines in Lambda (CloudWatch parses them), readable text locally.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
/// Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = match format {
        // `try_init` also forwards `log` records, as `fmt().try_init()` does.
        LogFormat::Json => json_subscriber(filter, std::io::stdout)
            .try_init()
            .map_err(|error| error.to_string()),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .try_init()
            .map_err(|error| error.to_string()),
    };
}

/// JSON lines: the event's fields flat, and the spans it is in (`spans`, outermost first,
/// each with its fields: the trigger's id, source and project). The current span is not
/// repeated on its own (`span`): it is the last of `spans`, and CloudWatch bills every byte
/// (~170 a line).
fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .with_current_span(false)
        .with_span_list(true)
        .flatten_event(true)
        .without_time() // CloudWatch stamps every line already.
        .finish()
}

/// Namespace of our CloudWatch metrics (the SAM template's alarms use it).
pub const METRICS_NAMESPACE: &str = "CircleCITriggers";

/// Writes one CloudWatch Embedded Metric Format line to stdout. Lambda ships stdout to
/// CloudWatch Logs, which extracts the metric; no SDK call, no extra latency. Every metric
/// also carries the `Environment` dimension from `TRIGGERS_ENVIRONMENT` (default `dev`).
pub fn emit_metric(name: &str, value: f64, dimensions: &[(&str, &str)]) {
    let line = metric_line(name, value, dimensions, chrono::Utc::now());
    // Only Lambda turns stdout into metrics; elsewhere (serve, CLI --json) stdout belongs to
    // the program's own output, so the line goes to the log instead.
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        println!("{line}");
    } else {
        tracing::debug!(metric = %line, "metric");
    }
}

/// The EMF JSON for one metric value (separate for tests).
pub fn metric_line(
    name: &str,
    value: f64,
    dimensions: &[(&str, &str)],
    at: chrono::DateTime<chrono::Utc>,
) -> String {
    let environment = std::env::var("TRIGGERS_ENVIRONMENT").unwrap_or_else(|_| "dev".into());
    let mut root = serde_json::Map::new();
    let mut keys = vec![serde_json::json!("Environment")];
    root.insert("Environment".into(), serde_json::json!(environment));
    for (key, value) in dimensions {
        keys.push(serde_json::json!(key));
        root.insert((*key).to_owned(), serde_json::json!(value));
    }
    root.insert(name.to_owned(), serde_json::json!(value));
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                // The alarms select by Environment alone, so publish that dimension set too.
                "Dimensions": [["Environment"], keys],
                "Metrics": [{ "Name": name, "Unit": "Count" }],
            }],
        }),
    );
    serde_json::Value::Object(root).to_string()
}

/// Lets through at most `per_window` log lines per `window` and counts the rest, so a flood
/// of the same event (unauthenticated requests) cannot flood the log: each line that is
/// let through says how many were left out before it.
#[derive(Debug)]
pub struct LogSampler {
    window: std::time::Duration,
    per_window: u32,
    state: std::sync::Mutex<SamplerState>,
}

#[derive(Debug, Default)]
struct SamplerState {
    window_start: Option<std::time::Instant>,
    passed: u32,
    suppressed: u64,
}

impl LogSampler {
    pub const fn new(window: std::time::Duration, per_window: u32) -> Self {
        Self {
            window,
            per_window,
            state: std::sync::Mutex::new(SamplerState {
                window_start: None,
                passed: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(left out since the last line)` when a line may be logged at `now`.
    pub fn admit(&self, now: std::time::Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let expired = state
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if expired {
            state.window_start = Some(now);
            state.passed = 0;
        }
        if state.passed < self.per_window {
            state.passed += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// What a JSON line holds: the trigger span's fields once, in `spans`.
    #[test]
    fn a_json_line_names_its_spans_once() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = json_subscriber(EnvFilter::new("info"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let tick = tracing::info_span!("schedule", source = "nightly");
            let _tick = tick.enter();
            let trigger = tracing::info_span!(
                "trigger",
                trigger_id = "e757290f-6808-58f4-a4d3-9aa82bbeb72a",
                project = "gh/acme/api"
            );
            let _trigger = trigger.enter();
            tracing::info!(status = "triggered", "trigger decided");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "trigger decided");
        assert_eq!(line["status"], "triggered");
        assert!(line.get("span").is_none(), "{line}");
        assert_eq!(line["spans"][0]["name"], "schedule");
        assert_eq!(line["spans"][1]["name"], "trigger");
        assert_eq!(
            line["spans"][1]["trigger_id"],
            "e757290f-6808-58f4-a4d3-9aa82bbeb72a"
        );
        assert_eq!(text.matches("e757290f").count(), 1, "{text}");
    }

    #[test]
    fn a_sampler_passes_a_few_lines_per_window_and_counts_the_rest() {
        let sampler = LogSampler::new(Duration::from_secs(60), 3);
        let start = Instant::now();
        let passed: Vec<Option<u64>> = (0..1_000).map(|_| sampler.admit(start)).collect();
        assert_eq!(&passed[..4], &[Some(0), Some(0), Some(0), None]);
        assert_eq!(passed.iter().flatten().count(), 3);
        // Still the same window: nothing more.
        assert_eq!(sampler.admit(start + Duration::from_secs(59)), None);
        // The next window's first line reports everything left out.
        assert_eq!(sampler.admit(start + Duration::from_secs(60)), Some(998));
        assert_eq!(sampler.admit(start + Duration::from_secs(61)), Some(0));
    }
}
