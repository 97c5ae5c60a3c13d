//! Read-only snapshots of simulator state, for assertions in tests.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::JobKind;

/// Pipeline `state` as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineState {
    /// Config compiled; workflows (if any) were created.
    Created,
    /// Config or parameters were rejected; see `errors`.
    Errored,
    /// Set-up workflow pending.
    SetupPending,
    /// Set-up workflow running.
    Setup,
    /// Accepted, not yet compiled (what create responses report).
    Pending,
}

impl PipelineState {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Created => "created",
            PipelineState::Errored => "errored",
            PipelineState::SetupPending => "setup-pending",
            PipelineState::Setup => "setup",
            PipelineState::Pending => "pending",
        }
    }
}

/// Workflow `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// All jobs succeeded.
    Success,
    /// Jobs are running.
    Running,
    /// Nothing ran.
    NotRun,
    /// A job failed and nothing is running any more.
    Failed,
    /// Config or infrastructure error (e.g. jobs that can never start).
    Error,
    /// A job failed while others still run.
    Failing,
    /// Waiting for an approval.
    OnHold,
    /// Canceled through the API.
    Canceled,
    /// The actor lacked permission (never produced by the simulator today).
    Unauthorized,
}

impl WorkflowStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Success => "success",
            WorkflowStatus::Running => "running",
            WorkflowStatus::NotRun => "not_run",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Error => "error",
            WorkflowStatus::Failing => "failing",
            WorkflowStatus::OnHold => "on_hold",
            WorkflowStatus::Canceled => "canceled",
            WorkflowStatus::Unauthorized => "unauthorized",
        }
    }

    /// Whether the workflow will not change any more (on its own or by approval).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Success
                | WorkflowStatus::NotRun
                | WorkflowStatus::Failed
                | WorkflowStatus::Error
                | WorkflowStatus::Canceled
                | WorkflowStatus::Unauthorized
        )
    }
}

/// Job `status` (the subset the simulator produces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Succeeded (or approved, for approval jobs).
    Success,
    /// Running.
    Running,
    /// Never ran (its workflow ended first).
    NotRun,
    /// Failed.
    Failed,
    /// Waiting for approval.
    OnHold,
    /// Waiting for the jobs it requires.
    Blocked,
    /// Canceled while running.
    Canceled,
}

impl JobStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::Running => "running",
            JobStatus::NotRun => "not_run",
            JobStatus::Failed => "failed",
            JobStatus::OnHold => "on_hold",
            JobStatus::Blocked => "blocked",
            JobStatus::Canceled => "canceled",
        }
    }
}

/// A git reference (`config` / `checkout` of `pipeline/run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum GitRef {
    /// A branch name.
    Branch(String),
    /// A tag name.
    Tag(String),
}

/// Which endpoint created a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TriggerEndpoint {
    /// `POST /project/{slug}/pipeline`.
    Legacy,
    /// `POST /project/{provider}/{org}/{project}/pipeline/run`.
    Run {
        /// The definition used (the project's default if the request named none).
        definition_id: Uuid,
        /// `config` ref, if given.
        config: Option<GitRef>,
        /// `checkout` ref, if given.
        checkout: Option<GitRef>,
    },
}

/// A created pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineView {
    /// Pipeline id.
    pub id: Uuid,
    /// Per-project number.
    pub number: i64,
    /// Project slug, short form (`gh/org/repo`).
    pub project_slug: String,
    /// Branch, if any.
    pub branch: Option<String>,
    /// Tag, if any.
    pub tag: Option<String>,
    /// Parameters exactly as sent.
    pub parameters: Map<String, Value>,
    /// `created` or `errored`.
    pub state: PipelineState,
    /// Error messages when errored.
    pub errors: Vec<String>,
    /// Creation time (simulated clock).
    pub created_at: DateTime<Utc>,
    /// Login of the token's user.
    pub created_by: String,
    /// Name of the token used.
    pub token_name: String,
    /// Commit SHA the pipeline ran on.
    pub revision: String,
    /// Endpoint used.
    pub endpoint: TriggerEndpoint,
}

/// A job inside a workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// Job id.
    pub id: Uuid,
    /// Job name.
    pub name: String,
    /// Build or approval.
    pub kind: JobKind,
    /// Status now.
    pub status: JobStatus,
    /// Job number (build jobs that started).
    pub job_number: Option<i64>,
    /// Approval request id (approval jobs).
    pub approval_request_id: Option<Uuid>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it stopped.
    pub stopped_at: Option<DateTime<Utc>>,
    /// 0 for the first run, +1 per rerun of this job.
    pub attempt: u32,
}

/// A workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowView {
    /// Workflow id.
    pub id: Uuid,
    /// Pipeline id.
    pub pipeline_id: Uuid,
    /// Name.
    pub name: String,
    /// Status now.
    pub status: WorkflowStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it reached a final status.
    pub stopped_at: Option<DateTime<Utc>>,
    /// The workflow this one reruns.
    pub rerun_of: Option<Uuid>,
    /// Jobs in declaration order.
    pub jobs: Vec<JobView>,
}

/// One request the API received. Tokens are recorded by name, never by value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// Method, upper case.
    pub method: String,
    /// Path as received (still percent-encoded).
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// JSON body, if the body was JSON.
    pub body: Option<Value>,
    /// Login of the authenticated user.
    pub user: Option<String>,
    /// Name of the token used (`None`: no or unknown token).
    pub token_name: Option<String>,
    /// Request headers other than credentials, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Status answered.
    pub status: u16,
    /// Simulated time of arrival.
    pub at: DateTime<Utc>,
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    /// Webhook id.
    pub webhook_id: Uuid,
    /// Target URL.
    pub url: String,
    /// `workflow-completed` or `job-completed`.
    pub event_type: String,
    /// The event's top-level `id` (the same for duplicates and redeliveries).
    pub event_id: Uuid,
    /// Payload.
    pub body: Value,
    /// `circleci-signature` header sent.
    pub signature: String,
    /// HTTP status, or `None` on a transport error / timeout.
    pub status: Option<u16>,
    /// Transport error, if any.
    pub error: Option<String>,
    /// 1-based attempt number for this event and webhook.
    pub attempt: u32,
}

/// Counters since start (or the last `clear_requests`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// API requests received.
    pub requests: u64,
    /// 429 answers sent.
    pub rate_limited: u64,
    /// Injected failures (`fail_next`, `failure_ratio`, `create_then_502`).
    pub injected_failures: u64,
    /// Pipelines created.
    pub pipelines_created: u64,
    /// Webhook delivery attempts.
    pub deliveries: u64,
    /// The most API requests being answered at the same time (with `latency` set, whether
    /// a client sends side by side or one after another).
    pub most_in_flight: u64,
}

/// A registered webhook, secret included (for test assertions; the API masks it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookView {
    /// Webhook id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Target URL.
    pub url: String,
    /// Events subscribed to.
    pub events: Vec<String>,
    /// Signing secret, unmasked.
    pub signing_secret: String,
    /// `verify-tls`.
    pub verify_tls: bool,
    /// Project id (scope).
    pub project_id: Uuid,
}
