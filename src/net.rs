//! The one place an HTTP client is built, and the HTTP vocabulary the
//! targets, OAuth and the retry policy share ([`parse_retry_after`],
//! [`RetryDelay`]): a leaf, so none of them depends on another for it.
//!
//! pushwerk's TLS is rustls with the `ring` crypto provider and the
//! platform's certificate verifier (`rustls-platform-verifier`: the system's
//! roots, hostname and expiry checked). reqwest is built with
//! `rustls-no-provider`, which drops its default provider (aws-lc-rs, whose
//! C build was the largest single item of a clean build, see
//! BENCHMARKS.md) — but then reqwest *panics* when a client is built before
//! a provider has been installed process-wide. [`http_client`] installs
//! ring once and hands out the builder, so every client (the daemon's, the
//! CLI's, tests', examples', benches') goes through it. A test
//! (`net::tests::no_client_is_built_elsewhere`) fails when a client is
//! built around it.

use std::sync::Once;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Installs the `ring` crypto provider as rustls's process default, once.
///
/// Exists because reqwest (built with `rustls-no-provider`) takes the
/// process default and panics without one. Idempotent and cheap after the
/// first call; [`http_client`] calls it, so callers rarely need to.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An Err means another provider was installed first (by a program
        // embedding this library); that one is used, which is its choice.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A `reqwest::ClientBuilder` with the crypto provider installed: the only
/// way pushwerk builds an HTTP client, so that building one cannot panic.
///
/// TLS verification is on, against the platform's roots; callers add their
/// own settings (timeouts, redirect policy, user agent) before `build()`.
pub fn http_client() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A URL as logs, the delivery log and command output show it: without
/// its query and fragment (they may carry templated values or keys) and
/// without userinfo (a `user:password@` written into a push's URL).
pub fn url_for_display(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
        None => url.to_owned(),
    }
}

/// When to try again: shared by the targets (which classify an answer) and
/// the retry policy (which turns it into a time), so it lives in this leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryDelay {
    /// The target said when (`Retry-After`, or a documented wait), already capped.
    After(#[serde(with = "humantime_serde_compat")] Duration),
    /// The target did not say: exponential backoff with jitter.
    Backoff,
}

mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// `Retry-After` in seconds or as an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    // Bounded here already, whatever the caller's own cap: no number from
    // outside reaches an `Instant` addition unclamped.
    const MAX: Duration = Duration::from_secs(24 * 3600);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is still "a long time", not "no
        // advice" (which would retry at once and hammer a busy server).
        return Some(
            value
                .parse::<u64>()
                .map_or(MAX, Duration::from_secs)
                .min(MAX),
        );
    }
    if value.len() > 64 {
        return None;
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO).min(MAX))
}

#[cfg(test)]
mod display_tests {
    use super::url_for_display;

    #[test]
    fn display_drops_query_fragment_and_userinfo() {
        assert_eq!(
            url_for_display("https://user:pw@host:8443/a/b?key=x#f"),
            "https://host:8443/a/b"
        );
        assert_eq!(url_for_display("https://host/a@b"), "https://host/a@b");
        assert_eq!(url_for_display("https://h?x=@y"), "https://h");
        assert_eq!(url_for_display("not a url"), "not a url");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// A TLS server on loopback presenting `fixtures/tls/localhost.pem`
    /// (signed by the test CA `fixtures/tls/ca.pem`) that answers one
    /// HTTP/1.1 request per connection with `200 hello`. Returns its port.
    fn tls_server() -> u16 {
        install_crypto_provider();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("localhost.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("localhost.key")).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    );
                    let _ = tls.flush();
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        port
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn builds_a_client_without_panicking() {
        http_client().build().expect("client builds");
        // Twice: the second install is a no-op, not an error.
        http_client().build().expect("client builds again");
    }

    #[test]
    fn a_certificate_from_an_unknown_issuer_is_refused() {
        let port = tls_server();
        let client = http_client().build().unwrap();
        let err = runtime()
            .block_on(client.get(format!("https://localhost:{port}/")).send())
            .expect_err("a certificate no platform root vouches for must be refused");
        let chain = std::iter::successors(
            Some(&err as &dyn std::error::Error),
            |e: &&dyn std::error::Error| e.source(),
        )
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
        assert!(
            chain.to_lowercase().contains("certificate"),
            "not a certificate error: {chain}"
        );
    }

    #[test]
    fn a_certificate_from_a_trusted_issuer_completes_the_handshake() {
        let port = tls_server();
        let ca = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem"))
            .unwrap();
        let client = http_client()
            .tls_certs_merge([reqwest::Certificate::from_pem(&ca).unwrap()])
            .build()
            .unwrap();
        let body = runtime().block_on(async {
            let r = client
                .get(format!("https://localhost:{port}/"))
                .send()
                .await
                .expect("TLS handshake with a trusted certificate");
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        });
        assert_eq!(body, "hello");
    }

    #[test]
    fn the_hostname_is_verified() {
        // The certificate names localhost and 127.0.0.1, not 127.0.0.2.
        let port = tls_server();
        let ca = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem"))
            .unwrap();
        let client = http_client()
            .tls_certs_merge([reqwest::Certificate::from_pem(&ca).unwrap()])
            .resolve("wrong.example", ([127, 0, 0, 1], port).into())
            .build()
            .unwrap();
        let err = runtime()
            .block_on(client.get(format!("https://wrong.example:{port}/")).send())
            .expect_err("a certificate for another name must be refused");
        let chain = std::iter::successors(
            Some(&err as &dyn std::error::Error),
            |e: &&dyn std::error::Error| e.source(),
        )
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
        assert!(
            chain.to_lowercase().contains("certificate"),
            "not a certificate error: {chain}"
        );
    }

    /// Every HTTP client must come from [`http_client`]: one built with
    /// `reqwest::Client::new()` / `::builder()` panics at run time (no
    /// crypto provider). This catches one that a merge brings in.
    #[test]
    fn no_client_is_built_elsewhere() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Split so that this file does not match itself.
        let forbidden = [
            concat!("reqwest::Client", "::new("),
            concat!("reqwest::Client", "::builder("),
            concat!("reqwest::Client", "::default("),
            concat!("reqwest", "::get("),
            concat!("ClientBuilder", "::new("),
            concat!(" Client", "::new()"),
            concat!(" Client", "::builder()"),
            concat!("(Client", "::new()"),
        ];
        let mut found = Vec::new();
        let mut stack: Vec<_> = ["src", "tests", "examples", "benches"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if !path.ends_with("node_modules") {
                        stack.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs")
                    && path != root.join("src/net.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        if forbidden.iter().any(|f| line.contains(f)) {
                            found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "build HTTP clients with pushwerk::net::http_client() (reqwest panics \
             without a crypto provider):\n{}",
            found.join("\n")
        );
    }
}
