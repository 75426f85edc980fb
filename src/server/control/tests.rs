use axum::http::HeaderMap;

use super::events::hook_id;
use super::mask::{masked_query, masked_userinfo};

use super::*;

#[test]
fn redirect_uri_follows_public_url_else_listen_address() {
    let at = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        redirect_uri(at("127.0.0.1:8787"), None).unwrap(),
        "http://localhost:8787/oauth/callback"
    );
    assert_eq!(
        redirect_uri(at("0.0.0.0:9000"), None).unwrap(),
        "http://localhost:9000/oauth/callback"
    );
    assert_eq!(
        redirect_uri(at("10.1.2.3:9000"), None).unwrap(),
        "http://10.1.2.3:9000/oauth/callback"
    );
    assert_eq!(
        redirect_uri(at("10.1.2.3:9000"), Some("https://p.example.com/base/")).unwrap(),
        "https://p.example.com/base/oauth/callback"
    );
    for bad in [
        "p.example.com",
        "ftp://p.example.com",
        "https://p.example.com/?a=b",
        "https://u:p@p.example.com",
        "https://p.example.com/#x",
    ] {
        assert!(redirect_uri(at("127.0.0.1:1"), Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn pages_escape_markup_and_quotes() {
    assert_eq!(
        html_escape(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

#[test]
fn credential_query_parameters_are_masked() {
    assert_eq!(
        masked_query("https://h.example/x?a=1&code=abc%2B&KEY=k#frag").as_deref(),
        Some("https://h.example/x?a=1&code=‹secret›&KEY=‹secret›#frag")
    );
    assert_eq!(masked_query("https://h.example/x?a=1&key=‹env:K›"), None);
    assert_eq!(masked_query("https://h.example/x"), None);
}

#[test]
fn hook_ids_prefer_headers_then_hash_type_and_body() {
    let mut h = HeaderMap::new();
    let hashed = hook_id(&h, "form.sent", b"{}").unwrap();
    assert!(
        hashed.starts_with("sha256:") && hashed.len() == 7 + 64,
        "{hashed}"
    );
    assert_ne!(hashed, hook_id(&h, "form.other", b"{}").unwrap());
    assert_eq!(hashed, hook_id(&h, "form.sent", b"{}").unwrap());
    h.insert("x-request-id", "req-1".parse().unwrap());
    assert_eq!(hook_id(&h, "form.sent", b"{}").unwrap(), "req-1");
    h.insert("idempotency-key", "key-1".parse().unwrap());
    assert_eq!(hook_id(&h, "form.sent", b"{}").unwrap(), "key-1");
    h.insert("idempotency-key", "".parse().unwrap());
    assert!(hook_id(&h, "form.sent", b"{}").is_err());
}

#[test]
fn a_password_in_a_urls_userinfo_is_masked_and_a_placeholder_kept() {
    assert_eq!(
        masked_userinfo("http://user:SECRETPW@host:1/a?b=c").as_deref(),
        Some("http://user:‹secret›@host:1/a?b=c")
    );
    assert_eq!(masked_userinfo("http://user:‹env:PW›@host/"), None);
    assert_eq!(masked_userinfo("http://user@host/"), None);
    assert_eq!(masked_userinfo("http://host/a:b@c"), None);
}
