//! Trigger records as the HTTP API shows them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::{ProjectSlug, Vcs};
use crate::store::{TriggerRecord, TriggerStatus};

/// What was decided about a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TriggerStatus)]
pub enum TriggerState {
    /// Recorded, not decided yet.
    Received,
    /// Done on CircleCI (pipeline created, job approved, workflow rerun or canceled).
    Triggered,
    /// Deliberately not done.
    Skipped,
    /// Refused (authentication, scope, validation, limits); nothing was done.
    Rejected,
    /// Tried and failed; nothing was done.
    Failed,
    /// CircleCI may or may not have acted; an operator reconciles it. Do not retry with a new key.
    Ambiguous,
    /// CircleCI accepted the request but started nothing (e.g. `[ci skip]`).
    NotTriggered,
}

impl From<TriggerStatus> for TriggerState {
    fn from(status: TriggerStatus) -> Self {
        match status {
            TriggerStatus::Received => TriggerState::Received,
            TriggerStatus::Triggered => TriggerState::Triggered,
            TriggerStatus::Skipped => TriggerState::Skipped,
            TriggerStatus::Rejected => TriggerState::Rejected,
            TriggerStatus::Failed => TriggerState::Failed,
            TriggerStatus::Ambiguous => TriggerState::Ambiguous,
            TriggerStatus::NotTriggered => TriggerState::NotTriggered,
        }
    }
}

/// The CircleCI pipeline a trigger created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Pipeline)]
pub struct PipelineView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub number: Option<u64>,
    /// The pipeline in the CircleCI web app.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub url: Option<String>,
}

/// One workflow of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Workflow)]
pub struct WorkflowView {
    pub id: String,
    pub name: String,
    /// CircleCI's status: `running`, `on_hold`, `success`, `failed`, `canceled`, ...
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stopped_at: Option<DateTime<Utc>>,
}

/// One trigger: a call of an endpoint and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Trigger)]
pub struct TriggerView {
    pub id: Uuid,
    pub status: TriggerState,
    /// The endpoint called.
    pub endpoint: String,
    /// `http` (a client) or `cli` (an operator).
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub client: Option<String>,
    /// `pipeline`, `approve`, `rerun` or `cancel`.
    pub action: String,
    /// Project slug, e.g. `gh/acme/deploy`.
    pub project: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub workflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub job: Option<String>,
    /// Pipeline parameters as sent (secret-looking names redacted).
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Why it was rejected, skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// The pipeline this trigger created (pipeline endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub pipeline: Option<PipelineView>,
    /// The existing pipeline acted on (approve, rerun, cancel endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub acted_on_pipeline: Option<String>,
    pub workflows: Vec<WorkflowView>,
    /// Every workflow of the pipeline has finished.
    pub pipeline_final: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TriggerView {
    /// `app_url`: the CircleCI web app base (see [`app_url`]).
    pub fn of(record: &TriggerRecord, app_url: &str) -> Self {
        let project = record.target.project.parse::<ProjectSlug>().ok();
        Self {
            id: record.id.as_uuid(),
            status: record.status.into(),
            endpoint: record.source.name.clone(),
            source: record.source.kind.as_str().to_owned(),
            client: record.detail.client.clone(),
            action: record.action.as_str().to_owned(),
            project: record.target.project.clone(),
            branch: record.target.branch.clone(),
            tag: record.target.tag.clone(),
            workflow: record.target.workflow.clone(),
            job: record.target.job.clone(),
            parameters: record.parameters.clone(),
            reason: record.reason.clone(),
            pipeline: record.pipeline.as_ref().map(|pipeline| PipelineView {
                id: pipeline.id.clone(),
                number: pipeline.number,
                url: pipeline
                    .url
                    .clone()
                    .or_else(|| Some(pipeline_url(app_url, project.as_ref()?, pipeline.number?))),
            }),
            acted_on_pipeline: record.detail.acted_on_pipeline.map(|id| id.to_string()),
            workflows: record
                .workflows
                .iter()
                .map(|w| WorkflowView {
                    id: w.id.clone(),
                    name: w.name.clone(),
                    status: w.status.clone(),
                    stopped_at: w.stopped_at,
                })
                .collect(),
            pipeline_final: record.pipeline_final,
            idempotency_key: record.detail.idempotency_key.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// The web app's base URL for an API base URL: `https://circleci.com/api/v2` →
/// `https://app.circleci.com`; a server install serves its app on its own host.
pub fn app_url(api_url: &str) -> String {
    let base = api_url.trim_end_matches('/');
    let root = base.strip_suffix("/api/v2").unwrap_or(base);
    match root.strip_prefix("https://") {
        Some("circleci.com") => "https://app.circleci.com".to_owned(),
        _ => root.to_owned(),
    }
}

/// `<app>/pipelines/<vcs>/<org>/<repo>/<number>` (the app spells VCS names out).
pub fn pipeline_url(app_url: &str, project: &ProjectSlug, number: u64) -> String {
    let vcs = match project.vcs {
        Vcs::GitHub => "github",
        Vcs::Bitbucket => "bitbucket",
        Vcs::CircleCi => "circleci",
    };
    format!(
        "{app_url}/pipelines/{vcs}/{}/{}/{number}",
        project.org, project.repo
    )
}

/// One page of history, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TriggerPage {
    pub items: Vec<TriggerView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_urls_point_at_the_web_app() {
        let slug: ProjectSlug = "gh/acme/deploy".parse().unwrap();
        let app = app_url("https://circleci.com/api/v2/");
        assert_eq!(
            pipeline_url(&app, &slug, 42),
            "https://app.circleci.com/pipelines/github/acme/deploy/42"
        );
        assert_eq!(
            app_url("https://ci.example.com/api/v2"),
            "https://ci.example.com"
        );
    }
}
