//! Standard five-field cron expressions (`minute hour day-of-month month day-of-week`), read
//! the way cronie/Vixie cron reads them.
//!
//! Besides the sets of values, the parser keeps the one piece of syntax that changes
//! meaning: whether a field's text starts with `*`. cronie uses it twice:
//! - a minute or hour field starting with `*` (`*`, `*/15`) makes the entry a *wildcard*
//!   entry for daylight-saving handling; otherwise it is a *fixed-time* entry
//!   (see `shared::schedule` for what each kind does at a transition);
//! - day-of-month and day-of-week: when neither starts with `*`, a day matches if **either**
//!   matches (`0 0 1,15 * MON` = the 1st, the 15th and every Monday); when one starts with `*`,
//!   both must match, so `*` in one field leaves only the other one counting (and, as in
//!   cronie, `*/2` in day-of-month with `MON` in day-of-week means odd days that are Mondays).
//!
//! Syntax: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b-c,*/n`; month
//! names `JAN`–`DEC` and day names `SUN`–`SAT` (any case, also in ranges); day-of-week `0`
//! and `7` are both Sunday, and a day-of-week range may end on Sunday (`FRI-SUN`). Not
//! accepted, with a reason: seconds or year fields, `@daily`-style macros, `?`, `L`, `W`, `#`,
//! a step on a single value (`5/15`: write `5-59/15`), backwards ranges.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

/// One of the five fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronField {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl CronField {
    const ALL: [CronField; 5] = [
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        }
    }

    /// Inclusive bounds of the values written in the field (day-of-week allows 7 = Sunday).
    fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }

    /// Names accepted instead of numbers, and the number of the first name.
    fn names(self) -> Option<(&'static [&'static str], u32)> {
        const MONTHS: [&str; 12] = [
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ];
        const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
        match self {
            CronField::Month => Some((&MONTHS, 1)),
            CronField::DayOfWeek => Some((&DAYS, 0)),
            _ => None,
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a cron expression was rejected; the message names the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("expected 5 fields (minute hour day-of-month month day-of-week), found {found}{hint}")]
    FieldCount { found: usize, hint: &'static str },
    #[error("`{text}`-style macros are not supported: write the 5 fields (e.g. `0 0 * * *`)")]
    Macro { text: String },
    #[error("{field} field `{text}`: {reason}")]
    Field {
        field: CronField,
        text: String,
        reason: String,
    },
    #[error("never fires: {reason}")]
    NeverFires { reason: String },
}

/// A set of small values as a bit mask (bit `n` = value `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ValueSet(u64);

impl ValueSet {
    fn contains(self, value: u32) -> bool {
        value < 64 && self.0 & (1 << value) != 0
    }

    fn insert(&mut self, value: u32) {
        self.0 |= 1 << value;
    }

    fn values(self) -> impl Iterator<Item = u32> {
        (0..64).filter(move |value| self.contains(*value))
    }
}

/// A parsed five-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    /// The fields as written, joined by single spaces.
    text: String,
    minutes: ValueSet,
    hours: ValueSet,
    days_of_month: ValueSet,
    months: ValueSet,
    /// 0 = Sunday … 6 = Saturday (7 is folded into 0).
    days_of_week: ValueSet,
    minute_starts_with_star: bool,
    hour_starts_with_star: bool,
    day_of_month_starts_with_star: bool,
    day_of_week_starts_with_star: bool,
}

impl FromStr for CronExpr {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if let [single] = fields.as_slice()
            && single.starts_with('@')
        {
            return Err(CronError::Macro {
                text: (*single).to_owned(),
            });
        }
        let [minute, hour, day_of_month, month, day_of_week] = fields.as_slice() else {
            let hint = match fields.len() {
                6 | 7 => " (seconds and year fields are not supported)",
                _ => "",
            };
            return Err(CronError::FieldCount {
                found: fields.len(),
                hint,
            });
        };
        let mut sets = [ValueSet::default(); 5];
        for ((set, field), field_text) in sets.iter_mut().zip(CronField::ALL).zip([
            minute,
            hour,
            day_of_month,
            month,
            day_of_week,
        ]) {
            *set = parse_field(field, field_text)?;
        }
        let [minutes, hours, days_of_month, months, mut days_of_week] = sets;
        if days_of_week.contains(7) {
            days_of_week.0 &= !(1 << 7);
            days_of_week.insert(0);
        }
        let expr = CronExpr {
            text: fields.join(" "),
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            minute_starts_with_star: minute.starts_with('*'),
            hour_starts_with_star: hour.starts_with('*'),
            day_of_month_starts_with_star: day_of_month.starts_with('*'),
            day_of_week_starts_with_star: day_of_week.starts_with('*'),
        };
        expr.check_fires()?;
        Ok(expr)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl CronExpr {
    /// The expression as written, fields joined by single spaces.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Neither the minute nor the hour field starts with `*`: cronie's fixed-time entry
    /// (a skipped local time fires once at the transition, a repeated one fires once).
    /// Otherwise a wildcard entry (follows the wall clock: skipped slots don't fire,
    /// repeated slots fire again).
    pub fn is_fixed_time(&self) -> bool {
        !self.minute_starts_with_star && !self.hour_starts_with_star
    }

    /// The minutes of an hour this expression fires at, ascending.
    pub fn minutes(&self) -> impl Iterator<Item = u32> + '_ {
        self.minutes.values()
    }

    /// The hours of a day this expression fires at, ascending.
    pub fn hours(&self) -> impl Iterator<Item = u32> + '_ {
        self.hours.values()
    }

    /// Whether the expression fires at `hour:minute` (on a matching day).
    pub fn matches_time(&self, hour: u32, minute: u32) -> bool {
        self.hours.contains(hour) && self.minutes.contains(minute)
    }

    /// Whether `date` is a day this expression fires on (month, then the day-of-month /
    /// day-of-week rule described in the module docs).
    pub fn matches_date(&self, date: NaiveDate) -> bool {
        if !self.months.contains(date.month()) {
            return false;
        }
        let day_of_month = self.days_of_month.contains(date.day());
        let day_of_week = self
            .days_of_week
            .contains(date.weekday().num_days_from_sunday());
        if self.day_of_month_starts_with_star || self.day_of_week_starts_with_star {
            day_of_month && day_of_week
        } else {
            day_of_month || day_of_week
        }
    }

    /// The first matching date in `from..=until`, skipping whole months that do not match,
    /// so rare dates (`29 2`) are found in a few hundred steps per century.
    pub fn next_date(&self, from: NaiveDate, until: NaiveDate) -> Option<NaiveDate> {
        let mut date = from;
        while date <= until {
            if !self.months.contains(date.month()) {
                date = first_of_next_month(date)?;
                continue;
            }
            if self.matches_date(date) {
                return Some(date);
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// A cron that can never fire (`0 0 30 2 *`) is an error, not a silent no-op.
    fn check_fires(&self) -> Result<(), CronError> {
        let days_of_month_decide =
            self.day_of_month_starts_with_star || self.day_of_week_starts_with_star;
        if !days_of_month_decide {
            // Either field may match, and every weekday occurs in every month.
            return Ok(());
        }
        // Both must match. Every (month, day) pair that exists falls on every weekday in
        // some year (29 February included, over the 28-year cycle), so only the calendar
        // can make it impossible.
        let possible = self.months.values().any(|month| {
            let longest = longest_month(month);
            self.days_of_month.values().any(|day| day <= longest)
        });
        if possible {
            Ok(())
        } else {
            let days: Vec<String> = self.days_of_month.values().map(|d| d.to_string()).collect();
            let months: Vec<&str> = self
                .months
                .values()
                .filter_map(|m| {
                    CronField::Month
                        .names()
                        .map(|(names, _)| names[m as usize - 1])
                })
                .collect();
            Err(CronError::NeverFires {
                reason: format!(
                    "day-of-month {} does not occur in {}",
                    days.join(","),
                    months.join(",")
                ),
            })
        }
    }
}

/// The most days a month can have (February: 29).
fn longest_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    let (year, month) = if date.month() == 12 {
        (date.year().checked_add(1)?, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)
}

fn parse_field(field: CronField, text: &str) -> Result<ValueSet, CronError> {
    let fail = |part: &str, reason: String| CronError::Field {
        field,
        text: part.to_owned(),
        reason,
    };
    let (min, max) = field.bounds();
    let mut set = ValueSet::default();
    for part in text.split(',') {
        if part.is_empty() {
            return Err(fail(text, "empty element in a list".into()));
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (
                range,
                Some(parse_step(field, step).map_err(|r| fail(part, r))?),
            ),
            None => (part, None),
        };
        let (start, end) = if range == "*" {
            (min, max)
        } else if let Some((start, end)) = range.split_once('-') {
            let start = parse_value(field, start).map_err(|r| fail(part, r))?;
            let mut end = parse_value(field, end).map_err(|r| fail(part, r))?;
            if field == CronField::DayOfWeek && end == 0 && start > 0 {
                // `FRI-SUN`: Sunday closing a range is day 7.
                end = 7;
            }
            if start > end {
                return Err(fail(
                    part,
                    format!("the range goes backwards ({start} is after {end})"),
                ));
            }
            (start, end)
        } else {
            let value = parse_value(field, range).map_err(|r| fail(part, r))?;
            if step.is_some() {
                return Err(fail(
                    part,
                    format!("a step needs a range: write `{value}-{max}/…` or `*/…`"),
                ));
            }
            (value, value)
        };
        let step = step.unwrap_or(1);
        let mut value = start;
        while value <= end {
            set.insert(value);
            value += step;
        }
    }
    Ok(set)
}

fn parse_step(field: CronField, text: &str) -> Result<u32, String> {
    let (min, max) = field.bounds();
    let span = max - min;
    match text.parse::<u32>() {
        Ok(step) if (1..=span).contains(&step) => Ok(step),
        Ok(step) => Err(format!("step {step} is outside 1-{span}")),
        Err(_) if text.is_empty() => Err("missing step after `/`".into()),
        Err(_) => Err(format!("step `{text}` is not a number")),
    }
}

fn parse_value(field: CronField, text: &str) -> Result<u32, String> {
    let (min, max) = field.bounds();
    if text.is_empty() {
        return Err("missing number".into());
    }
    if text.chars().all(|c| c.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(format!("{text} is out of range {min}-{max}")),
        };
    }
    if let Some((names, first)) = field.names()
        && let Some(index) = names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(text))
    {
        return u32::try_from(index)
            .map(|index| index + first)
            .map_err(|_| format!("`{text}` is not a name"));
    }
    let special = match text {
        "?" => " (`?` is not standard cron: use `*`)",
        _ if text.contains(['L', 'W', '#']) => " (`L`, `W` and `#` are not standard cron)",
        _ => "",
    };
    Err(match field.names() {
        Some((names, _)) => format!(
            "`{text}` is not a number or a name ({}-{}){special}",
            names[0],
            names[names.len() - 1]
        ),
        None => format!("`{text}` is not a number{special}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cron(text: &str) -> CronExpr {
        text.parse().unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn error(text: &str) -> String {
        text.parse::<CronExpr>().unwrap_err().to_string()
    }

    #[test]
    fn steps_ranges_and_lists_expand() {
        let every_quarter = cron("*/15 * * * *");
        assert_eq!(every_quarter.minutes().collect::<Vec<_>>(), [0, 15, 30, 45]);
        assert_eq!(every_quarter.hours().count(), 24);
        let mixed = cron("5,10-20/5,50-59/4 9-17/4 * * *");
        assert_eq!(
            mixed.minutes().collect::<Vec<_>>(),
            [5, 10, 15, 20, 50, 54, 58]
        );
        assert_eq!(mixed.hours().collect::<Vec<_>>(), [9, 13, 17]);
        assert!(mixed.matches_time(13, 54));
        assert!(!mixed.matches_time(12, 54));
        assert_eq!(cron("0  2 * * *").as_str(), "0 2 * * *");
    }

    #[test]
    fn names_are_case_insensitive_and_seven_is_sunday() {
        let weekdays = cron("0 9 * jan-MAR Mon-fri");
        assert!(weekdays.matches_date(date(2026, 3, 2))); // Monday
        assert!(!weekdays.matches_date(date(2026, 3, 1))); // Sunday
        assert!(!weekdays.matches_date(date(2026, 4, 6))); // April
        for sunday in ["0 0 * * 7", "0 0 * * 0", "0 0 * * SUN", "0 0 * * sun"] {
            let expr = cron(sunday);
            assert!(expr.matches_date(date(2026, 11, 29)), "{sunday}");
            assert!(!expr.matches_date(date(2026, 11, 28)), "{sunday}");
        }
        let weekend = cron("0 0 * * FRI-SUN");
        assert_eq!(weekend, cron("0 0 * * 5-7").with_text("0 0 * * FRI-SUN"));
        assert!(weekend.matches_date(date(2026, 11, 29)));
        assert!(!weekend.matches_date(date(2026, 11, 26)));
        assert!(cron("0 0 * * */7").matches_date(date(2026, 11, 29)));
    }

    impl CronExpr {
        fn with_text(mut self, text: &str) -> Self {
            self.text = text.to_owned();
            self
        }
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 1st and 15th, and every Monday.
        let either = cron("0 0 1,15 * MON");
        assert!(either.matches_date(date(2026, 12, 1))); // Tuesday the 1st
        assert!(either.matches_date(date(2026, 12, 7))); // Monday
        assert!(either.matches_date(date(2026, 12, 15)));
        assert!(!either.matches_date(date(2026, 12, 8)));
        // `*` in day-of-week: only day-of-month counts.
        let dom_only = cron("0 0 13 * *");
        assert!(dom_only.matches_date(date(2026, 11, 13)));
        assert!(!dom_only.matches_date(date(2026, 11, 14)));
        // `*` in day-of-month: only day-of-week counts.
        let dow_only = cron("0 0 * * 5");
        assert!(dow_only.matches_date(date(2026, 11, 27)));
        assert!(!dow_only.matches_date(date(2026, 11, 13).pred_opt().unwrap()));
        // cronie: a field starting with `*` (here `*/2`) makes both fields required.
        let both = cron("0 0 */2 * MON");
        assert!(both.matches_date(date(2026, 12, 7))); // Monday the 7th (odd)
        assert!(!both.matches_date(date(2026, 12, 14))); // Monday the 14th (even)
        assert!(!both.matches_date(date(2026, 12, 9))); // odd, Wednesday
    }

    #[test]
    fn fixed_time_means_neither_minute_nor_hour_starts_with_star() {
        assert!(cron("30 2 * * *").is_fixed_time());
        assert!(cron("0,30 1-3 * * *").is_fixed_time());
        assert!(!cron("*/15 2 * * *").is_fixed_time());
        assert!(!cron("0 * * * *").is_fixed_time());
        assert!(!cron("0 */2 * * *").is_fixed_time());
    }

    #[test]
    fn next_date_finds_leap_days_without_walking_every_day() {
        let leap = cron("0 2 29 2 *");
        assert_eq!(
            leap.next_date(date(2026, 11, 28), date(2200, 1, 1)),
            Some(date(2028, 2, 29))
        );
        // 2100 is not a leap year.
        assert_eq!(
            leap.next_date(date(2096, 3, 1), date(2200, 1, 1)),
            Some(date(2104, 2, 29))
        );
        assert_eq!(leap.next_date(date(2026, 11, 28), date(2027, 12, 31)), None);
        assert_eq!(
            cron("0 0 13 * FRI").next_date(date(2026, 11, 14), date(2030, 1, 1)),
            Some(date(2026, 11, 20)),
            "either rule: the next Friday comes first"
        );
        // Days 1, 11, 21, 31 that are Fridays (`*/10` makes both fields required).
        assert_eq!(
            cron("0 0 */10 * FRI").next_date(date(2026, 1, 1), date(2030, 1, 1)),
            Some(date(2026, 5, 1))
        );
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        assert_eq!(
            error("61 * * * *"),
            "minute field `61`: 61 is out of range 0-59"
        );
        assert_eq!(
            error("0 24 * * *"),
            "hour field `24`: 24 is out of range 0-23"
        );
        assert_eq!(
            error("0 0 0 * *"),
            "day-of-month field `0`: 0 is out of range 1-31"
        );
        assert_eq!(
            error("0 0 * 13 *"),
            "month field `13`: 13 is out of range 1-12"
        );
        assert_eq!(
            error("0 0 * * 8"),
            "day-of-week field `8`: 8 is out of range 0-7"
        );
        assert_eq!(
            error("0 0 * FOO *"),
            "month field `FOO`: `FOO` is not a number or a name (JAN-DEC)"
        );
        assert_eq!(
            error("*/0 * * * *"),
            "minute field `*/0`: step 0 is outside 1-59"
        );
        assert_eq!(
            error("*/60 * * * *"),
            "minute field `*/60`: step 60 is outside 1-59"
        );
        assert_eq!(
            error("5/15 * * * *"),
            "minute field `5/15`: a step needs a range: write `5-59/…` or `*/…`"
        );
        assert_eq!(
            error("0 5-2 * * *"),
            "hour field `5-2`: the range goes backwards (5 is after 2)"
        );
        assert_eq!(
            error("0 1,,2 * * *"),
            "hour field `1,,2`: empty element in a list"
        );
        assert_eq!(
            error("0 0 ? * *"),
            "day-of-month field `?`: `?` is not a number (`?` is not standard cron: use `*`)"
        );
        assert_eq!(
            error("0 0 L * *"),
            "day-of-month field `L`: `L` is not a number (`L`, `W` and `#` are not standard cron)"
        );
        assert_eq!(
            error("0 0 * * *  *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), found 6 (seconds and year fields are not supported)"
        );
        assert_eq!(
            error(""),
            "expected 5 fields (minute hour day-of-month month day-of-week), found 0"
        );
        assert_eq!(
            error("@daily"),
            "`@daily`-style macros are not supported: write the 5 fields (e.g. `0 0 * * *`)"
        );
        assert_eq!(error("-1 * * * *"), "minute field `-1`: missing number");
    }

    #[test]
    fn impossible_dates_are_rejected() {
        assert_eq!(
            error("0 0 30 2 *"),
            "never fires: day-of-month 30 does not occur in FEB"
        );
        assert_eq!(
            error("0 0 31 4,6,9,11 *"),
            "never fires: day-of-month 31 does not occur in APR,JUN,SEP,NOV"
        );
        // Possible: 29 February exists in leap years; with day-of-week set, either may match.
        assert!("0 0 29 2 *".parse::<CronExpr>().is_ok());
        assert!("0 0 30 2 MON".parse::<CronExpr>().is_ok());
    }
}
