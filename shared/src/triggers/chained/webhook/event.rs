//! `workflow-completed` and `job-completed` webhook bodies, typed and normalised.
//!
//! Both payload families are read: OAuth-style (`pipeline.vcs`) and App-style
//! (`pipeline.trigger_parameters`, no `vcs`; its `job-completed` has no `workflow`).
//! Whichever family arrives, [`WebhookEvent`] exposes the same revision / branch / tag.
//! Only the fields used are read; everything else is tolerated and kept in [`WebhookEvent::raw`].
//! A field that is read but missing, mistyped or oversized is an error naming its path.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use triggers_config::ProjectSlug;
use triggers_config::chain::{CompletionStatus, EventKind};
use triggers_config::template::{TemplateContext, Variable};

/// Largest body parsed. CircleCI's bodies are a few KiB; commit messages make the tail.
/// Bounded by what one SQS message holds (256 KiB): an accepted delivery is queued whole.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
const MAX_ID_LEN: usize = 128;
const MAX_NAME_LEN: usize = 1024;
/// Git's own limit on a ref name.
const MAX_REF_LEN: usize = 255;
const MAX_STATUS_LEN: usize = 64;
const MAX_URL_LEN: usize = 2048;
/// Longest piece of an unexpected value echoed back in an error.
const MAX_ECHO: usize = 64;

/// A parsed, normalised webhook event.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    kind: EventKind,
    id: String,
    happened_at: DateTime<Utc>,
    project: ProjectInfo,
    pipeline: PipelineInfo,
    git: GitInfo,
    workflow: Option<WorkflowInfo>,
    job: Option<JobInfo>,
    status: EventStatus,
    raw: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectInfo {
    pub slug: ProjectSlug,
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineInfo {
    pub id: String,
    pub number: u64,
    /// `pipeline.trigger.type`: webhook, api, schedule, gitlab, github_app, ...
    pub trigger_type: Option<String>,
}

/// Where the revision, branch and tag were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitSource {
    /// OAuth-style `pipeline.vcs`.
    Vcs,
    /// App-style `pipeline.trigger_parameters` (`git`, then the provider's block).
    TriggerParameters,
    /// Neither is present (e.g. a pipeline without a repository).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitInfo {
    pub revision: Option<String>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub source: GitSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowInfo {
    pub id: String,
    pub name: String,
    /// Always set on `workflow-completed`; absent on `job-completed`.
    pub status: Option<EventStatus>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    pub name: String,
    pub number: Option<u64>,
    pub status: EventStatus,
}

/// A status as CircleCI sent it. Unknown values are kept (and match no rule) rather than
/// rejected: CircleCI adds statuses from time to time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStatus(String);

impl EventStatus {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn known(&self) -> Option<CompletionStatus> {
        CompletionStatus::from_wire(&self.0)
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a body is not a usable event. Safe to show to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is {size} bytes; at most {limit} are accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("the body is not valid JSON: {reason}")]
    Json { reason: String },
    #[error("unsupported event type `{0}` (expected workflow-completed or job-completed)")]
    UnsupportedType(String),
    #[error("`{path}` {problem}")]
    Field { path: String, problem: FieldProblem },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    Missing,
    WrongType { expected: &'static str },
    Empty,
    TooLong { max: usize },
    Invalid(String),
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::Missing => f.write_str("is missing"),
            FieldProblem::WrongType { expected } => write!(f, "should be {expected}"),
            FieldProblem::Empty => f.write_str("is empty"),
            FieldProblem::TooLong { max } => write!(f, "is longer than {max} characters"),
            FieldProblem::Invalid(reason) => write!(f, "is invalid: {reason}"),
        }
    }
}

impl EventError {
    /// The field path for field errors (`pipeline.vcs.revision`).
    pub fn path(&self) -> Option<&str> {
        match self {
            EventError::Field { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// How old an event may be, and how far ahead of our clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    pub max_age: Duration,
    /// Tolerated clock skew for events that seem to come from the future.
    pub max_skew: Duration,
}

impl Default for ReplayWindow {
    /// One hour: long enough for CircleCI's redeliveries, short enough that deduplication
    /// records (which must outlive the window) stay small.
    fn default() -> Self {
        Self {
            max_age: Duration::hours(1),
            max_skew: Duration::minutes(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "the event happened {age_seconds} s ago; events older than {max_age_seconds} s are rejected"
    )]
    TooOld {
        age_seconds: i64,
        max_age_seconds: i64,
    },
    #[error("the event is dated {ahead_seconds} s in the future")]
    FromTheFuture { ahead_seconds: i64 },
}

/// Parses a raw webhook body. Verify the signature first: this trusts the content.
pub fn parse_event(body: &[u8]) -> Result<WebhookEvent, EventError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(EventError::TooLarge {
            size: body.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    let raw: Value = serde_json::from_slice(body).map_err(|error| EventError::Json {
        // serde_json's syntax errors name a position, never the input itself.
        reason: error.to_string(),
    })?;
    WebhookEvent::from_json(raw)
}

impl WebhookEvent {
    /// Reads an already-decoded body.
    pub fn from_json(raw: Value) -> Result<Self, EventError> {
        let root = Obj::root(&raw)?;
        let type_text = root.string("type", MAX_NAME_LEN)?;
        let kind = EventKind::from_wire(type_text)
            .ok_or_else(|| EventError::UnsupportedType(echo(type_text)))?;
        let id = root.string("id", MAX_ID_LEN)?.to_owned();
        let happened_at = root.timestamp("happened_at")?;

        let project_obj = root.object("project")?;
        let slug_text = project_obj.string("slug", MAX_NAME_LEN)?;
        let slug = slug_text
            .parse::<ProjectSlug>()
            .map_err(|error| project_obj.invalid("slug", error.to_string()))?;
        let project = ProjectInfo {
            slug,
            id: project_obj.opt_string("id", MAX_ID_LEN)?.map(str::to_owned),
            name: project_obj
                .opt_string("name", MAX_NAME_LEN)?
                .map(str::to_owned),
        };

        let pipeline_obj = root.object("pipeline")?;
        let trigger_type = match pipeline_obj.opt_object("trigger")? {
            Some(trigger) => trigger
                .opt_string("type", MAX_STATUS_LEN)?
                .map(str::to_owned),
            None => None,
        };
        let pipeline = PipelineInfo {
            id: pipeline_obj.string("id", MAX_ID_LEN)?.to_owned(),
            number: pipeline_obj.u64("number")?,
            trigger_type,
        };
        let git = git_info(&pipeline_obj, pipeline.trigger_type.as_deref())?;

        let workflow_obj = root.opt_object("workflow")?;
        let (workflow, job, status) = match kind {
            EventKind::WorkflowCompleted => {
                let workflow =
                    workflow_info(&workflow_obj.ok_or_else(|| root.missing("workflow"))?)?;
                let status = workflow
                    .status
                    .clone()
                    .ok_or_else(|| root.error("workflow.status", FieldProblem::Missing))?;
                // A job object on a workflow event is not ours to interpret.
                (Some(workflow), None, status)
            }
            EventKind::JobCompleted => {
                let job = root.object("job")?;
                let job = JobInfo {
                    id: job.string("id", MAX_ID_LEN)?.to_owned(),
                    name: job.string("name", MAX_NAME_LEN)?.to_owned(),
                    number: job.opt_u64("number")?,
                    status: EventStatus(job.string("status", MAX_STATUS_LEN)?.to_owned()),
                };
                let status = job.status.clone();
                (
                    workflow_obj.map(|w| workflow_info(&w)).transpose()?,
                    Some(job),
                    status,
                )
            }
        };

        Ok(Self {
            kind,
            id,
            happened_at,
            project,
            pipeline,
            git,
            workflow,
            job,
            status,
            raw,
        })
    }

    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The event id: the deduplication key for redeliveries.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn happened_at(&self) -> DateTime<Utc> {
        self.happened_at
    }

    pub fn project(&self) -> &ProjectInfo {
        &self.project
    }

    pub fn project_slug(&self) -> &ProjectSlug {
        &self.project.slug
    }

    pub fn pipeline(&self) -> &PipelineInfo {
        &self.pipeline
    }

    pub fn git(&self) -> &GitInfo {
        &self.git
    }

    pub fn revision(&self) -> Option<&str> {
        self.git.revision.as_deref()
    }

    pub fn branch(&self) -> Option<&str> {
        self.git.branch.as_deref()
    }

    pub fn tag(&self) -> Option<&str> {
        self.git.tag.as_deref()
    }

    /// Absent on App-style `job-completed`.
    pub fn workflow(&self) -> Option<&WorkflowInfo> {
        self.workflow.as_ref()
    }

    /// Set on `job-completed` only.
    pub fn job(&self) -> Option<&JobInfo> {
        self.job.as_ref()
    }

    /// What completed, and how: the workflow's status, or the job's on `job-completed`.
    pub fn status(&self) -> &EventStatus {
        &self.status
    }

    /// The body as received, for fields this type does not model.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Rejects events older than the window (replays) or too far in the future.
    pub fn check_replay_window(
        &self,
        now: DateTime<Utc>,
        window: &ReplayWindow,
    ) -> Result<(), ReplayError> {
        let age = now - self.happened_at;
        if age > window.max_age {
            return Err(ReplayError::TooOld {
                age_seconds: age.num_seconds(),
                max_age_seconds: window.max_age.num_seconds(),
            });
        }
        if -age > window.max_skew {
            return Err(ReplayError::FromTheFuture {
                ahead_seconds: (-age).num_seconds(),
            });
        }
        Ok(())
    }
}

fn borrowed(value: Option<&str>) -> Option<Cow<'_, str>> {
    value.map(Cow::Borrowed)
}

impl TemplateContext for WebhookEvent {
    fn lookup(&self, variable: Variable) -> Option<Cow<'_, str>> {
        match variable {
            Variable::Revision => borrowed(self.revision()),
            Variable::Branch => borrowed(self.branch()),
            Variable::Tag => borrowed(self.tag()),
            Variable::WorkflowId => borrowed(self.workflow().map(|w| w.id.as_str())),
            Variable::WorkflowName => borrowed(self.workflow().map(|w| w.name.as_str())),
            Variable::JobName => borrowed(self.job().map(|j| j.name.as_str())),
            Variable::PipelineId => Some(Cow::Borrowed(&self.pipeline.id)),
            Variable::PipelineNumber => Some(Cow::Owned(self.pipeline.number.to_string())),
            Variable::ProjectSlug => Some(Cow::Owned(self.project.slug.canonical())),
            Variable::Status => Some(Cow::Borrowed(self.status().as_str())),
            // Schedule variables: `check` refuses them in chains.
            Variable::SlotUtc | Variable::SlotLocal | Variable::SlotDate => None,
        }
    }
}

fn workflow_info(workflow: &Obj<'_>) -> Result<WorkflowInfo, EventError> {
    Ok(WorkflowInfo {
        id: workflow.string("id", MAX_ID_LEN)?.to_owned(),
        name: workflow.string("name", MAX_NAME_LEN)?.to_owned(),
        status: workflow
            .opt_string("status", MAX_STATUS_LEN)?
            .map(|s| EventStatus(s.to_owned())),
        url: workflow.opt_string("url", MAX_URL_LEN)?.map(str::to_owned),
    })
}

/// Revision, branch and tag from whichever family the payload is.
fn git_info(pipeline: &Obj<'_>, trigger_type: Option<&str>) -> Result<GitInfo, EventError> {
    if let Some(vcs) = pipeline.opt_object("vcs")? {
        return Ok(GitInfo {
            revision: revision(&vcs, "revision")?,
            branch: vcs.opt_string("branch", MAX_REF_LEN)?.map(str::to_owned),
            tag: vcs.opt_string("tag", MAX_REF_LEN)?.map(str::to_owned),
            source: GitSource::Vcs,
        });
    }
    let Some(parameters) = pipeline.opt_object("trigger_parameters")? else {
        return Ok(GitInfo {
            revision: None,
            branch: None,
            tag: None,
            source: GitSource::None,
        });
    };
    // `git` is the provider-neutral block; the provider's own block (`gitlab`,
    // `github_app`, ...) is named after the trigger type and fills any gaps.
    let provider_key = match trigger_type {
        Some(key) => Some(key.to_owned()),
        None => match parameters.opt_object("circleci")? {
            Some(circleci) => circleci
                .opt_string("trigger_type", MAX_STATUS_LEN)?
                .map(str::to_owned),
            None => None,
        },
    };
    let mut blocks = Vec::new();
    if let Some(git) = parameters.opt_object("git")? {
        blocks.push(git);
    }
    if let Some(key) = provider_key.as_deref().filter(|key| *key != "git")
        && let Some(Value::Object(_)) = parameters.get(key)
        && let Some(provider) = parameters.opt_object(key)?
    {
        blocks.push(provider);
    }
    let mut git = GitInfo {
        revision: None,
        branch: None,
        tag: None,
        source: GitSource::TriggerParameters,
    };
    for block in &blocks {
        let git_ref = block.opt_string("ref", MAX_REF_LEN + "refs/heads/".len())?;
        if git.branch.is_none() {
            git.branch = match block.opt_string("branch", MAX_REF_LEN)? {
                Some(branch) => Some(branch.to_owned()),
                None => git_ref
                    .and_then(|r| r.strip_prefix("refs/heads/"))
                    .map(str::to_owned),
            };
        }
        if git.tag.is_none() {
            git.tag = match block.opt_string("tag", MAX_REF_LEN)? {
                Some(tag) => Some(tag.to_owned()),
                None => git_ref
                    .and_then(|r| r.strip_prefix("refs/tags/"))
                    .map(str::to_owned),
            };
        }
        if git.revision.is_none() {
            git.revision = match revision(block, "checkout_sha")? {
                Some(sha) => Some(sha),
                None => revision(block, "commit_sha")?,
            };
        }
    }
    Ok(git)
}

fn revision(block: &Obj<'_>, key: &str) -> Result<Option<String>, EventError> {
    let Some(sha) = block.opt_string(key, 64)? else {
        return Ok(None);
    };
    if sha.len() < 7 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(block.invalid(key, "not a commit SHA (7 to 64 hex digits)".into()));
    }
    Ok(Some(sha.to_owned()))
}

fn echo(text: &str) -> String {
    text.chars()
        .take(MAX_ECHO)
        .flat_map(char::escape_debug)
        .collect()
}

/// A JSON object and its path in the body, for error messages.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn root(value: &'a Value) -> Result<Self, EventError> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                path: String::new(),
            }),
            _ => Err(EventError::Field {
                path: "(body)".into(),
                problem: FieldProblem::WrongType {
                    expected: "an object",
                },
            }),
        }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn error(&self, key: &str, problem: FieldProblem) -> EventError {
        EventError::Field {
            path: self.path_of(key),
            problem,
        }
    }

    fn missing(&self, key: &str) -> EventError {
        self.error(key, FieldProblem::Missing)
    }

    fn invalid(&self, key: &str, reason: String) -> EventError {
        self.error(key, FieldProblem::Invalid(reason))
    }

    /// The value, treating `null` as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    fn opt_object(&self, key: &str) -> Result<Option<Obj<'a>>, EventError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                map,
                path: self.path_of(key),
            })),
            Some(_) => Err(self.error(
                key,
                FieldProblem::WrongType {
                    expected: "an object",
                },
            )),
        }
    }

    fn object(&self, key: &str) -> Result<Obj<'a>, EventError> {
        self.opt_object(key)?.ok_or_else(|| self.missing(key))
    }

    /// A string; empty strings count as absent (App-style payloads send `"tag": ""`).
    fn opt_string(&self, key: &str, max: usize) -> Result<Option<&'a str>, EventError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) if text.chars().count() > max => {
                Err(self.error(key, FieldProblem::TooLong { max }))
            }
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(self.error(
                key,
                FieldProblem::WrongType {
                    expected: "a string",
                },
            )),
        }
    }

    fn string(&self, key: &str, max: usize) -> Result<&'a str, EventError> {
        match self.get(key) {
            Some(Value::String(text)) if text.is_empty() => {
                Err(self.error(key, FieldProblem::Empty))
            }
            _ => self.opt_string(key, max)?.ok_or_else(|| self.missing(key)),
        }
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>, EventError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or_else(|| {
                self.error(
                    key,
                    FieldProblem::WrongType {
                        expected: "a non-negative integer",
                    },
                )
            }),
        }
    }

    fn u64(&self, key: &str) -> Result<u64, EventError> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key))
    }

    fn timestamp(&self, key: &str) -> Result<DateTime<Utc>, EventError> {
        let text = self.string(key, MAX_STATUS_LEN)?;
        DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| self.invalid(key, "not an RFC 3339 timestamp".into()))
    }
}
