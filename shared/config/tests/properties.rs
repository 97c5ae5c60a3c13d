//! Property tests of the triggers-file and cron parsers: arbitrary and mutated input must give
//! a value or an error, never a panic, and every error must point into the file.
//!
//! Bounded (256 cases per property) and seeded (`PROPTEST_RNG_SEED` overrides the seed, and
//! `PROPTEST_CASES` the number of cases) so a run is reproducible and cannot flake.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use triggers_config::cron::CronExpr;
use triggers_config::{ConfigError, parse_str};

/// The seed used unless `PROPTEST_RNG_SEED` is set.
const DEFAULT_SEED: u64 = 0x7269_6767_6572_7331;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        cases: 256,
        // Failures are reported with their minimal input; no files written next to the tests.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    config
}

/// The repository's own example triggers file.
fn example_file() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../triggers.toml");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Every issue of a rejected file names a position inside `source` (1-based line and column).
fn assert_issues_point_into(source: &str, result: &Result<impl Sized, ConfigError>) {
    let Err(error) = result else { return };
    let issues = error.issues();
    assert!(!issues.is_empty(), "a rejection without issues: {error}");
    let last_line = source.matches('\n').count() + 1;
    for issue in issues {
        assert!(
            (1..=last_line).contains(&issue.line),
            "line {} outside 1..={last_line}: {issue}",
            issue.line
        );
        assert!(issue.column >= 1, "column 0: {issue}");
        assert!(
            !issue.message.is_empty(),
            "an issue without a message: {issue}"
        );
        assert_eq!(issue.file, "triggers.toml");
    }
}

/// One edit of a text, by character index (so the result stays valid UTF-8).
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Replace { at: usize, with: char },
    DuplicateLine { line: usize },
    DeleteLine { line: usize },
    SwapLines { first: usize, second: usize },
}

/// Text that is likely to change the meaning of TOML or of our fields.
fn toml_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[[schedule]]\n".to_owned()),
        Just("[[chain]]\n".to_owned()),
        Just("[[chain.then]]\n".to_owned()),
        Just("[[endpoint]]\n".to_owned()),
        Just("[[client]]\n".to_owned()),
        Just("[circleci]\n".to_owned()),
        Just("name = \"x\"\n".to_owned()),
        Just("cron = \"61 * * * *\"\n".to_owned()),
        Just("timezone = \"Mars/Olympus\"\n".to_owned()),
        Just("\"".to_owned()),
        Just("'''".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(" = ".to_owned()),
        Just(",".to_owned()),
        Just("\n".to_owned()),
        Just("#".to_owned()),
        Just("é".to_owned()),
        Just("{{ revision".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("1e400".to_owned()),
        Just("true".to_owned()),
        "\\PC{0,12}",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let index = 0..4096usize;
    prop_oneof![
        (index.clone(), 1..40usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        (index.clone(), toml_fragment()).prop_map(|(at, text)| Edit::Insert { at, text }),
        (index.clone(), any::<char>()).prop_map(|(at, with)| Edit::Replace { at, with }),
        index.clone().prop_map(|line| Edit::DuplicateLine { line }),
        index.clone().prop_map(|line| Edit::DeleteLine { line }),
        (index.clone(), index).prop_map(|(first, second)| Edit::SwapLines { first, second }),
    ]
}

fn apply(source: &str, edit: &Edit) -> String {
    let mut chars: Vec<char> = source.chars().collect();
    let mut lines: Vec<&str> = source.split_inclusive('\n').collect();
    match edit {
        Edit::Delete { at, len } => {
            let start = at % (chars.len() + 1);
            let end = (start + len).min(chars.len());
            chars.drain(start..end);
        }
        Edit::Insert { at, text } => {
            let at = at % (chars.len() + 1);
            chars.splice(at..at, text.chars());
        }
        Edit::Replace { at, with } => {
            if !chars.is_empty() {
                let at = at % chars.len();
                chars[at] = *with;
            }
        }
        Edit::DuplicateLine { line } => {
            if !lines.is_empty() {
                let line = line % lines.len();
                lines.insert(line, lines[line]);
            }
            return lines.concat();
        }
        Edit::DeleteLine { line } => {
            if !lines.is_empty() {
                lines.remove(line % lines.len());
            }
            return lines.concat();
        }
        Edit::SwapLines { first, second } => {
            if !lines.is_empty() {
                let count = lines.len();
                lines.swap(first % count, second % count);
            }
            return lines.concat();
        }
    }
    chars.into_iter().collect()
}

// ----- cron expressions -------------------------------------------------------------------

/// Text built from the characters cron syntax (and its unsupported extensions) uses.
fn cron_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("*".to_owned()),
        Just("/".to_owned()),
        Just("-".to_owned()),
        Just(",".to_owned()),
        Just(" ".to_owned()),
        Just("?".to_owned()),
        Just("L".to_owned()),
        Just("W".to_owned()),
        Just("#".to_owned()),
        Just("@daily".to_owned()),
        Just("MON".to_owned()),
        Just("sun".to_owned()),
        Just("JAN".to_owned()),
        Just("dec".to_owned()),
        Just("MONDAY".to_owned()),
        (0u64..100).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("4294967296".to_owned()),
        Just("\u{00a0}".to_owned()),
        Just("٣".to_owned()),
    ];
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_str_never_panics_and_errors_point_into_the_file(source in "\\PC{0,400}") {
        let result = parse_str(&source, "triggers.toml");
        assert_issues_point_into(&source, &result);
    }

    #[test]
    fn parse_str_never_panics_on_toml_shaped_text(
        fragments in prop::collection::vec(toml_fragment(), 0..40),
    ) {
        let source = fragments.concat();
        let result = parse_str(&source, "triggers.toml");
        assert_issues_point_into(&source, &result);
    }

    #[test]
    fn mutations_of_the_example_file_parse_or_point_into_the_file(
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let mut source = example_file();
        for edit in &edits {
            source = apply(&source, edit);
        }
        let result = parse_str(&source, "triggers.toml");
        assert_issues_point_into(&source, &result);
    }

    #[test]
    fn cron_parse_never_panics_on_arbitrary_text(text in "\\PC{0,64}") {
        let _ = text.parse::<CronExpr>();
    }

    #[test]
    fn cron_parse_never_panics_on_cron_shaped_text(text in cron_like()) {
        if let Ok(expr) = text.parse::<CronExpr>() {
            // What was accepted reads back as itself.
            let reread = expr.as_str().parse::<CronExpr>();
            prop_assert_eq!(reread, Ok(expr.clone()));
            prop_assert!(expr.minutes().all(|minute| minute < 60));
            prop_assert!(expr.hours().all(|hour| hour < 24));
        }
    }
}

#[test]
fn the_example_file_is_valid() {
    // The mutation property starts from a valid file; if this fails, that property tests
    // error paths only.
    parse_str(&example_file(), "triggers.toml").unwrap();
}

#[test]
fn an_error_at_the_end_of_a_file_without_trailing_newline_is_on_its_last_line() {
    let source = "[circleci]\ntoken = ";
    let result = parse_str(source, "triggers.toml");
    assert!(result.is_err());
    assert_issues_point_into(source, &result);
}
