//! The CircleCI API v2 client: the port [`CircleCi`] and its reqwest adapter [`CircleCiClient`].
//!
//! Every operation names the token it uses (a name in the tokens secret, e.g. `default`):
//! several tokens may exist, and what a pipeline may do (restricted contexts) depends on
//! the token's user.
//!
//! ## Errata: where CircleCI and its OpenAPI document differ
//! The spec marks nullable fields the Swagger 2 way (`x-nullable: true`); they are read as
//! `Option`. Beyond that, the reads here are lenient where reality is:
//! - `next_page_token` is `null` (not absent) on the last page; an empty string is treated
//!   the same way.
//! - Jobs that have not started (`blocked`, `queued`, `not_run`) and approval jobs have no
//!   `started_at` although the spec requires it ([`Job::started_at`] is optional).
//! - `GET /workflow/{id}/job` and `GET /webhook` document no `page-token` parameter but
//!   answer with `next_page_token`; the client follows it when it is not null.
//! - Error bodies are `{"message": ..}` on most endpoints and `{"error": ..}` on a few;
//!   both are read.
//! - `pipeline/run` answers `200 {"message": ..}` when it starts nothing (CI skip):
//!   reported as [`CircleCiError::NotTriggered`], never as success.
//! - A `201` pipeline can still end `errored` (e.g. an undeclared parameter): callers read
//!   it back with [`CircleCi::get_pipeline`].
//! - Enums (states, statuses, trigger kinds) have an `Unknown` catch-all so a value
//!   CircleCI adds later does not fail a read.

pub mod budget;
mod error;
mod http;
pub mod intercept;
mod model;
pub mod pacing;
mod request;

use async_trait::async_trait;
use uuid::Uuid;

pub use budget::SendBudget;
pub use error::CircleCiError;
pub use http::{CircleCiClient, ClientOptions};
pub use model::{
    Actor, CreatedPipeline, Job, JobKind, JobStatus, Pipeline, PipelineError, PipelineQuery,
    PipelineState, PipelineTrigger, PipelineVcs, Project, ProjectVcs, Rerun, TriggerKind, User,
    Webhook, WebhookEvent, WebhookScope, Workflow, WorkflowStatus,
};
pub use pacing::{BucketState, RateDefaults};
pub use request::{
    GitRef, NewWebhook, PipelineRequest, RunOptions, WebhookUpdate, check_parameters,
    encode_segment, parameters_from_json, project_path, rerun_body,
};

use crate::config::ProjectSlug;

/// The CircleCI operations the product uses.
///
/// For the operations that must happen at most once (triggers, reruns, approvals, cancels,
/// webhook creates), an error other than [`CircleCiError::Ambiguous`] means nothing
/// happened (see [`CircleCiError`]). The client resends those only when CircleCI provably
/// did not act (connection refused, 429, 401 before a token re-read).
#[async_trait]
pub trait CircleCi: Send + Sync {
    /// Starts a pipeline: the legacy endpoint, or `pipeline/run` when `request.run` is set.
    /// `Err(NotTriggered)` when CircleCI accepted the request but started nothing.
    async fn trigger_pipeline(
        &self,
        token: &str,
        request: &PipelineRequest,
    ) -> Result<CreatedPipeline, CircleCiError>;

    async fn get_pipeline(&self, token: &str, pipeline_id: Uuid)
    -> Result<Pipeline, CircleCiError>;

    /// Every workflow of the pipeline (all pages).
    async fn list_pipeline_workflows(
        &self,
        token: &str,
        pipeline_id: Uuid,
    ) -> Result<Vec<Workflow>, CircleCiError>;

    async fn get_workflow(&self, token: &str, workflow_id: Uuid)
    -> Result<Workflow, CircleCiError>;

    /// Every job of the workflow (all pages).
    async fn list_workflow_jobs(
        &self,
        token: &str,
        workflow_id: Uuid,
    ) -> Result<Vec<Job>, CircleCiError>;

    /// Reruns a workflow; returns the id of the new workflow.
    async fn rerun_workflow(
        &self,
        token: &str,
        workflow_id: Uuid,
        rerun: &Rerun,
    ) -> Result<Uuid, CircleCiError>;

    /// Approves an on-hold approval job (`approval_request_id` from [`Job`]).
    async fn approve_job(
        &self,
        token: &str,
        workflow_id: Uuid,
        approval_request_id: Uuid,
    ) -> Result<(), CircleCiError>;

    async fn cancel_workflow(&self, token: &str, workflow_id: Uuid) -> Result<(), CircleCiError>;

    async fn get_project(
        &self,
        token: &str,
        project: &ProjectSlug,
    ) -> Result<Project, CircleCiError>;

    /// The project's pipelines, newest first, optionally of one branch and since an instant.
    async fn list_project_pipelines(
        &self,
        token: &str,
        project: &ProjectSlug,
        query: &PipelineQuery,
    ) -> Result<Vec<Pipeline>, CircleCiError>;

    /// The token's user: the actor of the pipelines this token starts (for reconciliation).
    async fn me(&self, token: &str) -> Result<User, CircleCiError>;

    async fn create_webhook(
        &self,
        token: &str,
        webhook: &NewWebhook,
    ) -> Result<Webhook, CircleCiError>;

    /// The project's webhooks (signing secrets masked, so not returned).
    async fn list_webhooks(
        &self,
        token: &str,
        project_id: Uuid,
    ) -> Result<Vec<Webhook>, CircleCiError>;

    async fn update_webhook(
        &self,
        token: &str,
        webhook_id: Uuid,
        update: &WebhookUpdate,
    ) -> Result<Webhook, CircleCiError>;
}
