//! The `iso8601` and `strftime` filters and the timestamp reading behind
//! them ([`parse_timestamp`]), kept apart because the accepted timestamp
//! forms and their year limits are a contract of their own.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Utc};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::Error;

use super::invalid;

// ---------------------------------------------------------------------------
// iso8601 / strftime
// ---------------------------------------------------------------------------

const TIMESTAMP_FORMS: &str = "expected an RFC 3339 timestamp such as 2026-07-05T06:20:38+02:00 \
or 2026-07-05T04:20:38.495Z, a naive 'YYYY-MM-DD HH:MM:SS' or 'YYYY-MM-DDTHH:MM:SS' (taken as UTC), \
or a number of Unix seconds";

/// Why a value could not be read as a timestamp.
///
/// Exists so that `iso8601`/`strftime` and non-template callers share one
/// typed failure; timestamps are not personal data, so the offending value is
/// included.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimestampError {
    /// A string in none of the accepted forms.
    #[error("cannot parse timestamp {0:?}; {TIMESTAMP_FORMS}")]
    Unparseable(String),
    /// The timestamp is not finite or falls outside the years 0000 to 9999,
    /// which ISO-8601 consumers (and four-digit-year formats) cannot take.
    #[error(
        "timestamp {0} is outside the years 0000 to 9999 (a Unix timestamp in \
         milliseconds must be divided by 1000 first); {TIMESTAMP_FORMS}"
    )]
    OutOfRange(String),
}

fn check_year(
    dt: DateTime<Utc>,
    shown: impl FnOnce() -> String,
) -> Result<DateTime<Utc>, TimestampError> {
    if (0..=9999).contains(&dt.year()) {
        Ok(dt)
    } else {
        Err(TimestampError::OutOfRange(shown()))
    }
}

/// Parses a timestamp string into UTC.
///
/// Exists because push data carries times as RFC 3339 strings with arbitrary
/// offsets or as naive strings, while targets such as Bing's `ConversionTime`
/// must receive UTC. Accepted: RFC 3339 with any offset and optional
/// fractional seconds; naive `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS`
/// (optional fractional seconds), taken as UTC. The UTC result must fall in
/// the years 0000 to 9999.
pub fn parse_timestamp(input: &str) -> Result<DateTime<Utc>, TimestampError> {
    let s = input.trim();
    let shown = || format!("{input:?}");
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return check_year(dt.with_timezone(&Utc), shown);
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return check_year(naive.and_utc(), shown);
        }
    }
    Err(TimestampError::Unparseable(input.to_owned()))
}

/// Converts Unix seconds (fractions allowed) to UTC.
///
/// Exists for timestamps that arrive as numbers. Fractions are rounded to
/// whole microseconds so that float noise (`1783225238.495` is stored as
/// `1783225238.4949998…`) does not shift the millisecond. The result must fall
/// in the years 0000 to 9999, which also catches millisecond timestamps passed
/// by mistake.
pub fn timestamp_from_unix_seconds(secs: f64) -> Result<DateTime<Utc>, TimestampError> {
    let shown = || format!("{secs:?}");
    // ±1e13 s is beyond ±300 000 years: outside chrono's range anyway, and
    // small enough for the casts below to be exact.
    if !secs.is_finite() || secs.abs() > 1e13 {
        return Err(TimestampError::OutOfRange(shown()));
    }
    let whole = secs.floor();
    let mut micros = ((secs - whole) * 1e6).round() as i64;
    let mut whole = whole as i64;
    if micros >= 1_000_000 {
        whole += 1;
        micros -= 1_000_000;
    }
    let nanos = u32::try_from(micros * 1000).map_err(|_| TimestampError::OutOfRange(shown()))?;
    let dt = DateTime::from_timestamp(whole, nanos)
        .ok_or_else(|| TimestampError::OutOfRange(shown()))?;
    check_year(dt, shown)
}

fn value_to_datetime(value: &Value, filter: &str) -> Result<DateTime<Utc>, Error> {
    let to_err = |e: TimestampError| invalid(format!("{filter} filter: {e}"));
    match value.kind() {
        ValueKind::String => parse_timestamp(value.as_str().unwrap_or_default()).map_err(to_err),
        // Every integer that can be a timestamp in years 0000 to 9999 (|x| <
        // 2^53) converts to f64 exactly; larger ones are rejected either way.
        ValueKind::Number => match f64::try_from(value.clone()) {
            Ok(secs) => timestamp_from_unix_seconds(secs).map_err(|e| match e {
                // Show integers as written, not as `1783225238495.0`.
                TimestampError::OutOfRange(_) if value.is_integer() => {
                    to_err(TimestampError::OutOfRange(value.to_string()))
                }
                e => to_err(e),
            }),
            Err(_) => Err(to_err(TimestampError::OutOfRange(value.to_string()))),
        },
        other => Err(invalid(format!(
            "{filter} filter needs a timestamp, got {other}; {TIMESTAMP_FORMS}"
        ))),
    }
}

pub(super) fn iso8601_filter(
    value: &Value,
    millis: Option<Value>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let millis = match millis {
        Some(m) => Some(m),
        None => kwargs.get::<Option<Value>>("millis")?,
    };
    kwargs.assert_all_used()?;
    let millis = match millis {
        None => false,
        Some(m) => bool::try_from(m).map_err(|_| {
            invalid("iso8601 filter: millis must be true or false, e.g. iso8601(millis=true)")
        })?,
    };
    let dt = value_to_datetime(value, "iso8601")?;
    let precision = if millis {
        SecondsFormat::Millis
    } else {
        SecondsFormat::Secs
    };
    Ok(dt.to_rfc3339_opts(precision, true))
}

pub(super) fn strftime_filter(value: &Value, fmt: &str) -> Result<String, Error> {
    let items: Vec<Item<'_>> = StrftimeItems::new(fmt).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(invalid(format!(
            "strftime filter: invalid format string {fmt:?}; expected chrono strftime syntax \
             such as \"%Y-%m-%d %H:%M:%S\""
        )));
    }
    let dt = value_to_datetime(value, "strftime")?;
    let mut out = String::new();
    write!(out, "{}", dt.format_with_items(items.iter())).map_err(|_| {
        invalid(format!(
            "strftime filter: format string {fmt:?} cannot be applied to a UTC timestamp"
        ))
    })?;
    Ok(out)
}
