//! Chain rules applied to a webhook event: which rules match, and what each action asks for.
//!
//! Pure: no HTTP, no store. The receiver (1) calls [`ChainRules::evaluate`] (or
//! [`ChainRules::matching`]) for the verified event, (2) claims each [`MatchedAction`] under
//! [`MatchedAction::dedupe_key`] and executes its [`ActionPlan`], recording skipped and invalid
//! plans too, and (3) feeds each [`JoinArrival`] to the join store, deciding with
//! [`JoinSpec::decide`] and, once complete, asks [`ChainRules::plan_rule`] for the actions.
//! `explain` prints [`ChainRules::evaluate`] with its [`Mismatch`] reasons.

pub mod join;
mod plan;

#[cfg(test)]
mod tests;

use std::fmt;

use sha2::{Digest, Sha256};
use triggers_config::chain::{ChainAction, ChainSpec, CompiledMatcher, EventKind, filter_accepts};
use triggers_config::{ActionKind, TriggersFile};

use crate::triggers::chained::webhook::WebhookEvent;

pub use join::{
    Arrival, CorrelationSource, JoinArrival, JoinClosed, JoinDecision, JoinSpec, UpstreamOutcome,
};
pub use plan::{
    ActionPlan, ActionRequest, ExistingWorkflow, PlanError, SelectionRequest, SkipReason,
};

/// One action of one rule, planned for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedAction {
    pub rule: String,
    /// Position in the rule's `then` list (for people: reports and history).
    pub action_index: usize,
    /// What names the action in claim keys: see [`action_ids`].
    pub action_id: String,
    pub kind: ActionKind,
    pub plan: ActionPlan,
}

impl MatchedAction {
    /// The claim key that makes this action happen once per event, however often the
    /// event is delivered: `<event id>#<rule>#<action id>`.
    pub fn dedupe_key(&self, event_id: &str) -> String {
        format!("{event_id}#{}#{}", self.rule, self.action_id)
    }
}

/// Stable names for a rule's actions: a digest of what each says (its fields as written), so
/// a claim follows its action when others are inserted, removed or reordered around it and
/// a redelivery after a reload neither repeats a performed action nor skips a new one. An
/// action written twice in one rule gets `#2`, `#3`… by occurrence. Editing an action makes
/// it a new one (a redelivery performs the edited action).
pub fn action_ids(actions: &[ChainAction]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    actions
        .iter()
        .map(|action| {
            // Field order is the declaration order and parameters are a BTreeMap, so the
            // text is the same for the same action on every build.
            let text = serde_json::to_vec(action).unwrap_or_default();
            let digest = hex::encode(&Sha256::digest(&text)[..8]);
            let id = format!("a-{digest}");
            let occurrence = seen.iter().filter(|earlier| **earlier == id).count();
            seen.push(id.clone());
            match occurrence {
                0 => id,
                n => format!("{id}#{}", n + 1),
            }
        })
        .collect()
}

/// Why an upstream matcher did not accept an event (for `explain` and debug logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    EventType {
        expected: EventKind,
        actual: EventKind,
    },
    Project {
        actual: String,
    },
    Workflow {
        actual: Option<String>,
    },
    Job {
        actual: Option<String>,
    },
    Branch {
        actual: Option<String>,
    },
    Tag {
        actual: Option<String>,
    },
    Status {
        actual: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |value: &Option<String>| {
            value
                .as_deref()
                .map_or("(none)".to_owned(), |v| format!("`{v}`"))
        };
        match self {
            Mismatch::EventType { expected, actual } => {
                write!(f, "event is {actual}, the rule wants {expected}")
            }
            Mismatch::Project { actual } => write!(f, "project `{actual}` does not match"),
            Mismatch::Workflow { actual } => write!(f, "workflow {} does not match", shown(actual)),
            Mismatch::Job { actual } => write!(f, "job {} does not match", shown(actual)),
            Mismatch::Branch { actual } => write!(f, "branch {} does not match", shown(actual)),
            Mismatch::Tag { actual } => write!(f, "tag {} does not match", shown(actual)),
            Mismatch::Status { actual } => {
                write!(f, "status `{actual}` is not one the rule reacts to")
            }
        }
    }
}

/// What one rule made of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A `when` rule matched: its actions, planned.
    Matched(Vec<MatchedAction>),
    /// A fan-in rule: the event completes one or more of its upstreams.
    Arrived(Vec<JoinArrival>),
    /// No match; one reason per upstream matcher.
    NotMatched(Vec<Mismatch>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleEvaluation {
    pub rule: String,
    pub verdict: Verdict,
}

/// The rule set has a pattern or template that does not compile (only possible for a file
/// that was not validated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain rule `{rule}`: {problem}")]
pub struct ChainRulesError {
    pub rule: String,
    pub problem: String,
}

#[derive(Debug)]
struct CompiledRule {
    spec: ChainSpec,
    upstreams: Vec<CompiledMatcher>,
    join: Option<JoinSpec>,
    actions: Vec<plan::CompiledAction>,
}

/// The `[[chain]]` rules with their patterns and templates compiled once (at start-up).
#[derive(Debug)]
pub struct ChainRules {
    rules: Vec<CompiledRule>,
}

impl ChainRules {
    pub fn compile(chains: &[ChainSpec]) -> Result<Self, ChainRulesError> {
        let rules = chains
            .iter()
            .map(|spec| {
                let error = |problem: String| ChainRulesError {
                    rule: spec.name.clone(),
                    problem,
                };
                let join = JoinSpec::from_chain(spec);
                if spec.is_fan_in() && join.is_none() {
                    return Err(error(
                        "a fan-in rule needs a valid `correlate` and `window`".into(),
                    ));
                }
                Ok(CompiledRule {
                    upstreams: spec
                        .upstreams()
                        .iter()
                        .map(|m| m.compile().map_err(|e| error(e.to_string())))
                        .collect::<Result<_, _>>()?,
                    join,
                    actions: action_ids(&spec.then)
                        .into_iter()
                        .zip(&spec.then)
                        .map(|(id, action)| {
                            plan::CompiledAction::compile(action, id).map_err(error)
                        })
                        .collect::<Result<_, _>>()?,
                    spec: spec.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    pub fn from_file(file: &TriggersFile) -> Result<Self, ChainRulesError> {
        Self::compile(&file.chain)
    }

    pub fn specs(&self) -> impl Iterator<Item = &ChainSpec> {
        self.rules.iter().map(|rule| &rule.spec)
    }

    /// The fan-in description of a rule, if it is one.
    pub fn join(&self, rule: &str) -> Option<&JoinSpec> {
        self.find(rule).and_then(|r| r.join.as_ref())
    }

    /// Every rule's verdict on `event`, in file order.
    pub fn evaluate(&self, event: &WebhookEvent) -> Vec<RuleEvaluation> {
        self.rules
            .iter()
            .map(|rule| RuleEvaluation {
                rule: rule.spec.name.clone(),
                verdict: rule.evaluate(event),
            })
            .collect()
    }

    /// The actions of every `when` rule that matches, in file order.
    pub fn matching(&self, event: &WebhookEvent) -> Vec<MatchedAction> {
        self.evaluate(event)
            .into_iter()
            .flat_map(|evaluation| match evaluation.verdict {
                Verdict::Matched(actions) => actions,
                _ => Vec::new(),
            })
            .collect()
    }

    /// The fan-in upstreams this event completes.
    pub fn join_arrivals(&self, event: &WebhookEvent) -> Vec<JoinArrival> {
        self.evaluate(event)
            .into_iter()
            .flat_map(|evaluation| match evaluation.verdict {
                Verdict::Arrived(arrivals) => arrivals,
                _ => Vec::new(),
            })
            .collect()
    }

    /// Plans a rule's actions for `event` regardless of its matchers: used when a fan-in
    /// join completes (the completing event supplies the template values).
    pub fn plan_rule(&self, rule: &str, event: &WebhookEvent) -> Option<Vec<MatchedAction>> {
        self.find(rule).map(|rule| rule.plan(event))
    }

    fn find(&self, rule: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.spec.name == rule)
    }
}

/// Convenience for one-off use (`explain`, tests): compiles and matches.
pub fn rules_matching(
    chains: &[ChainSpec],
    event: &WebhookEvent,
) -> Result<Vec<MatchedAction>, ChainRulesError> {
    Ok(ChainRules::compile(chains)?.matching(event))
}

impl CompiledRule {
    fn evaluate(&self, event: &WebhookEvent) -> Verdict {
        match &self.join {
            None => {
                let Some(matcher) = self.upstreams.first() else {
                    return Verdict::NotMatched(Vec::new());
                };
                match upstream_mismatch(matcher, event, true) {
                    Some(mismatch) => Verdict::NotMatched(vec![mismatch]),
                    None => Verdict::Matched(self.plan(event)),
                }
            }
            Some(join) => {
                let mut mismatches = Vec::new();
                let mut arrivals = Vec::new();
                for (index, matcher) in self.upstreams.iter().enumerate() {
                    // A fan-in hears about failures too: they close the join.
                    match upstream_mismatch(matcher, event, false) {
                        Some(mismatch) => mismatches.push(mismatch),
                        None => arrivals.push(JoinArrival::new(join, index, event)),
                    }
                }
                if arrivals.is_empty() {
                    Verdict::NotMatched(mismatches)
                } else {
                    Verdict::Arrived(arrivals)
                }
            }
        }
    }

    fn plan(&self, event: &WebhookEvent) -> Vec<MatchedAction> {
        self.actions
            .iter()
            .enumerate()
            .map(|(index, action)| MatchedAction {
                rule: self.spec.name.clone(),
                action_index: index,
                action_id: action.id().to_owned(),
                kind: action.kind(),
                plan: action.plan(event),
            })
            .collect()
    }
}

/// The first reason `matcher` rejects `event`, checked in the order a reader scans a rule.
fn upstream_mismatch(
    matcher: &CompiledMatcher,
    event: &WebhookEvent,
    check_status: bool,
) -> Option<Mismatch> {
    if matcher.event != event.kind() {
        return Some(Mismatch::EventType {
            expected: matcher.event,
            actual: event.kind(),
        });
    }
    if !matcher.matches_project(event.project_slug()) {
        return Some(Mismatch::Project {
            actual: event.project_slug().canonical(),
        });
    }
    let workflow = event.workflow().map(|w| w.name.as_str());
    if !filter_accepts(&matcher.workflows, workflow) {
        return Some(Mismatch::Workflow {
            actual: workflow.map(str::to_owned),
        });
    }
    let job = event.job().map(|j| j.name.as_str());
    if !filter_accepts(&matcher.jobs, job) {
        return Some(Mismatch::Job {
            actual: job.map(str::to_owned),
        });
    }
    if !filter_accepts(&matcher.branches, event.branch()) {
        return Some(Mismatch::Branch {
            actual: event.branch().map(str::to_owned),
        });
    }
    if !filter_accepts(&matcher.tags, event.tag()) {
        return Some(Mismatch::Tag {
            actual: event.tag().map(str::to_owned),
        });
    }
    let status_matches = event
        .status()
        .known()
        .is_some_and(|status| matcher.statuses.contains(&status));
    if check_status && !status_matches {
        return Some(Mismatch::Status {
            actual: event.status().as_str().to_owned(),
        });
    }
    None
}
