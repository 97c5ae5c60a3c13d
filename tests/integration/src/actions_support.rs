//! Helpers for the targets-and-actions tests (`tests/actions.rs`): guards, a pipeline ledger,
//! and a port wrapper that loses CircleCI's answer after the simulator has acted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use circleci_sim::{RecordedRequest, Simulator};
use shared::actions::{PipelineLedger, SendGuard};
use shared::circleci::{
    CircleCi, CircleCiError, CreatedPipeline, Job, NewWebhook, Pipeline, PipelineQuery,
    PipelineRequest, Project, Rerun, User, Webhook, WebhookUpdate, Workflow,
};
use shared::config::ProjectSlug;
use uuid::Uuid;

/// The requests with side effects (every POST) among `requests`.
pub fn posts(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    requests.iter().filter(|r| r.method == "POST").collect()
}

/// A guard that notes how many requests the simulator had received when it was asked,
/// and lets the request go or refuses it.
pub struct RecordingGuard {
    sim: Simulator,
    refuse: Option<String>,
    asked_at: Mutex<Vec<usize>>,
}

impl RecordingGuard {
    pub fn allowing(sim: &Simulator) -> Self {
        Self {
            sim: sim.clone(),
            refuse: None,
            asked_at: Mutex::new(Vec::new()),
        }
    }

    pub fn refusing(sim: &Simulator, reason: &str) -> Self {
        Self {
            refuse: Some(reason.to_owned()),
            ..Self::allowing(sim)
        }
    }

    /// The simulator's request count at each call of the guard.
    pub fn asked_at(&self) -> Vec<usize> {
        self.asked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl SendGuard for RecordingGuard {
    async fn before_send(&self) -> Result<(), String> {
        self.asked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(self.sim.requests().len());
        match &self.refuse {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}

/// Pipeline ids recorded for other triggers, as the store would answer.
#[derive(Default)]
pub struct RecordedElsewhere {
    ids: Mutex<HashSet<Uuid>>,
    pub asked: AtomicUsize,
    pub fail: AtomicBool,
}

impl RecordedElsewhere {
    pub fn with(ids: impl IntoIterator<Item = Uuid>) -> Self {
        Self {
            ids: Mutex::new(ids.into_iter().collect()),
            ..Self::default()
        }
    }
}

#[async_trait]
impl PipelineLedger for RecordedElsewhere {
    async fn is_recorded_elsewhere(&self, pipeline_id: Uuid) -> Result<bool, String> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err("store unavailable".into());
        }
        Ok(self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&pipeline_id))
    }
}

/// The real client, except that when armed, the next side-effecting call is sent (the
/// simulator acts on it) and its answer is then reported as lost (`Ambiguous`), as a
/// connection reset after CircleCI processed the request would be.
pub struct LosesAnswers {
    inner: Arc<dyn CircleCi>,
    armed: AtomicBool,
}

impl LosesAnswers {
    pub fn new(inner: Arc<dyn CircleCi>) -> Self {
        Self {
            inner,
            armed: AtomicBool::new(false),
        }
    }

    pub fn lose_next_answer(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn lost<T>(
        &self,
        operation: &'static str,
        result: Result<T, CircleCiError>,
    ) -> Result<T, CircleCiError> {
        match result {
            Ok(_) if self.armed.swap(false, Ordering::SeqCst) => Err(CircleCiError::Ambiguous {
                operation,
                status: None,
                reason: "the connection was reset after the request was sent (test)".into(),
            }),
            other => other,
        }
    }
}

#[async_trait]
impl CircleCi for LosesAnswers {
    async fn trigger_pipeline(
        &self,
        token: &str,
        request: &PipelineRequest,
    ) -> Result<CreatedPipeline, CircleCiError> {
        let result = self.inner.trigger_pipeline(token, request).await;
        self.lost("trigger pipeline", result)
    }

    async fn get_pipeline(
        &self,
        token: &str,
        pipeline_id: Uuid,
    ) -> Result<Pipeline, CircleCiError> {
        self.inner.get_pipeline(token, pipeline_id).await
    }

    async fn list_pipeline_workflows(
        &self,
        token: &str,
        pipeline_id: Uuid,
    ) -> Result<Vec<Workflow>, CircleCiError> {
        self.inner.list_pipeline_workflows(token, pipeline_id).await
    }

    async fn get_workflow(
        &self,
        token: &str,
        workflow_id: Uuid,
    ) -> Result<Workflow, CircleCiError> {
        self.inner.get_workflow(token, workflow_id).await
    }

    async fn list_workflow_jobs(
        &self,
        token: &str,
        workflow_id: Uuid,
    ) -> Result<Vec<Job>, CircleCiError> {
        self.inner.list_workflow_jobs(token, workflow_id).await
    }

    async fn rerun_workflow(
        &self,
        token: &str,
        workflow_id: Uuid,
        rerun: &Rerun,
    ) -> Result<Uuid, CircleCiError> {
        let result = self.inner.rerun_workflow(token, workflow_id, rerun).await;
        self.lost("rerun workflow", result)
    }

    async fn approve_job(
        &self,
        token: &str,
        workflow_id: Uuid,
        approval_request_id: Uuid,
    ) -> Result<(), CircleCiError> {
        let result = self
            .inner
            .approve_job(token, workflow_id, approval_request_id)
            .await;
        self.lost("approve job", result)
    }

    async fn cancel_workflow(&self, token: &str, workflow_id: Uuid) -> Result<(), CircleCiError> {
        let result = self.inner.cancel_workflow(token, workflow_id).await;
        self.lost("cancel workflow", result)
    }

    async fn get_project(
        &self,
        token: &str,
        project: &ProjectSlug,
    ) -> Result<Project, CircleCiError> {
        self.inner.get_project(token, project).await
    }

    async fn list_project_pipelines(
        &self,
        token: &str,
        project: &ProjectSlug,
        query: &PipelineQuery,
    ) -> Result<Vec<Pipeline>, CircleCiError> {
        self.inner
            .list_project_pipelines(token, project, query)
            .await
    }

    async fn me(&self, token: &str) -> Result<User, CircleCiError> {
        self.inner.me(token).await
    }

    async fn create_webhook(
        &self,
        token: &str,
        webhook: &NewWebhook,
    ) -> Result<Webhook, CircleCiError> {
        self.inner.create_webhook(token, webhook).await
    }

    async fn list_webhooks(
        &self,
        token: &str,
        project_id: Uuid,
    ) -> Result<Vec<Webhook>, CircleCiError> {
        self.inner.list_webhooks(token, project_id).await
    }

    async fn update_webhook(
        &self,
        token: &str,
        webhook_id: Uuid,
        update: &WebhookUpdate,
    ) -> Result<Webhook, CircleCiError> {
        self.inner.update_webhook(token, webhook_id, update).await
    }
}
