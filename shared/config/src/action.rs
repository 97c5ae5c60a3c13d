//! What a trigger does: the `action`, `job`, `jobs` and `from_failed` fields, as schedules,
//! chain rules and endpoints all spell them, read once into a typed [`ActionSpec`].
//!
//! The same function validates the fields (for `check`) and builds the spec (at run time),
//! so a field cannot mean one thing to the validator and another to the trigger.

use serde::{Deserialize, Serialize};

use crate::{ActionKind, FieldPath, Problems};

/// What to do, with the job fields that kind takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionSpec {
    /// Start a pipeline.
    Pipeline,
    /// Approve the on-hold approval job with this name.
    Approve { job: String },
    /// Rerun an existing workflow.
    Rerun(RerunJobs),
    /// Cancel an existing workflow.
    Cancel,
}

/// Which jobs of the selected workflow a rerun starts again (kept in retry plans, so
/// serialized: `"workflow"`, `"from_failed"`, `{"jobs": [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RerunJobs {
    /// Neither `jobs` nor `from_failed`: the whole workflow (CircleCI's own default).
    Workflow,
    /// `from_failed = true`: the failed jobs and what depends on them.
    FromFailed,
    /// `jobs = [...]`: these jobs (by name; resolved to job ids in the selected workflow)
    /// and what depends on them.
    Jobs(Vec<String>),
}

impl ActionSpec {
    pub fn kind(&self) -> ActionKind {
        match self {
            ActionSpec::Pipeline => ActionKind::Pipeline,
            ActionSpec::Approve { .. } => ActionKind::Approve,
            ActionSpec::Rerun(_) => ActionKind::Rerun,
            ActionSpec::Cancel => ActionKind::Cancel,
        }
    }

    /// Whether the action works on an existing workflow (and so needs a selection).
    pub fn acts_on_existing(&self) -> bool {
        !matches!(self, ActionSpec::Pipeline)
    }
}

/// The action fields as written, in any of the three places they are written.
#[derive(Debug, Clone, Copy)]
pub struct ActionFields<'a> {
    pub action: ActionKind,
    pub job: Option<&'a str>,
    /// `None` when the key is absent (an empty list is an error, not "the whole workflow").
    pub jobs: Option<&'a [String]>,
    pub from_failed: Option<bool>,
}

/// A set of action fields `check` would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct InvalidAction(pub Vec<String>);

impl<'a> ActionFields<'a> {
    /// The fields as every spec type stores them.
    pub fn new(
        action: ActionKind,
        job: &'a Option<String>,
        jobs: &'a Option<Vec<String>>,
        from_failed: Option<bool>,
    ) -> Self {
        Self {
            action,
            job: job.as_deref(),
            jobs: jobs.as_deref(),
            from_failed,
        }
    }

    /// Validates the fields, reporting each problem at its field under `path`, and returns
    /// the spec when there was none. The one rule set for schedules, chains and endpoints:
    /// `approve` takes one `job`; `rerun` takes `jobs`, or `from_failed = true`, or neither
    /// (the whole workflow); `pipeline` and `cancel` take none of them.
    pub fn read(&self, path: &FieldPath, problems: &mut Problems) -> Option<ActionSpec> {
        let kind = self.action.as_str();
        let jobs_set = self.jobs.is_some();
        let from_failed_set = self.from_failed.is_some();
        let mut ok = true;
        let mut refuse = |problems: &mut Problems, at: &FieldPath, message: String| {
            ok = false;
            problems.add(at, message);
        };
        let misplaced = |field: &str, why: &str| {
            format!("`{field}` does not apply to action = \"{kind}\" ({why})")
        };
        let spec = match self.action {
            ActionKind::Pipeline | ActionKind::Cancel => {
                let why = if self.action == ActionKind::Pipeline {
                    "a new pipeline names no job"
                } else {
                    "a cancel names no job"
                };
                for (field, set) in [
                    ("job", self.job.is_some()),
                    ("jobs", jobs_set),
                    ("from_failed", from_failed_set),
                ] {
                    if set {
                        refuse(problems, &path.key(field), misplaced(field, why));
                    }
                }
                if self.action == ActionKind::Pipeline {
                    ActionSpec::Pipeline
                } else {
                    ActionSpec::Cancel
                }
            }
            ActionKind::Approve => {
                for (field, set) in [("jobs", jobs_set), ("from_failed", from_failed_set)] {
                    if set {
                        refuse(
                            problems,
                            &path.key(field),
                            misplaced(field, "only rerun takes it"),
                        );
                    }
                }
                match self.job {
                    None => {
                        refuse(
                            problems,
                            path,
                            "action = \"approve\" needs `job` (the approval job's name)".into(),
                        );
                        ActionSpec::Approve { job: String::new() }
                    }
                    Some(job) => {
                        if let Err(reason) = check_job_name(job) {
                            refuse(problems, &path.key("job"), reason.into());
                        }
                        ActionSpec::Approve {
                            job: job.to_owned(),
                        }
                    }
                }
            }
            ActionKind::Rerun => {
                if self.job.is_some() {
                    refuse(
                        problems,
                        &path.key("job"),
                        "rerun takes `jobs = [...]` (or `from_failed = true`, or neither for the whole workflow)".into(),
                    );
                }
                let from_failed = self.from_failed == Some(true);
                match self.jobs {
                    Some(_) if from_failed => {
                        refuse(
                            problems,
                            &path.key("jobs"),
                            "set either `from_failed = true` or `jobs`, not both".into(),
                        );
                        ActionSpec::Rerun(RerunJobs::FromFailed)
                    }
                    Some([]) => {
                        refuse(
                            problems,
                            &path.key("jobs"),
                            "needs at least one job name (or leave `jobs` out to rerun the whole workflow)".into(),
                        );
                        ActionSpec::Rerun(RerunJobs::Workflow)
                    }
                    Some(jobs) => {
                        for (index, job) in jobs.iter().enumerate() {
                            if let Err(reason) = check_job_name(job) {
                                refuse(problems, &path.key("jobs").index(index), reason.into());
                            }
                        }
                        ActionSpec::Rerun(RerunJobs::Jobs(jobs.to_vec()))
                    }
                    None if from_failed => ActionSpec::Rerun(RerunJobs::FromFailed),
                    None => ActionSpec::Rerun(RerunJobs::Workflow),
                }
            }
        };
        ok.then_some(spec)
    }

    /// The spec of fields `check` accepted; for a hand-built file, the validator's reasons.
    pub fn spec(&self) -> Result<ActionSpec, InvalidAction> {
        let mut problems = Problems::default();
        self.read(&FieldPath::root(), &mut problems)
            .ok_or_else(|| InvalidAction(problems.messages()))
    }
}

/// A job name as written in config.yml.
pub fn check_job_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) {
        return Err("must be 1 to 1024 characters without control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(
        action: ActionKind,
        job: Option<&'a str>,
        jobs: Option<&'a [String]>,
        from_failed: Option<bool>,
    ) -> ActionFields<'a> {
        ActionFields {
            action,
            job,
            jobs,
            from_failed,
        }
    }

    #[test]
    fn each_kind_reads_its_own_fields() {
        let names = vec!["deploy".to_owned()];
        let cases = [
            (
                fields(ActionKind::Pipeline, None, None, None),
                ActionSpec::Pipeline,
            ),
            (
                fields(ActionKind::Cancel, None, None, None),
                ActionSpec::Cancel,
            ),
            (
                fields(ActionKind::Approve, Some("hold"), None, None),
                ActionSpec::Approve { job: "hold".into() },
            ),
            (
                fields(ActionKind::Rerun, None, None, None),
                ActionSpec::Rerun(RerunJobs::Workflow),
            ),
            (
                fields(ActionKind::Rerun, None, None, Some(true)),
                ActionSpec::Rerun(RerunJobs::FromFailed),
            ),
            (
                // `from_failed = false` says "not from failed": the whole workflow.
                fields(ActionKind::Rerun, None, None, Some(false)),
                ActionSpec::Rerun(RerunJobs::Workflow),
            ),
            (
                fields(ActionKind::Rerun, None, Some(&names), None),
                ActionSpec::Rerun(RerunJobs::Jobs(names.clone())),
            ),
        ];
        for (written, expected) in cases {
            assert_eq!(written.spec().unwrap(), expected, "{written:?}");
            assert_eq!(expected.kind(), written.action);
        }
    }

    #[test]
    fn fields_a_kind_does_not_take_are_refused() {
        let names = vec!["deploy".to_owned()];
        let empty: Vec<String> = Vec::new();
        let refused = [
            fields(ActionKind::Pipeline, Some("hold"), None, None),
            fields(ActionKind::Pipeline, None, Some(&names), None),
            fields(ActionKind::Cancel, None, None, Some(true)),
            fields(ActionKind::Approve, None, None, None),
            fields(ActionKind::Approve, Some("hold"), Some(&names), None),
            fields(ActionKind::Approve, Some(""), None, None),
            fields(ActionKind::Rerun, Some("deploy"), None, None),
            fields(ActionKind::Rerun, None, Some(&names), Some(true)),
            fields(ActionKind::Rerun, None, Some(&empty), None),
        ];
        for written in refused {
            let error = written.spec().unwrap_err();
            assert!(!error.0.is_empty(), "{written:?}");
        }
    }
}
