//! `[[schedule]]` in the triggers file: the model, defaults, and file:line errors.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::time::Duration;

use triggers_config::schedule::{CatchUpMode, ConcurrencyMode};
use triggers_config::{ActionKind, ConfigError, ConfigIssue, Selection, parse_str};

fn issues(source: &str) -> Vec<ConfigIssue> {
    match parse_str(source, "triggers.toml") {
        Ok(_) => panic!("expected the file to be rejected:\n{source}"),
        Err(ConfigError::Invalid(issues)) => issues,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// (line, field, message) of every issue, for compact assertions.
fn summary(source: &str) -> Vec<(usize, String, String)> {
    issues(source)
        .into_iter()
        .map(|issue| (issue.line, issue.field, issue.message))
        .collect()
}

fn has(summary: &[(usize, String, String)], line: usize, field: &str, message_part: &str) -> bool {
    summary
        .iter()
        .any(|(l, f, m)| *l == line && f == field && m.contains(message_part))
}

#[test]
fn a_full_schedule_parses_with_its_policies() {
    let file = parse_str(
        r#"
[[schedule]]
name = "nightly-api"
cron = "0 2 * * MON-FRI"
timezone = "Europe/Berlin"
catch_up = "all"
max_catch_up = 3
max_catch_up_age = "6h"
grace = "90s"
concurrency = "forbid"
stale_after = "90m"
targets = [
  { project = "gh/acme/api", branch = "main", workflow = "nightly" },
  { project = "gh/acme/web", branch = "main", parameters = { deep = true } },
]

[[schedule]]
name = "hourly"
cron = "*/15 * * * *"
timezone = "UTC"
enabled = false
target = { project = "gh/acme/api", tag = "v1.0.0" }
"#,
        "triggers.toml",
    )
    .unwrap();
    let [nightly, hourly] = file.schedule.as_slice() else {
        panic!("two schedules expected");
    };
    assert_eq!(nightly.targets().len(), 2);
    assert_eq!(nightly.targets()[1].project, "gh/acme/web");
    assert_eq!(nightly.action, ActionKind::Pipeline);
    assert!(nightly.enabled);
    let catch_up = nightly.catch_up_policy().unwrap();
    assert_eq!(catch_up.mode, CatchUpMode::All);
    assert_eq!(catch_up.max_count, 3);
    assert_eq!(catch_up.max_age, Duration::from_secs(6 * 3600));
    assert_eq!(catch_up.grace, Duration::from_secs(90));
    let concurrency = nightly.concurrency_policy().unwrap();
    assert_eq!(concurrency.mode, ConcurrencyMode::Forbid);
    assert_eq!(concurrency.stale_after, Duration::from_secs(90 * 60));
    assert_eq!(
        nightly.timing().unwrap().fingerprint(),
        "0 2 * * MON-FRI Europe/Berlin"
    );

    assert!(!hourly.enabled);
    assert_eq!(hourly.targets().len(), 1);
    assert!(!hourly.timing().unwrap().cron.is_fixed_time());
    let defaults = hourly.catch_up_policy().unwrap();
    assert_eq!(defaults.mode, CatchUpMode::Latest);
    assert_eq!(defaults.max_count, 1);
    assert_eq!(defaults.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(defaults.grace, Duration::from_secs(120));
    assert_eq!(hourly.concurrency, ConcurrencyMode::Allow);
}

#[test]
fn actions_on_existing_workflows_parse() {
    let file = parse_str(
        r#"
[[schedule]]
name = "approve-friday-release"
cron = "0 16 * * FRI"
timezone = "America/New_York"
action = "approve"
job = "hold-release"
select = "latest"
target = { project = "gh/acme/deploy", branch = "main" }

[[schedule]]
name = "retry-flaky-nightly"
cron = "30 6 * * *"
timezone = "Asia/Tokyo"
action = "rerun"
from_failed = true
select = "latest"
target = { project = "gh/acme/api", branch = "main", workflow = "nightly" }
"#,
        "triggers.toml",
    )
    .unwrap();
    assert_eq!(file.schedule[0].action, ActionKind::Approve);
    assert_eq!(file.schedule[0].job.as_deref(), Some("hold-release"));
    assert_eq!(file.schedule[1].select, Some(Selection::Latest));
    assert_eq!(file.schedule[1].from_failed, Some(true));
}

#[test]
fn bad_cron_and_zone_are_reported_at_their_lines() {
    let found = summary(
        r#"[[schedule]]
name = "a"
cron = "0 25 * * *"
timezone = "Europe/Berln"
target = { project = "gh/acme/api", branch = "main" }

[[schedule]]
name = "b"
cron = "0 0 31 2 *"
timezone = "america/new_york"
target = { project = "gh/acme/api", branch = "main" }
"#,
    );
    assert!(
        has(
            &found,
            3,
            "schedule[0].cron",
            "hour field `25`: 25 is out of range 0-23"
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            4,
            "schedule[0].timezone",
            "`Europe/Berln` is not an IANA time zone name"
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            9,
            "schedule[1].cron",
            "never fires: day-of-month 31 does not occur in FEB"
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            10,
            "schedule[1].timezone",
            "did you mean `America/New_York`?"
        ),
        "{found:#?}"
    );
    assert_eq!(found.len(), 4, "{found:#?}");
    let rendered = issues("[[schedule]]\nname = \"a\"\ncron = \"* * *\"\ntimezone = \"UTC\"\ntarget = { project = \"gh/acme/api\" }\n")[0].to_string();
    assert_eq!(
        rendered,
        "triggers.toml:3:1: schedule[0].cron: expected 5 fields (minute hour day-of-month month day-of-week), found 3"
    );
}

#[test]
fn targets_must_be_present_unique_and_valid() {
    let found = summary(
        r#"[[schedule]]
name = "none"
cron = "0 2 * * *"
timezone = "UTC"

[[schedule]]
name = "both"
cron = "0 2 * * *"
timezone = "UTC"
target = { project = "gh/acme/api" }
targets = [{ project = "gh/acme/web" }]

[[schedule]]
name = "twice"
cron = "0 2 * * *"
timezone = "UTC"
targets = [
  { project = "gh/acme/api", branch = "main" },
  { project = "gh/acme/api", branch = "main" },
  { project = "not a slug", branch = "main" },
]

[[schedule]]
name = "empty"
cron = "0 2 * * *"
timezone = "UTC"
targets = []
"#,
    );
    assert!(
        has(&found, 1, "schedule[0]", "set `target = {...}` or `targets"),
        "{found:#?}"
    );
    assert!(
        has(&found, 11, "schedule[1].targets", "not both"),
        "{found:#?}"
    );
    assert!(
        has(&found, 19, "schedule[2].targets[1]", "listed twice"),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|(line, field, _)| *line == 20 && field == "schedule[2].targets[2].project"),
        "{found:#?}"
    );
    assert!(
        has(&found, 27, "schedule[3].targets", "at least one target"),
        "{found:#?}"
    );
}

#[test]
fn schedule_names_are_unique_and_key_safe() {
    let found = summary(
        r#"[[schedule]]
name = "nightly"
cron = "0 2 * * *"
timezone = "UTC"
target = { project = "gh/acme/api" }

[[schedule]]
name = "nightly"
cron = "0 3 * * *"
timezone = "UTC"
target = { project = "gh/acme/api" }

[[schedule]]
name = "night#ly"
cron = "0 3 * * *"
timezone = "UTC"
target = { project = "gh/acme/api" }
"#,
    );
    assert!(
        has(
            &found,
            8,
            "schedule[1].name",
            "schedule `nightly` is already defined (schedule[0])"
        ),
        "{found:#?}"
    );
    assert!(
        has(&found, 14, "schedule[2].name", "may only contain"),
        "{found:#?}"
    );
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn action_fields_are_checked_against_the_action() {
    let found = summary(
        r#"[[schedule]]
name = "pipeline-with-job"
cron = "0 2 * * *"
timezone = "UTC"
job = "hold"
select = "latest"
target = { project = "gh/acme/api", branch = "main" }

[[schedule]]
name = "approve-without-job"
cron = "0 2 * * *"
timezone = "UTC"
action = "approve"
select = "origin"
concurrency = "forbid"
target = { project = "gh/acme/api", parameters = { x = 1 } }

[[schedule]]
name = "rerun-both"
cron = "0 2 * * *"
timezone = "UTC"
action = "rerun"
jobs = ["test"]
from_failed = true
target = { project = "gh/acme/api", branch = "main" }

[[schedule]]
name = "cancel-with-job"
cron = "0 2 * * *"
timezone = "UTC"
action = "cancel"
job = "x"
select = "latest"
target = { project = "gh/acme/api", branch = "main" }
"#,
    );
    assert!(
        has(
            &found,
            5,
            "schedule[0].job",
            "does not apply to action = \"pipeline\""
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            6,
            "schedule[0].select",
            "does not apply to action = \"pipeline\""
        ),
        "{found:#?}"
    );
    assert!(has(&found, 9, "schedule[1]", "needs `job`"), "{found:#?}");
    assert!(
        has(
            &found,
            14,
            "schedule[1].select",
            "use `select = \"latest\"`"
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            15,
            "schedule[1].concurrency",
            "only used with action = \"pipeline\""
        ),
        "{found:#?}"
    );
    assert!(
        has(&found, 16, "schedule[1].target", "needs `branch`"),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            16,
            "schedule[1].target.parameters",
            "only used when starting a pipeline"
        ),
        "{found:#?}"
    );
    assert!(
        has(&found, 18, "schedule[2]", "needs `select = \"latest\"`"),
        "{found:#?}"
    );
    assert!(
        has(&found, 23, "schedule[2].jobs", "not both"),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            32,
            "schedule[3].job",
            "does not apply to action = \"cancel\""
        ),
        "{found:#?}"
    );
    assert_eq!(found.len(), 10, "{found:#?}");
}

#[test]
fn policy_fields_are_checked_against_their_mode() {
    let found = summary(
        r#"[[schedule]]
name = "a"
cron = "0 2 * * *"
timezone = "UTC"
catch_up = "latest"
max_catch_up = 5
stale_after = "1h"
target = { project = "gh/acme/api" }

[[schedule]]
name = "b"
cron = "0 2 * * *"
timezone = "UTC"
catch_up = "all"
max_catch_up = 0
max_catch_up_age = "6 hours"
concurrency = "replace"
stale_after = "0s"
target = { project = "gh/acme/api" }

[[schedule]]
name = "c"
cron = "0 2 * * *"
timezone = "UTC"
catch_up = "skip"
max_catch_up_age = "6h"
target = { project = "gh/acme/api" }
"#,
    );
    assert!(
        has(
            &found,
            6,
            "schedule[0].max_catch_up",
            "only used with catch_up = \"all\""
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            7,
            "schedule[0].stale_after",
            "only used with concurrency"
        ),
        "{found:#?}"
    );
    assert!(
        has(&found, 15, "schedule[1].max_catch_up", "at least 1"),
        "{found:#?}"
    );
    assert!(
        has(&found, 16, "schedule[1].max_catch_up_age", "unknown unit"),
        "{found:#?}"
    );
    assert!(
        has(&found, 18, "schedule[1].stale_after", "longer than 0"),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            26,
            "schedule[2].max_catch_up_age",
            "not used with catch_up = \"skip\""
        ),
        "{found:#?}"
    );
    assert_eq!(found.len(), 6, "{found:#?}");
}

#[test]
fn grace_is_a_duration_for_every_mode_and_may_be_zero() {
    let file = parse_str(
        r#"
[[schedule]]
name = "strict"
cron = "0 2 * * *"
timezone = "UTC"
catch_up = "skip"
grace = "0s"
target = { project = "gh/acme/api" }
"#,
        "triggers.toml",
    )
    .unwrap();
    let policy = file.schedule[0].catch_up_policy().unwrap();
    assert_eq!(policy.mode, CatchUpMode::Skip);
    assert_eq!(policy.grace, Duration::ZERO);

    let found = summary(
        r#"[[schedule]]
name = "a"
cron = "0 2 * * *"
timezone = "UTC"
max_catch_up_age = "6 hours"
grace = "2 minutes"
target = { project = "gh/acme/api" }

[[schedule]]
name = "b"
cron = "0 2 * * *"
timezone = "UTC"
grace = "5"
target = { project = "gh/acme/api" }
"#,
    );
    assert!(
        has(&found, 5, "schedule[0].max_catch_up_age", "unknown unit"),
        "{found:#?}"
    );
    assert!(
        has(&found, 6, "schedule[0].grace", "unknown unit"),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            13,
            "schedule[1].grace",
            "the last number has no unit"
        ),
        "{found:#?}"
    );
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn unknown_fields_and_bad_enum_values_are_rejected_with_lines() {
    let found = summary(
        r#"[[schedule]]
name = "a"
cron = "0 2 * * *"
timezone = "UTC"
catchup = "all"
target = { project = "gh/acme/api" }
"#,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, 5, "{found:#?}");
    assert!(found[0].2.contains("unknown field `catchup`"), "{found:#?}");

    let found = summary(
        r#"[[schedule]]
name = "a"
cron = "0 2 * * *"
timezone = "UTC"
concurrency = "queue"
target = { project = "gh/acme/api" }
"#,
    );
    assert_eq!(found[0].0, 5, "{found:#?}");
    assert!(found[0].2.contains("unknown variant `queue`"), "{found:#?}");

    let found = summary(
        r#"[[schedule]]
name = "a"
cron = "0 2 * * *"
target = { project = "gh/acme/api" }
"#,
    );
    assert!(
        found[0].2.contains("missing field `timezone`"),
        "{found:#?}"
    );
}

const SLOT_PARAMETERS: &str = r#"
[[schedule]]
name = "nightly-report"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/api", branch = "main", parameters = { day = "{{ slot.date }}", at = "{{slot.utc}}", local = "run {{ slot.local }}", deep = true } }
"#;

#[test]
fn slot_variables_render_in_the_schedules_zone_with_their_declared_formats() {
    use chrono::{TimeZone, Utc};
    use triggers_config::ParameterValue;
    use triggers_config::schedule::SlotValues;

    let file = parse_str(SLOT_PARAMETERS, "triggers.toml").unwrap();
    let schedule = &file.schedule[0];
    assert!(schedule.has_slot_parameters());
    let target = schedule.targets()[0];
    let text = |rendered: &triggers_config::TargetSpec, name: &str| match &rendered.parameters[name]
    {
        ParameterValue::String(text) => text.clone(),
        other => panic!("{name}: {other:?}"),
    };
    let zone = schedule.timing().unwrap().zone;
    // 00:30 UTC on 30 March is 02:30 CEST: the zone's date, not UTC's, is the slot's date.
    let summer = SlotValues {
        at: Utc.with_ymd_and_hms(2026, 3, 30, 0, 30, 0).unwrap(),
        zone,
    };
    let rendered = schedule.render_target(target, summer).unwrap();
    assert_eq!(text(&rendered, "day"), "2026-03-30");
    assert_eq!(text(&rendered, "at"), "2026-03-30T00:30:00Z");
    assert_eq!(text(&rendered, "local"), "run 2026-03-30T02:30:00+02:00");
    assert_eq!(rendered.parameters["deep"], ParameterValue::Boolean(true));
    // Late on 28 March UTC is already 29 March in Berlin (CET, +01:00).
    let winter = SlotValues {
        at: Utc.with_ymd_and_hms(2026, 3, 28, 23, 30, 0).unwrap(),
        zone,
    };
    let rendered = schedule.render_target(target, winter).unwrap();
    assert_eq!(text(&rendered, "day"), "2026-03-29");
    assert_eq!(text(&rendered, "local"), "run 2026-03-29T00:30:00+01:00");
}

#[test]
fn unknown_and_chain_variables_in_schedule_parameters_are_refused_by_check() {
    let source = r#"
[[schedule]]
name = "nightly"
cron = "0 2 * * *"
timezone = "UTC"
target = { project = "gh/acme/api", branch = "main", parameters = { date = "{{ date }}", sha = "{{ revision }}", ok = "{{ slot.date }}" } }
"#;
    let found = summary(source);
    assert!(
        has(
            &found,
            6,
            "schedule[0].target.parameters.date",
            "unknown template variable `date` (known: slot.utc, slot.local, slot.date)"
        ),
        "{found:?}"
    );
    assert!(
        has(
            &found,
            6,
            "schedule[0].target.parameters.sha",
            "`revision` has no value in schedule parameters"
        ),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn slot_variables_are_refused_in_chain_actions() {
    let source = r#"
[[chain]]
name = "after-build"
when = { project = "gh/acme/api", workflow = "build", branch = "main" }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"
parameters = { day = "{{ slot.date }}" }
"#;
    let found = summary(source);
    assert!(
        found
            .iter()
            .any(|(_, field, message)| field.ends_with("parameters.day")
                && message.contains("`slot.date` has no value in chain actions")),
        "{found:?}"
    );
}
