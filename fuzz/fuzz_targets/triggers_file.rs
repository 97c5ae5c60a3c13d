//! The triggers file: `triggers_config::parse_str` (TOML, then the validator).
//!
//! Beyond "no panic":
//! - every refusal names the file and a line and column inside the text (1-based);
//! - what the validator accepts, the run-time compilers accept too: the HTTP catalog, the
//!   chain rules and every schedule's timing and policies (they report errors the validator
//!   should have caught first).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::triggers::http::Catalog;
use shared::triggers::chained::rules::ChainRules;
use triggers_config::{ConfigError, parse_str};

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match parse_str(source, FILE) {
        Ok(file) => {
            if let Err(error) = Catalog::new(&file) {
                panic!("accepted by the validator, refused by the catalog: {error}");
            }
            if let Err(error) = ChainRules::from_file(&file) {
                panic!("accepted by the validator, refused by the chain rules: {error}");
            }
            for schedule in &file.schedule {
                let name = &schedule.name;
                assert!(schedule.timing().is_ok(), "schedule {name}: timing");
                assert!(
                    schedule.catch_up_policy().is_ok(),
                    "schedule {name}: catch-up"
                );
                assert!(
                    schedule.concurrency_policy().is_ok(),
                    "schedule {name}: concurrency"
                );
            }
        }
        Err(ConfigError::Read { .. }) => panic!("parse_str reads no file"),
        Err(error @ ConfigError::Invalid(_)) => {
            let issues = error.issues();
            assert!(!issues.is_empty(), "a refusal without a problem");
            let lines = source.split('\n').count();
            for issue in issues {
                assert_eq!(issue.file, FILE);
                assert!(
                    (1..=lines).contains(&issue.line),
                    "line {} of {lines}: {issue}",
                    issue.line
                );
                let line_len = source
                    .split('\n')
                    .nth(issue.line - 1)
                    .map_or(0, |line| line.chars().count());
                assert!(
                    (1..=line_len + 1).contains(&issue.column),
                    "column {} of {line_len}: {issue}",
                    issue.column
                );
                assert!(!issue.message.is_empty(), "{issue}");
            }
        }
    }
});
