//! The trust rule at run time (the rule itself: `triggers_config::trust`).
//!
//! A signed delivery proves CircleCI sent it, not that the pipeline behind it is trusted.
//! Before a matched action runs, or an arrival counts towards a fan-in join:
//!
//! - a matcher with `upstream = "ours"` accepts only a pipeline this service started: the
//!   record found by pipeline id (`TriggerStore::find_by_pipeline`, a consistent read of the
//!   `PIPELINE#<id>` item on DynamoDB, one transaction on SQLite; never a GSI) must exist;
//! - an action that acts on existing work or carries event values needs a pinned rule
//!   (`check` refuses unpinned rules; this repeats it for a file that never went through
//!   `check`).
//!
//! A refusal sends nothing and is recorded as a `rejected` row under the action's claim (so
//! a redelivery replays it).

use super::Receiver;
use crate::config::chain::{ChainSpec, UpstreamMatcher, UpstreamOrigin};
use crate::config::trust;
use crate::store::TriggerRecord;
use crate::triggers::chained::rules::JoinArrival;
use crate::triggers::chained::webhook::WebhookEvent;

/// Why action `action_index` of the when-rule `rule` must not act on `event`, if so.
pub(super) fn action_refusal(
    receiver: &Receiver,
    rule: &str,
    action_index: usize,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
) -> Option<String> {
    let spec = spec(receiver, rule)?;
    let matcher = spec.when.as_ref()?;
    not_ours(spec, matcher, event, upstream).or_else(|| trust::unpinned_action(spec, action_index))
}

/// Why `arrival` must not count towards its fan-in join, if so.
pub(super) fn arrival_refusal(
    receiver: &Receiver,
    arrival: &JoinArrival,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
) -> Option<String> {
    let spec = spec(receiver, &arrival.rule)?;
    let matcher = spec.after.get(arrival.upstream_index)?;
    not_ours(spec, matcher, event, upstream)
        .or_else(|| (0..spec.then.len()).find_map(|index| trust::unpinned_action(spec, index)))
}

fn spec<'a>(receiver: &'a Receiver, rule: &str) -> Option<&'a ChainSpec> {
    receiver.rules.specs().find(|spec| spec.name == rule)
}

/// `upstream = "ours"` and the reported pipeline is not one this service started.
fn not_ours(
    spec: &ChainSpec,
    matcher: &UpstreamMatcher,
    event: &WebhookEvent,
    upstream: Option<&TriggerRecord>,
) -> Option<String> {
    let refused = matcher.upstream == Some(UpstreamOrigin::Ours) && upstream.is_none();
    refused.then(|| {
        tracing::warn!(
            rule = %spec.name,
            pipeline_id = %event.pipeline().id,
            "upstream pipeline not started by this service: refused"
        );
        format!(
            "rule `{}` accepts only pipelines this service started (upstream = \"ours\"), \
             and pipeline {} of {} is not one of them",
            spec.name,
            event.pipeline().id,
            event.project_slug().canonical()
        )
    })
}
