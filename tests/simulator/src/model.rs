//! Declarative description of what the simulated CircleCI knows: users, projects, their
//! pipeline parameters, workflows and jobs. Everything here is plain data with builder
//! helpers, and deserialisable so the `circleci-sim` binary can read it from a file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Which of CircleCI's two webhook payload families a project's deliveries use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadStyle {
    /// OAuth (GitHub OAuth / Bitbucket) projects: `pipeline.vcs` is present and
    /// `job-completed` carries a `workflow` object.
    Oauth,
    /// GitHub App / GitLab projects: `pipeline.trigger_parameters` instead of `vcs`, and
    /// `job-completed` has no `workflow` object.
    App,
}

/// The declared type of a pipeline parameter (CircleCI config `parameters:` stanza).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ParameterType {
    /// `type: string`
    String,
    /// `type: integer`
    Integer,
    /// `type: boolean`
    Boolean,
    /// `type: enum` with the allowed values.
    Enum {
        /// Allowed values.
        values: Vec<String>,
    },
}

impl ParameterType {
    /// The name CircleCI uses for this type in config and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            ParameterType::String => "string",
            ParameterType::Integer => "integer",
            ParameterType::Boolean => "boolean",
            ParameterType::Enum { .. } => "enum",
        }
    }
}

/// A declared pipeline parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterSpec {
    /// Parameter name (the key callers send in `parameters`).
    pub name: String,
    /// Declared type.
    #[serde(flatten)]
    pub kind: ParameterType,
    /// Default value; a parameter without one must be given by every trigger.
    #[serde(default)]
    pub default: Option<Value>,
}

impl ParameterSpec {
    /// A `string` parameter with a default.
    pub fn string(name: &str, default: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: ParameterType::String,
            default: Some(Value::from(default)),
        }
    }
    /// An `integer` parameter with a default.
    pub fn integer(name: &str, default: i64) -> Self {
        Self {
            name: name.to_owned(),
            kind: ParameterType::Integer,
            default: Some(Value::from(default)),
        }
    }
    /// A `boolean` parameter with a default.
    pub fn boolean(name: &str, default: bool) -> Self {
        Self {
            name: name.to_owned(),
            kind: ParameterType::Boolean,
            default: Some(Value::from(default)),
        }
    }
    /// An `enum` parameter with a default.
    pub fn enumeration(name: &str, values: &[&str], default: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: ParameterType::Enum {
                values: values.iter().map(|v| (*v).to_owned()).collect(),
            },
            default: Some(Value::from(default)),
        }
    }
    /// A parameter of `kind` with no default: triggers must supply it.
    pub fn required(name: &str, kind: ParameterType) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            default: None,
        }
    }
}

/// A workflow `when:` condition over pipeline parameter values (after defaults apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// `<< pipeline.parameters.P >>` equals `value`.
    Equal {
        /// Parameter name.
        parameter: String,
        /// Value to compare with (JSON equality).
        value: Value,
    },
    /// `<< pipeline.parameters.P >>` differs from `value`.
    NotEqual {
        /// Parameter name.
        parameter: String,
        /// Value to compare with.
        value: Value,
    },
    /// The parameter is truthy (true, non-empty string, non-zero integer).
    Truthy {
        /// Parameter name.
        parameter: String,
    },
    /// Negation.
    Not(Box<When>),
    /// All must hold.
    And(Vec<When>),
    /// Any must hold.
    Or(Vec<When>),
}

impl When {
    /// `parameter == value`.
    pub fn equals(parameter: &str, value: impl Into<Value>) -> Self {
        When::Equal {
            parameter: parameter.to_owned(),
            value: value.into(),
        }
    }
    /// `parameter != value`.
    pub fn not_equals(parameter: &str, value: impl Into<Value>) -> Self {
        When::NotEqual {
            parameter: parameter.to_owned(),
            value: value.into(),
        }
    }
    /// `parameter` is truthy.
    pub fn truthy(parameter: &str) -> Self {
        When::Truthy {
            parameter: parameter.to_owned(),
        }
    }

    /// Evaluates the condition against effective parameter values.
    pub fn holds(&self, params: &serde_json::Map<String, Value>) -> bool {
        match self {
            When::Equal { parameter, value } => params.get(parameter) == Some(value),
            When::NotEqual { parameter, value } => params.get(parameter) != Some(value),
            When::Truthy { parameter } => match params.get(parameter) {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => !s.is_empty(),
                Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
                _ => false,
            },
            When::Not(inner) => !inner.holds(params),
            When::And(all) => all.iter().all(|w| w.holds(params)),
            When::Or(any) => any.iter().any(|w| w.holds(params)),
        }
    }
}

/// Whether a job does work or waits for a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A normal job that runs for `duration` and ends with its outcome.
    #[default]
    Build,
    /// `type: approval`: sits `on_hold` until approved through the API.
    Approval,
}

/// How a build job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// Ends `success`.
    #[default]
    Success,
    /// Ends `failed`.
    Failed,
}

/// A job inside a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Job name, unique within the workflow.
    pub name: String,
    /// Build or approval.
    #[serde(default)]
    pub kind: JobKind,
    /// Names of jobs that must succeed before this one starts.
    #[serde(default)]
    pub requires: Vec<String>,
    /// How long the job runs (simulated clock), in seconds in files.
    #[serde(default = "default_job_duration", with = "secs")]
    pub duration: Duration,
    /// Outcome per attempt: attempt `n` (0 = first run, 1 = first rerun, ...) ends with
    /// `outcomes[n]`, the last entry repeating; empty means always `success`.
    #[serde(default)]
    pub outcomes: Vec<JobOutcome>,
}

fn default_job_duration() -> Duration {
    Duration::from_secs(10)
}

impl JobSpec {
    /// A build job that succeeds after 10 simulated seconds.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: JobKind::Build,
            requires: Vec::new(),
            duration: default_job_duration(),
            outcomes: Vec::new(),
        }
    }
    /// An approval job (`type: approval`).
    pub fn approval(name: &str) -> Self {
        Self {
            kind: JobKind::Approval,
            duration: Duration::ZERO,
            ..Self::new(name)
        }
    }
    /// Sets the jobs this one requires.
    pub fn requires<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.requires = names.into_iter().map(Into::into).collect();
        self
    }
    /// Sets the run time.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }
    /// Every attempt fails.
    pub fn fails(mut self) -> Self {
        self.outcomes = vec![JobOutcome::Failed];
        self
    }
    /// The first attempt fails, reruns succeed (a flaky job).
    pub fn fails_then_succeeds(mut self) -> Self {
        self.outcomes = vec![JobOutcome::Failed, JobOutcome::Success];
        self
    }
    /// Explicit outcome per attempt.
    pub fn outcomes(mut self, outcomes: Vec<JobOutcome>) -> Self {
        self.outcomes = outcomes;
        self
    }
    /// The outcome of attempt `attempt` (0-based).
    pub fn outcome_for(&self, attempt: u32) -> JobOutcome {
        let index = usize::try_from(attempt).unwrap_or(usize::MAX);
        self.outcomes
            .get(index)
            .or(self.outcomes.last())
            .copied()
            .unwrap_or_default()
    }
}

/// A workflow of a project's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSpec {
    /// Workflow name.
    pub name: String,
    /// Optional `when:` condition; a workflow whose condition is false is not created.
    #[serde(default)]
    pub when: Option<When>,
    /// Optional branch filter (exact names); `None` runs on every branch and tag.
    #[serde(default)]
    pub branches: Option<Vec<String>>,
    /// Jobs, in declaration order.
    #[serde(default)]
    pub jobs: Vec<JobSpec>,
}

impl WorkflowSpec {
    /// An unconditional workflow without jobs (add them with [`WorkflowSpec::job`]).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            when: None,
            branches: None,
            jobs: Vec::new(),
        }
    }
    /// Adds a job.
    pub fn job(mut self, job: JobSpec) -> Self {
        self.jobs.push(job);
        self
    }
    /// Sets the `when:` condition.
    pub fn when(mut self, when: When) -> Self {
        self.when = Some(when);
        self
    }
    /// Restricts the workflow to these branches.
    pub fn only_branches<I, S>(mut self, branches: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.branches = Some(branches.into_iter().map(Into::into).collect());
        self
    }
}

/// A project known to the simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectSpec {
    /// `gh/org/repo`, `github/org/repo`, `bb/org/repo`, `bitbucket/org/repo` or
    /// `circleci/<org-id>/<project-id>`.
    pub slug: String,
    /// Project id (the webhook `scope.id`).
    #[serde(default = "Uuid::new_v4")]
    pub id: Uuid,
    /// Organization id.
    #[serde(default = "Uuid::new_v4")]
    pub organization_id: Uuid,
    /// Display name; defaults to the last slug segment.
    #[serde(default)]
    pub name: Option<String>,
    /// Organization name; defaults to the middle slug segment.
    #[serde(default)]
    pub organization_name: Option<String>,
    /// Branch used when a trigger names neither branch nor tag.
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Declared pipeline parameters.
    #[serde(default)]
    pub parameters: Vec<ParameterSpec>,
    /// Workflows of the config.
    #[serde(default)]
    pub workflows: Vec<WorkflowSpec>,
    /// Webhook payload family; defaults to `app` for `circleci/` slugs, `oauth` otherwise.
    #[serde(default)]
    pub payload_style: Option<PayloadStyle>,
    /// If set, only these logins can see the project (others get 404, like CircleCI).
    #[serde(default)]
    pub allowed_users: Option<Vec<String>>,
    /// Logins that can read but not write (triggers, reruns, approvals, cancels and
    /// webhook changes answer 403).
    #[serde(default)]
    pub read_only_users: Vec<String>,
    /// Pipeline definition ids accepted by `pipeline/run` (the first is the default).
    /// Empty: one is generated and any `definition_id` other than it answers 404.
    #[serde(default)]
    pub definitions: Vec<Uuid>,
    /// Fixed commit SHAs per branch or tag; others get a deterministic fake SHA.
    #[serde(default)]
    pub revisions: BTreeMap<String, String>,
}

fn default_branch() -> String {
    "main".to_owned()
}

impl ProjectSpec {
    /// A project with no parameters and no workflows.
    pub fn new(slug: &str) -> Self {
        Self {
            slug: slug.to_owned(),
            id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            name: None,
            organization_name: None,
            default_branch: default_branch(),
            parameters: Vec::new(),
            workflows: Vec::new(),
            payload_style: None,
            allowed_users: None,
            read_only_users: Vec::new(),
            definitions: Vec::new(),
            revisions: BTreeMap::new(),
        }
    }
    /// Sets the project id.
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }
    /// Adds a declared parameter.
    pub fn parameter(mut self, parameter: ParameterSpec) -> Self {
        self.parameters.push(parameter);
        self
    }
    /// Adds a workflow.
    pub fn workflow(mut self, workflow: WorkflowSpec) -> Self {
        self.workflows.push(workflow);
        self
    }
    /// Chooses the webhook payload family.
    pub fn payload_style(mut self, style: PayloadStyle) -> Self {
        self.payload_style = Some(style);
        self
    }
    /// Restricts visibility to these logins.
    pub fn only_users<I, S>(mut self, logins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_users = Some(logins.into_iter().map(Into::into).collect());
        self
    }
    /// Makes these logins read-only on the project.
    pub fn read_only<I, S>(mut self, logins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.read_only_users = logins.into_iter().map(Into::into).collect();
        self
    }
    /// Adds an accepted pipeline definition id.
    pub fn definition(mut self, id: Uuid) -> Self {
        self.definitions.push(id);
        self
    }
    /// Pins the commit SHA a branch or tag resolves to.
    pub fn revision(mut self, reference: &str, sha: &str) -> Self {
        self.revisions.insert(reference.to_owned(), sha.to_owned());
        self
    }
    /// Sets the default branch.
    pub fn default_branch(mut self, branch: &str) -> Self {
        self.default_branch = branch.to_owned();
        self
    }
    /// The payload style in effect.
    pub fn effective_payload_style(&self) -> PayloadStyle {
        self.payload_style.unwrap_or_else(|| {
            if self.slug.starts_with("circleci/") {
                PayloadStyle::App
            } else {
                PayloadStyle::Oauth
            }
        })
    }
}

/// A user and their API tokens, as read from a simulator config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSpec {
    /// Login (`GET /me` `login`).
    pub login: String,
    /// Tokens of this user; the token name defaults to the login.
    pub tokens: Vec<TokenSpec>,
}

/// A named API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// Name used in request logs instead of the token itself.
    #[serde(default)]
    pub name: Option<String>,
    /// The token value clients send in `Circle-Token`.
    pub token: String,
}

/// The contents of a simulator config file (JSON or TOML).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Users and their tokens.
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Projects.
    #[serde(default)]
    pub projects: Vec<ProjectSpec>,
}

impl SimConfig {
    /// Parses a config file: TOML if the name ends in `.toml`, JSON otherwise.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<SimConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let is_toml = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"));
        if is_toml {
            Self::from_toml(&text)
        } else {
            Self::from_json(&text)
        }
    }

    /// Parses TOML.
    pub fn from_toml(text: &str) -> anyhow::Result<SimConfig> {
        Ok(toml::from_str(text)?)
    }

    /// Parses JSON.
    pub fn from_json(text: &str) -> anyhow::Result<SimConfig> {
        Ok(serde_json::from_str(text)?)
    }
}

/// Serialises a `Duration` as (fractional) seconds.
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}
