//! The `e164` filter and [`normalise_e164`], kept apart because phone
//! number normalisation (country codes, national prefixes, the countries
//! that keep their leading zero) is the largest single rule set here.

use minijinja::value::{Value, ValueKind};
use minijinja::Error;

use super::invalid;

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

pub(super) fn e164_filter(value: &Value, default_country: Option<Value>) -> Result<String, Error> {
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
