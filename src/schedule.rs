//! Cron schedules for scheduled pushes, with classic crontab(5) meaning.
//!
//! A push may carry `schedule: "0 8 * * 1"`. Users write crontab(5) lines and
//! expect them to mean exactly what crontab(5) says. The `cron` crate that does
//! the date arithmetic speaks a different dialect: it wants a seconds field
//! first, numbers weekdays Quartz-style (1 = Sunday … 7 = Saturday), rejects
//! five-field lines, and ANDs day-of-month with day-of-week. Handing it a
//! user's line unchanged would silently shift every weekday by one.
//!
//! So this module parses the expression itself, field by field, into explicit
//! sets of values, and only then renders expressions for the `cron` crate in
//! which every field is an explicit list (weekdays as `sun`, `mon`, … names),
//! leaving no numbering trap. The crontab rule "if both day-of-month and
//! day-of-week are restricted, either one matching is enough" is implemented by
//! keeping two `cron` schedules and taking the union of their fire times.
//!
//! Accepted forms (pushwerk numbers weekdays like crontab in **every** form:
//! 0 or 7 = Sunday, 1 = Monday … 6 = Saturday):
//!
//! * 5 fields, `min hour dom month dow` (crontab(5)); the second is 0.
//! * 6 or 7 fields, `sec min hour dom month dow [year]`.
//! * `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//!   `@hourly` with their crontab meanings (`@weekly` = Sunday 00:00).
//!
//! All times are UTC for now; the evaluation is written over a generic
//! [`chrono::TimeZone`] so that a per-push timezone can be added later.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// Latest year the `cron` crate can produce; nothing fires after it.
const LAST_YEAR: u32 = 2100;
/// Earliest year the `cron` crate knows about.
const FIRST_YEAR: u32 = 1970;

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field of a schedule expression.
///
/// Exists so that errors can say precisely which field is wrong and what it
/// accepts, whatever form (5, 6 or 7 fields) the expression had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScheduleField {
    /// Seconds, 0-59 (only in the 6/7-field form; 0 otherwise).
    Second,
    /// Minutes, 0-59.
    Minute,
    /// Hours, 0-23.
    Hour,
    /// Day of the month, 1-31.
    DayOfMonth,
    /// Month, 1-12 or `jan`-`dec`.
    Month,
    /// Day of the week, 0-7 (0 and 7 = Sunday) or `sun`-`sat`.
    DayOfWeek,
    /// Year, 1970-2100 (only in the 7-field form).
    Year,
}

impl ScheduleField {
    fn name(self) -> &'static str {
        match self {
            ScheduleField::Second => "second",
            ScheduleField::Minute => "minute",
            ScheduleField::Hour => "hour",
            ScheduleField::DayOfMonth => "day-of-month",
            ScheduleField::Month => "month",
            ScheduleField::DayOfWeek => "day-of-week",
            ScheduleField::Year => "year",
        }
    }

    /// Inclusive bounds of the numbers the user may write.
    fn bounds(self) -> (u32, u32) {
        match self {
            ScheduleField::Second | ScheduleField::Minute => (0, 59),
            ScheduleField::Hour => (0, 23),
            ScheduleField::DayOfMonth => (1, 31),
            ScheduleField::Month => (1, 12),
            ScheduleField::DayOfWeek => (0, 7),
            ScheduleField::Year => (FIRST_YEAR, LAST_YEAR),
        }
    }

    /// The valid range as shown in error messages.
    fn range_text(self) -> &'static str {
        match self {
            ScheduleField::Second | ScheduleField::Minute => "0-59",
            ScheduleField::Hour => "0-23",
            ScheduleField::DayOfMonth => "1-31",
            ScheduleField::Month => "1-12",
            ScheduleField::DayOfWeek => "0-7 (0 and 7 = Sunday)",
            ScheduleField::Year => "1970-2100",
        }
    }

    /// What a single value of this field may look like.
    fn expected(self) -> &'static str {
        match self {
            ScheduleField::Second | ScheduleField::Minute => "a number 0-59",
            ScheduleField::Hour => "a number 0-23",
            ScheduleField::DayOfMonth => "a number 1-31",
            ScheduleField::Month => "a number 1-12 or a month name jan, feb, ..., dec",
            ScheduleField::DayOfWeek => {
                "a number 0-7 (0 and 7 = Sunday, 1 = Monday) or a day name sun, mon, tue, wed, thu, fri, sat"
            }
            ScheduleField::Year => "a year 1970-2100",
        }
    }

    /// Names usable instead of numbers, and the number of the first name.
    fn names(self) -> Option<(&'static [&'static str], u32)> {
        match self {
            ScheduleField::Month => Some((&MONTH_NAMES, 1)),
            ScheduleField::DayOfWeek => Some((&WEEKDAY_NAMES, 0)),
            _ => None,
        }
    }
}

impl fmt::Display for ScheduleField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a schedule expression was rejected.
///
/// Exists so that `pushwerk check` can tell the user what is wrong with a
/// `schedule:` line and what would have been accepted, instead of a generic
/// parse failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is empty or only whitespace.
    #[error(
        "empty schedule: expected 5 fields (min hour day-of-month month day-of-week), \
         6/7 with seconds first, or a shorthand such as @daily"
    )]
    Empty,
    /// The expression has the wrong number of whitespace-separated fields.
    #[error(
        "expected 5 fields (min hour day-of-month month day-of-week) or 6/7 with seconds first, \
         found {found}"
    )]
    FieldCount {
        /// How many fields were found.
        found: usize,
    },
    /// An `@name` shorthand that is not supported.
    #[error(
        "unknown schedule shorthand `{name}`: expected one of @yearly, @annually, @monthly, \
         @weekly, @daily, @midnight, @hourly"
    )]
    UnknownShorthand {
        /// The shorthand as written.
        name: String,
    },
    /// A shorthand followed by more text.
    #[error("schedule shorthand `{name}` must stand alone, but more text follows it")]
    ShorthandWithFields {
        /// The shorthand as written.
        name: String,
    },
    /// A number outside the field's range.
    #[error("{field} value {value} is out of range: expected {}", .field.range_text())]
    OutOfRange {
        /// The field the value belongs to.
        field: ScheduleField,
        /// The value as written.
        value: String,
    },
    /// Something that is neither a number, a valid name, `*`, a range, a
    /// list nor a step.
    #[error("{field}: `{token}` is not valid: expected {}", .field.expected())]
    InvalidToken {
        /// The field the token belongs to.
        field: ScheduleField,
        /// The offending text.
        token: String,
    },
    /// A range whose start lies after its end, such as `22-2`.
    #[error(
        "{field}: range `{token}` runs backwards: expected start <= end \
         (ranges do not wrap around; use a list such as `22-23,0-2`)"
    )]
    BackwardsRange {
        /// The field the range belongs to.
        field: ScheduleField,
        /// The range as written.
        token: String,
    },
    /// A step (`/n`) that is not a whole number of at least 1.
    #[error("{field}: step in `{token}` is not valid: expected `/` followed by a whole number of at least 1")]
    InvalidStep {
        /// The field the step belongs to.
        field: ScheduleField,
        /// The element as written.
        token: String,
    },
    /// A step after a single value, such as `5/15`, which crontab(5) does not
    /// define (implementations disagree about it).
    #[error(
        "{field}: step in `{token}` needs `*` or a range before the `/`, \
         e.g. `*/15` or `5-59/15`"
    )]
    StepWithoutRange {
        /// The field the step belongs to.
        field: ScheduleField,
        /// The element as written.
        token: String,
    },
    /// The underlying `cron` crate rejected the translated expression. This
    /// indicates a bug in this module, not in the user's input.
    #[error("internal error: could not build schedule `{expression}`: {message}")]
    Internal {
        /// The translated expression handed to the `cron` crate.
        expression: String,
        /// The `cron` crate's message.
        message: String,
    },
}

/// A parsed schedule: when a scheduled push fires.
///
/// Exists so that the rest of pushwerk never deals with cron dialects: it is
/// built from a crontab(5)-style expression and answers "when next?".
///
/// Weekdays are numbered like crontab in **every** form, including the 6/7
/// field form with seconds: 0 or 7 = Sunday, 1 = Monday … 6 = Saturday (not
/// Quartz's 1 = Sunday). When both day-of-month and day-of-week are
/// restricted (neither starts with `*`), the schedule fires when *either*
/// matches, as in crontab(5): `0 0 13 * 5` fires on every 13th and every
/// Friday.
///
/// Internally it holds one or more `cron::Schedule`s; its fire times are the
/// union of theirs. All times are UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    source: String,
    parts: Vec<cron::Schedule>,
    timezone: chrono_tz::Tz,
}

impl Schedule {
    /// Parses a schedule expression.
    ///
    /// Accepts `min hour dom month dow` (seconds = 0), `sec min hour dom month
    /// dow [year]`, and the shorthands `@yearly`/`@annually`, `@monthly`,
    /// `@weekly` (Sunday 00:00), `@daily`/`@midnight` and `@hourly`.
    ///
    /// Each field takes `*`, numbers, ranges `a-b`, lists `a,b`, and steps
    /// `*/n` or `a-b/n`. Months take `jan`-`dec` and weekdays `sun`-`sat`
    /// (case-insensitive) in place of numbers; a weekday range may end in
    /// `sun` (`fri-sun` = Friday to Sunday). Day-of-month and day-of-week also
    /// take `?`, meaning the same as `*`. Any input gives `Ok` or `Err`; this
    /// never panics.
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let spec = parse_spec(expr)?;
        let parts = spec
            .cron_expressions()
            .into_iter()
            .map(|cron_expr| {
                cron::Schedule::from_str(&cron_expr).map_err(|e| ScheduleError::Internal {
                    expression: cron_expr.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule {
            source: expr.to_string(),
            parts,
            timezone: chrono_tz::UTC,
        })
    }

    /// The same schedule read in `timezone` (`0 8 * * 1` is 08:00 local time,
    /// daylight saving included); UTC by default.
    pub fn in_timezone(mut self, timezone: chrono_tz::Tz) -> Schedule {
        self.timezone = timezone;
        self
    }

    /// The timezone the fields are read in.
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.timezone
    }

    /// Next fire time strictly after `after`, in UTC.
    ///
    /// `None` when the schedule never fires again (e.g. `0 0 30 2 *`, or past
    /// the year 2100, the last year the scheduler computes).
    pub fn next_after(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.next_after_in(&local).map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` fire times after `after` (for dry-run / check output).
    ///
    /// Fewer than `n` when the schedule runs out of fire times.
    pub fn upcoming(&self, after: &DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n.min(1024));
        let mut cursor = *after;
        while out.len() < n {
            match self.next_after(&cursor) {
                Some(next) => {
                    out.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        out
    }

    /// The expression exactly as the user wrote it, for messages and output.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Union of the parts' next fire times, in any timezone. Kept generic so
    /// that a per-push timezone can be added without touching the logic.
    fn next_after_in<Z: TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Z>> {
        // The cron crate computes `after + 1s`, which would overflow at
        // chrono's maximum date, and it never fires after LAST_YEAR anyway.
        if after.year() > LAST_YEAR as i32 {
            return None;
        }
        // It also starts from `after`'s year cast to u32, which breaks for
        // negative years; nothing fires before FIRST_YEAR, so start later.
        let clamped;
        let after = if after.year() < FIRST_YEAR as i32 {
            let start =
                NaiveDate::from_ymd_opt(FIRST_YEAR as i32 - 1, 12, 30)?.and_hms_opt(0, 0, 0)?;
            clamped = after.timezone().from_utc_datetime(&start);
            &clamped
        } else {
            after
        };
        self.parts
            .iter()
            .filter_map(|part| part.after(after).next())
            .min()
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// Same as [`Schedule::parse`]; lets callers write `expr.parse()`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    /// Shows the expression as the user wrote it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A fully parsed expression: the set of allowed values per field (weekdays
/// 0-6 with 0 = Sunday), plus whether day-of-month / day-of-week started with
/// `*` (which decides between crontab's AND and OR).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    second: BTreeSet<u32>,
    minute: BTreeSet<u32>,
    hour: BTreeSet<u32>,
    dom: BTreeSet<u32>,
    month: BTreeSet<u32>,
    dow: BTreeSet<u32>,
    year: Option<BTreeSet<u32>>,
    dom_star: bool,
    dow_star: bool,
}

impl Spec {
    /// Renders the `cron` crate expressions whose union is this schedule.
    fn cron_expressions(&self) -> Vec<String> {
        let second = render(&self.second, ScheduleField::Second);
        let minute = render(&self.minute, ScheduleField::Minute);
        let hour = render(&self.hour, ScheduleField::Hour);
        let dom = render(&self.dom, ScheduleField::DayOfMonth);
        let month = render(&self.month, ScheduleField::Month);
        let dow = render(&self.dow, ScheduleField::DayOfWeek);
        let year = match &self.year {
            Some(set) => render(set, ScheduleField::Year),
            None => "*".to_string(),
        };
        let build =
            |dom: &str, dow: &str| format!("{second} {minute} {hour} {dom} {month} {dow} {year}");
        if self.dom_star || self.dow_star {
            // crontab: if either field starts with `*`, both must match.
            vec![build(&dom, &dow)]
        } else {
            // crontab: both restricted, so either one matching is enough.
            vec![build(&dom, "*"), build("*", &dow)]
        }
    }
}

/// Renders a value set as a `cron` crate field: `*` when full, else an
/// explicit list (weekday names for the weekday field).
fn render(set: &BTreeSet<u32>, field: ScheduleField) -> String {
    let (lo, hi) = field.bounds();
    let full = match field {
        ScheduleField::DayOfWeek => 7,
        _ => (hi - lo + 1) as usize,
    };
    if set.len() == full {
        return "*".to_string();
    }
    let items: Vec<String> = set
        .iter()
        .map(|&v| match field {
            ScheduleField::DayOfWeek => WEEKDAY_NAMES[(v % 7) as usize].to_string(),
            _ => v.to_string(),
        })
        .collect();
    items.join(",")
}

/// Parses the whole expression into a [`Spec`].
fn parse_spec(expr: &str) -> Result<Spec, ScheduleError> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let Some(first) = fields.first() else {
        return Err(ScheduleError::Empty);
    };
    if first.starts_with('@') {
        let line = shorthand(first)?;
        if fields.len() > 1 {
            return Err(ScheduleError::ShorthandWithFields {
                name: first.to_string(),
            });
        }
        return parse_spec(line);
    }
    let (second, rest, year) = match fields.len() {
        5 => (None, &fields[..], None),
        6 => (Some(fields[0]), &fields[1..], None),
        7 => (Some(fields[0]), &fields[1..6], Some(fields[6])),
        found => return Err(ScheduleError::FieldCount { found }),
    };
    let second = match second {
        Some(text) => parse_field(ScheduleField::Second, text)?,
        None => BTreeSet::from([0]),
    };
    let minute = parse_field(ScheduleField::Minute, rest[0])?;
    let hour = parse_field(ScheduleField::Hour, rest[1])?;
    let dom = parse_field(ScheduleField::DayOfMonth, rest[2])?;
    let month = parse_field(ScheduleField::Month, rest[3])?;
    let dow = parse_field(ScheduleField::DayOfWeek, rest[4])?;
    let year = year
        .map(|text| parse_field(ScheduleField::Year, text))
        .transpose()?;
    let starred = |text: &str| text.starts_with('*') || text == "?";
    Ok(Spec {
        second,
        minute,
        hour,
        dom,
        month,
        dow,
        year,
        dom_star: starred(rest[2]),
        dow_star: starred(rest[4]),
    })
}

/// Maps a shorthand to its crontab(5) five-field equivalent.
fn shorthand(name: &str) -> Result<&'static str, ScheduleError> {
    let lower = name.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            return Err(ScheduleError::UnknownShorthand {
                name: name.to_string(),
            })
        }
    })
}

/// Parses one field into the set of values it allows. Weekdays come out as
/// 0-6 (7 folded onto 0 = Sunday).
fn parse_field(field: ScheduleField, text: &str) -> Result<BTreeSet<u32>, ScheduleError> {
    let (lo, hi) = field.bounds();
    let mut set = BTreeSet::new();
    if text == "?" && matches!(field, ScheduleField::DayOfMonth | ScheduleField::DayOfWeek) {
        set.extend(lo..=hi);
    } else {
        for element in text.split(',') {
            if element.is_empty() {
                return Err(ScheduleError::InvalidToken {
                    field,
                    token: text.to_string(),
                });
            }
            let (base, step) = match element.split_once('/') {
                Some((base, step)) => (base, Some(parse_step(field, element, step)?)),
                None => (element, None),
            };
            let (start, end) = if base == "*" {
                (lo, hi)
            } else if let Some((a, b)) = base.split_once('-') {
                let start = parse_value(field, a, false)?;
                let end = parse_value(field, b, start > 0)?;
                if start > end {
                    return Err(ScheduleError::BackwardsRange {
                        field,
                        token: base.to_string(),
                    });
                }
                (start, end)
            } else {
                let value = parse_value(field, base, false)?;
                if step.is_some() {
                    return Err(ScheduleError::StepWithoutRange {
                        field,
                        token: element.to_string(),
                    });
                }
                (value, value)
            };
            let step = step.unwrap_or(1) as usize;
            set.extend((start..=end).step_by(step));
        }
    }
    if field == ScheduleField::DayOfWeek && set.remove(&7) {
        set.insert(0);
    }
    Ok(set)
}

/// Parses the number after `/`.
fn parse_step(field: ScheduleField, element: &str, step: &str) -> Result<u32, ScheduleError> {
    let invalid = || ScheduleError::InvalidStep {
        field,
        token: element.to_string(),
    };
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match step.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(invalid()),
    }
}

/// Parses a single number or name. `sun_is_seven` lets a weekday range end
/// in `sun` mean Sunday at the end of the week (`fri-sun` = 5-7).
fn parse_value(
    field: ScheduleField,
    token: &str,
    sun_is_seven: bool,
) -> Result<u32, ScheduleError> {
    let (lo, hi) = field.bounds();
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(v) if (lo..=hi).contains(&v) => Ok(v),
            _ => Err(ScheduleError::OutOfRange {
                field,
                value: token.to_string(),
            }),
        };
    }
    if let Some((names, first)) = field.names() {
        if let Some(index) = names.iter().position(|n| n.eq_ignore_ascii_case(token)) {
            let value = first + index as u32;
            if field == ScheduleField::DayOfWeek && value == 0 && sun_is_seven {
                return Ok(7);
            }
            return Ok(value);
        }
    }
    Err(ScheduleError::InvalidToken {
        field,
        token: token.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Timelike, Weekday};

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn sched(expr: &str) -> Schedule {
        Schedule::parse(expr).unwrap_or_else(|e| panic!("`{expr}` should parse: {e}"))
    }

    fn err(expr: &str) -> ScheduleError {
        match Schedule::parse(expr) {
            Ok(s) => panic!("`{expr}` should be rejected, got {s:?}"),
            Err(e) => e,
        }
    }

    /// Weekdays of the fire times within the week after `from`.
    fn weekdays_in_week(expr: &str, from: DateTime<Utc>) -> BTreeSet<u32> {
        let s = sched(expr);
        let end = from + Duration::days(7);
        let mut days = BTreeSet::new();
        let mut t = from;
        while let Some(next) = s.next_after(&t) {
            if next >= end {
                break;
            }
            days.insert(next.weekday().num_days_from_sunday());
            // Jump to the next day to keep the loop short.
            t = next.date_naive().and_hms_opt(23, 59, 59).unwrap().and_utc();
        }
        days
    }

    // 2024-06-02 is a Sunday.
    const SUNDAY: (i32, u32, u32) = (2024, 6, 2);

    fn sunday_noon() -> DateTime<Utc> {
        utc(SUNDAY.0, SUNDAY.1, SUNDAY.2, 12, 0, 0)
    }

    #[test]
    fn monday_is_one() {
        let next = sched("0 8 * * 1").next_after(&sunday_noon()).unwrap();
        assert_eq!(next, utc(2024, 6, 3, 8, 0, 0));
        assert_eq!(next.weekday(), Weekday::Mon);
    }

    #[test]
    fn sunday_is_zero_and_seven() {
        let from = utc(2024, 6, 3, 0, 0, 0); // Monday
        for expr in ["0 8 * * 0", "0 8 * * 7", "0 8 * * sun", "0 8 * * SUN"] {
            let next = sched(expr).next_after(&from).unwrap();
            assert_eq!(next, utc(2024, 6, 9, 8, 0, 0), "{expr}");
            assert_eq!(next.weekday(), Weekday::Sun, "{expr}");
        }
    }

    #[test]
    fn saturday_is_six() {
        let next = sched("0 8 * * 6").next_after(&sunday_noon()).unwrap();
        assert_eq!(next.weekday(), Weekday::Sat);
    }

    #[test]
    fn friday_to_sunday_ranges() {
        let expect: BTreeSet<u32> = [5, 6, 0].into();
        for expr in [
            "0 0 * * 5-7",
            "0 0 * * fri-sun",
            "0 0 * * Fri-Sun",
            "0 0 * * 5,6,7",
        ] {
            assert_eq!(weekdays_in_week(expr, sunday_noon()), expect, "{expr}");
        }
        // Every minute on Fri, Sat, Sun: the first fire after Thursday night
        // is Friday 00:00, and Sunday 23:59 is followed by Friday again.
        let s = sched("* * * * 5-7");
        assert_eq!(
            s.next_after(&utc(2024, 6, 6, 23, 59, 30)).unwrap(),
            utc(2024, 6, 7, 0, 0, 0)
        );
        assert_eq!(
            s.next_after(&utc(2024, 6, 9, 23, 59, 0)).unwrap(),
            utc(2024, 6, 14, 0, 0, 0)
        );
    }

    #[test]
    fn weekdays_skip_weekend() {
        let expect: BTreeSet<u32> = [1, 2, 3, 4, 5].into();
        assert_eq!(weekdays_in_week("0 9 * * 1-5", sunday_noon()), expect);
        assert_eq!(weekdays_in_week("0 9 * * mon-fri", sunday_noon()), expect);
        // Friday 09:00 is followed by Monday 09:00.
        let s = sched("0 9 * * 1-5");
        assert_eq!(
            s.next_after(&utc(2024, 6, 7, 9, 0, 0)).unwrap(),
            utc(2024, 6, 10, 9, 0, 0)
        );
    }

    #[test]
    fn weekday_steps_and_full_range() {
        assert_eq!(
            weekdays_in_week("0 0 * * */2", sunday_noon()),
            [0, 2, 4, 6].into()
        );
        assert_eq!(
            weekdays_in_week("0 0 * * 1-5/2", sunday_noon()),
            [1, 3, 5].into()
        );
        assert_eq!(
            weekdays_in_week("0 0 * * 0-7", sunday_noon()),
            (0..7).collect()
        );
    }

    #[test]
    fn every_quarter_hour() {
        let s = sched("*/15 * * * *");
        let times = s.upcoming(&utc(2024, 6, 2, 10, 0, 0), 5);
        let minutes: Vec<u32> = times.iter().map(|t| t.minute()).collect();
        assert_eq!(minutes, [15, 30, 45, 0, 15]);
        assert!(times.iter().all(|t| t.second() == 0));
        assert_eq!(times[3], utc(2024, 6, 2, 11, 0, 0));
    }

    #[test]
    fn first_of_month() {
        let s = sched("0 0 1 * *");
        assert_eq!(
            s.upcoming(&utc(2024, 1, 15, 0, 0, 0), 3),
            [
                utc(2024, 2, 1, 0, 0, 0),
                utc(2024, 3, 1, 0, 0, 0),
                utc(2024, 4, 1, 0, 0, 0)
            ]
        );
    }

    #[test]
    fn or_rule_when_both_day_fields_restricted() {
        let s = sched("0 0 13 * 5");
        // 2024-08-13 is a Tuesday: fires because it is the 13th.
        assert_eq!(utc(2024, 8, 13, 0, 0, 0).weekday(), Weekday::Tue);
        assert_eq!(
            s.next_after(&utc(2024, 8, 12, 0, 0, 0)).unwrap(),
            utc(2024, 8, 13, 0, 0, 0)
        );
        // 2024-08-16 is a Friday, not the 13th: fires because it is Friday.
        assert_eq!(
            s.next_after(&utc(2024, 8, 13, 0, 0, 0)).unwrap(),
            utc(2024, 8, 16, 0, 0, 0)
        );
        // 2024-09-13 is a Friday the 13th: fires once.
        let times = s.upcoming(&utc(2024, 9, 12, 0, 0, 0), 2);
        assert_eq!(
            times,
            [utc(2024, 9, 13, 0, 0, 0), utc(2024, 9, 20, 0, 0, 0)]
        );
    }

    #[test]
    fn and_rule_when_a_day_field_starts_with_star() {
        // crontab: `*/2` counts as unrestricted, so both must match:
        // odd days of the month that are Mondays.
        let s = sched("0 0 */2 * 1");
        for t in s.upcoming(&utc(2024, 1, 1, 0, 0, 0), 20) {
            assert_eq!(t.weekday(), Weekday::Mon, "{t}");
            assert_eq!(t.day() % 2, 1, "{t}");
        }
    }

    #[test]
    fn six_and_seven_fields() {
        let next = sched("30 0 8 * * 1").next_after(&sunday_noon()).unwrap();
        assert_eq!(next, utc(2024, 6, 3, 8, 0, 30));
        assert_eq!(next.weekday(), Weekday::Mon);

        // Seconds field works.
        let s = sched("*/20 * * * * *");
        assert_eq!(
            s.upcoming(&utc(2024, 1, 1, 0, 0, 0), 3),
            [
                utc(2024, 1, 1, 0, 0, 20),
                utc(2024, 1, 1, 0, 0, 40),
                utc(2024, 1, 1, 0, 1, 0)
            ]
        );

        // OR rule applies in the 6-field form too.
        let s = sched("0 0 0 13 * fri");
        assert_eq!(
            s.next_after(&utc(2024, 8, 13, 0, 0, 0)).unwrap(),
            utc(2024, 8, 16, 0, 0, 0)
        );

        // Quartz-style `?` means the same as `*`.
        let s = sched("0 0 8 ? * MON");
        assert_eq!(
            s.next_after(&sunday_noon()).unwrap(),
            utc(2024, 6, 3, 8, 0, 0)
        );

        // 7 fields: the year restricts.
        let s = sched("0 0 0 1 1 * 2030");
        assert_eq!(
            s.upcoming(&utc(2024, 1, 1, 0, 0, 0), 5),
            [utc(2030, 1, 1, 0, 0, 0)]
        );
    }

    #[test]
    fn shorthands() {
        let from = utc(2024, 6, 5, 13, 7, 0); // Wednesday
        let next = |expr: &str| sched(expr).next_after(&from).unwrap();
        assert_eq!(next("@daily"), utc(2024, 6, 6, 0, 0, 0));
        assert_eq!(next("@midnight"), utc(2024, 6, 6, 0, 0, 0));
        assert_eq!(next("@hourly"), utc(2024, 6, 5, 14, 0, 0));
        assert_eq!(next("@weekly"), utc(2024, 6, 9, 0, 0, 0));
        assert_eq!(next("@weekly").weekday(), Weekday::Sun);
        assert_eq!(next("@monthly"), utc(2024, 7, 1, 0, 0, 0));
        assert_eq!(next("@yearly"), utc(2025, 1, 1, 0, 0, 0));
        assert_eq!(next("@annually"), utc(2025, 1, 1, 0, 0, 0));
        assert_eq!(next("  @DAILY "), utc(2024, 6, 6, 0, 0, 0));
    }

    #[test]
    fn month_names_and_lists() {
        let s = sched("0 12 1 jan,Jul *");
        assert_eq!(
            s.upcoming(&utc(2024, 3, 1, 0, 0, 0), 2),
            [utc(2024, 7, 1, 12, 0, 0), utc(2025, 1, 1, 12, 0, 0)]
        );
        let s = sched("0 0 1 MAR-may *");
        let months: Vec<u32> = s
            .upcoming(&utc(2024, 1, 1, 0, 0, 0), 4)
            .iter()
            .map(|t| t.month())
            .collect();
        assert_eq!(months, [3, 4, 5, 3]);
    }

    #[test]
    fn strictly_after() {
        let s = sched("0 8 * * *");
        let at = utc(2024, 6, 3, 8, 0, 0);
        assert_eq!(s.next_after(&at).unwrap(), utc(2024, 6, 4, 8, 0, 0));
        let just_before = at - Duration::milliseconds(1);
        assert_eq!(s.next_after(&just_before).unwrap(), at);
        let just_after = at + Duration::milliseconds(1);
        assert_eq!(s.next_after(&just_after).unwrap(), utc(2024, 6, 4, 8, 0, 0));
    }

    #[test]
    fn never_firing_and_far_future() {
        let s = sched("0 0 30 2 *");
        assert_eq!(s.next_after(&utc(2024, 1, 1, 0, 0, 0)), None);
        assert!(s.upcoming(&utc(2024, 1, 1, 0, 0, 0), 3).is_empty());
        let s = sched("* * * * *");
        assert_eq!(s.next_after(&DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(
            s.next_after(&DateTime::<Utc>::MIN_UTC),
            Some(utc(1970, 1, 1, 0, 0, 0))
        );
        assert_eq!(
            s.next_after(&utc(1900, 5, 5, 5, 5, 5)),
            Some(utc(1970, 1, 1, 0, 0, 0))
        );
        // Leap day.
        let s = sched("0 0 29 2 *");
        assert_eq!(
            s.next_after(&utc(2024, 3, 1, 0, 0, 0)).unwrap(),
            utc(2028, 2, 29, 0, 0, 0)
        );
    }

    #[test]
    fn source_and_from_str() {
        let s: Schedule = "0 8 * * 1".parse().unwrap();
        assert_eq!(s.source(), "0 8 * * 1");
        assert_eq!(s.to_string(), "0 8 * * 1");
    }

    #[test]
    fn field_count_errors() {
        for (expr, found) in [("* * * *", 4), ("* * * * * * * *", 8), ("5", 1)] {
            let e = err(expr);
            assert_eq!(e, ScheduleError::FieldCount { found }, "{expr}");
            let msg = e.to_string();
            assert!(msg.contains("expected 5 fields"), "{msg}");
            assert!(msg.contains(&format!("found {found}")), "{msg}");
        }
    }

    #[test]
    fn out_of_range_errors() {
        let e = err("61 * * * *");
        assert!(matches!(
            e,
            ScheduleError::OutOfRange {
                field: ScheduleField::Minute,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "minute value 61 is out of range: expected 0-59"
        );
        let e = err("* * * * 8");
        assert!(matches!(
            e,
            ScheduleError::OutOfRange {
                field: ScheduleField::DayOfWeek,
                ..
            }
        ));
        assert!(e.to_string().contains("day-of-week value 8"), "{e}");
        assert!(e.to_string().contains("0-7"), "{e}");
        for (expr, field) in [
            ("* 24 * * *", ScheduleField::Hour),
            ("* * 0 * *", ScheduleField::DayOfMonth),
            ("* * 32 * *", ScheduleField::DayOfMonth),
            ("* * * 13 *", ScheduleField::Month),
            ("60 * * * * *", ScheduleField::Second),
            ("0 0 0 * * * 2200", ScheduleField::Year),
            ("99999999999999999999 * * * *", ScheduleField::Minute),
            ("1-99 * * * *", ScheduleField::Minute),
        ] {
            match err(expr) {
                ScheduleError::OutOfRange { field: f, .. } => assert_eq!(f, field, "{expr}"),
                other => panic!("{expr}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn bad_token_errors() {
        let e = err("* * * * funday");
        assert_eq!(
            e,
            ScheduleError::InvalidToken {
                field: ScheduleField::DayOfWeek,
                token: "funday".into()
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("day-of-week") && msg.contains("funday"),
            "{msg}"
        );
        assert!(msg.contains("sun, mon"), "{msg}");

        assert!(matches!(
            err("* * * foo *"),
            ScheduleError::InvalidToken {
                field: ScheduleField::Month,
                ..
            }
        ));
        assert!(matches!(
            err("mon * * * *"),
            ScheduleError::InvalidToken {
                field: ScheduleField::Minute,
                ..
            }
        ));
        assert!(matches!(
            err("1,,2 * * * *"),
            ScheduleError::InvalidToken { .. }
        ));
        assert!(matches!(
            err("-5 * * * *"),
            ScheduleError::InvalidToken { .. }
        ));
        assert!(matches!(
            err("+5 * * * *"),
            ScheduleError::InvalidToken { .. }
        ));
        assert!(matches!(
            err("? * * * *"),
            ScheduleError::InvalidToken { .. }
        ));
        assert!(matches!(
            err("L * * * *"),
            ScheduleError::InvalidToken { .. }
        ));
        assert!(matches!(
            err("*/0 * * * *"),
            ScheduleError::InvalidStep { .. }
        ));
        assert!(matches!(
            err("*/ * * * *"),
            ScheduleError::InvalidStep { .. }
        ));
        assert!(matches!(
            err("*/1/2 * * * *"),
            ScheduleError::InvalidStep { .. }
        ));
        assert!(matches!(
            err("5/15 * * * *"),
            ScheduleError::StepWithoutRange { .. }
        ));
        assert!(matches!(
            err("* 22-2 * * *"),
            ScheduleError::BackwardsRange { .. }
        ));
        assert!(matches!(
            err("* * * * sat-mon"),
            ScheduleError::BackwardsRange { .. }
        ));
        assert!(matches!(
            err("@reboot"),
            ScheduleError::UnknownShorthand { .. }
        ));
        assert!(matches!(
            err("@daily 5"),
            ScheduleError::ShorthandWithFields { .. }
        ));
    }

    #[test]
    fn empty_and_garbage_never_panic() {
        assert_eq!(err(""), ScheduleError::Empty);
        assert_eq!(err("   \t\n"), ScheduleError::Empty);
        assert!(err("").to_string().contains("expected 5 fields"));
        for expr in [
            "💥",
            "日 月 火 水 木",
            "★ * * * *",
            "* * * * 月",
            "*/💥 * * * *",
            "1-💥 * * * *",
            "@💥",
            "\u{0}",
            "ǅ-ǅ * * * *",
            "- - - - -",
            "/ / / / /",
            ", , , , ,",
            "*-* * * * *",
            "4294967296/1 * * * *",
            "*/4294967296 * * * *",
        ] {
            let result = Schedule::parse(expr);
            assert!(result.is_err(), "{expr}: {result:?}");
            assert!(!result.unwrap_err().to_string().is_empty());
        }
        // A step longer than the range is valid: only the start is selected.
        assert!(Schedule::parse("0-59/4294967295 * * * *").is_ok());
        // Unicode whitespace separates fields like ASCII whitespace.
        assert!(Schedule::parse("0\u{3000}8 * * 1").is_ok());
    }

    /// Cross-check: the union of `cron` crate schedules fires exactly at the
    /// minutes that crontab's matching rule selects.
    #[test]
    fn matches_crontab_rule_minute_by_minute() {
        let exprs = [
            "0 0 13 * 5",
            "30 6 1,15 * mon-wed",
            "*/7 */5 */3 */2 *",
            "0 12 * * 5-7",
            "0 0 */2 * 1",
            "15 9 * feb,aug 0",
        ];
        let start = utc(2024, 1, 27, 0, 0, 0);
        let end = start + Duration::days(62);
        for expr in exprs {
            let spec = parse_spec(expr).unwrap();
            let matches = |t: DateTime<Utc>| {
                let dom = spec.dom.contains(&t.day());
                let dow = spec.dow.contains(&t.weekday().num_days_from_sunday());
                let day = if spec.dom_star || spec.dow_star {
                    dom && dow
                } else {
                    dom || dow
                };
                spec.minute.contains(&t.minute())
                    && spec.hour.contains(&t.hour())
                    && spec.month.contains(&t.month())
                    && day
            };
            let mut expected = Vec::new();
            let mut t = start + Duration::minutes(1);
            while t < end {
                if matches(t) {
                    expected.push(t);
                }
                t += Duration::minutes(1);
            }
            let got: Vec<_> = sched(expr)
                .upcoming(&start, expected.len() + 1)
                .into_iter()
                .filter(|t| *t < end)
                .collect();
            assert!(!expected.is_empty(), "{expr}");
            assert_eq!(got, expected, "{expr}");
        }
    }

    #[test]
    fn a_timezone_moves_the_fire_time_with_daylight_saving() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let s = Schedule::parse("0 8 * * 1").unwrap().in_timezone(berlin);
        // Winter: 08:00 CET is 07:00 UTC.
        let winter = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_after(&winter).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 30, 7, 0, 0).unwrap()
        );
        // Summer: 08:00 CEST is 06:00 UTC.
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_after(&summer).unwrap(),
            Utc.with_ymd_and_hms(2026, 7, 6, 6, 0, 0).unwrap()
        );
    }
}
