//! What every target's `prepare` works with and produces: the rendered push
//! (target, tokens, identity, secret mode) and the exact request, HTTP or
//! SMTP. Nothing here does I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::smtp::SmtpTls;
use super::{SecretMode, TargetSpec};

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
    pub fn from_env(lookup: &crate::secret::EnvLookup) -> Endpoints {
        let d = Endpoints::default();
        Endpoints {
            graph: lookup("PUSHWERK_GRAPH_URL").unwrap_or(d.graph),
            bing_ads: lookup("PUSHWERK_BING_ADS_URL").unwrap_or(d.bing_ads),
        }
    }
}

/// A push's target with every template rendered: the same sections as the
/// target as written, every template leaf a `String` holding its output
/// (and a `graph_mail` attachment's file read into `content_base64`).
/// Only a render makes one from a [`TargetSpec`]; `prepare` takes nothing else.
pub type RenderedTarget = TargetSpec<String>;

/// Everything `prepare` needs: the rendered target, the access tokens (or
/// their placeholders in a dry-run) and the delivery's identity.
///
/// Made by `pipeline::render` only (through [`RenderedPush::new`], the
/// crate's one way to build it), so a request is always built from what a
/// render produced.
#[derive(Debug, Clone)]
#[expect(
    clippy::manual_non_exhaustive,
    reason = "the private field also keeps the crate's own modules from building one by hand, which #[non_exhaustive] does not"
)]
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
    /// Whether tokens and `${…}` secrets are placeholders or real values.
    pub secrets: SecretMode,
    /// Keeps the struct from being built outside [`RenderedPush::new`].
    _rendered: (),
}

impl RenderedPush {
    /// A rendered push: for `pipeline::render` (and the targets' unit tests).
    pub(crate) fn new(
        push: String,
        target: RenderedTarget,
        tokens: BTreeMap<String, String>,
        now: DateTime<Utc>,
        idempotency_key: String,
        secrets: SecretMode,
    ) -> RenderedPush {
        RenderedPush {
            push,
            target,
            tokens,
            now,
            idempotency_key,
            secrets,
            _rendered: (),
        }
    }

    pub(crate) fn token(&self, account: &str) -> Result<&str, PrepareError> {
        self.tokens.get(account).map(String::as_str).ok_or_else(|| {
            MissingToken {
                account: account.to_owned(),
            }
            .into()
        })
    }
}

/// No access token (nor a placeholder) at hand for an account a push uses.
///
/// One definition for the two places that can find a token missing:
/// rendering a push for sending, and preparing its request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no access token for OAuth account `{account}`")]
pub struct MissingToken {
    /// The account's name (never a token).
    pub account: String,
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

/// What a target's `prepare` produced.
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
    #[error(transparent)]
    MissingToken(#[from] MissingToken),
    /// A target's `prepare` (or a library it calls) panicked on this push's values:
    /// reported as a failed delivery instead of taking the worker down.
    #[error("cannot build the request from these values (internal error in the {0} dispatcher)")]
    Internal(&'static str),
}
