//! The trust rule for chains: a signed webhook proves that CircleCI sent the event, not that
//! the work it reports is trusted.
//!
//! Anyone who can push a branch of the upstream project (or open a fork PR where fork builds
//! run) can make a matching workflow succeed. So a rule with an action that
//!
//! - acts on existing work (`approve`, `rerun`, `cancel`), or
//! - carries values from the event downstream (a templated `branch`, `tag`, `workflow`,
//!   `branch_map.to` or string parameter)
//!
//! must **pin its upstream** in every upstream matcher (`when`, or each `after` entry):
//!
//! - `branch` / `tag`: exact names, or allowlist patterns that start with literal text
//!   (`main`, `release/*`, `v*`). A pattern that starts with a wildcard (`*`, `**/x`,
//!   `{a,b}`) pins nothing: list the names instead (`["a", "b"]`).
//! - or `upstream = "ours"`: only pipelines this service started count. The receiver looks
//!   the pipeline up by id with a consistent read and refuses any other (a `rejected` row).
//!
//! A fan-in with `correlate = "origin"` is pinned by construction: only a pipeline this
//! service started has an origin to join on. The opt-out is
//! `dangerously_trust_any_upstream = true` on the rule.
//!
//! `check` refuses an unpinned rule (file:line and the reason); the receiver applies the
//! same functions to every event it acts on, so a file that never went through `check`
//! cannot act for an unpinned upstream either.

use std::fmt;

use crate::chain::{ChainSpec, Correlation, Patterns, UpstreamMatcher, UpstreamOrigin};
use crate::error::Problems;
use crate::path::FieldPath;
use crate::target::{ActionKind, ParameterValue};
use crate::template::Template;

/// The rule-level field that opts out of the trust rule.
pub const OPT_OUT: &str = "dangerously_trust_any_upstream";

/// Why an action needs a pinned upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// `approve`, `rerun` or `cancel`.
    ActsOnExistingWork(ActionKind),
    /// A field templated with values from the event (`parameters.sha`, `branch`, ...).
    CarriesEventValues { field: String },
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exposure::ActsOnExistingWork(kind) => {
                write!(f, "action = \"{}\" acts on existing work", kind.as_str())
            }
            Exposure::CarriesEventValues { field } => {
                write!(f, "`{field}` carries values from the event downstream")
            }
        }
    }
}

/// Why `action` needs a pinned upstream, if it does.
pub fn exposure(action: &crate::chain::ChainAction) -> Option<Exposure> {
    match action.action {
        ActionKind::Approve | ActionKind::Rerun | ActionKind::Cancel => {
            Some(Exposure::ActsOnExistingWork(action.action))
        }
        ActionKind::Pipeline => {
            templated_field(action).map(|field| Exposure::CarriesEventValues { field })
        }
    }
}

/// The first field of a pipeline action whose value comes (partly) from the event.
fn templated_field(action: &crate::chain::ChainAction) -> Option<String> {
    // Text that does not parse is reported by `check`; count it as templated meanwhile.
    let templated = |text: &str| Template::parse(text).map_or(true, |t| !t.is_literal());
    for (field, value) in [
        ("branch", &action.branch),
        ("tag", &action.tag),
        ("workflow", &action.workflow),
    ] {
        if value.as_deref().is_some_and(templated) {
            return Some(field.to_owned());
        }
    }
    if let Some(index) = action.branch_map.iter().position(|m| templated(&m.to)) {
        return Some(format!("branch_map[{index}].to"));
    }
    action
        .parameters
        .iter()
        .find_map(|(name, value)| match value {
            ParameterValue::String(text) if templated(text) => Some(format!("parameters.{name}")),
            _ => None,
        })
}

/// How an upstream matcher limits the pipelines it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// `upstream = "ours"`.
    Ours,
    /// `branch` or `tag`, every pattern an allowlist.
    Refs,
    /// Any branch or tag of the project, by anyone.
    Unpinned,
}

/// How `matcher` pins its upstream.
pub fn pin(matcher: &UpstreamMatcher) -> Pin {
    if matcher.upstream == Some(UpstreamOrigin::Ours) {
        return Pin::Ours;
    }
    let pins = |patterns: &Option<Patterns>| {
        patterns
            .as_ref()
            .is_some_and(|list| !list.is_empty() && list.iter().all(|p| pattern_pins(p)))
    };
    if pins(&matcher.branch) || pins(&matcher.tag) {
        Pin::Refs
    } else {
        Pin::Unpinned
    }
}

/// Whether a branch or tag pattern is an allowlist: exact text, or a glob whose text
/// before its first wildcard is not empty (`release/*` yes, `*` / `**` / `{a,b}` no).
pub fn pattern_pins(pattern: &str) -> bool {
    pattern
        .split(['*', '?', '[', '{', '\\'])
        .next()
        .is_some_and(|literal| !literal.is_empty())
}

/// Whether a rule's upstreams are pinned as a whole, regardless of its actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTrust {
    /// Every matcher pins (or a fan-in correlates on origin).
    Pinned,
    /// `dangerously_trust_any_upstream = true`.
    OptedOut,
    /// This matcher (`when` is 0, else the `after` index) accepts any branch by anyone.
    Unpinned { upstream_index: usize },
}

/// How `chain` pins its upstreams.
pub fn upstream_trust(chain: &ChainSpec) -> UpstreamTrust {
    if chain.dangerously_trust_any_upstream {
        return UpstreamTrust::OptedOut;
    }
    if chain.is_fan_in() && chain.correlate == Some(Correlation::Origin) {
        return UpstreamTrust::Pinned;
    }
    match chain
        .upstreams()
        .iter()
        .position(|matcher| pin(matcher) == Pin::Unpinned)
    {
        Some(upstream_index) => UpstreamTrust::Unpinned { upstream_index },
        None => UpstreamTrust::Pinned,
    }
}

/// Why action `action_index` of `chain` must not run for the events the rule accepts, if
/// it must not (an exposed action of an unpinned rule). The receiver refuses it with this
/// reason; `check` refuses the file.
pub fn unpinned_action(chain: &ChainSpec, action_index: usize) -> Option<String> {
    let exposure = chain.then.get(action_index).and_then(exposure)?;
    match upstream_trust(chain) {
        UpstreamTrust::Pinned | UpstreamTrust::OptedOut => None,
        UpstreamTrust::Unpinned { .. } => Some(format!(
            "rule `{}`: {exposure}, but the rule pins no upstream: any branch of the upstream \
             project, built by anyone who can push to it, would set it off",
            chain.name
        )),
    }
}

/// `check`'s side: an unpinned rule with an exposed action is refused at its matcher.
pub(crate) fn validate(chain: &ChainSpec, path: &FieldPath, problems: &mut Problems) {
    let UpstreamTrust::Unpinned { upstream_index } = upstream_trust(chain) else {
        return;
    };
    let Some((action_index, exposure)) = chain
        .then
        .iter()
        .enumerate()
        .find_map(|(index, action)| exposure(action).map(|e| (index, e)))
    else {
        return;
    };
    let matcher_path = if chain.is_fan_in() {
        path.key("after").index(upstream_index)
    } else {
        path.key("when")
    };
    let wildcard = chain
        .upstreams()
        .get(upstream_index)
        .is_some_and(|m| m.branch.is_some() || m.tag.is_some());
    let hint = if wildcard {
        " (a pattern that starts with a wildcard pins nothing)"
    } else {
        ""
    };
    problems.add(
        &matcher_path,
        format!(
            "then[{action_index}]: {exposure}, so this upstream must be pinned{hint}: anyone who can \
             push a branch of the upstream project (or open a fork PR that builds) could set it off. \
             Pin it with `branch` / `tag` (exact names or an allowlist such as \"release/*\") or \
             `upstream = \"ours\"` (only pipelines this service started); \
             `{OPT_OUT} = true` on the rule accepts the risk"
        ),
    );
}
