//! The resolver's public data: its tunables, tokens imported from
//! elsewhere, and the status of an account as `oauth status` and the control
//! API show it. Apart from the resolver so that the types read on their own.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Tunables of the resolver.
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    /// A token valid for less than this is refreshed first (default 5 min),
    /// but at most a quarter of the token's lifetime
    /// ([`TokenRecord::margin`](crate::oauth::record::TokenRecord::margin)).
    pub skew: Duration,
    /// Refresh an account not refreshed for this long (default 24 h), so a
    /// Microsoft refresh token never reaches its 90-day inactivity expiry.
    pub keep_alive_after: Duration,
    /// First backoff step after a transient failure (default 1 s).
    pub backoff_base: Duration,
    /// Longest backoff step (default 5 min).
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured (default 10 min).
    pub retry_after_cap: Duration,
    /// Token request timeout (default 30 s).
    pub request_timeout: Duration,
    /// Warn when a client secret expires within this many days (default 30).
    pub secret_warning_days: i64,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            skew: Duration::from_secs(300),
            keep_alive_after: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            retry_after_cap: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            secret_warning_days: 30,
        }
    }
}

/// Tokens given by hand (`oauth import`): what a token endpoint returned.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedTokens {
    /// The access token (optional: with only a refresh token, the first use refreshes).
    #[serde(default, deserialize_with = "one_token_or_none")]
    pub access_token: Option<String>,
    /// The refresh token (one word: an empty or blank one is refused, so
    /// that a bad paste cannot replace a good token).
    #[serde(deserialize_with = "one_token")]
    pub refresh_token: String,
    /// Lifetime of the access token in seconds, as the token endpoint says
    /// it (clamped to `0..=`[`MAX_LIFETIME_SECS`](crate::oauth::client::MAX_LIFETIME_SECS)).
    #[serde(default, deserialize_with = "crate::oauth::client::lifetime_secs")]
    pub expires_in: Option<u64>,
    /// Or the expiry itself (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Granted scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// Ignored fields of a pasted token response.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Ignored fields of a pasted token response (read leniently, clamped).
    #[serde(default, deserialize_with = "crate::oauth::client::lifetime_secs")]
    pub ext_expires_in: Option<u64>,
    /// Ignored fields of a pasted token response.
    #[serde(default)]
    pub id_token: Option<String>,
}

/// A token from outside: one word of printable characters, never empty
/// (the value itself is never put in the error).
fn one_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let token = text.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(serde::de::Error::custom(
            "a token must be one word of printable characters, not empty",
        ));
    }
    Ok(token.to_owned())
}

/// [`one_token`] for an optional token (`null` or absent is none).
fn one_token_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Token(#[serde(deserialize_with = "one_token")] String);
    Ok(Option::<Token>::deserialize(d)?.map(|t| t.0))
}

/// Why text given to `oauth import` (or `PUT /v1/accounts/{name}/tokens`,
/// or the console's import form) is not tokens. Never quotes the text: it
/// may be a token.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Nothing but whitespace.
    #[error("nothing to import: give a token response as JSON (with `refresh_token`) or a refresh token on stdin")]
    Empty,
    /// JSON that is not a token response; only the position is kept
    /// (serde's message could quote a value).
    #[error("not a token response at line {line} column {column}: expected JSON with `refresh_token` and optionally `access_token`, `expires_in` (seconds) or `expires_at` (RFC 3339), `scope`")]
    NotATokenResponse {
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, from 1.
        column: usize,
    },
    /// More than one word and not JSON.
    #[error("expected one refresh token or a JSON token response")]
    NotOneToken,
    /// A bare token with characters a token cannot have.
    #[error("{0}")]
    BadToken(String),
}

impl ImportedTokens {
    /// Reads what `oauth import` takes: a token response as JSON, or a bare
    /// refresh token. One reading for the CLI, the control API and the
    /// console, so all three accept and refuse the same text.
    pub fn parse(text: &str) -> Result<ImportedTokens, ImportError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ImportError::Empty);
        }
        if text.starts_with('{') {
            return serde_json::from_str(text).map_err(|e| ImportError::NotATokenResponse {
                line: e.line(),
                column: e.column(),
            });
        }
        if text.split_whitespace().count() != 1 {
            return Err(ImportError::NotOneToken);
        }
        serde_json::from_value(serde_json::json!({ "refresh_token": text }))
            .map_err(|e| ImportError::BadToken(e.to_string()))
    }
}

impl std::fmt::Debug for ImportedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedTokens")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What `oauth status` shows of one account. Never a token.
#[derive(Debug, Clone, Serialize)]
pub struct AccountStatus {
    /// The account.
    pub account: String,
    /// Whether the folder defines it.
    pub configured: bool,
    /// `ok`, `needs_reauth` or `no_tokens`.
    pub state: String,
    /// Why it needs a new login.
    pub reason: Option<String>,
    /// When the access token expires.
    pub access_token_expires: Option<DateTime<Utc>>,
    /// Whether a refresh token is stored.
    pub has_refresh_token: bool,
    /// Last successful refresh.
    pub last_refresh: Option<DateTime<Utc>>,
    /// Last use by a push.
    pub last_use: Option<DateTime<Utc>>,
    /// Last token-endpoint error.
    pub last_error: Option<String>,
    /// When the client secret expires.
    pub client_secret_expires: Option<NaiveDate>,
    /// Things to act on (a secret about to expire).
    pub warnings: Vec<String>,
}
