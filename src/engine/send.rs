//! The transports: the only place pushwerk talks to targets. An HTTP
//! request goes out with reqwest (one pooled client), an SMTP mail with
//! lettre (a transport per send: access tokens are short-lived).

use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};

use super::smtp_conn::{self, SessionError};
use crate::targets::smtp::classify_reply;
use crate::targets::{HttpRequest, Outcome, Response, RetryDelay, SmtpLogin, SmtpMail};

/// Most of a response body kept for classification and the delivery log.
const MAX_BODY: usize = 64 * 1024;

/// Sends prepared requests.
#[derive(Clone, Debug)]
pub struct Sender {
    http: reqwest::Client,
    timeout: Duration,
}

/// The result of sending: an answer to classify, or an outcome already
/// known (the connection failed, an SMTP server replied).
#[derive(Debug)]
pub enum Sent {
    /// An HTTP answer, to be classified by its target.
    Http(Response),
    /// The outcome is known without classification.
    Known(Outcome),
}

impl Sender {
    /// A sender whose requests give up after `timeout` (unless a target sets its own).
    pub fn new(timeout: Duration) -> Sender {
        let http = crate::net::http_client()
            .user_agent(concat!("pushwerk/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(32)
            // A redirect would carry headers (developer tokens, API keys,
            // signatures) and the body to another host: a 3xx is an answer.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds");
        Sender { http, timeout }
    }

    /// Sends an HTTP request; a transport error is a retry.
    pub async fn send_http(&self, request: &HttpRequest, timeout: Option<Duration>) -> Sent {
        let method = match reqwest::Method::from_bytes(request.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                return Sent::Known(Outcome::Failed {
                    status: None,
                    code: None,
                    message: format!("invalid method {}", request.method),
                    items: Vec::new(),
                    reference: None,
                })
            }
        };
        let mut builder = self
            .http
            .request(method, &request.url)
            .timeout(timeout.unwrap_or(self.timeout));
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body.clone());
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return Sent::Known(transport_retry(&e)),
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let mut response = response;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if room == 0 {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Sent::Known(transport_retry(&e)),
            }
        }
        Sent::Http(Response {
            status,
            headers,
            body,
        })
    }

    /// Sends a mail; the server's reply decides the outcome.
    pub async fn send_smtp(&self, mail: &SmtpMail, timeout: Option<Duration>) -> Outcome {
        let timeout = timeout.unwrap_or(self.timeout);
        let xoauth2 = matches!(mail.login, Some(SmtpLogin::Xoauth2 { .. }));
        let login = match &mail.login {
            None => None,
            Some(SmtpLogin::Password { username, password }) => Some(smtp_conn::Login {
                credentials: Credentials::new(username.clone(), password.clone()),
                mechanisms: &[Mechanism::Plain, Mechanism::Login],
            }),
            Some(SmtpLogin::Xoauth2 {
                username, token, ..
            }) => Some(smtp_conn::Login {
                credentials: Credentials::new(username.clone(), token.clone()),
                mechanisms: &[Mechanism::Xoauth2],
            }),
        };
        let envelope = match lettre::address::Envelope::new(
            mail.envelope_from.parse().ok(),
            mail.envelope_to
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
        ) {
            Ok(e) => e,
            Err(e) => return failed(format!("envelope: {e}")),
        };
        let sent = smtp_conn::send_bounded(
            &mail.host,
            mail.port,
            mail.tls,
            login,
            &envelope,
            &mail.message,
            timeout,
        )
        .await;
        let e = match sent {
            Ok(response) => {
                let code: u16 = response.code().to_string().parse().unwrap_or(250);
                return classify_reply(
                    code,
                    &masked_reply(&response.message().collect::<Vec<_>>().join(" "), mail),
                    xoauth2,
                );
            }
            // A server that floods the connection is broken, not busy.
            Err(e @ SessionError::TooLarge { .. }) => {
                return failed(format!("SMTP server {}:{}: {e}", mail.host, mail.port));
            }
            Err(e @ (SessionError::Deadline(_) | SessionError::Connect(_))) => {
                return Outcome::Retry {
                    delay: RetryDelay::Backoff,
                    status: None,
                    reason: format!(
                        "SMTP connection to {}:{}: {}",
                        mail.host,
                        mail.port,
                        why(&e, &smtp_secrets(mail))
                    ),
                    reference: None,
                };
            }
            Err(SessionError::Smtp(e)) => e,
        };
        match e.status() {
            Some(code) => {
                let code: u16 = code.to_string().parse().unwrap_or(554);
                classify_reply(code, &masked_reply(&e.to_string(), mail), xoauth2)
            }
            None => Outcome::Retry {
                delay: RetryDelay::Backoff,
                status: None,
                reason: format!(
                    "SMTP connection to {}:{}: {}",
                    mail.host,
                    mail.port,
                    why(&e, &smtp_secrets(mail))
                ),
                reference: None,
            },
        }
    }
}

/// A server's reply without the login's secret: a server that echoes the
/// `AUTH` line (535 "rejected <argument>") put the password or token, as
/// sent (base64) or decoded, into the log and the delivery log.
fn masked_reply(text: &str, mail: &SmtpMail) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (secret, sent) = match &mail.login {
        None => return text.to_owned(),
        Some(SmtpLogin::Password { username, password }) => (
            password,
            // AUTH PLAIN's argument; AUTH LOGIN sends the password alone.
            vec![b64(&format!("\0{username}\0{password}")), b64(password)],
        ),
        Some(SmtpLogin::Xoauth2 {
            username, token, ..
        }) => (
            token,
            vec![
                b64(&format!("user={username}\x01auth=Bearer {token}\x01\x01")),
                b64(token),
            ],
        ),
    };
    if secret.chars().count() < 4 {
        return text.to_owned();
    }
    let mut text = text.to_owned();
    for form in sent.iter().chain(std::iter::once(secret)) {
        if text.contains(form.as_str()) {
            text = text.replace(form.as_str(), "‹secret›");
        }
    }
    text
}

/// What an SMTP error must not echo: the login's password or token.
fn smtp_secrets(mail: &SmtpMail) -> Vec<String> {
    match &mail.login {
        Some(SmtpLogin::Password { password, .. }) => vec![password.clone()],
        Some(SmtpLogin::Xoauth2 { token, .. }) => vec![token.clone()],
        None => Vec::new(),
    }
}

fn failed(message: String) -> Outcome {
    Outcome::Failed {
        status: None,
        code: None,
        message,
        items: Vec::new(),
        reference: None,
    }
}

fn transport_retry(e: &reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    // Without the URL: its query, userinfo or path could carry a templated
    // secret.
    let secrets: Vec<String> = e.url().map(url_secrets).unwrap_or_default();
    Outcome::Retry {
        delay: RetryDelay::Backoff,
        status: None,
        reason: format!("{kind}: {}", why(e, &secrets)),
        reference: None,
    }
}

/// The parts of a URL that must not be echoed: the whole URL, its query,
/// its userinfo and its path (a webhook key).
fn url_secrets(url: &url::Url) -> Vec<String> {
    let mut parts = vec![url.as_str().to_owned()];
    if let Some(q) = url.query() {
        parts.push(q.to_owned());
        // Each value too, raw and decoded, where a lower layer could repeat
        // it; very short ones would mask ordinary words.
        for pair in q.split('&') {
            let raw = pair.split_once('=').map_or(pair, |(_, v)| v);
            parts.push(raw.to_owned());
        }
        parts.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
        parts.retain(|p| p.len() >= 4);
    }
    if !url.username().is_empty() {
        parts.push(url.username().to_owned());
    }
    if let Some(p) = url.password() {
        parts.push(p.to_owned());
    }
    if url.path().len() > 1 {
        parts.push(url.path().to_owned());
    }
    parts
}

/// Longest cause text kept: a peer's error message is outside input.
const MAX_CAUSE: usize = 500;

/// Why a transport failed, in words: the plain cause first (`connection
/// refused`, `timed out`, `DNS lookup failed`, `TLS error`), then the
/// error's source chain (reqwest → hyper → the I/O error) with each of
/// `secrets` masked and repeats dropped.
pub fn why(e: &(dyn std::error::Error + 'static), secrets: &[String]) -> String {
    let mut chain: Vec<String> = Vec::new();
    let mut cause = None;
    let mut level: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut depth = 0;
    while let Some(err) = level {
        depth += 1;
        if depth > 16 {
            break;
        }
        if cause.is_none() {
            cause = plain_cause(err);
        }
        let mut text = err.to_string();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            text = text.replace(secret.as_str(), "<url>");
        }
        let text = text
            .replace(" for url (<url>)", "")
            .replace(" (<url>)", "")
            .trim()
            .to_owned();
        let repeat = chain.last().is_some_and(|last| last.contains(&text));
        if !text.is_empty() && !repeat {
            chain.push(text);
        }
        level = err.source();
    }
    let mut out = match cause {
        Some(c) => format!("{c} ({})", chain.join(": ")),
        None => chain.join(": "),
    };
    if out.len() > MAX_CAUSE {
        let mut cut = MAX_CAUSE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// A plain name for a well-known cause at one level of an error chain.
fn plain_cause(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use std::io::ErrorKind;
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        let known = match io.kind() {
            ErrorKind::ConnectionRefused => Some("connection refused"),
            ErrorKind::ConnectionReset => Some("connection reset"),
            ErrorKind::ConnectionAborted => Some("connection aborted"),
            ErrorKind::TimedOut => Some("timed out"),
            ErrorKind::UnexpectedEof => Some("connection closed by the peer"),
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Some("host unreachable"),
            ErrorKind::AddrNotAvailable => Some("address not available"),
            _ => None,
        };
        if known.is_some() {
            return known;
        }
    }
    let text = err.to_string().to_ascii_lowercase();
    if text.contains("timed out") || text.contains("timeout") {
        Some("timed out")
    } else if text.starts_with("dns error") || text.contains("failed to lookup address") {
        Some("DNS lookup failed")
    } else if ["certificate", "tls", "handshake", "corrupt message"]
        .iter()
        .any(|w| text.contains(w))
    {
        Some("TLS error")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error, String);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error sending request for url ({})", self.1)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_cause_is_named_and_url_secrets_are_masked() {
        let url = url::Url::parse("http://bot:pw-123@127.0.0.1:9/hook/k-456?token=t-789").unwrap();
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by t-789");
        let text = why(&Outer(io, url.to_string()), &url_secrets(&url));
        assert!(text.starts_with("connection refused ("), "{text}");
        assert!(text.contains("error sending request"), "{text}");
        for secret in ["pw-123", "k-456", "t-789", "bot"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let long = std::io::Error::other("x".repeat(5000));
        assert!(why(&long, &[]).chars().count() <= MAX_CAUSE + 1);
    }
}
