//! Fan-in (`after = [...]`): each matching event is one upstream's arrival at a join.
//!
//! - The join is keyed `join#<rule>#<correlate>:<value>`; for `origin` the value is the
//!   root trigger of the upstream pipeline (looked up by pipeline id in history).
//! - The store keeps one **generation** per window: the first arrival opens it, and an
//!   arrival after the window has ended opens the next one. So a `branch = main` join fires
//!   again the next day, while a late arrival inside a completed window does nothing.
//! - A generation fires once: every action is claimed under
//!   `join#<rule>#<correlation>#g<generation>#<action index>`. Every arrival that finds the
//!   generation complete goes through the same claims, so a crash between completing the
//!   join and firing is recovered by the next arrival (or redelivery), and a late or
//!   duplicated arrival only replays.
//! - A failed upstream closes the generation; that is recorded once (a `skipped` row under
//!   `…#g<generation>#closed`). A window that ended without completing is recorded when
//!   the next arrival for the same key notices it (`…#g<generation>#expired`).

use super::dispatch::{self, Paused, Planned, Row};
use super::{ActionReport, JoinProgress, JoinReport, Receiver, ReceiverError};
use crate::config::chain::UpstreamMatcher;
use crate::store::{
    ClaimKey, ClaimKind, JoinArrival as StoredArrival, JoinArrivalNote, JoinNote, JoinOutcome,
    JoinState, JoinStatus, TriggerId, TriggerRecord, TriggerStatus,
};
use crate::triggers::chained::rules::{CorrelationSource, JoinArrival, JoinSpec, UpstreamOutcome};
use crate::triggers::chained::webhook::WebhookEvent;

/// The name an upstream of a fan-in rule has in join state: `after[<index>]`.
pub fn upstream_name(index: usize) -> String {
    format!("after[{index}]")
}

/// The join key for one correlation value.
pub fn join_key(join: &JoinSpec, value: &str) -> ClaimKey {
    ClaimKey::new(
        ClaimKind::Join,
        &[&join.rule, &correlation_text(join, value)],
    )
}

fn correlation_text(join: &JoinSpec, value: &str) -> String {
    format!("{}:{value}", join.correlate.as_str())
}

/// One arrival: stored in the join, and the rule fired when it completes the join.
pub(super) async fn arrive(
    receiver: &Receiver,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
    paused: &Paused,
    arrival: JoinArrival,
) -> Result<(JoinReport, Vec<ActionReport>), ReceiverError> {
    let name = upstream_name(arrival.upstream_index);
    let mut report = JoinReport {
        rule: arrival.rule.clone(),
        upstream: name.clone(),
        correlation: None,
        generation: None,
        state: JoinProgress::Uncorrelated,
        missing: Vec::new(),
    };
    let Some(join) = receiver.rules.join(&arrival.rule) else {
        tracing::error!(rule = %arrival.rule, "fan-in arrival for a rule without a join");
        return Ok((report, Vec::new()));
    };
    let value = match correlation_value(join, &arrival, upstream) {
        Ok(value) => value,
        Err(reason) => {
            let row = Row {
                rule: &arrival.rule,
                action_index: None,
                key: arrival_key(event, &arrival.rule, &name),
                status: TriggerStatus::Skipped,
                reason: format!(
                    "{}: {reason}",
                    describe_upstream(receiver, &arrival.rule, arrival.upstream_index)
                ),
                origin: upstream.map(|record| record.origin),
                correlation: None,
            };
            let recorded = dispatch::record_row(receiver, event, upstream, row).await;
            return Ok((report, vec![recorded]));
        }
    };
    let correlation = correlation_text(join, &value);
    report.correlation = Some(correlation.clone());
    let key = join_key(join, &value);
    let store = receiver.engine.store();
    let mut rows = Vec::new();

    // A generation whose window ended without completing is replaced by the arrival below;
    // record that it expired first (once, under its own claim).
    if let Some(previous) = store.join_state(&key).await?
        && previous.status == JoinStatus::Open
        && previous.window_ends_at <= receiver.engine.clock().now()
    {
        let reason = expired_reason(receiver, join, &previous);
        let row = join_row(
            &arrival.rule,
            &correlation,
            &previous,
            "expired",
            reason,
            join_origin(join, &value, upstream),
        );
        rows.push(dispatch::record_row(receiver, event, upstream, row).await);
    }

    let stored = StoredArrival {
        key: key.clone(),
        expected: (0..join.upstreams).map(upstream_name).collect(),
        upstream: name.clone(),
        succeeded: arrival.outcome == UpstreamOutcome::Succeeded,
        pipeline_id: Some(arrival.pipeline_id.clone()),
        trigger_id: upstream.map(|record| record.id),
        window: join.window.to_std().unwrap_or_default(),
    };
    let outcome = store.join_arrive(&stored).await?;
    let state = outcome.state().clone();
    report.generation = Some(state.generation);
    report.missing = state.missing().into_iter().collect();
    match outcome {
        JoinOutcome::Waiting { duplicate, .. } => {
            report.state = if duplicate {
                JoinProgress::Duplicate
            } else {
                JoinProgress::Waiting
            };
        }
        JoinOutcome::Complete { fired_now, .. } => {
            report.state = JoinProgress::Complete;
            if fired_now {
                tracing::info!(rule = %arrival.rule, %correlation, generation = state.generation, "join complete: firing");
            }
            // Late and duplicate arrivals go through the same claims: they replay, or they
            // finish a firing that an earlier invocation did not get to.
            rows.extend(fire(receiver, event, upstream, paused, join, &value, &state).await);
        }
        JoinOutcome::Closed { closed_now, .. } => {
            report.state = JoinProgress::Closed;
            let closed_by = state.closed_by.clone().unwrap_or_else(|| name.clone());
            let how = match (&arrival.outcome, closed_now) {
                (UpstreamOutcome::Failed { status }, true) => format!("ended `{status}`"),
                _ => "did not succeed".to_owned(),
            };
            let index = upstream_index(&closed_by).unwrap_or(arrival.upstream_index);
            let reason = format!(
                "the join closed without firing: {} {how} (generation {} of {correlation})",
                describe_upstream(receiver, &arrival.rule, index),
                state.generation
            );
            let row = join_row(
                &arrival.rule,
                &correlation,
                &state,
                "closed",
                reason,
                join_origin(join, &value, upstream),
            );
            rows.push(dispatch::record_row(receiver, event, upstream, row).await);
        }
    }
    Ok((report, rows))
}

/// Records a `rejected` row for an arrival of a stale event (join state is not touched).
pub(super) async fn reject_arrival(
    receiver: &Receiver,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
    arrival: &JoinArrival,
    reason: &str,
) -> Vec<ActionReport> {
    let name = upstream_name(arrival.upstream_index);
    let row = Row {
        rule: &arrival.rule,
        action_index: None,
        key: arrival_key(event, &arrival.rule, &name),
        status: TriggerStatus::Rejected,
        reason: format!(
            "{} not counted: {reason}",
            describe_upstream(receiver, &arrival.rule, arrival.upstream_index)
        ),
        origin: upstream.map(|record| record.origin),
        correlation: None,
    };
    vec![dispatch::record_row(receiver, event, upstream, row).await]
}

/// Fires every action of the rule for a complete generation.
async fn fire(
    receiver: &Receiver,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
    paused: &Paused,
    join: &JoinSpec,
    value: &str,
    state: &JoinState,
) -> Vec<ActionReport> {
    let Some(actions) = receiver.rules.plan_rule(&join.rule, event) else {
        return Vec::new();
    };
    let correlation = correlation_text(join, value);
    let origin = join_origin(join, value, upstream);
    let arrived: Vec<_> = state
        .arrived
        .iter()
        .map(|a| JoinArrivalNote {
            upstream: a.upstream.clone(),
            pipeline_id: a.pipeline_id.clone(),
            trigger_id: a.trigger_id,
        })
        .collect();
    let mut reports = Vec::new();
    for matched in actions {
        let mut detail = dispatch::event_detail(event, Some(matched.action_index));
        detail.join = Some(JoinNote {
            key: state.key.as_str().to_owned(),
            generation: state.generation,
            arrived: arrived.clone(),
        });
        let planned = Planned {
            rule: &join.rule,
            action_index: matched.action_index,
            key: ClaimKey::new(
                ClaimKind::Join,
                &[
                    &join.rule,
                    &correlation,
                    &format!("g{}", state.generation),
                    &matched.action_id,
                ],
            ),
            origin,
            correlation: Some(correlation.clone()),
            detail: Box::new(detail),
        };
        reports.push(
            dispatch::run_planned(receiver, event, upstream, paused, planned, matched.plan).await,
        );
    }
    reports
}

/// The correlation value of an arrival, or why it has none.
fn correlation_value(
    join: &JoinSpec,
    arrival: &JoinArrival,
    upstream: Option<&TriggerRecord>,
) -> Result<String, String> {
    match &arrival.correlation {
        Some(CorrelationSource::Value(value)) => Ok(value.clone()),
        Some(CorrelationSource::Origin { upstream_pipeline_id }) => upstream
            .map(|record| record.origin.to_string())
            .ok_or_else(|| {
                format!(
                    "pipeline {upstream_pipeline_id} was not started by a trigger of this service, so it has no origin to join on"
                )
            }),
        None => Err(format!(
            "the event has no {} to join on",
            join.correlate.as_str()
        )),
    }
}

/// The origin of what a join fires: the shared root trigger for `origin` joins, else the
/// completing upstream's origin when one of our triggers started it.
fn join_origin(
    join: &JoinSpec,
    value: &str,
    upstream: Option<&TriggerRecord>,
) -> Option<TriggerId> {
    match join.correlate {
        crate::config::chain::Correlation::Origin => value.parse().ok(),
        _ => upstream.map(|record| record.origin),
    }
}

fn join_row<'a>(
    rule: &'a str,
    correlation: &str,
    state: &JoinState,
    what: &str,
    reason: String,
    origin: Option<TriggerId>,
) -> Row<'a> {
    Row {
        rule,
        action_index: None,
        key: ClaimKey::new(
            ClaimKind::Join,
            &[rule, correlation, &format!("g{}", state.generation), what],
        ),
        status: TriggerStatus::Skipped,
        reason,
        origin,
        correlation: Some(correlation.to_owned()),
    }
}

fn expired_reason(receiver: &Receiver, join: &JoinSpec, state: &JoinState) -> String {
    let missing: Vec<String> = state
        .missing()
        .iter()
        .map(|name| match upstream_index(name) {
            Some(index) => describe_upstream(receiver, &join.rule, index),
            None => name.clone(),
        })
        .collect();
    format!(
        "the join expired without firing at {}: {} did not succeed within {} (generation {})",
        state
            .window_ends_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        missing.join(", "),
        humantime(join.window),
        state.generation
    )
}

pub(crate) fn humantime(window: chrono::Duration) -> String {
    let minutes = window.num_minutes();
    if minutes % 60 == 0 {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

fn upstream_index(name: &str) -> Option<usize> {
    name.strip_prefix("after[")?.strip_suffix(']')?.parse().ok()
}

/// The claim key of a row about one arrival (uncorrelated or rejected).
fn arrival_key(event: &WebhookEvent, rule: &str, upstream: &str) -> ClaimKey {
    ClaimKey::new(ClaimKind::Webhook, &[event.id(), rule, upstream])
}

/// `after[1] (gh/acme/web, workflow build)`, for reasons a reader can act on.
fn describe_upstream(receiver: &Receiver, rule: &str, index: usize) -> String {
    let matcher: Option<&UpstreamMatcher> = receiver
        .rules
        .specs()
        .find(|spec| spec.name == rule)
        .and_then(|spec| spec.after.get(index));
    match matcher {
        None => upstream_name(index),
        Some(matcher) => {
            let projects: Vec<&str> = matcher.project.iter().map(String::as_str).collect();
            let mut text = format!("{} ({}", upstream_name(index), projects.join(" | "));
            if let Some(workflows) = &matcher.workflow {
                let names: Vec<&str> = workflows.iter().map(String::as_str).collect();
                text.push_str(&format!(", workflow {}", names.join(" | ")));
            }
            if let Some(jobs) = &matcher.job {
                let names: Vec<&str> = jobs.iter().map(String::as_str).collect();
                text.push_str(&format!(", job {}", names.join(" | ")));
            }
            text.push(')');
            text
        }
    }
}
