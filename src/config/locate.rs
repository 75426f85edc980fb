//! Finding where a value stands in a YAML file.
//!
//! serde_yaml reports a line and column for what fails while deserialising,
//! but a problem found afterwards (an unknown parameter in a template, an
//! unknown account, a bad cron line) needs the position of a field by its
//! path, e.g. `graph_mail.subject` or `graph_mail.to[1]`. This module walks the
//! marked event stream of a YAML parser once per file and records the start of
//! every node by path, document by document.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// A 1-based line and column in a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Line, counting from 1.
    pub line: usize,
    /// Column in characters, counting from 1.
    pub column: usize,
}

/// The positions of the nodes of one YAML document.
#[derive(Debug, Default, Clone)]
pub struct DocumentMap {
    /// Where the document's root node starts.
    pub start: Position,
    nodes: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl DocumentMap {
    /// Position of the value at `path`, or of the nearest enclosing node that
    /// exists (so a missing field points at its parent mapping).
    pub fn value(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.nodes.get(p) {
                return *pos;
            }
            match parent_path(p) {
                Some(parent) => p = parent,
                None => return self.start,
            }
        }
    }

    /// Position of the key of the mapping entry at `path` (falls back to the value).
    pub fn key(&self, path: &str) -> Position {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }
}

fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

enum Frame {
    Mapping {
        path: String,
        key: Option<(String, Position)>,
    },
    Sequence {
        path: String,
        index: usize,
    },
    /// Inside a complex (non-scalar) mapping key: nothing is recorded.
    Skip {
        depth: usize,
    },
}

/// Maps every document of `text`. A syntax error yields `None`: the caller
/// reports serde_yaml's own message for it.
pub fn map_documents(text: &str) -> Option<Vec<DocumentMap>> {
    let mut docs = Vec::new();
    let mut current: Option<DocumentMap> = None;
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.ok()?;
        let pos = Position {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        match event {
            Event::DocumentStart(_) => {
                current = Some(DocumentMap::default());
                stack.clear();
            }
            Event::DocumentEnd => {
                if let Some(doc) = current.take() {
                    docs.push(doc);
                }
            }
            Event::Scalar(value, ..) => {
                node(&mut current, &mut stack, pos, Some(&value), None);
            }
            Event::Alias(_) => node(&mut current, &mut stack, pos, Some(""), None),
            Event::MappingStart(..) => node(&mut current, &mut stack, pos, None, Some(true)),
            Event::SequenceStart(..) => node(&mut current, &mut stack, pos, None, Some(false)),
            Event::MappingEnd | Event::SequenceEnd => {
                match stack.last_mut() {
                    Some(Frame::Skip { depth }) if *depth > 1 => *depth -= 1,
                    _ => {
                        if let Some(Frame::Skip { .. }) = stack.pop() {
                            // A complex key ended: its value follows, under a
                            // path nobody asks for.
                            if let Some(Frame::Mapping { path, key }) = stack.last_mut() {
                                *key = Some((format!("{path}.?"), pos));
                            }
                        } else {
                            finish_value(&mut stack);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(docs)
}

/// Records a node. `container` is `Some(true)` for a mapping start,
/// `Some(false)` for a sequence start, `None` for a scalar or alias.
fn node(
    current: &mut Option<DocumentMap>,
    stack: &mut Vec<Frame>,
    pos: Position,
    scalar: Option<&str>,
    container: Option<bool>,
) {
    let Some(doc) = current.as_mut() else { return };
    let path = match stack.last_mut() {
        None => {
            doc.start = pos;
            Some(String::new())
        }
        Some(Frame::Skip { depth }) => {
            if container.is_some() {
                *depth += 1;
            }
            return;
        }
        Some(Frame::Sequence { path, index }) => {
            let p = format!("{path}[{index}]");
            *index += 1;
            Some(p)
        }
        Some(Frame::Mapping { path, key }) => match key {
            None => {
                // This node is a key.
                match scalar {
                    Some(k) => {
                        let full = if path.is_empty() {
                            k.to_owned()
                        } else {
                            format!("{path}.{k}")
                        };
                        *key = Some((full, pos));
                    }
                    None => stack.push(Frame::Skip { depth: 1 }),
                }
                return;
            }
            Some((full, key_pos)) => {
                doc.keys.insert(full.clone(), *key_pos);
                Some(full.clone())
            }
        },
    };
    let Some(path) = path else { return };
    doc.nodes.entry(path.clone()).or_insert(pos);
    match container {
        Some(true) => stack.push(Frame::Mapping { path, key: None }),
        Some(false) => stack.push(Frame::Sequence { path, index: 0 }),
        None => finish_value(stack),
    }
}

/// After a complete value, a mapping waits for its next key.
fn finish_value(stack: &mut [Frame]) {
    if let Some(Frame::Mapping { key, .. }) = stack.last_mut() {
        *key = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values_and_sequence_items_in_each_document() {
        let text = "name: a\ngraph_mail:\n  to:\n    - x@example.com\n    - \"y@example.com\"\n  subject: hi\n---\nname: b\nhttp: { url: 'https://e.test', headers: { A: b } }\n";
        let docs = map_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value("name"), Position { line: 1, column: 7 });
        assert_eq!(
            docs[0].value("graph_mail.to[1]"),
            Position { line: 5, column: 7 }
        );
        assert_eq!(
            docs[0].value("graph_mail.subject"),
            Position {
                line: 6,
                column: 12
            }
        );
        assert_eq!(
            docs[0].key("graph_mail.subject"),
            Position { line: 6, column: 3 }
        );
        assert_eq!(
            docs[1].value("http.url"),
            Position {
                line: 9,
                column: 14
            }
        );
        assert_eq!(
            docs[1].value("http.headers.A"),
            Position {
                line: 9,
                column: 46
            }
        );
        // A missing path falls back to its nearest parent.
        assert_eq!(docs[1].value("http.method"), docs[1].value("http"));
    }

    #[test]
    fn syntax_error_gives_none() {
        assert!(map_documents("a: [1, 2\nb: c").is_none());
    }
}
