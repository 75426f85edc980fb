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

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Utc};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use sha2::{Digest, Sha256};

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
// e164
// ---------------------------------------------------------------------------

const E164_FORM: &str = "expected +<country code><number>, 00<country code><number>, \
or a national number together with a default country code such as e164(\"49\")";

/// Why a phone number could not be normalised to E.164.
///
/// Exists so callers can tell the failure modes apart; the messages describe
/// the problem and the expected input form but never repeat the number itself
/// (phone numbers are personal data), at most its digit count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E164Error {
    /// The input was empty or only whitespace.
    #[error("phone number is empty; {E164_FORM}")]
    Empty,
    /// The input contained a letter.
    #[error(
        "phone number contains a letter; only digits, spaces, '-', '.', '(', ')' \
         and a leading '+' are allowed ({E164_FORM})"
    )]
    Letter,
    /// The input contained a character that is neither a digit, a letter nor
    /// an accepted separator. The payload describes the character class (it
    /// names the character only for ASCII punctuation).
    #[error(
        "phone number contains {0}; only digits, spaces, '-', '.', '(', ')' \
         and a leading '+' are allowed ({E164_FORM})"
    )]
    InvalidCharacter(String),
    /// A `+` appeared somewhere other than the very start.
    #[error("phone number has a '+' that is not at the start; {E164_FORM}")]
    MisplacedPlus,
    /// No `+`/`00` prefix, no default country code, and not an 11-digit NANP
    /// number.
    #[error(
        "phone number has no international prefix ('+' or '00') and no default \
         country code was given; {E164_FORM}"
    )]
    MissingCountryCode,
    /// The country calling code would start with `0`, which no country code does.
    #[error(
        "phone number's country code starts with 0, which is not a valid country code; {E164_FORM}"
    )]
    CountryCodeStartsWithZero,
    /// The number does not have 8 to 15 digits (country code included).
    #[error(
        "phone number has {digits} digits including the country code, E.164 needs 8 to 15; {E164_FORM}"
    )]
    DigitCount {
        /// Number of digits of the would-be E.164 number (country code included).
        digits: usize,
    },
    /// The default country code argument is not 1 to 3 digits without a
    /// leading zero.
    #[error(
        "default country code must be 1 to 3 digits not starting with 0, optionally \
         with a leading '+', e.g. e164(\"49\") or e164(1)"
    )]
    InvalidDefaultCountry,
}

/// Country codes whose national numbers keep their leading `0` in
/// international format (it is not a trunk prefix there): Italy, Côte d'Ivoire
/// and San Marino.
const ZERO_KEEPING_COUNTRIES: &[&str] = &["39", "225", "378"];

/// Normalises a phone number to E.164 (`+` followed by 8 to 15 digits).
///
/// Exists because push targets (ad platforms' enhanced conversions, SMS
/// gateways) accept only E.164, while source data carries numbers as people
/// write them.
///
/// Accepted input: digits separated by spaces, `-`, `.`, `(` or `)`, with
/// either a leading `+` or a leading `00` international prefix. A `(0)` group
/// after an international prefix (`+49 (0)30 1234567`) is dropped.
///
/// `default_country` (e.g. `"49"`, `"+1"`) applies to numbers without an
/// international prefix: a leading trunk `0` is replaced by it (`030 1234567`
/// → `+49301234567`; for Italy, Côte d'Ivoire and San Marino the `0` is kept),
/// and a number without trunk `0` gets it prepended (`415 555 0100` with `1` →
/// `+14155550100`). With `1` as default, an 11-digit number already starting
/// with `1` is taken as `+1…`. Without a default, only an 11-digit number
/// starting with `1` is accepted (as NANP). The `011` prefix is not recognised.
pub fn normalise_e164(input: &str, default_country: Option<&str>) -> Result<String, E164Error> {
    let default_country = default_country.map(parse_country_code).transpose()?;

    let text = input.trim();
    if text.is_empty() {
        return Err(E164Error::Empty);
    }

    let (has_plus, rest) = match text.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, text),
    };

    // Collect digits; remember the digits inside each parenthesised group so
    // that a `(0)` after an international prefix can be dropped.
    let mut digits = String::new();
    let mut group: Option<(usize, String)> = None; // (start offset in `digits`, group digits)
    let mut zero_groups: Vec<usize> = Vec::new(); // offsets in `digits` of `(0)` groups
    for c in rest.chars() {
        match c {
            '0'..='9' => {
                digits.push(c);
                if let Some((_, g)) = group.as_mut() {
                    g.push(c);
                }
            }
            '(' => group = Some((digits.len(), String::new())),
            ')' => {
                if let Some((start, g)) = group.take() {
                    if g == "0" {
                        zero_groups.push(start);
                    }
                }
            }
            ' ' | '-' | '.' => {}
            c if c.is_whitespace() => {}
            '+' => return Err(E164Error::MisplacedPlus),
            c if c.is_alphabetic() => return Err(E164Error::Letter),
            c => return Err(E164Error::InvalidCharacter(describe_char(c))),
        }
    }

    let international = if has_plus {
        Some(digits.as_str())
    } else {
        digits.strip_prefix("00")
    };

    let full = match international {
        Some(intl) => {
            // Offset of the international part within `digits`.
            let shift = digits.len() - intl.len();
            let mut out = String::with_capacity(intl.len());
            for (i, c) in intl.char_indices() {
                let at = i + shift;
                // Drop a `(0)` trunk marker, but never the first digit (that
                // would be the country code itself).
                if i > 0 && zero_groups.contains(&at) {
                    continue;
                }
                out.push(c);
            }
            out
        }
        None => match default_country {
            Some(cc) => {
                if cc == "1" && digits.len() == 11 && digits.starts_with('1') {
                    digits
                } else if let Some(national) = digits.strip_prefix('0') {
                    if ZERO_KEEPING_COUNTRIES.contains(&cc) {
                        format!("{cc}{digits}")
                    } else {
                        format!("{cc}{national}")
                    }
                } else {
                    format!("{cc}{digits}")
                }
            }
            None => {
                if digits.len() == 11 && digits.starts_with('1') {
                    digits
                } else {
                    return Err(E164Error::MissingCountryCode);
                }
            }
        },
    };

    if !(8..=15).contains(&full.len()) {
        return Err(E164Error::DigitCount { digits: full.len() });
    }
    if full.starts_with('0') {
        return Err(E164Error::CountryCodeStartsWithZero);
    }
    Ok(format!("+{full}"))
}

fn parse_country_code(cc: &str) -> Result<&str, E164Error> {
    let cc = cc.trim();
    let cc = cc.strip_prefix('+').unwrap_or(cc);
    let valid = (1..=3).contains(&cc.len())
        && cc.bytes().all(|b| b.is_ascii_digit())
        && !cc.starts_with('0');
    if valid {
        Ok(cc)
    } else {
        Err(E164Error::InvalidDefaultCountry)
    }
}

fn describe_char(c: char) -> String {
    if c.is_ascii_punctuation() {
        format!("the character '{c}'")
    } else if c.is_control() {
        "a control character".to_owned()
    } else if c.is_numeric() {
        "a non-ASCII digit".to_owned()
    } else {
        "a non-ASCII character".to_owned()
    }
}

fn e164_filter(value: &Value, default_country: Option<Value>) -> Result<String, Error> {
    let number = match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        ValueKind::Number if value.is_integer() => value.to_string(),
        other => {
            return Err(invalid(format!(
            "e164 filter needs a phone number as a string (or integer), got {other}; {E164_FORM}"
        )))
        }
    };
    let cc = match default_country {
        None => None,
        Some(cc) => match cc.kind() {
            ValueKind::String => Some(cc.as_str().unwrap_or_default().to_owned()),
            ValueKind::Number if cc.is_integer() => Some(cc.to_string()),
            _ => return Err(invalid(E164Error::InvalidDefaultCountry.to_string())),
        },
    };
    normalise_e164(&number, cc.as_deref()).map_err(|e| invalid(e.to_string()))
}

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

fn iso8601_filter(value: &Value, millis: Option<Value>, kwargs: Kwargs) -> Result<String, Error> {
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

fn strftime_filter(value: &Value, fmt: &str) -> Result<String, Error> {
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
mod tests {
    use super::*;

    // printf %s test@example.com | sha256sum
    const TEST_EMAIL_SHA256: &str =
        "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b";

    fn env() -> Environment<'static> {
        let mut env = Environment::new();
        register(&mut env);
        env
    }

    fn render(tmpl: &str, ctx: Value) -> Result<String, Error> {
        env().render_str(tmpl, ctx)
    }

    fn ok(tmpl: &str, ctx: Value) -> String {
        match render(tmpl, ctx) {
            Ok(s) => s,
            Err(e) => panic!("{tmpl}: {e:#}"),
        }
    }

    fn err(tmpl: &str, ctx: Value) -> Error {
        match render(tmpl, ctx) {
            Ok(s) => panic!("{tmpl}: expected an error, got {s:?}"),
            Err(e) => e,
        }
    }

    fn v(x: impl Into<Value>) -> Value {
        x.into()
    }

    fn j(x: serde_json::Value) -> Value {
        Value::from(minijinja::value::Serde(x))
    }

    fn none() -> Value {
        Value::from(())
    }

    #[test]
    fn sha256_normalises_email() {
        assert_eq!(sha256_hex_normalised("test@example.com"), TEST_EMAIL_SHA256);
        assert_eq!(
            ok(
                "{{ e|sha256 }}",
                j(serde_json::json!({"e": " Test@Example.COM "}))
            ),
            TEST_EMAIL_SHA256
        );
        assert_eq!(
            ok("{{ 'test@example.com'|sha256 }}", none()),
            TEST_EMAIL_SHA256
        );
    }

    #[test]
    fn sha256_numbers_and_errors() {
        assert_eq!(ok("{{ 42|sha256 }}", none()), sha256_hex_normalised("42"));
        let e = err("{{ x|sha256 }}", none());
        assert_eq!(e.kind(), ErrorKind::InvalidOperation);
        err("{{ '   '|sha256 }}", none());
        err("{{ [1]|sha256 }}", none());
    }

    #[test]
    fn e164_valid() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("+49 30 1234567", None, "+49301234567"),
            ("0049 (30) 123-4567", None, "+49301234567"),
            ("+49 (0)30 1234567", None, "+49301234567"),
            ("030 1234567", Some("49"), "+49301234567"),
            ("030 1234567", Some("+49"), "+49301234567"),
            ("415 555 0100", Some("1"), "+14155550100"),
            ("1 (415) 555-0100", None, "+14155550100"),
            ("1.415.555.0100", Some("1"), "+14155550100"),
            ("06 6982 1234", Some("39"), "+390669821234"),
            ("+44 20 7946 0958", Some("49"), "+442079460958"),
            ("  +12345678  ", None, "+12345678"),
            ("+123456789012345", None, "+123456789012345"),
        ];
        for (input, cc, expected) in cases {
            assert_eq!(
                normalise_e164(input, *cc).as_deref(),
                Ok(*expected),
                "{input} {cc:?}"
            );
        }
    }

    #[test]
    fn e164_invalid() {
        let cases: &[(&str, Option<&str>, E164Error)] = &[
            ("", None, E164Error::Empty),
            ("   ", Some("49"), E164Error::Empty),
            ("+49 30 CALL-NOW", None, E164Error::Letter),
            (
                "+49 30/1234567",
                None,
                E164Error::InvalidCharacter("the character '/'".into()),
            ),
            ("49+301234567", None, E164Error::MisplacedPlus),
            ("030 1234567", None, E164Error::MissingCountryCode),
            ("+49 1234", None, E164Error::DigitCount { digits: 6 }),
            (
                "+1234567890123456",
                None,
                E164Error::DigitCount { digits: 16 },
            ),
            ("+", None, E164Error::DigitCount { digits: 0 }),
            ("+0123456789", None, E164Error::CountryCodeStartsWithZero),
            ("000123456789", None, E164Error::CountryCodeStartsWithZero),
            ("0301234567", Some("0"), E164Error::InvalidDefaultCountry),
            ("0301234567", Some("1234"), E164Error::InvalidDefaultCountry),
            ("0301234567", Some("4a"), E164Error::InvalidDefaultCountry),
        ];
        for (input, cc, expected) in cases {
            assert_eq!(
                normalise_e164(input, *cc).as_ref(),
                Err(expected),
                "{input} {cc:?}"
            );
        }
    }

    #[test]
    fn e164_filter_renders_and_hides_digits() {
        let ctx = j(serde_json::json!({"p": "030 1234567", "n": 4930123456_i64}));
        assert_eq!(ok("{{ p|e164('49') }}", ctx.clone()), "+49301234567");
        assert_eq!(ok("{{ p|e164(49) }}", ctx.clone()), "+49301234567");
        assert_eq!(ok("{{ n|e164(49) }}", ctx.clone()), "+494930123456");
        assert_eq!(ok("{{ '+1 415 555 0100'|e164 }}", none()), "+14155550100");

        let e = err("{{ p|e164 }}", ctx.clone());
        assert_eq!(e.kind(), ErrorKind::InvalidOperation);
        let msg = e.to_string();
        assert!(msg.contains("no international prefix"), "{msg}");
        assert!(!msg.contains("1234567"), "{msg}");

        let e = err("{{ '+49 9876'|e164 }}", none());
        let msg = e.to_string();
        assert!(msg.contains("6 digits"), "{msg}");
        assert!(msg.contains("8 to 15"), "{msg}");
        assert!(msg.contains("+<country code>"), "{msg}");
        assert!(!msg.contains("9876"), "{msg}");

        let e = err("{{ '+49 98 76 x 54321'|e164 }}", none());
        let msg = e.to_string();
        assert!(msg.contains("letter"), "{msg}");
        assert!(!msg.contains("54321") && !msg.contains("98 76"), "{msg}");

        err("{{ p|e164(true) }}", ctx.clone());
        err("{{ 1.5|e164 }}", none());
        err("{{ x|e164 }}", none());
    }

    #[test]
    fn iso8601_input_forms() {
        let cases: &[(Value, &str)] = &[
            (v("2026-07-05T06:20:38+02:00"), "2026-07-05T04:20:38Z"),
            (v("2026-07-04T23:20:38-05:00"), "2026-07-05T04:20:38Z"),
            (v("2026-07-05T04:20:38.495Z"), "2026-07-05T04:20:38Z"),
            (v("2026-07-05 04:20:38"), "2026-07-05T04:20:38Z"),
            (v("2026-07-05T04:20:38"), "2026-07-05T04:20:38Z"),
            (v("2026-07-05 04:20:38.9"), "2026-07-05T04:20:38Z"),
            (v(1_783_225_238_i64), "2026-07-05T04:20:38Z"),
            (v(1_783_225_238.495_f64), "2026-07-05T04:20:38Z"),
            (v(0), "1970-01-01T00:00:00Z"),
            (v(-1.5), "1969-12-31T23:59:58Z"),
        ];
        for (input, expected) in cases {
            let ctx = minijinja::context! { t => input.clone() };
            assert_eq!(ok("{{ t|iso8601 }}", ctx), *expected, "{input:?}");
        }
    }

    #[test]
    fn iso8601_millis() {
        let cases: &[(Value, &str)] = &[
            (
                v("2026-07-05T06:20:38.495+02:00"),
                "2026-07-05T04:20:38.495Z",
            ),
            (
                v("2026-07-05T06:20:38.4959+02:00"),
                "2026-07-05T04:20:38.495Z",
            ),
            (v("2026-07-05T06:20:38+02:00"), "2026-07-05T04:20:38.000Z"),
            (v("2026-07-05 04:20:38.495"), "2026-07-05T04:20:38.495Z"),
            (v(1_783_225_238.495_f64), "2026-07-05T04:20:38.495Z"),
            (v(1_783_225_238_i64), "2026-07-05T04:20:38.000Z"),
        ];
        for (input, expected) in cases {
            let ctx = minijinja::context! { t => input.clone() };
            assert_eq!(ok("{{ t|iso8601(millis=true) }}", ctx.clone()), *expected);
            assert_eq!(ok("{{ t|iso8601(true) }}", ctx), *expected);
        }
        assert_eq!(
            ok(
                "{{ '2026-07-05T04:20:38.495Z'|iso8601(millis=false) }}",
                none()
            ),
            "2026-07-05T04:20:38Z"
        );
        err("{{ 0|iso8601(millis='yes') }}", none());
        err("{{ 0|iso8601(milis=true) }}", none());
    }

    #[test]
    fn iso8601_errors_name_forms() {
        for tmpl in [
            "{{ 'yesterday'|iso8601 }}",
            "{{ '2026-13-05T04:20:38Z'|iso8601 }}",
            "{{ '2026-07-05'|iso8601 }}",
        ] {
            let e = err(tmpl, none());
            assert_eq!(e.kind(), ErrorKind::InvalidOperation);
            assert!(e.to_string().contains("RFC 3339"), "{e}");
        }
        err("{{ x|iso8601 }}", none());
        err("{{ true|iso8601 }}", none());
        err("{{ 1e300|iso8601 }}", none());
        err("{{ 9223372036854775807|iso8601 }}", none());
        // Milliseconds passed as seconds land in year 58 000: rejected with a hint.
        let e = err("{{ 1783225238495|iso8601 }}", none());
        assert!(e.to_string().contains("milliseconds"), "{e}");
        assert!(e.to_string().contains(" 1783225238495 "), "{e}");
        err("{{ -62167219201|iso8601 }}", none());
        assert_eq!(
            ok("{{ -62167219200|iso8601 }}", none()),
            "0000-01-01T00:00:00Z"
        );
        assert_eq!(
            ok("{{ 253402300799|iso8601 }}", none()),
            "9999-12-31T23:59:59Z"
        );
        err("{{ 253402300800|iso8601 }}", none());
        err("{{ '0000-01-01T00:30:00+01:00'|iso8601 }}", none());
    }

    #[test]
    fn strftime_formats_in_utc() {
        assert_eq!(
            ok(
                "{{ '2026-07-05T06:20:38+02:00'|strftime('%Y/%m/%d %H:%M:%S %Z') }}",
                none()
            ),
            "2026/07/05 04:20:38 UTC"
        );
        assert_eq!(
            ok("{{ 1783225238|strftime('%d.%m.%Y') }}", none()),
            "05.07.2026"
        );
    }

    #[test]
    fn strftime_bad_format_errors() {
        for fmt in ["%Q", "%", "%Y-%", "%.9x"] {
            let tmpl = format!("{{{{ 0|strftime('{fmt}') }}}}");
            let e = err(&tmpl, none());
            assert_eq!(e.kind(), ErrorKind::InvalidOperation);
            assert!(e.to_string().contains("invalid format string"), "{e}");
        }
        err("{{ 0|strftime }}", none());
    }

    #[test]
    fn json_round_trips_awkward_string() {
        let s = "say \"hi\" \\ back\nslash <b>&'tag'</b> 🦀";
        let out = ok("{{ s|json }}", j(serde_json::json!({ "s": s })));
        assert!(out.contains("<b>&'tag'</b>"), "{out}");
        let back: String = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(back, s);
    }

    #[test]
    fn json_compact_and_safe() {
        let ctx = j(serde_json::json!({ "o": {"a": [1, 2.5, null, true], "b": "<x>"} }));
        let out = ok("{{ o|json }}", ctx.clone());
        assert_eq!(out, r#"{"a":[1,2.5,null,true],"b":"<x>"}"#);

        // In an HTML-escaped template the JSON text is escaped like any
        // value (a `</script>` in a string must not close a script element).
        let mut env = env();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.add_template("t.html", "{{ o|json }}")
            .expect("template");
        let html = env
            .get_template("t.html")
            .and_then(|t| t.render(ctx))
            .expect("render");
        assert_eq!(
            html,
            r#"{&quot;a&quot;:[1,2.5,null,true],&quot;b&quot;:&quot;&lt;x&gt;&quot;}"#
        );

        let e = err("{{ missing|json }}", none());
        assert_eq!(e.kind(), ErrorKind::InvalidOperation);
        assert_eq!(ok("{{ none|json }}", none()), "null");
    }

    #[test]
    fn path_encodes_one_segment() {
        assert_eq!(
            encode_path_segment("../../admin?x=1#frag").unwrap(),
            "..%2F..%2Fadmin%3Fx%3D1%23frag"
        );
        assert_eq!(encode_path_segment("a b/ü").unwrap(), "a%20b%2F%C3%BC");
        assert_eq!(encode_path_segment("c-8812_x.y~").unwrap(), "c-8812_x.y~");
        assert!(encode_path_segment("..").is_err());
        assert!(encode_path_segment(".").is_err());
        let u = url::Url::parse(&format!(
            "https://h.test/api/{}",
            encode_path_segment("../../admin?x=1#f").unwrap()
        ))
        .unwrap();
        assert_eq!(u.path(), "/api/..%2F..%2Fadmin%3Fx%3D1%23f");
        assert_eq!(u.query(), None);
        assert_eq!(ok("{{ n|path }}", j(serde_json::json!({"n": 42}))), "42");
    }

    #[test]
    fn awkward_inputs_never_panic() {
        let strings = [
            "",
            " ",
            "+",
            "00",
            "(",
            ")",
            "((0))",
            "+(0)",
            "+0",
            "0",
            "\0",
            "\u{feff}+49 30",
            "１２３４５６７８９",
            "+٤٩١٢٣٤٥٦٧٨",
            "🦀🦀🦀",
            "\u{202e}+4930123456",
            "9999999999999999999999999999999999999999",
            "-",
            "%",
            "%%%%",
            "%.3f",
            "%:z",
            "%#z",
            "%s",
            "%+",
            "%-",
            "%E",
            "262143-12-31T23:59:59Z",
            "+262143-12-31T23:59:59Z",
            "-262144-01-01T00:00:00Z",
            "9999-12-31T23:59:60Z",
            "2026-02-30T00:00:00Z",
            "2026-07-05T24:00:00Z",
            "2026-07-05T04:20:38+99:00",
            "2026-07-05T04:20:38.9999999999999Z",
            "ǅ",
            "İ",
        ];
        let numbers = [
            v(i64::MAX),
            v(i64::MIN),
            v(u64::MAX),
            v(f64::MAX),
            v(f64::MIN),
            v(f64::NAN),
            v(f64::INFINITY),
            v(-0.0_f64),
            v(0.999_999_999_9_f64),
            v(-0.000_000_1_f64),
            v(8.2e12_f64),
            v(-8.3e12_f64),
            v(1e15_f64),
        ];
        let mut values: Vec<Value> = strings.iter().map(|s| v(*s)).collect();
        values.extend(numbers);
        values.extend([
            none(),
            Value::UNDEFINED,
            v(true),
            v(vec![1, 2]),
            j(serde_json::json!({"k": f64::NAN})),
            Value::from_bytes(vec![0xff, 0x00]),
        ]);
        let templates = [
            "{{ x|sha256 }}",
            "{{ x|e164 }}",
            "{{ x|e164(a) }}",
            "{{ a|e164(x) }}",
            "{{ x|iso8601 }}",
            "{{ x|iso8601(millis=true) }}",
            "{{ 0|iso8601(x) }}",
            "{{ x|strftime('%c %s %.3f %:z') }}",
            "{{ 0|strftime(x) }}",
            "{{ x|json }}",
        ];
        for x in &values {
            for a in ["49", "1", "39"] {
                let ctx = Value::from_iter([("x", x.clone()), ("a", Value::from(a))]);
                for tmpl in templates {
                    let _ = render(tmpl, ctx.clone());
                }
            }
        }
        for s in strings {
            let _ = sha256_hex_normalised(s);
            let _ = normalise_e164(s, None);
            let _ = normalise_e164(s, Some(s));
            let _ = normalise_e164(s, Some("39"));
            let _ = parse_timestamp(s);
        }
        for f in [f64::NAN, f64::MAX, -1e15, 1e15, -0.0, 0.999_999_9] {
            let _ = timestamp_from_unix_seconds(f);
        }
    }
}
