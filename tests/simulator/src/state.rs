//! The simulated CircleCI: users, projects, pipelines, workflows, jobs, webhooks, and the
//! clock that moves jobs forward. Everything here is synchronous and runs under one mutex;
//! HTTP and webhook delivery live elsewhere.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::faults::{Faults, RateLimiter, SplitMix};
use crate::model::{JobKind, JobOutcome, ParameterType, ProjectSpec, WorkflowSpec};
use crate::slug::Slug;
use crate::views::{
    Counters, DeliveryRecord, GitRef, JobStatus, JobView, PipelineState, PipelineView,
    RecordedRequest, TriggerEndpoint, WorkflowStatus, WorkflowView,
};

/// CircleCI's pipeline parameter limits.
pub const MAX_PARAMETERS: usize = 100;
/// Maximum parameter name length.
pub const MAX_PARAMETER_KEY_LEN: usize = 128;
/// Maximum parameter value length (string form).
pub const MAX_PARAMETER_VALUE_LEN: usize = 512;

#[derive(Debug)]
pub(crate) struct UserRec {
    pub id: Uuid,
    pub login: String,
}

#[derive(Debug)]
pub(crate) struct TokenRec {
    pub name: String,
    pub value: String,
    pub user: usize,
}

#[derive(Debug)]
pub(crate) struct ProjectRec {
    pub spec: ProjectSpec,
    pub slug: Slug,
    pub next_pipeline_number: i64,
    pub next_job_number: i64,
    pub definitions: Vec<Uuid>,
}

impl ProjectRec {
    pub fn name(&self) -> String {
        self.spec
            .name
            .clone()
            .unwrap_or_else(|| self.slug.repo.clone())
    }
    pub fn organization_name(&self) -> String {
        self.spec
            .organization_name
            .clone()
            .unwrap_or_else(|| self.slug.org.clone())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PipelineError {
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug)]
pub(crate) struct PipelineRec {
    pub id: Uuid,
    pub project: usize,
    pub number: i64,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub parameters: Map<String, Value>,
    pub state: PipelineState,
    pub errors: Vec<PipelineError>,
    pub created_at: DateTime<Utc>,
    pub user: usize,
    pub token: usize,
    pub revision: String,
    pub endpoint: TriggerEndpoint,
}

#[derive(Debug, Clone)]
pub(crate) struct JobRec {
    pub id: Uuid,
    pub name: String,
    pub kind: JobKind,
    pub requires: Vec<String>,
    pub status: JobStatus,
    pub job_number: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Simulated elapsed time at which a running job ends.
    pub finish_at: Option<Duration>,
    pub duration: Duration,
    pub outcome: JobOutcome,
    pub attempt: u32,
    pub approval_request_id: Option<Uuid>,
    pub approved_by: Option<usize>,
    pub canceled_by: Option<usize>,
}

#[derive(Debug)]
pub(crate) struct WorkflowRec {
    pub id: Uuid,
    pub pipeline: usize,
    pub project: usize,
    pub name: String,
    pub status: WorkflowStatus,
    pub created_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub started_by: usize,
    pub canceled_by: Option<usize>,
    pub jobs: Vec<JobRec>,
    pub rerun_of: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub(crate) struct WebhookRec {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
    pub verify_tls: bool,
    pub scope_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A signed webhook event waiting to be sent.
#[derive(Debug, Clone)]
pub(crate) struct PendingDelivery {
    pub webhook_id: Uuid,
    pub url: String,
    pub event_type: &'static str,
    pub event_id: Uuid,
    pub body: Vec<u8>,
    pub signature: String,
    pub copies: u32,
    pub retries: u32,
    pub verify_tls: bool,
}

/// A request rejected by validation, rendered as `{"message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub fn forbidden() -> Self {
        Self::new(403, "Permission denied.")
    }
}

/// A pipeline trigger after request parsing.
#[derive(Debug, Clone)]
pub(crate) struct CreateRequest {
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub parameters: Map<String, Value>,
    pub endpoint: TriggerEndpoint,
}

/// Who is calling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub user: usize,
    pub token: usize,
}

/// Which jobs a rerun starts again.
#[derive(Debug, Clone)]
pub(crate) enum RerunPlan {
    All,
    FromFailed,
    Jobs(Vec<Uuid>),
}

#[derive(Debug)]
pub(crate) struct State {
    pub epoch: DateTime<Utc>,
    pub elapsed: Duration,
    pub page_size: usize,
    pub max_webhooks: usize,
    /// Most recent requests / deliveries kept (older ones are dropped).
    pub log_capacity: usize,
    pub users: Vec<UserRec>,
    pub tokens: Vec<TokenRec>,
    pub projects: Vec<ProjectRec>,
    pub pipelines: Vec<PipelineRec>,
    pub workflows: Vec<WorkflowRec>,
    pub webhooks: Vec<WebhookRec>,
    pub requests: Vec<RecordedRequest>,
    pub deliveries: Vec<DeliveryRecord>,
    pub pending: VecDeque<PendingDelivery>,
    pub faults: Faults,
    pub failure_rng: SplitMix,
    pub limiter: RateLimiter,
    pub counters: Counters,
    /// API requests received and not yet answered.
    pub in_flight: u64,
}

impl State {
    pub fn new(epoch: DateTime<Utc>, page_size: usize, max_webhooks: usize) -> Self {
        Self {
            epoch,
            elapsed: Duration::ZERO,
            page_size: page_size.max(1),
            max_webhooks,
            log_capacity: usize::MAX,
            users: Vec::new(),
            tokens: Vec::new(),
            projects: Vec::new(),
            pipelines: Vec::new(),
            workflows: Vec::new(),
            webhooks: Vec::new(),
            requests: Vec::new(),
            deliveries: Vec::new(),
            pending: VecDeque::new(),
            faults: Faults::default(),
            failure_rng: SplitMix(0),
            limiter: RateLimiter::default(),
            counters: Counters::default(),
            in_flight: 0,
        }
    }

    pub fn record_request(&mut self, request: RecordedRequest) {
        if self.requests.len() >= self.log_capacity {
            let excess = self.requests.len() + 1 - self.log_capacity;
            self.requests.drain(..excess.min(self.requests.len()));
        }
        self.requests.push(request);
    }

    pub fn record_delivery(&mut self, delivery: DeliveryRecord) {
        if self.deliveries.len() >= self.log_capacity {
            let excess = self.deliveries.len() + 1 - self.log_capacity;
            self.deliveries.drain(..excess.min(self.deliveries.len()));
        }
        self.counters.deliveries += 1;
        self.deliveries.push(delivery);
    }

    /// Simulated wall-clock time.
    pub fn now(&self) -> DateTime<Utc> {
        self.at(self.elapsed)
    }

    pub fn at(&self, elapsed: Duration) -> DateTime<Utc> {
        self.epoch + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.failure_rng = SplitMix(faults.failure_ratio.map_or(0, |r| r.seed));
        self.limiter.reset();
        self.faults = faults;
    }

    // ----- users, tokens, projects -------------------------------------------------------

    pub fn add_user(&mut self, login: &str) -> usize {
        if let Some(index) = self.users.iter().position(|u| u.login == login) {
            return index;
        }
        self.users.push(UserRec {
            id: Uuid::new_v4(),
            login: login.to_owned(),
        });
        self.users.len() - 1
    }

    pub fn add_token(&mut self, user: usize, name: &str, value: &str) {
        self.tokens.retain(|t| t.value != value);
        self.tokens.push(TokenRec {
            name: name.to_owned(),
            value: value.to_owned(),
            user,
        });
    }

    /// Test double: a plain lookup is fine here (the product compares in constant time).
    pub fn token_index(&self, value: &str) -> Option<usize> {
        self.tokens.iter().position(|t| t.value == value)
    }

    pub fn add_project(&mut self, spec: ProjectSpec) -> anyhow::Result<usize> {
        let slug = Slug::parse(&spec.slug)
            .ok_or_else(|| anyhow::anyhow!("invalid project slug {:?}", spec.slug))?;
        if let Some(existing) = self.projects.iter().position(|p| p.slug == slug) {
            anyhow::bail!("project {} already exists (index {existing})", slug);
        }
        let mut definitions = spec.definitions.clone();
        if definitions.is_empty() {
            definitions.push(Uuid::new_v4());
        }
        self.projects.push(ProjectRec {
            spec,
            slug,
            next_pipeline_number: 1,
            next_job_number: 1,
            definitions,
        });
        Ok(self.projects.len() - 1)
    }

    pub fn find_project(&self, slug: &Slug) -> Option<usize> {
        self.projects.iter().position(|p| &p.slug == slug)
    }

    pub fn can_see(&self, project: usize, user: usize) -> bool {
        let login = &self.users[user].login;
        self.projects[project]
            .spec
            .allowed_users
            .as_ref()
            .is_none_or(|allowed| allowed.contains(login))
    }

    pub fn can_write(&self, project: usize, user: usize) -> bool {
        self.can_see(project, user)
            && !self.projects[project]
                .spec
                .read_only_users
                .contains(&self.users[user].login)
    }

    /// Looks a project up for a caller: unknown or invisible → 404, like CircleCI.
    pub fn project_for(&self, slug: &str, caller: Caller, write: bool) -> Result<usize, ApiError> {
        let not_found = || ApiError::not_found("Project not found");
        let slug = Slug::parse(slug).ok_or_else(not_found)?;
        let project = self.find_project(&slug).ok_or_else(not_found)?;
        if !self.can_see(project, caller.user) {
            return Err(not_found());
        }
        if write && !self.can_write(project, caller.user) {
            return Err(ApiError::forbidden());
        }
        Ok(project)
    }

    pub fn revision_for(&self, project: usize, reference: &str) -> String {
        let spec = &self.projects[project].spec;
        if let Some(sha) = spec.revisions.get(reference) {
            return sha.clone();
        }
        let digest = Sha256::digest(
            format!("{}#{}", self.projects[project].slug.short(), reference).as_bytes(),
        );
        let mut sha = hex::encode(digest);
        sha.truncate(40);
        sha
    }

    // ----- pipelines -----------------------------------------------------------------------

    /// Validates the limits CircleCI enforces before accepting a trigger (400 on violation).
    pub fn check_parameter_limits(parameters: &Map<String, Value>) -> Result<(), ApiError> {
        if parameters.len() > MAX_PARAMETERS {
            return Err(ApiError::bad_request(format!(
                "Too many pipeline parameters: {} given, at most {MAX_PARAMETERS} allowed.",
                parameters.len()
            )));
        }
        for (key, value) in parameters {
            if key.chars().count() > MAX_PARAMETER_KEY_LEN {
                return Err(ApiError::bad_request(format!(
                    "Pipeline parameter name is longer than {MAX_PARAMETER_KEY_LEN} characters: {key:.40}..."
                )));
            }
            let length = match value {
                Value::String(s) => s.chars().count(),
                Value::Number(_) | Value::Bool(_) => value.to_string().len(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "Pipeline parameter {key} must be a string, an integer or a boolean."
                    )));
                }
            };
            if length > MAX_PARAMETER_VALUE_LEN {
                return Err(ApiError::bad_request(format!(
                    "Pipeline parameter {key} has a value longer than {MAX_PARAMETER_VALUE_LEN} characters."
                )));
            }
        }
        Ok(())
    }

    /// Creates a pipeline (already authorised and limit-checked) and compiles it at once.
    pub fn create_pipeline(
        &mut self,
        project: usize,
        caller: Caller,
        request: CreateRequest,
    ) -> usize {
        let now = self.now();
        let spec = self.projects[project].spec.clone();
        let (branch, tag) = match (request.branch, request.tag) {
            (None, None) => (Some(spec.default_branch.clone()), None),
            other => other,
        };
        let reference = tag.clone().or_else(|| branch.clone()).unwrap_or_default();
        let revision = self.revision_for(project, &reference);
        let number = self.projects[project].next_pipeline_number;
        self.projects[project].next_pipeline_number += 1;

        let (effective, mut errors) = resolve_parameters(&spec, &request.parameters);
        errors.extend(check_config(&spec));
        let state = if errors.is_empty() {
            PipelineState::Created
        } else {
            PipelineState::Errored
        };
        self.pipelines.push(PipelineRec {
            id: Uuid::new_v4(),
            project,
            number,
            branch: branch.clone(),
            tag,
            parameters: request.parameters,
            state,
            errors,
            created_at: now,
            user: caller.user,
            token: caller.token,
            revision,
            endpoint: request.endpoint,
        });
        self.counters.pipelines_created += 1;
        let pipeline = self.pipelines.len() - 1;
        if state == PipelineState::Created {
            for workflow in &spec.workflows {
                let branch_ok = match (&workflow.branches, &branch) {
                    (None, _) => true,
                    (Some(allowed), Some(b)) => allowed.contains(b),
                    (Some(_), None) => false,
                };
                if branch_ok && workflow.when.as_ref().is_none_or(|w| w.holds(&effective)) {
                    self.instantiate_workflow(pipeline, workflow, caller.user);
                }
            }
        }
        pipeline
    }

    fn instantiate_workflow(&mut self, pipeline: usize, spec: &WorkflowSpec, user: usize) -> usize {
        let jobs = spec
            .jobs
            .iter()
            .map(|job| JobRec {
                id: Uuid::new_v4(),
                name: job.name.clone(),
                kind: job.kind,
                requires: job.requires.clone(),
                status: JobStatus::Blocked,
                job_number: None,
                started_at: None,
                stopped_at: None,
                finish_at: None,
                duration: job.duration,
                outcome: job.outcome_for(0),
                attempt: 0,
                approval_request_id: (job.kind == JobKind::Approval).then(Uuid::new_v4),
                approved_by: None,
                canceled_by: None,
            })
            .collect();
        self.push_workflow(pipeline, spec.name.clone(), user, jobs, None)
    }

    fn push_workflow(
        &mut self,
        pipeline: usize,
        name: String,
        user: usize,
        jobs: Vec<JobRec>,
        rerun_of: Option<Uuid>,
    ) -> usize {
        let project = self.pipelines[pipeline].project;
        self.workflows.push(WorkflowRec {
            id: Uuid::new_v4(),
            pipeline,
            project,
            name,
            status: WorkflowStatus::Running,
            created_at: self.now(),
            stopped_at: None,
            started_by: user,
            canceled_by: None,
            jobs,
            rerun_of,
        });
        let workflow = self.workflows.len() - 1;
        self.settle(workflow);
        workflow
    }

    // ----- the clock ------------------------------------------------------------------------

    /// Earliest pending job completion, in simulated elapsed time.
    pub fn next_completion(&self) -> Option<Duration> {
        self.workflows
            .iter()
            .filter(|w| !w.status.is_final())
            .flat_map(|w| w.jobs.iter())
            .filter(|j| j.status == JobStatus::Running)
            .filter_map(|j| j.finish_at)
            .min()
    }

    /// Moves the clock forward by `by`, completing jobs in time order.
    pub fn advance(&mut self, by: Duration) {
        let target = self.elapsed.saturating_add(by);
        while let Some(next) = self.next_completion().filter(|next| *next <= target) {
            self.elapsed = self.elapsed.max(next);
            for workflow in 0..self.workflows.len() {
                if !self.workflows[workflow].status.is_final() {
                    self.settle(workflow);
                }
            }
        }
        self.elapsed = target;
    }

    /// Completes due jobs, starts jobs whose requirements are met, and recomputes the
    /// workflow status, until nothing changes at the current instant.
    pub fn settle(&mut self, workflow: usize) {
        loop {
            let mut changed = false;
            let elapsed = self.elapsed;
            for job in 0..self.workflows[workflow].jobs.len() {
                let rec = &self.workflows[workflow].jobs[job];
                if rec.status == JobStatus::Running && rec.finish_at.is_some_and(|f| f <= elapsed) {
                    let finished = rec.finish_at.unwrap_or(elapsed);
                    let stopped_at = self.at(finished);
                    let rec = &mut self.workflows[workflow].jobs[job];
                    rec.status = match rec.outcome {
                        JobOutcome::Success => JobStatus::Success,
                        JobOutcome::Failed => JobStatus::Failed,
                    };
                    rec.stopped_at = Some(stopped_at);
                    rec.finish_at = None;
                    self.emit_job_completed(workflow, job);
                    changed = true;
                }
            }
            changed |= self.start_ready_jobs(workflow);
            if !changed {
                break;
            }
        }
        self.refresh_status(workflow);
    }

    fn start_ready_jobs(&mut self, workflow: usize) -> bool {
        let mut changed = false;
        let now = self.now();
        let elapsed = self.elapsed;
        let project = self.workflows[workflow].project;
        for job in 0..self.workflows[workflow].jobs.len() {
            let wf = &self.workflows[workflow];
            if wf.jobs[job].status != JobStatus::Blocked {
                continue;
            }
            let ready = wf.jobs[job].requires.iter().all(|name| {
                wf.jobs
                    .iter()
                    .any(|other| &other.name == name && other.status == JobStatus::Success)
            });
            if !ready {
                continue;
            }
            let kind = wf.jobs[job].kind;
            let number = if kind == JobKind::Build {
                let n = self.projects[project].next_job_number;
                self.projects[project].next_job_number += 1;
                Some(n)
            } else {
                None
            };
            let rec = &mut self.workflows[workflow].jobs[job];
            match kind {
                JobKind::Approval => rec.status = JobStatus::OnHold,
                JobKind::Build => {
                    rec.status = JobStatus::Running;
                    rec.started_at = Some(now);
                    rec.finish_at = Some(elapsed.saturating_add(rec.duration));
                    rec.job_number = number;
                }
            }
            changed = true;
        }
        changed
    }

    fn refresh_status(&mut self, workflow: usize) {
        let wf = &self.workflows[workflow];
        if wf.status.is_final() {
            return;
        }
        let any = |s: JobStatus| wf.jobs.iter().any(|j| j.status == s);
        let status = if any(JobStatus::Running) {
            if any(JobStatus::Failed) {
                WorkflowStatus::Failing
            } else {
                WorkflowStatus::Running
            }
        } else if any(JobStatus::Failed) || any(JobStatus::Canceled) {
            WorkflowStatus::Failed
        } else if any(JobStatus::OnHold) {
            WorkflowStatus::OnHold
        } else if any(JobStatus::Blocked) {
            // Nothing runs and nothing waits for approval, yet jobs are blocked: the
            // requirements can never be met.
            WorkflowStatus::Error
        } else {
            WorkflowStatus::Success
        };
        self.set_status(workflow, status);
    }

    fn set_status(&mut self, workflow: usize, status: WorkflowStatus) {
        let now = self.now();
        let wf = &mut self.workflows[workflow];
        if wf.status == status {
            return;
        }
        wf.status = status;
        if status.is_final() {
            wf.stopped_at = Some(now);
            for job in &mut wf.jobs {
                if matches!(job.status, JobStatus::Blocked | JobStatus::OnHold) {
                    job.status = JobStatus::NotRun;
                }
            }
            self.emit_workflow_completed(workflow);
        }
    }

    // ----- workflow actions -------------------------------------------------------------------

    pub fn find_workflow(&self, id: Uuid) -> Option<usize> {
        self.workflows.iter().position(|w| w.id == id)
    }

    pub fn find_pipeline(&self, id: Uuid) -> Option<usize> {
        self.pipelines.iter().position(|p| p.id == id)
    }

    pub fn approve(
        &mut self,
        workflow: usize,
        approval_request_id: Uuid,
        caller: Caller,
    ) -> Result<(), ApiError> {
        let job = self.workflows[workflow]
            .jobs
            .iter()
            .position(|j| j.approval_request_id == Some(approval_request_id))
            .ok_or_else(|| ApiError::not_found("Approval request not found"))?;
        if self.workflows[workflow].jobs[job].status != JobStatus::OnHold {
            return Err(ApiError::bad_request(
                "Job is not on hold; it cannot be approved.",
            ));
        }
        let now = self.now();
        let rec = &mut self.workflows[workflow].jobs[job];
        rec.status = JobStatus::Success;
        rec.stopped_at = Some(now);
        rec.approved_by = Some(caller.user);
        self.settle(workflow);
        Ok(())
    }

    pub fn cancel(&mut self, workflow: usize, caller: Caller) {
        if self.workflows[workflow].status.is_final() {
            return;
        }
        let now = self.now();
        let mut canceled = Vec::new();
        for (index, job) in self.workflows[workflow].jobs.iter_mut().enumerate() {
            match job.status {
                JobStatus::Running => {
                    job.status = JobStatus::Canceled;
                    job.stopped_at = Some(now);
                    job.finish_at = None;
                    job.canceled_by = Some(caller.user);
                    canceled.push(index);
                }
                JobStatus::Blocked | JobStatus::OnHold => job.status = JobStatus::NotRun,
                _ => {}
            }
        }
        for job in canceled {
            self.emit_job_completed(workflow, job);
        }
        self.workflows[workflow].canceled_by = Some(caller.user);
        self.set_status(workflow, WorkflowStatus::Canceled);
    }

    /// Starts a new workflow rerunning `original` according to `plan`.
    pub fn rerun(
        &mut self,
        original: usize,
        plan: RerunPlan,
        caller: Caller,
    ) -> Result<usize, ApiError> {
        let wf = &self.workflows[original];
        if !wf.status.is_final() {
            return Err(ApiError::bad_request(
                "Workflow is not finished; only finished workflows can be rerun.",
            ));
        }
        let rerun: Vec<bool> = match &plan {
            RerunPlan::All => vec![true; wf.jobs.len()],
            RerunPlan::FromFailed => {
                if !wf
                    .jobs
                    .iter()
                    .any(|j| matches!(j.status, JobStatus::Failed | JobStatus::Canceled))
                {
                    return Err(ApiError::bad_request(
                        "Workflow has no failed jobs to rerun.",
                    ));
                }
                wf.jobs
                    .iter()
                    .map(|j| j.status != JobStatus::Success)
                    .collect()
            }
            RerunPlan::Jobs(ids) => {
                let mut seeds = vec![false; wf.jobs.len()];
                for id in ids {
                    let index = wf.jobs.iter().position(|j| j.id == *id).ok_or_else(|| {
                        ApiError::bad_request(format!("Job {id} is not part of this workflow."))
                    })?;
                    seeds[index] = true;
                }
                with_dependents(&wf.jobs, seeds)
            }
        };
        let project = wf.project;
        let pipeline = wf.pipeline;
        let name = wf.name.clone();
        let rerun_of = Some(wf.id);
        let spec_jobs = self.projects[project]
            .spec
            .workflows
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.jobs.clone())
            .unwrap_or_default();
        let jobs = wf
            .jobs
            .iter()
            .zip(rerun)
            .map(|(job, again)| {
                if !again {
                    return job.clone();
                }
                let attempt = job.attempt + 1;
                let outcome = spec_jobs
                    .iter()
                    .find(|s| s.name == job.name)
                    .map_or(job.outcome, |s| s.outcome_for(attempt));
                JobRec {
                    id: Uuid::new_v4(),
                    status: JobStatus::Blocked,
                    job_number: None,
                    started_at: None,
                    stopped_at: None,
                    finish_at: None,
                    outcome,
                    attempt,
                    approval_request_id: (job.kind == JobKind::Approval).then(Uuid::new_v4),
                    approved_by: None,
                    canceled_by: None,
                    ..job.clone()
                }
            })
            .collect();
        Ok(self.push_workflow(pipeline, name, caller.user, jobs, rerun_of))
    }

    // ----- views --------------------------------------------------------------------------------

    pub fn pipeline_view(&self, index: usize) -> PipelineView {
        let p = &self.pipelines[index];
        PipelineView {
            id: p.id,
            number: p.number,
            project_slug: self.projects[p.project].slug.short(),
            branch: p.branch.clone(),
            tag: p.tag.clone(),
            parameters: p.parameters.clone(),
            state: p.state,
            errors: p.errors.iter().map(|e| e.message.clone()).collect(),
            created_at: p.created_at,
            created_by: self.users[p.user].login.clone(),
            token_name: self
                .tokens
                .get(p.token)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            revision: p.revision.clone(),
            endpoint: p.endpoint.clone(),
        }
    }

    pub fn workflow_view(&self, index: usize) -> WorkflowView {
        let w = &self.workflows[index];
        WorkflowView {
            id: w.id,
            pipeline_id: self.pipelines[w.pipeline].id,
            name: w.name.clone(),
            status: w.status,
            created_at: w.created_at,
            stopped_at: w.stopped_at,
            rerun_of: w.rerun_of,
            jobs: w
                .jobs
                .iter()
                .map(|j| JobView {
                    id: j.id,
                    name: j.name.clone(),
                    kind: j.kind,
                    status: j.status,
                    job_number: j.job_number,
                    approval_request_id: j.approval_request_id,
                    started_at: j.started_at,
                    stopped_at: j.stopped_at,
                    attempt: j.attempt,
                })
                .collect(),
        }
    }
}

/// Marks every job that (transitively) requires a seed job.
fn with_dependents(jobs: &[JobRec], mut marked: Vec<bool>) -> Vec<bool> {
    loop {
        let mut changed = false;
        for (index, job) in jobs.iter().enumerate() {
            if marked[index] {
                continue;
            }
            let depends = job
                .requires
                .iter()
                .any(|name| jobs.iter().zip(&marked).any(|(j, m)| *m && &j.name == name));
            if depends {
                marked[index] = true;
                changed = true;
            }
        }
        if !changed {
            return marked;
        }
    }
}

/// Applies defaults and type checks; returns effective values and CircleCI-style errors.
fn resolve_parameters(
    spec: &ProjectSpec,
    given: &Map<String, Value>,
) -> (Map<String, Value>, Vec<PipelineError>) {
    let mut errors = Vec::new();
    let unexpected: Vec<&str> = given
        .keys()
        .filter(|k| !spec.parameters.iter().any(|p| &p.name == *k))
        .map(String::as_str)
        .collect();
    if !unexpected.is_empty() {
        errors.push(PipelineError {
            kind: "config",
            message: format!("Unexpected argument(s): {}", unexpected.join(", ")),
        });
    }
    let mut effective = Map::new();
    let mut missing = Vec::new();
    for declared in &spec.parameters {
        let Some(value) = given.get(&declared.name).or(declared.default.as_ref()) else {
            missing.push(declared.name.as_str());
            continue;
        };
        let ok = match &declared.kind {
            ParameterType::String => value.is_string(),
            ParameterType::Integer => value.is_i64() || value.is_u64(),
            ParameterType::Boolean => value.is_boolean(),
            ParameterType::Enum { values } => value
                .as_str()
                .is_some_and(|s| values.iter().any(|v| v == s)),
        };
        if ok {
            effective.insert(declared.name.clone(), value.clone());
        } else {
            let expected = match &declared.kind {
                ParameterType::Enum { values } => format!("enum ({})", values.join(", ")),
                other => other.name().to_owned(),
            };
            errors.push(PipelineError {
                kind: "config",
                message: format!(
                    "Type error for argument {}: expected type: {expected}, actual value: {value} (type {})",
                    declared.name,
                    json_type_name(value)
                ),
            });
        }
    }
    if !missing.is_empty() {
        errors.push(PipelineError {
            kind: "config",
            message: format!("Missing argument(s): {}", missing.join(", ")),
        });
    }
    (effective, errors)
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "map",
    }
}

/// Config errors the simulator can detect: duplicate job names and unknown `requires`.
fn check_config(spec: &ProjectSpec) -> Vec<PipelineError> {
    let mut errors = Vec::new();
    for workflow in &spec.workflows {
        for (index, job) in workflow.jobs.iter().enumerate() {
            if workflow.jobs[..index]
                .iter()
                .any(|other| other.name == job.name)
            {
                errors.push(PipelineError {
                    kind: "config",
                    message: format!(
                        "Workflow {}: job name {} is used twice",
                        workflow.name, job.name
                    ),
                });
            }
            for required in &job.requires {
                if !workflow.jobs.iter().any(|other| &other.name == required) {
                    errors.push(PipelineError {
                        kind: "config",
                        message: format!(
                            "Workflow {}: job {} requires {}, which is not a job of this workflow",
                            workflow.name, job.name, required
                        ),
                    });
                }
            }
        }
    }
    errors
}

/// Parses a `{branch}|{tag}` object of `pipeline/run`.
pub(crate) fn parse_git_ref(
    value: Option<&Value>,
    field: &str,
) -> Result<Option<GitRef>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be an object.")))?;
    if let Some(key) = object.keys().find(|k| *k != "branch" && *k != "tag") {
        return Err(ApiError::bad_request(format!(
            "Unexpected field {field}.{key}."
        )));
    }
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match object.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!(
                "{field}.{key} must be a non-empty string."
            ))),
        }
    };
    match (text("branch")?, text("tag")?) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "{field}: branch and tag are mutually exclusive."
        ))),
        (Some(branch), None) => Ok(Some(GitRef::Branch(branch))),
        (None, Some(tag)) => Ok(Some(GitRef::Tag(tag))),
        (None, None) => Ok(None),
    }
}
