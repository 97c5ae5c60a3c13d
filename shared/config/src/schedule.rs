//! `[[schedule]]`: act on one or more targets at the times of a cron expression in an IANA
//! time zone.
//!
//! ```toml
//! [[schedule]]
//! name = "nightly-api"
//! cron = "0 2 * * *"
//! timezone = "Europe/Berlin"
//! catch_up = "latest"          # skip | latest | all; `max_catch_up` (all), `max_catch_up_age`
//! grace = "2m"                 # how late a slot may be decided and still be on time
//! concurrency = "forbid"       # allow | forbid | replace; `stale_after`
//! target = { project = "gh/acme/api", branch = "main", workflow = "nightly" }
//! ```
//!
//! Every trigger of one slot shares the slot as its origin, so a fan-in chain can wait for
//! all targets of a schedule. How slots are computed (daylight-saving rules included) is
//! `shared::schedule`; this module is the model and its validation.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::action::ActionFields;
use crate::cron::{CronError, CronExpr};
use crate::error::Problems;
use crate::path::FieldPath;
use crate::rules;
use crate::target::{ActionKind, ParameterValue, Selection, TargetSpec};
use crate::template::{
    RenderError, SLOT_DATE_FORMAT, SLOT_LOCAL_FORMAT, SLOT_UTC_FORMAT, Scope, Template,
    TemplateContext, TemplateError, Variable,
};

/// How many missed slots `catch_up = "all"` fires when `max_catch_up` is not set.
pub const DEFAULT_MAX_CATCH_UP: u32 = 10;
/// Missed slots older than this are not caught up when `max_catch_up_age` is not set.
pub const DEFAULT_MAX_CATCH_UP_AGE: Duration = Duration::from_secs(24 * 3600);
/// How late a schedule's newest slot may be decided and still count as on time when `grace`
/// is not set: EventBridge Scheduler's retry window for a tick (120 s, infra/template.yaml), so
/// a later tick deciding a slot while the slot's own tick may still be delivered decides it the
/// same way; the slot's own tick and the next one may fail, or `serve` may take two minutes to
/// restart, without the slot being missed. Only the newest slot can be on time, so this never
/// lets a frequent schedule fire more than one slot per tick outside its catch-up policy.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2 * 60);
/// A previous pipeline older than this stops counting as running when `stale_after` is not set,
/// so a pipeline left on hold cannot block a `forbid` schedule forever.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What happens to slots that were missed (the scheduler was down or late).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUpMode {
    /// Missed slots are recorded as skipped.
    Skip,
    /// The newest missed slot fires (unless the on-time slot supersedes it); older ones are skipped.
    #[default]
    Latest,
    /// Every missed slot fires, newest `max_catch_up` only.
    All,
}

impl CatchUpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUpMode::Skip => "skip",
            CatchUpMode::Latest => "latest",
            CatchUpMode::All => "all",
        }
    }
}

/// What a slot does when the previous pipeline of the same target is still running
/// (`on_hold` counts as running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyMode {
    /// Start anyway.
    #[default]
    Allow,
    /// Skip the slot (recorded).
    Forbid,
    /// Cancel the running pipeline, then start.
    Replace,
}

impl ConcurrencyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyMode::Allow => "allow",
            ConcurrencyMode::Forbid => "forbid",
            ConcurrencyMode::Replace => "replace",
        }
    }
}

/// One `[[schedule]]` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique among schedules; part of every claim key, so letters, digits, `-`, `_`.
    pub name: String,
    /// Five-field cron (see [`crate::cron`]).
    pub cron: String,
    /// IANA time zone name, e.g. `Europe/Berlin` or `UTC`.
    pub timezone: String,
    /// One target; or `targets` for several.
    pub target: Option<TargetSpec>,
    pub targets: Option<Vec<TargetSpec>>,
    #[serde(default)]
    pub action: ActionKind,
    /// `approve`: the approval job's name.
    pub job: Option<String>,
    /// `rerun`: rerun only these jobs (by name).
    pub jobs: Option<Vec<String>>,
    /// `rerun`: rerun from the failed jobs.
    pub from_failed: Option<bool>,
    /// `approve`/`rerun`/`cancel`: how the workflow is found (schedules: `latest` only).
    pub select: Option<Selection>,
    #[serde(default)]
    pub catch_up: CatchUpMode,
    /// `catch_up = "all"`: at most this many missed slots fire (the newest).
    pub max_catch_up: Option<u32>,
    /// `catch_up = "latest" | "all"`: missed slots older than this are skipped (e.g. `"6h"`).
    pub max_catch_up_age: Option<String>,
    /// A slot decided at most this long after its instant, by a tick before the schedule's next
    /// slot, is on time; any other is missed and goes through `catch_up` (e.g. `"2m"`, `"0s"`).
    pub grace: Option<String>,
    #[serde(default)]
    pub concurrency: ConcurrencyMode,
    /// `concurrency = "forbid" | "replace"`: a previous pipeline older than this no longer
    /// counts as running (e.g. `"6h"`).
    pub stale_after: Option<String>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// When a schedule fires: its cron expression in its time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleTiming {
    pub cron: CronExpr,
    pub zone: Tz,
}

impl ScheduleTiming {
    pub fn new(cron: &str, timezone: &str) -> Result<Self, ScheduleError> {
        Ok(Self {
            cron: cron.parse()?,
            zone: parse_timezone(timezone)?,
        })
    }

    /// Identifies the timing definition: when it changes, the schedule starts again from now
    /// instead of catching up slots of the old definition.
    pub fn fingerprint(&self) -> String {
        format!("{} {}", self.cron, self.zone.name())
    }
}

/// The catch-up settings with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpPolicy {
    pub mode: CatchUpMode,
    /// Most missed slots that fire: 0 for `skip`, 1 for `latest`, `max_catch_up` for `all`.
    pub max_count: u32,
    /// Missed slots older than this never fire.
    pub max_age: Duration,
    /// The newest due slot decided at most this late is on time, not missed.
    pub grace: Duration,
}

/// The concurrency settings with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyPolicy {
    pub mode: ConcurrencyMode,
    /// A previous pipeline older than this no longer counts as running.
    pub stale_after: Duration,
}

/// A schedule field that does not hold what it should (only after skipping validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron: {0}")]
    Cron(#[from] CronError),
    #[error("`{name}` is not an IANA time zone name{}", suggestion_text(.suggestion))]
    UnknownTimezone {
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("{field}: {reason}")]
    Duration { field: &'static str, reason: String },
}

fn suggestion_text(suggestion: &Option<&'static str>) -> String {
    suggestion.map_or_else(String::new, |name| format!(" (did you mean `{name}`?)"))
}

/// An IANA zone name as chrono-tz knows it; near misses (case, a bare city) get a suggestion.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    if let Ok(zone) = Tz::from_str(name) {
        return Ok(zone);
    }
    let city = |zone_name: &str| zone_name.rsplit('/').next().unwrap_or(zone_name).to_owned();
    let wanted = name.trim().replace(' ', "_");
    let suggestion = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|zone| zone.name())
        .find(|candidate| candidate.eq_ignore_ascii_case(&wanted))
        .or_else(|| {
            chrono_tz::TZ_VARIANTS
                .iter()
                .map(|zone| zone.name())
                .find(|candidate| city(candidate).eq_ignore_ascii_case(&city(&wanted)))
        });
    Err(ScheduleError::UnknownTimezone {
        name: name.to_owned(),
        suggestion,
    })
}

fn parse_duration_field(
    field: &'static str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ScheduleError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match rules::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(ScheduleError::Duration {
            field,
            reason: "must be longer than 0".into(),
        }),
        Ok(duration) => Ok(duration),
        Err(reason) => Err(ScheduleError::Duration { field, reason }),
    }
}

/// The values a schedule's parameter templates see: one slot of the schedule, in its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotValues {
    /// The slot's instant.
    pub at: DateTime<Utc>,
    /// The schedule's zone (`slot.local`, `slot.date`).
    pub zone: Tz,
}

impl TemplateContext for SlotValues {
    fn lookup(&self, variable: Variable) -> Option<Cow<'_, str>> {
        let local = self.at.with_timezone(&self.zone);
        let text = match variable {
            Variable::SlotUtc => self.at.format(SLOT_UTC_FORMAT).to_string(),
            Variable::SlotLocal => local.format(SLOT_LOCAL_FORMAT).to_string(),
            Variable::SlotDate => local.format(SLOT_DATE_FORMAT).to_string(),
            _ => return None,
        };
        Some(Cow::Owned(text))
    }
}

/// Why a schedule target's parameters could not be rendered for a slot (only for a file that
/// skipped `check`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotRenderError {
    #[error("parameters.{name}: {source}")]
    Parse { name: String, source: TemplateError },
    #[error("parameters.{name}: {source}")]
    Render { name: String, source: RenderError },
}

impl ScheduleSpec {
    /// `target` with its string parameters rendered for one slot (`{{ slot.utc }}`,
    /// `{{ slot.local }}`, `{{ slot.date }}`); text without variables is unchanged.
    pub fn render_target(
        &self,
        target: &TargetSpec,
        slot: SlotValues,
    ) -> Result<TargetSpec, SlotRenderError> {
        let mut rendered = target.clone();
        for (name, value) in &mut rendered.parameters {
            let ParameterValue::String(text) = value else {
                continue;
            };
            let template =
                Template::parse_in(text, Scope::Slot).map_err(|source| SlotRenderError::Parse {
                    name: name.clone(),
                    source,
                })?;
            if template.is_literal() {
                continue;
            }
            *text = template
                .render(&slot)
                .map_err(|source| SlotRenderError::Render {
                    name: name.clone(),
                    source,
                })?;
        }
        Ok(rendered)
    }

    /// Whether any target parameter uses a slot variable.
    pub fn has_slot_parameters(&self) -> bool {
        self.targets().iter().any(|target| {
            target.parameters.values().any(|value| {
                matches!(value, ParameterValue::String(text)
                    if Template::parse(text).is_ok_and(|t| !t.is_literal()))
            })
        })
    }

    /// The targets in the order written (`target` or `targets`).
    pub fn targets(&self) -> Vec<&TargetSpec> {
        self.target
            .iter()
            .chain(self.targets.iter().flatten())
            .collect()
    }

    pub fn timing(&self) -> Result<ScheduleTiming, ScheduleError> {
        ScheduleTiming::new(&self.cron, &self.timezone)
    }

    pub fn catch_up_policy(&self) -> Result<CatchUpPolicy, ScheduleError> {
        let max_age = self.max_catch_up_age()?;
        let max_count = match self.catch_up {
            CatchUpMode::Skip => 0,
            CatchUpMode::Latest => 1,
            CatchUpMode::All => self.max_catch_up.unwrap_or(DEFAULT_MAX_CATCH_UP),
        };
        Ok(CatchUpPolicy {
            mode: self.catch_up,
            max_count,
            max_age,
            grace: self.grace()?,
        })
    }

    fn max_catch_up_age(&self) -> Result<Duration, ScheduleError> {
        parse_duration_field(
            "max_catch_up_age",
            self.max_catch_up_age.as_deref(),
            DEFAULT_MAX_CATCH_UP_AGE,
        )
    }

    /// `grace`, or [`DEFAULT_GRACE`]. Zero is allowed: only the slot's own tick (or the
    /// scheduler's retry of it) is then on time.
    fn grace(&self) -> Result<Duration, ScheduleError> {
        match self.grace.as_deref() {
            None => Ok(DEFAULT_GRACE),
            Some(text) => rules::parse_duration(text).map_err(|reason| ScheduleError::Duration {
                field: "grace",
                reason,
            }),
        }
    }

    pub fn concurrency_policy(&self) -> Result<ConcurrencyPolicy, ScheduleError> {
        Ok(ConcurrencyPolicy {
            mode: self.concurrency,
            stale_after: parse_duration_field(
                "stale_after",
                self.stale_after.as_deref(),
                DEFAULT_STALE_AFTER,
            )?,
        })
    }

    pub(crate) fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        rules::secret_name(&self.name, &path.key("name"), problems);
        if let Err(error) = self.cron.parse::<CronExpr>() {
            problems.add(&path.key("cron"), error.to_string());
        }
        if let Err(error) = parse_timezone(&self.timezone) {
            problems.add(&path.key("timezone"), error.to_string());
        }
        self.validate_targets(path, problems);
        self.validate_action(path, problems);
        self.validate_catch_up(path, problems);
        self.validate_concurrency(path, problems);
    }

    fn validate_targets(&self, path: &FieldPath, problems: &mut Problems) {
        match (&self.target, &self.targets) {
            (None, None) => problems.add(path, "set `target = {...}` or `targets = [{...}, ...]`"),
            (Some(_), Some(_)) => problems.add(
                &path.key("targets"),
                "set either `target` or `targets`, not both",
            ),
            (None, Some(targets)) if targets.is_empty() => {
                problems.add(&path.key("targets"), "needs at least one target");
            }
            _ => {}
        }
        let mut located: Vec<(FieldPath, &TargetSpec)> = Vec::new();
        if let Some(target) = &self.target {
            located.push((path.key("target"), target));
        }
        for (index, target) in self.targets.iter().flatten().enumerate() {
            located.push((path.key("targets").index(index), target));
        }
        for (position, (target_path, target)) in located.iter().enumerate() {
            target.validate(target_path, problems);
            if located[..position]
                .iter()
                .any(|(_, earlier)| earlier == target)
            {
                problems.add(
                    target_path,
                    "the same target is listed twice; it would be triggered twice per slot",
                );
            }
            if self.action != ActionKind::Pipeline {
                self.validate_existing_workflow_target(target_path, target, problems);
            }
            for (name, value) in &target.parameters {
                if let ParameterValue::String(text) = value
                    && let Err(error) = Template::parse_in(text, Scope::Slot)
                {
                    problems.add(&target_path.key("parameters").key(name), error.to_string());
                }
            }
        }
    }

    /// approve/rerun/cancel act on the newest pipeline of the target's branch.
    fn validate_existing_workflow_target(
        &self,
        path: &FieldPath,
        target: &TargetSpec,
        problems: &mut Problems,
    ) {
        let action = self.action.as_str();
        if target.branch.is_none() {
            problems.add(
                path,
                format!("action = \"{action}\" needs `branch`: it acts on the newest pipeline of that branch"),
            );
        }
        let pipeline_only = [
            ("parameters", !target.parameters.is_empty()),
            ("definition_id", target.definition_id.is_some()),
            ("config", target.config.is_some()),
            ("checkout", target.checkout.is_some()),
        ];
        for (field, present) in pipeline_only {
            if present {
                problems.add(
                    &path.key(field),
                    format!("only used when starting a pipeline, not with action = \"{action}\""),
                );
            }
        }
    }

    /// The action fields as written, for [`ActionFields::read`].
    pub fn action_fields(&self) -> ActionFields<'_> {
        ActionFields::new(self.action, &self.job, &self.jobs, self.from_failed)
    }

    fn validate_action(&self, path: &FieldPath, problems: &mut Problems) {
        self.action_fields().read(path, problems);
        let action = self.action.as_str();
        if self.action == ActionKind::Pipeline {
            if self.select.is_some() {
                problems.add(
                    &path.key("select"),
                    format!("`select` does not apply to action = \"{action}\" (it selects an existing workflow for approve, rerun or cancel)"),
                );
            }
            return;
        }
        match self.select {
            Some(Selection::Latest) => {}
            Some(Selection::Origin | Selection::Revision) => problems.add(
                &path.key("select"),
                "a schedule slot has no upstream pipeline or revision to follow: use `select = \"latest\"`",
            ),
            None => problems.add(
                path,
                format!("action = \"{action}\" needs `select = \"latest\"` (the newest pipeline of the target's branch)"),
            ),
        }
    }

    fn validate_catch_up(&self, path: &FieldPath, problems: &mut Problems) {
        let mode = self.catch_up.as_str();
        match self.max_catch_up {
            Some(_) if self.catch_up != CatchUpMode::All => problems.add(
                &path.key("max_catch_up"),
                format!("only used with catch_up = \"all\" (catch_up is \"{mode}\")"),
            ),
            Some(0) => problems.add(
                &path.key("max_catch_up"),
                "must be at least 1 (use catch_up = \"skip\" to fire no missed slot)",
            ),
            _ => {}
        }
        if self.max_catch_up_age.is_some() && self.catch_up == CatchUpMode::Skip {
            problems.add(
                &path.key("max_catch_up_age"),
                "not used with catch_up = \"skip\" (no missed slot fires)",
            );
        } else if let Err(ScheduleError::Duration { reason, .. }) = self.max_catch_up_age() {
            problems.add(&path.key("max_catch_up_age"), reason);
        }
        if let Err(ScheduleError::Duration { reason, .. }) = self.grace() {
            problems.add(&path.key("grace"), reason);
        }
    }

    fn validate_concurrency(&self, path: &FieldPath, problems: &mut Problems) {
        if self.action != ActionKind::Pipeline && self.concurrency != ConcurrencyMode::Allow {
            problems.add(
                &path.key("concurrency"),
                format!(
                    "only used with action = \"pipeline\" (action is \"{}\")",
                    self.action.as_str()
                ),
            );
        }
        if self.stale_after.is_some() && self.concurrency == ConcurrencyMode::Allow {
            problems.add(
                &path.key("stale_after"),
                "only used with concurrency = \"forbid\" or \"replace\"",
            );
        } else if let Err(ScheduleError::Duration { reason, .. }) = self.concurrency_policy() {
            problems.add(&path.key("stale_after"), reason);
        }
    }
}

/// Validates every schedule and that their names are unique.
pub(crate) fn validate_all(schedules: &[ScheduleSpec], path: &FieldPath, problems: &mut Problems) {
    let mut first_index_by_name: HashMap<&str, usize> = HashMap::new();
    for (index, schedule) in schedules.iter().enumerate() {
        let schedule_path = path.index(index);
        schedule.validate(&schedule_path, problems);
        if let Some(first) = first_index_by_name.insert(&schedule.name, index) {
            first_index_by_name.insert(&schedule.name, first);
            problems.add(
                &schedule_path.key("name"),
                format!(
                    "schedule `{}` is already defined (schedule[{first}])",
                    schedule.name
                ),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timezones_resolve_and_near_misses_get_suggestions() {
        assert_eq!(parse_timezone("Europe/Berlin").unwrap(), Tz::Europe__Berlin);
        assert_eq!(parse_timezone("UTC").unwrap(), Tz::UTC);
        assert_eq!(
            parse_timezone("europe/berlin").unwrap_err().to_string(),
            "`europe/berlin` is not an IANA time zone name (did you mean `Europe/Berlin`?)"
        );
        assert_eq!(
            parse_timezone("New York").unwrap_err().to_string(),
            "`New York` is not an IANA time zone name (did you mean `America/New_York`?)"
        );
        assert_eq!(
            parse_timezone("Mars/Olympus").unwrap_err().to_string(),
            "`Mars/Olympus` is not an IANA time zone name"
        );
        assert_eq!(
            parse_timezone("CEST").unwrap_err().to_string(),
            "`CEST` is not an IANA time zone name"
        );
    }

    #[test]
    fn fingerprint_changes_with_cron_or_zone_only() {
        let base = ScheduleTiming::new("0 2 * * *", "Europe/Berlin").unwrap();
        let spaced = ScheduleTiming::new(" 0  2 * * * ", "Europe/Berlin").unwrap();
        assert_eq!(base.fingerprint(), spaced.fingerprint());
        assert_eq!(base.fingerprint(), "0 2 * * * Europe/Berlin");
        assert_ne!(
            base.fingerprint(),
            ScheduleTiming::new("0 3 * * *", "Europe/Berlin")
                .unwrap()
                .fingerprint()
        );
        assert_ne!(
            base.fingerprint(),
            ScheduleTiming::new("0 2 * * *", "Europe/Paris")
                .unwrap()
                .fingerprint()
        );
    }
}
