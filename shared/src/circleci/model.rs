//! What CircleCI answers, as typed values.
//!
//! Shapes follow CircleCI's OpenAPI document, read leniently where reality differs (see the
//! errata in [`super`]): optional where the spec says required but CircleCI omits or nulls
//! the field, and an `Unknown` variant on every enum so a new status does not break a read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::ProjectSlug;

/// The answer to a pipeline trigger (`201`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedPipeline {
    pub id: Uuid,
    pub number: i64,
    pub state: PipelineState,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineState {
    Created,
    Errored,
    SetupPending,
    Setup,
    Pending,
    #[serde(other)]
    Unknown,
}

/// A pipeline as `GET /pipeline/{id}` and the project pipeline list return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: Uuid,
    pub number: i64,
    pub project_slug: String,
    pub state: PipelineState,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// Why an `errored` pipeline failed (e.g. an undeclared parameter).
    #[serde(default)]
    pub errors: Vec<PipelineError>,
    pub trigger: PipelineTrigger,
    #[serde(default)]
    pub vcs: Option<PipelineVcs>,
    #[serde(default)]
    pub trigger_parameters: Option<BTreeMap<String, serde_json::Value>>,
}

impl Pipeline {
    /// The project slug parsed (`None` if CircleCI sent something that is not one).
    pub fn project(&self) -> Option<ProjectSlug> {
        self.project_slug.parse().ok()
    }

    pub fn branch(&self) -> Option<&str> {
        self.vcs.as_ref()?.branch.as_deref()
    }

    pub fn revision(&self) -> Option<&str> {
        self.vcs.as_ref()?.revision.as_deref()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineError {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineTrigger {
    #[serde(rename = "type")]
    pub kind: TriggerKind,
    pub received_at: DateTime<Utc>,
    pub actor: Actor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    ScheduledPipeline,
    Explicit,
    Api,
    Webhook,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub login: String,
    #[serde(default)]
    pub avatar_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineVcs {
    #[serde(default)]
    pub provider_name: Option<String>,
    #[serde(default)]
    pub origin_repository_url: Option<String>,
    #[serde(default)]
    pub target_repository_url: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
}

/// A workflow of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: Uuid,
    pub name: String,
    pub status: WorkflowStatus,
    pub pipeline_id: Uuid,
    pub pipeline_number: i64,
    pub project_slug: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub stopped_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_by: Option<Uuid>,
    #[serde(default)]
    pub canceled_by: Option<Uuid>,
    #[serde(default)]
    pub errored_by: Option<Uuid>,
    #[serde(default)]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    Success,
    Running,
    NotRun,
    Failed,
    Error,
    Failing,
    OnHold,
    Canceled,
    Unauthorized,
    #[serde(other)]
    Unknown,
}

impl WorkflowStatus {
    /// A workflow in one of these states will not change again without a rerun.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Success
                | WorkflowStatus::Failed
                | WorkflowStatus::Error
                | WorkflowStatus::Canceled
                | WorkflowStatus::Unauthorized
                | WorkflowStatus::NotRun
        )
    }
}

/// A job of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: JobKind,
    pub status: JobStatus,
    #[serde(default)]
    pub job_number: Option<i64>,
    /// Errata: absent on an approval job that is still on hold.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub stopped_at: Option<DateTime<Utc>>,
    /// Set on approval jobs: the id to pass to the approve call.
    #[serde(default)]
    pub approval_request_id: Option<Uuid>,
    #[serde(default)]
    pub dependencies: Vec<Uuid>,
    #[serde(default)]
    pub approved_by: Option<Uuid>,
    #[serde(default)]
    pub canceled_by: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Build,
    Approval,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Success,
    Running,
    NotRun,
    Failed,
    Retried,
    Queued,
    NotRunning,
    InfrastructureFail,
    Timedout,
    OnHold,
    #[serde(rename = "terminated-unknown")]
    TerminatedUnknown,
    Blocked,
    Canceled,
    Unauthorized,
    #[serde(other)]
    Unknown,
}

/// `POST /workflow/{id}/rerun`: what to run again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerun {
    /// The whole workflow (a body naming neither jobs nor `from_failed`).
    Workflow,
    /// Only the failed jobs (and what depends on them).
    FromFailed,
    /// These jobs (by job id) and what depends on them.
    Jobs(Vec<Uuid>),
}

/// A project as `GET /project/{slug}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub organization_name: String,
    pub organization_slug: String,
    pub organization_id: Uuid,
    pub vcs_info: ProjectVcs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectVcs {
    pub vcs_url: String,
    pub provider: String,
    pub default_branch: String,
}

/// The token's user (`GET /me`): the actor of every pipeline the token starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub login: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// What to list from a project's pipelines (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineQuery {
    /// Only this branch (CircleCI filters server-side).
    pub branch: Option<String>,
    /// Stop at pipelines created before this instant (and leave them out).
    pub created_since: Option<DateTime<Utc>>,
    /// At most this many pages (default: the client's page limit).
    pub max_pages: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookEvent {
    WorkflowCompleted,
    JobCompleted,
}

/// An outbound webhook. Listing masks the signing secret, so it is not kept here: ours are
/// recognised by URL and events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    #[serde(rename = "verify-tls")]
    pub verify_tls: bool,
    pub scope: WebhookScope,
    #[serde(rename = "created-at")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "updated-at")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookScope {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
}
