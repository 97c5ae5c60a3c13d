//! The closed loop: when a webhook reports a pipeline one of our triggers started (any
//! kind: schedule, chain, HTTP, CLI), the trigger record learns each workflow's outcome,
//! so history shows what every trigger led to.
//!
//! On `workflow-completed` the pipeline's workflows are read from CircleCI once: the
//! pipeline is final when every workflow is (a pipeline can have several, and webhooks can
//! arrive in any order). The event is authoritative for its own workflow, and a final
//! status recorded earlier is never replaced by a non-final one read from a lagging list.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ClosedLoopReport, Receiver, ReceiverError};
use crate::circleci::{CircleCiError, WorkflowStatus};
use crate::config::chain::EventKind;
use crate::store::{TriggerRecord, UnauthorizedHint, WorkflowOutcome, modify_record};
use crate::triggers::chained::webhook::WebhookEvent;
use crate::triggers::outcome::{WorkflowReport, outcome_of, record_workflows, status_of};

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
    let token = record
        .detail
        .token()
        .map_or_else(|| receiver.circleci.token.clone(), str::to_owned);
    let circleci = receiver.engine.actions().circleci();
    let listed = match event.pipeline().id.parse::<Uuid>() {
        Ok(pipeline_id) => match circleci.list_pipeline_workflows(&token, pipeline_id).await {
            Ok(listed) => Some(listed.iter().map(outcome_of).collect()),
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
    let hint = if status_of(&status) == WorkflowStatus::Unauthorized {
        Some(unauthorized_hint(receiver, &token, &workflow.name).await)
    } else {
        None
    };
    let report = WorkflowReport {
        listed,
        reported: Some(reported.clone()),
        errored: false,
    };
    let updated = modify_record(receiver.engine.store().as_ref(), record.id, |stored| {
        record_workflows(stored, &report);
        if let Some(hint) = &hint {
            stored.reason = Some(match stored.reason.as_deref() {
                Some(existing) if !existing.contains(&hint.text) => {
                    format!("{existing}; {}", hint.text)
                }
                Some(existing) => existing.to_owned(),
                None => hint.text.clone(),
            });
            stored.detail.unauthorized = Some(hint.detail.clone());
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

fn stopped_at(event: &WebhookEvent) -> Option<DateTime<Utc>> {
    event.raw()["workflow"]["stopped_at"]
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|at| at.with_timezone(&Utc))
}

struct Hint {
    text: String,
    detail: UnauthorizedHint,
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
        detail: UnauthorizedHint {
            workflow: workflow.to_owned(),
            token: token.to_owned(),
            user,
            hint: "restricted contexts are checked against the user of the token that started the pipeline".to_owned(),
        },
    }
}

fn log_me_failure(error: &CircleCiError) {
    tracing::warn!(%error, "could not read the token's user for the unauthorized hint");
}
