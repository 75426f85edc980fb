//! Template filters that push targets need but minijinja does not ship.
//!
//! Push definitions are YAML documents rendered with minijinja before they are
//! sent. Several targets demand values in a precise shape that plain template
//! data rarely has:
//!
//! * Microsoft Advertising wants e-mail addresses as the SHA-256 of the
//!   trimmed, lower-cased address (`sha256`),
//! * phone numbers must be E.164 (`e164`),
//! * conversion times must be ISO-8601 in UTC (`iso8601`, `strftime`),
//! * JSON bodies need values serialised as JSON without the HTML escaping
//!   that minijinja's `tojson` applies (`json`).
//!
//! [`register`] installs all of them on an [`Environment`]. The pure
//! functions behind the filters ([`sha256_hex_normalised`],
//! [`normalise_e164`], [`parse_timestamp`]) are public so that code outside
//! templates can apply exactly the same rules. Errors from the pure functions
//! are typed; the filters turn them into
//! [`ErrorKind::InvalidOperation`] errors for the renderer.
//!
//! Phone numbers and e-mail addresses are personal data: no error produced
//! here echoes them (at most a digit count). Timestamps are not secret and may
//! be echoed.

use std::fmt::Write as _;

use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use sha2::{Digest, Sha256};

mod e164;
mod time;

use e164::e164_filter;
pub use e164::{normalise_e164, E164Error};
use time::{iso8601_filter, strftime_filter};
pub use time::{parse_timestamp, timestamp_from_unix_seconds, TimestampError};

/// Registers every pushwerk filter on `env`.
///
/// Exists so that the template setup has one call that installs the filters
/// push definitions rely on: `sha256`, `e164`, `iso8601`, `strftime` and
/// `json`. minijinja's builtins (`urlencode`, `default`, `tojson`, ...) are
/// left untouched.
pub fn register(env: &mut Environment<'_>) {
    env.add_filter("sha256", sha256_filter);
    env.add_filter("e164", e164_filter);
    env.add_filter("iso8601", iso8601_filter);
    env.add_filter("strftime", strftime_filter);
    env.add_filter("json", json_filter);
    env.add_filter("path", path_filter);
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

// ---------------------------------------------------------------------------
// sha256
// ---------------------------------------------------------------------------

/// Lowercase hex SHA-256 of `input` after trimming surrounding whitespace and
/// lower-casing it.
///
/// Exists because Microsoft Advertising's `HashedEmailAddress` (and similar
/// enhanced-conversion fields) must be the hash of the normalised address, so
/// ` Test@Example.COM ` and `test@example.com` have to hash identically.
pub fn sha256_hex_normalised(input: &str) -> String {
    let normalised = input.trim().to_lowercase();
    let digest = Sha256::digest(normalised.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn sha256_filter(value: &Value) -> Result<String, Error> {
    let text = match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        ValueKind::Number => value.to_string(),
        other => {
            return Err(invalid(format!(
                "sha256 filter needs a string (e.g. an e-mail address) or a number, got {other}"
            )))
        }
    };
    if text.trim().is_empty() {
        return Err(invalid(
            "sha256 filter got an empty string; refusing to hash nothing \
             (expected e.g. an e-mail address)",
        ));
    }
    Ok(sha256_hex_normalised(&text))
}

// ---------------------------------------------------------------------------
// json
// ---------------------------------------------------------------------------

/// In an HTML-escaped template (an HTML mail body) the JSON text is escaped
/// like any other value: `</script>` inside a string must not end a script
/// element. Elsewhere it is inserted as is.
fn json_filter(state: &minijinja::State<'_, '_>, value: &Value) -> Result<Value, Error> {
    match value.kind() {
        ValueKind::Undefined => {
            return Err(invalid(
                "json filter got an undefined value; check the variable name or use default(...)",
            ))
        }
        ValueKind::Invalid => return Err(invalid("json filter got an invalid value")),
        _ => {}
    }
    let text = serde_json::to_string(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            "json filter cannot serialise value",
        )
        .with_source(e)
    })?;
    if matches!(state.auto_escape(), minijinja::AutoEscape::None) {
        Ok(Value::from_safe_string(text))
    } else {
        Ok(Value::from(text))
    }
}

// ---------------------------------------------------------------------------
// path
// ---------------------------------------------------------------------------

/// Percent-encodes `input` as one URL path segment: everything but
/// RFC 3986's unreserved characters is encoded, `/`, `?`, `#`, `%` and `@`
/// included, so a value cannot climb, end the path or start a query.
///
/// Exists because a parameter inside a URL's path is otherwise copied as
/// written (`../../admin?x=1` reached `/admin?x=1`). A segment that is
/// exactly `.` or `..` is an error: URL parsers treat even their encoded
/// forms as a climb.
pub fn encode_path_segment(input: &str) -> Result<String, PathSegmentError> {
    if input == "." || input == ".." {
        return Err(PathSegmentError::DotSegment);
    }
    let mut out = String::with_capacity(input.len());
    for b in input.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Ok(out)
}

/// Why a value cannot be a path segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathSegmentError {
    /// `.` or `..`.
    #[error("path filter: a path segment cannot be `.` or `..`")]
    DotSegment,
}

fn path_filter(value: &Value) -> Result<String, Error> {
    let text =
        match value.kind() {
            ValueKind::Undefined => return Err(invalid(
                "path filter got an undefined value; check the variable name or use default(...)",
            )),
            ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
            ValueKind::Number | ValueKind::Bool => value.to_string(),
            ValueKind::None => String::new(),
            _ => return Err(invalid("path filter takes a string or a number")),
        };
    encode_path_segment(&text).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests;
