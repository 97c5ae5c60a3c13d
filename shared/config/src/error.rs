//! Errors of the triggers file: each one names the file, the line and the field.

use std::fmt;

use crate::path::{FieldPath, SourceMap};

/// One problem found in the triggers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// Dotted path of the offending field, e.g. `schedule[0].cron`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.field, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read triggers file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The individual problems (empty for a read error).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid(issues) => issues,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn render(issues: &[ConfigIssue]) -> String {
    let mut out = format!("the triggers file has {} problem(s):", issues.len());
    for issue in issues {
        out.push_str("\n  ");
        out.push_str(&issue.to_string());
    }
    out
}

/// Collects validation problems by field path; turned into [`ConfigIssue`]s with lines at the end.
#[derive(Debug, Default)]
pub struct Problems {
    found: Vec<(FieldPath, String)>,
}

impl Problems {
    pub fn add(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.found.push((path.clone(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Each problem as `field: message` (or the message alone at the root).
    pub fn messages(&self) -> Vec<String> {
        self.found
            .iter()
            .map(|(path, message)| {
                let field = path.to_string();
                if field.is_empty() {
                    message.clone()
                } else {
                    format!("{field}: {message}")
                }
            })
            .collect()
    }

    pub(crate) fn into_issues(self, file: &str, map: &SourceMap<'_>) -> Vec<ConfigIssue> {
        self.found
            .into_iter()
            .map(|(path, message)| {
                let (line, column) = map
                    .span_of(&path)
                    .map_or((1, 1), |span| map.line_col(span.start));
                ConfigIssue {
                    file: file.to_owned(),
                    line,
                    column,
                    field: path.to_string(),
                    message,
                }
            })
            .collect()
    }
}
