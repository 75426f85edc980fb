use super::*;

// printf %s test@example.com | sha256sum
const TEST_EMAIL_SHA256: &str = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b";

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    register(&mut env);
    env
}

fn render(tmpl: &str, ctx: Value) -> Result<String, Error> {
    env().render_str(tmpl, ctx)
}

fn ok(tmpl: &str, ctx: Value) -> String {
    match render(tmpl, ctx) {
        Ok(s) => s,
        Err(e) => panic!("{tmpl}: {e:#}"),
    }
}

fn err(tmpl: &str, ctx: Value) -> Error {
    match render(tmpl, ctx) {
        Ok(s) => panic!("{tmpl}: expected an error, got {s:?}"),
        Err(e) => e,
    }
}

fn v(x: impl Into<Value>) -> Value {
    x.into()
}

fn j(x: serde_json::Value) -> Value {
    Value::from(minijinja::value::Serde(x))
}

fn none() -> Value {
    Value::from(())
}

#[test]
fn sha256_normalises_email() {
    assert_eq!(sha256_hex_normalised("test@example.com"), TEST_EMAIL_SHA256);
    assert_eq!(
        ok(
            "{{ e|sha256 }}",
            j(serde_json::json!({"e": " Test@Example.COM "}))
        ),
        TEST_EMAIL_SHA256
    );
    assert_eq!(
        ok("{{ 'test@example.com'|sha256 }}", none()),
        TEST_EMAIL_SHA256
    );
}

#[test]
fn sha256_numbers_and_errors() {
    assert_eq!(ok("{{ 42|sha256 }}", none()), sha256_hex_normalised("42"));
    let e = err("{{ x|sha256 }}", none());
    assert_eq!(e.kind(), ErrorKind::InvalidOperation);
    err("{{ '   '|sha256 }}", none());
    err("{{ [1]|sha256 }}", none());
}

#[test]
fn e164_valid() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("+49 30 1234567", None, "+49301234567"),
        ("0049 (30) 123-4567", None, "+49301234567"),
        ("+49 (0)30 1234567", None, "+49301234567"),
        ("030 1234567", Some("49"), "+49301234567"),
        ("030 1234567", Some("+49"), "+49301234567"),
        ("415 555 0100", Some("1"), "+14155550100"),
        ("1 (415) 555-0100", None, "+14155550100"),
        ("1.415.555.0100", Some("1"), "+14155550100"),
        ("06 6982 1234", Some("39"), "+390669821234"),
        ("+44 20 7946 0958", Some("49"), "+442079460958"),
        ("  +12345678  ", None, "+12345678"),
        ("+123456789012345", None, "+123456789012345"),
    ];
    for (input, cc, expected) in cases {
        assert_eq!(
            normalise_e164(input, *cc).as_deref(),
            Ok(*expected),
            "{input} {cc:?}"
        );
    }
}

#[test]
fn e164_invalid() {
    let cases: &[(&str, Option<&str>, E164Error)] = &[
        ("", None, E164Error::Empty),
        ("   ", Some("49"), E164Error::Empty),
        ("+49 30 CALL-NOW", None, E164Error::Letter),
        (
            "+49 30/1234567",
            None,
            E164Error::InvalidCharacter("the character '/'".into()),
        ),
        ("49+301234567", None, E164Error::MisplacedPlus),
        ("030 1234567", None, E164Error::MissingCountryCode),
        ("+49 1234", None, E164Error::DigitCount { digits: 6 }),
        (
            "+1234567890123456",
            None,
            E164Error::DigitCount { digits: 16 },
        ),
        ("+", None, E164Error::DigitCount { digits: 0 }),
        ("+0123456789", None, E164Error::CountryCodeStartsWithZero),
        ("000123456789", None, E164Error::CountryCodeStartsWithZero),
        ("0301234567", Some("0"), E164Error::InvalidDefaultCountry),
        ("0301234567", Some("1234"), E164Error::InvalidDefaultCountry),
        ("0301234567", Some("4a"), E164Error::InvalidDefaultCountry),
    ];
    for (input, cc, expected) in cases {
        assert_eq!(
            normalise_e164(input, *cc).as_ref(),
            Err(expected),
            "{input} {cc:?}"
        );
    }
}

#[test]
fn e164_filter_renders_and_hides_digits() {
    let ctx = j(serde_json::json!({"p": "030 1234567", "n": 4930123456_i64}));
    assert_eq!(ok("{{ p|e164('49') }}", ctx.clone()), "+49301234567");
    assert_eq!(ok("{{ p|e164(49) }}", ctx.clone()), "+49301234567");
    assert_eq!(ok("{{ n|e164(49) }}", ctx.clone()), "+494930123456");
    assert_eq!(ok("{{ '+1 415 555 0100'|e164 }}", none()), "+14155550100");

    let e = err("{{ p|e164 }}", ctx.clone());
    assert_eq!(e.kind(), ErrorKind::InvalidOperation);
    let msg = e.to_string();
    assert!(msg.contains("no international prefix"), "{msg}");
    assert!(!msg.contains("1234567"), "{msg}");

    let e = err("{{ '+49 9876'|e164 }}", none());
    let msg = e.to_string();
    assert!(msg.contains("6 digits"), "{msg}");
    assert!(msg.contains("8 to 15"), "{msg}");
    assert!(msg.contains("+<country code>"), "{msg}");
    assert!(!msg.contains("9876"), "{msg}");

    let e = err("{{ '+49 98 76 x 54321'|e164 }}", none());
    let msg = e.to_string();
    assert!(msg.contains("letter"), "{msg}");
    assert!(!msg.contains("54321") && !msg.contains("98 76"), "{msg}");

    err("{{ p|e164(true) }}", ctx.clone());
    err("{{ 1.5|e164 }}", none());
    err("{{ x|e164 }}", none());
}

#[test]
fn iso8601_input_forms() {
    let cases: &[(Value, &str)] = &[
        (v("2026-07-05T06:20:38+02:00"), "2026-07-05T04:20:38Z"),
        (v("2026-07-04T23:20:38-05:00"), "2026-07-05T04:20:38Z"),
        (v("2026-07-05T04:20:38.495Z"), "2026-07-05T04:20:38Z"),
        (v("2026-07-05 04:20:38"), "2026-07-05T04:20:38Z"),
        (v("2026-07-05T04:20:38"), "2026-07-05T04:20:38Z"),
        (v("2026-07-05 04:20:38.9"), "2026-07-05T04:20:38Z"),
        (v(1_783_225_238_i64), "2026-07-05T04:20:38Z"),
        (v(1_783_225_238.495_f64), "2026-07-05T04:20:38Z"),
        (v(0), "1970-01-01T00:00:00Z"),
        (v(-1.5), "1969-12-31T23:59:58Z"),
    ];
    for (input, expected) in cases {
        let ctx = minijinja::context! { t => input.clone() };
        assert_eq!(ok("{{ t|iso8601 }}", ctx), *expected, "{input:?}");
    }
}

#[test]
fn iso8601_millis() {
    let cases: &[(Value, &str)] = &[
        (
            v("2026-07-05T06:20:38.495+02:00"),
            "2026-07-05T04:20:38.495Z",
        ),
        (
            v("2026-07-05T06:20:38.4959+02:00"),
            "2026-07-05T04:20:38.495Z",
        ),
        (v("2026-07-05T06:20:38+02:00"), "2026-07-05T04:20:38.000Z"),
        (v("2026-07-05 04:20:38.495"), "2026-07-05T04:20:38.495Z"),
        (v(1_783_225_238.495_f64), "2026-07-05T04:20:38.495Z"),
        (v(1_783_225_238_i64), "2026-07-05T04:20:38.000Z"),
    ];
    for (input, expected) in cases {
        let ctx = minijinja::context! { t => input.clone() };
        assert_eq!(ok("{{ t|iso8601(millis=true) }}", ctx.clone()), *expected);
        assert_eq!(ok("{{ t|iso8601(true) }}", ctx), *expected);
    }
    assert_eq!(
        ok(
            "{{ '2026-07-05T04:20:38.495Z'|iso8601(millis=false) }}",
            none()
        ),
        "2026-07-05T04:20:38Z"
    );
    err("{{ 0|iso8601(millis='yes') }}", none());
    err("{{ 0|iso8601(milis=true) }}", none());
}

#[test]
fn iso8601_errors_name_forms() {
    for tmpl in [
        "{{ 'yesterday'|iso8601 }}",
        "{{ '2026-13-05T04:20:38Z'|iso8601 }}",
        "{{ '2026-07-05'|iso8601 }}",
    ] {
        let e = err(tmpl, none());
        assert_eq!(e.kind(), ErrorKind::InvalidOperation);
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }
    err("{{ x|iso8601 }}", none());
    err("{{ true|iso8601 }}", none());
    err("{{ 1e300|iso8601 }}", none());
    err("{{ 9223372036854775807|iso8601 }}", none());
    // Milliseconds passed as seconds land in year 58 000: rejected with a hint.
    let e = err("{{ 1783225238495|iso8601 }}", none());
    assert!(e.to_string().contains("milliseconds"), "{e}");
    assert!(e.to_string().contains(" 1783225238495 "), "{e}");
    err("{{ -62167219201|iso8601 }}", none());
    assert_eq!(
        ok("{{ -62167219200|iso8601 }}", none()),
        "0000-01-01T00:00:00Z"
    );
    assert_eq!(
        ok("{{ 253402300799|iso8601 }}", none()),
        "9999-12-31T23:59:59Z"
    );
    err("{{ 253402300800|iso8601 }}", none());
    err("{{ '0000-01-01T00:30:00+01:00'|iso8601 }}", none());
}

#[test]
fn strftime_formats_in_utc() {
    assert_eq!(
        ok(
            "{{ '2026-07-05T06:20:38+02:00'|strftime('%Y/%m/%d %H:%M:%S %Z') }}",
            none()
        ),
        "2026/07/05 04:20:38 UTC"
    );
    assert_eq!(
        ok("{{ 1783225238|strftime('%d.%m.%Y') }}", none()),
        "05.07.2026"
    );
}

#[test]
fn strftime_bad_format_errors() {
    for fmt in ["%Q", "%", "%Y-%", "%.9x"] {
        let tmpl = format!("{{{{ 0|strftime('{fmt}') }}}}");
        let e = err(&tmpl, none());
        assert_eq!(e.kind(), ErrorKind::InvalidOperation);
        assert!(e.to_string().contains("invalid format string"), "{e}");
    }
    err("{{ 0|strftime }}", none());
}

#[test]
fn json_round_trips_awkward_string() {
    let s = "say \"hi\" \\ back\nslash <b>&'tag'</b> 🦀";
    let out = ok("{{ s|json }}", j(serde_json::json!({ "s": s })));
    assert!(out.contains("<b>&'tag'</b>"), "{out}");
    let back: String = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(back, s);
}

#[test]
fn json_compact_and_safe() {
    let ctx = j(serde_json::json!({ "o": {"a": [1, 2.5, null, true], "b": "<x>"} }));
    let out = ok("{{ o|json }}", ctx.clone());
    assert_eq!(out, r#"{"a":[1,2.5,null,true],"b":"<x>"}"#);

    // In an HTML-escaped template the JSON text is escaped like any
    // value (a `</script>` in a string must not close a script element).
    let mut env = env();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("t.html", "{{ o|json }}")
        .expect("template");
    let html = env
        .get_template("t.html")
        .and_then(|t| t.render(ctx))
        .expect("render");
    assert_eq!(
        html,
        r#"{&quot;a&quot;:[1,2.5,null,true],&quot;b&quot;:&quot;&lt;x&gt;&quot;}"#
    );

    let e = err("{{ missing|json }}", none());
    assert_eq!(e.kind(), ErrorKind::InvalidOperation);
    assert_eq!(ok("{{ none|json }}", none()), "null");
}

#[test]
fn path_encodes_one_segment() {
    assert_eq!(
        encode_path_segment("../../admin?x=1#frag").unwrap(),
        "..%2F..%2Fadmin%3Fx%3D1%23frag"
    );
    assert_eq!(encode_path_segment("a b/ü").unwrap(), "a%20b%2F%C3%BC");
    assert_eq!(encode_path_segment("c-8812_x.y~").unwrap(), "c-8812_x.y~");
    assert!(encode_path_segment("..").is_err());
    assert!(encode_path_segment(".").is_err());
    let u = url::Url::parse(&format!(
        "https://h.test/api/{}",
        encode_path_segment("../../admin?x=1#f").unwrap()
    ))
    .unwrap();
    assert_eq!(u.path(), "/api/..%2F..%2Fadmin%3Fx%3D1%23f");
    assert_eq!(u.query(), None);
    assert_eq!(ok("{{ n|path }}", j(serde_json::json!({"n": 42}))), "42");
}

#[test]
fn awkward_inputs_never_panic() {
    let strings = [
        "",
        " ",
        "+",
        "00",
        "(",
        ")",
        "((0))",
        "+(0)",
        "+0",
        "0",
        "\0",
        "\u{feff}+49 30",
        "１２３４５６７８９",
        "+٤٩١٢٣٤٥٦٧٨",
        "🦀🦀🦀",
        "\u{202e}+4930123456",
        "9999999999999999999999999999999999999999",
        "-",
        "%",
        "%%%%",
        "%.3f",
        "%:z",
        "%#z",
        "%s",
        "%+",
        "%-",
        "%E",
        "262143-12-31T23:59:59Z",
        "+262143-12-31T23:59:59Z",
        "-262144-01-01T00:00:00Z",
        "9999-12-31T23:59:60Z",
        "2026-02-30T00:00:00Z",
        "2026-07-05T24:00:00Z",
        "2026-07-05T04:20:38+99:00",
        "2026-07-05T04:20:38.9999999999999Z",
        "ǅ",
        "İ",
    ];
    let numbers = [
        v(i64::MAX),
        v(i64::MIN),
        v(u64::MAX),
        v(f64::MAX),
        v(f64::MIN),
        v(f64::NAN),
        v(f64::INFINITY),
        v(-0.0_f64),
        v(0.999_999_999_9_f64),
        v(-0.000_000_1_f64),
        v(8.2e12_f64),
        v(-8.3e12_f64),
        v(1e15_f64),
    ];
    let mut values: Vec<Value> = strings.iter().map(|s| v(*s)).collect();
    values.extend(numbers);
    values.extend([
        none(),
        Value::UNDEFINED,
        v(true),
        v(vec![1, 2]),
        j(serde_json::json!({"k": f64::NAN})),
        Value::from_bytes(vec![0xff, 0x00]),
    ]);
    let templates = [
        "{{ x|sha256 }}",
        "{{ x|e164 }}",
        "{{ x|e164(a) }}",
        "{{ a|e164(x) }}",
        "{{ x|iso8601 }}",
        "{{ x|iso8601(millis=true) }}",
        "{{ 0|iso8601(x) }}",
        "{{ x|strftime('%c %s %.3f %:z') }}",
        "{{ 0|strftime(x) }}",
        "{{ x|json }}",
    ];
    for x in &values {
        for a in ["49", "1", "39"] {
            let ctx = Value::from_iter([("x", x.clone()), ("a", Value::from(a))]);
            for tmpl in templates {
                let _ = render(tmpl, ctx.clone());
            }
        }
    }
    for s in strings {
        let _ = sha256_hex_normalised(s);
        let _ = normalise_e164(s, None);
        let _ = normalise_e164(s, Some(s));
        let _ = normalise_e164(s, Some("39"));
        let _ = parse_timestamp(s);
    }
    for f in [f64::NAN, f64::MAX, -1e15, 1e15, -0.0, 0.999_999_9] {
        let _ = timestamp_from_unix_seconds(f);
    }
}
