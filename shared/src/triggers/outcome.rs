//! The closed loop's one merge: what CircleCI reports about a pipeline's workflows, written
//! onto the record of the trigger that started it — by a webhook (chained) or by a read
//! when a caller looks at the trigger (http) alike.

use crate::circleci::{Workflow, WorkflowStatus};
use crate::store::{TriggerRecord, WorkflowOutcome};

/// What one look at CircleCI found.
#[derive(Debug, Clone, Default)]
pub struct WorkflowReport {
    /// The pipeline's whole workflow list, if it could be read.
    pub listed: Option<Vec<WorkflowOutcome>>,
    /// A workflow a webhook reported: authoritative for itself, whatever the list says.
    pub reported: Option<WorkflowOutcome>,
    /// CircleCI refused the pipeline after creating it (`errored`): it will run nothing.
    pub errored: bool,
}

/// Applies a report to the record. A final status recorded earlier is never replaced by a
/// non-final one from a list (lists lag behind webhooks, which arrive in any order). The
/// pipeline is final when it errored, or when its list was read and every workflow is final.
pub fn record_workflows(record: &mut TriggerRecord, report: &WorkflowReport) {
    for listed in report.listed.iter().flatten() {
        let keeps_final = record.workflows.iter().any(|known| {
            known.id == listed.id
                && status_of(&known.status).is_final()
                && !status_of(&listed.status).is_final()
        });
        if !keeps_final {
            record.upsert_workflow(listed.clone());
        }
    }
    if let Some(reported) = &report.reported {
        record.upsert_workflow(reported.clone());
    }
    let all_final = !record.workflows.is_empty()
        && record
            .workflows
            .iter()
            .all(|workflow| status_of(&workflow.status).is_final());
    record.pipeline_final = report.errored || (report.listed.is_some() && all_final);
}

/// A workflow as history keeps it.
pub fn outcome_of(workflow: &Workflow) -> WorkflowOutcome {
    WorkflowOutcome {
        id: workflow.id.to_string(),
        name: workflow.name.clone(),
        status: status_text(workflow.status),
        stopped_at: workflow.stopped_at,
    }
}

/// CircleCI's status text as the client's enum (`Unknown` for statuses added later).
pub fn status_of(status: &str) -> WorkflowStatus {
    serde_json::from_value(serde_json::Value::String(status.to_owned()))
        .unwrap_or(WorkflowStatus::Unknown)
}

fn status_text(status: WorkflowStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::config::ActionKind;
    use crate::store::{SourceKind, TriggerSource, TriggerTarget};

    fn workflow(id: &str, status: &str) -> WorkflowOutcome {
        WorkflowOutcome {
            id: id.into(),
            name: format!("wf-{id}"),
            status: status.into(),
            stopped_at: None,
        }
    }

    fn record() -> TriggerRecord {
        TriggerRecord::new(
            TriggerSource::new(SourceKind::Http, "e"),
            TriggerTarget::default(),
            ActionKind::Pipeline,
            Utc::now(),
        )
    }

    #[test]
    fn a_lagging_list_never_downgrades_a_final_status() {
        let mut record = record();
        let reported = WorkflowReport {
            reported: Some(workflow("a", "success")),
            ..WorkflowReport::default()
        };
        record_workflows(&mut record, &reported);
        assert!(
            !record.pipeline_final,
            "no list read: not known to be final"
        );
        let lagging = WorkflowReport {
            listed: Some(vec![workflow("a", "running"), workflow("b", "failed")]),
            ..WorkflowReport::default()
        };
        record_workflows(&mut record, &lagging);
        assert_eq!(record.workflows[0].status, "success");
        assert_eq!(record.workflows[1].status, "failed");
        assert!(record.pipeline_final);
    }

    #[test]
    fn a_reported_workflow_wins_and_an_errored_pipeline_is_final() {
        let mut record = record();
        record_workflows(
            &mut record,
            &WorkflowReport {
                listed: Some(vec![workflow("a", "running")]),
                reported: Some(workflow("a", "failed")),
                errored: false,
            },
        );
        assert_eq!(record.workflows[0].status, "failed");
        assert!(record.pipeline_final);

        let mut errored = self::record();
        record_workflows(
            &mut errored,
            &WorkflowReport {
                listed: Some(Vec::new()),
                errored: true,
                ..WorkflowReport::default()
            },
        );
        assert!(errored.pipeline_final);
    }
}
