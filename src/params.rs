//! The parameter catalogue (the "DDD browser"): every parameter a push can
//! use, with its type, where it comes from and a sample value. Secrets are
//! listed by name with a masked sample, never with their value.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::secret::placeholder;
use crate::config::Catalog;
use crate::event::Event;

/// One entry of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parameter {
    /// How a template writes it: `event.caller_number`, `oauth.ms_mail`.
    pub name: String,
    /// Its type: `string`, `number`, `boolean`, `list`, `object`, `null`, `any`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the value comes from.
    pub source: String,
    /// A sample value (masked for secrets), as the table shows it: JSON
    /// text for event data (`"c-8812"`, `184`). In `--format json` it is
    /// the JSON value itself, not that text again as a string.
    #[serde(serialize_with = "sample_as_json")]
    pub sample: String,
    /// Whether the value is secret (masked everywhere).
    pub secret: bool,
}

/// The sample as a JSON value: the text parsed when it is JSON (`"c-8812"`
/// becomes `c-8812`, `184` a number), `null` for none (`-`), else the text
/// (a placeholder, a truncated value).
fn sample_as_json<S: serde::Serializer>(sample: &str, s: S) -> Result<S::Ok, S::Error> {
    if sample == "-" {
        return s.serialize_none();
    }
    match serde_json::from_str::<serde_json::Value>(sample) {
        Ok(v) => v.serialize(s),
        Err(_) => s.serialize_str(sample),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "object",
    }
}

fn sample_of(v: &serde_json::Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<Parameter>, event_id: &str) {
    if let serde_json::Value::Object(map) = v {
        for (k, child) in map {
            let name = format!("{prefix}.{k}");
            out.push(Parameter {
                name: name.clone(),
                kind: json_kind(child).to_owned(),
                source: format!("event data (sample: event {event_id})"),
                sample: sample_of(child),
                secret: false,
            });
            flatten(&name, child, out, event_id);
        }
    }
}

/// Every parameter the pushes of `catalog` can use. With `event`, the
/// `event.*` entries are that event's fields; without, the `event.*` fields
/// the pushes refer to.
pub fn catalogue(catalog: &Catalog, event: Option<&Event>, now: DateTime<Utc>) -> Vec<Parameter> {
    let mut out = Vec::new();
    match event {
        Some(e) => flatten("event", &e.data, &mut out, &e.id),
        None => {
            let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for p in &catalog.pushes {
                for param in p.compiled.params.iter().filter(|x| x.starts_with("event.")) {
                    used.entry(param.clone())
                        .or_default()
                        .push(p.name().to_owned());
                }
            }
            for (name, pushes) in used {
                out.push(Parameter {
                    name,
                    kind: "any".into(),
                    source: format!("event data (used by {})", pushes.join(", ")),
                    sample: "-".into(),
                    secret: false,
                });
            }
        }
    }
    for (name, account) in &catalog.accounts {
        let host = url::Url::parse(&account.spec.token_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        out.push(Parameter {
            name: format!("oauth.{name}"),
            kind: "string".into(),
            source: format!("access token of OAuth account `{name}` (refreshed at {host})"),
            sample: placeholder(&format!("oauth.{name}")),
            secret: true,
        });
    }
    let first_push = catalog
        .pushes
        .first()
        .map(|p| p.name().to_owned())
        .unwrap_or_else(|| "lead-mail".into());
    let (event_id, event_type, event_time) = match event {
        Some(e) => (
            e.id.clone(),
            e.event_type.clone(),
            e.time.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
        None => (
            "evt-123".into(),
            "call.ended".into(),
            now.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
    };
    for (name, kind, source, sample) in [
        ("push.name", "string", "the push's name", first_push),
        (
            "push.attempt",
            "number",
            "delivery attempt, from 1",
            "1".to_owned(),
        ),
        ("push.event_id", "string", "the event's id", event_id),
        ("push.event_type", "string", "the event's type", event_type),
        (
            "push.event_time",
            "string",
            "the event's time, ISO-8601 UTC",
            event_time,
        ),
        (
            "now",
            "string",
            "render time, ISO-8601 UTC",
            now.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
    ] {
        out.push(Parameter {
            name: name.into(),
            kind: kind.into(),
            source: source.into(),
            sample: if sample.starts_with('"') {
                sample
            } else if kind == "string" {
                format!("{sample:?}")
            } else {
                sample
            },
            secret: false,
        });
    }
    out
}

/// The catalogue as an aligned table.
pub fn table(params: &[Parameter]) -> String {
    let headers = ["PARAMETER", "TYPE", "SAMPLE", "SOURCE"];
    let rows: Vec<[&str; 4]> = params
        .iter()
        .map(|p| {
            [
                p.name.as_str(),
                p.kind.as_str(),
                p.sample.as_str(),
                p.source.as_str(),
            ]
        })
        .collect();
    let mut widths = headers.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 3 {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers);
    for r in rows {
        out.push_str(&line(r));
    }
    out
}
