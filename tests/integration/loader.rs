//! Loading and checking push folders, and rendering what loaded: the
//! behaviour users rely on when they edit YAML (positions of errors, one
//! broken push not stopping the others, typed JSON bodies, secrets that stay
//! secret, event values that stay data).

use std::path::PathBuf;

use chrono::{Datelike, TimeZone, Timelike, Utc, Weekday};
use pushwerk::config::{Catalog, Diagnostic, LoadOptions, Severity, Trigger};
use pushwerk::engine::{render, RenderError, RenderInput, Rendered, TokenValues};
use pushwerk::event::Event;
use pushwerk::targets::{prepare, Endpoints, HttpRequest, Prepared};
use serde_json::{json, Value};

use crate::util::NOW;

/// The folder every in-memory source pretends to live in.
fn root() -> PathBuf {
    PathBuf::from("/virtual/pushes")
}

fn file(name: &str) -> PathBuf {
    root().join(name)
}

/// Loads `files` (name, text) with an environment of exactly `env`.
fn load_with_env(files: &[(&str, &str)], env: &[(&str, &str)]) -> Catalog {
    let vars: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let sources = files
        .iter()
        .map(|(name, text)| (file(name), Ok(text.to_string())))
        .collect();
    Catalog::from_sources(&root(), sources, &LoadOptions { env: &lookup })
}

/// Loads `files` with an empty environment.
fn load(files: &[(&str, &str)]) -> Catalog {
    load_with_env(files, &[])
}

/// Every diagnostic, one per line, for assertion messages.
fn shown(c: &Catalog) -> String {
    c.diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

/// The one diagnostic of `severity` whose message contains `needle`.
fn diag<'a>(c: &'a Catalog, severity: Severity, needle: &str) -> &'a Diagnostic {
    let found: Vec<&Diagnostic> = c
        .diagnostics
        .iter()
        .filter(|d| d.severity == severity && d.message.contains(needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {severity:?} containing {needle:?}, got:\n{}",
        shown(c)
    );
    found[0]
}

fn error<'a>(c: &'a Catalog, needle: &str) -> &'a Diagnostic {
    diag(c, Severity::Error, needle)
}

/// 1-based (line, column in characters) of the first `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..at].chars().count() + 1;
    (line, column)
}

fn assert_at(d: &Diagnostic, name: &str, text: &str, needle: &str) {
    assert_eq!(d.file, file(name), "{d}");
    assert_eq!(
        (d.line, d.column),
        position_of(text, needle),
        "{d} should point at {needle:?}"
    );
}

fn event(data: Value) -> Event {
    Event::from_json(
        &json!({
            "id": "evt-1",
            "type": "call.ended",
            "time": "2026-11-24T14:03:11Z",
            "data": data,
        })
        .to_string(),
    )
    .expect("test event is valid")
}

/// Renders push `name` for an event with `data`.
fn render_push(
    c: &Catalog,
    name: &str,
    data: Value,
    tokens: &[(&str, &str)],
    show_secrets: bool,
) -> Result<Rendered, RenderError> {
    let push = c
        .push(name)
        .unwrap_or_else(|| panic!("push {name} did not load:\n{}", shown(c)));
    let ev = event(data);
    let tokens: TokenValues = tokens
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let input = RenderInput {
        event: &ev,
        attempt: 1,
        now: NOW.parse().expect("NOW is RFC 3339"),
        tokens: &tokens,
        secrets: if show_secrets {
            pushwerk::targets::SecretMode::Real
        } else {
            pushwerk::targets::SecretMode::Masked
        },
    };
    render(c, push, &input)
}

/// Renders and prepares an HTTP push; panics unless that succeeds.
fn http_request(
    c: &Catalog,
    name: &str,
    data: Value,
    tokens: &[(&str, &str)],
    show_secrets: bool,
) -> HttpRequest {
    match render_push(c, name, data, tokens, show_secrets) {
        Ok(Rendered::Ready(r)) => match prepare(&r, &Endpoints::default()) {
            Ok(Prepared::Http(h)) => h,
            other => panic!("expected an HTTP request, got {other:?}"),
        },
        other => panic!("expected a rendered push, got {other:?}"),
    }
}

fn json_body(h: &HttpRequest) -> Value {
    serde_json::from_slice(&h.body).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {}",
            String::from_utf8_lossy(&h.body)
        )
    })
}

/// A valid http push named `name`.
fn http_push(name: &str) -> String {
    format!("name: {name}\non: call.ended\nhttp:\n  url: https://example.com/{name}\n")
}

const ACCOUNT_CRM: &str = "kind: oauth_account
name: crm
token_url: https://auth.crm.example.com/oauth/token
client_id: pushwerk
client_secret: ${env:CRM_CLIENT_SECRET}
scope: leads.write
";

// ---------------------------------------------------------------------------
// Positions in multi-document files
// ---------------------------------------------------------------------------

#[test]
fn error_in_a_later_document_is_reported_at_its_absolute_line_and_column() {
    let text = "\
name: first
on: call.ended
http:
  url: https://example.com/first
---
# the second push has a typo in a field name
name: second
on: call.ended
http:
  url: https://example.com/second
  methd: GET
---
name: third
on: call.ended
http:
  url: https://example.com/third
  json:
    phone: << caller_number >>
";
    let c = load(&[("multi.yaml", text)]);
    // A deserialisation error (serde_yaml's position) in document 2.
    assert_at(
        error(&c, "unknown field `methd`"),
        "multi.yaml",
        text,
        "methd",
    );
    // A semantic error (found after deserialisation) in document 3.
    let d = error(&c, "unknown parameter `caller_number`");
    assert_at(d, "multi.yaml", text, "<< caller_number");
    assert_eq!((d.line, d.column), (18, 12));
    assert_eq!(c.error_count(), 2, "{}", shown(&c));
    let names: Vec<&str> = c.pushes.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["first"]);
}

#[test]

fn empty_document_before_a_push_does_not_shift_error_positions() {
    for text in [
        "---\n---\nname: p\non: call.ended\nhttp:\n  url: https://example.com/p\n  json:\n    phone: << caller_number >>\n",
        "~\n---\nname: p\non: call.ended\nhttp:\n  url: https://example.com/p\n  json:\n    phone: << caller_number >>\n",
        "name: a\non: call.ended\nhttp:\n  url: https://example.com/a\n---\n---\nname: p\non: call.ended\nhttp:\n  url: https://example.com/p\n  json:\n    phone: << caller_number >>\n",
    ] {
        let c = load(&[("gap.yaml", text)]);
        assert_at(
            error(&c, "unknown parameter `caller_number`"),
            "gap.yaml",
            text,
            "<< caller_number",
        );
    }
}

// ---------------------------------------------------------------------------
// Duplicates and isolation of broken pushes
// ---------------------------------------------------------------------------

#[test]
fn duplicate_push_name_is_an_error_on_the_second_naming_the_first_file() {
    let first = http_push("dup");
    let second =
        "# same name again\nname: dup\non: call.missed\nhttp:\n  url: https://example.com/other\n";
    let c = load(&[("a.yaml", &first), ("b.yaml", second)]);
    let d = error(&c, "duplicate push name `dup`");
    assert_at(d, "b.yaml", second, "dup");
    assert!(
        d.message.contains(&file("a.yaml").display().to_string()),
        "{d}"
    );
    assert_eq!(c.error_count(), 1, "{}", shown(&c));
    assert_eq!(c.pushes.len(), 1);
    let loaded = c.push("dup").expect("the first still loads");
    assert_eq!(loaded.file, file("a.yaml"));
    assert!(matches!(&loaded.trigger, Trigger::Event(e) if e == "call.ended"));
}

#[test]
fn one_broken_push_does_not_stop_the_others_from_loading() {
    let broken = "name: broken\non: call.ended\nhttp:\n  url: https://example.com/x\n  json:\n    phone: << event.caller_number >\n";
    let c = load(&[
        ("a.yaml", &http_push("alpha")),
        ("b.yaml", broken),
        ("c.yaml", &http_push("gamma")),
        ("d.yaml", "name: [unclosed\n"),
    ]);
    let names: Vec<&str> = c.pushes.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["alpha", "gamma"], "{}", shown(&c));
    assert!(c.push("broken").is_none());
    let bad: Vec<&PathBuf> = c
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| &d.file)
        .collect();
    assert_eq!(bad, [&file("b.yaml"), &file("d.yaml")], "{}", shown(&c));
}

#[test]
fn the_examples_load_next_to_the_broken_fixtures() {
    let repo = crate::util::root();
    let mut files = Vec::new();
    for dir in ["pushes", "fixtures/broken"] {
        for entry in std::fs::read_dir(repo.join(dir)).expect("folder") {
            let path = entry.expect("entry").path();
            // fixtures/broken/accounts.yaml repeats an account of pushes/.
            if path.extension().is_some_and(|e| e == "yaml")
                && !path.ends_with("broken/accounts.yaml")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    let env = |_: &str| None;
    let c = Catalog::load_files(&repo, files, &LoadOptions { env: &env });
    let mut names: Vec<&str> = c.pushes.iter().map(|p| p.name()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bing-call-conversion",
            "crm-lead",
            "daily-summary",
            "lead-mail",
            "missed-call-smtp"
        ],
        "{}",
        shown(&c)
    );
    for broken in [
        "bad-cron.yaml",
        "syntax-error.yaml",
        "unknown-account.yaml",
        "unknown-field.yaml",
        "unknown-parameter.yaml",
    ] {
        assert!(
            c.diagnostics
                .iter()
                .any(|d| d.severity == Severity::Error && d.file.ends_with(broken)),
            "no error for {broken}:\n{}",
            shown(&c)
        );
    }
    // Missing secrets of the examples are warnings, not errors.
    assert!(c
        .diagnostics
        .iter()
        .filter(|d| d.file.starts_with(repo.join("pushes")))
        .all(|d| d.severity == Severity::Warning));
}

// ---------------------------------------------------------------------------
// Triggers and targets
// ---------------------------------------------------------------------------

#[test]
fn a_push_with_two_targets_is_an_error() {
    let text = "\
name: both
on: call.ended
http:
  url: https://example.com/hook
graph_mail:
  account: ms_mail
  to: [sales@example.com]
  subject: hi
  text: hello
";
    let c = load(&[
        ("accounts.yaml", crate::util::ACCOUNT_MS_MAIL),
        ("both.yaml", text),
    ]);
    let d = error(&c, "exactly one target");
    assert!(d.message.contains("http, graph_mail"), "{d}");
    assert_at(d, "both.yaml", text, "graph_mail:");
    assert!(c.pushes.is_empty());
}

#[test]
fn a_push_without_trigger_is_an_error() {
    let text = "name: idle\nhttp:\n  url: https://example.com/hook\n";
    let c = load(&[("idle.yaml", text)]);
    let d = error(&c, "no trigger");
    assert_eq!(d.file, file("idle.yaml"));
    assert!(
        d.message.contains("on:") && d.message.contains("schedule:"),
        "{d}"
    );
    assert!(c.pushes.is_empty());
}

#[test]
fn on_and_schedule_together_is_an_error() {
    let text = "name: twice\non: call.ended\nschedule: \"0 8 * * 1\"\nhttp:\n  url: https://example.com/hook\n";
    let c = load(&[("twice.yaml", text)]);
    let d = error(&c, "one trigger");
    assert_at(d, "twice.yaml", text, "schedule:");
    assert!(c.pushes.is_empty());
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

#[test]
fn when_with_an_unknown_parameter_is_reported_at_the_when_value() {
    let text = "name: cond\non: call.ended\nwhen: event.duration > 30 and answerd\nhttp:\n  url: https://example.com/hook\n";
    let c = load(&[("cond.yaml", text)]);
    let d = error(&c, "unknown parameter `answerd`");
    assert_at(d, "cond.yaml", text, "event.duration > 30");
    assert!(d.message.contains("event.answerd"), "{d}");
    assert!(c.pushes.is_empty());
}

#[test]
fn unknown_push_parameter_is_an_error_with_a_suggestion() {
    let text = "name: p\non: call.ended\nhttp:\n  url: https://example.com/hook\n  headers:\n    X-Type: << push.event_tpye >>\n";
    let c = load(&[("p.yaml", text)]);
    let d = error(&c, "unknown parameter `push.event_tpye`");
    assert!(d.message.contains("did you mean `push.event_type`?"), "{d}");
    assert_at(d, "p.yaml", text, "<< push.event_tpye");

    let text =
        "name: q\non: call.ended\nwhen: push.xyz == 1\nhttp:\n  url: https://example.com/hook\n";
    let c = load(&[("q.yaml", text)]);
    let d = error(&c, "unknown parameter `push.xyz`");
    assert!(d.message.contains("did you mean `push."), "{d}");
    assert_at(d, "q.yaml", text, "push.xyz");
}

// ---------------------------------------------------------------------------
// Structured JSON bodies
// ---------------------------------------------------------------------------

const TYPED_BODY: &str = "\
name: typed
on: call.ended
http:
  url: https://example.com/hook
  json:
    number: << event.n >>
    float: \"  << event.f >>  \"
    flag: << event.b >>
    list: << event.l >>
    object: << event.o >>
    nothing: << event.z >>
    text: << event.s >>
    mixed: \"n=<< event.n >>\"
    nested:
      - << event.n >>
      - \"<< event.s >>!\"
";

#[test]
fn json_leaf_that_is_one_parameter_keeps_its_type() {
    let c = load(&[("typed.yaml", TYPED_BODY)]);
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    let h = http_request(
        &c,
        "typed",
        json!({
            "n": 42, "f": 120.5, "b": true, "l": [1, "two", null, false],
            "o": {"k": [1]}, "z": null, "s": "007",
        }),
        &[],
        false,
    );
    assert_eq!(h.header("content-type"), Some("application/json"));
    assert_eq!(
        json_body(&h),
        json!({
            "number": 42,
            "float": 120.5,
            "flag": true,
            "list": [1, "two", null, false],
            "object": {"k": [1]},
            "nothing": null,
            "text": "007",
            "mixed": "n=42",
            "nested": [42, "007!"],
        })
    );
}

/// Strings that break naive JSON or HTML templating.
const TRICKY: [&str; 6] = [
    "O'Brien \"Bob\" \\ </script><script>alert(1)</script>",
    "line one\nline two\r\n\tindented",
    "controls \u{1}\u{8}\u{b}\u{c}\u{1b}\u{7f} and separators \u{2028}\u{2029}",
    "emoji 🎉👩‍💻 and Ünïcødé, \u{feff}BOM",
    "json-ish {\"a\": [1, 2]} and \\u0041 and \\\"",
    "",
];

#[test]
fn json_body_round_trips_tricky_event_strings() {
    let text = "\
name: tricky
on: call.ended
http:
  url: https://example.com/hook
  json:
    exact: << event.s >>
    list: [\"<< event.s >>\"]
    wrapped: \"[<< event.s >>]\"
";
    let c = load(&[("tricky.yaml", text)]);
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    for s in TRICKY {
        let h = http_request(&c, "tricky", json!({ "s": s }), &[], false);
        let body = json_body(&h);
        assert_eq!(body["exact"], json!(s), "{s:?}");
        assert_eq!(body["list"], json!([s]), "{s:?}");
        assert_eq!(body["wrapped"], json!(format!("[{s}]")), "{s:?}");
    }
}

#[test]

fn json_body_key_named_like_a_file_extension_is_not_escaped() {
    let text = "\
name: keys
on: call.ended
http:
  url: https://example.com/hook
  json:
    html: \"<p><< event.s >></p>\"
    xml: \"x << event.s >>\"
    meta:
      json: \"x << event.s >>\"
      js: \"x << event.s >>\"
";
    let c = load(&[("keys.yaml", text)]);
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    let s = "O'Brien <b>&</b> \"Bob\"";
    let body = json_body(&http_request(&c, "keys", json!({ "s": s }), &[], false));
    assert_eq!(
        body,
        json!({
            "html": format!("<p>{s}</p>"),
            "xml": format!("x {s}"),
            "meta": { "json": format!("x {s}"), "js": format!("x {s}") },
        })
    );
}

// ---------------------------------------------------------------------------
// Injection and secrets
// ---------------------------------------------------------------------------

#[test]
fn event_values_are_data_never_templates_or_secret_references() {
    let text = "\
name: inject
on: call.ended
http:
  url: https://example.com/hook
  query:
    q: << event.a >>
  headers:
    Authorization: Bearer << oauth.crm >>
    X-Api-Key: ${env:API_KEY}
  json:
    typed: << event.a >>
    mixed: \"a=<< event.a >> b=<< event.b >>\"
    b: << event.b >>
    c: << event.c >>
";
    let env = [
        ("API_KEY", "ENV-CANARY-1"),
        ("SECRET", "ENV-CANARY-2"),
        ("CRM_CLIENT_SECRET", "ENV-CANARY-3"),
    ];
    let c = load_with_env(
        &[("accounts.yaml", ACCOUNT_CRM), ("inject.yaml", text)],
        &env,
    );
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    let data = json!({
        "a": "<< oauth.crm >>",
        "b": "${env:SECRET} ${env:API_KEY}",
        "c": "<% for x in [1,2] %><< x >><% endfor %><# c #>{{ 7 * 7 }}",
    });
    for show_secrets in [false, true] {
        // A dry-run has no tokens (placeholders); a delivery has them.
        let tokens: &[(&str, &str)] = if show_secrets {
            &[("crm", "TOKEN-CANARY")]
        } else {
            &[]
        };
        let h = http_request(&c, "inject", data.clone(), tokens, show_secrets);
        let body = json_body(&h);
        assert_eq!(body["typed"], json!("<< oauth.crm >>"));
        assert_eq!(
            body["mixed"],
            json!("a=<< oauth.crm >> b=${env:SECRET} ${env:API_KEY}")
        );
        assert_eq!(body["b"], data["b"]);
        assert_eq!(body["c"], data["c"]);
        let url = url::Url::parse(&h.url).expect("URL");
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(q, [("q".to_owned(), "<< oauth.crm >>".to_owned())]);
        let raw_body = String::from_utf8(h.body.clone()).expect("UTF-8 body");
        assert!(!raw_body.contains("CANARY"), "{raw_body}");
        assert!(!h.url.contains("CANARY"), "{}", h.url);
        // The push's own references do get their values (or placeholders).
        let (auth, key) = if show_secrets {
            ("Bearer TOKEN-CANARY", "ENV-CANARY-1")
        } else {
            ("Bearer ‹oauth.crm›", "‹env:API_KEY›")
        };
        assert_eq!(h.header("authorization"), Some(auth));
        assert_eq!(h.header("x-api-key"), Some(key));
    }
}

const SECRET_HEADER: &str = "\
name: secret-header
on: call.ended
http:
  url: https://example.com/hook
  headers:
    Authorization: Bearer ${env:API_KEY}
";

#[test]
fn env_reference_in_a_header_is_masked_unless_secrets_are_shown() {
    let c = load_with_env(&[("h.yaml", SECRET_HEADER)], &[("API_KEY", "sk-live-123")]);
    assert!(c.diagnostics.is_empty(), "{}", shown(&c));
    let masked = http_request(&c, "secret-header", json!({}), &[], false);
    assert_eq!(masked.header("authorization"), Some("Bearer ‹env:API_KEY›"));
    assert!(!format!("{masked:?}").contains("sk-live-123"));
    let shown_req = http_request(&c, "secret-header", json!({}), &[], true);
    assert_eq!(
        shown_req.header("authorization"),
        Some("Bearer sk-live-123")
    );
}

#[test]
fn missing_env_variable_is_a_load_warning_and_a_render_error_with_secrets_shown() {
    let text = "\
name: secret-header
on: call.ended
http:
  url: https://example.com/hook
  headers:
    Authorization: Bearer ${env:API_KEY}
    X-Other: ${env:PRESENT_KEY}
";
    let c = load_with_env(&[("h.yaml", text)], &[("PRESENT_KEY", "present-value-42")]);
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    let w = diag(&c, Severity::Warning, "API_KEY");
    assert_at(w, "h.yaml", text, "Bearer ${env:API_KEY}");
    assert!(
        c.push("secret-header").is_some(),
        "a warning keeps the push"
    );

    // Dry-run without secrets still works: both are placeholders.
    let masked = http_request(&c, "secret-header", json!({}), &[], false);
    assert_eq!(masked.header("authorization"), Some("Bearer ‹env:API_KEY›"));
    assert_eq!(masked.header("x-other"), Some("‹env:PRESENT_KEY›"));

    let err = render_push(&c, "secret-header", json!({}), &[], true)
        .expect_err("a missing secret cannot be shown");
    assert!(matches!(err, RenderError::Secret { .. }), "{err:?}");
    let msg = format!("{err} {err:?}");
    assert!(msg.contains("API_KEY"), "{msg}");
    assert!(!msg.contains("present-value-42"), "{msg}");
}

// ---------------------------------------------------------------------------
// Missing event fields
// ---------------------------------------------------------------------------

#[test]
fn missing_event_field_is_a_render_error_naming_it() {
    let text = "\
name: needs-name
on: call.ended
http:
  url: https://example.com/hook
  raw: \"Hello << event.caller_name >>, you called << event.tracking_number | default('us') >>\"
";
    let c = load(&[("n.yaml", text)]);
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    let err = render_push(&c, "needs-name", json!({"other": 1}), &[], false)
        .expect_err("caller_name is missing");
    let msg = err.to_string();
    assert!(msg.contains("`event.caller_name`"), "{msg}");
    assert!(msg.contains("http.raw"), "{msg}");
}

#[test]

fn missing_event_field_message_names_only_the_unguarded_field() {
    let text = "\
name: needs-name
on: call.ended
http:
  url: https://example.com/hook
  raw: \"Hello << event.caller_name >>, you called << event.tracking_number | default('us') >>\"
";
    let c = load(&[("n.yaml", text)]);
    let err =
        render_push(&c, "needs-name", json!({}), &[], false).expect_err("caller_name is missing");
    let msg = err.to_string();
    assert!(msg.contains("`event.caller_name`"), "{msg}");
    assert!(!msg.contains("event.tracking_number"), "{msg}");
}

#[test]
fn missing_event_field_in_the_condition_is_false_and_named() {
    let text =
        "name: c\non: call.ended\nwhen: event.answered\nhttp:\n  url: https://example.com/hook\n";
    let c = load(&[("c.yaml", text)]);
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    match render_push(&c, "c", json!({}), &[], false) {
        Ok(Rendered::Skipped(reason)) => {
            assert!(reason.contains("has no `event.answered`"), "{reason}")
        }
        other => panic!("expected a skip, got {other:?}"),
    }
    // `not` of a missing field holds.
    let text =
        "name: n\non: call.ended\nwhen: not event.vip\nhttp:\n  url: https://example.com/hook\n";
    let c = load(&[("n.yaml", text)]);
    assert!(matches!(
        render_push(&c, "n", json!({}), &[], false),
        Ok(Rendered::Ready(_))
    ));
}

#[test]

fn missing_event_field_in_a_typed_json_leaf_is_a_render_error() {
    let text = "name: t\non: call.ended\nhttp:\n  url: https://example.com/hook\n  json:\n    seconds: << event.duration >>\n";
    let c = load(&[("t.yaml", text)]);
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    let result = render_push(&c, "t", json!({}), &[], false);
    match result {
        Err(e) => assert!(e.to_string().contains("`event.duration`"), "{e}"),
        Ok(r) => panic!("expected a render error, got {r:?}"),
    }
}

#[test]
fn default_filter_fills_a_missing_event_field() {
    let text = "\
name: d
on: call.ended
http:
  url: https://example.com/hook
  json:
    x: << event.x | default('y') >>
    n: << event.n | default(0) >>
    mixed: \"<< event.x | default('y') >>-<< event.x | default('z') >>\"
";
    let c = load(&[("d.yaml", text)]);
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    let body = json_body(&http_request(&c, "d", json!({}), &[], false));
    assert_eq!(body, json!({"x": "y", "n": 0, "mixed": "y-z"}));
    let body = json_body(&http_request(
        &c,
        "d",
        json!({"x": "given", "n": 3}),
        &[],
        false,
    ));
    assert_eq!(body, json!({"x": "given", "n": 3, "mixed": "given-given"}));
}

// ---------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------

#[test]
fn crontab_monday_schedule_fires_on_monday_at_eight() {
    let text = "name: weekly\nschedule: \"0 8 * * 1\"\nhttp:\n  url: https://example.com/hook\n";
    let c = load(&[("w.yaml", text)]);
    assert!(c.diagnostics.is_empty(), "{}", shown(&c));
    let push = c.push("weekly").expect("loads");
    let Trigger::Schedule(s) = &push.trigger else {
        panic!("expected a schedule trigger, got {:?}", push.trigger);
    };
    // From a Wednesday.
    let wed = Utc.with_ymd_and_hms(2026, 11, 25, 7, 0, 0).unwrap();
    assert_eq!(wed.weekday(), Weekday::Wed);
    let next = s.next_after(&wed).expect("fires");
    assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap());
    assert_eq!(
        (next.weekday(), next.hour(), next.minute(), next.second()),
        (Weekday::Mon, 8, 0, 0)
    );
    // From Monday before eight: the same day.
    let mon = Utc.with_ymd_and_hms(2026, 11, 30, 7, 59, 59).unwrap();
    assert_eq!(s.next_after(&mon), Some(next));
    // From Sunday: not Sunday (a Quartz-style reading would pick it).
    let sun = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
    assert_eq!(s.next_after(&sun), Some(next));
}

#[test]
fn weekday_out_of_range_is_an_error_at_the_schedule_value() {
    let text = "name: bad\nschedule: \"0 8 * * 8\"\nhttp:\n  url: https://example.com/hook\n";
    let c = load(&[("bad.yaml", text)]);
    let d = error(&c, "bad cron schedule");
    assert_at(d, "bad.yaml", text, "\"0 8 * * 8\"");
    assert!(d.message.contains("day-of-week value 8"), "{d}");
    assert!(c.pushes.is_empty());
}

// ---------------------------------------------------------------------------
// Shape errors
// ---------------------------------------------------------------------------

#[test]
fn unknown_field_in_a_nested_target_points_at_that_key() {
    let text = "\
name: typo
on: call.ended
graph_mail:
  account: ms_mail
  to: [sales@example.com]
  subjct: \"Call from << event.caller_number >>\"
  text: hello
";
    let c = load(&[
        ("accounts.yaml", crate::util::ACCOUNT_MS_MAIL),
        ("typo.yaml", text),
    ]);
    let d = error(&c, "unknown field `subjct`");
    assert_at(d, "typo.yaml", text, "subjct");
    assert!(d.message.contains("`subject`"), "{d}");

    let text = "\
name: deeper
on: call.ended
bing_ads:
  account: ms_ads
  developer_token: t
  customer_id: '1'
  customer_account_id: '2'
  conversion:
    name: Phone Call
    time: << event.ended_at | iso8601 >>
    clik_id: << event.msclkid >>
";
    let c = load(&[("deeper.yaml", text)]);
    let d = error(&c, "unknown field `clik_id`");
    assert_at(d, "deeper.yaml", text, "clik_id");
}

#[test]
fn non_mapping_document_is_a_clear_error() {
    let text = format!("{}---\n- a\n- b\n---\njust text\n", http_push("ok"));
    let c = load(&[("list.yaml", &text)]);
    let d = error(&c, "found a sequence");
    assert!(d.message.contains("expected a mapping"), "{d}");
    assert_at(d, "list.yaml", &text, "- a");
    let d = error(&c, "found a string");
    assert_at(d, "list.yaml", &text, "just text");
    assert!(c.push("ok").is_some(), "{}", shown(&c));
}

#[test]
fn unknown_kind_is_a_clear_error() {
    let text = "kind: webhook\nname: w\non: call.ended\nhttp:\n  url: https://example.com/hook\n";
    let c = load(&[("k.yaml", text)]);
    let d = error(&c, "unknown kind `webhook`");
    assert!(
        d.message.contains("`push`") && d.message.contains("`oauth_account`"),
        "{d}"
    );
    assert_at(d, "k.yaml", text, "webhook");
    assert!(c.pushes.is_empty() && c.accounts.is_empty());
}

#[test]
fn account_name_must_be_a_parameter_name() {
    let text = crate::util::ACCOUNT_MS_MAIL.replace("name: ms_mail", "name: ms-mail");
    let c = load_with_env(&[("a.yaml", &text)], &[("MS_MAIL_CLIENT_SECRET", "x")]);
    let d = error(&c, "account name `ms-mail`");
    assert!(d.message.contains("oauth.<name>"), "{d}");
    assert_at(d, "a.yaml", &text, "ms-mail");
    assert!(c.accounts.is_empty());

    // The same account with a valid name loads.
    let c = load_with_env(
        &[("a.yaml", crate::util::ACCOUNT_MS_MAIL)],
        &[("MS_MAIL_CLIENT_SECRET", "x")],
    );
    assert!(c.diagnostics.is_empty(), "{}", shown(&c));
    assert!(c.accounts.contains_key("ms_mail"));
}

/// The helpers compute positions the way diagnostics count them.
#[test]
fn position_helper_counts_characters() {
    assert_eq!(position_of("ab\nüx: y", "y"), (2, 5));
    assert_eq!(position_of("a", "a"), (1, 1));
}

#[test]
fn a_literal_bing_id_that_is_no_number_is_a_check_error_and_a_secret_one_waits_for_its_value() {
    let account = "kind: oauth_account\nname: ms_ads\ntoken_url: https://login.microsoftonline.com/common/oauth2/v2.0/token\nclient_id: x\nscope: https://ads.microsoft.com/msads.manage\n---\n";
    let push = |customer: &str| {
        format!(
            "{account}name: conv\non: call.ended\nbing_ads:\n  account: ms_ads\n  developer_token: t\n  customer_id: \"{customer}\"\n  customer_account_id: '2'\n  conversion:\n    name: Phone Call\n    time: << event.ended_at | iso8601 >>\n    click_id: << event.msclkid >>\n"
        )
    };
    let text = push("12-34");
    let c = load(&[("conv.yaml", &text)]);
    let d = error(&c, "is not a numeric Microsoft Advertising id");
    assert_at(d, "conv.yaml", &text, "\"12-34\"");
    // From a secret, the value is known only when it is rendered: a masked
    // dry-run shows its placeholder, a real render checks it.
    let text = push("${env:BING_CUSTOMER}");
    let c = load_with_env(&[("conv.yaml", &text)], &[("BING_CUSTOMER", "12-34")]);
    assert_eq!(c.error_count(), 0, "{}", shown(&c));
    let tokens = [("ms_ads", "tok")];
    let data = json!({"ended_at": "2026-11-24T14:03:11Z", "msclkid": "clk"});
    let prepared = |real: bool| match render_push(&c, "conv", data.clone(), &tokens, real) {
        Ok(Rendered::Ready(r)) => prepare(&r, &Endpoints::default()),
        other => panic!("expected a rendered push, got {other:?}"),
    };
    let masked = prepared(false);
    assert!(masked.is_ok(), "{masked:?}");
    let real = prepared(true);
    assert!(
        matches!(&real, Err(e) if e.to_string().contains("is not a numeric Microsoft Advertising id")),
        "{real:?}"
    );
}
