//! What a trigger record keeps besides its common columns: the facts each trigger kind and
//! the engine add (a schedule's slot, a webhook's event, an HTTP call's client, the retry
//! plan, reconciliation notes). Typed, so every writer and reader agrees on a field's name
//! and shape; stored as one JSON object whose keys are the field names below.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::TriggerId;
use crate::actions::{Action, ActionOutcome};

/// Source-specific facts of one trigger. Every field is optional: each kind fills its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordDetail {
    // ---- schedules ----------------------------------------------------------------------
    /// The slot's id (its UTC instant, or `manual:<run id>` for a run-now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// The target's stable identity within its schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// An operator asked for this run (no slot of the cron expression).
    #[serde(default, skip_serializing_if = "is_false")]
    pub manual: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<DateTime<Utc>>,
    /// An operator ran a paused schedule anyway: the pause it overrode, and who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored_pause: Option<String>,
    /// A missed slot the catch-up policy fired (not the on-time one).
    #[serde(default, skip_serializing_if = "is_false")]
    pub caught_up: bool,
    /// The slot's wall-clock time in the schedule's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_local: Option<String>,
    /// How daylight saving time moved or repeated the slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// Why the slot was skipped; kept so a re-check after a crash decides the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// `concurrency = "forbid"`: the trigger whose pipeline was still running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<TriggerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_pipeline: Option<PreviousPipeline>,
    /// `concurrency = "replace"`: what was canceled to make room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<ReplacedPipeline>,
    /// A long gap summarised on one row instead of one row per missed slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<MissedSlots>,

    // ---- chains -------------------------------------------------------------------------
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventNote>,
    /// The action's position in its rule's `then` list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_index: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinNote>,

    // ---- HTTP ---------------------------------------------------------------------------
    /// The authenticated client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The operator who triggered it: the CLI user, or the `operator`-scoped client of a
    /// schedule run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The caller's workflow selection, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<String>,
    /// A refused request: the status and problem type it was answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,

    // ---- the engine ---------------------------------------------------------------------
    /// What the sweep needs to make another attempt without the original event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPlan>,
    /// When the side-effecting request was about to be sent (reconciliation looks around it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// Pipelines reconciliation found after an ambiguous create (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<Uuid>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// The pipeline an approve, rerun or cancel acted on (it belongs to another record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acted_on_pipeline: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ActionOutcome>,

    // ---- what CircleCI later said -------------------------------------------------------
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unauthorized: Option<UnauthorizedHint>,
    /// `errored` when CircleCI refused the pipeline after creating it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_errors: Option<BTreeMap<String, String>>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl RecordDetail {
    pub fn is_empty(&self) -> bool {
        self == &RecordDetail::default()
    }

    /// The token the trigger used, from the action it keeps for retries (schedule and chain
    /// records); `None` for the others.
    pub fn token(&self) -> Option<&str> {
        self.retry
            .as_ref()
            .map(|plan| plan.action.target().token.as_str())
    }
}

/// The action kept for another attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPlan {
    pub action: Action,
}

/// The previous slot's pipeline, when it no longer blocks this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousPipeline {
    /// `finished` or `stale`.
    pub state: String,
    pub trigger_id: TriggerId,
    pub pipeline: Option<String>,
    pub number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacedPipeline {
    pub trigger_id: TriggerId,
    pub pipeline: String,
    pub canceled_workflows: Vec<String>,
    pub cancel_failed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedSlots {
    pub count: usize,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub first_missed: Option<DateTime<Utc>>,
    /// Where the scan began when the gap was too long to scan whole.
    pub evaluated_from: Option<DateTime<Utc>>,
}

/// The webhook event that caused a chained trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventNote {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub happened_at: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// The fan-in join a trigger completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinNote {
    pub key: String,
    pub generation: u64,
    pub arrived: Vec<JoinArrivalNote>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinArrivalNote {
    pub upstream: String,
    pub pipeline_id: Option<String>,
    pub trigger_id: Option<TriggerId>,
}

/// Why a workflow ended `unauthorized`, and whose permissions decide it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnauthorizedHint {
    pub workflow: String,
    pub token: String,
    pub user: Option<String>,
    pub hint: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_detail_writes_nothing_and_unknown_keys_are_ignored() {
        assert_eq!(
            serde_json::to_value(RecordDetail::default()).unwrap(),
            serde_json::json!({})
        );
        let read: RecordDetail =
            serde_json::from_value(serde_json::json!({"slot": "s", "from_a_newer_release": 1}))
                .unwrap();
        assert_eq!(read.slot.as_deref(), Some("s"));
    }

    #[test]
    fn field_names_are_the_stored_keys() {
        let detail = RecordDetail {
            manual: true,
            event: Some(EventNote {
                id: "e".into(),
                kind: "workflow-completed".into(),
                happened_at: "t".into(),
                status: "success".into(),
                job: None,
            }),
            http_status: Some(401),
            ..RecordDetail::default()
        };
        assert_eq!(
            serde_json::to_value(&detail).unwrap(),
            serde_json::json!({
                "manual": true,
                "event": {"id": "e", "type": "workflow-completed", "happened_at": "t", "status": "success"},
                "http_status": 401,
            })
        );
    }
}
