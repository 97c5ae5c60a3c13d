//! Targets and actions: what every trigger kind (schedule, chain, HTTP endpoint) does on
//! CircleCI, through one code path.
//!
//! - [`Target`]: a project, branch or tag, parameters, endpoint options and token name,
//!   resolved from the triggers file with the `[circleci]` defaults (the `workflow = "x"`
//!   sugar sets the configured string pipeline parameter).
//! - [`Action`]: start a pipeline, or approve / rerun / cancel an **existing** workflow.
//! - [`Actions::perform`]: reads what it needs, asks the [`SendGuard`] (the exactly-once
//!   claim is marked `sending` there), then sends exactly one side-effecting request.
//! - [`Actions::reconcile_create`]: after an ambiguous create, finds the pipeline it made.
//!
//! ## Selecting an existing workflow
//! An approve, rerun or cancel never guesses. [`WorkflowSelector`] names the pipelines to
//! look in (those recorded for the same origin trigger, one pipeline, those of a revision
//! in the target's repository, or the newest on the target's branch); within them, only the
//! latest attempt of each workflow counts (a rerun supersedes what it reran), narrowed by
//! workflow name when one is given (the action's, else the target's `workflow` sugar).
//! Exactly one workflow must remain — for an approve, exactly one holding the named
//! approval job `on_hold` — or the action fails with [`ActionError::NoMatch`] /
//! [`ActionError::SeveralMatches`] and nothing is sent.
//!
//! ## Ambiguous answers
//! A create that may have happened is resolved by [`Actions::reconcile_create`] (the caller
//! decides when, since it needs the store). An approve, rerun or cancel that may have
//! happened is checked at once by reading the workflow back: if the effect is visible, the
//! outcome is returned with `read_back: true`; otherwise the ambiguous error is returned.

mod perform;
mod reconcile;
mod select;
mod target;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::circleci::{CircleCi, CircleCiError, JobStatus, PipelineState, WorkflowStatus};
pub use crate::config::RerunJobs;
use crate::config::{ActionKind, ActionSpec};
use crate::store::{StoreError, TriggerTarget};

pub use perform::Prepared;
pub use reconcile::{CreateWindow, Reconciled};
pub use select::{SelectedWorkflow, WorkflowSelector};
pub use target::Target;

/// One thing to do on CircleCI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start a pipeline on the target.
    Pipeline { target: Target },
    /// Approve the on-hold approval job named `job` in the selected workflow.
    Approve {
        target: Target,
        job: String,
        select: WorkflowSelector,
        /// Only workflows of this name (default: the target's `workflow`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workflow: Option<String>,
    },
    /// Rerun the selected workflow.
    Rerun {
        target: Target,
        rerun: RerunJobs,
        select: WorkflowSelector,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workflow: Option<String>,
    },
    /// Cancel the selected workflow.
    Cancel {
        target: Target,
        select: WorkflowSelector,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workflow: Option<String>,
    },
}

impl Action {
    /// The one translation of a triggers file's action (schedule, chain rule or endpoint)
    /// into what is done on CircleCI. `select` and `workflow` say how an approve, rerun or
    /// cancel finds the existing workflow; a pipeline ignores them.
    pub fn from_spec(
        spec: &ActionSpec,
        target: Target,
        select: WorkflowSelector,
        workflow: Option<String>,
    ) -> Action {
        match spec {
            ActionSpec::Pipeline => Action::Pipeline { target },
            ActionSpec::Approve { job } => Action::Approve {
                target,
                job: job.clone(),
                select,
                workflow,
            },
            ActionSpec::Rerun(jobs) => Action::Rerun {
                target,
                rerun: jobs.clone(),
                select,
                workflow,
            },
            ActionSpec::Cancel => Action::Cancel {
                target,
                select,
                workflow,
            },
        }
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Pipeline { .. } => ActionKind::Pipeline,
            Action::Approve { .. } => ActionKind::Approve,
            Action::Rerun { .. } => ActionKind::Rerun,
            Action::Cancel { .. } => ActionKind::Cancel,
        }
    }

    pub fn target(&self) -> &Target {
        match self {
            Action::Pipeline { target }
            | Action::Approve { target, .. }
            | Action::Rerun { target, .. }
            | Action::Cancel { target, .. } => target,
        }
    }

    /// The workflow name an approve/rerun/cancel looks for: its own, else the target's
    /// `workflow` sugar (by the documented convention the parameter value is the workflow's
    /// name). `None` for a pipeline, or when neither is set.
    pub fn workflow_filter(&self) -> Option<&str> {
        match self {
            Action::Pipeline { .. } => None,
            Action::Approve {
                target, workflow, ..
            }
            | Action::Rerun {
                target, workflow, ..
            }
            | Action::Cancel {
                target, workflow, ..
            } => workflow.as_deref().or(target.workflow.as_deref()),
        }
    }

    /// The target as trigger history shows it, with the job and workflow acted on.
    pub fn record_target(&self) -> TriggerTarget {
        let mut record = self.target().record_target();
        if let Some(workflow) = self.workflow_filter() {
            record.workflow = Some(workflow.to_owned());
        }
        if let Action::Approve { job, .. } = self {
            record.job = Some(job.clone());
        }
        record
    }
}

/// What an action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ActionOutcome {
    PipelineCreated {
        id: Uuid,
        number: u64,
        /// As the create answer reports it (usually `pending`): a pipeline can still end
        /// `errored` (e.g. an undeclared parameter), which a read-back shows.
        state: PipelineState,
        created_at: DateTime<Utc>,
    },
    Approved {
        pipeline_id: Uuid,
        pipeline_number: u64,
        workflow_id: Uuid,
        workflow_name: String,
        job_id: Uuid,
        approval_request_id: Uuid,
        /// The answer was ambiguous; reading the job back showed it approved.
        #[serde(default)]
        read_back: bool,
    },
    Rerun {
        pipeline_id: Uuid,
        pipeline_number: u64,
        workflow_id: Uuid,
        workflow_name: String,
        new_workflow_id: Uuid,
        /// The answer was ambiguous; reading the pipeline back showed the one new attempt.
        #[serde(default)]
        read_back: bool,
    },
    Canceled {
        pipeline_id: Uuid,
        pipeline_number: u64,
        workflow_id: Uuid,
        workflow_name: String,
        /// The answer was ambiguous; reading the workflow back showed it canceled.
        #[serde(default)]
        read_back: bool,
    },
}

impl ActionOutcome {
    /// The pipeline created or acted on.
    pub fn pipeline_id(&self) -> Uuid {
        match self {
            ActionOutcome::PipelineCreated { id, .. } => *id,
            ActionOutcome::Approved { pipeline_id, .. }
            | ActionOutcome::Rerun { pipeline_id, .. }
            | ActionOutcome::Canceled { pipeline_id, .. } => *pipeline_id,
        }
    }

    pub fn pipeline_number(&self) -> u64 {
        match self {
            ActionOutcome::PipelineCreated { number, .. } => *number,
            ActionOutcome::Approved {
                pipeline_number, ..
            }
            | ActionOutcome::Rerun {
                pipeline_number, ..
            }
            | ActionOutcome::Canceled {
                pipeline_number, ..
            } => *pipeline_number,
        }
    }
}

/// Why an action was not done. Every variant except an ambiguous [`ActionError::CircleCi`]
/// means **nothing was changed on CircleCI**.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The target cannot be acted on as written (slug, refs, parameters, token name).
    #[error("invalid target: {reason}")]
    InvalidTarget { reason: String },

    /// The action itself is unusable (e.g. a rerun of no jobs).
    #[error("invalid action: {reason}")]
    InvalidAction { reason: String },

    /// The selector found no workflow to act on.
    #[error("no match: {what}")]
    NoMatch { what: String },

    /// The selector found more than one workflow; choosing would be a guess.
    /// `candidates` are the workflow ids.
    #[error("{} workflows match ({what}); refusing to choose", candidates.len())]
    SeveralMatches { what: String, candidates: Vec<Uuid> },

    /// The selected workflow has no job of that name (approve: no approval job).
    #[error("no job `{job}` in workflow {workflow}")]
    JobNotFound { job: String, workflow: String },

    /// The approval job exists but is not waiting for an approval.
    #[error("approval job `{job}` in workflow `{workflow}` is {status:?}, not on hold")]
    JobNotOnHold {
        job: String,
        workflow: String,
        workflow_id: Uuid,
        status: JobStatus,
    },

    /// The selected workflow is in a state the action does not apply to (a rerun of a
    /// running workflow, a cancel of a finished one).
    #[error("workflow `{workflow}` is {status:?}: {reason}")]
    WorkflowState {
        workflow: String,
        workflow_id: Uuid,
        status: WorkflowStatus,
        reason: &'static str,
    },

    /// The [`SendGuard`] refused (the claim could not be marked sending): nothing was sent.
    #[error("not sent: {0}")]
    Guard(#[source] StoreError),

    /// The store could not say whether a pipeline is recorded for another trigger
    /// (reconciliation stops; try again later).
    #[error("trigger history unavailable: {0}")]
    Ledger(#[source] StoreError),

    /// CircleCI's error (ambiguous only when a side effect may have happened).
    #[error(transparent)]
    CircleCi(#[from] CircleCiError),
}

impl ActionError {
    pub(crate) fn invalid_target(reason: impl Into<String>) -> Self {
        ActionError::InvalidTarget {
            reason: reason.into(),
        }
    }

    /// Whether the same action may succeed later. Selection failures are final, except an
    /// approval job the workflow has not reached yet (it becomes `on_hold` when it does).
    pub fn is_retryable(&self) -> bool {
        match self {
            ActionError::CircleCi(error) => error.is_retryable(),
            ActionError::Ledger(_) => true,
            ActionError::JobNotOnHold { status, .. } => matches!(
                status,
                JobStatus::Blocked | JobStatus::Queued | JobStatus::NotRunning
            ),
            _ => false,
        }
    }

    /// Whether the side effect may have happened despite the error (reconcile; never resend).
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, ActionError::CircleCi(error) if error.is_ambiguous())
    }
}

/// Called right before the one side-effecting request (create, approve, rerun, cancel) is
/// sent. If it errors, nothing is sent and [`Actions::perform`] returns [`ActionError::Guard`].
#[async_trait]
pub trait SendGuard: Send + Sync {
    async fn before_send(&self) -> Result<(), StoreError>;
}

/// A guard that always lets the request go (tools, tests, `explain`-style dry runs don't
/// need one; triggers use their claim).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGuard;

#[async_trait]
impl SendGuard for NoGuard {
    async fn before_send(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Whether a CircleCI pipeline id is already recorded for another trigger (the store answers).
#[async_trait]
pub trait PipelineLedger: Send + Sync {
    async fn is_recorded_elsewhere(&self, pipeline_id: Uuid) -> Result<bool, StoreError>;
}

/// Limits of the reads an action makes.
#[derive(Debug, Clone)]
pub struct ActionOptions {
    /// Pages of a project's pipeline list read when selecting by revision or latest tag
    /// (CircleCI pages hold 20 pipelines).
    pub max_pipeline_pages: usize,
    /// Pages read when reconciling an ambiguous create (the list stops at the window anyway).
    pub max_reconcile_pages: usize,
}

impl Default for ActionOptions {
    fn default() -> Self {
        Self {
            max_pipeline_pages: 5,
            max_reconcile_pages: 10,
        }
    }
}

/// Performs actions on CircleCI through the [`CircleCi`] port.
#[derive(Clone)]
pub struct Actions {
    circleci: Arc<dyn CircleCi>,
    options: ActionOptions,
}

impl std::fmt::Debug for Actions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actions")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Actions {
    pub fn new(circleci: Arc<dyn CircleCi>) -> Self {
        Self::with_options(circleci, ActionOptions::default())
    }

    pub fn with_options(circleci: Arc<dyn CircleCi>, options: ActionOptions) -> Self {
        Self { circleci, options }
    }

    /// The CircleCI port these actions use (for reads outside an action, e.g. the scheduler's
    /// concurrency check).
    pub fn circleci(&self) -> &Arc<dyn CircleCi> {
        &self.circleci
    }
}

/// A pipeline number as the store keeps it (CircleCI numbers are positive).
pub(crate) fn pipeline_number(number: i64) -> u64 {
    u64::try_from(number).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{CircleCiSettings, TargetSpec};

    fn target(workflow: Option<&str>) -> Target {
        let spec = TargetSpec {
            project: "gh/acme/deploy".into(),
            branch: None,
            tag: None,
            workflow: workflow.map(str::to_owned),
            parameters: BTreeMap::new(),
            definition_id: None,
            config: None,
            checkout: None,
            token: None,
        };
        Target::resolve(&spec, &CircleCiSettings::default()).unwrap()
    }

    #[test]
    fn the_workflow_filter_falls_back_to_the_target_sugar() {
        let approve = Action::Approve {
            target: target(Some("deploy")),
            job: "hold-release".into(),
            select: WorkflowSelector::Latest,
            workflow: None,
        };
        assert_eq!(approve.kind(), ActionKind::Approve);
        assert_eq!(approve.workflow_filter(), Some("deploy"));
        let record = approve.record_target();
        assert_eq!(record.job.as_deref(), Some("hold-release"));
        assert_eq!(record.workflow.as_deref(), Some("deploy"));

        let cancel = Action::Cancel {
            target: target(Some("deploy")),
            select: WorkflowSelector::Latest,
            workflow: Some("build".into()),
        };
        assert_eq!(cancel.workflow_filter(), Some("build"));
        let pipeline = Action::Pipeline {
            target: target(Some("nightly")),
        };
        assert_eq!(pipeline.workflow_filter(), None);
        assert_eq!(
            pipeline.record_target().workflow.as_deref(),
            Some("nightly")
        );
    }

    #[test]
    fn actions_and_outcomes_serialise_readably_and_round_trip() {
        let pipeline = Uuid::from_u128(1);
        let action = Action::Rerun {
            target: target(None),
            rerun: RerunJobs::Jobs(vec!["deploy".into()]),
            select: WorkflowSelector::Pipelines(vec![pipeline]),
            workflow: Some("release".into()),
        };
        let json = serde_json::to_value(&action).unwrap();
        assert_eq!(json["action"], "rerun");
        assert_eq!(json["rerun"], serde_json::json!({"jobs": ["deploy"]}));
        assert_eq!(json["select"], serde_json::json!({"pipelines": [pipeline]}));
        assert_eq!(serde_json::from_value::<Action>(json).unwrap(), action);

        let outcome = ActionOutcome::Canceled {
            pipeline_id: pipeline,
            pipeline_number: 7,
            workflow_id: Uuid::from_u128(2),
            workflow_name: "release".into(),
            read_back: false,
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["outcome"], "canceled");
        assert_eq!(outcome.pipeline_id(), pipeline);
        assert_eq!(outcome.pipeline_number(), 7);
        assert_eq!(
            serde_json::from_value::<ActionOutcome>(json).unwrap(),
            outcome
        );
    }

    #[test]
    fn only_an_unreached_approval_job_or_a_transient_circleci_error_is_retryable() {
        let blocked = ActionError::JobNotOnHold {
            job: "hold".into(),
            workflow: "deploy".into(),
            workflow_id: Uuid::nil(),
            status: JobStatus::Blocked,
        };
        assert!(blocked.is_retryable());
        let approved = ActionError::JobNotOnHold {
            status: JobStatus::Success,
            job: "hold".into(),
            workflow: "deploy".into(),
            workflow_id: Uuid::nil(),
        };
        assert!(!approved.is_retryable());
        assert!(!ActionError::NoMatch { what: "x".into() }.is_retryable());
        let several = ActionError::SeveralMatches {
            what: "x".into(),
            candidates: vec![Uuid::nil(), Uuid::max()],
        };
        assert!(!several.is_retryable());
        assert!(!several.is_ambiguous());
        assert!(several.to_string().starts_with("2 workflows match"));
        let ambiguous = ActionError::from(CircleCiError::Ambiguous {
            operation: "approve job",
            status: Some(502),
            reason: "502".into(),
        });
        assert!(ambiguous.is_ambiguous());
        assert!(!ambiguous.is_retryable());
        let server = ActionError::from(CircleCiError::Server {
            status: 503,
            message: "down".into(),
        });
        assert!(server.is_retryable());
    }
}
