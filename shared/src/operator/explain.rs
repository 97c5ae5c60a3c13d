//! `circleci-triggers explain --event FILE`: what the receiver would make of an event,
//! without sending anything or reading history.
//!
//! For every rule: whether it matches (and why not), and for each action the exact CircleCI
//! request a pipeline action would send (method, URL, JSON body, token name) or, for an
//! approve / rerun / cancel, how the one existing workflow would be selected. Fan-in rules
//! show which upstream the event completes, the join key, and what fires on completion.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::actions::{Action, RerunJobs};
use crate::config::CircleCiSettings;
use crate::triggers::chained::fanin::humantime;
use crate::triggers::chained::rules::{
    ActionPlan, ActionRequest, ChainRules, CorrelationSource, JoinArrival, MatchedAction,
    SelectionRequest, UpstreamOutcome, Verdict,
};
use crate::triggers::chained::webhook::{GitSource, WebhookEvent};
use crate::triggers::chained::{action_for, selection_of};
use crate::triggers::chained::{join_key, upstream_name};

/// The whole explanation (printed as text, or as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub event: EventSummary,
    pub rules: Vec<RuleExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub happened_at: String,
    pub project: String,
    pub pipeline_id: String,
    pub pipeline_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `vcs` (OAuth-style payload), `trigger_parameters` (App-style) or `none`.
    pub git_from: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleExplanation {
    pub rule: String,
    pub verdict: RuleVerdict,
    /// Why the rule does not match (one reason per upstream matcher).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionExplanation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arrivals: Vec<ArrivalExplanation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleVerdict {
    Matches,
    /// A fan-in rule: the event completes one of its upstreams.
    Arrives,
    NoMatch,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionExplanation {
    pub index: usize,
    pub action: &'static str,
    pub outcome: ActionOutcomeKind,
    /// Why it is skipped or invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The token name the request would use (never the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// For approve / rerun / cancel: how the one workflow would be chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<String>,
    /// The reads a selection makes before the request (approve / rerun / cancel).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestExplanation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcomeKind {
    /// The request below would be sent.
    Request,
    /// The rule skips this event by design (e.g. no `branch_map` entry).
    Skipped,
    /// The rule cannot be applied to this event; recorded as failed, nothing sent.
    Invalid,
}

/// One HTTP request to CircleCI. Path segments in `<...>` are only known after selection.
#[derive(Debug, Clone, Serialize)]
pub struct RequestExplanation {
    pub method: &'static str,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArrivalExplanation {
    pub upstream: String,
    /// `succeeded`, or `failed (<status>)`: a failure closes the join.
    pub outcome: String,
    /// What the join is keyed on for this event.
    pub correlation: String,
    /// The join key, when it can be known without history (tag, branch, revision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_key: Option<String>,
    /// The window, from the first arrival.
    pub window: String,
    pub upstreams: usize,
}

/// Explains what `rules` would do with `event`.
pub fn explain(
    rules: &ChainRules,
    circleci: &CircleCiSettings,
    event: &WebhookEvent,
) -> Explanation {
    let rules_explained = rules
        .evaluate(event)
        .into_iter()
        .map(|evaluation| match evaluation.verdict {
            Verdict::Matched(actions) => RuleExplanation {
                rule: evaluation.rule,
                verdict: RuleVerdict::Matches,
                reasons: Vec::new(),
                actions: actions
                    .iter()
                    .map(|a| explain_action(circleci, a))
                    .collect(),
                arrivals: Vec::new(),
            },
            Verdict::Arrived(arrivals) => {
                let fired = rules.plan_rule(&evaluation.rule, event).unwrap_or_default();
                RuleExplanation {
                    arrivals: arrivals
                        .iter()
                        .map(|arrival| explain_arrival(rules, arrival))
                        .collect(),
                    rule: evaluation.rule,
                    verdict: RuleVerdict::Arrives,
                    reasons: Vec::new(),
                    actions: fired.iter().map(|a| explain_action(circleci, a)).collect(),
                }
            }
            Verdict::NotMatched(mismatches) => RuleExplanation {
                rule: evaluation.rule,
                verdict: RuleVerdict::NoMatch,
                reasons: mismatches.iter().map(ToString::to_string).collect(),
                actions: Vec::new(),
                arrivals: Vec::new(),
            },
        })
        .collect();
    Explanation {
        event: summary(event),
        rules: rules_explained,
    }
}

fn summary(event: &WebhookEvent) -> EventSummary {
    EventSummary {
        id: event.id().to_owned(),
        kind: event.kind().as_str(),
        happened_at: event
            .happened_at()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        project: event.project_slug().canonical(),
        pipeline_id: event.pipeline().id.clone(),
        pipeline_number: event.pipeline().number,
        workflow: event.workflow().map(|w| w.name.clone()),
        job: event.job().map(|j| j.name.clone()),
        status: event.status().as_str().to_owned(),
        branch: event.branch().map(str::to_owned),
        tag: event.tag().map(str::to_owned),
        revision: event.revision().map(str::to_owned),
        git_from: match event.git().source {
            GitSource::Vcs => "vcs",
            GitSource::TriggerParameters => "trigger_parameters",
            GitSource::None => "none",
        },
    }
}

fn explain_action(circleci: &CircleCiSettings, matched: &MatchedAction) -> ActionExplanation {
    let mut explained = ActionExplanation {
        index: matched.action_index,
        action: matched.kind.as_str(),
        outcome: ActionOutcomeKind::Request,
        reason: None,
        token: None,
        selection: None,
        reads: Vec::new(),
        request: None,
    };
    let request = match &matched.plan {
        ActionPlan::Ready(request) => request,
        ActionPlan::Skipped(reason) => {
            explained.outcome = ActionOutcomeKind::Skipped;
            explained.reason = Some(reason.to_string());
            return explained;
        }
        ActionPlan::Invalid(error) => {
            explained.outcome = ActionOutcomeKind::Invalid;
            explained.reason = Some(error.to_string());
            return explained;
        }
    };
    // Selection by origin needs history; describe it instead of reading it.
    let action = match action_for(request, circleci, &[]) {
        Ok(action) => action,
        Err(error) => {
            explained.outcome = ActionOutcomeKind::Invalid;
            explained.reason = Some(error.to_string());
            return explained;
        }
    };
    let api = circleci.api_url.trim_end_matches('/');
    explained.token = Some(action.target().token.clone());
    match &action {
        Action::Pipeline { target } => {
            let pipeline = target.pipeline_request();
            match pipeline.validate().and_then(|()| pipeline.path()) {
                Ok(path) => {
                    explained.request = Some(RequestExplanation {
                        method: "POST",
                        url: format!("{api}{path}"),
                        body: Some(pipeline.body()),
                    });
                }
                Err(error) => {
                    explained.outcome = ActionOutcomeKind::Invalid;
                    explained.reason = Some(error.to_string());
                }
            }
        }
        Action::Approve { job, .. } => {
            explained.selection = selection_text(request, &action);
            explained.reads = selection_reads(request, true);
            explained.request = Some(RequestExplanation {
                method: "POST",
                url: format!(
                    "{api}/workflow/<selected workflow id>/approve/<approval_request_id of job `{job}`>"
                ),
                body: None,
            });
        }
        Action::Rerun { rerun, .. } => {
            explained.selection = selection_text(request, &action);
            explained.reads = selection_reads(request, matches!(rerun, RerunJobs::Jobs(_)));
            let body = match rerun {
                RerunJobs::Workflow => json!({}),
                RerunJobs::FromFailed => json!({ "from_failed": true }),
                RerunJobs::Jobs(names) => json!({
                    "jobs": names.iter().map(|name| format!("<id of job `{name}`>")).collect::<Vec<_>>()
                }),
            };
            explained.request = Some(RequestExplanation {
                method: "POST",
                url: format!("{api}/workflow/<selected workflow id>/rerun"),
                body: Some(body),
            });
        }
        Action::Cancel { .. } => {
            explained.selection = selection_text(request, &action);
            explained.reads = selection_reads(request, false);
            explained.request = Some(RequestExplanation {
                method: "POST",
                url: format!("{api}/workflow/<selected workflow id>/cancel"),
                body: None,
            });
        }
    }
    explained
}

fn selection_text(request: &ActionRequest, action: &Action) -> Option<String> {
    let select = selection_of(request)?;
    let target = action.target();
    let project = target.project.canonical();
    let pipelines = match select {
        SelectionRequest::Origin {
            upstream_pipeline_id,
        } => format!(
            "the pipelines of {project} that trigger history records under the origin trigger of upstream pipeline {upstream_pipeline_id}"
        ),
        SelectionRequest::Revision { revision } => {
            format!("the pipelines of {project} that built revision {revision}")
        }
        SelectionRequest::Latest => match target.branch() {
            Some(branch) => format!("the newest pipeline of {project} on branch `{branch}`"),
            None => format!("the newest pipeline of {project}"),
        },
    };
    let workflows = match (action.workflow_filter(), action) {
        (Some(name), _) => format!("the latest attempt of workflow `{name}`"),
        (None, Action::Approve { job, .. }) => {
            format!("the workflow holding approval job `{job}` on hold")
        }
        (None, _) => "the latest attempt of each workflow".to_owned(),
    };
    Some(format!(
        "{workflows} in {pipelines}; exactly one must match, otherwise the action is recorded as failed and nothing is sent"
    ))
}

fn selection_reads(request: &ActionRequest, reads_jobs: bool) -> Vec<String> {
    let Some(select) = selection_of(request) else {
        return Vec::new();
    };
    let mut reads = Vec::new();
    match select {
        SelectionRequest::Origin { .. } => {
            reads.push(
                "trigger history: pipelines recorded under the origin (no CircleCI call)".into(),
            );
            reads.push("GET /pipeline/<id> for each".into());
        }
        SelectionRequest::Revision { .. } | SelectionRequest::Latest => {
            reads.push("GET /project/<slug>/pipeline (newest first)".into());
        }
    }
    reads.push("GET /pipeline/<id>/workflow".into());
    if reads_jobs {
        reads.push("GET /workflow/<id>/job".into());
    }
    reads
}

fn explain_arrival(rules: &ChainRules, arrival: &JoinArrival) -> ArrivalExplanation {
    let join = rules.join(&arrival.rule);
    let (correlation, join_key) = match (&arrival.correlation, join) {
        (
            Some(CorrelationSource::Origin {
                upstream_pipeline_id,
            }),
            _,
        ) => (
            format!(
                "origin: the root trigger of pipeline {upstream_pipeline_id}, looked up in trigger history (none if this service did not start it)"
            ),
            None,
        ),
        (Some(CorrelationSource::Value(value)), Some(join)) => (
            format!("{}: {value}", join.correlate.as_str()),
            Some(join_key(join, value).as_str().to_owned()),
        ),
        (Some(CorrelationSource::Value(value)), None) => (value.clone(), None),
        (None, join) => (
            format!(
                "none: the event has no {} (recorded as skipped; it joins nothing)",
                join.map_or("value", |j| j.correlate.as_str())
            ),
            None,
        ),
    };
    ArrivalExplanation {
        upstream: upstream_name(arrival.upstream_index),
        outcome: match &arrival.outcome {
            UpstreamOutcome::Succeeded => "succeeded".into(),
            UpstreamOutcome::Failed { status } => {
                format!("failed ({status}): closes the join, the rule will not fire")
            }
        },
        correlation,
        join_key,
        window: join.map_or_else(String::new, |j| humantime(j.window)),
        upstreams: join.map_or(0, |j| j.upstreams),
    }
}

impl Explanation {
    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let e = &self.event;
        let _ = writeln!(out, "event {} ({}) at {}", e.id, e.kind, e.happened_at);
        let _ = writeln!(out, "  project   {}", e.project);
        let _ = writeln!(
            out,
            "  pipeline  #{} ({})",
            e.pipeline_number, e.pipeline_id
        );
        if let Some(workflow) = &e.workflow {
            let _ = writeln!(out, "  workflow  {workflow}");
        }
        if let Some(job) = &e.job {
            let _ = writeln!(out, "  job       {job}");
        }
        let _ = writeln!(out, "  status    {}", e.status);
        let git = [
            e.branch.as_ref().map(|b| format!("branch {b}")),
            e.tag.as_ref().map(|t| format!("tag {t}")),
            e.revision.as_ref().map(|r| format!("revision {r}")),
        ];
        let git: Vec<String> = git.into_iter().flatten().collect();
        let _ = writeln!(
            out,
            "  git       {} (from {})",
            if git.is_empty() {
                "-".to_owned()
            } else {
                git.join(", ")
            },
            e.git_from
        );
        if self.rules.is_empty() {
            let _ = writeln!(out, "\nno chain rules are defined");
        }
        for rule in &self.rules {
            let verdict = match rule.verdict {
                RuleVerdict::Matches => "MATCHES",
                RuleVerdict::Arrives => "FAN-IN ARRIVAL",
                RuleVerdict::NoMatch => "no match",
            };
            let _ = writeln!(out, "\nrule `{}`: {verdict}", rule.rule);
            for reason in &rule.reasons {
                let _ = writeln!(out, "  - {reason}");
            }
            for arrival in &rule.arrivals {
                let _ = writeln!(
                    out,
                    "  completes {} of {}: {}",
                    arrival.upstream, arrival.upstreams, arrival.outcome
                );
                let _ = writeln!(out, "    correlated on {}", arrival.correlation);
                if let Some(key) = &arrival.join_key {
                    let _ = writeln!(out, "    join key {key}, window {}", arrival.window);
                }
            }
            if rule.verdict == RuleVerdict::Arrives && !rule.actions.is_empty() {
                let _ = writeln!(out, "  when every upstream has succeeded, it fires once:");
            }
            for action in &rule.actions {
                write_action(&mut out, action);
            }
        }
        let _ = writeln!(out, "\nnothing was sent.");
        out
    }
}

fn write_action(out: &mut String, action: &ActionExplanation) {
    let _ = write!(out, "  then[{}] {}", action.index, action.action);
    match action.outcome {
        ActionOutcomeKind::Skipped => {
            let _ = writeln!(
                out,
                ": skipped ({})",
                action.reason.as_deref().unwrap_or("")
            );
            return;
        }
        ActionOutcomeKind::Invalid => {
            let _ = writeln!(
                out,
                ": invalid, recorded as failed, nothing sent ({})",
                action.reason.as_deref().unwrap_or("")
            );
            return;
        }
        ActionOutcomeKind::Request => {
            let _ = writeln!(out);
        }
    }
    if let Some(selection) = &action.selection {
        let _ = writeln!(out, "    selects {selection}");
    }
    for read in &action.reads {
        let _ = writeln!(out, "    reads   {read}");
    }
    if let Some(request) = &action.request {
        let token = action.token.as_deref().unwrap_or("default");
        let _ = writeln!(
            out,
            "    sends   {} {}  (token `{token}`)",
            request.method, request.url
        );
        if let Some(body) = &request.body {
            let _ = writeln!(out, "    body    {body}");
        }
    }
}
