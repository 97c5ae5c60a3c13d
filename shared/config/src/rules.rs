//! Field rules shared by every section of the triggers file.

use crate::error::Problems;
use crate::path::FieldPath;

/// CircleCI's documented limit on a pipeline parameter name.
pub const MAX_PARAMETER_NAME_LEN: usize = 128;

/// An http(s) base URL. Plain http is accepted only for loopback hosts (simulator, tests):
/// a token must never travel in clear text over a network.
pub fn api_url(value: &str, path: &FieldPath, problems: &mut Problems) {
    let (scheme, rest) = match value.split_once("://") {
        Some(parts) => parts,
        None => {
            problems.add(
                path,
                format!("`{value}` is not a URL (expected https://host/...)"),
            );
            return;
        }
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_only = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    if host_only.is_empty() {
        problems.add(path, format!("`{value}` has no host"));
        return;
    }
    match scheme {
        "https" => {}
        "http" if matches!(host_only, "localhost" | "127.0.0.1" | "[::1]") => {}
        "http" => problems.add(
            path,
            "plain http is only allowed for localhost; use https so the token is not sent in clear text",
        ),
        other => problems.add(path, format!("unsupported scheme `{other}` (expected https)")),
    }
}

/// Names of entries in a secret (tokens, clients): short, printable, no separators.
pub fn secret_name(value: &str, path: &FieldPath, problems: &mut Problems) {
    if value.is_empty() || value.len() > 64 {
        problems.add(path, "must be 1 to 64 characters");
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.add(
            path,
            format!("`{value}` may only contain letters, digits, `-` and `_`"),
        );
    }
}

/// A CircleCI pipeline parameter name: starts with a letter; letters, digits, `-`, `_`.
pub fn parameter_name(value: &str, path: &FieldPath, problems: &mut Problems) {
    let valid_start = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic());
    if !valid_start
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.add(
            path,
            format!("`{value}` is not a valid pipeline parameter name (a letter, then letters, digits, `-` or `_`)"),
        );
    } else if value.len() > MAX_PARAMETER_NAME_LEN {
        problems.add(
            path,
            format!("longer than {MAX_PARAMETER_NAME_LEN} characters"),
        );
    }
}

/// CircleCI's limits on pipeline parameters, checked before any request is sent.
pub const MAX_PARAMETERS: usize = 100;
pub const MAX_PARAMETER_VALUE_LEN: usize = 512;

/// A parameter map: at most 100 entries, valid names, string values at most 512 characters.
pub fn parameters<V: ParameterLen>(
    parameters: &std::collections::BTreeMap<String, V>,
    path: &FieldPath,
    problems: &mut Problems,
) {
    if parameters.len() > MAX_PARAMETERS {
        problems.add(
            path,
            format!(
                "{} parameters; CircleCI accepts at most {MAX_PARAMETERS}",
                parameters.len()
            ),
        );
    }
    for (name, value) in parameters {
        let field = path.key(name);
        parameter_name(name, &field, problems);
        if value.text_len() > MAX_PARAMETER_VALUE_LEN {
            problems.add(
                &field,
                format!("value longer than {MAX_PARAMETER_VALUE_LEN} characters"),
            );
        }
    }
}

/// Length of a parameter value as CircleCI counts it (strings only; numbers are short).
pub trait ParameterLen {
    fn text_len(&self) -> usize;
}

impl ParameterLen for crate::target::ParameterValue {
    fn text_len(&self) -> usize {
        match self {
            crate::target::ParameterValue::String(text) => text.chars().count(),
            _ => 0,
        }
    }
}

/// A branch or tag name, following git's check-ref-format rules that matter for safety:
/// no control characters, spaces, `..`, `~^:?*[\`, leading `-` or `/`, trailing `/` or `.lock`.
pub fn git_ref(value: &str, path: &FieldPath, problems: &mut Problems) {
    if let Err(reason) = check_git_ref(value) {
        problems.add(
            path,
            format!(
                "`{}` is not a valid branch or tag name: {reason}",
                value.escape_debug()
            ),
        );
    }
}

/// The same rule as [`git_ref`], for callers outside the triggers file (HTTP requests,
/// rendered chain templates, the CircleCI client).
///
/// Stricter than git on purpose: a ref may reach a shell wherever a `config.yml` interpolates
/// `<< pipeline.git.branch >>` or a parameter, so only ASCII letters, digits and `. _ / + -`
/// are accepted (no `$`, backticks, `;`, quotes, spaces or look-alike Unicode).
pub fn check_git_ref(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > 255 {
        return Err("must be 1 to 255 bytes");
    }
    if value
        .chars()
        .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
    {
        return Err("contains a space, a control character or one of ~^:?*[\\");
    }
    if !value.chars().all(is_ref_char) {
        return Err(
            "may only contain ASCII letters, digits and `. _ / + -` (no shell metacharacters)",
        );
    }
    if value.contains("..") || value.contains("//") || value.contains("@{") {
        return Err("contains `..`, `//` or `@{`");
    }
    if value.starts_with(['-', '/', '.']) || value.ends_with(['/', '.']) || value.ends_with(".lock")
    {
        return Err("starts with `-`, `/` or `.`, or ends with `/`, `.` or `.lock`");
    }
    if value.split('/').any(|part| part.starts_with('.')) {
        return Err("has a path component starting with `.`");
    }
    Ok(())
}

/// The characters a branch or tag may contain here.
fn is_ref_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '+' | '-')
}

/// 8-4-4-4-12 hex digits.
pub fn looks_like_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Parses a human duration such as `90s`, `15m`, `2h`, `7d` or `1h30m` (units s, m, h, d, w).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "`{text}`: unknown unit `{c}` (use s, m, h, d or w)"
                ));
            }
        };
        let amount: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}`: a number must come before `{c}`"))?;
        total = amount
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(|| format!("`{text}` is too long"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "`{text}`: the last number has no unit (e.g. `{text}m`)"
        ));
    }
    Ok(std::time::Duration::from_secs(total))
}

/// A duration field: parsed, or a problem recorded.
pub fn duration(
    text: &str,
    path: &FieldPath,
    problems: &mut Problems,
) -> Option<std::time::Duration> {
    match parse_duration(text) {
        Ok(duration) => Some(duration),
        Err(reason) => {
            problems.add(path, reason);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("2h").unwrap().as_secs(), 7_200);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5_400);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
        for bad in ["", "h", "10", "5y", "1.5h", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn git_refs_reject_traversal_and_control_characters() {
        for good in [
            "main",
            "release/1.2",
            "feature/x_y-z",
            "v1.4.2",
            "v1.0.0+build.7",
        ] {
            assert!(check_git_ref(good).is_ok(), "{good}");
        }
        for bad in [
            "../etc",
            "a..b",
            "-rf",
            "/abs",
            "trail/",
            "x.lock",
            "sp ace",
            "ctl\u{1}",
            "a:b",
            "a/.hidden",
            "",
            "x$(id)",
            "x`id`",
            "a;b",
            "a|b",
            "a&b",
            "it's",
            "ma\u{0456}n", // Cyrillic і
            "main\u{200b}",
        ] {
            assert!(check_git_ref(bad).is_err(), "{bad:?}");
        }
    }
}
