//! `[[chain]]`: rules that act when upstream workflows or jobs complete, and fan-in joins.
//!
//! ```toml
//! [[chain]]
//! name = "deploy-after-build"
//! when = { project = "gh/acme/api", workflow = "build", branch = "main" }
//! [[chain.then]]
//! action = "pipeline"
//! project = "gh/acme/deploy"
//! branch = "main"
//! parameters = { api_sha = "{{ revision }}" }
//! ```
//!
//! This module owns what the rules *mean* (patterns, defaults, validation, the loop check);
//! matching a concrete webhook event lives in `shared::chain`, which compiles patterns with
//! the same functions so `check` and the running Lambda can never disagree.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::action::ActionFields;
use crate::error::Problems;
use crate::path::FieldPath;
use crate::rules;
use crate::slug::{ProjectSlug, Vcs};
use crate::target::{self, ActionKind, GitRefSpec, ParameterValue, Selection, TargetSpec};
use crate::template::{Scope, Template, Variable};

/// Most actions one rule may run.
pub const MAX_ACTIONS_PER_RULE: usize = 20;
/// Most upstream matchers one fan-in rule may wait for.
pub const MAX_FAN_IN: usize = 10;
/// Bounds of a fan-in window: long enough for real pipelines, short enough that join
/// state does not pile up.
pub const MIN_JOIN_WINDOW: Duration = Duration::from_secs(60);
pub const MAX_JOIN_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// Rule names end up in claim keys (`<event>#<rule>#<action>`), so they are short and plain.
pub const MAX_RULE_NAME_LEN: usize = 64;

/// One `[[chain]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    pub name: String,
    pub description: Option<String>,
    /// A single upstream: the rule fires on each matching event.
    pub when: Option<UpstreamMatcher>,
    /// Fan-in: the rule fires once when every upstream has succeeded (correlated).
    #[serde(default)]
    pub after: Vec<UpstreamMatcher>,
    /// Fan-in only: what makes upstream completions belong together.
    pub correlate: Option<Correlation>,
    /// Fan-in only: how long after the first upstream the others may complete (`"2h"`).
    pub window: Option<String>,
    /// The actions, run in order of declaration (each one claimed separately).
    #[serde(default)]
    pub then: Vec<ChainAction>,
    /// The opt-out of the trust rule (see [`crate::trust`]): actions that act on existing
    /// work or carry event values run for *any* upstream the matcher accepts, including a
    /// branch anyone with push access (or a fork PR) can build. Named to be seen in review.
    #[serde(default)]
    pub dangerously_trust_any_upstream: bool,
}

impl ChainSpec {
    /// The upstream matchers: the `when` one, or the fan-in `after` list.
    pub fn upstreams(&self) -> &[UpstreamMatcher] {
        match &self.when {
            Some(when) => std::slice::from_ref(when),
            None => &self.after,
        }
    }

    pub fn is_fan_in(&self) -> bool {
        self.when.is_none() && !self.after.is_empty()
    }

    /// The fan-in window, when set and valid.
    pub fn window_duration(&self) -> Option<Duration> {
        self.window
            .as_deref()
            .and_then(|text| rules::parse_duration(text).ok())
    }
}

/// Which completed upstream a rule reacts to. Every field but `project` is optional;
/// pattern fields take one glob or a list of globs (any may match).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamMatcher {
    /// `gh/acme/api` (gh ≡ github, bb ≡ bitbucket) or a glob over org/repo: `gh/acme/*`.
    pub project: Patterns,
    /// Default: `job-completed` when `job` is set, else `workflow-completed`.
    pub event: Option<EventKind>,
    pub workflow: Option<Patterns>,
    pub job: Option<Patterns>,
    pub branch: Option<Patterns>,
    pub tag: Option<Patterns>,
    /// Default `["success"]`. Not allowed in fan-in matchers (they wait for success).
    pub status: Option<OneOrMany<CompletionStatus>>,
    /// `"ours"`: only pipelines this service started count (looked up by pipeline id, a
    /// consistent read); an event about any other pipeline is refused (a `rejected` row).
    pub upstream: Option<UpstreamOrigin>,
}

/// Whose pipelines an upstream matcher accepts (`upstream = "ours"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamOrigin {
    /// Only pipelines a trigger of this service started (any kind: schedule, chain, HTTP,
    /// CLI), as recorded in trigger history.
    Ours,
}

impl UpstreamMatcher {
    pub fn event_kind(&self) -> EventKind {
        match (self.event, &self.job) {
            (Some(kind), _) => kind,
            (None, Some(_)) => EventKind::JobCompleted,
            (None, None) => EventKind::WorkflowCompleted,
        }
    }

    /// The statuses that match; `success` when none are given.
    pub fn statuses(&self) -> Vec<CompletionStatus> {
        self.status
            .as_ref()
            .map_or_else(|| vec![CompletionStatus::Success], |list| list.0.clone())
    }

    /// Compiles the patterns; fails only for a matcher that `check` would reject.
    pub fn compile(&self) -> Result<CompiledMatcher, PatternError> {
        fn names(patterns: &Option<Patterns>) -> Result<Option<Vec<NamePattern>>, PatternError> {
            patterns
                .as_ref()
                .map(|list| list.iter().map(|p| NamePattern::parse(p)).collect())
                .transpose()
        }
        Ok(CompiledMatcher {
            projects: self
                .project
                .iter()
                .map(|p| ProjectPattern::parse(p))
                .collect::<Result<_, _>>()?,
            event: self.event_kind(),
            workflows: names(&self.workflow)?,
            jobs: names(&self.job)?,
            branches: names(&self.branch)?,
            tags: names(&self.tag)?,
            statuses: self.statuses(),
        })
    }
}

/// An [`UpstreamMatcher`] with its patterns compiled. `None` means "no filter".
#[derive(Debug, Clone)]
pub struct CompiledMatcher {
    pub projects: Vec<ProjectPattern>,
    pub event: EventKind,
    pub workflows: Option<Vec<NamePattern>>,
    pub jobs: Option<Vec<NamePattern>>,
    pub branches: Option<Vec<NamePattern>>,
    pub tags: Option<Vec<NamePattern>>,
    pub statuses: Vec<CompletionStatus>,
}

impl CompiledMatcher {
    pub fn matches_project(&self, project: &ProjectSlug) -> bool {
        self.projects.iter().any(|p| p.matches(project))
    }
}

/// Whether any pattern in an optional filter accepts `value` (no filter accepts anything;
/// a filter never accepts a missing value).
pub fn filter_accepts(filter: &Option<Vec<NamePattern>>, value: Option<&str>) -> bool {
    match filter {
        None => true,
        Some(patterns) => value.is_some_and(|v| patterns.iter().any(|p| p.matches(v))),
    }
}

/// The two webhook events chains react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    WorkflowCompleted,
    JobCompleted,
}

impl EventKind {
    /// The spelling in the webhook body's `type` and the `circleci-event-type` header.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::WorkflowCompleted => "workflow-completed",
            EventKind::JobCompleted => "job-completed",
        }
    }

    pub fn from_wire(text: &str) -> Option<Self> {
        match text {
            "workflow-completed" => Some(EventKind::WorkflowCompleted),
            "job-completed" => Some(EventKind::JobCompleted),
            _ => None,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Final statuses of a workflow or job as webhooks report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompletionStatus {
    Success,
    Failed,
    Error,
    Canceled,
    Unauthorized,
    NotRun,
    InfrastructureFail,
    Timedout,
    #[serde(rename = "terminated-unknown")]
    TerminatedUnknown,
}

impl CompletionStatus {
    pub const ALL: [CompletionStatus; 9] = [
        CompletionStatus::Success,
        CompletionStatus::Failed,
        CompletionStatus::Error,
        CompletionStatus::Canceled,
        CompletionStatus::Unauthorized,
        CompletionStatus::NotRun,
        CompletionStatus::InfrastructureFail,
        CompletionStatus::Timedout,
        CompletionStatus::TerminatedUnknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompletionStatus::Success => "success",
            CompletionStatus::Failed => "failed",
            CompletionStatus::Error => "error",
            CompletionStatus::Canceled => "canceled",
            CompletionStatus::Unauthorized => "unauthorized",
            CompletionStatus::NotRun => "not_run",
            CompletionStatus::InfrastructureFail => "infrastructure_fail",
            CompletionStatus::Timedout => "timedout",
            CompletionStatus::TerminatedUnknown => "terminated-unknown",
        }
    }

    pub fn from_wire(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

impl fmt::Display for CompletionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What ties the upstreams of a fan-in together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correlation {
    /// The root trigger (schedule slot, HTTP call) that started the upstream pipelines.
    Origin,
    Tag,
    Branch,
    /// The commit; only meaningful inside one repository.
    Revision,
}

impl Correlation {
    pub fn as_str(self) -> &'static str {
        match self {
            Correlation::Origin => "origin",
            Correlation::Tag => "tag",
            Correlation::Branch => "branch",
            Correlation::Revision => "revision",
        }
    }
}

/// One `[[chain.then]]` action. Which fields apply depends on `action`; `check` rejects
/// the ones that do not (serde's `flatten` cannot be combined with `deny_unknown_fields`,
/// so the target fields are listed here rather than embedding a [`TargetSpec`]).
/// Serializable: the receiver names an action by a digest of what it says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChainAction {
    #[serde(default)]
    pub action: ActionKind,
    /// Exact project slug (no patterns: the loop check must know where work lands).
    pub project: String,
    /// Pipeline: fixed (`"main"`) or same-as-upstream (`"{{ branch }}"`) or any template.
    /// Approve/rerun/cancel with `select = "latest"`: the branch whose newest pipeline is used.
    pub branch: Option<String>,
    /// Pipeline: fixed or templated (`"{{ tag }}"`).
    pub tag: Option<String>,
    /// Pipeline: upstream branch pattern → downstream branch; the first match wins.
    #[serde(default)]
    pub branch_map: Vec<BranchMapping>,
    /// Pipeline: sugar for the workflow parameter. Others: the workflow's name in the
    /// selected pipeline.
    pub workflow: Option<String>,
    /// Pipeline: parameters; string values are templates.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterValue>,
    pub definition_id: Option<String>,
    pub config: Option<GitRefSpec>,
    pub checkout: Option<GitRefSpec>,
    pub token: Option<String>,
    /// Approve: the approval job's name.
    pub job: Option<String>,
    /// Rerun: these jobs (by name).
    pub jobs: Option<Vec<String>>,
    /// Rerun: from the failed jobs.
    pub from_failed: Option<bool>,
    /// Approve/rerun/cancel: how the existing workflow is found.
    pub select: Option<Selection>,
}

/// One `branch_map` entry: `{ from = "release/*", to = "staging" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BranchMapping {
    /// A pattern over the upstream branch.
    pub from: String,
    /// The downstream branch; a template.
    pub to: String,
}

/// A value or a list of values (`branch = "main"` or `branch = ["main", "release/*"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> OneOrMany<T> {
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> From<Vec<T>> for OneOrMany<T> {
    fn from(values: Vec<T>) -> Self {
        Self(values)
    }
}

/// Glob patterns, one or many.
pub type Patterns = OneOrMany<String>;

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(value))
                    .map(|one| OneOrMany(vec![one]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element()? {
                    values.push(value);
                }
                Ok(OneOrMany(values))
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

/// A pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{pattern}` is not a valid pattern: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// A pattern over a name (branch, tag, workflow, job): exact text, or a glob where `*`
/// stops at `/` (`release/*` matches `release/1.2` but not `release/1.2/hotfix`; use `**`).
#[derive(Debug, Clone)]
pub struct NamePattern {
    source: String,
    glob: Option<GlobMatcher>,
}

impl NamePattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError {
                pattern: String::new(),
                reason: "empty".into(),
            });
        }
        let glob = if is_glob(text) {
            Some(compile_glob(text, false)?)
        } else {
            None
        };
        Ok(Self {
            source: text.to_owned(),
            glob,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match &self.glob {
            Some(glob) => glob.is_match(value),
            None => self.source == value,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

fn compile_glob(text: &str, case_insensitive: bool) -> Result<GlobMatcher, PatternError> {
    GlobBuilder::new(text)
        .literal_separator(true)
        .case_insensitive(case_insensitive)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|error| PatternError {
            pattern: text.to_owned(),
            reason: error.kind().to_string(),
        })
}

/// A pattern over projects. The VCS is written out (gh ≡ github, bb ≡ bitbucket); org and
/// repo may use globs. Org and repo compare ASCII-case-insensitively: GitHub and Bitbucket
/// names are, and webhooks echo the repository's own capitalisation.
#[derive(Debug, Clone)]
pub enum ProjectPattern {
    Exact(ProjectSlug),
    Glob {
        vcs: Vcs,
        source: String,
        org_repo: GlobMatcher,
    },
}

impl ProjectPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let error = |reason: String| PatternError {
            pattern: text.to_owned(),
            reason,
        };
        if !is_glob(text) {
            return text
                .parse::<ProjectSlug>()
                .map(ProjectPattern::Exact)
                .map_err(|e| error(e.to_string()));
        }
        let Some((vcs_text, org_repo)) = text.split_once('/') else {
            return Err(error("expected `<vcs>/<org>/<repo>`".into()));
        };
        if is_glob(vcs_text) {
            return Err(error(
                "write the VCS out (gh, github, bb, bitbucket or circleci); only org and repo may use wildcards".into(),
            ));
        }
        if org_repo.matches('/').count() != 1 {
            return Err(error(
                "expected `<vcs>/<org>/<repo>` (wildcards stay within a segment)".into(),
            ));
        }
        // Reuse the slug parser for the VCS spelling rules.
        let vcs = format!("{vcs_text}/org/repo")
            .parse::<ProjectSlug>()
            .map_err(|e| error(e.to_string()))?
            .vcs;
        Ok(ProjectPattern::Glob {
            vcs,
            source: text.to_owned(),
            org_repo: compile_glob(org_repo, true).map_err(|e| error(e.reason))?,
        })
    }

    pub fn matches(&self, project: &ProjectSlug) -> bool {
        match self {
            ProjectPattern::Exact(slug) => {
                slug.vcs == project.vcs
                    && slug.org.eq_ignore_ascii_case(&project.org)
                    && slug.repo.eq_ignore_ascii_case(&project.repo)
            }
            ProjectPattern::Glob { vcs, org_repo, .. } => {
                *vcs == project.vcs
                    && org_repo.is_match(format!("{}/{}", project.org, project.repo))
            }
        }
    }

    /// The exact project, when this pattern names one.
    pub fn exact(&self) -> Option<&ProjectSlug> {
        match self {
            ProjectPattern::Exact(slug) => Some(slug),
            ProjectPattern::Glob { .. } => None,
        }
    }
}

/// Whether two slugs name the same repository, ignoring ASCII case like [`ProjectPattern`].
pub fn same_project(a: &ProjectSlug, b: &ProjectSlug) -> bool {
    ProjectPattern::Exact(a.clone()).matches(b)
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Validates every `[[chain]]` rule and their interplay (unique names, no loops).
pub fn validate_chains(chains: &[ChainSpec], path: &FieldPath, problems: &mut Problems) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, chain) in chains.iter().enumerate() {
        let chain_path = path.index(index);
        if let Some(first) = names.get(chain.name.as_str()) {
            problems.add(
                &chain_path.key("name"),
                format!("duplicate rule name `{}` (also chain[{first}])", chain.name),
            );
        } else {
            names.insert(&chain.name, index);
        }
        chain.validate(&chain_path, problems);
    }
    find_loops(chains, path, problems);
}

impl ChainSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        rule_name(&self.name, &path.key("name"), problems);
        match (&self.when, self.after.is_empty()) {
            (Some(_), false) => problems.add(
                &path.key("after"),
                "set either `when` (one upstream) or `after` (fan-in), not both",
            ),
            (None, true) => problems.add(
                path,
                "a chain rule needs `when = { project = ... }` or, for fan-in, `after = [...]`",
            ),
            _ => {}
        }
        if let Some(when) = &self.when {
            when.validate(&path.key("when"), false, problems);
            let conflicting = !self.after.is_empty(); // already reported above
            for (field, set) in [
                ("correlate", self.correlate.is_some()),
                ("window", self.window.is_some()),
            ] {
                if set && !conflicting {
                    problems.add(
                        &path.key(field),
                        format!("`{field}` applies only to fan-in rules (`after = [...]`)"),
                    );
                }
            }
        } else if !self.after.is_empty() {
            self.validate_fan_in(path, problems);
        }
        if self.then.is_empty() {
            problems.add(
                path,
                "a chain rule needs at least one `[[chain.then]]` action",
            );
        } else if self.then.len() > MAX_ACTIONS_PER_RULE {
            problems.add(
                &path.key("then"),
                format!(
                    "{} actions; at most {MAX_ACTIONS_PER_RULE} per rule",
                    self.then.len()
                ),
            );
        }
        let upstream = UpstreamFacts::of(self);
        for (index, action) in self.then.iter().enumerate() {
            action.validate(&path.key("then").index(index), &upstream, problems);
        }
        crate::trust::validate(self, path, problems);
    }

    fn validate_fan_in(&self, path: &FieldPath, problems: &mut Problems) {
        let after_path = path.key("after");
        if self.after.len() < 2 {
            problems.add(
                &after_path,
                "fan-in needs at least two upstream matchers (use `when` for one)",
            );
        } else if self.after.len() > MAX_FAN_IN {
            problems.add(
                &after_path,
                format!(
                    "{} upstreams; fan-in waits for at most {MAX_FAN_IN}",
                    self.after.len()
                ),
            );
        }
        for (index, matcher) in self.after.iter().enumerate() {
            matcher.validate(&after_path.index(index), true, problems);
        }
        match self.correlate {
            None => problems.add(
                path,
                "fan-in needs `correlate = \"origin\" | \"tag\" | \"branch\" | \"revision\"`",
            ),
            Some(Correlation::Revision) => {
                let one_repo = UpstreamFacts::of(self).single_project.is_some();
                if !one_repo {
                    problems.add(
                        &path.key("correlate"),
                        "`revision` correlation only works within one repository: every `after` \
                         matcher must name the same exact project (use `origin`, `tag` or `branch` across repositories)",
                    );
                }
            }
            Some(_) => {}
        }
        match &self.window {
            None => problems.add(
                path,
                "fan-in needs `window` (how long to wait for all upstreams, e.g. \"2h\")",
            ),
            Some(window) => {
                let window_path = path.key("window");
                if let Some(duration) = rules::duration(window, &window_path, problems)
                    && !(MIN_JOIN_WINDOW..=MAX_JOIN_WINDOW).contains(&duration)
                {
                    problems.add(&window_path, "must be between 1m and 7d");
                }
            }
        }
    }
}

fn rule_name(name: &str, path: &FieldPath, problems: &mut Problems) {
    if name.is_empty() || name.len() > MAX_RULE_NAME_LEN {
        problems.add(path, format!("must be 1 to {MAX_RULE_NAME_LEN} characters"));
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.add(
            path,
            format!(
                "`{}` may only contain letters, digits, `-`, `_` and `.`",
                name.escape_debug()
            ),
        );
    }
}

impl UpstreamMatcher {
    fn validate(&self, path: &FieldPath, in_fan_in: bool, problems: &mut Problems) {
        let project_path = path.key("project");
        if self.project.is_empty() {
            problems.add(&project_path, "needs at least one project");
        }
        for (index, pattern) in self.project.iter().enumerate() {
            if let Err(error) = ProjectPattern::parse(pattern) {
                problems.add(&project_path.index(index), error.to_string());
            }
        }
        for (field, patterns) in [
            ("workflow", &self.workflow),
            ("job", &self.job),
            ("branch", &self.branch),
            ("tag", &self.tag),
        ] {
            let Some(patterns) = patterns else { continue };
            let field_path = path.key(field);
            if patterns.is_empty() {
                problems.add(
                    &field_path,
                    "an empty list matches nothing; leave the field out to match any",
                );
            }
            for (index, pattern) in patterns.iter().enumerate() {
                if let Err(error) = NamePattern::parse(pattern) {
                    problems.add(&field_path.index(index), error.to_string());
                }
            }
        }
        if self.job.is_some() && self.event == Some(EventKind::WorkflowCompleted) {
            problems.add(&path.key("job"), "`job` needs `event = \"job-completed\"`");
        }
        if self.branch.is_some() && self.tag.is_some() {
            problems.add(
                &path.key("tag"),
                "a pipeline has a branch or a tag, not both: set one (use two rules for either)",
            );
        }
        if let Some(status) = &self.status {
            if in_fan_in {
                problems.add(
                    &path.key("status"),
                    "fan-in waits for every upstream to succeed (a failure closes the join), so `status` does not apply here",
                );
            } else if status.is_empty() {
                problems.add(
                    &path.key("status"),
                    "an empty list matches nothing; leave it out for [\"success\"]",
                );
            }
        }
    }
}

/// What an action's templates and selection may rely on, derived from the rule's upstreams.
struct UpstreamFacts {
    kinds: BTreeSet<EventKind>,
    /// The single repository every upstream names exactly, if there is one.
    single_project: Option<ProjectSlug>,
}

impl UpstreamFacts {
    fn of(chain: &ChainSpec) -> Self {
        let upstreams = chain.upstreams();
        let kinds = upstreams.iter().map(UpstreamMatcher::event_kind).collect();
        let exact: Vec<Option<ProjectSlug>> = upstreams
            .iter()
            .flat_map(|m| m.project.iter())
            .map(|p| {
                ProjectPattern::parse(p)
                    .ok()
                    .and_then(|p| p.exact().cloned())
            })
            .collect();
        let single_project = match exact.first() {
            Some(Some(first))
                if exact
                    .iter()
                    .all(|p| p.as_ref().is_some_and(|p| same_project(first, p))) =>
            {
                Some(first.clone())
            }
            _ => None,
        };
        Self {
            kinds,
            single_project,
        }
    }

    /// Why a variable can never be set for this rule's events, if it cannot.
    fn unavailable(&self, variable: Variable) -> Option<String> {
        (variable == Variable::JobName && self.kinds.contains(&EventKind::WorkflowCompleted)).then(|| {
            "`{{ job.name }}` is only set on job-completed events, and this rule matches workflow-completed events".to_owned()
        })
    }
}

/// Parses a templated field and checks its variables; returns it when valid.
fn template_field(
    text: &str,
    path: &FieldPath,
    upstream: &UpstreamFacts,
    problems: &mut Problems,
) -> Option<Template> {
    match Template::parse_in(text, Scope::Event) {
        Ok(template) => {
            let mut ok = true;
            for variable in template.variables() {
                if let Some(reason) = upstream.unavailable(variable) {
                    problems.add(path, reason);
                    ok = false;
                }
            }
            ok.then_some(template)
        }
        Err(error) => {
            problems.add(path, error.to_string());
            None
        }
    }
}

/// A templated branch or tag: literal text must be a valid ref now; rendered text is
/// checked when the action runs.
fn templated_ref(text: &str, path: &FieldPath, upstream: &UpstreamFacts, problems: &mut Problems) {
    if let Some(literal) = template_field(text, path, upstream, problems).and_then(|t| t.literal())
    {
        rules::git_ref(&literal, path, problems);
    }
}

/// The literal value of a field when it has no template variables (used to build the
/// static part of a target for [`TargetSpec::validate`]).
fn literal_of(text: &Option<String>) -> Option<String> {
    text.as_deref()
        .and_then(|text| Template::parse(text).ok())
        .and_then(|template| template.literal())
}

impl ChainAction {
    /// The action fields as written, for [`ActionFields::read`].
    pub fn action_fields(&self) -> ActionFields<'_> {
        ActionFields::new(self.action, &self.job, &self.jobs, self.from_failed)
    }

    fn validate(&self, path: &FieldPath, upstream: &UpstreamFacts, problems: &mut Problems) {
        self.action_fields().read(path, problems);
        let kind = self.action.as_str();
        let not_for = |problems: &mut Problems, field: &str, only: &str| {
            problems.add(
                &path.key(field),
                format!("`{field}` does not apply to action = \"{kind}\" ({only})"),
            );
        };
        match self.action {
            ActionKind::Pipeline => {
                self.validate_pipeline(path, upstream, problems);
                if self.select.is_some() {
                    not_for(
                        problems,
                        "select",
                        "it selects an existing workflow for approve, rerun or cancel",
                    );
                }
            }
            ActionKind::Approve | ActionKind::Rerun | ActionKind::Cancel => {
                self.validate_workflow_action(path, upstream, problems);
                for (field, set) in [
                    ("tag", self.tag.is_some()),
                    ("branch_map", !self.branch_map.is_empty()),
                    ("parameters", !self.parameters.is_empty()),
                    ("definition_id", self.definition_id.is_some()),
                    ("config", self.config.is_some()),
                    ("checkout", self.checkout.is_some()),
                ] {
                    if set {
                        not_for(problems, field, "only a new pipeline takes it");
                    }
                }
            }
        }
    }

    fn validate_pipeline(
        &self,
        path: &FieldPath,
        upstream: &UpstreamFacts,
        problems: &mut Problems,
    ) {
        let refs: Vec<&str> = [
            ("branch", self.branch.is_some()),
            ("tag", self.tag.is_some()),
            ("branch_map", !self.branch_map.is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        match refs.as_slice() {
            [] => problems.add(
                path,
                "a pipeline action needs `branch` (fixed, or \"{{ branch }}\" for the upstream's), `tag`, or `branch_map`",
            ),
            // Branch and tag together are reported by `TargetSpec::validate`.
            [_] | ["branch", "tag"] => {}
            [_, second, ..] => problems.add(
                &path.key(second),
                format!("set only one of `branch`, `tag` and `branch_map` (found {})", refs.join(", ")),
            ),
        }
        // The fixed parts go through the same checks as every other target.
        TargetSpec {
            project: self.project.clone(),
            branch: literal_of(&self.branch),
            tag: literal_of(&self.tag),
            workflow: literal_of(&self.workflow),
            parameters: self.parameters.clone(),
            definition_id: self.definition_id.clone(),
            config: self.config.clone(),
            checkout: self.checkout.clone(),
            token: self.token.clone(),
        }
        .validate(path, problems);
        // `TargetSpec::validate` already checked literal refs; templates are checked here.
        for (field, value) in [
            ("branch", &self.branch),
            ("tag", &self.tag),
            ("workflow", &self.workflow),
        ] {
            if let Some(value) = value {
                template_field(value, &path.key(field), upstream, problems);
            }
        }
        for (index, mapping) in self.branch_map.iter().enumerate() {
            let mapping_path = path.key("branch_map").index(index);
            if let Err(error) = NamePattern::parse(&mapping.from) {
                problems.add(&mapping_path.key("from"), error.to_string());
            }
            templated_ref(&mapping.to, &mapping_path.key("to"), upstream, problems);
        }
        for (name, value) in &self.parameters {
            if let ParameterValue::String(text) = value {
                template_field(text, &path.key("parameters").key(name), upstream, problems);
            }
        }
    }

    fn validate_workflow_action(
        &self,
        path: &FieldPath,
        upstream: &UpstreamFacts,
        problems: &mut Problems,
    ) {
        let target = target::validate_project(&self.project, &path.key("project"), problems);
        if let Some(token) = &self.token {
            rules::secret_name(token, &path.key("token"), problems);
        }
        if let Some(workflow) = &self.workflow {
            template_field(workflow, &path.key("workflow"), upstream, problems);
        }
        match self.select {
            None => problems.add(
                path,
                format!(
                    "action = \"{}\" needs `select = \"origin\" | \"revision\" | \"latest\"` to find the workflow",
                    self.action.as_str()
                ),
            ),
            Some(Selection::Latest) => match &self.branch {
                Some(branch) => templated_ref(branch, &path.key("branch"), upstream, problems),
                None => problems.add(path, "select = \"latest\" needs `branch` (the newest pipeline on which branch?)"),
            },
            Some(selection) => {
                if self.branch.is_some() {
                    problems.add(&path.key("branch"), "`branch` is only used with select = \"latest\"");
                }
                if selection == Selection::Revision
                    && let Some(target) = target
                    && !upstream.single_project.as_ref().is_some_and(|p| same_project(p, &target))
                {
                    problems.add(
                        &path.key("select"),
                        format!(
                            "select = \"revision\" only works within one repository: the rule's upstream project \
                             must be exactly {} (a revision of another repository means nothing here)",
                            target
                        ),
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loop check
// ---------------------------------------------------------------------------------------

/// The refs whose events an action can cause in its target project.
enum Reach {
    Branches(Vec<String>),
    Tags(Vec<String>),
    /// Templated or selected at run time: any.
    Unknown,
}

/// What an action does to its target project, as far as upstream matchers can see.
struct Effect {
    project: ProjectSlug,
    reach: Reach,
    /// Approve/rerun/cancel of a named workflow only cause events of that workflow;
    /// a new pipeline may run any of its workflows (`None`).
    workflow: Option<String>,
    /// Cancelling only produces `canceled` completions.
    only_canceled: bool,
}

impl ChainAction {
    fn effect(&self) -> Option<Effect> {
        let project = self.project.parse::<ProjectSlug>().ok()?;
        let one = |value: &Option<String>| literal_of(value).map(|v| vec![v]);
        let reach = match self.action {
            ActionKind::Pipeline => {
                if let Some(branches) = one(&self.branch) {
                    Reach::Branches(branches)
                } else if let Some(tags) = one(&self.tag) {
                    Reach::Tags(tags)
                } else if !self.branch_map.is_empty() {
                    let targets: Option<Vec<String>> = self
                        .branch_map
                        .iter()
                        .map(|m| literal_of(&Some(m.to.clone())))
                        .collect();
                    targets.map_or(Reach::Unknown, Reach::Branches)
                } else {
                    Reach::Unknown
                }
            }
            _ if self.select == Some(Selection::Latest) => {
                one(&self.branch).map_or(Reach::Unknown, Reach::Branches)
            }
            _ => Reach::Unknown,
        };
        let workflow = match self.action {
            ActionKind::Pipeline => None,
            _ => literal_of(&self.workflow),
        };
        Some(Effect {
            project,
            reach,
            workflow,
            only_canceled: self.action == ActionKind::Cancel,
        })
    }
}

impl Effect {
    /// Whether the work this effect causes can produce an event `matcher` accepts.
    /// Conservative: anything not known for certain is assumed to match.
    fn can_feed(&self, matcher: &CompiledMatcher) -> bool {
        if !matcher.matches_project(&self.project) {
            return false;
        }
        if self.only_canceled && !matcher.statuses.contains(&CompletionStatus::Canceled) {
            return false;
        }
        if let Some(workflow) = &self.workflow
            && !filter_accepts(&matcher.workflows, Some(workflow))
        {
            return false;
        }
        let any_accepts = |filter: &Option<Vec<NamePattern>>, values: &[String]| {
            values
                .iter()
                .any(|value| filter_accepts(filter, Some(value)))
        };
        match &self.reach {
            Reach::Branches(branches) => {
                matcher.tags.is_none() && any_accepts(&matcher.branches, branches)
            }
            Reach::Tags(tags) => matcher.branches.is_none() && any_accepts(&matcher.tags, tags),
            Reach::Unknown => true,
        }
    }
}

/// Rejects rule sets where an action causes events that (through the rules) lead back to
/// the same rule: A → B → A would run forever.
fn find_loops(chains: &[ChainSpec], path: &FieldPath, problems: &mut Problems) {
    let matchers: Vec<Vec<CompiledMatcher>> = chains
        .iter()
        .map(|chain| {
            chain
                .upstreams()
                .iter()
                .filter_map(|m| m.compile().ok())
                .collect()
        })
        .collect();
    // edges[i] = (action index in rule i, rule j it can trigger)
    let edges: Vec<Vec<(usize, usize)>> = chains
        .iter()
        .map(|chain| {
            let mut out = Vec::new();
            for (action_index, effect) in chain
                .then
                .iter()
                .enumerate()
                .filter_map(|(k, a)| Some((k, a.effect()?)))
            {
                for (target, upstreams) in matchers.iter().enumerate() {
                    if upstreams.iter().any(|m| effect.can_feed(m)) {
                        out.push((action_index, target));
                    }
                }
            }
            out
        })
        .collect();
    let mut reported = vec![false; chains.len()];
    for start in 0..chains.len() {
        if reported[start] {
            continue;
        }
        let Some(cycle) = shortest_cycle(start, &edges, &reported) else {
            continue;
        };
        let names: Vec<&str> = cycle
            .iter()
            .map(|(rule, _)| chains[*rule].name.as_str())
            .chain(std::iter::once(chains[start].name.as_str()))
            .collect();
        let (_, first_action) = cycle[0];
        let target = &chains[start].then[first_action].project;
        problems.add(
            &path.index(start).key("then").index(first_action).key("project"),
            format!(
                "these rules can trigger each other forever: {} (this action acts on {target}, whose events match `{}`)",
                names.join(" → "),
                names.get(1).copied().unwrap_or_default(),
            ),
        );
        for (rule, _) in cycle {
            reported[rule] = true;
        }
    }
}

/// The shortest path start → … → start as (rule, action index taken from it), via BFS.
fn shortest_cycle(
    start: usize,
    edges: &[Vec<(usize, usize)>],
    skip: &[bool],
) -> Option<Vec<(usize, usize)>> {
    // parent[node] = (previous node, action index on previous node)
    let mut parent: Vec<Option<(usize, usize)>> = vec![None; edges.len()];
    let mut queue = VecDeque::new();
    let mut closing = None;
    queue.push_back(start);
    let mut seen = vec![false; edges.len()];
    seen[start] = true;
    'search: while let Some(node) = queue.pop_front() {
        for &(action, next) in &edges[node] {
            if next == start {
                closing = Some((node, action));
                break 'search;
            }
            if !seen[next] && !skip[next] {
                seen[next] = true;
                parent[next] = Some((node, action));
                queue.push_back(next);
            }
        }
    }
    let (mut node, action) = closing?;
    let mut reversed = vec![(node, action)];
    while node != start {
        let (previous, previous_action) = parent[node]?;
        reversed.push((previous, previous_action));
        node = previous;
    }
    reversed.reverse();
    Some(reversed)
}
