//! The template leaves of a target section, walked in place: how `check`
//! finds every template to compile and how a render fills them in, on the
//! section's own type (no JSON round trip), each leaf named by its YAML
//! path relative to the section (`to[0]`, `headers.X-Key`, `json.lead.id`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::template::TemplateText;

/// One template leaf.
pub enum Leaf<'a> {
    /// A template field.
    Text(&'a mut TemplateText),
    /// A string inside a structured JSON body: its rendered output may
    /// replace it with any JSON value (a single parameter keeps its type).
    Json(&'a mut Value),
}

/// Hands every leaf of a section to a callback, with its path.
pub struct Walk<'f, E> {
    f: &'f mut dyn FnMut(&str, Leaf<'_>) -> Result<(), E>,
}

impl<'f, E> Walk<'f, E> {
    /// A walk calling `f`.
    pub fn new(f: &'f mut dyn FnMut(&str, Leaf<'_>) -> Result<(), E>) -> Self {
        Walk { f }
    }

    /// A template field.
    pub fn text(&mut self, path: &str, t: &mut TemplateText) -> Result<(), E> {
        (self.f)(path, Leaf::Text(t))
    }

    /// An optional template field.
    pub fn opt(&mut self, path: &str, t: &mut Option<TemplateText>) -> Result<(), E> {
        match t {
            Some(t) => self.text(path, t),
            None => Ok(()),
        }
    }

    /// A list of templates: `path[i]`.
    pub fn list(&mut self, path: &str, items: &mut [TemplateText]) -> Result<(), E> {
        for (i, t) in items.iter_mut().enumerate() {
            self.text(&format!("{path}[{i}]"), t)?;
        }
        Ok(())
    }

    /// A map of templates: `path.key`.
    pub fn map(&mut self, path: &str, m: &mut BTreeMap<String, TemplateText>) -> Result<(), E> {
        for (k, t) in m.iter_mut() {
            self.text(&format!("{path}.{k}"), t)?;
        }
        Ok(())
    }

    /// Every string of a structured JSON body: `path.key`, `path[i]`.
    pub fn json(&mut self, path: &str, v: &mut Value) -> Result<(), E> {
        match v {
            Value::String(_) => (self.f)(path, Leaf::Json(v)),
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.json(&format!("{path}[{i}]"), item)?;
                }
                Ok(())
            }
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    self.json(&format!("{path}.{k}"), item)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::config::PushDoc;
    use crate::targets::TargetSpec;

    /// Every string of a section as serialised, by path: what a template
    /// could be written in.
    fn strings(v: &Value, path: String, out: &mut BTreeSet<String>) {
        match v {
            Value::String(_) => {
                out.insert(path);
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    strings(item, format!("{path}[{i}]"), out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    strings(item, child, out);
                }
            }
            _ => {}
        }
    }

    /// Fields that name things (accounts, hosts, URLs set by the operator,
    /// enums): plain strings, never templates.
    const NAMES: &[&str] = &[
        "account",
        "base_url",
        "method",
        "host",
        "tls",
        "content_type",
        "auth.account",
        "signing.header",
        "signing.timestamp_header",
        "importance",
    ];

    #[test]
    fn every_string_field_of_every_target_is_a_template_leaf_or_a_name() {
        let doc: PushDoc = serde_json::from_value(json!({
            "name": "all", "on": "x",
            "http": {
                "method": "POST", "url": "u", "headers": {"H": "h"}, "query": {"q": "q"},
                "json": {"a": ["b", {"c": "d"}], "n": 1}, "form": {"f": "f"}, "raw": "r",
                "content_type": "text/plain", "success": [200], "timeout": "5s",
                "signing": {"secret": "s", "header": "X-S", "timestamp_header": "X-T"}
            },
            "graph_mail": {
                "account": "a", "user": "u", "from": "f", "to": ["t"], "cc": ["c"], "bcc": ["b"],
                "reply_to": ["r"], "subject": "s", "text": "t", "html": "h",
                "attachments": [{"name": "n", "content_type": "c", "path": "p", "content_base64": "b"}],
                "headers": {"x-a": "a"}, "save_to_sent_items": true, "base_url": "https://g"
            },
            "bing_ads": {
                "account": "a", "developer_token": "d", "customer_id": "1", "customer_account_id": "2",
                "conversion": {
                    "name": "n", "time": "t", "click_id": "c", "value": "1", "currency": "EUR",
                    "hashed_email": "e", "hashed_phone": "p",
                    "external_attribution_credit": "0.5", "external_attribution_model": "m"
                },
                "base_url": "https://b"
            },
            "smtp": {
                "host": "h", "port": 25, "tls": "none",
                "auth": {"username": "u", "password": "p", "account": "a"},
                "from": "f", "to": ["t"], "cc": ["c"], "bcc": ["b"], "reply_to": ["r"],
                "subject": "s", "text": "t", "html": "h", "timeout": "5s"
            },
            "teams_message": {
                "account": "a", "team": "t", "channel": "c", "chat": "c", "subject": "s",
                "text": "t", "html": "h", "importance": "high", "base_url": "https://g"
            }
        }))
        .unwrap();
        let targets = doc.targets();
        assert_eq!(
            targets.len(),
            crate::targets::KEYS.len(),
            "every target above"
        );
        for mut target in targets {
            let mut written = BTreeSet::new();
            strings(
                &serde_json::to_value(&target).unwrap(),
                String::new(),
                &mut written,
            );
            written.retain(|p| !NAMES.contains(&p.as_str()) && p != "timeout");
            let mut walked = BTreeSet::new();
            target
                .leaves(&mut |path, _| {
                    walked.insert(path.to_owned());
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert_eq!(walked, written, "{}", target.key());
        }
    }

    #[test]
    fn a_render_replaces_leaves_in_place_and_json_keeps_types() {
        let mut target = TargetSpec::Http(
            serde_json::from_value(json!({"url": "u", "json": {"n": "<< n >>", "s": "x"}}))
                .unwrap(),
        );
        target
            .leaves(&mut |path, leaf| {
                match leaf {
                    Leaf::Text(t) => t.0 = format!("rendered {path}"),
                    Leaf::Json(v) if path == "json.n" => *v = json!(42),
                    Leaf::Json(v) => *v = json!("y"),
                }
                Ok::<(), ()>(())
            })
            .unwrap();
        let TargetSpec::Http(t) = target else {
            unreachable!()
        };
        assert_eq!(t.url.as_str(), "rendered url");
        assert_eq!(t.json, Some(json!({"n": 42, "s": "y"})));
    }
}
