//! Masking secret values in a push file before a push page shows it: the
//! literal value of every secret key, in every YAML scalar style, while
//! `${env:…}` / `${file:…}` references are shown as written.

/// Keys whose literal values are secrets: shown masked on a push page
/// (a `${env:…}` / `${file:…}` reference is shown as written). Compared
/// without regard to case (`Authorization` is a header name).
pub(super) const SECRET_KEYS: &[&str] = &[
    "client_secret",
    "password",
    "developer_token",
    "secret",
    "refresh_token",
    "access_token",
    "authorization",
    "x-api-key",
    "api_key",
    "api-key",
];

pub(super) fn is_secret_key(key: &str) -> bool {
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// The push file's text with literal secret values masked: values of a
/// secret key in any YAML style (plain, quoted, `|`/`>` block scalars,
/// plain scalars over several lines, flow mappings such as
/// `auth: {username: u, password: x}`, or nested under the key), found with
/// the YAML parser; then, line by line, `key: value` forms (which also
/// covers a file the parser cannot read).
pub(super) fn masked_yaml(text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (first, last, value) in secret_scalars(text) {
        let words: Vec<&str> = std::iter::once(value.trim())
            .chain(value.split_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        for line in lines.iter_mut().take(last).skip(first.saturating_sub(1)) {
            for w in &words {
                if line.contains(w) {
                    *line = line.replace(w, "‹hidden›");
                }
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in &lines {
        out.push_str(&masked_line(line));
        out.push('\n');
    }
    out
}

/// A `key: value` line with a secret key's literal value masked.
pub(super) fn masked_line(line: &str) -> String {
    let trimmed = line.trim_start().trim_start_matches("- ");
    trimmed
        .split_once(':')
        .and_then(|(key, value)| {
            let value = value.trim();
            (is_secret_key(key)
                && !value.is_empty()
                && !value.starts_with("${")
                && !value.starts_with('#')
                && value != "‹hidden›")
                .then(|| {
                    let at = line.len() - trimmed.len() + trimmed.find(':').unwrap_or(0) + 1;
                    format!("{} ‹hidden›", &line[..at])
                })
        })
        .unwrap_or_else(|| line.to_owned())
}

/// The literal scalar values under a secret key in `text`: (first line,
/// last line, value), the lines 1-based and spanning from the value to the
/// next node (a block scalar's lines follow its indicator). Empty when the
/// text is not YAML.
pub(super) fn secret_scalars(text: &str) -> Vec<(usize, usize, String)> {
    use saphyr_parser::{Event, Parser};
    enum Frame {
        /// A mapping: whether a key is awaited, whether the pending value
        /// is a secret, whether the whole mapping is under a secret key.
        Map {
            want_key: bool,
            secret_value: bool,
            inside_secret: bool,
        },
        Seq {
            inside_secret: bool,
        },
    }
    let mut events = Vec::new();
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => events.push((event, span.start.line())),
            Err(_) => break,
        }
    }
    let mut found = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    for i in 0..events.len() {
        let next_line = events.get(i + 1).map(|e| e.1).unwrap_or(usize::MAX);
        let line = events[i].1;
        // Whether the node at this position is a secret value, and whether
        // it is a mapping key.
        let (secret, is_key) = match stack.last() {
            Some(Frame::Map {
                want_key: true,
                inside_secret,
                ..
            }) => (*inside_secret, true),
            Some(Frame::Map {
                secret_value,
                inside_secret,
                ..
            }) => (*secret_value || *inside_secret, false),
            Some(Frame::Seq { inside_secret }) => (*inside_secret, false),
            None => (false, false),
        };
        let after_node = |stack: &mut Vec<Frame>| {
            if let Some(Frame::Map {
                want_key,
                secret_value,
                ..
            }) = stack.last_mut()
            {
                *want_key = !*want_key;
                if *want_key {
                    *secret_value = false;
                }
            }
        };
        match &events[i].0 {
            Event::Scalar(value, ..) => {
                if is_key {
                    let secret_key = is_secret_key(value);
                    if let Some(Frame::Map {
                        want_key,
                        secret_value,
                        ..
                    }) = stack.last_mut()
                    {
                        *want_key = false;
                        *secret_value = secret_key;
                    }
                } else {
                    if secret && !value.trim().is_empty() && !value.trim_start().starts_with("${") {
                        found.push((line, next_line.max(line), value.to_string()));
                    }
                    after_node(&mut stack);
                }
            }
            Event::Alias(_) => after_node(&mut stack),
            Event::MappingStart(..) => stack.push(Frame::Map {
                want_key: true,
                secret_value: false,
                inside_secret: secret,
            }),
            Event::SequenceStart(..) => stack.push(Frame::Seq {
                inside_secret: secret,
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                after_node(&mut stack);
            }
            Event::DocumentStart(_) => stack.clear(),
            _ => {}
        }
    }
    found
}
