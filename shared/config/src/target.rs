//! Targets and actions as written in the triggers file; shared by schedules, chains and endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::rules;
use crate::slug::ProjectSlug;

/// A pipeline parameter value: CircleCI accepts only these three types.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ParameterValue {
    Boolean(bool),
    Integer(i64),
    String(String),
}

/// A branch or a tag (exactly one), as in `pipeline/run`'s `config` and `checkout`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitRefSpec {
    pub branch: Option<String>,
    pub tag: Option<String>,
}

/// What to act on: a project and a ref, plus how to start a pipeline there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub project: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// Sugar: sets `[circleci].workflow_parameter` to this value.
    pub workflow: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterValue>,
    /// Use `pipeline/run` with this pipeline definition instead of the legacy endpoint.
    pub definition_id: Option<String>,
    /// `pipeline/run` only: where the config is read from (defaults to branch/tag).
    pub config: Option<GitRefSpec>,
    /// `pipeline/run` only: what is checked out (defaults to branch/tag).
    pub checkout: Option<GitRefSpec>,
    /// Name of the token in the tokens secret (default: `[circleci].token`).
    pub token: Option<String>,
}

/// What is done on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Start a pipeline.
    #[default]
    Pipeline,
    /// Approve an on_hold approval job, by name.
    Approve,
    /// Rerun a workflow (from_failed, or named jobs).
    Rerun,
    /// Cancel a workflow.
    Cancel,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Pipeline => "pipeline",
            ActionKind::Approve => "approve",
            ActionKind::Rerun => "rerun",
            ActionKind::Cancel => "cancel",
        }
    }
}

/// How an action on an existing workflow finds it. Anything but exactly one match fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The pipeline started under the same origin trigger (via history).
    Origin,
    /// The pipeline of the same revision on the target's repository.
    Revision,
    /// The newest pipeline on the target's branch.
    Latest,
}

impl TargetSpec {
    /// Checks that do not depend on where the target is used (chains and endpoints add
    /// their own, e.g. templates and branch policies).
    pub fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        validate_project(&self.project, &path.key("project"), problems);
        if self.branch.is_some() && self.tag.is_some() {
            problems.add(&path.key("tag"), "set either `branch` or `tag`, not both");
        }
        if let Some(branch) = &self.branch {
            rules::git_ref(branch, &path.key("branch"), problems);
        }
        if let Some(tag) = &self.tag {
            rules::git_ref(tag, &path.key("tag"), problems);
        }
        if let Some(workflow) = &self.workflow
            && (workflow.is_empty() || workflow.len() > rules::MAX_PARAMETER_VALUE_LEN)
        {
            problems.add(&path.key("workflow"), "must be 1 to 512 characters");
        }
        rules::parameters(&self.parameters, &path.key("parameters"), problems);
        let uses_run_endpoint = self.definition_id.is_some();
        for (name, git_ref) in [("config", &self.config), ("checkout", &self.checkout)] {
            let Some(git_ref) = git_ref else { continue };
            let field = path.key(name);
            if !uses_run_endpoint {
                problems.add(
                    &field,
                    format!("`{name}` needs `definition_id` (it is a pipeline/run option)"),
                );
            }
            match (&git_ref.branch, &git_ref.tag) {
                (Some(branch), None) => rules::git_ref(branch, &field.key("branch"), problems),
                (None, Some(tag)) => rules::git_ref(tag, &field.key("tag"), problems),
                _ => problems.add(&field, "set exactly one of `branch` or `tag`"),
            }
        }
        if let Some(definition_id) = &self.definition_id
            && !rules::looks_like_uuid(definition_id)
        {
            problems.add(
                &path.key("definition_id"),
                "must be a pipeline definition UUID",
            );
        }
        if let Some(token) = &self.token {
            rules::secret_name(token, &path.key("token"), problems);
        }
    }
}

/// A project slug field: parsed, with the reason when it is not one.
pub fn validate_project(
    project: &str,
    path: &FieldPath,
    problems: &mut Problems,
) -> Option<ProjectSlug> {
    match project.parse::<ProjectSlug>() {
        Ok(slug) => Some(slug),
        Err(error) => {
            problems.add(path, error.to_string());
            None
        }
    }
}
