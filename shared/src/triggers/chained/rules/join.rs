//! Fan-in (`after = [...]`): the pure part of a join.
//!
//! The receiver turns each matching event into a [`JoinArrival`], resolves its correlation
//! value (for `origin`, via history by the upstream pipeline id), stores the arrival under
//! [`JoinSpec::key`], and asks [`JoinSpec::decide`] what the stored arrivals amount to.
//! `Complete` is then claimed under the same key so the rule fires exactly once.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use triggers_config::chain::{ChainSpec, CompletionStatus, Correlation};

use crate::triggers::chained::webhook::WebhookEvent;

/// A fan-in rule's shape: how many upstreams, how they correlate, how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinSpec {
    pub rule: String,
    pub upstreams: usize,
    pub correlate: Correlation,
    pub window: Duration,
}

/// How an upstream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamOutcome {
    Succeeded,
    /// Any other final status (failed, canceled, ...): it closes the join.
    Failed {
        status: String,
    },
}

/// Where the correlation value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorrelationSource {
    /// Look up the origin of this upstream pipeline in history; the origin id is the value.
    Origin { upstream_pipeline_id: String },
    /// The event's tag, branch or revision.
    Value(String),
}

/// One event completing one upstream of a fan-in rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinArrival {
    pub rule: String,
    pub upstream_index: usize,
    pub event_id: String,
    pub pipeline_id: String,
    /// When CircleCI says it happened; windows are measured on these.
    pub at: DateTime<Utc>,
    pub outcome: UpstreamOutcome,
    /// `None` when the event lacks what the rule correlates on (e.g. `tag` on a branch
    /// pipeline): record it, it joins nothing.
    pub correlation: Option<CorrelationSource>,
}

/// A stored arrival, as [`JoinSpec::decide`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub upstream_index: usize,
    pub outcome: UpstreamOutcome,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinDecision {
    /// Not all upstreams have succeeded yet; `deadline` is when the window closes.
    Waiting {
        missing: Vec<usize>,
        deadline: Option<DateTime<Utc>>,
    },
    /// Every upstream succeeded within the window: fire (once, under the join's claim).
    Complete,
    /// Will never fire; record why.
    Closed(JoinClosed),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinClosed {
    UpstreamFailed {
        upstream_index: usize,
        status: String,
    },
    Expired {
        deadline: DateTime<Utc>,
    },
}

impl JoinSpec {
    /// The join of a valid fan-in rule; `None` for `when` rules (and invalid ones).
    pub fn from_chain(chain: &ChainSpec) -> Option<Self> {
        if !chain.is_fan_in() {
            return None;
        }
        Some(Self {
            rule: chain.name.clone(),
            upstreams: chain.after.len(),
            correlate: chain.correlate?,
            window: Duration::from_std(chain.window_duration()?).ok()?,
        })
    }

    /// The join's store and claim key: `<rule>#<correlate>:<value>`.
    pub fn key(&self, correlation_value: &str) -> String {
        format!(
            "{}#{}:{}",
            self.rule,
            self.correlate.as_str(),
            correlation_value
        )
    }

    /// What the arrivals stored so far mean at `now`. The window opens with the earliest
    /// arrival; later ones are ignored. Arrivals are taken in time order, so a failure
    /// after completion does not undo it, and a failure before it closes the join.
    pub fn decide(&self, arrivals: &[Arrival], now: DateTime<Utc>) -> JoinDecision {
        let mut ordered: Vec<&Arrival> = arrivals
            .iter()
            .filter(|a| a.upstream_index < self.upstreams)
            .collect();
        ordered.sort_by_key(|a| a.at);
        let Some(first) = ordered.first() else {
            return JoinDecision::Waiting {
                missing: (0..self.upstreams).collect(),
                deadline: None,
            };
        };
        let deadline = first.at + self.window;
        let mut succeeded = BTreeSet::new();
        for arrival in ordered.iter().take_while(|a| a.at <= deadline) {
            match &arrival.outcome {
                UpstreamOutcome::Failed { status } => {
                    return JoinDecision::Closed(JoinClosed::UpstreamFailed {
                        upstream_index: arrival.upstream_index,
                        status: status.clone(),
                    });
                }
                UpstreamOutcome::Succeeded => {
                    succeeded.insert(arrival.upstream_index);
                    if succeeded.len() == self.upstreams {
                        return JoinDecision::Complete;
                    }
                }
            }
        }
        if now > deadline || ordered.iter().any(|a| a.at > deadline) {
            return JoinDecision::Closed(JoinClosed::Expired { deadline });
        }
        JoinDecision::Waiting {
            missing: (0..self.upstreams)
                .filter(|i| !succeeded.contains(i))
                .collect(),
            deadline: Some(deadline),
        }
    }
}

impl JoinArrival {
    pub(crate) fn new(join: &JoinSpec, upstream_index: usize, event: &WebhookEvent) -> Self {
        let outcome = match event.status().known() {
            Some(CompletionStatus::Success) => UpstreamOutcome::Succeeded,
            _ => UpstreamOutcome::Failed {
                status: event.status().as_str().to_owned(),
            },
        };
        let value = |v: Option<&str>| v.map(|v| CorrelationSource::Value(v.to_owned()));
        let correlation = match join.correlate {
            Correlation::Origin => Some(CorrelationSource::Origin {
                upstream_pipeline_id: event.pipeline().id.clone(),
            }),
            Correlation::Tag => value(event.tag()),
            Correlation::Branch => value(event.branch()),
            Correlation::Revision => value(event.revision()),
        };
        Self {
            rule: join.rule.clone(),
            upstream_index,
            event_id: event.id().to_owned(),
            pipeline_id: event.pipeline().id.clone(),
            at: event.happened_at(),
            outcome,
            correlation,
        }
    }

    pub fn arrival(&self) -> Arrival {
        Arrival {
            upstream_index: self.upstream_index,
            outcome: self.outcome.clone(),
            at: self.at,
        }
    }
}
