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
