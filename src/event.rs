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
    pub time: DateTime<Utc>,
    /// The event's fields: `event.caller_number` is `data.caller_number`.
    #[serde(default = "empty_object")]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub data: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Why an event was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The text is not JSON or does not have the event's shape.
    #[error("malformed event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A field has an unusable value.
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl Event {
    /// Parses and validates an event from JSON text.
    pub fn from_json(text: &str) -> Result<Event, EventError> {
        let event: Event = serde_json::from_str(text)?;
        event.validate()?;
        Ok(event)
    }

    /// Checks what serde cannot: non-empty id and type, and `data` an object.
    pub fn validate(&self) -> Result<(), EventError> {
        if self.id.trim().is_empty() {
            return Err(EventError::Invalid("`id` must not be empty".into()));
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
