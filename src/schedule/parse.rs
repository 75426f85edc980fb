//! Parsing a crontab(5) expression into explicit value sets ([`Spec`]) and
//! rendering those sets back as expressions the `cron` crate evaluates.
//!
//! Kept apart from [`super::Schedule`] because this is where crontab's
//! numbering and AND/OR rules are translated; the parent module only
//! evaluates the result.

use std::collections::BTreeSet;

use super::{ScheduleError, ScheduleField, WEEKDAY_NAMES};

/// A fully parsed expression: the set of allowed values per field (weekdays
/// 0-6 with 0 = Sunday), plus whether day-of-month / day-of-week started with
/// `*` (which decides between crontab's AND and OR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Spec {
    pub(super) second: BTreeSet<u32>,
    pub(super) minute: BTreeSet<u32>,
    pub(super) hour: BTreeSet<u32>,
    pub(super) dom: BTreeSet<u32>,
    pub(super) month: BTreeSet<u32>,
    pub(super) dow: BTreeSet<u32>,
    pub(super) year: Option<BTreeSet<u32>>,
    pub(super) dom_star: bool,
    pub(super) dow_star: bool,
}

impl Spec {
    /// Renders the `cron` crate expressions whose union is this schedule.
    pub(super) fn cron_expressions(&self) -> Vec<String> {
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
pub(super) fn parse_spec(expr: &str) -> Result<Spec, ScheduleError> {
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
