//! `[history]`: how long trigger records are kept and which parameters are never stored.
//!
//! ```toml
//! [history]
//! retention = "90d"
//! redact_parameters = ["*token*", "*secret*", "password"]
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::error::Problems;
use crate::path::FieldPath;
use crate::rules;

pub const DEFAULT_RETENTION: &str = "90d";
/// Records must outlive webhook redeliveries and Lambda retries, which span hours to a day;
/// a shorter retention would let a late duplicate find no claim and trigger again.
pub const MIN_RETENTION: Duration = Duration::from_secs(2 * 86_400);
/// Ten years: beyond this the setting is almost certainly a typo (`900d` for `90d`).
pub const MAX_RETENTION: Duration = Duration::from_secs(3_650 * 86_400);
/// Parameter names redacted when the file says nothing.
pub const DEFAULT_REDACT_PATTERNS: [&str; 4] =
    ["*token*", "*secret*", "*password*", "*credential*"];
/// What a redacted parameter value is replaced with in the history.
pub const REDACTED: &str = "[redacted]";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// How long trigger records (and the claims that deduplicate them) are kept.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Parameter names whose values are replaced by `[redacted]` before anything is stored.
    /// Case-insensitive; `*` matches any run of characters, `?` exactly one.
    #[serde(default = "default_redact_patterns")]
    pub redact_parameters: Vec<String>,
}

fn default_retention() -> String {
    DEFAULT_RETENTION.to_owned()
}

fn default_redact_patterns() -> Vec<String> {
    DEFAULT_REDACT_PATTERNS
        .iter()
        .map(|p| (*p).to_owned())
        .collect()
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            retention: default_retention(),
            redact_parameters: default_redact_patterns(),
        }
    }
}

impl HistorySettings {
    /// The retention as a duration; an unparseable value (rejected by validation) falls
    /// back to the default rather than to "keep nothing".
    pub fn retention(&self) -> Duration {
        rules::parse_duration(&self.retention)
            .ok()
            .filter(|d| (MIN_RETENTION..=MAX_RETENTION).contains(d))
            .unwrap_or(Duration::from_secs(90 * 86_400))
    }

    /// Whether a parameter with this name must be redacted.
    pub fn is_redacted(&self, parameter: &str) -> bool {
        self.redact_parameters
            .iter()
            .any(|pattern| glob_matches(pattern, parameter))
    }

    pub(crate) fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        let retention_path = path.key("retention");
        if let Some(retention) = rules::duration(&self.retention, &retention_path, problems) {
            if retention < MIN_RETENTION {
                problems.add(
                    &retention_path,
                    "must be at least 2d so records outlive webhook redeliveries and retries",
                );
            } else if retention > MAX_RETENTION {
                problems.add(&retention_path, "must be at most 3650d");
            }
        }
        for (index, pattern) in self.redact_parameters.iter().enumerate() {
            let valid = !pattern.is_empty()
                && pattern.len() <= 128
                && pattern
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '?'));
            if !valid {
                problems.add(
                    &path.key("redact_parameters").index(index),
                    format!(
                        "`{pattern}` is not a parameter name pattern (letters, digits, `-`, `_`, and the wildcards `*` and `?`)"
                    ),
                );
            }
        }
    }
}

/// Case-insensitive glob match of a whole name: `*` is any run (also empty), `?` one character.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let name: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    // Iterative matcher with a single backtrack point: linear in practice, no recursion.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names_case_insensitively() {
        assert!(glob_matches("*token*", "GITHUB_TOKEN"));
        assert!(glob_matches("*token*", "token"));
        assert!(glob_matches("password", "Password"));
        assert!(!glob_matches("password", "password2"));
        assert!(glob_matches("db-?ass", "db-pass"));
        assert!(!glob_matches("db-?ass", "db-ass"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("*secret*", "deploy_env"));
    }

    #[test]
    fn defaults_redact_the_usual_suspects() {
        let settings = HistorySettings::default();
        for name in [
            "api_token",
            "CLIENT_SECRET",
            "db-password",
            "aws_credentials",
        ] {
            assert!(settings.is_redacted(name), "{name}");
        }
        assert!(!settings.is_redacted("deploy_target"));
        assert_eq!(settings.retention(), Duration::from_secs(90 * 86_400));
    }

    #[test]
    fn validation_rejects_short_retention_and_odd_patterns() {
        let settings = HistorySettings {
            retention: "1h".into(),
            redact_parameters: vec!["ok_*".into(), "no spaces".into(), String::new()],
        };
        let mut problems = Problems::default();
        settings.validate(&FieldPath::root().key("history"), &mut problems);
        let rendered = format!("{problems:?}");
        assert!(rendered.contains("at least 2d"), "{rendered}");
        assert!(rendered.contains("no spaces"), "{rendered}");
        assert!(!rendered.contains("ok_*"), "{rendered}");
    }
}
