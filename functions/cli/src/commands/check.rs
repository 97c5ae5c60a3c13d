//! `check`: validate the triggers file the same way the Lambda builds do; with `--ci PATH`,
//! also lint a project's CircleCI config against it (see `lint_ci`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use shared::config::{ConfigError, load_file};

#[derive(Debug, Default, clap::Args)]
pub struct CheckArgs {
    /// Also lint this `.circleci/config.yml` against the file's targets (as `lint-ci` does).
    #[arg(long = "ci", value_name = "PATH")]
    ci: Option<PathBuf>,
    /// With --ci: only the targets of this project (e.g. gh/acme/api).
    #[arg(long, requires = "ci")]
    project: Option<String>,
}

pub fn run(config: &Path, args: CheckArgs) -> anyhow::Result<ExitCode> {
    match load_file(config) {
        Ok(triggers) => {
            println!("{}: ok", config.display());
            match &args.ci {
                Some(ci) => super::lint_ci::report(&triggers, ci, args.project.as_deref(), false),
                None => Ok(ExitCode::SUCCESS),
            }
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
