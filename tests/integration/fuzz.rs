//! Property tests: whatever the files, templates and events hold, loading,
//! rendering and preparing never panic; positions stay inside the file; JSON
//! bodies stay JSON; and a dry-run never shows a secret value.

use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use pushwerk::config::{Catalog, LoadOptions};
use pushwerk::engine::{render, RenderInput, Rendered, TokenValues};
use pushwerk::event::Event;
use pushwerk::targets::{prepare, Endpoints, Prepared};
use serde_json::{json, Value};

use crate::util::NOW;

/// Moderate case counts (`PROPTEST_CASES` raises them for a longer hunt),
/// and no regression files written next to the tests.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every environment variable is set to a value that must never show up in
/// a dry-run.
const CANARY: &str = "CANARY-7f3a";

fn canary_env(name: &str) -> Option<String> {
    Some(format!("{CANARY}-{name}"))
}

fn root() -> PathBuf {
    PathBuf::from("/virtual/fuzz")
}

fn load_texts(texts: &[String]) -> Catalog {
    let sources = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (root().join(format!("f{i}.yaml")), Ok(t.clone())))
        .collect();
    Catalog::from_sources(&root(), sources, &LoadOptions { env: &canary_env })
}

fn now() -> DateTime<Utc> {
    NOW.parse().expect("NOW is RFC 3339")
}

fn event(data: Value) -> Event {
    Event {
        id: "evt-fuzz".to_owned(),
        event_type: "call.ended".to_owned(),
        time: now(),
        data,
    }
}

/// What rendering and preparing gave, as text; checks that a JSON body
/// parses. Never panics by itself.
fn render_and_prepare(
    catalog: &Catalog,
    ev: &Event,
    show_secrets: bool,
) -> Result<Vec<String>, TestCaseError> {
    let mut outputs = Vec::new();
    let tokens: TokenValues = if show_secrets {
        catalog
            .accounts
            .keys()
            .map(|a| (a.clone(), format!("token-of-{a}")))
            .collect()
    } else {
        TokenValues::new()
    };
    for push in &catalog.pushes {
        let input = RenderInput {
            event: ev,
            attempt: 1,
            now: now(),
            tokens: &tokens,
            secrets: if show_secrets {
                pushwerk::targets::SecretMode::Real
            } else {
                pushwerk::targets::SecretMode::Masked
            },
        };
        match render(catalog, push, &input) {
            Err(e) => outputs.push(format!("render error: {e} {e:?}")),
            Ok(Rendered::Skipped(why)) => outputs.push(format!("skipped: {why}")),
            Ok(Rendered::Ready(r)) => {
                outputs.push(format!("{r:?}"));
                match prepare(&r, &Endpoints::default()) {
                    Err(e) => outputs.push(format!("prepare error: {e} {e:?}")),
                    Ok(Prepared::Smtp(m)) => {
                        outputs.push(format!("{m:?} {}", String::from_utf8_lossy(&m.message)))
                    }
                    Ok(Prepared::Http(h)) => {
                        let is_json = h
                            .header("content-type")
                            .is_some_and(|ct| ct.starts_with("application/json"));
                        if is_json {
                            let parsed = serde_json::from_slice::<Value>(&h.body);
                            prop_assert!(
                                parsed.is_ok(),
                                "push {}: JSON body does not parse ({:?}): {}",
                                push.name(),
                                parsed.err(),
                                String::from_utf8_lossy(&h.body)
                            );
                        }
                        outputs.push(format!("{h:?} {}", String::from_utf8_lossy(&h.body)));
                    }
                }
            }
        }
    }
    Ok(outputs)
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Pieces of YAML (and of pushwerk's own syntax) that stress the parsers.
const YAML_FRAGMENTS: &[&str] = &[
    ":",
    ": ",
    "-",
    "- ",
    "---",
    "---\n",
    "...",
    "\n",
    "\n  ",
    "\n    ",
    "\n- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "<<",
    ">>",
    "<%",
    "%>",
    "<#",
    "#>",
    "${env:",
    "${env:X}",
    "${file:",
    "}",
    "#",
    "# c\n",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!tag ",
    "|\n",
    ">\n",
    "|-\n  ",
    "? ",
    "%YAML 1.2\n",
    "name: x",
    "name: ",
    "on: call.ended",
    "on: ",
    "schedule: ",
    "schedule: \"0 8 * * 1\"",
    "http:",
    "url: https://e.test",
    "url: ",
    "json:",
    "json: {a: ",
    "headers:",
    "kind: oauth_account",
    "kind: push",
    "kind: ",
    "graph_mail:",
    "smtp:",
    "bing_ads:",
    "when: ",
    "event.x",
    "<< event.x >>",
    "oauth.crm",
    "push.name",
    "\t",
    "\r\n",
    "\r",
    "\u{feff}",
    "\u{0}",
    "\u{85}",
    "\u{2028}",
    "🎉",
    "é",
    "~",
    "null",
    "true",
    "0x1F",
    "1e9",
    "-.inf",
    "2026-01-01",
    "token_url: https://e.test/t",
    "client_id: c",
    "scope: s",
];

fn fragment(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(pieces).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => "[ \t]{0,6}",
        1 => "[a-z_]{1,10}",
    ]
}

/// Text assembled from YAML-ish pieces.
fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(YAML_FRAGMENTS), 0..48).prop_map(|v| v.concat())
}

/// Pieces of templates: delimiters, parameters, filters, statements.
const TEMPLATE_FRAGMENTS: &[&str] = &[
    "<<",
    ">>",
    "<%",
    "%>",
    "<#",
    "#>",
    "<< event.x >>",
    "<< event.y | default('d') >>",
    "<< event.l >>",
    "<< push.name >>",
    "<< push.attempt >>",
    "<< now >>",
    "<< oauth.crm >>",
    "<< secrets >>",
    "<< oauth >>",
    "<< event >>",
    "${env:API_KEY}",
    "${env:",
    "${file:x}",
    "${x}",
    "}",
    "event.x",
    "event.",
    "event",
    "push.",
    "oauth.",
    "secrets",
    "loop",
    "|",
    " | e164",
    " | e164('49')",
    " | sha256",
    " | iso8601",
    " | iso8601(millis=true)",
    " | strftime('",
    "%Y-%m-%d",
    "%Q",
    "%",
    "')",
    " | json",
    " | tojson",
    " | urlencode",
    " | e",
    " | default(",
    " | upper",
    " | length",
    " | int",
    " | float",
    " ~ ",
    " + ",
    " * ",
    " / ",
    " // ",
    "0",
    "1",
    "-1",
    "9999999999999999999999",
    "1e308",
    "if ",
    "else",
    "endif",
    "for x in event.l",
    "for x in range(",
    "endfor",
    "set a = ",
    "macro m()",
    "endmacro",
    "raw",
    "endraw",
    "(",
    ")",
    "[",
    "]",
    "'",
    "\"",
    "\\",
    "\n",
    "{{",
    "}}",
    "{%",
    "%}",
    " ",
    "🎉",
    "\u{0}",
    "\u{7f}",
    "\r\n",
    "true",
    "none",
    "==",
    "and",
    "not ",
];

/// A template string: any characters, mostly template syntax.
fn template() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(TEMPLATE_FRAGMENTS), 0..16).prop_map(|v| v.concat())
}

/// An arbitrary JSON value (finite numbers, any strings, nested a little).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(vec![
            "2026-11-24T14:03:11Z",
            "+49 30 1234567",
            "0044 20 7946 0958",
            "a@b.test",
            "<< oauth.crm >>",
            "${env:API_KEY}",
            "",
            " ",
            "-0",
            "1e400",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------
// 1. Arbitrary file content
// ---------------------------------------------------------------------------

/// The lines of `text` as YAML counts them: `\r\n`, `\r`, `\n`, NEL,
/// LINE SEPARATOR and PARAGRAPH SEPARATOR each end one.
/// The lines of `text`. `unicode_breaks`: also break at NEL, LS and PS, as
/// YAML 1.1 (libyaml, behind serde_yaml) does; YAML 1.2 (saphyr, behind the
/// position map) does not. A diagnostic may come from either parser.
fn yaml_lines(text: &str, unicode_breaks: bool) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(String::new());
            }
            '\n' => lines.push(String::new()),
            '\u{85}' | '\u{2028}' | '\u{2029}' if unicode_breaks => lines.push(String::new()),
            c => lines.last_mut().expect("one line").push(c),
        }
    }
    lines
}

/// Whether (line, column) lies inside `lines`, or just after their end.
fn inside(lines: &[String], line: usize, column: usize) -> bool {
    match lines.get(line - 1) {
        Some(text) => column <= text.chars().count() + 1,
        None => line == lines.len() + 1 && column == 1,
    }
}

fn check_diagnostics(texts: &[String]) -> Result<(), TestCaseError> {
    let c = load_texts(texts);
    for d in &c.diagnostics {
        prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
        let index: usize = d
            .file
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix('f'))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("diagnostic for an unknown file: {d}"));
        let text = &texts[index];
        prop_assert!(
            inside(&yaml_lines(text, true), d.line, d.column)
                || inside(&yaml_lines(text, false), d.line, d.column),
            "{d}: not a position in the file"
        );
        prop_assert!(!d.message.is_empty(), "{d}");
        prop_assert!(!d.message.contains(CANARY), "{d}");
    }
    prop_assert!(c.error_count() <= c.diagnostics.len());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_unicode_file_content_loads_without_panic(text in any::<String>()) {
        check_diagnostics(&[text])?;
    }

    #[test]
    fn yamlish_file_content_loads_without_panic(
        texts in prop::collection::vec(yamlish(), 1..4)
    ) {
        check_diagnostics(&texts)?;
    }

    /// A valid push with one YAML-ish fragment spliced in somewhere.
    #[test]
    fn valid_push_with_a_spliced_fragment_loads_without_panic(
        cut in any::<prop::sample::Index>(),
        piece in yamlish(),
    ) {
        let base = "name: p\non: call.ended\nwhen: event.x > 1\nhttp:\n  url: https://e.test/<< event.x >>\n  headers:\n    A: ${env:API_KEY}\n  json:\n    a: << event.x >>\n    b: [1, \"<< event.y | default('') >>\"]\n";
        let at = cut.index(base.len() + 1);
        let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{piece}{}", &base[..at], &base[at..]);
        check_diagnostics(&[text])?;
    }
}

// ---------------------------------------------------------------------------
// 2. Arbitrary templates in a well-formed push
// ---------------------------------------------------------------------------

const ACCOUNT_CRM: &str = "kind: oauth_account
name: crm
token_url: https://auth.crm.example.com/oauth/token
client_id: pushwerk
client_secret: ${env:CRM_CLIENT_SECRET}
scope: leads.write
";

/// Push documents with `t` in their templated fields, and `cond` as a
/// condition, serialised by a YAML writer (so any string is representable).
fn templated_pushes(t: &str, url_prefixed: bool, cond: &str) -> Vec<String> {
    let url = if url_prefixed {
        format!("https://example.com/{t}")
    } else {
        t.to_owned()
    };
    let docs = [
        json!({
            "name": "fuzz-http",
            "on": "call.ended",
            "http": {
                "url": url,
                "headers": { "X-T": t },
                "query": { "q": t },
                "json": { "typed": t, "list": [t, "x"], "nested": { "k": t, "n": 1 } },
            },
        }),
        json!({
            "name": "fuzz-mail",
            "on": "call.ended",
            "graph_mail": {
                "account": "crm",
                "to": ["a@example.com"],
                "subject": t,
                "html": t,
            },
        }),
        json!({
            "name": "fuzz-smtp",
            "on": "call.ended",
            "smtp": {
                "host": "smtp.example.com",
                "from": "p <p@example.com>",
                "to": ["a@example.com"],
                "subject": t,
                "text": t,
            },
        }),
        json!({
            "name": "fuzz-form",
            "on": "call.ended",
            "when": cond,
            "http": { "url": "https://example.com/hook", "form": { "f": t } },
        }),
        json!({
            "name": "fuzz-raw",
            "schedule": "*/5 * * * *",
            "http": { "url": "https://example.com/raw", "raw": t, "content_type": "text/plain" },
        }),
    ];
    let mut texts = vec![ACCOUNT_CRM.to_owned()];
    texts.extend(
        docs.iter()
            .map(|d| serde_yaml::to_string(d).expect("YAML serialises")),
    );
    texts
}

/// The same push with `t` pasted into a double-quoted scalar by hand (as a
/// user would write it), which may well not parse.
fn hand_written_push(t: &str) -> String {
    let quoted = serde_json::to_string(t).expect("string");
    format!(
        "name: hand\non: call.ended\nhttp:\n  url: https://example.com/hook\n  headers:\n    X: {quoted}\n  json:\n    a: {quoted}\n    b: [{quoted}]\n---\nname: plain\non: call.ended\ngraph_mail:\n  account: crm\n  to: [a@example.com]\n  subject: {t}\n  text: x\n"
    )
}

fn render_everything(c: &Catalog, data: Value) -> Result<(), TestCaseError> {
    let ev = event(data);
    let masked = render_and_prepare(c, &ev, false)?;
    for out in &masked {
        prop_assert!(!out.contains(CANARY), "a dry-run showed a secret: {out}");
        prop_assert!(!out.contains("token-of-"), "{out}");
    }
    render_and_prepare(c, &ev, true)?;
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_templates_load_and_render_without_panic(
        t in template(),
        url_prefixed in any::<bool>(),
        cond in template(),
        x in any::<String>(),
        y in any::<String>(),
        l in prop::collection::vec(any::<String>(), 0..4),
    ) {
        let texts = templated_pushes(&t, url_prefixed, &cond);
        let c = load_texts(&texts);
        for d in &c.diagnostics {
            prop_assert!(!d.message.contains(CANARY), "{d}");
        }
        render_everything(&c, json!({ "x": x, "y": y, "l": l }))?;
    }

    #[test]
    fn any_string_as_template_loads_and_renders_without_panic(
        t in any::<String>(),
        cond in any::<String>(),
        x in any::<String>(),
    ) {
        let mut texts = templated_pushes(&t, true, &cond);
        texts.push(hand_written_push(&t));
        let c = load_texts(&texts);
        render_everything(&c, json!({ "x": x, "y": x, "l": [x] }))?;
    }
}

// ---------------------------------------------------------------------------
// 3. Arbitrary event data for the example pushes
// ---------------------------------------------------------------------------

/// The example folder, loaded with every secret set.
fn examples() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let c = Catalog::load(
            &crate::util::root().join("pushes"),
            &LoadOptions { env: &canary_env },
        )
        .expect("pushes/ loads");
        assert_eq!(c.error_count(), 0, "{:?}", c.diagnostics);
        assert_eq!(c.pushes.len(), 5);
        c
    })
}

/// The data of `fixtures/call-ended.json`.
fn fixture_data() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(crate::util::root().join("fixtures/call-ended.json"))
        .expect("fixture");
    let ev = Event::from_json(&text).expect("fixture event");
    match ev.data {
        Value::Object(m) => m,
        other => panic!("fixture data is {other}"),
    }
}

const FIXTURE_KEYS: &[&str] = &[
    "call_id",
    "caller_number",
    "caller_name",
    "caller_email",
    "tracking_number",
    "campaign",
    "answered",
    "duration",
    "started_at",
    "ended_at",
    "recording_url",
    "msclkid",
    "value",
];

proptest! {
    #![proptest_config(config())]

    /// Completely arbitrary `data`.
    #[test]
    fn arbitrary_event_data_renders_examples_without_panic(
        data in prop::collection::btree_map(
            prop_oneof![
                prop::sample::select(FIXTURE_KEYS).prop_map(str::to_owned),
                any::<String>(),
            ],
            json_value(),
            0..10,
        )
    ) {
        let data = Value::Object(data.into_iter().collect());
        render_and_prepare(examples(), &event(data.clone()), false)?;
        render_and_prepare(examples(), &event(data), true)?;
    }

    /// The fixture with some fields replaced by arbitrary values: renders get
    /// further, and a typed JSON leaf carries the event value unchanged.
    #[test]
    fn fixture_with_arbitrary_fields_renders_examples_without_panic(
        overrides in prop::collection::vec(
            (prop::sample::select(FIXTURE_KEYS), json_value()),
            1..4,
        ),
        drop_some in prop::collection::vec(prop::sample::select(FIXTURE_KEYS), 0..2),
    ) {
        let mut data = fixture_data();
        for key in &drop_some {
            data.remove(*key);
        }
        for (key, value) in &overrides {
            data.insert(key.to_string(), value.clone());
        }
        let data = Value::Object(data);
        render_and_prepare(examples(), &event(data.clone()), false)?;
        render_and_prepare(examples(), &event(data.clone()), true)?;

        // crm-lead's `phone: << event.caller_number >>` keeps the value.
        let catalog = examples();
        let push = catalog.push("crm-lead").expect("crm-lead");
        let ev = event(data.clone());
        let tokens = TokenValues::new();
        let input = RenderInput {
            event: &ev,
            attempt: 1,
            now: now(),
            tokens: &tokens,
            secrets: pushwerk::targets::SecretMode::Masked,
        };
        if let Ok(Rendered::Ready(r)) = render(catalog, push, &input) {
            if let Ok(Prepared::Http(h)) = prepare(&r, &Endpoints::default()) {
                let body: Value = serde_json::from_slice(&h.body).expect("checked above");
                if let Some(phone) = data.get("caller_number") {
                    // Exact but for serde_json's default float parsing (see
                    // `typed_json_leaf_keeps_a_float_bit_exact`).
                    prop_assert!(
                        same_up_to_float_parsing(&body["phone"], phone),
                        "phone {} became {}",
                        phone,
                        body["phone"]
                    );
                }
            }
        }
    }
}

/// JSON equality, floats allowed to differ in their last bit or so.
fn same_up_to_float_parsing(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_up_to_float_parsing(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_up_to_float_parsing(v, w)))
        }
        _ => a == b,
    }
}

#[test]

fn typed_json_leaf_keeps_a_float_bit_exact() {
    let value: f64 = -2.198_892_782_669_544_2e241;
    let mut data = fixture_data();
    data.insert("caller_number".to_owned(), json!(value));
    let catalog = examples();
    let push = catalog.push("crm-lead").expect("crm-lead");
    let ev = event(Value::Object(data));
    let tokens = TokenValues::new();
    let input = RenderInput {
        event: &ev,
        attempt: 1,
        now: now(),
        tokens: &tokens,
        secrets: pushwerk::targets::SecretMode::Masked,
    };
    let Ok(Rendered::Ready(r)) = render(catalog, push, &input) else {
        panic!("crm-lead renders");
    };
    let Ok(Prepared::Http(h)) = prepare(&r, &Endpoints::default()) else {
        panic!("crm-lead prepares");
    };
    let body = String::from_utf8(h.body).expect("UTF-8");
    let expected = format!("\"phone\":{}", serde_json::to_string(&value).expect("f64"));
    assert!(body.contains(&expected), "{expected} not in {body}");
}
