//! Tracing setup: JSON lines in Lambda (CloudWatch parses them), readable text locally.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
/// Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .flatten_event(true)
            .without_time() // CloudWatch stamps every line already.
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
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
