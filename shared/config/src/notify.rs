//! `[[notify]]`: where failures are reported (a Slack incoming webhook, or a generic JSON
//! webhook signed with HMAC-SHA256), and which ones.
//!
//! ```toml
//! [[notify]]
//! name = "ops-hook"
//! kind = "webhook"                       # slack | webhook
//! on = ["failed", "ambiguous", "rejected", "workflow_failed"]
//! url_secret = "ops-hook-url"            # entry of the notification secret holding the URL
//! signing_key_secret = "ops-hook-key"    # webhook only: the HMAC key's entry
//! sources = ["scheduled", "chained"]     # optional: only these trigger kinds
//! projects = ["gh/acme/e2e"]             # optional: only these projects
//! ```
//!
//! URLs and keys are secrets (a Slack webhook URL is a credential): the file names entries
//! of the notification secret, never the values.

use std::collections::HashMap;
use std::str::FromStr;

use serde::Deserialize;

use crate::error::Problems;
use crate::path::FieldPath;
use crate::rules;
use crate::slug::ProjectSlug;

/// What kind of sink a `[[notify]]` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// A Slack incoming webhook: `{"text": "..."}`.
    Slack,
    /// Any HTTPS endpoint: a JSON document, signed in `X-Triggers-Signature`.
    Webhook,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Slack => "slack",
            NotifyKind::Webhook => "webhook",
        }
    }
}

/// The decisions a sink can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotifyOn {
    /// Tried and failed for good (no retry left).
    Failed,
    /// CircleCI may or may not have acted; an operator must look.
    Ambiguous,
    /// Refused (bad input, policy, not authorised).
    Rejected,
    /// A pipeline the trigger started has a failed workflow.
    WorkflowFailed,
}

impl NotifyOn {
    pub const ALL: [NotifyOn; 4] = [
        NotifyOn::Failed,
        NotifyOn::Ambiguous,
        NotifyOn::Rejected,
        NotifyOn::WorkflowFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Failed => "failed",
            NotifyOn::Ambiguous => "ambiguous",
            NotifyOn::Rejected => "rejected",
            NotifyOn::WorkflowFailed => "workflow_failed",
        }
    }
}

impl FromStr for NotifyOn {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        NotifyOn::ALL
            .into_iter()
            .find(|on| on.as_str() == text)
            .ok_or(())
    }
}

/// Trigger kinds a sink may be narrowed to (`sources`).
pub const SOURCE_NAMES: [&str; 3] = ["scheduled", "chained", "http"];

/// One `[[notify]]` table, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    pub name: String,
    pub kind: NotifyKind,
    /// Statuses, as written (`failed`, `ambiguous`, `rejected`, `workflow_failed`).
    pub on: Vec<String>,
    /// The entry of the notification secret holding the sink's URL.
    pub url_secret: String,
    /// The entry holding the HMAC key (`webhook` only).
    #[serde(default)]
    pub signing_key_secret: Option<String>,
    /// Only triggers of these kinds (`scheduled`, `chained`, `http`); all when absent.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// Only triggers targeting these projects; all when absent.
    #[serde(default)]
    pub projects: Option<Vec<String>>,
}

impl NotifySpec {
    /// The statuses (unknown names were refused by validation).
    pub fn statuses(&self) -> Vec<NotifyOn> {
        self.on.iter().filter_map(|on| on.parse().ok()).collect()
    }

    /// Whether the sink wants this status.
    pub fn wants(&self, on: NotifyOn) -> bool {
        self.statuses().contains(&on)
    }

    /// Whether a trigger of this kind (`schedule`, `chain`, `http`, `cli` as history names
    /// them) passes the `sources` filter.
    pub fn accepts_source(&self, history_kind: &str) -> bool {
        let wanted = match history_kind {
            "schedule" => "scheduled",
            "chain" => "chained",
            other => other,
        };
        self.sources
            .as_ref()
            .is_none_or(|sources| sources.iter().any(|s| s == wanted))
    }

    /// Whether a trigger targeting `project` passes the `projects` filter (`gh` ≡ `github`).
    pub fn accepts_project(&self, project: &str) -> bool {
        let Some(projects) = &self.projects else {
            return true;
        };
        let canonical = ProjectSlug::from_str(project)
            .map(|slug| slug.canonical())
            .unwrap_or_else(|_| project.to_owned());
        projects.iter().any(|wanted| {
            ProjectSlug::from_str(wanted)
                .map(|slug| slug.canonical())
                .unwrap_or_else(|_| wanted.clone())
                == canonical
        })
    }

    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        rules::secret_name(&self.name, &path.key("name"), problems);
        if self.on.is_empty() {
            problems.add(
                &path.key("on"),
                "must name at least one status: failed, ambiguous, rejected, workflow_failed",
            );
        }
        for (index, on) in self.on.iter().enumerate() {
            if on.parse::<NotifyOn>().is_err() {
                problems.add(
                    &path.key("on").index(index),
                    format!(
                        "`{on}` is not a status to notify on (failed, ambiguous, rejected, workflow_failed)"
                    ),
                );
            } else if self.on[..index].contains(on) {
                problems.add(
                    &path.key("on").index(index),
                    format!("`{on}` is listed twice"),
                );
            }
        }
        rules::secret_name(&self.url_secret, &path.key("url_secret"), problems);
        match (self.kind, &self.signing_key_secret) {
            (NotifyKind::Webhook, None) => problems.add(
                &path.key("kind"),
                "a `webhook` sink needs `signing_key_secret` (the entry holding its HMAC key)",
            ),
            (NotifyKind::Webhook, Some(key)) => {
                rules::secret_name(key, &path.key("signing_key_secret"), problems);
                if key == &self.url_secret {
                    problems.add(
                        &path.key("signing_key_secret"),
                        "must be another entry than `url_secret`",
                    );
                }
            }
            (NotifyKind::Slack, Some(_)) => problems.add(
                &path.key("signing_key_secret"),
                "a `slack` sink is not signed (Slack's URL is its credential); remove it",
            ),
            (NotifyKind::Slack, None) => {}
        }
        if let Some(sources) = &self.sources {
            if sources.is_empty() {
                problems.add(
                    &path.key("sources"),
                    "must not be empty (leave it out to notify for every source)",
                );
            }
            for (index, source) in sources.iter().enumerate() {
                if !SOURCE_NAMES.contains(&source.as_str()) {
                    problems.add(
                        &path.key("sources").index(index),
                        format!("`{source}` is not a trigger kind (scheduled, chained, http)"),
                    );
                }
            }
        }
        if let Some(projects) = &self.projects {
            if projects.is_empty() {
                problems.add(
                    &path.key("projects"),
                    "must not be empty (leave it out to notify for every project)",
                );
            }
            for (index, project) in projects.iter().enumerate() {
                if let Err(error) = ProjectSlug::from_str(project) {
                    problems.add(&path.key("projects").index(index), error.to_string());
                }
            }
        }
    }
}

pub(crate) fn validate_all(sinks: &[NotifySpec], path: &FieldPath, problems: &mut Problems) {
    let mut first_index_by_name: HashMap<&str, usize> = HashMap::new();
    for (index, sink) in sinks.iter().enumerate() {
        let sink_path = path.index(index);
        sink.validate(&sink_path, problems);
        if let Some(first) = first_index_by_name.insert(&sink.name, index) {
            first_index_by_name.insert(&sink.name, first);
            problems.add(
                &sink_path.key("name"),
                format!(
                    "notify `{}` is already defined (notify[{first}])",
                    sink.name
                ),
            );
        }
    }
}
