//! The command line as a user runs it: `check`, `dry-run`, `params`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{folder, pushwerk, pushwerk_in, stderr, stdout, ACCOUNT_MS_MAIL, NOW};

#[test]
fn check_passes_on_the_shipped_examples() {
    let out = pushwerk(&["check", "pushes"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("ok: pushes: "), "{text}");
    assert!(text.contains(" 5 pushes, 4 accounts, 0 errors"), "{text}");
    // Missing `${env:…}` secrets are warnings on a machine without them.
    assert!(stderr(&out).contains("warning: environment variable MS_MAIL_CLIENT_SECRET is not set"));
}

#[test]
fn check_deny_warnings_fails_on_missing_secrets_and_passes_with_them() {
    let out = pushwerk(&["check", "--deny-warnings"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let env = [
        ("MS_MAIL_CLIENT_SECRET", "s1"),
        ("MS_ADS_CLIENT_SECRET", "s2"),
        ("CRM_CLIENT_SECRET", "s3"),
        ("BING_ADS_DEVELOPER_TOKEN", "t"),
        ("BING_ADS_CUSTOMER_ID", "123"),
        ("BING_ADS_ACCOUNT_ID", "456"),
    ];
    let out = pushwerk(&["check", "--deny-warnings"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no diagnostics once every secret is set");
}

#[test]
fn five_broken_files_give_five_located_errors_in_one_run() {
    let out = pushwerk(&["check", "fixtures/broken"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains(": error: ")).collect();
    let expected = [
        (
            "fixtures/broken/bad-cron.yaml:2:11:",
            "day-of-week value 8 is out of range",
        ),
        ("fixtures/broken/syntax-error.yaml:", "YAML syntax error"),
        (
            "fixtures/broken/unknown-account.yaml:4:12:",
            "unknown OAuth account `ms_mial`; did you mean `ms_mail`?",
        ),
        (
            "fixtures/broken/unknown-field.yaml:6:3:",
            "unknown field `subjct`",
        ),
        (
            "fixtures/broken/unknown-parameter.yaml:6:12:",
            "unknown parameter `caller_number`",
        ),
    ];
    assert_eq!(errors.len(), 5, "{err}");
    for ((prefix, message), line) in expected.iter().zip(&errors) {
        assert!(
            line.starts_with(prefix) && line.contains(message),
            "expected {prefix} … {message}, got {line}"
        );
    }
    assert!(err.contains("check failed: fixtures/broken: 6 files, 0 pushes, 1 account, 5 errors"));
    assert!(!err.contains("panicked"));
}

#[test]
fn unreadable_folder_is_an_error_not_a_panic() {
    let out = pushwerk(&["check", "no/such/folder"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read push folder no/such/folder"),
        "{}",
        stderr(&out)
    );
}

fn dry_run_json(push: &str, event: &str) -> Value {
    let out = pushwerk(
        &[
            "dry-run", push, "--event", event, "--format", "json", "--now", NOW,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("dry-run --format json prints JSON")
}

#[test]
fn dry_run_graph_mail_prints_the_sendmail_request_with_masked_token() {
    let out = pushwerk(
        &[
            "dry-run",
            "lead-mail",
            "--event",
            "fixtures/call-ended.json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("\nPOST https://graph.microsoft.com/v1.0/me/sendMail\n"),
        "{text}"
    );
    assert!(
        text.contains("\nAuthorization: Bearer ‹oauth.ms_mail›\n"),
        "{text}"
    );
    let body = text.lines().last().unwrap();
    let body: Value = serde_json::from_str(body).expect("the body line is JSON");
    let message = &body["message"];
    assert_eq!(
        message["subject"],
        "Call from Erika Mustermann (+49 30 1234567, 184 s)"
    );
    assert_eq!(message["body"]["contentType"], "HTML");
    assert_eq!(
        message["toRecipients"][0]["emailAddress"]["address"],
        "sales@example.com"
    );
}

#[test]
fn dry_run_graph_mail_body_survives_quotes_backslashes_newlines_and_emoji() {
    let event: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::util::root().join("fixtures/call-ended-tricky.json"))
            .unwrap(),
    )
    .unwrap();
    let name = event["data"]["caller_name"].as_str().unwrap();
    assert!(
        name.contains('"') && name.contains('\\') && name.contains('\n') && name.contains('🎉')
    );
    let request = dry_run_json("lead-mail", "fixtures/call-ended-tricky.json");
    let subject = request["body"]["message"]["subject"].as_str().unwrap();
    // A line break in a subject is folded into a space (a subject is one
    // header line).
    assert_eq!(
        subject,
        format!(
            "Call from {} (0044 20 7946 0958, 45 s)",
            name.replace('\n', " ")
        )
    );
    // And the text form's body line is JSON too.
    let out = pushwerk(
        &[
            "dry-run",
            "lead-mail",
            "--event",
            "fixtures/call-ended-tricky.json",
        ],
        &[],
    );
    let body: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(body["message"]["subject"].as_str(), Some(subject));
}

#[test]
fn dry_run_bing_ads_prints_apply_offline_conversions() {
    let request = dry_run_json("bing-call-conversion", "fixtures/call-ended.json");
    assert_eq!(request["method"], "POST");
    assert!(request["url"]
        .as_str()
        .unwrap()
        .ends_with("/CampaignManagement/v13/OfflineConversions/Apply"));
    let headers = &request["headers"];
    assert_eq!(headers["Authorization"], "Bearer ‹oauth.ms_ads›");
    assert_eq!(headers["DeveloperToken"], "‹env:BING_ADS_DEVELOPER_TOKEN›");
    assert!(headers["CustomerId"].is_string() && headers["CustomerAccountId"].is_string());
    let conversion = &request["body"]["OfflineConversions"][0];
    assert_eq!(conversion["ConversionName"], "Phone Call");
    assert_eq!(
        conversion["MicrosoftClickId"],
        "f894f652ea334e739002f7167ab8f8e3"
    );
    let time = conversion["ConversionTime"].as_str().unwrap();
    assert!(time.ends_with('Z'), "UTC: {time}");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(time)
            .unwrap()
            .to_rfc3339(),
        "2026-11-24T14:03:11+00:00"
    );
    // The event's offset time is converted to UTC.
    let tricky = dry_run_json("bing-call-conversion", "fixtures/call-ended-tricky.json");
    assert_eq!(
        tricky["body"]["OfflineConversions"][0]["ConversionTime"],
        "2026-11-24T15:10:00Z"
    );
}

#[test]
fn dry_run_masks_env_values_even_when_they_are_set() {
    let env = [
        ("BING_ADS_CUSTOMER_ID", "1234567"),
        ("BING_ADS_ACCOUNT_ID", "7654321"),
    ];
    let out = pushwerk(
        &[
            "dry-run",
            "bing-call-conversion",
            "--event",
            "fixtures/call-ended.json",
            "--format",
            "json",
        ],
        &env,
    );
    // Without --show-secrets the values stay masked even when they are set.
    let request: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        request["headers"]["CustomerId"],
        "‹env:BING_ADS_CUSTOMER_ID›"
    );
}

#[test]
fn dry_run_says_why_a_push_is_skipped() {
    let out = pushwerk(
        &[
            "dry-run",
            "lead-mail",
            "--event",
            "fixtures/call-short.json",
        ],
        &[],
    );
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "skipped: condition `event.answered and event.duration > 30` is false (event.answered = true, event.duration = 12)\n"
    );
    let out = pushwerk(
        &[
            "dry-run",
            "missed-call-smtp",
            "--event",
            "fixtures/call-ended.json",
        ],
        &[],
    );
    assert!(stdout(&out).starts_with("skipped: condition `not event.answered` is false"));
}

#[test]
fn dry_run_of_a_push_for_another_event_type_is_skipped() {
    let dir = folder(&[(
        "e.json",
        r#"{"id":"1","type":"form.submitted","time":"2026-01-01T00:00:00Z","data":{}}"#,
    )]);
    let event = dir.path().join("e.json");
    let out = pushwerk(
        &["dry-run", "crm-lead", "--event", event.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        stdout(&out),
        "skipped: push `crm-lead` fires on `call.ended`, the event is `form.submitted`\n"
    );
}

#[test]
fn dry_run_names_the_event_field_that_is_missing() {
    let dir = folder(&[(
        "e.json",
        r#"{"id":"e-9","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{"answered":true,"duration":99}}"#,
    )]);
    let event = dir.path().join("e.json");
    let out = pushwerk(
        &["dry-run", "lead-mail", "--event", event.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("graph_mail.subject") && err.contains("`event.caller_name`"),
        "{err}"
    );
}

#[test]
fn dry_run_rejects_a_malformed_event_with_the_reason() {
    let dir = folder(&[("bad.json", r#"{"id":"1","type":"call.ended","data":{}}"#)]);
    let event = dir.path().join("bad.json");
    let out = pushwerk(
        &["dry-run", "crm-lead", "--event", event.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("missing field `time`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dry_run_accepts_a_file_and_suggests_names() {
    let out = pushwerk(
        &[
            "dry-run",
            "pushes/crm-webhook.yaml",
            "--event",
            "fixtures/call-ended.json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("POST https://crm.example.com/api/leads?source=Winter+Sale"));
    let out = pushwerk(
        &[
            "dry-run",
            "lead-mial",
            "--event",
            "fixtures/call-ended.json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("did you mean `lead-mail`?"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dry_run_of_a_schedule_push_shows_the_next_fire_times_in_crontab_terms() {
    // 2026-11-25 is a Wednesday; `0 8 * * 1-5` fires on weekdays at 08:00.
    let out = pushwerk(
        &["dry-run", "daily-summary", "--now", "2026-11-27T09:00:00Z"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "next: 2026-11-30T08:00:00+00:00, 2026-12-01T08:00:00+00:00, 2026-12-02T08:00:00+00:00"
        ),
        "Friday after 08:00 → next Monday: {}",
        stdout(&out)
    );
}

/// Splits a command line the way a POSIX shell does, by asking one.
fn shell_words(command: &str) -> Vec<String> {
    let script = format!(
        "words() {{ for a in \"$@\"; do printf '%s\\0' \"$a\"; done; }}; words {}",
        command.trim_start_matches("curl")
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn dry_run_curl_reproduces_the_exact_body_and_headers() {
    let json = dry_run_json("crm-lead", "fixtures/call-ended-tricky.json");
    let out = pushwerk(
        &[
            "dry-run",
            "crm-lead",
            "--event",
            "fixtures/call-ended-tricky.json",
            "--format",
            "curl",
        ],
        &[],
    );
    let words = shell_words(&stdout(&out));
    let body = words
        .iter()
        .position(|w| w == "--data-binary")
        .map(|i| &words[i + 1])
        .unwrap();
    let parsed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(parsed, json["body"]);
    assert!(words.contains(&"Authorization: Bearer ‹oauth.crm›".to_owned()));
    assert_eq!(words[0], "-X");
    assert_eq!(words[1], "POST");
}

#[test]
fn params_lists_every_namespace_with_masked_tokens() {
    let out = pushwerk(
        &[
            "params",
            "--event",
            "fixtures/call-ended.json",
            "--format",
            "json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let params: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let find = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(find("event.duration")["type"], "number");
    assert_eq!(find("event.duration")["sample"], 184);
    assert_eq!(find("event.call_id")["sample"], "c-8812");
    assert_eq!(find("oauth.ms_mail")["sample"], "‹oauth.ms_mail›");
    assert_eq!(find("oauth.ms_mail")["secret"], true);
    assert_eq!(find("push.attempt")["type"], "number");
    assert!(find("now")["sample"].is_string());
    // Without an event: the event fields the pushes use.
    let out = pushwerk(&["params"], &[]);
    let text = stdout(&out);
    assert!(
        text.contains("event.msclkid") && text.contains("used by bing-call-conversion"),
        "{text}"
    );
}

/// Every output of `check`, `params` and `dry-run` (all formats) for `dir`.
fn all_outputs(dir: &Path, env: &[(&str, &str)], pushes: &[(&str, &str)]) -> String {
    let mut all = String::new();
    let mut collect = |args: &[&str]| {
        let out = pushwerk_in(dir, args, env);
        all.push_str(&stdout(&out));
        all.push_str(&stderr(&out));
    };
    collect(&["check"]);
    collect(&["check", "--deny-warnings"]);
    collect(&["params"]);
    collect(&["params", "--event", "event.json", "--format", "json"]);
    for (push, event) in pushes {
        for format in ["text", "json", "curl"] {
            collect(&["dry-run", push, "--event", event, "--format", format]);
        }
    }
    all
}

#[test]
fn canary_secrets_appear_in_no_output_unless_asked_for() {
    const CANARY_ENV: &str = "CANARY-ENV-7f3a9c";
    const CANARY_LITERAL: &str = "CANARY-LITERAL-51d2e0";
    const CANARY_FILE: &str = "CANARY-FILE-c0ffee";
    let account_literal = ACCOUNT_MS_MAIL.replace("${env:MS_MAIL_CLIENT_SECRET}", CANARY_LITERAL);
    let dir = folder(&[
        ("pushes/accounts.yaml", &account_literal),
        ("pushes/key.txt", &format!("{CANARY_FILE}\n")),
        (
            "pushes/hook.yaml",
            "name: hook\non: call.ended\nhttp:\n  url: https://hooks.example.com/in\n  headers:\n    X-Api-Key: ${env:HOOK_KEY}\n    X-File-Key: ${file:key.txt}\n    Authorization: Bearer << oauth.ms_mail >>\n  json: { n: << event.n >> }\n",
        ),
        (
            "pushes/mail.yaml",
            "name: mail\non: call.ended\ngraph_mail:\n  account: ms_mail\n  to: [a@example.com]\n  subject: s << event.n >>\n  text: t\n",
        ),
        ("event.json", r#"{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{"n":1}}"#),
    ]);
    let env = [
        ("HOOK_KEY", CANARY_ENV),
        ("MS_MAIL_CLIENT_SECRET", CANARY_ENV),
    ];
    let all = all_outputs(
        dir.path(),
        &env,
        &[("hook", "event.json"), ("mail", "event.json")],
    );
    for canary in [CANARY_ENV, CANARY_LITERAL, CANARY_FILE] {
        assert!(!all.contains(canary), "{canary} leaked:\n{all}");
    }
    assert!(
        all.contains("X-Api-Key: ‹env:HOOK_KEY›") && all.contains("X-File-Key: ‹file:key.txt›"),
        "{all}"
    );
    assert!(
        all.contains("client_secret is written into the file"),
        "the literal secret is flagged: {all}"
    );

    // With --show-secrets the `${…}` values are shown; a push that needs an
    // access token refuses, since no token is available to show.
    let out = pushwerk_in(
        dir.path(),
        &["dry-run", "hook", "--event", "event.json", "--show-secrets"],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!stdout(&out).contains(CANARY_ENV) && !stderr(&out).contains(CANARY_ENV));
    let no_token = folder(&[
        ("pushes/hook.yaml", "name: hook\non: call.ended\nhttp:\n  url: https://hooks.example.com/in\n  headers:\n    X-Api-Key: ${env:HOOK_KEY}\n"),
        ("event.json", r#"{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{}}"#),
    ]);
    let out = pushwerk_in(
        no_token.path(),
        &["dry-run", "hook", "--event", "event.json", "--show-secrets"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("X-Api-Key: {CANARY_ENV}")));
}

#[test]
fn schedule_timezones_are_checked_and_used() {
    let dir = folder(&[
        ("pushes/ok.yaml", "name: ok\nschedule: \"0 8 * * 1\"\ntimezone: Europe/Berlin\nhttp:\n  url: https://example.com/x\n"),
        ("pushes/bad.yaml", "name: bad\nschedule: \"0 8 * * 1\"\ntimezone: Europe/Berln\nhttp:\n  url: https://example.com/x\n"),
    ]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("pushes/bad.yaml:3:11: error: unknown timezone `Europe/Berln`; did you mean `Europe/Berlin`?"), "{err}");
    // Monday 08:00 in Berlin is 07:00 UTC in winter.
    let out = pushwerk_in(
        dir.path(),
        &["dry-run", "ok", "--now", "2026-11-25T00:00:00Z"],
        &[],
    );
    assert!(
        stdout(&out).contains("next: 2026-11-30T07:00:00+00:00"),
        "{}",
        stdout(&out)
    );
}
