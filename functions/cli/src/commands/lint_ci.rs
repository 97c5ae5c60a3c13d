//! `lint-ci PATH [--project P]`: does `.circleci/config.yml` run only the workflow each
//! `workflow = "x"` target names, and accept the parameters the triggers send?
//! (`shared::operator::lint_ci`). Exit codes: 0 no errors (warnings may be printed),
//! 1 errors found, 2 unreadable input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use shared::config::{TriggersFile, load_file};
use shared::operator::lint_ci::{Severity, lint};

#[derive(Debug, clap::Args)]
pub struct LintCiArgs {
    /// The project's CircleCI config.
    #[arg(default_value = ".circleci/config.yml")]
    path: PathBuf,
    /// Only the targets of this project (e.g. gh/acme/api); default: every pipeline target.
    #[arg(long)]
    project: Option<String>,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Path, args: LintCiArgs) -> anyhow::Result<ExitCode> {
    let triggers = load_file(config)?;
    report(&triggers, &args.path, args.project.as_deref(), args.json)
}

pub fn report(
    triggers: &TriggersFile,
    path: &Path,
    project: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let findings = lint(triggers, &text, project).with_context(|| format!("{}", path.display()))?;
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        for finding in &findings {
            println!("{}: {finding}", path.display());
        }
        println!(
            "{}: {errors} error(s), {} warning(s)",
            path.display(),
            findings.len() - errors
        );
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
