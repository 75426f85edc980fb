//! Problems found while loading a folder, each with its file, line and
//! column, printed the way compilers do: `file:line:col: error: message`.

use std::fmt;
use std::path::PathBuf;

use super::locate::Position;

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The document is not loaded; `check` fails.
    Error,
    /// Loaded, but worth a look (a literal secret in a file, a secret about to expire).
    Warning,
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file, as given (relative to where pushwerk was started when it was given so).
    pub file: PathBuf,
    /// Where in the file.
    pub line: usize,
    /// Column, counting characters from 1.
    pub column: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Diagnostic {
    /// An error at `pos` in `file`.
    pub fn error(file: impl Into<PathBuf>, pos: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line: pos.line.max(1),
            column: pos.column.max(1),
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A warning at `pos` in `file`.
    pub fn warning(file: impl Into<PathBuf>, pos: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, pos, message)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// `1 push`, `2 pushes`: a count with its noun in the right number, for
/// every summary pushwerk prints.
pub fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A mapping key a schema does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    /// Path of the key (`graph_mail.subjct`), as [`super::locate`] spells it.
    pub path: String,
    /// Path of the mapping that holds it (`graph_mail`; empty at the root).
    pub parent: String,
    /// The key as written.
    pub field: String,
    /// The keys that mapping allows.
    pub expected: Vec<String>,
}

/// Every key of `value` (a document as JSON) that `schema` (a JSON Schema
/// with `$defs`, as schemars writes it) does not allow. Exists because
/// serde stops at the first unknown field, and a user fixing typos one run
/// at a time is told about all of them at once instead.
pub fn unknown_fields(value: &serde_json::Value, schema: &serde_json::Value) -> Vec<UnknownField> {
    let mut out = Vec::new();
    walk(value, schema, schema, String::new(), 0, &mut out);
    out
}

/// `schema` with `$ref`s into `#/$defs/` followed.
fn resolve<'a>(
    root: &'a serde_json::Value,
    mut schema: &'a serde_json::Value,
) -> &'a serde_json::Value {
    for _ in 0..16 {
        match schema
            .get("$ref")
            .and_then(|r| r.as_str())
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            Some(name) => match root.get("$defs").and_then(|d| d.get(name)) {
                Some(s) => schema = s,
                None => break,
            },
            None => break,
        }
    }
    schema
}

fn walk(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    root: &serde_json::Value,
    path: String,
    depth: usize,
    out: &mut Vec<UnknownField>,
) {
    // Documents are bounded in depth; so is this walk.
    if depth > 64 {
        return;
    }
    let schema = resolve(root, schema);
    // `Option<T>`: `anyOf: [T, null]`; untagged choices: the first object schema.
    if let Some(choices) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(|c| c.as_array())
    {
        let object = choices
            .iter()
            .map(|c| resolve(root, c))
            .find(|c| c.get("properties").is_some());
        if let (Some(object), serde_json::Value::Object(_)) = (object, value) {
            walk(value, object, root, path, depth + 1, out);
        }
        return;
    }
    match value {
        serde_json::Value::Object(map) => {
            let join = |k: &str| {
                if path.is_empty() {
                    k.to_owned()
                } else {
                    format!("{path}.{k}")
                }
            };
            match schema.get("properties").and_then(|p| p.as_object()) {
                Some(props) => {
                    let closed =
                        schema.get("additionalProperties") == Some(&serde_json::Value::Bool(false));
                    for (k, v) in map {
                        match props.get(k) {
                            Some(s) => walk(v, s, root, join(k), depth + 1, out),
                            None if closed => out.push(UnknownField {
                                path: join(k),
                                parent: path.clone(),
                                field: k.clone(),
                                expected: props.keys().cloned().collect(),
                            }),
                            None => {}
                        }
                    }
                }
                None => {
                    if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                        for (k, v) in map {
                            walk(v, s, root, join(k), depth + 1, out);
                        }
                    }
                }
            }
        }
        serde_json::Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(v, s, root, format!("{path}[{i}]"), depth + 1, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_field_is_found_at_every_depth() {
        let schema = serde_json::to_value(schemars::schema_for!(crate::config::PushSpec)).unwrap();
        let doc = serde_json::json!({
            "name": "x", "on": "a.b", "descripton": "typo",
            "graph_mail": {"account": "a", "subjct": "s", "text": "t",
                "attachments": [{"name": "n", "pth": "p"}],
                "headers": {"x-a": "free-form keys are fine"}},
            "retry": {"max_attempt": 3}
        });
        let found: Vec<String> = unknown_fields(&doc, &schema)
            .into_iter()
            .map(|u| u.path)
            .collect();
        assert_eq!(
            found,
            [
                "descripton",
                "graph_mail.subjct",
                "graph_mail.attachments[0].pth",
                "retry.max_attempt"
            ]
        );
    }
}
