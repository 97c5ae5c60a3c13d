//! [`Actions::perform`]: read what the action needs, pass the guard, send one request.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::select::SelectedWorkflow;
use super::{
    Action, ActionError, ActionOutcome, Actions, RerunJobs, SendGuard, Target, WorkflowSelector,
    pipeline_number,
};
use crate::circleci::{CircleCiError, Job, JobStatus, PipelineRequest, Rerun, WorkflowStatus};

/// An action with everything it needs read from CircleCI: exactly what would be sent.
#[derive(Debug, Clone)]
pub enum Prepared {
    Create {
        token: String,
        request: PipelineRequest,
    },
    Approve {
        token: String,
        selected: SelectedWorkflow,
        job: Job,
        approval_request_id: Uuid,
    },
    Rerun {
        token: String,
        selected: SelectedWorkflow,
        rerun: Rerun,
    },
    Cancel {
        token: String,
        selected: SelectedWorkflow,
    },
}

impl Actions {
    /// Performs `action`: selects what it acts on (reads only), then calls `guard` and, if
    /// it agrees, sends the one side-effecting request. Selection failures, a refused guard
    /// and every non-ambiguous CircleCI error mean nothing was changed.
    pub async fn perform(
        &self,
        action: &Action,
        guard: &dyn SendGuard,
    ) -> Result<ActionOutcome, ActionError> {
        let prepared = self.prepare(action).await?;
        guard.before_send().await.map_err(ActionError::Guard)?;
        self.send(prepared).await
    }

    /// Everything [`Actions::perform`] does before sending: the selection and the checks,
    /// without side effects (for `explain` and dry runs).
    pub async fn prepare(&self, action: &Action) -> Result<Prepared, ActionError> {
        let workflow = action.workflow_filter();
        match action {
            Action::Pipeline { target } => {
                let request = target.pipeline_request();
                request
                    .validate()
                    .map_err(|error| ActionError::invalid_target(error.to_string()))?;
                Ok(Prepared::Create {
                    token: target.token.clone(),
                    request,
                })
            }
            Action::Approve {
                target,
                job,
                select,
                ..
            } => {
                if job.is_empty() {
                    return Err(ActionError::InvalidAction {
                        reason: "approve needs the approval job's name".into(),
                    });
                }
                let approval = self.select_approval(target, select, workflow, job).await?;
                Ok(Prepared::Approve {
                    token: target.token.clone(),
                    selected: approval.selected,
                    job: approval.job,
                    approval_request_id: approval.approval_request_id,
                })
            }
            Action::Rerun {
                target,
                rerun,
                select,
                ..
            } => self.prepare_rerun(target, rerun, select, workflow).await,
            Action::Cancel { target, select, .. } => {
                let selected = self.select_workflow(target, select, workflow).await?;
                let status = selected.workflow.status;
                if status.is_final() {
                    return Err(wrong_state(
                        &selected,
                        "it has already finished; there is nothing to cancel",
                    ));
                }
                Ok(Prepared::Cancel {
                    token: target.token.clone(),
                    selected,
                })
            }
        }
    }

    async fn prepare_rerun(
        &self,
        target: &Target,
        rerun: &RerunJobs,
        select: &WorkflowSelector,
        workflow: Option<&str>,
    ) -> Result<Prepared, ActionError> {
        if matches!(rerun, RerunJobs::Jobs(names) if names.is_empty()) {
            return Err(ActionError::InvalidAction {
                reason: "a rerun of named jobs needs at least one job name".into(),
            });
        }
        let selected = self.select_workflow(target, select, workflow).await?;
        let status = selected.workflow.status;
        if !status.is_final() {
            return Err(wrong_state(
                &selected,
                "only a finished workflow can be rerun",
            ));
        }
        let rerun = match rerun {
            RerunJobs::FromFailed if status == WorkflowStatus::Success => {
                return Err(wrong_state(
                    &selected,
                    "from_failed needs a workflow that did not succeed",
                ));
            }
            RerunJobs::FromFailed => Rerun::FromFailed,
            RerunJobs::Workflow => Rerun::Workflow,
            RerunJobs::Jobs(names) => {
                let jobs = self
                    .circleci
                    .list_workflow_jobs(&target.token, selected.workflow.id)
                    .await?;
                let mut ids = Vec::new();
                for name in names.iter().collect::<BTreeSet<_>>() {
                    let job = jobs.iter().find(|job| &job.name == name).ok_or_else(|| {
                        ActionError::JobNotFound {
                            job: name.clone(),
                            workflow: format!(
                                "`{}` (pipeline #{}; its jobs: {})",
                                selected.workflow.name,
                                selected.pipeline.number,
                                jobs.iter()
                                    .map(|job| job.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        }
                    })?;
                    ids.push(job.id);
                }
                Rerun::Jobs(ids)
            }
        };
        Ok(Prepared::Rerun {
            token: target.token.clone(),
            selected,
            rerun,
        })
    }

    /// Sends the one request; an ambiguous answer to an approve, rerun or cancel is checked
    /// by reading the workflow back.
    async fn send(&self, prepared: Prepared) -> Result<ActionOutcome, ActionError> {
        match prepared {
            Prepared::Create { token, request } => {
                // Debug, not info: the decision line ("trigger decided") names the outcome,
                // and a send that never ended shows as its claim left `sending` and the
                // reconciler's warning. At info it was a third of a trigger's log bytes.
                tracing::debug!(project = %request.project, "starting a pipeline");
                let created = self.circleci.trigger_pipeline(&token, &request).await?;
                Ok(ActionOutcome::PipelineCreated {
                    id: created.id,
                    number: pipeline_number(created.number),
                    state: created.state,
                    created_at: created.created_at,
                })
            }
            Prepared::Approve {
                token,
                selected,
                job,
                approval_request_id,
            } => {
                let workflow = &selected.workflow;
                tracing::info!(
                    workflow = %workflow.id,
                    job = %job.name,
                    "approving a held job"
                );
                let outcome = |read_back| ActionOutcome::Approved {
                    pipeline_id: selected.pipeline.id,
                    pipeline_number: pipeline_number(selected.pipeline.number),
                    workflow_id: workflow.id,
                    workflow_name: workflow.name.clone(),
                    job_id: job.id,
                    approval_request_id,
                    read_back,
                };
                match self
                    .circleci
                    .approve_job(&token, workflow.id, approval_request_id)
                    .await
                {
                    Ok(()) => Ok(outcome(false)),
                    Err(error) if error.is_ambiguous() => {
                        let approved = self
                            .circleci
                            .list_workflow_jobs(&token, workflow.id)
                            .await
                            .map(|jobs| {
                                jobs.iter()
                                    .any(|j| j.id == job.id && j.status == JobStatus::Success)
                            });
                        confirmed(approved, error, || outcome(true))
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Prepared::Rerun {
                token,
                selected,
                rerun,
            } => {
                let workflow = &selected.workflow;
                tracing::info!(workflow = %workflow.id, "rerunning a workflow");
                let outcome = |new_workflow_id, read_back| ActionOutcome::Rerun {
                    pipeline_id: selected.pipeline.id,
                    pipeline_number: pipeline_number(selected.pipeline.number),
                    workflow_id: workflow.id,
                    workflow_name: workflow.name.clone(),
                    new_workflow_id,
                    read_back,
                };
                match self
                    .circleci
                    .rerun_workflow(&token, workflow.id, &rerun)
                    .await
                {
                    Ok(new_workflow_id) => Ok(outcome(new_workflow_id, false)),
                    Err(error) if error.is_ambiguous() => {
                        // The rerun is the one new attempt of this workflow in the pipeline.
                        let new = self
                            .circleci
                            .list_pipeline_workflows(&token, selected.pipeline.id)
                            .await
                            .map(|workflows| {
                                let new: Vec<Uuid> = workflows
                                    .iter()
                                    .filter(|w| {
                                        w.name == workflow.name
                                            && !selected.pipeline_workflows.contains(&w.id)
                                    })
                                    .map(|w| w.id)
                                    .collect();
                                <[Uuid; 1]>::try_from(new).ok().map(|[id]| id)
                            });
                        match new {
                            Ok(Some(new_workflow_id)) => {
                                tracing::info!(
                                    workflow = %workflow.id,
                                    "ambiguous rerun confirmed by reading the pipeline back"
                                );
                                Ok(outcome(new_workflow_id, true))
                            }
                            _ => Err(error.into()),
                        }
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Prepared::Cancel { token, selected } => {
                let workflow = &selected.workflow;
                tracing::info!(workflow = %workflow.id, "canceling a workflow");
                let outcome = |read_back| ActionOutcome::Canceled {
                    pipeline_id: selected.pipeline.id,
                    pipeline_number: pipeline_number(selected.pipeline.number),
                    workflow_id: workflow.id,
                    workflow_name: workflow.name.clone(),
                    read_back,
                };
                match self.circleci.cancel_workflow(&token, workflow.id).await {
                    Ok(()) => Ok(outcome(false)),
                    Err(error) if error.is_ambiguous() => {
                        let canceled = self
                            .circleci
                            .get_workflow(&token, workflow.id)
                            .await
                            .map(|now| now.status == WorkflowStatus::Canceled);
                        confirmed(canceled, error, || outcome(true))
                    }
                    Err(error) => Err(error.into()),
                }
            }
        }
    }
}

/// The outcome when the read-back shows the effect, else the ambiguous error as it was.
fn confirmed(
    read_back: Result<bool, CircleCiError>,
    ambiguous: CircleCiError,
    outcome: impl FnOnce() -> ActionOutcome,
) -> Result<ActionOutcome, ActionError> {
    match read_back {
        Ok(true) => {
            tracing::info!("ambiguous answer confirmed by reading the workflow back");
            Ok(outcome())
        }
        Ok(false) => Err(ambiguous.into()),
        Err(read_error) => {
            tracing::warn!(
                "could not read the workflow back after an ambiguous answer: {read_error}"
            );
            Err(ambiguous.into())
        }
    }
}

fn wrong_state(selected: &SelectedWorkflow, reason: &'static str) -> ActionError {
    ActionError::WorkflowState {
        workflow: selected.workflow.name.clone(),
        workflow_id: selected.workflow.id,
        status: selected.workflow.status,
        reason,
    }
}
