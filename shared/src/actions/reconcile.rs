//! Finding the pipeline an ambiguous create may have made, without ever creating another.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::select::{pipeline_branch, pipeline_tag};
use super::{ActionError, Actions, PipelineLedger, Target};
use crate::circleci::{GitRef, Pipeline, PipelineQuery, TriggerKind};

/// What reconciliation concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reconciled", rename_all = "snake_case")]
pub enum Reconciled {
    /// Exactly one pipeline fits: it is the one the create made.
    Adopted(Box<Pipeline>),
    /// None or several fit: an operator decides (`candidates` are pipeline ids).
    StillAmbiguous { candidates: Vec<Uuid> },
}

/// When the pipeline of an ambiguous create can have been created, on CircleCI's clock:
/// not before the claim was marked sending, not after the send's deadline (the client does
/// not start a request past it), each widened by the allowed clock skew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateWindow {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl CreateWindow {
    /// The window of a create whose claim was marked sending at `sent_at` and whose action
    /// ran under a deadline at most `budget` later.
    pub fn of_send(
        sent_at: DateTime<Utc>,
        budget: Duration,
        skew: Duration,
    ) -> Result<Self, ActionError> {
        let out_of_range = || ActionError::InvalidAction {
            reason: format!("reconciliation window of {budget:?} ± {skew:?} is out of range"),
        };
        let budget = TimeDelta::from_std(budget).map_err(|_| out_of_range())?;
        let skew = TimeDelta::from_std(skew).map_err(|_| out_of_range())?;
        let from = sent_at.checked_sub_signed(skew).ok_or_else(out_of_range)?;
        let until = sent_at
            .checked_add_signed(budget)
            .and_then(|at| at.checked_add_signed(skew))
            .ok_or_else(out_of_range)?;
        Ok(Self { from, until })
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at <= self.until
    }
}

impl Actions {
    /// After an ambiguous create: the pipeline list has no parameters (CircleCI echoes no
    /// marker of ours in general), so a candidate is a pipeline of the target's project and
    /// ref, started through the API by the token's user (`GET /me`), created inside the
    /// send's `window` (see [`CreateWindow`]), and not recorded for another trigger.
    /// Exactly one candidate is adopted; several are left to an operator.
    pub async fn reconcile_create(
        &self,
        target: &Target,
        window: CreateWindow,
        ledger: &dyn PipelineLedger,
    ) -> Result<Reconciled, ActionError> {
        let CreateWindow { from, until } = window;
        let me = self.circleci.me(&target.token).await?;
        let git_ref = match target.checkout_ref() {
            Some(git_ref) => git_ref.clone(),
            None => GitRef::Branch(
                self.circleci
                    .get_project(&target.token, &target.project)
                    .await?
                    .vcs_info
                    .default_branch,
            ),
        };
        let branch = match &git_ref {
            GitRef::Branch(branch) => Some(branch.clone()),
            GitRef::Tag(_) => None,
        };
        let listed = self
            .circleci
            .list_project_pipelines(
                &target.token,
                &target.project,
                &PipelineQuery {
                    branch,
                    created_since: Some(from),
                    max_pages: Some(self.options.max_reconcile_pages),
                },
            )
            .await?;
        let mut candidates = Vec::new();
        for pipeline in listed {
            let fits = pipeline.created_at >= from
                && pipeline.created_at <= until
                && pipeline
                    .project()
                    .is_some_and(|project| project.same_repo(&target.project))
                && pipeline
                    .trigger
                    .actor
                    .login
                    .eq_ignore_ascii_case(&me.login)
                // Ours are API triggers; schedules, pushes and UI runs by the same user are not.
                && matches!(pipeline.trigger.kind, TriggerKind::Api | TriggerKind::Unknown)
                && match &git_ref {
                    GitRef::Branch(branch) => pipeline_branch(&pipeline) == Some(branch.as_str()),
                    GitRef::Tag(tag) => pipeline_tag(&pipeline) == Some(tag.as_str()),
                };
            if !fits {
                continue;
            }
            let taken = ledger
                .is_recorded_elsewhere(pipeline.id)
                .await
                .map_err(ActionError::Ledger)?;
            if !taken {
                candidates.push(pipeline);
            }
        }
        Ok(match <[Pipeline; 1]>::try_from(candidates) {
            Ok([adopted]) => {
                tracing::info!(
                    project = %target.project,
                    pipeline = %adopted.id,
                    number = adopted.number,
                    "ambiguous create reconciled: adopting the one candidate"
                );
                Reconciled::Adopted(Box::new(adopted))
            }
            Err(candidates) => {
                tracing::warn!(
                    project = %target.project,
                    candidates = candidates.len(),
                    "ambiguous create left ambiguous"
                );
                Reconciled::StillAmbiguous {
                    candidates: candidates.iter().map(|p| p.id).collect(),
                }
            }
        })
    }
}
