//! `check`: validate the triggers file the same way the Lambda builds do.

use std::path::Path;
use std::process::ExitCode;

use shared::config::{ConfigError, load_file};

pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    match load_file(config) {
        Ok(_) => {
            println!("{}: ok", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid(issues)) => {
            for issue in &issues {
                eprintln!("{issue}");
            }
            eprintln!("{}: {} problem(s)", config.display(), issues.len());
            Ok(ExitCode::FAILURE)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::FAILURE)
        }
    }
}
