//! Finding the one existing workflow an approve, rerun or cancel acts on.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ActionError, Actions, Target};
use crate::circleci::{
    CircleCiError, GitRef, Job, JobKind, JobStatus, Pipeline, PipelineQuery, Workflow,
};

/// Which pipelines of the target project to look in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowSelector {
    /// The pipelines recorded (in trigger history) for the same origin trigger; those of
    /// other projects are ignored.
    Pipelines(Vec<Uuid>),
    /// This one pipeline.
    Pipeline(Uuid),
    /// The target project's pipelines (on the target's branch or tag, if it has one) that
    /// built this commit.
    Revision(String),
    /// The newest pipeline on the target's branch (or tag).
    Latest,
}

/// The workflow an action would act on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelectedWorkflow {
    pub pipeline: Pipeline,
    pub workflow: Workflow,
    /// Every workflow id of the pipeline when it was selected (reruns included): a rerun's
    /// new workflow is the one not in this list.
    pub pipeline_workflows: Vec<Uuid>,
}

/// The approval job to approve, in its workflow.
#[derive(Debug, Clone)]
pub(crate) struct SelectedApproval {
    pub selected: SelectedWorkflow,
    pub job: Job,
    pub approval_request_id: Uuid,
}

/// The pipelines a selector found, and how to describe them in an error.
struct Found {
    pipelines: Vec<Pipeline>,
    description: String,
}

impl Actions {
    /// Resolves `select` to exactly one workflow (only workflows named `workflow`, when
    /// given), without acting: [`ActionError::NoMatch`] or [`ActionError::SeveralMatches`]
    /// otherwise.
    pub async fn select_workflow(
        &self,
        target: &Target,
        select: &WorkflowSelector,
        workflow: Option<&str>,
    ) -> Result<SelectedWorkflow, ActionError> {
        let (candidates, description) = self.candidates(target, select, workflow).await?;
        match <[SelectedWorkflow; 1]>::try_from(candidates) {
            Ok([one]) => Ok(one),
            Err(several) => Err(ActionError::SeveralMatches {
                what: format!("{} in {description}", workflows_text(workflow)),
                candidates: several.iter().map(|c| c.workflow.id).collect(),
            }),
        }
    }

    /// The one workflow holding the approval job `job` on hold.
    pub(crate) async fn select_approval(
        &self,
        target: &Target,
        select: &WorkflowSelector,
        workflow: Option<&str>,
        job: &str,
    ) -> Result<SelectedApproval, ActionError> {
        let (candidates, description) = self.candidates(target, select, workflow).await?;
        let mut on_hold = Vec::new();
        let mut waiting_elsewhere = Vec::new();
        for candidate in candidates {
            let jobs = self
                .circleci
                .list_workflow_jobs(&target.token, candidate.workflow.id)
                .await?;
            let Some(found) = jobs
                .into_iter()
                .find(|j| j.name == job && j.kind == JobKind::Approval)
            else {
                continue;
            };
            match (found.status, found.approval_request_id) {
                (JobStatus::OnHold, Some(approval_request_id)) => on_hold.push(SelectedApproval {
                    selected: candidate,
                    job: found,
                    approval_request_id,
                }),
                _ => waiting_elsewhere.push((candidate, found)),
            }
        }
        match on_hold.len() {
            1 => Ok(on_hold.remove(0)),
            0 => match waiting_elsewhere.len() {
                0 => Err(ActionError::JobNotFound {
                    job: job.to_owned(),
                    workflow: format!(
                        "{} in {description} (no approval job of that name)",
                        workflows_text(workflow)
                    ),
                }),
                1 => {
                    let (candidate, found) = waiting_elsewhere.remove(0);
                    Err(ActionError::JobNotOnHold {
                        job: job.to_owned(),
                        workflow: candidate.workflow.name,
                        workflow_id: candidate.workflow.id,
                        status: found.status,
                    })
                }
                _ => Err(ActionError::NoMatch {
                    what: format!(
                        "approval job `{job}` is on hold in none of the {} workflows of {description} that have it",
                        waiting_elsewhere.len()
                    ),
                }),
            },
            _ => Err(ActionError::SeveralMatches {
                what: format!("approval job `{job}` on hold in {description}"),
                candidates: on_hold.iter().map(|a| a.selected.workflow.id).collect(),
            }),
        }
    }

    /// The latest attempt of every workflow (named `workflow`, when given) in the selected
    /// pipelines; never empty (else `NoMatch`).
    async fn candidates(
        &self,
        target: &Target,
        select: &WorkflowSelector,
        workflow: Option<&str>,
    ) -> Result<(Vec<SelectedWorkflow>, String), ActionError> {
        let Found {
            pipelines,
            description,
        } = self.pipelines(target, select).await?;
        let mut candidates = Vec::new();
        let mut seen_names = BTreeSet::new();
        for pipeline in pipelines {
            let workflows = self
                .circleci
                .list_pipeline_workflows(&target.token, pipeline.id)
                .await?;
            let ids: Vec<Uuid> = workflows.iter().map(|w| w.id).collect();
            for latest in latest_attempts(workflows) {
                seen_names.insert(latest.name.clone());
                if workflow.is_none_or(|name| latest.name == name) {
                    candidates.push(SelectedWorkflow {
                        pipeline: pipeline.clone(),
                        workflow: latest,
                        pipeline_workflows: ids.clone(),
                    });
                }
            }
        }
        if candidates.is_empty() {
            let there = if seen_names.is_empty() {
                "it has no workflows".to_owned()
            } else {
                let names: Vec<&str> = seen_names.iter().map(String::as_str).collect();
                format!("workflows there: {}", names.join(", "))
            };
            return Err(ActionError::NoMatch {
                what: format!("no {} in {description} ({there})", workflows_text(workflow)),
            });
        }
        Ok((candidates, description))
    }

    /// The target project's pipelines the selector names (on the target's ref, if any).
    async fn pipelines(
        &self,
        target: &Target,
        select: &WorkflowSelector,
    ) -> Result<Found, ActionError> {
        let place = place_text(target);
        match select {
            WorkflowSelector::Pipelines(ids) => {
                let ids: Vec<Uuid> = ids
                    .iter()
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if ids.is_empty() {
                    return Err(ActionError::NoMatch {
                        what: "no pipeline is recorded for the origin trigger".into(),
                    });
                }
                let pipelines = self.known_pipelines(target, &ids).await?;
                if pipelines.is_empty() {
                    return Err(ActionError::NoMatch {
                        what: format!(
                            "none of the {} pipelines recorded for the origin trigger is in {place}",
                            ids.len()
                        ),
                    });
                }
                let description =
                    format!("{} of the origin trigger", numbers_text(&pipelines, &place));
                Ok(Found {
                    pipelines,
                    description,
                })
            }
            WorkflowSelector::Pipeline(id) => {
                let pipelines = self.known_pipelines(target, &[*id]).await?;
                if pipelines.is_empty() {
                    return Err(ActionError::NoMatch {
                        what: format!("pipeline {id} is not in {place}"),
                    });
                }
                let description = numbers_text(&pipelines, &place);
                Ok(Found {
                    pipelines,
                    description,
                })
            }
            WorkflowSelector::Revision(revision) => {
                let listed = self
                    .circleci
                    .list_project_pipelines(
                        &target.token,
                        &target.project,
                        &PipelineQuery {
                            branch: target.checkout_branch().map(str::to_owned),
                            created_since: None,
                            max_pages: Some(self.options.max_pipeline_pages),
                        },
                    )
                    .await?;
                let searched = listed.len();
                let pipelines: Vec<Pipeline> = listed
                    .into_iter()
                    .filter(|p| in_target(target, p))
                    .filter(|p| {
                        pipeline_revision(p).is_some_and(|r| r.eq_ignore_ascii_case(revision))
                    })
                    .collect();
                if pipelines.is_empty() {
                    return Err(ActionError::NoMatch {
                        what: format!(
                            "no pipeline of {place} built revision {revision} (searched the newest {searched})"
                        ),
                    });
                }
                let description = format!(
                    "{} at revision {revision}",
                    numbers_text(&pipelines, &place)
                );
                Ok(Found {
                    pipelines,
                    description,
                })
            }
            WorkflowSelector::Latest => {
                let Some(git_ref) = target.checkout_ref() else {
                    return Err(ActionError::invalid_target(
                        "select = \"latest\" needs a branch or a tag on the target",
                    ));
                };
                // A branch is filtered by CircleCI, so its newest pipeline is on the first
                // page; a tag is not, so a few pages are searched.
                let max_pages = match git_ref {
                    GitRef::Branch(_) => 1,
                    GitRef::Tag(_) => self.options.max_pipeline_pages,
                };
                let listed = self
                    .circleci
                    .list_project_pipelines(
                        &target.token,
                        &target.project,
                        &PipelineQuery {
                            branch: target.checkout_branch().map(str::to_owned),
                            created_since: None,
                            max_pages: Some(max_pages),
                        },
                    )
                    .await?;
                // Newest first, so the first one on the ref is the latest.
                let Some(latest) = listed.into_iter().find(|p| in_target(target, p)) else {
                    return Err(ActionError::NoMatch {
                        what: format!("{place} has no pipeline"),
                    });
                };
                let description = format!(
                    "the latest pipeline, {}",
                    numbers_text(std::slice::from_ref(&latest), &place)
                );
                Ok(Found {
                    pipelines: vec![latest],
                    description,
                })
            }
        }
    }

    /// Reads pipelines by id and keeps those of the target (project and ref). A pipeline
    /// the token cannot see (404) is not the target's.
    async fn known_pipelines(
        &self,
        target: &Target,
        ids: &[Uuid],
    ) -> Result<Vec<Pipeline>, ActionError> {
        let mut pipelines = Vec::new();
        for id in ids {
            match self.circleci.get_pipeline(&target.token, *id).await {
                Ok(pipeline) if in_target(target, &pipeline) => pipelines.push(pipeline),
                Ok(_) | Err(CircleCiError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        // Newest first, as CircleCI lists them.
        pipelines.sort_by_key(|pipeline| std::cmp::Reverse(pipeline.number));
        Ok(pipelines)
    }
}

impl Target {
    /// The branch to filter a pipeline list by (`None` for a tag or no ref).
    fn checkout_branch(&self) -> Option<&str> {
        match self.checkout_ref() {
            Some(GitRef::Branch(branch)) => Some(branch),
            _ => None,
        }
    }
}

/// Whether a pipeline is in the target's repository and on its ref (when it names one).
fn in_target(target: &Target, pipeline: &Pipeline) -> bool {
    let same_repo = pipeline
        .project()
        .is_some_and(|project| project.same_repo(&target.project));
    same_repo
        && match target.checkout_ref() {
            None => true,
            Some(GitRef::Branch(branch)) => {
                pipeline_git(pipeline, "branch") == Some(branch.as_str())
            }
            Some(GitRef::Tag(tag)) => pipeline_git(pipeline, "tag") == Some(tag.as_str()),
        }
}

/// `branch`, `tag` or the revision of a pipeline: from `vcs` (OAuth projects), else from
/// `trigger_parameters.git` (GitHub App / GitLab projects have no `vcs`).
fn pipeline_git<'a>(pipeline: &'a Pipeline, field: &str) -> Option<&'a str> {
    let from_vcs = pipeline.vcs.as_ref().and_then(|vcs| match field {
        "branch" => vcs.branch.as_deref(),
        "tag" => vcs.tag.as_deref(),
        "revision" => vcs.revision.as_deref(),
        _ => None,
    });
    let app_field = if field == "revision" {
        "checkout_sha"
    } else {
        field
    };
    from_vcs
        .or_else(|| {
            pipeline
                .trigger_parameters
                .as_ref()?
                .get("git")?
                .get(app_field)?
                .as_str()
        })
        .filter(|value| !value.is_empty())
}

pub(crate) fn pipeline_revision(pipeline: &Pipeline) -> Option<&str> {
    pipeline_git(pipeline, "revision")
}

pub(crate) fn pipeline_branch(pipeline: &Pipeline) -> Option<&str> {
    pipeline_git(pipeline, "branch")
}

pub(crate) fn pipeline_tag(pipeline: &Pipeline) -> Option<&str> {
    pipeline_git(pipeline, "tag")
}

/// Of the workflows of one pipeline, the latest attempt of each name: a rerun is a new
/// workflow of the same name and supersedes the one it reran. Two attempts created at the
/// same instant are both kept, so the choice stays explicit (and fails as several matches).
fn latest_attempts(workflows: Vec<Workflow>) -> Vec<Workflow> {
    let newest = |name: &str| {
        workflows
            .iter()
            .filter(|w| w.name == name)
            .map(|w| w.created_at)
            .max()
    };
    let keep: Vec<bool> = workflows
        .iter()
        .map(|w| newest(&w.name) == Some(w.created_at))
        .collect();
    workflows
        .into_iter()
        .zip(keep)
        .filter_map(|(workflow, keep)| keep.then_some(workflow))
        .collect()
}

fn place_text(target: &Target) -> String {
    match target.checkout_ref() {
        None => target.project.canonical(),
        Some(GitRef::Branch(branch)) => format!("{} on branch `{branch}`", target.project),
        Some(GitRef::Tag(tag)) => format!("{} at tag `{tag}`", target.project),
    }
}

fn numbers_text(pipelines: &[Pipeline], place: &str) -> String {
    let numbers: Vec<String> = pipelines.iter().map(|p| format!("#{}", p.number)).collect();
    let noun = if pipelines.len() == 1 {
        "pipeline"
    } else {
        "pipelines"
    };
    format!("{noun} {} of {place}", numbers.join(", "))
}

fn workflows_text(workflow: Option<&str>) -> String {
    match workflow {
        Some(name) => format!("workflow `{name}`"),
        None => "workflow".to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::circleci::WorkflowStatus;

    fn workflow(id: u128, name: &str, second: u32) -> Workflow {
        Workflow {
            id: Uuid::from_u128(id),
            name: name.into(),
            status: WorkflowStatus::Success,
            pipeline_id: Uuid::nil(),
            pipeline_number: 1,
            project_slug: "gh/acme/api".into(),
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap(),
            stopped_at: None,
            started_by: None,
            canceled_by: None,
            errored_by: None,
            tag: None,
        }
    }

    #[test]
    fn a_rerun_supersedes_the_attempt_it_reran() {
        let kept = latest_attempts(vec![
            workflow(1, "build", 0),
            workflow(2, "deploy", 0),
            workflow(3, "build", 30),
        ]);
        let ids: Vec<u128> = kept.iter().map(|w| w.id.as_u128()).collect();
        assert_eq!(ids, [2, 3]);
    }

    #[test]
    fn attempts_created_at_the_same_instant_are_both_kept() {
        let kept = latest_attempts(vec![workflow(1, "build", 5), workflow(2, "build", 5)]);
        assert_eq!(kept.len(), 2);
    }
}
