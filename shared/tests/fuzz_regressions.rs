//! Inputs found by the fuzz targets (fuzz/, run with `scripts/fuzz`) that once failed, kept
//! as ordinary tests so the fixes stay fixed.

use shared::config::{ConfigError, parse_str};

/// triggers_file: toml_edit (which only locates errors) panicked with "all items have spans"
/// while recovering from this syntax error; `check` and a reload of `serve` crashed.
#[test]
fn a_dotted_key_after_a_broken_line_is_an_error_not_a_panic() {
    for source in ["==\n.=", "==\n.=\n", "a = 1\n==\n.= 2\n"] {
        let error = parse_str(source, "broken.toml").expect_err(source);
        let ConfigError::Invalid(issues) = &error else {
            panic!("{source:?}: {error}");
        };
        assert!(!issues.is_empty(), "{source:?}");
        let lines = source.split('\n').count();
        for issue in issues {
            assert_eq!(issue.file, "broken.toml");
            assert!((1..=lines).contains(&issue.line), "{source:?}: {issue}");
            assert!(!issue.message.is_empty(), "{source:?}: {issue}");
        }
    }
}
