//! [`TemplateText`]: the type of every field a user writes as a template.
//! It lives in `template`, a leaf, so that the targets (which declare their
//! fields with it) and the config (which loads them) both depend on it
//! without depending on each other.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string field that is a template: `<< … >>` parameters are filled at
/// render time. YAML numbers and booleans are accepted and kept as their text
/// (`value: 120.5`), because the rendered result is text anyway.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TemplateText(pub String);

impl TemplateText {
    /// The template source as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TemplateText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TemplateText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TemplateText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TemplateText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TemplateText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (a template), a number or a boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<TemplateText, E> {
                Ok(TemplateText(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for TemplateText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TemplateText".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A template: text with `<< parameter >>` placeholders, e.g. `<< event.caller_number >>`.",
            "type": ["string", "number", "boolean"]
        })
    }
}
