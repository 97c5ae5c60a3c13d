//! The concurrency policy's question: is the pipeline this schedule last started on the
//! same target still running?
//!
//! "Previous" is the newest pipeline recorded for the schedule and target (same project,
//! branch or tag, workflow and definition). A slot skipped by `forbid` records which trigger
//! blocked it (`detail.blocked_by`), so the answer is found in the newest rows even after a
//! long run of skipped slots. "Running" means some workflow of it is not final — `on_hold`
//! (an approval waiting) counts as running — or it has no workflow yet but was created
//! moments ago. A previous pipeline older than `stale_after` no longer counts; the slot's
//! record says so.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::Scheduler;
use crate::circleci::{CircleCiError, PipelineState, WorkflowStatus};
use crate::config::schedule::{ConcurrencyPolicy, ScheduleSpec};
use crate::engine::{Engine, TriggerIntent};
use crate::store::{
    PageRequest, SourceKind, TriggerId, TriggerRecord, TriggerSource, TriggerStatus, TriggerTarget,
};

/// History rows read per page while looking for the previous pipeline.
const PAGE: u32 = 100;
/// Pages read at most (the look-up also stops at `stale_after`).
const MAX_PAGES: usize = 10;
/// A pipeline without workflows this young is still being set up (config compiling).
const SETUP_GRACE: Duration = Duration::minutes(2);

/// What the previous pipeline of a slot's target is doing.
pub(super) enum Previous {
    /// This schedule never started a pipeline on the target (within `stale_after`).
    None,
    /// It finished (every workflow is final, or it errored / ran no workflow).
    Finished { record: TriggerRecord },
    /// It still runs but is older than `stale_after`: it no longer blocks.
    Stale {
        record: TriggerRecord,
        age: Duration,
    },
    /// It still runs.
    Running(RunningPipeline),
}

pub(super) struct RunningPipeline {
    pub record: TriggerRecord,
    pub pipeline_id: Uuid,
    /// Workflows that are not final, with their status.
    pub running: Vec<(Uuid, WorkflowStatus)>,
}

impl RunningPipeline {
    pub fn label(&self) -> String {
        match self.record.pipeline.as_ref().and_then(|p| p.number) {
            Some(number) => format!("#{number} ({})", self.pipeline_id),
            None => self.pipeline_id.to_string(),
        }
    }

    /// `on_hold, running` — or `setting up` for a pipeline without workflows yet.
    pub fn statuses(&self) -> String {
        if self.running.is_empty() {
            return "setting up".to_owned();
        }
        let mut statuses: Vec<String> = self
            .running
            .iter()
            .map(|(_, status)| {
                serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{status:?}"))
            })
            .collect();
        statuses.sort();
        statuses.dedup();
        statuses.join(", ")
    }
}

/// What `replace` did to the previous pipeline.
pub(super) struct CancelOutcome {
    pub canceled: Vec<String>,
    pub failed: Vec<String>,
}

impl Scheduler {
    pub(super) async fn previous_pipeline(
        &self,
        schedule: &ScheduleSpec,
        intent: &TriggerIntent,
        policy: &ConcurrencyPolicy,
        now: DateTime<Utc>,
    ) -> Result<Previous, String> {
        let Some(record) = self.find_previous(schedule, intent, policy, now).await? else {
            return Ok(Previous::None);
        };
        if record.pipeline_final {
            return Ok(Previous::Finished { record });
        }
        let Some(pipeline_id) = record
            .pipeline
            .as_ref()
            .and_then(|p| p.id.parse::<Uuid>().ok())
        else {
            return Ok(Previous::Finished { record });
        };
        let token = &intent.action.target().token;
        let circleci = self.engine.actions().circleci();
        let workflows = match circleci.list_pipeline_workflows(token, pipeline_id).await {
            Ok(workflows) => workflows,
            // Gone (deleted project, expired data): nothing of it runs.
            Err(CircleCiError::NotFound { .. }) => return Ok(Previous::Finished { record }),
            Err(error) => return Err(error.to_string()),
        };
        let running: Vec<(Uuid, WorkflowStatus)> = workflows
            .iter()
            .filter(|w| !w.status.is_final())
            .map(|w| (w.id, w.status))
            .collect();
        if running.is_empty() {
            let setting_up = workflows.is_empty()
                && match circleci.get_pipeline(token, pipeline_id).await {
                    Ok(pipeline) => {
                        pipeline.state != PipelineState::Errored
                            && now - pipeline.created_at < SETUP_GRACE
                    }
                    Err(CircleCiError::NotFound { .. }) => false,
                    Err(error) => return Err(error.to_string()),
                };
            if !setting_up {
                return Ok(Previous::Finished { record });
            }
        }
        let age = now - record.created_at;
        let stale_after = Duration::from_std(policy.stale_after).unwrap_or(Duration::MAX);
        if age > stale_after {
            tracing::info!(trigger_id = %record.id, age_s = age.num_seconds(),
                "previous pipeline still runs but is stale; it no longer blocks");
            return Ok(Previous::Stale { record, age });
        }
        Ok(Previous::Running(RunningPipeline {
            record,
            pipeline_id,
            running,
        }))
    }

    /// The newest record of this schedule that started a pipeline on the intent's target.
    async fn find_previous(
        &self,
        schedule: &ScheduleSpec,
        intent: &TriggerIntent,
        policy: &ConcurrencyPolicy,
        now: DateTime<Utc>,
    ) -> Result<Option<TriggerRecord>, String> {
        let store = self.engine.store();
        let source = TriggerSource::new(SourceKind::Schedule, &schedule.name);
        let wanted = intent.action.record_target();
        let own = Engine::record_id_for(&intent.key);
        let stale_after = Duration::from_std(policy.stale_after).unwrap_or(Duration::MAX);
        let horizon = now
            .checked_sub_signed(stale_after)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut request = PageRequest::first(PAGE);
        for _ in 0..MAX_PAGES {
            let page = store
                .list_by_source(&source, request)
                .await
                .map_err(|e| e.to_string())?;
            let mut candidates = Vec::new();
            let mut blockers = BTreeSet::new();
            let mut past_horizon = false;
            for record in page.items {
                if record.id == own || !same_target(&record.target, &wanted) {
                    continue;
                }
                past_horizon |= record.created_at < horizon;
                if started_pipeline(&record) {
                    candidates.push(record);
                } else if let Some(blocker) = blocked_by(&record) {
                    blockers.insert(blocker);
                }
            }
            // Skipped rows name the pipeline that blocked them; many name the same one.
            for blocker in blockers {
                let blocking = store.get_record(blocker).await.map_err(|e| e.to_string())?;
                if let Some(blocking) = blocking.filter(started_pipeline)
                    && !candidates.iter().any(|c| c.id == blocking.id)
                {
                    candidates.push(blocking);
                }
            }
            // Within a page, records written in the same instant have no order: the highest
            // pipeline number is the newest pipeline of the project.
            if let Some(newest) = candidates.into_iter().max_by_key(|record| {
                (
                    record.pipeline.as_ref().and_then(|p| p.number),
                    record.created_at,
                )
            }) {
                return Ok(Some(newest));
            }
            match page.next {
                Some(cursor) if !past_horizon => request = PageRequest::after(PAGE, cursor),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Cancels the previous pipeline's running workflows (on_hold ones included).
    pub(super) async fn cancel_running(
        &self,
        intent: &TriggerIntent,
        previous: &RunningPipeline,
    ) -> CancelOutcome {
        let token = &intent.action.target().token;
        let circleci = self.engine.actions().circleci();
        let mut outcome = CancelOutcome {
            canceled: Vec::new(),
            failed: Vec::new(),
        };
        for (workflow, _) in &previous.running {
            match circleci.cancel_workflow(token, *workflow).await {
                Ok(()) => outcome.canceled.push(workflow.to_string()),
                // Finished (or gone) meanwhile: nothing left to cancel.
                Err(CircleCiError::NotFound { .. }) => {}
                Err(error) => {
                    tracing::warn!(%error, workflow = %workflow, "could not cancel the previous workflow");
                    outcome.failed.push(workflow.to_string());
                }
            }
        }
        outcome
    }
}

fn started_pipeline(record: &TriggerRecord) -> bool {
    record.status == TriggerStatus::Triggered && record.pipeline.is_some()
}

fn blocked_by(record: &TriggerRecord) -> Option<TriggerId> {
    if record.status != TriggerStatus::Skipped {
        return None;
    }
    record.detail.blocked_by
}

fn same_target(recorded: &TriggerTarget, wanted: &TriggerTarget) -> bool {
    recorded.project == wanted.project
        && recorded.branch == wanted.branch
        && recorded.tag == wanted.tag
        && recorded.workflow == wanted.workflow
        && recorded.definition_id == wanted.definition_id
}
