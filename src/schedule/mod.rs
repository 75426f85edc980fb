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

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use parse::parse_spec;

mod parse;

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

#[cfg(test)]
mod tests;
