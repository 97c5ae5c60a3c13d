//! Turning a `[[chain.then]]` action and an event into a concrete request.

use std::collections::BTreeMap;

use triggers_config::chain::{ChainAction, NamePattern};
use triggers_config::rules::{self, MAX_PARAMETER_VALUE_LEN};
use triggers_config::template::{RenderError, Scope, Template};
use triggers_config::{ActionKind, ActionSpec, ParameterValue, ProjectSlug, Selection, TargetSpec};

use crate::triggers::chained::webhook::WebhookEvent;

/// What the action will do, or why it will not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionPlan {
    Ready(Box<ActionRequest>),
    /// Nothing to do for this event, by the rule's own design (recorded as skipped).
    Skipped(SkipReason),
    /// The rule cannot be applied to this event (recorded as failed; nothing is sent).
    Invalid(PlanError),
}

impl ActionPlan {
    pub fn ready(&self) -> Option<&ActionRequest> {
        match self {
            ActionPlan::Ready(request) => Some(request.as_ref()),
            _ => None,
        }
    }
}

/// A concrete request for the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRequest {
    /// Start a pipeline: every template rendered; `project` in canonical form.
    Pipeline(TargetSpec),
    /// Approve, rerun or cancel an existing workflow (`action` is never
    /// [`ActionSpec::Pipeline`]).
    Existing {
        action: ActionSpec,
        existing: ExistingWorkflow,
    },
}

impl ActionRequest {
    /// What the request does.
    pub fn spec(&self) -> &ActionSpec {
        match self {
            ActionRequest::Pipeline(_) => &ActionSpec::Pipeline,
            ActionRequest::Existing { action, .. } => action,
        }
    }
}

/// An existing workflow to act on, and how to find it (exactly one match, or a failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingWorkflow {
    /// The project (canonical slug), the token name if the rule names one, and for
    /// `select = "latest"` the branch: resolve it like any other target.
    pub target: TargetSpec,
    /// The workflow's name in the selected pipeline; `None` leaves it to the action
    /// (approve: the workflow holding the job; rerun/cancel: the pipeline's only workflow).
    pub workflow: Option<String>,
    pub select: SelectionRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectionRequest {
    /// The pipeline in the target project started under the same origin trigger as the
    /// upstream pipeline (look the origin up by this pipeline id in history).
    Origin { upstream_pipeline_id: String },
    /// The target project's pipeline for this commit.
    Revision { revision: String },
    /// The newest pipeline on the target's branch.
    Latest,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("no branch_map entry matches the upstream branch {}", .branch.as_deref().map_or("(none: a tag pipeline)".to_owned(), |b| format!("`{b}`")))]
    NoBranchMapping { branch: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("`{field}`: {source}")]
    Render {
        field: String,
        #[source]
        source: RenderError,
    },
    #[error("`{field}` rendered to an unusable value: {reason}")]
    InvalidValue { field: String, reason: String },
    #[error("select = \"revision\" but the event has no revision")]
    NoRevision,
}

impl PlanError {
    /// Whether the event itself is refused (a template value outside its variable's class:
    /// recorded `rejected`), rather than the rule not fitting the event (`failed`).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PlanError::Render {
                source: RenderError::OutOfClass { .. },
                ..
            }
        )
    }
}

#[derive(Debug)]
enum ParameterTemplate {
    Fixed(ParameterValue),
    Text(Template),
}

/// An action with its templates parsed and patterns compiled.
#[derive(Debug)]
pub(crate) struct CompiledAction {
    spec: ChainAction,
    /// See [`super::action_ids`].
    id: String,
    action: ActionSpec,
    project: ProjectSlug,
    branch: Option<Template>,
    tag: Option<Template>,
    branch_map: Vec<(NamePattern, Template)>,
    workflow: Option<Template>,
    parameters: BTreeMap<String, ParameterTemplate>,
}

fn template(field: &str, text: &Option<String>) -> Result<Option<Template>, String> {
    text.as_deref()
        .map(|text| Template::parse_in(text, Scope::Event).map_err(|e| format!("`{field}`: {e}")))
        .transpose()
}

impl CompiledAction {
    /// Fails only for an action `check` would reject.
    pub(crate) fn compile(spec: &ChainAction, id: String) -> Result<Self, String> {
        let project = spec
            .project
            .parse::<ProjectSlug>()
            .map_err(|e| format!("`project`: {e}"))?;
        let branch_map = spec
            .branch_map
            .iter()
            .map(|mapping| {
                let from = NamePattern::parse(&mapping.from).map_err(|e| e.to_string())?;
                let to = Template::parse_in(&mapping.to, Scope::Event)
                    .map_err(|e| format!("`branch_map.to`: {e}"))?;
                Ok((from, to))
            })
            .collect::<Result<_, String>>()?;
        let parameters = spec
            .parameters
            .iter()
            .map(|(name, value)| {
                let compiled = match value {
                    ParameterValue::String(text) => ParameterTemplate::Text(
                        Template::parse_in(text, Scope::Event)
                            .map_err(|e| format!("`parameters.{name}`: {e}"))?,
                    ),
                    other => ParameterTemplate::Fixed(other.clone()),
                };
                Ok((name.clone(), compiled))
            })
            .collect::<Result<_, String>>()?;
        let action = spec.action_fields().spec().map_err(|e| e.to_string())?;
        Ok(Self {
            id,
            action,
            project,
            branch: template("branch", &spec.branch)?,
            tag: template("tag", &spec.tag)?,
            workflow: template("workflow", &spec.workflow)?,
            branch_map,
            parameters,
            spec: spec.clone(),
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn kind(&self) -> ActionKind {
        self.spec.action
    }

    pub(crate) fn plan(&self, event: &WebhookEvent) -> ActionPlan {
        let planned = match self.action {
            ActionSpec::Pipeline => self.pipeline(event),
            _ => self.workflow_action(event),
        };
        match planned {
            Ok(request) => ActionPlan::Ready(Box::new(request)),
            Err(Unplanned::Skip(reason)) => ActionPlan::Skipped(reason),
            Err(Unplanned::Error(error)) => ActionPlan::Invalid(error),
        }
    }

    fn pipeline(&self, event: &WebhookEvent) -> Result<ActionRequest, Unplanned> {
        let branch = match (&self.branch, self.branch_map.is_empty()) {
            (Some(branch), _) => Some(git_ref("branch", branch, event)?),
            (None, false) => Some(self.mapped_branch(event)?),
            (None, true) => None,
        };
        let tag = self
            .tag
            .as_ref()
            .map(|tag| git_ref("tag", tag, event))
            .transpose()?;
        let workflow = self
            .workflow
            .as_ref()
            .map(|workflow| parameter_text("workflow", workflow, event))
            .transpose()?;
        let parameters =
            self.parameters
                .iter()
                .map(|(name, value)| {
                    let rendered = match value {
                        ParameterTemplate::Fixed(fixed) => fixed.clone(),
                        ParameterTemplate::Text(template) => ParameterValue::String(
                            parameter_text(&format!("parameters.{name}"), template, event)?,
                        ),
                    };
                    Ok((name.clone(), rendered))
                })
                .collect::<Result<_, Unplanned>>()?;
        Ok(ActionRequest::Pipeline(TargetSpec {
            project: self.project.canonical(),
            branch,
            tag,
            workflow,
            parameters,
            definition_id: self.spec.definition_id.clone(),
            config: self.spec.config.clone(),
            checkout: self.spec.checkout.clone(),
            token: self.spec.token.clone(),
        }))
    }

    fn mapped_branch(&self, event: &WebhookEvent) -> Result<String, Unplanned> {
        let upstream = event.branch();
        let (_, to) = upstream
            .and_then(|branch| {
                self.branch_map
                    .iter()
                    .find(|(from, _)| from.matches(branch))
            })
            .ok_or_else(|| {
                Unplanned::Skip(SkipReason::NoBranchMapping {
                    branch: upstream.map(str::to_owned),
                })
            })?;
        Ok(git_ref("branch_map.to", to, event)?)
    }

    fn workflow_action(&self, event: &WebhookEvent) -> Result<ActionRequest, Unplanned> {
        let mut branch = None;
        let select = match self.spec.select {
            // `check` requires `select`; origin is the safe reading if it were missing.
            Some(Selection::Origin) | None => SelectionRequest::Origin {
                upstream_pipeline_id: event.pipeline().id.clone(),
            },
            Some(Selection::Revision) => SelectionRequest::Revision {
                revision: event
                    .revision()
                    .ok_or(Unplanned::Error(PlanError::NoRevision))?
                    .to_owned(),
            },
            Some(Selection::Latest) => {
                let template = self.branch.as_ref().ok_or_else(|| {
                    Unplanned::Error(PlanError::InvalidValue {
                        field: "branch".into(),
                        reason: "select = \"latest\" needs a branch".into(),
                    })
                })?;
                branch = Some(git_ref("branch", template, event)?);
                SelectionRequest::Latest
            }
        };
        let existing = ExistingWorkflow {
            target: TargetSpec {
                project: self.project.canonical(),
                branch,
                token: self.spec.token.clone(),
                ..TargetSpec::default()
            },
            workflow: self
                .workflow
                .as_ref()
                .map(|workflow| render("workflow", workflow, event))
                .transpose()?,
            select,
        };
        Ok(ActionRequest::Existing {
            action: self.action.clone(),
            existing,
        })
    }
}

enum Unplanned {
    Skip(SkipReason),
    Error(PlanError),
}

impl From<PlanError> for Unplanned {
    fn from(error: PlanError) -> Self {
        Unplanned::Error(error)
    }
}

fn render(field: &str, template: &Template, event: &WebhookEvent) -> Result<String, PlanError> {
    template.render(event).map_err(|source| PlanError::Render {
        field: field.to_owned(),
        source,
    })
}

/// A rendered branch or tag, held to git's ref rules before it reaches a URL or a body.
fn git_ref(field: &str, template: &Template, event: &WebhookEvent) -> Result<String, PlanError> {
    let value = render(field, template, event)?;
    rules::check_git_ref(&value).map_err(|reason| PlanError::InvalidValue {
        field: field.to_owned(),
        reason: reason.to_owned(),
    })?;
    Ok(value)
}

/// A rendered parameter value, within CircleCI's limit.
fn parameter_text(
    field: &str,
    template: &Template,
    event: &WebhookEvent,
) -> Result<String, PlanError> {
    let value = render(field, template, event)?;
    if value.chars().count() > MAX_PARAMETER_VALUE_LEN {
        return Err(PlanError::InvalidValue {
            field: field.to_owned(),
            reason: format!("longer than {MAX_PARAMETER_VALUE_LEN} characters"),
        });
    }
    Ok(value)
}
