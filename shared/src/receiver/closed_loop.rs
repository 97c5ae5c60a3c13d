//! The closed loop: when a webhook reports a pipeline one of our triggers started (any
//! kind: schedule, chain, HTTP, CLI), the trigger record learns each workflow's outcome,
//! so history shows what every trigger led to.
//!
//! On `workflow-completed` the pipeline's workflows are read from CircleCI once: the
//! pipeline is final when every workflow is (a pipeline can have several, and webhooks can
//! arrive in any order). The event is authoritative for its own workflow, and a final
//! status recorded earlier is never replaced by a non-final one read from a lagging list.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{ClosedLoopReport, Receiver, ReceiverError};
use crate::actions::Action;
use crate::circleci::{CircleCiError, Workflow, WorkflowStatus};
use crate::config::chain::EventKind;
use crate::store::{TriggerRecord, WorkflowOutcome, modify_record};
use crate::webhook::WebhookEvent;

/// Records the reported workflow's outcome on `record` (the trigger that started the
/// pipeline). `None` for events that are not a workflow's completion.
pub(super) async fn record_outcome(
    receiver: &Receiver,
    event: &WebhookEvent,
    record: &TriggerRecord,
) -> Result<Option<ClosedLoopReport>, ReceiverError> {
    if event.kind() != EventKind::WorkflowCompleted {
        return Ok(None);
    }
    let Some(workflow) = event.workflow() else {
        return Ok(None);
    };
    let status = event.status().as_str().to_owned();
    let reported = WorkflowOutcome {
        id: workflow.id.clone(),
        name: workflow.name.clone(),
        status: status.clone(),
        stopped_at: stopped_at(event),
    };
    let token = token_of(record).unwrap_or_else(|| receiver.circleci.token.clone());
    let circleci = receiver.engine.actions().circleci();
    let listed = match event.pipeline().id.parse::<Uuid>() {
        Ok(pipeline_id) => match circleci.list_pipeline_workflows(&token, pipeline_id).await {
            Ok(listed) => Some(listed),
            // A redelivery may find CircleCI answering again.
            Err(error) if error.is_retryable() => return Err(error.into()),
            // It will not get better by asking again: record what the event says.
            Err(error) => {
                tracing::warn!(%error, "closed loop: cannot list the pipeline's workflows");
                None
            }
        },
        // Not a CircleCI pipeline id we can look up; record what the event says.
        Err(_) => None,
    };
    let hint = if parse_status(&status) == WorkflowStatus::Unauthorized {
        Some(unauthorized_hint(receiver, &token, &workflow.name).await)
    } else {
        None
    };
    let updated = modify_record(receiver.engine.store().as_ref(), record.id, |stored| {
        if let Some(listed) = &listed {
            for workflow in listed {
                merge(stored, outcome_of(workflow));
            }
        }
        stored.upsert_workflow(reported.clone());
        stored.pipeline_final = listed.is_some()
            && !stored.workflows.is_empty()
            && stored
                .workflows
                .iter()
                .all(|w| parse_status(&w.status).is_final());
        if let Some(hint) = &hint {
            stored.reason = Some(match stored.reason.as_deref() {
                Some(existing) if !existing.contains(&hint.text) => {
                    format!("{existing}; {}", hint.text)
                }
                Some(existing) => existing.to_owned(),
                None => hint.text.clone(),
            });
            set_detail(&mut stored.detail, "unauthorized", hint.detail.clone());
        }
    })
    .await?;
    tracing::info!(
        trigger_id = %updated.id,
        workflow = %reported.name,
        status = %reported.status,
        pipeline_final = updated.pipeline_final,
        "closed loop: workflow outcome recorded"
    );
    Ok(Some(ClosedLoopReport {
        trigger_id: updated.id,
        workflow: reported.name,
        status,
        pipeline_final: updated.pipeline_final,
    }))
}

/// Inserts a workflow read from CircleCI unless it would replace a final status with a
/// non-final one (the list can lag behind the webhooks).
fn merge(record: &mut TriggerRecord, listed: WorkflowOutcome) {
    let keeps_final = record.workflows.iter().any(|known| {
        known.id == listed.id
            && parse_status(&known.status).is_final()
            && !parse_status(&listed.status).is_final()
    });
    if !keeps_final {
        record.upsert_workflow(listed);
    }
}

fn outcome_of(workflow: &Workflow) -> WorkflowOutcome {
    WorkflowOutcome {
        id: workflow.id.to_string(),
        name: workflow.name.clone(),
        status: serde_json::to_value(workflow.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned()),
        stopped_at: workflow.stopped_at,
    }
}

/// CircleCI's status text as the client's enum (`Unknown` for statuses added later).
fn parse_status(status: &str) -> WorkflowStatus {
    serde_json::from_value(json!(status)).unwrap_or(WorkflowStatus::Unknown)
}

fn stopped_at(event: &WebhookEvent) -> Option<DateTime<Utc>> {
    event.raw()["workflow"]["stopped_at"]
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|at| at.with_timezone(&Utc))
}

/// The token the trigger used, from the action it keeps for retries (schedule and chain
/// records); others read with the default token.
fn token_of(record: &TriggerRecord) -> Option<String> {
    let action = record.detail.get("retry")?.get("action")?;
    serde_json::from_value::<Action>(action.clone())
        .ok()
        .map(|action| action.target().token.clone())
}

struct Hint {
    text: String,
    detail: serde_json::Value,
}

/// Why a workflow ends `unauthorized`, and whose permissions decide it: restricted
/// contexts are checked against the user of the token that started the pipeline.
async fn unauthorized_hint(receiver: &Receiver, token: &str, workflow: &str) -> Hint {
    let user = match receiver.engine.actions().circleci().me(token).await {
        Ok(user) => Some(user.login),
        Err(error) => {
            log_me_failure(&error);
            None
        }
    };
    let who = match &user {
        Some(login) => format!("the user `{login}` of token `{token}`"),
        None => format!("the user of token `{token}`"),
    };
    Hint {
        text: format!(
            "workflow `{workflow}` was unauthorized: it probably uses a restricted context that {who} \
             may not use; add that user to the context's security group or name another token on the target"
        ),
        detail: json!({
            "workflow": workflow,
            "token": token,
            "user": user,
            "hint": "restricted contexts are checked against the user of the token that started the pipeline",
        }),
    }
}

fn log_me_failure(error: &CircleCiError) {
    tracing::warn!(%error, "could not read the token's user for the unauthorized hint");
}

fn set_detail(detail: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    if !detail.is_object() {
        *detail = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(map) = detail.as_object_mut() {
        map.insert(key.to_owned(), value);
    }
}
