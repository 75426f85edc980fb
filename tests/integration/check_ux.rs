//! What `check`, `params` and `dry-run` tell a user about mistakes (issue
//! #11): unknown filters before any render, every unknown field at once,
//! hints that point at the right name, one file checked alone, counts in the
//! right number, JSON samples that are JSON values, and an unknown push name
//! without the folder's warnings. All through the real binary.

use serde_json::{json, Value};

use crate::util::{folder, pushwerk_in, stderr, stdout, ACCOUNT_MS_MAIL};

/// The 1-based line and column of the first occurrence of `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in text"));
    let line = text[..at].matches('\n').count() + 1;
    let col = text[..at].rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

fn error_line<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{out}"))
}

#[test]
fn unknown_filters_and_tests_are_check_errors_with_position_and_suggestion() {
    let push = "name: filters
on: call.ended
when: event.name | lenght > 2
http:
  url: https://example.com/hook
  raw: \"<< event.name | uppr >> <% if false %><< event.x | nosuchfilter >><% endif %>\"
  headers:
    X-Odd: \"<% if event.n is odd1 %>odd<% endif %> << event.name | upper >>\"
";
    let dir = folder(&[("pushes/filters.yaml", push)]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");

    let (line, col) = position(push, "event.name | lenght");
    let l = error_line(&err, "unknown filter `lenght`");
    assert!(
        l.starts_with(&format!("pushes/filters.yaml:{line}:{col}: error:")),
        "{l}"
    );
    assert!(l.contains("did you mean `length`?"), "{l}");

    let (line, col) = position(push, "\"<< event.name | uppr");
    let l = error_line(&err, "unknown filter `uppr`");
    assert!(
        l.starts_with(&format!("pushes/filters.yaml:{line}:{col}: error:")),
        "{l}"
    );
    assert!(l.contains("did you mean `upper`?"), "{l}");
    // Found even where no render would reach it.
    error_line(&err, "unknown filter `nosuchfilter`");
    error_line(&err, "unknown test `odd1`");
    // Known filters (builtin and pushwerk's) are not reported.
    assert!(!err.contains("`upper`,") && !err.contains("unknown filter `upper`"));
    assert!(err.contains("4 errors"), "{err}");
}

#[test]
fn every_unknown_field_of_a_document_is_reported_with_did_you_mean() {
    let push = "name: typos
on: call.ended
descripton: several typos in one document
graph_mail:
  account: ms_mail
  to: [sales@example.com]
  subjct: Hello
  txt: body
  attachments:
    - name: a.txt
      pth: files/a.txt
retry:
  max_atempts: 3
";
    let dir = folder(&[
        ("pushes/accounts.yaml", ACCOUNT_MS_MAIL),
        ("pushes/typos.yaml", push),
    ]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for (field, suggestion) in [
        ("descripton", "description"),
        ("subjct", "subject"),
        ("txt", "text"),
        ("pth", "path"),
        ("max_atempts", "max_attempts"),
    ] {
        let (line, col) = position(push, &format!("{field}:"));
        let l = error_line(&err, &format!("unknown field `{field}`"));
        assert!(
            l.starts_with(&format!("pushes/typos.yaml:{line}:{col}: error:")),
            "{l}"
        );
        assert!(l.contains(&format!("did you mean `{suggestion}`?")), "{l}");
    }
    assert!(err.contains("5 errors"), "{err}");
}

#[test]
fn a_misspelt_event_namespace_suggests_the_event_field() {
    let push = "name: ns
on: call.ended
http:
  url: https://example.com/hook
  raw: \"<< evnt.caller_number >>\"
";
    let dir = folder(&[("pushes/ns.yaml", push)]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    let l = error_line(&stderr(&out), "unknown parameter `evnt.caller_number`").to_owned();
    assert!(l.contains("did you mean `event.caller_number`?"), "{l}");
    assert!(!l.contains("event.evnt"), "{l}");
}

#[test]
fn check_file_reports_that_file_alone_with_its_folders_accounts() {
    let good = "name: good
on: call.ended
graph_mail:
  account: ms_mail
  to: [sales@example.com]
  subject: hi
  text: hello
";
    let broken = "name: broken
on: call.ended
http:
  url: https://example.com/x
  methd: GET
";
    let dir = folder(&[
        ("pushes/accounts.yaml", ACCOUNT_MS_MAIL),
        ("pushes/good.yaml", good),
        ("pushes/broken.yaml", broken),
    ]);
    let out = pushwerk_in(dir.path(), &["check", "pushes/good.yaml"], &[]);
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{so}{se}");
    assert_eq!(
        so.trim(),
        "ok: pushes/good.yaml: 1 file, 1 push, 0 accounts, 0 errors, 0 warnings"
    );
    assert!(
        !se.contains("broken.yaml") && !se.contains("accounts.yaml"),
        "{se}"
    );

    let out = pushwerk_in(dir.path(), &["check", "pushes/broken.yaml"], &[]);
    let se = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("pushes/broken.yaml:5:3: error:"), "{se}");
    assert!(
        se.contains(
            "check failed: pushes/broken.yaml: 1 file, 0 pushes, 0 accounts, 1 error, 0 warnings"
        ),
        "{se}"
    );
}

#[test]
fn summaries_use_singular_for_one() {
    let push = "name: one
on: call.ended
graph_mail:
  account: ms_mail
  to: [sales@example.com]
  subject: hi
  text: hello
";
    let dir = folder(&[
        ("pushes/accounts.yaml", ACCOUNT_MS_MAIL),
        ("pushes/one.yaml", push),
    ]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    // The account's `${env:MS_MAIL_CLIENT_SECRET}` is not set: one warning.
    assert_eq!(
        stdout(&out).trim(),
        "ok: pushes: 2 files, 1 push, 1 account, 0 errors, 1 warning",
        "{}",
        stderr(&out)
    );
}

#[test]
fn params_json_samples_are_json_values_not_encoded_twice() {
    let dir = folder(&[(
        "pushes/hook.yaml",
        "name: hook\non: call.ended\nhttp:\n  url: https://example.com/x\n",
    )]);
    let event = json!({"id": "evt-1", "type": "call.ended", "time": "2026-11-24T14:03:11Z",
        "data": {"call_id": "c-8812", "duration": 184, "answered": true, "tags": ["a"], "nothing": null}});
    std::fs::write(dir.path().join("ev.json"), event.to_string()).unwrap();
    let out = pushwerk_in(
        dir.path(),
        &["params", "--event", "ev.json", "--format", "json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let params: Vec<Value> = serde_json::from_str(&stdout(&out)).expect("JSON");
    let sample = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))["sample"]
            .clone()
    };
    assert_eq!(sample("event.call_id"), json!("c-8812"));
    assert_eq!(sample("event.duration"), json!(184));
    assert_eq!(sample("event.answered"), json!(true));
    assert_eq!(sample("event.tags"), json!(["a"]));
    assert_eq!(sample("event.nothing"), Value::Null);
    assert_eq!(sample("push.event_id"), json!("evt-1"));
    // The table still shows JSON text.
    let out = pushwerk_in(dir.path(), &["params", "--event", "ev.json"], &[]);
    assert!(
        error_line(&stdout(&out), "event.call_id").contains("\"c-8812\""),
        "{}",
        stdout(&out)
    );
}

#[test]
fn dry_run_of_an_unknown_push_prints_only_the_error_with_a_suggestion() {
    let push = "name: lead-mail
on: call.ended
graph_mail:
  account: ms_mail
  to: [sales@example.com]
  subject: hi
  text: hello
";
    let dir = folder(&[
        ("pushes/accounts.yaml", ACCOUNT_MS_MAIL),
        ("pushes/lead-mail.yaml", push),
    ]);
    let out = pushwerk_in(dir.path(), &["dry-run", "lead-mal"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: no valid push named `lead-mal` in pushes; did you mean `lead-mail`?"
    );
}

#[test]
fn dry_run_of_an_unknown_push_mentions_broken_documents_without_listing_them() {
    let dir = folder(&[(
        "pushes/broken.yaml",
        "name: lead-mail\non: call.ended\nhttp:\n  url: https://example.com/x\n  methd: GET\n",
    )]);
    let out = pushwerk_in(dir.path(), &["dry-run", "lead-mail"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: no valid push named `lead-mail` in pushes (1 error in the folder: `pushwerk check` lists it)"
    );
}

#[test]
fn a_type_error_and_an_unknown_field_are_both_reported() {
    let push = "name: t
on: call.ended
retry: {max_attempts: many}
http:
  url: https://example.com/hook
  methd: GET
";
    let dir = folder(&[("pushes/t.yaml", push)]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&err, "retry.max_attempts").contains("invalid type"),
        "{err}"
    );
    let l = error_line(&err, "unknown field `methd`");
    assert!(l.starts_with("pushes/t.yaml:6:3: error:"), "{l}");
    assert!(l.contains("did you mean `method`?"), "{l}");
    assert!(err.contains("2 errors"), "{err}");
}
