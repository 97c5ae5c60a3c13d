//! A seam around every [`CircleCi`] call: [`Intercepted`] forwards each operation to the
//! client it wraps through an [`Interceptor`], which sees which call it is and may time it,
//! hold it or change its result. Fault tests (lost answers, a create that never returns) and
//! the benchmark's timing are interceptors, so the forwarding of the fourteen operations is
//! written once, here, and a new operation is added in one place.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    CircleCi, CircleCiError, CreatedPipeline, Job, NewWebhook, Pipeline, PipelineQuery,
    PipelineRequest, Project, Rerun, User, Webhook, WebhookUpdate, Workflow,
};
use crate::config::ProjectSlug;

/// The call being made (with the pipeline request, which the fault tests look at).
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    TriggerPipeline(&'a PipelineRequest),
    GetPipeline,
    ListPipelineWorkflows,
    GetWorkflow,
    ListWorkflowJobs,
    RerunWorkflow,
    ApproveJob,
    CancelWorkflow,
    GetProject,
    ListProjectPipelines,
    Me,
    CreateWebhook,
    ListWebhooks,
    UpdateWebhook,
}

impl Call<'_> {
    /// The name of a call a trigger performs at most once (start a pipeline, rerun,
    /// approve, cancel), as [`CircleCiError`] reports it; `None` for any other call.
    pub fn trigger_action(&self) -> Option<&'static str> {
        match self {
            Call::TriggerPipeline(_) => Some("trigger pipeline"),
            Call::RerunWorkflow => Some("rerun workflow"),
            Call::ApproveJob => Some("approve job"),
            Call::CancelWorkflow => Some("cancel workflow"),
            _ => None,
        }
    }
}

/// The wrapped client's call, not started until awaited.
pub type Forward<'a, T> = Pin<Box<dyn Future<Output = Result<T, CircleCiError>> + Send + 'a>>;

/// Runs each call made through [`Intercepted`].
#[async_trait]
pub trait Interceptor: Send + Sync {
    /// Runs `call`: normally awaits `forward` (the wrapped client's call) and returns its
    /// result, with whatever the interceptor does around it.
    async fn around<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        forward: Forward<'a, T>,
    ) -> Result<T, CircleCiError>;
}

/// A [`CircleCi`] that runs every call of `inner` through `interceptor`.
pub struct Intercepted<I> {
    inner: Arc<dyn CircleCi>,
    interceptor: I,
}

impl<I: Interceptor> Intercepted<I> {
    pub fn new(inner: Arc<dyn CircleCi>, interceptor: I) -> Self {
        Self { inner, interceptor }
    }

    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }
}

#[async_trait]
impl<I: Interceptor> CircleCi for Intercepted<I> {
    async fn trigger_pipeline(
        &self,
        token: &str,
        request: &PipelineRequest,
    ) -> Result<CreatedPipeline, CircleCiError> {
        let forward = self.inner.trigger_pipeline(token, request);
        self.interceptor
            .around(Call::TriggerPipeline(request), forward)
            .await
    }

    async fn get_pipeline(
        &self,
        token: &str,
        pipeline_id: Uuid,
    ) -> Result<Pipeline, CircleCiError> {
        let forward = self.inner.get_pipeline(token, pipeline_id);
        self.interceptor.around(Call::GetPipeline, forward).await
    }

    async fn list_pipeline_workflows(
        &self,
        token: &str,
        pipeline_id: Uuid,
    ) -> Result<Vec<Workflow>, CircleCiError> {
        let forward = self.inner.list_pipeline_workflows(token, pipeline_id);
        self.interceptor
            .around(Call::ListPipelineWorkflows, forward)
            .await
    }

    async fn get_workflow(
        &self,
        token: &str,
        workflow_id: Uuid,
    ) -> Result<Workflow, CircleCiError> {
        let forward = self.inner.get_workflow(token, workflow_id);
        self.interceptor.around(Call::GetWorkflow, forward).await
    }

    async fn list_workflow_jobs(
        &self,
        token: &str,
        workflow_id: Uuid,
    ) -> Result<Vec<Job>, CircleCiError> {
        let forward = self.inner.list_workflow_jobs(token, workflow_id);
        self.interceptor
            .around(Call::ListWorkflowJobs, forward)
            .await
    }

    async fn rerun_workflow(
        &self,
        token: &str,
        workflow_id: Uuid,
        rerun: &Rerun,
    ) -> Result<Uuid, CircleCiError> {
        let forward = self.inner.rerun_workflow(token, workflow_id, rerun);
        self.interceptor.around(Call::RerunWorkflow, forward).await
    }

    async fn approve_job(
        &self,
        token: &str,
        workflow_id: Uuid,
        approval_request_id: Uuid,
    ) -> Result<(), CircleCiError> {
        let forward = self
            .inner
            .approve_job(token, workflow_id, approval_request_id);
        self.interceptor.around(Call::ApproveJob, forward).await
    }

    async fn cancel_workflow(&self, token: &str, workflow_id: Uuid) -> Result<(), CircleCiError> {
        let forward = self.inner.cancel_workflow(token, workflow_id);
        self.interceptor.around(Call::CancelWorkflow, forward).await
    }

    async fn get_project(
        &self,
        token: &str,
        project: &ProjectSlug,
    ) -> Result<Project, CircleCiError> {
        let forward = self.inner.get_project(token, project);
        self.interceptor.around(Call::GetProject, forward).await
    }

    async fn list_project_pipelines(
        &self,
        token: &str,
        project: &ProjectSlug,
        query: &PipelineQuery,
    ) -> Result<Vec<Pipeline>, CircleCiError> {
        let forward = self.inner.list_project_pipelines(token, project, query);
        self.interceptor
            .around(Call::ListProjectPipelines, forward)
            .await
    }

    async fn me(&self, token: &str) -> Result<User, CircleCiError> {
        let forward = self.inner.me(token);
        self.interceptor.around(Call::Me, forward).await
    }

    async fn create_webhook(
        &self,
        token: &str,
        webhook: &NewWebhook,
    ) -> Result<Webhook, CircleCiError> {
        let forward = self.inner.create_webhook(token, webhook);
        self.interceptor.around(Call::CreateWebhook, forward).await
    }

    async fn list_webhooks(
        &self,
        token: &str,
        project_id: Uuid,
    ) -> Result<Vec<Webhook>, CircleCiError> {
        let forward = self.inner.list_webhooks(token, project_id);
        self.interceptor.around(Call::ListWebhooks, forward).await
    }

    async fn update_webhook(
        &self,
        token: &str,
        webhook_id: Uuid,
        update: &WebhookUpdate,
    ) -> Result<Webhook, CircleCiError> {
        let forward = self.inner.update_webhook(token, webhook_id, update);
        self.interceptor.around(Call::UpdateWebhook, forward).await
    }
}
