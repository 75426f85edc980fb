//! Events: what call tracking, forms and chat send in, and what a cron tick
//! looks like to a push. `event.*` in templates is the event's `data`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One event, as posted to the daemon or given to `dry-run --event`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "pushwerk event")]
pub struct Event {
    /// Unique id of the event; a resent event with the same id is not delivered twice.
    pub id: String,
    /// Event type, matched against a push's `on:`, e.g. `call.ended`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the event happened (RFC 3339).
    #[serde(deserialize_with = "event_time")]
    pub time: DateTime<Utc>,
    /// The event's fields: `event.caller_number` is `data.caller_number`.
    #[serde(default = "empty_object")]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub data: serde_json::Value,
}

/// The earliest and latest `time` an event may carry, as written in errors.
pub const TIME_RANGE: &str = "0000-01-01T00:00:00Z to 9999-12-31T23:59:59Z";

/// `time` as chrono reads it, with an error that names the field, the
/// value (cut to 64 characters) and the allowed range: chrono's own says
/// only "input is out of range".
fn event_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    use chrono::Datelike as _;
    use serde::de::Error as _;
    let text = String::deserialize(d)?;
    let refuse = |why: String| {
        let shown: String = text.chars().take(64).collect();
        D::Error::custom(format!(
            "`time` {shown:?} is not a usable RFC 3339 date-time ({why}): it must be from {TIME_RANGE}, each part a real date and time, e.g. `2026-11-24T14:03:11Z`"
        ))
    };
    let time = text
        .parse::<DateTime<chrono::FixedOffset>>()
        .map_err(|e| refuse(e.to_string()))?
        .with_timezone(&Utc);
    if !(0..=9999).contains(&time.year()) {
        return Err(refuse("input is out of range".to_owned()));
    }
    Ok(time)
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Why an event was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The text is not JSON or does not have the event's shape.
    // The cause is in the message and not also a `source`: `{:#}` (the
    // CLI's error chain) printed it twice.
    #[error("malformed event: {0}")]
    Malformed(serde_json::Error),
    /// A field has an unusable value.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// The JSON is beyond what pushwerk keeps exactly (see [`check_json`]).
    #[error("refused event: {0}")]
    Refused(JsonRefusal),
}

impl From<serde_json::Error> for EventError {
    fn from(e: serde_json::Error) -> EventError {
        EventError::Malformed(e)
    }
}

impl From<JsonRefusal> for EventError {
    fn from(e: JsonRefusal) -> EventError {
        EventError::Refused(e)
    }
}

impl Event {
    /// Parses and validates an event from JSON text.
    pub fn from_json(text: &str) -> Result<Event, EventError> {
        check_json(text.as_bytes(), MAX_DEPTH)?;
        let event: Event = serde_json::from_str(text)?;
        event.validate()?;
        Ok(event)
    }

    /// Checks what serde cannot: non-empty id and type, both bounded, the id
    /// one line, and `data` an object.
    pub fn validate(&self) -> Result<(), EventError> {
        if self.id.trim().is_empty() {
            return Err(EventError::Invalid("`id` must not be empty".into()));
        }
        // The id becomes store keys and log fields: a megabyte of id, or
        // a line break forging log lines, is refused.
        if self.id.len() > MAX_ID_BYTES {
            return Err(EventError::Invalid(format!(
                "`id` is {} bytes long; at most {MAX_ID_BYTES} are allowed",
                self.id.len()
            )));
        }
        if let Some(c) = self.id.chars().find(|c| c.is_control()) {
            return Err(EventError::Invalid(format!(
                "`id` contains the control character U+{:04X}",
                u32::from(c)
            )));
        }
        if self.event_type.len() > MAX_ID_BYTES {
            return Err(EventError::Invalid(format!(
                "`type` is {} bytes long; at most {MAX_ID_BYTES} are allowed",
                self.event_type.len()
            )));
        }
        if !is_valid_event_type(&self.event_type) {
            return Err(EventError::Invalid(format!(
                "`type` {:?} is not an event type: expected dot-separated words of a-z, 0-9, `_` or `-`, e.g. `call.ended`",
                self.event_type
            )));
        }
        if !self.data.is_object() {
            return Err(EventError::Invalid("`data` must be a JSON object".into()));
        }
        Ok(())
    }

    /// The event a `schedule:` push sees at a cron tick: type `schedule`, empty data.
    pub fn schedule_tick(push_name: &str, at: DateTime<Utc>) -> Event {
        Event {
            id: format!("schedule:{push_name}:{}", at.to_rfc3339()),
            event_type: "schedule".to_owned(),
            time: at,
            data: empty_object(),
        }
    }
}

/// The longest event `id` and `type` accepted, in bytes (UTF-8).
pub const MAX_ID_BYTES: usize = 256;

/// Whether `s` is a well-formed event type such as `call.ended`.
pub fn is_valid_event_type(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

/// How deeply an event (the whole request body) may nest arrays and
/// objects. The store keeps an event inside a job record, a level or two
/// deeper, and must read it back within serde_json's recursion limit (128):
/// 64 leaves ample room, and no real event comes near it.
pub const MAX_DEPTH: usize = 64;

/// Why JSON text is refused before it is parsed: what serde_json would
/// otherwise accept but not keep (a duplicate key's first value, an
/// integer's exact digits) or not read back once stored (deep nesting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonRefusal {
    /// Arrays and objects nest deeper than the limit.
    #[error("JSON nested deeper than {limit} levels of arrays and objects (at `{path}`): flatten the event")]
    TooDeep {
        /// The limit ([`MAX_DEPTH`]).
        limit: usize,
        /// Where the limit was passed (shortened).
        path: String,
    },
    /// An object names the same key twice (serde_json would keep the last).
    #[error("duplicate key `{key}` in the object at `{path}`")]
    DuplicateKey {
        /// The key (shortened).
        key: String,
        /// The object (shortened; empty for the top level).
        path: String,
    },
    /// An integer outside −2^63 … 2^64−1 (it would become an inexact float).
    #[error("`{path}`: the integer {digits} is outside the 64-bit range (-2^63 to 2^64-1) and would lose digits: send it as a string")]
    IntegerOutOfRange {
        /// The value's place.
        path: String,
        /// The integer (shortened).
        digits: String,
    },
}

/// Longest key, path or number quoted in a [`JsonRefusal`].
const QUOTE_MAX: usize = 120;

fn shorten(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        return s.to_owned();
    }
    let mut end = QUOTE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

enum Frame {
    Object {
        keys: std::collections::HashSet<String>,
        key: Option<String>,
        expect_key: bool,
    },
    Array {
        index: usize,
    },
}

fn path_of(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
        if path.len() > QUOTE_MAX {
            break;
        }
    }
    shorten(&path)
}

/// Checks JSON text, before it is parsed, for what pushwerk refuses rather
/// than silently changes or cannot store: nesting deeper than `max_depth`,
/// a key twice in one object, an integer beyond 64 bits. One linear pass
/// with memory bounded by the text; text that is not JSON is left to the
/// parser to report (this returns `Ok` at the first byte it does not
/// understand).
pub fn check_json(text: &[u8], max_depth: usize) -> Result<(), JsonRefusal> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b':' => i += 1,
            b'{' | b'[' => {
                if stack.len() >= max_depth {
                    return Err(JsonRefusal::TooDeep {
                        limit: max_depth,
                        path: path_of(&stack),
                    });
                }
                stack.push(if b == b'{' {
                    Frame::Object {
                        keys: Default::default(),
                        key: None,
                        expect_key: true,
                    }
                } else {
                    Frame::Array { index: 0 }
                });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Array { index }) => *index += 1,
                    Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                    None => return Ok(()),
                }
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                let mut escaped = false;
                while i < text.len() && text[i] != b'"' {
                    if text[i] == b'\\' {
                        escaped = true;
                        i += 1;
                    }
                    i += 1;
                }
                if i >= text.len() {
                    return Ok(());
                }
                i += 1;
                let raw = &text[start..i];
                if !matches!(
                    stack.last(),
                    Some(Frame::Object {
                        expect_key: true,
                        ..
                    })
                ) {
                    continue;
                }
                let name = if escaped {
                    match serde_json::from_slice::<String>(raw) {
                        Ok(s) => s,
                        Err(_) => return Ok(()),
                    }
                } else {
                    match std::str::from_utf8(&raw[1..raw.len() - 1]) {
                        Ok(s) => s.to_owned(),
                        Err(_) => return Ok(()),
                    }
                };
                let depth = stack.len();
                if matches!(stack.last(), Some(Frame::Object { keys, .. }) if keys.contains(&name))
                {
                    return Err(JsonRefusal::DuplicateKey {
                        key: shorten(&name),
                        path: path_of(&stack[..depth - 1]),
                    });
                }
                if let Some(Frame::Object {
                    keys,
                    key,
                    expect_key,
                }) = stack.last_mut()
                {
                    keys.insert(name.clone());
                    *key = Some(name);
                    *expect_key = false;
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let literal = &text[start..i];
                let integer = !literal.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
                if integer {
                    let s = std::str::from_utf8(literal).unwrap_or_default();
                    let fits = if s.starts_with('-') {
                        s.parse::<i64>().is_ok()
                    } else {
                        s.parse::<u64>().is_ok()
                    };
                    // Only a well-formed integer that overflows is ours
                    // to report; anything else is the parser's.
                    let well_formed = s
                        .trim_start_matches('-')
                        .bytes()
                        .all(|c| c.is_ascii_digit())
                        && s.len() > usize::from(s.starts_with('-'));
                    if !fits && well_formed {
                        return Err(JsonRefusal::IntegerOutOfRange {
                            path: path_of(&stack),
                            digits: shorten(s),
                        });
                    }
                }
            }
            b't' | b'f' | b'n' => {
                while i < text.len() && text[i].is_ascii_alphabetic() {
                    i += 1;
                }
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        // Built in one pass: wrapping the text level by level copies it each
        // time (quadratic), which took 10 s of the unit tests at 100,000 levels.
        format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
    }

    #[test]
    fn depth_is_limited_exactly() {
        assert!(check_json(nested(64).as_bytes(), 64).is_ok());
        let err = check_json(nested(65).as_bytes(), 64).unwrap_err();
        assert!(
            matches!(err, JsonRefusal::TooDeep { limit: 64, .. }),
            "{err}"
        );
        // Far beyond serde_json's own limit still gets this answer.
        let err = check_json(nested(100_000).as_bytes(), 64).unwrap_err();
        assert!(err.to_string().contains("deeper than 64 levels"), "{err}");
        assert!(check_json(b"[[[[1]]]]", 3).is_err());
        assert!(check_json(b"[[[1]]]", 3).is_ok());
    }

    #[test]
    fn duplicate_keys_are_named_with_their_object() {
        let err = check_json(br#"{"id":"1","data":{"x":1,"y":{"x":2},"x":3}}"#, 64).unwrap_err();
        assert_eq!(
            err,
            JsonRefusal::DuplicateKey {
                key: "x".into(),
                path: "data".into()
            }
        );
        let err = check_json(br#"{"id":"1","id":"2"}"#, 64).unwrap_err();
        assert_eq!(
            err,
            JsonRefusal::DuplicateKey {
                key: "id".into(),
                path: String::new()
            }
        );
        // An escaped spelling of the same key is the same key.
        assert!(check_json(br#"{"a":1,"\u0061":2}"#, 64).is_err());
        // The same key in sibling objects, and strings that look like keys, are fine.
        assert!(check_json(br#"[{"a":1},{"a":2,"b":"a"}]"#, 64).is_ok());
        assert!(check_json(br#"{"a":["a","a"],"b":{"a":1}}"#, 64).is_ok());
    }

    #[test]
    fn integers_beyond_64_bits_are_named() {
        assert!(check_json(
            br#"{"n":18446744073709551615,"m":-9223372036854775808}"#,
            64
        )
        .is_ok());
        assert!(check_json(br#"{"f":1e400,"g":123456789012345678901234.5}"#, 64).is_ok());
        let err = check_json(br#"{"data":{"calls":[1,18446744073709551616]}}"#, 64).unwrap_err();
        assert_eq!(
            err,
            JsonRefusal::IntegerOutOfRange {
                path: "data.calls[1]".into(),
                digits: "18446744073709551616".into()
            }
        );
        assert!(check_json(br#"{"n":-9223372036854775809}"#, 64).is_err());
    }

    #[test]
    fn text_that_is_not_json_is_left_to_the_parser() {
        for text in [&b"{"[..], b"{\"a", b"nope", b"{\"a\":@}", b"\xff\xfe"] {
            assert!(check_json(text, 64).is_ok());
        }
    }
}
