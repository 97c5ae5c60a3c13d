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
