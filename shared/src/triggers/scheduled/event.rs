//! The scheduled Lambda's input: what EventBridge Scheduler sends, or an operator's manual run.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The raw invocation payload. EventBridge Scheduler sends only the template's `Input`
/// (`{"source":"circleci-triggers.tick","scheduled_time":"<aws.scheduler.scheduled-time>"}`);
/// an operator may invoke `{"schedule": "<name>"}` to run one schedule now.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TickEvent {
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub scheduled_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub schedule: Option<String>,
    /// With `schedule`: an id that makes a repeated request run once (e.g. a change ticket).
    #[serde(default)]
    pub run_id: Option<String>,
}

/// What to do for one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickRequest {
    /// Evaluate every schedule up to this instant (the scheduler's slot time, not the
    /// invocation time: a late invocation still evaluates the minute it stands for, and the
    /// next one catches up the rest).
    Tick { at: DateTime<Utc> },
    /// Run one schedule now (recorded as manual); the same `run_id` runs once.
    RunSchedule {
        schedule: String,
        run_id: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TickEventError {
    #[error("the tick event is not valid JSON of the expected shape: {0}")]
    Shape(String),
    #[error("the tick event names neither `scheduled_time` nor `schedule`")]
    Empty,
    #[error("the tick event names both `scheduled_time` and `schedule`")]
    Both,
    #[error("`run_id` is only used with `schedule`")]
    RunIdWithoutSchedule,
    #[error("`{field}` must not be empty")]
    Blank { field: &'static str },
}

impl TickEvent {
    pub fn parse(value: serde_json::Value) -> Result<TickRequest, TickEventError> {
        let event: TickEvent =
            serde_json::from_value(value).map_err(|e| TickEventError::Shape(e.to_string()))?;
        event.request()
    }

    pub fn request(self) -> Result<TickRequest, TickEventError> {
        if self
            .schedule
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(TickEventError::Blank { field: "schedule" });
        }
        if self.run_id.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(TickEventError::Blank { field: "run_id" });
        }
        match (self.scheduled_time, self.schedule, self.run_id) {
            (Some(at), None, None) => Ok(TickRequest::Tick { at }),
            (Some(_), None, Some(_)) => Err(TickEventError::RunIdWithoutSchedule),
            (None, Some(schedule), run_id) => Ok(TickRequest::RunSchedule { schedule, run_id }),
            (None, None, _) => Err(TickEventError::Empty),
            (Some(_), Some(_), _) => Err(TickEventError::Both),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_scheduler_input_and_a_manual_run() {
        let tick = TickEvent::parse(serde_json::json!({
            "source": "circleci-triggers.tick",
            "scheduled_time": "2026-11-28T02:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            tick,
            TickRequest::Tick {
                at: "2026-11-28T02:00:00Z".parse().unwrap()
            }
        );
        let manual = TickEvent::parse(serde_json::json!({"schedule": "nightly-api"})).unwrap();
        assert_eq!(
            manual,
            TickRequest::RunSchedule {
                schedule: "nightly-api".into(),
                run_id: None
            }
        );
        let once =
            TickEvent::parse(serde_json::json!({"schedule": "nightly-api", "run_id": "CHG-7"}))
                .unwrap();
        assert_eq!(
            once,
            TickRequest::RunSchedule {
                schedule: "nightly-api".into(),
                run_id: Some("CHG-7".into())
            }
        );
    }

    #[test]
    fn rejects_other_shapes() {
        assert_eq!(
            TickEvent::parse(serde_json::json!({})),
            Err(TickEventError::Empty)
        );
        assert!(matches!(
            TickEvent::parse(serde_json::json!({"scheduled_time": "yesterday"})),
            Err(TickEventError::Shape(_))
        ));
        assert!(matches!(
            TickEvent::parse(
                serde_json::json!({"scheduled_time": "2026-11-28T02:00:00Z", "oops": 1})
            ),
            Err(TickEventError::Shape(_))
        ));
        assert_eq!(
            TickEvent::parse(
                serde_json::json!({"scheduled_time": "2026-11-28T02:00:00Z", "schedule": "x"})
            ),
            Err(TickEventError::Both)
        );
        assert_eq!(
            TickEvent::parse(
                serde_json::json!({"scheduled_time": "2026-11-28T02:00:00Z", "run_id": "x"})
            ),
            Err(TickEventError::RunIdWithoutSchedule)
        );
        assert_eq!(
            TickEvent::parse(serde_json::json!({"schedule": " "})),
            Err(TickEventError::Blank { field: "schedule" })
        );
        // EventBridge's placeholder left unreplaced (a hand-made test event) is not a time.
        assert!(matches!(
            TickEvent::parse(
                serde_json::json!({"scheduled_time": "<aws.scheduler.scheduled-time>"})
            ),
            Err(TickEventError::Shape(_))
        ));
    }
}
