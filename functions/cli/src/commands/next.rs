//! `next`: the next fire times of the schedules, in each schedule's zone and in UTC, with the
//! slots that daylight-saving time moved or repeated marked. A schedule with fewer fire times
//! than asked for within the look-ahead says so.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use chrono::{DateTime, Timelike, Utc};
use serde_json::{Value, json};
use shared::config::{ConfigError, ScheduleSpec, load_file};
use shared::triggers::scheduled::calendar::{
    LOOK_AHEAD_YEARS, ScheduleSlot, ScheduleTiming, SlotKind, look_ahead_end, next_slots,
};
use shared::triggers::scheduled::{target_at, target_identity};

#[derive(clap::Args)]
pub struct NextArgs {
    /// Only this schedule (default: every schedule in the file).
    #[arg(long)]
    schedule: Option<String>,
    /// How many fire times to show per schedule.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    count: u16,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Show fire times after this instant (RFC 3339, e.g. 2026-03-28T00:00:00Z) instead of now.
    #[arg(long, value_parser = parse_instant)]
    after: Option<DateTime<Utc>>,
    /// Under each fire time, the pipeline parameters each target would send then
    /// (`{{ slot.* }}` rendered in the schedule's zone, `workflow` applied).
    #[arg(long)]
    show_parameters: bool,
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.to_utc())
        .map_err(|error| format!("`{text}` is not an RFC 3339 instant ({error})"))
}

/// One schedule and its upcoming slots.
struct Preview<'a> {
    spec: &'a ScheduleSpec,
    /// Per slot (same order as `slots`), per target: identity and the parameters it sends.
    parameters: Option<Vec<Vec<(String, String)>>>,
    timing: ScheduleTiming,
    slots: Vec<ScheduleSlot>,
    /// How many slots were asked for; `slots` is shorter when the look-ahead has fewer.
    requested: usize,
    /// Where the look-ahead ended.
    horizon: DateTime<Utc>,
}

impl Preview<'_> {
    /// What to say when the look-ahead holds fewer slots than were asked for.
    fn shortfall(&self) -> Option<String> {
        let found = self.slots.len();
        (found < self.requested).then(|| {
            format!(
                "only {found} of the {} fire times asked for before {} (`next` looks {LOOK_AHEAD_YEARS} years ahead)",
                self.requested,
                self.horizon.format("%Y-%m-%d %H:%M UTC")
            )
        })
    }
}

pub fn run(config: &Path, args: NextArgs) -> anyhow::Result<ExitCode> {
    let triggers = match load_file(config) {
        Ok(triggers) => triggers,
        Err(ConfigError::Invalid(issues)) => {
            for issue in &issues {
                eprintln!("{issue}");
            }
            eprintln!("{}: {} problem(s)", config.display(), issues.len());
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error.into()),
    };
    let after = args.after.unwrap_or_else(Utc::now);
    let selected: Vec<&ScheduleSpec> = match &args.schedule {
        Some(name) => match triggers.schedule.iter().find(|spec| &spec.name == name) {
            Some(spec) => vec![spec],
            None => {
                let known: Vec<&str> = triggers.schedule.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "no schedule named `{name}` in {} (schedules: {})",
                    config.display(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                );
            }
        },
        None => triggers.schedule.iter().collect(),
    };
    let mut previews = preview(&selected, after, usize::from(args.count))?;
    if args.show_parameters {
        for preview in &mut previews {
            preview.parameters = Some(slot_parameters(preview, &triggers.circleci));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&render_json(&previews))?);
    } else if previews.is_empty() {
        println!("{}: no schedules", config.display());
    } else {
        print!("{}", render_table(&previews));
    }
    Ok(ExitCode::SUCCESS)
}

fn preview<'a>(
    specs: &[&'a ScheduleSpec],
    after: DateTime<Utc>,
    count: usize,
) -> anyhow::Result<Vec<Preview<'a>>> {
    specs
        .iter()
        .map(|spec| {
            // The file was validated, so this only fails if validation and parsing disagree.
            let timing = spec.timing()?;
            let slots = next_slots(&timing, after, count);
            Ok(Preview {
                spec,
                parameters: None,
                timing,
                slots,
                requested: count,
                horizon: look_ahead_end(after),
            })
        })
        .collect()
}

/// What each target of the schedule sends at each slot, as `target: k=v k=v`.
fn slot_parameters(
    preview: &Preview<'_>,
    settings: &shared::config::CircleCiSettings,
) -> Vec<Vec<(String, String)>> {
    preview
        .slots
        .iter()
        .map(|slot| {
            preview
                .spec
                .targets()
                .into_iter()
                .map(|target| {
                    let identity = target_identity(target);
                    let text = match target_at(preview.spec, target, settings, slot.at) {
                        Ok(resolved) if resolved.parameters.is_empty() => {
                            "(no parameters)".to_owned()
                        }
                        Ok(resolved) => resolved
                            .parameters
                            .iter()
                            .map(|(name, value)| format!("{name}={}", parameter_text(value)))
                            .collect::<Vec<_>>()
                            .join(" "),
                        Err(reason) => format!("cannot render: {reason}"),
                    };
                    (identity, text)
                })
                .collect()
        })
        .collect()
}

fn parameter_text(value: &shared::config::ParameterValue) -> String {
    match value {
        shared::config::ParameterValue::String(text) => text.clone(),
        shared::config::ParameterValue::Integer(number) => number.to_string(),
        shared::config::ParameterValue::Boolean(flag) => flag.to_string(),
    }
}

/// The explanation printed next to a slot that DST moved or repeated.
fn note(slot: &ScheduleSlot) -> Option<String> {
    match slot.kind {
        SlotKind::ShiftedFromGap if slot.cron_times > 1 => Some(format!(
            "{} does not exist (clocks spring forward): fired at transition, once for {} times of the expression",
            slot.local.format("%H:%M"),
            slot.cron_times
        )),
        SlotKind::ShiftedFromGap => Some(format!(
            "{} does not exist (clocks spring forward): fired at transition",
            slot.local.format("%H:%M")
        )),
        kind => kind.note().map(str::to_owned),
    }
}

fn clock_format(instant: DateTime<Utc>) -> &'static str {
    if instant.second() == 0 {
        "%H:%M"
    } else {
        "%H:%M:%S"
    }
}

fn local_text(preview: &Preview<'_>, slot: &ScheduleSlot) -> String {
    let local = slot.local_in(preview.timing.zone);
    local
        .format(&format!("%a %Y-%m-%d {} %Z", clock_format(slot.at)))
        .to_string()
}

fn utc_text(slot: &ScheduleSlot) -> String {
    slot.at
        .format(&format!("%Y-%m-%d {} UTC", clock_format(slot.at)))
        .to_string()
}

fn render_table(previews: &[Preview<'_>]) -> String {
    let mut out = String::new();
    for (index, preview) in previews.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let spec = preview.spec;
        let kind = if preview.timing.cron.is_fixed_time() {
            "fixed-time"
        } else {
            "wildcard"
        };
        let _ = write!(
            out,
            "{}  `{}`  {}  ({kind})",
            spec.name,
            preview.timing.cron,
            preview.timing.zone.name()
        );
        if !spec.enabled {
            out.push_str("  DISABLED: these times do not fire");
        }
        out.push('\n');
        if preview.slots.is_empty() {
            let _ = writeln!(
                out,
                "  no fire times in the next {LOOK_AHEAD_YEARS} years (before {})",
                preview.horizon.format("%Y-%m-%d %H:%M UTC")
            );
            continue;
        }
        let rows: Vec<[String; 3]> = preview
            .slots
            .iter()
            .map(|slot| {
                [
                    local_text(preview, slot),
                    utc_text(slot),
                    note(slot).unwrap_or_default(),
                ]
            })
            .collect();
        let local_header = format!("LOCAL ({})", preview.timing.zone.name());
        let local_width = rows
            .iter()
            .map(|row| row[0].chars().count())
            .chain([local_header.chars().count()])
            .max()
            .unwrap_or_default();
        let utc_width = rows
            .iter()
            .map(|row| row[1].chars().count())
            .chain([3])
            .max()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {local_header:<local_width$}  {:<utc_width$}  NOTE",
            "UTC"
        );
        for (position, [local, utc, note]) in rows.into_iter().enumerate() {
            let line = format!("  {local:<local_width$}  {utc:<utc_width$}  {note}");
            out.push_str(line.trim_end());
            out.push('\n');
            let targets = preview.parameters.as_ref().and_then(|p| p.get(position));
            for (target, parameters) in targets.into_iter().flatten() {
                let _ = writeln!(out, "      {target}: {parameters}");
            }
        }
        if let Some(shortfall) = preview.shortfall() {
            let _ = writeln!(out, "  {shortfall}");
        }
    }
    out
}

fn render_json(previews: &[Preview<'_>]) -> Value {
    Value::Array(
        previews
            .iter()
            .map(|preview| {
                let slots: Vec<Value> = preview
                    .slots
                    .iter()
                    .enumerate()
                    .map(|(position, slot)| {
                        let parameters = preview.parameters.as_ref().and_then(|p| p.get(position)).map(|targets| {
                            targets
                                .iter()
                                .map(|(target, text)| json!({"target": target, "parameters": text}))
                                .collect::<Vec<_>>()
                        });
                        let mut entry = json!({
                            "at": slot.id(),
                            "local": slot.local_in(preview.timing.zone).to_rfc3339(),
                            "nominal_local": slot.local.format("%Y-%m-%dT%H:%M:%S").to_string(),
                            "kind": slot.kind.as_str(),
                            "note": note(slot),
                        });
                        if let Some(parameters) = parameters {
                            entry["parameters"] = Value::Array(parameters);
                        }
                        entry
                    })
                    .collect();
                json!({
                    "schedule": preview.spec.name,
                    "cron": preview.timing.cron.as_str(),
                    "timezone": preview.timing.zone.name(),
                    "fixed_time": preview.timing.cron.is_fixed_time(),
                    "enabled": preview.spec.enabled,
                    "slots": slots,
                    "requested": preview.requested,
                    "look_ahead_end": preview.horizon.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "shortfall": preview.shortfall(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(source: &str) -> shared::config::TriggersFile {
        shared::config::parse_str(source, "triggers.toml").unwrap()
    }

    const BERLIN_AND_LORD_HOWE: &str = r#"
[[schedule]]
name = "nightly"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/api", branch = "main" }

[[schedule]]
name = "quarterly-hour"
cron = "*/15 * * * *"
timezone = "Australia/Lord_Howe"
enabled = false
target = { project = "gh/acme/api", branch = "main" }
"#;

    fn instant(text: &str) -> DateTime<Utc> {
        parse_instant(text).unwrap()
    }

    /// A file with one schedule, `cron` in `zone`.
    fn one_schedule(cron: &str, zone: &str) -> shared::config::TriggersFile {
        file(&format!(
            r#"
[[schedule]]
name = "one"
cron = "{cron}"
timezone = "{zone}"
target = {{ project = "gh/acme/api", branch = "main" }}
"#
        ))
    }

    /// The previews of every schedule of `triggers`.
    fn previews_of<'a>(
        triggers: &'a shared::config::TriggersFile,
        after: &str,
        count: usize,
    ) -> Vec<Preview<'a>> {
        let specs: Vec<&ScheduleSpec> = triggers.schedule.iter().collect();
        preview(&specs, instant(after), count).unwrap()
    }

    #[test]
    fn the_table_marks_the_transition_and_shows_both_clocks() {
        let triggers = file(BERLIN_AND_LORD_HOWE);
        let specs: Vec<&ScheduleSpec> = triggers.schedule.iter().take(1).collect();
        let previews = preview(&specs, instant("2026-03-27T12:00:00Z"), 3).unwrap();
        let table = render_table(&previews);
        let expected = "\
nightly  `30 2 * * *`  Europe/Berlin  (fixed-time)
  LOCAL (Europe/Berlin)      UTC                   NOTE
  Sat 2026-03-28 02:30 CET   2026-03-28 01:30 UTC
  Sun 2026-03-29 03:00 CEST  2026-03-29 01:00 UTC  02:30 does not exist (clocks spring forward): fired at transition
  Mon 2026-03-30 02:30 CEST  2026-03-30 00:30 UTC
";
        assert_eq!(table, expected);
    }

    #[test]
    fn show_parameters_renders_each_slot_in_the_zone_under_its_row() {
        let triggers = file(
            r#"
[[schedule]]
name = "report"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/api", branch = "main", workflow = "report", parameters = { day = "{{ slot.date }}", at = "{{ slot.local }}" } }
"#,
        );
        let mut previews = previews_of(&triggers, "2026-03-28T12:00:00Z", 2);
        previews[0].parameters = Some(slot_parameters(&previews[0], &triggers.circleci));
        let expected = "\
report  `30 2 * * *`  Europe/Berlin  (fixed-time)
  LOCAL (Europe/Berlin)      UTC                   NOTE
  Sun 2026-03-29 03:00 CEST  2026-03-29 01:00 UTC  02:30 does not exist (clocks spring forward): fired at transition
      gh/acme/api@branch:main/report: at=2026-03-29T03:00:00+02:00 day=2026-03-29 run-workflow=report
  Mon 2026-03-30 02:30 CEST  2026-03-30 00:30 UTC
      gh/acme/api@branch:main/report: at=2026-03-30T02:30:00+02:00 day=2026-03-30 run-workflow=report
";
        assert_eq!(render_table(&previews), expected);
        let json = render_json(&previews);
        assert_eq!(
            json[0]["slots"][0]["parameters"][0]["parameters"],
            "at=2026-03-29T03:00:00+02:00 day=2026-03-29 run-workflow=report"
        );
        // Without the flag the JSON has no `parameters` key.
        previews[0].parameters = None;
        assert!(
            render_json(&previews)[0]["slots"][0]
                .get("parameters")
                .is_none()
        );
    }

    #[test]
    fn the_table_marks_repeated_times_and_disabled_schedules() {
        let triggers = file(BERLIN_AND_LORD_HOWE);
        let specs: Vec<&ScheduleSpec> = triggers.schedule.iter().skip(1).collect();
        // Lord Howe falls back from +11 to +10:30 at 2026-04-04T15:00:00Z (02:00 -> 01:30).
        let previews = preview(&specs, instant("2026-04-04T14:20:00Z"), 5).unwrap();
        let table = render_table(&previews);
        assert!(table.starts_with(
            "quarterly-hour  `*/15 * * * *`  Australia/Lord_Howe  (wildcard)  DISABLED"
        ));
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), 5, "{table}");
        assert!(
            rows[0].contains("01:30 +11")
                && rows[0].ends_with("repeated hour: first occurrence, fires again"),
            "{table}"
        );
        assert!(
            rows[1].contains("01:45 +11") && rows[1].contains("2026-04-04 14:45 UTC"),
            "{table}"
        );
        assert!(
            rows[2].contains("01:30 +1030")
                && rows[2].ends_with("repeated hour: second occurrence"),
            "{table}"
        );
        assert!(
            rows[3].contains("01:45 +1030") && rows[3].contains("2026-04-04 15:15 UTC"),
            "{table}"
        );
        assert!(
            rows[4].contains("02:00 +1030") && rows[4].ends_with("UTC"),
            "{table}"
        );
    }

    #[test]
    fn json_carries_both_clocks_the_kind_and_the_note() {
        let triggers = file(BERLIN_AND_LORD_HOWE);
        let specs: Vec<&ScheduleSpec> = triggers.schedule.iter().collect();
        let previews = preview(&specs, instant("2026-10-24T12:00:00Z"), 2).unwrap();
        let value = render_json(&previews);
        let nightly = &value[0];
        assert_eq!(nightly["schedule"], "nightly");
        assert_eq!(nightly["fixed_time"], true);
        assert_eq!(nightly["enabled"], true);
        let first = &nightly["slots"][0];
        assert_eq!(first["at"], "2026-10-25T00:30:00Z");
        assert_eq!(first["local"], "2026-10-25T02:30:00+02:00");
        assert_eq!(first["nominal_local"], "2026-10-25T02:30:00");
        assert_eq!(first["kind"], "repeated_first_only");
        assert_eq!(first["note"], "repeated hour: first occurrence only");
        assert_eq!(nightly["slots"][1]["at"], "2026-10-26T01:30:00Z");
        assert_eq!(nightly["slots"][1]["note"], Value::Null);
        assert_eq!(value[1]["enabled"], false);
        assert_eq!(value[1]["slots"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn asking_for_more_than_the_look_ahead_holds_says_so() {
        let leap_day = one_schedule("0 2 29 2 *", "UTC");
        let previews = previews_of(&leap_day, "2026-11-28T00:00:00Z", 1000);
        // 2028 … 2124 (2100 is not a leap year): 24 leap days in the 100 × 366 days ahead.
        assert_eq!(previews[0].slots.len(), 24);
        let table = render_table(&previews);
        let last = table.lines().last().unwrap();
        assert_eq!(
            last,
            "  only 24 of the 1000 fire times asked for before 2127-02-12 00:00 UTC (`next` looks 100 years ahead)"
        );
        let value = render_json(&previews);
        assert_eq!(value[0]["requested"], 1000);
        assert_eq!(value[0]["look_ahead_end"], "2127-02-12T00:00:00Z");
        assert_eq!(value[0]["shortfall"], last.trim());

        // Asking for what exists adds nothing.
        let enough = previews_of(&leap_day, "2026-11-28T00:00:00Z", 24);
        assert!(!render_table(&enough).contains("fire times asked for"));
        assert_eq!(render_json(&enough)[0]["shortfall"], Value::Null);
    }

    #[test]
    fn a_spring_forward_merge_is_one_shifted_row_that_says_how_many_times_it_stands_for() {
        let gap = one_schedule("0,30 2,3 * * *", "Europe/Berlin");
        let previews = previews_of(&gap, "2026-03-28T12:00:00Z", 2);
        let value = render_json(&previews);
        let merged = &value[0]["slots"][0];
        assert_eq!(merged["at"], "2026-03-29T01:00:00Z");
        assert_eq!(merged["local"], "2026-03-29T03:00:00+02:00");
        assert_eq!(merged["nominal_local"], "2026-03-29T02:00:00");
        assert_eq!(merged["kind"], "shifted_from_gap");
        assert_eq!(
            merged["note"],
            "02:00 does not exist (clocks spring forward): fired at transition, once for 3 times of the expression"
        );
        assert_eq!(value[0]["slots"][1]["at"], "2026-03-29T01:30:00Z");
        assert_eq!(value[0]["slots"][1]["kind"], "normal");
    }

    #[test]
    fn instants_must_be_rfc3339() {
        assert!(parse_instant("2026-03-28T00:00:00+01:00").is_ok());
        let error = parse_instant("tomorrow").unwrap_err();
        assert!(
            error.starts_with("`tomorrow` is not an RFC 3339 instant"),
            "{error}"
        );
    }
}
