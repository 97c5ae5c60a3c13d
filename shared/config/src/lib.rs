//! The triggers file: its model, the loader and the validator.
//!
//! One loader and one validator serve both delivery paths: the Lambda build scripts embed
//! the file (and fail the build when it is invalid, see [`build`]), and the CLI and `serve`
//! read it at run time with `--config`.

// Library code never unwraps: input errors are typed errors (tests may unwrap).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod action;
pub mod build;
pub mod chain;
pub mod circleci;
pub mod cron;
pub mod endpoint;
mod error;
pub mod example;
pub mod history;
pub mod notify;
mod path;
pub mod rules;
pub mod schedule;
pub mod slug;
pub mod target;
pub mod template;
pub mod trust;

use std::path::Path;

use serde::Deserialize;

pub use action::{ActionFields, ActionSpec, RerunJobs};
pub use circleci::CircleCiSettings;
pub use error::{ConfigError, ConfigIssue, Problems};
pub use history::HistorySettings;
pub use path::{FieldPath, Segment, SourceMap};
pub use schedule::ScheduleSpec;
pub use slug::{ProjectSlug, SlugError, Vcs};
pub use target::{ActionKind, GitRefSpec, ParameterValue, Selection, TargetSpec};

/// The whole triggers file, validated.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggersFile {
    #[serde(default)]
    pub circleci: CircleCiSettings,
    #[serde(default)]
    pub history: HistorySettings,
    #[serde(default)]
    pub schedule: Vec<ScheduleSpec>,
    #[serde(default)]
    pub chain: Vec<chain::ChainSpec>,
    #[serde(default)]
    pub endpoint: Vec<endpoint::EndpointSpec>,
    #[serde(default)]
    pub client: Vec<endpoint::ClientSpec>,
    /// `[[notify]]`: sinks told about failures.
    #[serde(default)]
    pub notify: Vec<notify::NotifySpec>,
}

impl TriggersFile {
    fn validate(&self, problems: &mut Problems) {
        self.circleci
            .validate(&FieldPath::root().key("circleci"), problems);
        self.history
            .validate(&FieldPath::root().key("history"), problems);
        schedule::validate_all(&self.schedule, &FieldPath::root().key("schedule"), problems);
        chain::validate_chains(&self.chain, &FieldPath::root().key("chain"), problems);
        endpoint::validate_all(&self.endpoint, &self.client, &self.circleci, problems);
        notify::validate_all(&self.notify, &FieldPath::root().key("notify"), problems);
    }
}

/// Parses and validates the triggers file given as text; `file_name` is used in errors.
pub fn parse_str(source: &str, file_name: &str) -> Result<TriggersFile, ConfigError> {
    // The source map (a second, span-keeping parse) is only built to locate an error.
    let parsed: TriggersFile = match toml::from_str(source) {
        Ok(parsed) => parsed,
        Err(error) => {
            let map = SourceMap::new(source);
            let offset = error.span().map_or(0, |span| span.start);
            let (line, column) = map.line_col(offset);
            let field = map.path_at(offset).to_string();
            return Err(ConfigError::Invalid(vec![ConfigIssue {
                file: file_name.to_owned(),
                line,
                column,
                field,
                message: error.message().trim().to_owned(),
            }]));
        }
    };
    let mut problems = Problems::default();
    parsed.validate(&mut problems);
    if problems.is_empty() {
        Ok(parsed)
    } else {
        let map = SourceMap::new(source);
        Err(ConfigError::Invalid(problems.into_issues(file_name, &map)))
    }
}

/// Reads, parses and validates the triggers file at `path`.
pub fn load_file(path: &Path) -> Result<TriggersFile, ConfigError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse_str(&source, &file)
}
