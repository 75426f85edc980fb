//! Who may use the console: whoever signs in with the admin token (see
//! `server::auth`; separate from the ingest token), with sessions held in
//! memory behind an HttpOnly, SameSite=Strict cookie, and the CSRF checks
//! every state-changing form passes (a per-session token in a hidden
//! field, plus the browser's `Origin` / `Sec-Fetch-Site`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const COOKIE: &str = "pushwerk_session";

/// How long a session lives without use.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);

/// Sessions held at most: a login beyond evicts the oldest, so that
/// repeated logins cannot grow memory.
pub const MAX_SESSIONS: usize = 256;

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two strings in constant time (as SHA-256 digests, so that
/// neither content nor length shows in the timing).
pub fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The CSRF token its forms carry.
    pub csrf: String,
    /// When it was last used.
    last_use: Instant,
    /// When it was made (the oldest is evicted first).
    created: Instant,
    /// A message for the next page (the outcome of a form).
    flash: Option<String>,
}

/// The sessions in memory (a restart signs everyone out).
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session: its id (for the cookie) and its CSRF token.
    pub fn create(&self) -> (String, String) {
        let id = random_hex(32);
        let csrf = random_hex(32);
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| now.duration_since(s.last_use) < SESSION_IDLE);
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                last_use: now,
                created: now,
                flash: None,
            },
        );
        (id, csrf)
    }

    /// The session of a request (by its cookie), touched; `None` when
    /// there is none or it expired.
    pub fn get(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = crate::server::auth::cookie(headers, COOKIE)?;
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let found = map.get_mut(&id)?;
        if now.duration_since(found.last_use) >= SESSION_IDLE {
            map.remove(&id);
            return None;
        }
        found.last_use = now;
        Some((id, found.clone()))
    }

    /// Leaves a message for the session's next page (bounded in size).
    pub fn set_flash(&self, id: &str, message: String) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get_mut(id) {
            s.flash = Some(message.chars().take(2000).collect());
        }
    }

    /// Takes the message left for this page, if any.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(id).and_then(|s| s.flash.take())
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_IDLE.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// Whether a state-changing request comes from the console's own pages,
/// as far as the browser tells: `Sec-Fetch-Site` (when sent) must be
/// `same-origin` (or `none`: typed by the user), and `Origin` (when sent)
/// must be this host — or `public`, the origin of `--public-url`: behind a
/// reverse proxy the `Host` the daemon sees is often the proxy's upstream
/// (`127.0.0.1:8787`, nginx's default), not the one the browser used. The
/// CSRF field is checked besides.
pub fn same_origin(headers: &HeaderMap, public: Option<&str>) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return Err("a form posted from another site is refused");
        }
    }
    if let Some(origin) = headers.get("origin") {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        let is_public = public.is_some_and(|p| p.eq_ignore_ascii_case(origin));
        if !is_public && (origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host)) {
            return Err("a form posted from another origin is refused");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_checks_refuse_other_sites() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:8787".parse().unwrap());
        assert!(same_origin(&h, None).is_ok());
        h.insert("origin", "http://127.0.0.1:8787".parse().unwrap());
        assert!(same_origin(&h, None).is_ok());
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(same_origin(&h, None).is_err());
        h.insert("origin", "null".parse().unwrap());
        assert!(same_origin(&h, None).is_err());
        h.remove("origin");
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(same_origin(&h, None).is_err());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(same_origin(&h, None).is_ok());
        // Behind a proxy: the browser's origin is the public URL's.
        h.remove("sec-fetch-site");
        h.insert("origin", "https://push.example.com".parse().unwrap());
        assert!(same_origin(&h, None).is_err());
        assert!(same_origin(&h, Some("https://push.example.com")).is_ok());
        assert!(same_origin(&h, Some("https://other.example.com")).is_err());
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let plain = session_cookie("abc", false);
        assert!(plain.starts_with("pushwerk_session=abc; Path=/; HttpOnly; SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(session_cookie("abc", true).ends_with("; Secure"));
        assert!(clear_cookie(true).contains("Max-Age=0"));
    }

    #[test]
    fn sessions_are_bounded_and_found_by_cookie() {
        let s = Sessions::default();
        let mut first = None;
        for _ in 0..MAX_SESSIONS + 10 {
            let (id, _) = s.create();
            first.get_or_insert(id);
        }
        assert!(s.inner.lock().unwrap().len() <= MAX_SESSIONS);
        let (id, csrf) = s.create();
        let mut h = HeaderMap::new();
        h.insert("cookie", format!("a=b; {COOKIE}={id}").parse().unwrap());
        assert_eq!(s.get(&h).unwrap().1.csrf, csrf);
        h.insert(
            "cookie",
            format!("{COOKIE}={}", first.unwrap()).parse().unwrap(),
        );
        assert!(s.get(&h).is_none(), "the oldest session was evicted");
    }
}
