//! When-rules: each matched action becomes one claimed trigger through the [`Engine`].
//!
//! The claim key is `webhook#<event id>#<rule>#<action index>`, so a redelivered event
//! replays what was decided and one action's retryable failure never re-runs another.
//! The fingerprint is derived from the key alone: what an action resolves to may change
//! between deliveries (the origin's pipelines are read from history), and that must not
//! turn a redelivery into a conflict.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ActionReport, Disposition, Receiver, key_text};
use crate::actions::{Action, ActionError, Target, WorkflowSelector};
use crate::config::chain::ChainAction;
use crate::config::{CircleCiSettings, TargetSpec};
use crate::engine::{Engine, Fired, TriggerIntent};
use crate::store::{
    ClaimKey, ClaimKind, EventNote, Fingerprint, PauseFlag, PauseScope, RecordDetail, SourceKind,
    StoreError, TriggerId, TriggerRecord, TriggerSource, TriggerStatus, Upstream,
};
use crate::triggers::chained::rules::{ActionPlan, ActionRequest, MatchedAction, SelectionRequest};
use crate::triggers::chained::webhook::WebhookEvent;

/// Pause flags that apply to chain rules: `all` and `chain:<rule>`.
#[derive(Debug, Default)]
pub(super) struct Paused {
    all: Option<PauseFlag>,
    rules: BTreeMap<String, PauseFlag>,
}

impl Paused {
    #[cfg(test)]
    pub(super) fn for_tests(all: Option<PauseFlag>, rules: Vec<PauseFlag>) -> Self {
        Self {
            all,
            rules: rules
                .into_iter()
                .filter_map(|flag| match &flag.scope {
                    PauseScope::Chain(rule) => Some((rule.clone(), flag)),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Why `rule` is paused, if it is.
    pub(super) fn reason(&self, rule: &str) -> Option<String> {
        let flag = self.rules.get(rule).or(self.all.as_ref())?;
        let scope = if flag.scope == PauseScope::All {
            "all triggers are paused".to_owned()
        } else {
            format!("chain rule `{rule}` is paused")
        };
        Some(match &flag.reason {
            Some(reason) => format!("{scope}: {reason}"),
            None => scope,
        })
    }
}

/// Reads the pause flags once per delivery, and only when some rule reacts to the event.
pub(super) async fn paused_rules(
    receiver: &Receiver,
    event: &WebhookEvent,
) -> Result<Paused, StoreError> {
    let reacts = receiver.rules.evaluate(event).iter().any(|evaluation| {
        !matches!(
            evaluation.verdict,
            crate::triggers::chained::rules::Verdict::NotMatched(_)
        )
    });
    if !reacts {
        return Ok(Paused::default());
    }
    let mut paused = Paused::default();
    for flag in receiver.engine.store().pause_flags().await? {
        match &flag.scope {
            PauseScope::All => paused.all = Some(flag),
            PauseScope::Chain(rule) => {
                paused.rules.insert(rule.clone(), flag.clone());
            }
            PauseScope::Schedule(_) => {}
        }
    }
    Ok(paused)
}

/// Decides one matched action of a when-rule.
pub(super) async fn run_matched(
    receiver: &Receiver,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
    paused: &Paused,
    matched: MatchedAction,
) -> ActionReport {
    let planned = Planned {
        rule: &matched.rule,
        action_index: matched.action_index,
        key: webhook_key(event, &matched.rule, &matched.action_id),
        origin: upstream.map(|record| record.origin),
        correlation: None,
        detail: Box::new(event_detail(event, Some(matched.action_index))),
    };
    run_planned(receiver, event, upstream, paused, planned, matched.plan).await
}

/// One planned action and the claim it is decided under.
pub(super) struct Planned<'a> {
    pub rule: &'a str,
    pub action_index: usize,
    pub key: ClaimKey,
    /// The root trigger the record descends from; `None` makes it its own origin.
    pub origin: Option<TriggerId>,
    pub correlation: Option<String>,
    pub detail: Box<RecordDetail>,
}

/// Decides a planned action: records skipped / invalid / paused ones, performs ready ones.
pub(super) async fn run_planned(
    receiver: &Receiver,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
    paused: &Paused,
    planned: Planned<'_>,
    plan: ActionPlan,
) -> ActionReport {
    let row = |status, reason| Row {
        rule: planned.rule,
        action_index: Some(planned.action_index),
        key: planned.key.clone(),
        status,
        reason,
        origin: planned.origin,
        correlation: planned.correlation.clone(),
    };
    let request = match plan {
        ActionPlan::Ready(request) => request,
        ActionPlan::Skipped(reason) => {
            let row = row(TriggerStatus::Skipped, reason.to_string());
            return record_row(receiver, event, upstream, row).await;
        }
        ActionPlan::Invalid(error) => {
            let (status, reason) = if error.is_refusal() {
                (
                    TriggerStatus::Rejected,
                    format!("the event was refused: {error}"),
                )
            } else {
                let reason = format!("the rule cannot be applied to this event: {error}");
                (TriggerStatus::Failed, reason)
            };
            return record_row(receiver, event, upstream, row(status, reason)).await;
        }
    };
    if let Some(reason) = paused.reason(planned.rule) {
        let row = row(TriggerStatus::Skipped, reason);
        return record_row(receiver, event, upstream, row).await;
    }
    let action = match resolve(receiver, &request, upstream).await {
        Ok(action) => action,
        Err(Unresolved::Store(error)) => {
            return error_report(
                planned.rule,
                Some(planned.action_index),
                &planned.key,
                &error.into(),
            );
        }
        Err(Unresolved::Action(error)) => {
            let row = row(TriggerStatus::Failed, error.to_string());
            return record_row(receiver, event, upstream, row).await;
        }
    };
    let intent = TriggerIntent {
        fingerprint: fingerprint(&planned.key),
        key: planned.key.clone(),
        source: TriggerSource::new(SourceKind::Chain, planned.rule),
        origin: planned.origin,
        action,
        upstream: Some(upstream_of(event, upstream)),
        correlation: planned.correlation.clone(),
        detail: planned.detail,
    };
    fire(receiver, planned.rule, Some(planned.action_index), intent).await
}

/// Fires an intent and reports the outcome; a redelivery that finds a failed record due
/// for retry makes that retry now instead of waiting for the sweep.
pub(super) async fn fire(
    receiver: &Receiver,
    rule: &str,
    action_index: Option<usize>,
    intent: TriggerIntent,
) -> ActionReport {
    let key = intent.key.clone();
    let engine = &receiver.engine;
    match engine.fire(intent).await {
        Ok(Fired::Performed(record)) => record_report(
            engine,
            rule,
            action_index,
            &key,
            Disposition::Decided,
            &record,
        ),
        Ok(Fired::Replayed(record)) => {
            if Engine::is_due_for_retry(&record, engine.clock().now()) {
                match engine.retry(record.clone()).await {
                    Ok(Some(retried)) => {
                        return record_report(
                            engine,
                            rule,
                            action_index,
                            &key,
                            Disposition::Decided,
                            &retried,
                        );
                    }
                    Ok(None) => {}
                    Err(error) => return error_report(rule, action_index, &key, &error),
                }
            }
            record_report(
                engine,
                rule,
                action_index,
                &key,
                Disposition::Replayed,
                &record,
            )
        }
        Ok(Fired::InProgress { retry_after }) => ActionReport {
            rule: rule.to_owned(),
            action_index,
            key: key_text(&key),
            disposition: Disposition::InProgress,
            trigger_id: Some(Engine::record_id_for(&key)),
            status: None,
            reason: Some("another invocation is deciding this trigger".into()),
            redeliver_after: Some(retry_after),
        },
        Ok(Fired::Conflict) => {
            tracing::error!(%key, "claim key already used by a different request");
            ActionReport {
                rule: rule.to_owned(),
                action_index,
                key: key_text(&key),
                disposition: Disposition::Conflict,
                trigger_id: None,
                status: None,
                reason: Some("the claim belongs to a different request".into()),
                redeliver_after: None,
            }
        }
        Err(error) => error_report(rule, action_index, &key, &error),
    }
}

/// Records a decision that performs nothing (skipped, rejected, failed before sending)
/// under the action's claim, so redeliveries replay it.
pub(super) async fn record_without_action(
    receiver: &Receiver,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
    matched: &MatchedAction,
    status: TriggerStatus,
    reason: String,
) -> ActionReport {
    let row = Row {
        rule: &matched.rule,
        action_index: Some(matched.action_index),
        key: webhook_key(event, &matched.rule, &matched.action_id),
        status,
        reason,
        origin: upstream.map(|record| record.origin),
        correlation: None,
    };
    record_row(receiver, event, upstream, row).await
}

/// A history row that performs nothing.
pub(super) struct Row<'a> {
    pub rule: &'a str,
    /// The action the row stands for; a join's own rows (closed, expired, uncorrelated)
    /// have none and show the rule's first action's target.
    pub action_index: Option<usize>,
    pub key: ClaimKey,
    pub status: TriggerStatus,
    pub reason: String,
    pub origin: Option<TriggerId>,
    pub correlation: Option<String>,
}

/// Records `row` under its own claim (redeliveries replay it).
pub(super) async fn record_row(
    receiver: &Receiver,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
    row: Row<'_>,
) -> ActionReport {
    let Some(spec) = action_spec(receiver, row.rule, row.action_index.unwrap_or(0)) else {
        return missing_rule(row.rule, row.action_index, &row.key);
    };
    let action = match placeholder_action(spec, &receiver.circleci) {
        Ok(action) => action,
        Err(error) => {
            tracing::error!(rule = row.rule, %error, "cannot describe the action for history");
            return missing_rule(row.rule, row.action_index, &row.key);
        }
    };
    let intent = TriggerIntent {
        fingerprint: fingerprint(&row.key),
        key: row.key,
        source: TriggerSource::new(SourceKind::Chain, row.rule),
        origin: row.origin,
        action,
        upstream: Some(upstream_of(event, upstream)),
        correlation: row.correlation,
        detail: Box::new(event_detail(event, row.action_index)),
    };
    decide(
        receiver,
        row.rule,
        row.action_index,
        intent,
        row.status,
        row.reason,
    )
    .await
}

/// [`Engine::decide_without_action`] with the outcome reported.
pub(super) async fn decide(
    receiver: &Receiver,
    rule: &str,
    action_index: Option<usize>,
    intent: TriggerIntent,
    status: TriggerStatus,
    reason: String,
) -> ActionReport {
    let key = intent.key.clone();
    let engine = &receiver.engine;
    match engine.decide_without_action(intent, status, reason).await {
        Ok(Fired::Performed(record)) => record_report(
            engine,
            rule,
            action_index,
            &key,
            Disposition::Decided,
            &record,
        ),
        Ok(Fired::Replayed(record)) => record_report(
            engine,
            rule,
            action_index,
            &key,
            Disposition::Replayed,
            &record,
        ),
        Ok(Fired::InProgress { retry_after }) => ActionReport {
            rule: rule.to_owned(),
            action_index,
            key: key_text(&key),
            disposition: Disposition::InProgress,
            trigger_id: Some(Engine::record_id_for(&key)),
            status: None,
            reason: None,
            redeliver_after: Some(retry_after),
        },
        Ok(Fired::Conflict) => ActionReport {
            rule: rule.to_owned(),
            action_index,
            key: key_text(&key),
            disposition: Disposition::Conflict,
            trigger_id: None,
            status: None,
            reason: Some("the claim belongs to a different request".into()),
            redeliver_after: None,
        },
        Err(error) => error_report(rule, action_index, &key, &error),
    }
}

fn record_report(
    engine: &Engine,
    rule: &str,
    action_index: Option<usize>,
    key: &ClaimKey,
    disposition: Disposition,
    record: &TriggerRecord,
) -> ActionReport {
    // A failure the sweep will retry is one a redelivery may fix as well.
    let redeliver_after = match (record.status, record.retry_at) {
        (TriggerStatus::Failed, Some(at)) => Some(until(engine.clock().now(), at)),
        _ => None,
    };
    ActionReport {
        rule: rule.to_owned(),
        action_index,
        key: key_text(key),
        disposition,
        trigger_id: Some(record.id),
        status: Some(record.status),
        reason: record.reason.clone(),
        redeliver_after,
    }
}

pub(super) fn error_report(
    rule: &str,
    action_index: Option<usize>,
    key: &ClaimKey,
    error: &crate::engine::EngineError,
) -> ActionReport {
    tracing::warn!(%key, %error, retryable = error.is_retryable(), "trigger not decided");
    ActionReport {
        rule: rule.to_owned(),
        action_index,
        key: key_text(key),
        disposition: Disposition::Error,
        trigger_id: None,
        status: None,
        reason: Some(error.to_string()),
        redeliver_after: error.is_retryable().then_some(Duration::from_secs(30)),
    }
}

fn missing_rule(rule: &str, action_index: Option<usize>, key: &ClaimKey) -> ActionReport {
    ActionReport {
        rule: rule.to_owned(),
        action_index,
        key: key_text(key),
        disposition: Disposition::Error,
        trigger_id: None,
        status: None,
        reason: Some("the rule's action could not be described for history".into()),
        redeliver_after: None,
    }
}

fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now)
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// One action of one rule for one event: `webhook#<event>#<rule>#<action id>` (the id is
/// stable across reloads, see [`crate::triggers::chained::rules::action_ids`]).
pub(super) fn webhook_key(event: &WebhookEvent, rule: &str, action_id: &str) -> ClaimKey {
    ClaimKey::new(ClaimKind::Webhook, &[event.id(), rule, action_id])
}

pub(super) fn fingerprint(key: &ClaimKey) -> Fingerprint {
    Fingerprint::of(key.as_str().as_bytes())
}

/// What history keeps about the event that caused a trigger.
pub(super) fn event_detail(event: &WebhookEvent, action_index: Option<usize>) -> RecordDetail {
    RecordDetail {
        event: Some(EventNote {
            id: event.id().to_owned(),
            kind: event.kind().as_str().to_owned(),
            happened_at: event
                .happened_at()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            status: event.status().as_str().to_owned(),
            job: event.job().map(|job| job.name.clone()),
        }),
        action_index,
        ..RecordDetail::default()
    }
}

/// The upstream pipeline as a chained record keeps it.
pub(super) fn upstream_of(event: &WebhookEvent, record: Option<&TriggerRecord>) -> Upstream {
    Upstream {
        project: event.project_slug().canonical(),
        pipeline_id: event.pipeline().id.clone(),
        workflow_id: event.workflow().map(|w| w.id.clone()),
        workflow_name: event.workflow().map(|w| w.name.clone()),
        revision: event.revision().map(str::to_owned),
        event_id: Some(event.id().to_owned()),
        trigger_id: record.map(|r| r.id),
    }
}

pub(super) fn action_spec<'a>(
    receiver: &'a Receiver,
    rule: &str,
    index: usize,
) -> Option<&'a ChainAction> {
    receiver
        .rules
        .specs()
        .find(|spec| spec.name == rule)
        .and_then(|spec| spec.then.get(index))
}

pub(super) enum Unresolved {
    Store(StoreError),
    Action(ActionError),
}

/// The action a planned request becomes; selection by origin reads history.
pub(super) async fn resolve(
    receiver: &Receiver,
    request: &ActionRequest,
    upstream: Option<&TriggerRecord>,
) -> Result<Action, Unresolved> {
    let origin_pipelines = match (selection_of(request), upstream) {
        (Some(SelectionRequest::Origin { .. }), Some(record)) => {
            let project =
                request_project(request, &receiver.circleci).map_err(Unresolved::Action)?;
            crate::store::origin_pipelines(
                receiver.engine.store().as_ref(),
                record.origin,
                &project,
            )
            .await
            .map_err(Unresolved::Store)?
        }
        // Not started by one of our triggers: nothing shares its origin (a recorded
        // "no match" failure, never a guess).
        _ => Vec::new(),
    };
    action_for(request, &receiver.circleci, &origin_pipelines).map_err(Unresolved::Action)
}

/// The canonical project a request acts on.
fn request_project(
    request: &ActionRequest,
    circleci: &CircleCiSettings,
) -> Result<String, ActionError> {
    Ok(Target::resolve(request_target(request), circleci)?
        .project
        .canonical())
}

/// The target a request starts a pipeline on, or whose workflow it acts on.
fn request_target(request: &ActionRequest) -> &TargetSpec {
    match request {
        ActionRequest::Pipeline(spec) => spec,
        ActionRequest::Existing { existing, .. } => &existing.target,
    }
}

/// How a request finds the existing workflow it acts on (`None` for a pipeline).
pub fn selection_of(request: &ActionRequest) -> Option<&SelectionRequest> {
    match request {
        ActionRequest::Pipeline(_) => None,
        ActionRequest::Existing { existing, .. } => Some(&existing.select),
    }
}

/// The [`Action`] a planned chain request becomes. `origin_pipelines` are the pipelines
/// recorded for the upstream's origin trigger in the target project (used when the request
/// selects by origin).
pub fn action_for(
    request: &ActionRequest,
    circleci: &CircleCiSettings,
    origin_pipelines: &[Uuid],
) -> Result<Action, ActionError> {
    let target = Target::resolve(request_target(request), circleci)?;
    let (select, workflow) = match request {
        ActionRequest::Pipeline(_) => (WorkflowSelector::Latest, None),
        ActionRequest::Existing { existing, .. } => (
            match &existing.select {
                SelectionRequest::Origin { .. } => {
                    WorkflowSelector::Pipelines(origin_pipelines.to_vec())
                }
                SelectionRequest::Revision { revision } => {
                    WorkflowSelector::Revision(revision.clone())
                }
                SelectionRequest::Latest => WorkflowSelector::Latest,
            },
            existing.workflow.clone(),
        ),
    };
    Ok(Action::from_spec(request.spec(), target, select, workflow))
}

/// An action that only names the rule's project, kind and job: what history shows for a
/// decision that sends nothing (its templates were not, or could not be, rendered).
pub(super) fn placeholder_action(
    spec: &ChainAction,
    circleci: &CircleCiSettings,
) -> Result<Action, ActionError> {
    let action = spec
        .action_fields()
        .spec()
        .map_err(|invalid| ActionError::InvalidAction {
            reason: invalid.to_string(),
        })?;
    let target = Target::resolve(
        &TargetSpec {
            project: spec.project.clone(),
            token: spec.token.clone(),
            ..TargetSpec::default()
        },
        circleci,
    )?;
    Ok(Action::from_spec(
        &action,
        target,
        WorkflowSelector::Pipelines(Vec::new()),
        None,
    ))
}
