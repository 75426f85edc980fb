//! Dispatchers: one file per target, each a pure `prepare` that turns a
//! rendered push into the exact request to send. Dry-run prints what
//! `prepare` returns; the daemon sends it. Nothing here does I/O.

pub mod bing_ads;
pub mod graph_mail;
pub mod http;
pub mod outcome;
pub mod smtp;

pub use outcome::{ItemError, Outcome, Response, RetryDelay};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::config::{BingAdsTarget, GraphMailTarget, HttpTarget, SmtpTarget, SmtpTls};

/// Base URLs of the Microsoft services: configuration, so that tests,
/// sandboxes and sovereign clouds can point elsewhere. A target's own
/// `base_url` wins over these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Microsoft Graph (`PUSHWERK_GRAPH_URL`).
    pub graph: String,
    /// Microsoft Advertising Campaign Management (`PUSHWERK_BING_ADS_URL`).
    pub bing_ads: String,
}

impl Default for Endpoints {
    /// The public production services.
    fn default() -> Self {
        Endpoints {
            graph: "https://graph.microsoft.com".to_owned(),
            bing_ads: "https://campaign.api.bingads.microsoft.com".to_owned(),
        }
    }
}

impl Endpoints {
    /// The defaults, overridden by `PUSHWERK_GRAPH_URL` / `PUSHWERK_BING_ADS_URL`.
    pub fn from_env(lookup: &crate::config::secret::EnvLookup) -> Endpoints {
        let d = Endpoints::default();
        Endpoints {
            graph: lookup("PUSHWERK_GRAPH_URL").unwrap_or(d.graph),
            bing_ads: lookup("PUSHWERK_BING_ADS_URL").unwrap_or(d.bing_ads),
        }
    }
}

/// A push's target with every template rendered.
#[derive(Debug, Clone)]
pub enum RenderedTarget {
    /// Rendered HTTP target.
    Http(HttpTarget),
    /// Rendered Graph mail.
    GraphMail(GraphMailTarget),
    /// Rendered Bing Ads conversion.
    BingAds(BingAdsTarget),
    /// Rendered SMTP mail.
    Smtp(SmtpTarget),
}

/// Everything `prepare` needs: the rendered target, the access tokens (or
/// their placeholders in a dry-run) and the delivery's identity.
#[derive(Debug, Clone)]
pub struct RenderedPush {
    /// The push's name.
    pub push: String,
    /// The rendered target.
    pub target: RenderedTarget,
    /// Access token (or placeholder) per account the push uses.
    pub tokens: BTreeMap<String, String>,
    /// Render time (mail `Date`).
    pub now: DateTime<Utc>,
    /// Stable per push and event: the same on every retry.
    pub idempotency_key: String,
}

impl RenderedPush {
    fn token(&self, account: &str) -> Result<&str, PrepareError> {
        self.tokens
            .get(account)
            .map(String::as_str)
            .ok_or_else(|| PrepareError::MissingToken(account.to_owned()))
    }
}

/// An HTTP request, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method, upper case.
    pub method: String,
    /// Full URL including the query.
    pub url: String,
    /// Headers in sending order.
    pub headers: Vec<(String, String)>,
    /// Body bytes (empty for none).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// The value of header `name` in `headers` (case-insensitive).
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// How an SMTP client logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpLogin {
    /// `AUTH PLAIN`/`LOGIN` with a password (or its placeholder).
    Password {
        /// Login name.
        username: String,
        /// The password.
        password: String,
    },
    /// `AUTH XOAUTH2` with an access token (or its placeholder).
    Xoauth2 {
        /// Login name (the mailbox).
        username: String,
        /// The account whose token is used.
        account: String,
        /// The access token.
        token: String,
    },
}

/// A mail ready for an SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpMail {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Connection security.
    pub tls: SmtpTls,
    /// Login, if any.
    pub login: Option<SmtpLogin>,
    /// `MAIL FROM` address.
    pub envelope_from: String,
    /// `RCPT TO` addresses (to, cc and bcc).
    pub envelope_to: Vec<String>,
    /// The RFC 5322 message as sent after `DATA`.
    pub message: Vec<u8>,
}

/// What a dispatcher produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// An HTTP request (http, graph_mail, bing_ads).
    Http(HttpRequest),
    /// An SMTP mail.
    Smtp(SmtpMail),
}

/// Why a rendered push cannot become a request. Messages never contain a
/// token or secret: only field names and the rendered non-secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// A rendered field has an unusable value.
    #[error("`{field}`: {reason}")]
    InvalidField {
        /// The field, e.g. `graph_mail.to[0]`.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The request is larger than the service accepts.
    #[error("request is {size} bytes, over the {limit}-byte limit of {service}")]
    TooLarge {
        /// Request size.
        size: usize,
        /// The limit.
        limit: usize,
        /// Which service sets it.
        service: &'static str,
    },
    /// No token (or placeholder) was given for an account.
    #[error("no access token for OAuth account `{0}`")]
    MissingToken(String),
}

/// Builds the request for `push`.
pub fn prepare(push: &RenderedPush, endpoints: &Endpoints) -> Result<Prepared, PrepareError> {
    match &push.target {
        RenderedTarget::Http(t) => http::prepare(t, push).map(Prepared::Http),
        RenderedTarget::GraphMail(t) => graph_mail::prepare(t, push, endpoints).map(Prepared::Http),
        RenderedTarget::BingAds(t) => bing_ads::prepare(t, push, endpoints).map(Prepared::Http),
        RenderedTarget::Smtp(t) => smtp::prepare(t, push).map(Prepared::Smtp),
    }
}

/// Rejects a header value that could split the request (CR, LF, NUL).
fn check_header(field: &str, name: &str, value: &str) -> Result<(), PrepareError> {
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !name_ok {
        return Err(PrepareError::InvalidField {
            field: field.to_owned(),
            reason: format!("`{name}` is not a valid header name"),
        });
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(PrepareError::InvalidField {
            field: field.to_owned(),
            reason: "header value contains a line break or NUL".to_owned(),
        });
    }
    Ok(())
}

/// Joins a base URL and a path without doubling or losing the slash.
fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Splits `Name <a@example.com>` into name and address; checks the address.
pub fn parse_recipient(field: &str, text: &str) -> Result<(Option<String>, String), PrepareError> {
    let text = text.trim();
    let (name, address) = match (text.rfind('<'), text.ends_with('>')) {
        (Some(open), true) => {
            let name = text[..open].trim().trim_matches('"').trim();
            let address = text[open + 1..text.len() - 1].trim();
            (
                (!name.is_empty()).then(|| name.to_owned()),
                address.to_owned(),
            )
        }
        _ => (None, text.to_owned()),
    };
    let valid = match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !address
                    .chars()
                    .any(|c| c.is_whitespace() || c == '<' || c == '>' || c.is_control())
        }
        None => false,
    };
    if !valid {
        return Err(PrepareError::InvalidField {
            field: field.to_owned(),
            reason: format!("{address:?} is not an e-mail address (expected `a@example.com` or `Name <a@example.com>`)"),
        });
    }
    Ok((name, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_with_and_without_names() {
        assert_eq!(
            parse_recipient("to", "a@b.test").unwrap(),
            (None, "a@b.test".into())
        );
        assert_eq!(
            parse_recipient("to", "\"Sales Team\" <sales@b.test>").unwrap(),
            (Some("Sales Team".into()), "sales@b.test".into())
        );
        assert!(parse_recipient("to", "no-at-sign").is_err());
        assert!(parse_recipient("to", "").is_err());
        assert!(parse_recipient("to", "a b@c.test").is_err());
    }

    #[test]
    fn header_values_cannot_split_requests() {
        assert!(check_header("h", "X-Ok", "fine").is_ok());
        assert!(check_header("h", "X-Bad", "a\r\nInjected: 1").is_err());
        assert!(check_header("h", "Bad Name", "v").is_err());
    }
}
