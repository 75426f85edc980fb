//! The template leaves of a target section, mapped: a render turns the
//! section as written (`Spec<TemplateText>`) into its rendered form
//! (`Spec<String>`, the [`RenderedTarget`](super::RenderedTarget)) one leaf
//! at a time, and `check` lists the same leaves to compile them. Each leaf
//! is named by its YAML path relative to the section (`to[0]`,
//! `headers.X-Key`, `json.lead.id`). One map per target (its `fill`), so
//! what is compiled is exactly what is rendered.

use std::collections::BTreeMap;
use std::convert::Infallible;

use serde_json::{Map, Value};

use crate::template::TemplateText;

/// What a template leaf becomes: a target's `fill` calls it for every leaf
/// and builds the rendered section from the answers.
pub trait Fill {
    /// Why a leaf cannot be filled.
    type Error;

    /// The output of a template field.
    fn text(&mut self, path: &str, t: &TemplateText) -> Result<String, Self::Error>;

    /// The output of a string inside a structured JSON body: any JSON value
    /// (a single parameter keeps its type).
    fn json_text(&mut self, path: &str, s: &str) -> Result<Value, Self::Error>;

    /// An optional template field.
    fn opt(&mut self, path: &str, t: &Option<TemplateText>) -> Result<Option<String>, Self::Error> {
        t.as_ref().map(|t| self.text(path, t)).transpose()
    }

    /// A list of templates: `path[i]`.
    fn list(&mut self, path: &str, items: &[TemplateText]) -> Result<Vec<String>, Self::Error> {
        items
            .iter()
            .enumerate()
            .map(|(i, t)| self.text(&format!("{path}[{i}]"), t))
            .collect()
    }

    /// A map of templates: `path.key`.
    fn map(
        &mut self,
        path: &str,
        m: &BTreeMap<String, TemplateText>,
    ) -> Result<BTreeMap<String, String>, Self::Error> {
        m.iter()
            .map(|(k, t)| Ok((k.clone(), self.text(&format!("{path}.{k}"), t)?)))
            .collect()
    }

    /// Every string of a structured JSON body (`path.key`, `path[i]`);
    /// numbers, booleans and nulls stay as written.
    fn json(&mut self, path: &str, v: &Value) -> Result<Value, Self::Error> {
        match v {
            Value::String(s) => self.json_text(path, s),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.json(&format!("{path}[{i}]"), item))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, item)| Ok((k.clone(), self.json(&format!("{path}.{k}"), item)?)))
                .collect::<Result<Map<_, _>, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }
}

/// One template leaf of a section as written: what `check` compiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Its YAML path relative to the section (`to[0]`, `json.lead.id`).
    pub path: String,
    /// The text as written.
    pub source: String,
    /// A string inside a structured JSON body (its output may be any JSON value).
    pub json: bool,
}

/// A [`Fill`] that keeps every leaf as written and lists it.
#[derive(Default)]
pub(crate) struct Collect(pub(crate) Vec<Leaf>);

impl Fill for Collect {
    type Error = Infallible;

    fn text(&mut self, path: &str, t: &TemplateText) -> Result<String, Infallible> {
        self.0.push(Leaf {
            path: path.to_owned(),
            source: t.0.clone(),
            json: false,
        });
        Ok(t.0.clone())
    }

    fn json_text(&mut self, path: &str, s: &str) -> Result<Value, Infallible> {
        self.0.push(Leaf {
            path: path.to_owned(),
            source: s.to_owned(),
            json: true,
        });
        Ok(Value::String(s.to_owned()))
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
        for target in targets {
            let mut written = BTreeSet::new();
            strings(
                &serde_json::to_value(&target).unwrap(),
                String::new(),
                &mut written,
            );
            written.retain(|p| !NAMES.contains(&p.as_str()) && p != "timeout");
            let walked: BTreeSet<String> = target.leaves().into_iter().map(|l| l.path).collect();
            assert_eq!(walked, written, "{}", target.key());
        }
    }

    /// Fills every leaf with its path, and `json.n` with a number.
    struct ByPath;

    impl Fill for ByPath {
        type Error = ();
        fn text(&mut self, path: &str, _: &TemplateText) -> Result<String, ()> {
            Ok(format!("rendered {path}"))
        }
        fn json_text(&mut self, path: &str, _: &str) -> Result<Value, ()> {
            Ok(if path == "json.n" {
                json!(42)
            } else {
                json!("y")
            })
        }
    }

    #[test]
    fn a_render_fills_every_leaf_and_json_keeps_types() {
        let target = TargetSpec::Http(
            serde_json::from_value(json!({"url": "u", "json": {"n": "<< n >>", "s": "x"}}))
                .unwrap(),
        );
        let TargetSpec::Http(t) = target.fill(&mut ByPath).unwrap() else {
            unreachable!()
        };
        assert_eq!(t.url, "rendered url");
        assert_eq!(t.json, Some(json!({"n": 42, "s": "y"})));
    }
}
