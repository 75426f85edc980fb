//! Binding a browser sign-in to the browser that started it (RFC 6749
//! §10.12, RFC 9700 §4.7): the `state` alone proves only that *some*
//! browser holds the sign-in's URL, so whoever held a valid callback URL
//! could complete it, and an attacker could have an admin's browser finish
//! a sign-in with the attacker's own account (login CSRF / account
//! injection: the daemon would then send mail as the attacker's mailbox).
//!
//! A sign-in therefore has a single-use *begin link* on the callback's
//! origin (`…/oauth/begin?id=…`); opening it shows a "Continue" button
//! and binds nothing (link previewers fetch links). The first browser that
//! continues (the button's `POST`) gets a random value in a cookie ([`set_cookie`]: HttpOnly, SameSite=Lax since
//! the provider's redirect is a cross-site top-level GET, Path limited to
//! the callback, `Secure` over https, Max-Age of the sign-in's lifetime),
//! and the daemon keeps only its SHA-256; a copy for the begin link's
//! path ([`set_begin_cookie`]) lets that browser come back to the begin
//! page (back button, reload) and continue again, where any other browser
//! is refused. The callback is honoured only
//! when that cookie comes back ([`matches`]); the cookies are then cleared
//! ([`clear_cookie`], [`clear_begin_cookie`]). The begin link is on the callback's origin, not on
//! the one the console happens to be reached at (`127.0.0.1` versus
//! `localhost`), so that the cookie is sent back with the callback.

use axum::http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix of a sign-in's cookie; the rest of the name is derived from
/// its `state`, so that two sign-ins in one browser do not overwrite each
/// other's cookie.
pub const COOKIE_PREFIX: &str = "pushwerk_signin_";

/// `n` random bytes as hex (a begin link's id, a binding value).
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `value` (what the daemon keeps of a link id or binding).
pub fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// Whether two digests are equal, compared in constant time.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The cookie name of the sign-in with `state`.
pub fn cookie_name(state: &str) -> String {
    let d = digest(state);
    let id: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{COOKIE_PREFIX}{id}")
}

/// The path part of the redirect URI (`/oauth/callback`, or
/// `/base/oauth/callback` behind a proxy with `--public-url …/base`): the
/// cookie's `Path`, so that it goes to the callback and nowhere else.
fn callback_path(redirect_uri: &str) -> String {
    url::Url::parse(redirect_uri)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/oauth/callback".to_owned())
}

/// The path of the begin link beside the callback (`/oauth/begin`): a
/// second cookie of the same name and value goes there, so that the
/// browser that continued can come back to the begin page (the back
/// button, a second click) and continue again, where any other browser is
/// refused.
fn begin_path(redirect_uri: &str) -> String {
    let callback = callback_path(redirect_uri);
    match callback.strip_suffix("callback") {
        Some(base) => format!("{base}begin"),
        None => "/oauth/begin".to_owned(),
    }
}

/// Whether the callback is reached over https (the cookie is then `Secure`).
fn secure(redirect_uri: &str) -> bool {
    redirect_uri
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The `Set-Cookie` value that binds the sign-in with `state` to the
/// browser: `value` for `max_age` seconds, sent only to the callback.
pub fn set_cookie(state: &str, value: &str, redirect_uri: &str, max_age: u64) -> String {
    let secure = if secure(redirect_uri) { "; Secure" } else { "" };
    format!(
        "{}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(state),
        callback_path(redirect_uri)
    )
}

/// The `Set-Cookie` value that gives the same binding to the begin link's
/// path (`/oauth/begin`): the browser holding it may continue again.
pub fn set_begin_cookie(state: &str, value: &str, redirect_uri: &str, max_age: u64) -> String {
    let secure = if secure(redirect_uri) { "; Secure" } else { "" };
    format!(
        "{}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(state),
        begin_path(redirect_uri)
    )
}

/// The `Set-Cookie` value that removes the begin link's copy of the
/// sign-in's cookie once the sign-in is used.
pub fn clear_begin_cookie(state: &str, redirect_uri: &str) -> String {
    let secure = if secure(redirect_uri) { "; Secure" } else { "" };
    format!(
        "{}=; Path={}; Max-Age=0; HttpOnly; SameSite=Lax{secure}",
        cookie_name(state),
        begin_path(redirect_uri)
    )
}

/// The `Set-Cookie` value that removes the sign-in's cookie once used.
pub fn clear_cookie(state: &str, redirect_uri: &str) -> String {
    let secure = if secure(redirect_uri) { "; Secure" } else { "" };
    format!(
        "{}=; Path={}; Max-Age=0; HttpOnly; SameSite=Lax{secure}",
        cookie_name(state),
        callback_path(redirect_uri)
    )
}

/// Whether the request carries the cookie that binds the sign-in with
/// `state` to this browser (`bound`: the digest kept when its begin link
/// was opened; `None` while no browser opened it).
pub fn matches(headers: &HeaderMap, state: &str, bound: Option<&[u8; 32]>) -> bool {
    match (
        crate::server::auth::cookie(headers, &cookie_name(state)),
        bound,
    ) {
        (Some(value), Some(bound)) => same_digest(&digest(&value), bound),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_lax_http_only_path_limited_and_secure_over_https() {
        let plain = set_cookie("st", "v", "http://localhost:8787/oauth/callback", 600);
        assert_eq!(
            plain,
            format!(
                "{}=v; Path=/oauth/callback; Max-Age=600; HttpOnly; SameSite=Lax",
                cookie_name("st")
            )
        );
        let tls = set_cookie("st", "v", "https://p.example.com/base/oauth/callback", 600);
        assert!(tls.contains("; Path=/base/oauth/callback;"), "{tls}");
        assert!(tls.ends_with("; Secure"), "{tls}");
        let cleared = clear_cookie("st", "https://p.example.com/base/oauth/callback");
        assert!(
            cleared.contains("=; Path=/base/oauth/callback; Max-Age=0"),
            "{cleared}"
        );
        assert_ne!(cookie_name("a"), cookie_name("b"));
        let begin = set_begin_cookie("st", "v", "https://p.example.com/base/oauth/callback", 600);
        assert!(begin.contains("=v; Path=/base/oauth/begin;"), "{begin}");
        assert!(begin.ends_with("; Secure"), "{begin}");
        let cleared = clear_begin_cookie("st", "http://localhost:8787/oauth/callback");
        assert!(
            cleared.contains("=; Path=/oauth/begin; Max-Age=0"),
            "{cleared}"
        );
    }

    #[test]
    fn only_the_bound_value_matches() {
        let bound = digest("right");
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                "cookie",
                format!("other=1; {}={v}", cookie_name("st"))
                    .parse()
                    .unwrap(),
            );
            h
        };
        assert!(matches(&with("right"), "st", Some(&bound)));
        assert!(!matches(&with("wrong"), "st", Some(&bound)));
        assert!(!matches(&with("right"), "another-state", Some(&bound)));
        assert!(!matches(&with("right"), "st", None));
        assert!(!matches(&HeaderMap::new(), "st", Some(&bound)));
        assert!(!matches(&with(""), "st", Some(&digest(""))));
    }
}
