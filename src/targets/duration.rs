//! [`DurationText`]: a duration as the user writes it in a target or a
//! retry section. Target vocabulary, so `targets` does not reach up into
//! `config` for it; `config` re-exports it.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as humans write it (`30s`, `5m`, `1h 30m`, `2d`),
/// parsed when the file is loaded so a typo is reported with its position.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl fmt::Debug for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for DurationText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(DurationText)
            .map_err(|e| {
                serde::de::Error::custom(format_args!(
                    "invalid duration {text:?}: {e}; expected e.g. `30s`, `5m`, `1h 30m`, `2d`"
                ))
            })
    }
}

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration such as `30s`, `5m`, `1h 30m`, `24h`, `2d`.",
            "type": "string",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Zµ]+(\\s*[0-9]+\\s*[a-zA-Zµ]+)*\\s*$"
        })
    }
}
