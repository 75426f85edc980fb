//! Talking to a token endpoint (RFC 6749): the refresh-token grant and the
//! authorization-code grant, and what each answer means. Microsoft's shapes:
//! `../shared/reference/microsoft-apis.md` §1.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::record::TokenError;

/// A successful token response.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: String,
    /// Its lifetime in seconds (a number, or a numeric string as some
    /// servers send), clamped to `0..=`[`MAX_LIFETIME_SECS`].
    #[serde(default, deserialize_with = "lifetime_secs")]
    pub expires_in: Option<u64>,
    /// Microsoft's extended lifetime; read (and clamped) only so that an odd
    /// value cannot make a good response unreadable. Not used.
    #[serde(default, deserialize_with = "lifetime_secs")]
    pub ext_expires_in: Option<u64>,
    /// A new refresh token (Microsoft rotates it on every use); absent means keep the old one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Granted scopes (space-separated).
    #[serde(default)]
    pub scope: Option<String>,
    /// Always `Bearer` at Microsoft.
    #[serde(default)]
    pub token_type: Option<String>,
}

impl TokenResponse {
    /// Why the response cannot be used, if it cannot: an empty access
    /// token, or a token (access or refresh) with a control character or
    /// space, which would break or split the `Authorization: Bearer …`
    /// header, an SMTP `AUTH` line or a stored record. Never names the token.
    pub fn problem(&self) -> Option<&'static str> {
        let bad = |t: &str| t.chars().any(|c| c.is_control() || c.is_whitespace());
        if self.access_token.trim().is_empty() {
            Some("an empty access_token")
        } else if bad(&self.access_token) {
            Some("an access_token containing a space or control character (CR, LF, …)")
        } else if self.refresh_token.as_deref().is_some_and(bad) {
            Some("a refresh_token containing a space or control character (CR, LF, …)")
        } else {
            None
        }
    }
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish()
    }
}

/// The longest access-token lifetime believed (one year: LinkedIn's 60-day
/// tokens are the longest seen). A longer `expires_in` is clamped to it, so
/// no number from outside can overflow a date or wrap around.
pub const MAX_LIFETIME_SECS: u64 = 366 * 24 * 3600;

/// Most bytes of a token-endpoint answer that are read (a token response is
/// a few KiB; Microsoft's are under 8). More is refused without reading it.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A lifetime in seconds from outside: a JSON number (integer or not,
/// negative or huge) or a numeric string, clamped to `0..=MAX_LIFETIME_SECS`.
/// `null` is "not given".
pub fn lifetime_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lifetime {
        Number(serde_json::Number),
        Text(String),
    }
    let clamp = |f: f64| -> u64 {
        if f.is_nan() || f <= 0.0 {
            0
        } else if f >= MAX_LIFETIME_SECS as f64 {
            MAX_LIFETIME_SECS
        } else {
            f as u64
        }
    };
    let from_number = |n: &serde_json::Number| match (n.as_u64(), n.as_i64(), n.as_f64()) {
        (Some(u), _, _) => u.min(MAX_LIFETIME_SECS),
        (None, Some(_), _) => 0,
        (None, None, Some(f)) => clamp(f),
        (None, None, None) => MAX_LIFETIME_SECS,
    };
    match Option::<Lifetime>::deserialize(d)? {
        None => Ok(None),
        Some(Lifetime::Number(n)) => Ok(Some(from_number(&n))),
        Some(Lifetime::Text(t)) => {
            let t = t.trim();
            if t.len() > 40 {
                return Err(serde::de::Error::custom(
                    "a lifetime is not a number of seconds",
                ));
            }
            match t.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Some(clamp(f))),
                _ => Err(serde::de::Error::custom(
                    "a lifetime is not a number of seconds",
                )),
            }
        }
    }
}

/// The expiry of a token that lives `secs` seconds from `now`, clamped to
/// [`MAX_LIFETIME_SECS`]: never overflows, never lies in the past.
pub fn expiry_after(now: DateTime<Utc>, secs: u64) -> DateTime<Utc> {
    let secs = secs.min(MAX_LIFETIME_SECS) as i64;
    now.checked_add_signed(chrono::Duration::seconds(secs))
        .unwrap_or(now)
}

/// Why a token request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFailure {
    /// The grant or client was refused: a person must act (log in again,
    /// fix the secret). Retrying cannot help.
    Rejected(TokenError),
    /// The endpoint is unavailable for now (timeout, 5xx, 429,
    /// `temporarily_unavailable`): retry later, at `retry_after` if given.
    Transient {
        /// What happened.
        error: TokenError,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
}

impl TokenFailure {
    /// The failure with every secret value of `form` (all but the public
    /// fields: `grant_type`, `client_id`, `scope`, `redirect_uri`), as sent
    /// or form-encoded, replaced by `‹name›` in its code and description.
    pub fn masked(mut self, form: &BTreeMap<String, String>) -> TokenFailure {
        const PUBLIC: [&str; 4] = ["grant_type", "client_id", "scope", "redirect_uri"];
        let error = match &mut self {
            TokenFailure::Rejected(e) => e,
            TokenFailure::Transient { error, .. } => error,
        };
        for (name, value) in form {
            // Very short values would mask ordinary words; no secret is that short.
            if PUBLIC.contains(&name.as_str()) || value.chars().count() < 6 {
                continue;
            }
            let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
            let placeholder = format!("‹{name}›");
            for text in [&mut error.code, &mut error.description] {
                for form_of_value in [value.as_str(), encoded.as_str()] {
                    if text.contains(form_of_value) {
                        *text = text.replace(form_of_value, &placeholder);
                    }
                }
            }
        }
        self
    }

    /// The error, either way.
    pub fn error(&self) -> &TokenError {
        match self {
            TokenFailure::Rejected(e) => e,
            TokenFailure::Transient { error, .. } => error,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
    /// Any JSON values: a code that is no `u32` is ignored, not a reason
    /// to misread the whole error.
    #[serde(default)]
    error_codes: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    suberror: Option<String>,
}

/// The first line of a Microsoft error description, without the `AADSTSnnnn:`
/// prefix and the trace lines, at most 300 characters.
fn first_line(description: &str) -> String {
    let line = description.lines().next().unwrap_or_default().trim();
    let line = match line.strip_prefix("AADSTS") {
        Some(rest) => rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start_matches(':')
            .trim(),
        None => line,
    };
    line.chars().take(300).collect()
}

fn aadsts_in(description: &str) -> Option<u32> {
    let i = description.find("AADSTS")?;
    let digits: String = description[i + 6..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// `Retry-After` in seconds or as an HTTP date: shared HTTP vocabulary, kept
/// in the leaf [`crate::net`] so that targets need not depend on `oauth`.
pub use crate::net::parse_retry_after;

/// Classifies a token-endpoint answer that was not a success.
pub fn classify_error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> TokenFailure {
    let now = Utc::now();
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (code, aadsts, description) = match &parsed {
        Some(b) => {
            let desc = b.error_description.as_deref().unwrap_or_default();
            let aadsts = b
                .error_codes
                .as_ref()
                .and_then(|c| c.first())
                .and_then(|v| v.as_u64())
                .and_then(|n| u32::try_from(n).ok())
                .or_else(|| aadsts_in(desc));
            let mut text = first_line(desc);
            if let Some(sub) = &b.suberror {
                text = format!("{text} (suberror {sub})");
            }
            (b.error.clone(), aadsts, text)
        }
        None => (
            format!("http {status}"),
            None,
            String::from_utf8_lossy(body)
                .chars()
                .take(120)
                .collect::<String>()
                .trim()
                .to_owned(),
        ),
    };
    let error = TokenError {
        at: now,
        code: code.clone(),
        aadsts,
        description,
    };
    let transient = status == 429
        || status >= 500
        || code == "temporarily_unavailable"
        || parsed.is_none() && status == 408;
    if transient {
        TokenFailure::Transient { error, retry_after }
    } else {
        TokenFailure::Rejected(error)
    }
}

/// A token-endpoint client.
#[derive(Clone, Debug)]
pub struct TokenClient {
    http: reqwest::Client,
}

impl TokenClient {
    /// A client whose requests give up after `timeout`. It never follows a
    /// redirect: a re-posted token request would carry the client secret
    /// and the refresh token to wherever the `Location` points.
    pub fn new(timeout: Duration) -> TokenClient {
        let http = crate::net::http_client()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pushwerk/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        TokenClient { http }
    }

    /// POSTs `form` (form-urlencoded) to `token_url` and reads the answer
    /// (at most [`MAX_RESPONSE_BYTES`] of it). A failure's text never holds
    /// a secret of the request: an endpoint (or a proxy's error page) that
    /// echoes the form would otherwise put the client secret or refresh
    /// token into the log, `oauth status` and the delivery log.
    pub async fn request(
        &self,
        token_url: &str,
        form: &BTreeMap<String, String>,
    ) -> Result<TokenResponse, TokenFailure> {
        self.request_unmasked(token_url, form)
            .await
            .map_err(|failure| failure.masked(form))
    }

    /// [`TokenClient::request`] before its failures are masked.
    async fn request_unmasked(
        &self,
        token_url: &str,
        form: &BTreeMap<String, String>,
    ) -> Result<TokenResponse, TokenFailure> {
        let failure = |code: &str, description: String| TokenError {
            at: Utc::now(),
            code: code.to_owned(),
            aadsts: None,
            description,
        };
        let transient = |code: &str, description: String| TokenFailure::Transient {
            error: failure(code, description),
            retry_after: None,
        };
        let mut response = self
            .http
            .post(token_url)
            .header("Accept", "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                // reqwest's message names the URL, never the form body.
                transient(kind, e.without_url().to_string())
            })?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            // Not followed (see `new`). A misconfigured `token_url` (http
            // for https, an old path) does not mend itself: refused.
            let target = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(redirect_target)
                .unwrap_or_else(|| "nowhere".to_owned());
            return Err(TokenFailure::Rejected(failure(
                "redirect",
                format!(
                    "the token endpoint answered {status} with a redirect to {target}; token requests never follow redirects (they would carry the client secret and refresh token there): set `token_url` to the endpoint itself"
                ),
            )));
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let too_big = || {
            format!(
                "token response over {} KiB (status {status}); not read",
                MAX_RESPONSE_BYTES / 1024
            )
        };
        let declared = response.content_length().unwrap_or(0);
        if declared > MAX_RESPONSE_BYTES as u64 {
            return Err(transient("oversized response", too_big()));
        }
        let mut body: Vec<u8> = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transient("transport", e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                // Dropping the response closes the connection: the rest is never read.
                return Err(transient("oversized response", too_big()));
            }
            body.extend_from_slice(&chunk);
        }
        if status == 200 {
            let mut response = serde_json::from_slice::<TokenResponse>(&body).map_err(|e| {
                transient(
                    "malformed response",
                    format!(
                        "token endpoint answered 200 without a token response (line {} column {})",
                        e.line(),
                        e.column()
                    ),
                )
            })?;
            if let Some(problem) = response.problem() {
                return Err(transient(
                    "malformed response",
                    format!("token endpoint answered 200 with {problem}; not taken as refreshed"),
                ));
            }
            // An empty refresh token is no new one: keep the old.
            if response.refresh_token.as_deref() == Some("") {
                response.refresh_token = None;
            }
            return Ok(response);
        }
        Err(classify_error(status, retry_after, &body))
    }
}

/// Scheme, host and port of a `Location` value, never its path or query
/// (which could carry anything).
fn redirect_target(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => "a URL without a host".to_owned(),
        },
        Err(_) => "a relative or malformed URL".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_error_bodies_are_classified_with_their_codes() {
        let body = br#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity.\r\nTrace ID: x\r\nCorrelation ID: y\r\nTimestamp: 2024-01-09 02:02:12Z","error_codes":[700082]}"#;
        match classify_error(400, None, body) {
            TokenFailure::Rejected(e) => {
                assert_eq!(e.code, "invalid_grant");
                assert_eq!(e.aadsts, Some(700082));
                assert_eq!(
                    e.description,
                    "The refresh token has expired due to inactivity."
                );
                assert_eq!(
                    e.to_string(),
                    "invalid_grant AADSTS700082: The refresh token has expired due to inactivity."
                );
            }
            other => panic!("{other:?}"),
        }
        let client = br#"{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys are expired.","error_codes":[7000222]}"#;
        assert!(
            matches!(classify_error(401, None, client), TokenFailure::Rejected(e) if e.aadsts == Some(7000222))
        );
        let busy =
            br#"{"error":"temporarily_unavailable","error_description":"AADSTS50000: busy"}"#;
        assert!(matches!(
            classify_error(503, None, busy),
            TokenFailure::Transient { .. }
        ));
        assert!(matches!(
            classify_error(429, Some(Duration::from_secs(60)), b"Too Many Requests"),
            TokenFailure::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(60)
        ));
        // A 400 with temporarily_unavailable is transient too; an unknown 4xx is not.
        assert!(matches!(
            classify_error(400, None, busy),
            TokenFailure::Transient { .. }
        ));
        assert!(matches!(
            classify_error(404, None, b"not found"),
            TokenFailure::Rejected(_)
        ));
        // An absurd error code is ignored; the error is still read.
        let odd =
            br#"{"error":"invalid_grant","error_description":"gone","error_codes":[1e300,-1]}"#;
        assert!(matches!(
            classify_error(400, None, odd),
            TokenFailure::Rejected(e) if e.code == "invalid_grant" && e.aadsts.is_none()
        ));
    }

    #[test]
    fn failures_never_echo_the_secrets_of_the_request() {
        let form: BTreeMap<String, String> = [
            ("grant_type", "refresh_token"),
            ("client_id", "the-client"),
            ("client_secret", "S3cr3t+/value"),
            ("refresh_token", "RT-canary-0001"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let body = br#"{"error":"invalid_grant RT-canary-0001","error_description":"got client_secret=S3cr3t%2B%2Fvalue and S3cr3t+/value for the-client"}"#;
        let failure = classify_error(400, None, body).masked(&form);
        let text = failure.error().to_string();
        assert!(!text.contains("S3cr3t"), "{text}");
        assert!(!text.contains("RT-canary"), "{text}");
        assert!(
            text.contains("‹client_secret›") && text.contains("‹refresh_token›"),
            "{text}"
        );
        assert!(text.contains("the-client"), "public values stay: {text}");
        assert!(text.starts_with("invalid_grant"), "{text}");
    }

    #[test]
    fn expires_in_may_be_a_numeric_string() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":"3599","refresh_token":"r"}"#)
                .unwrap();
        assert_eq!(r.expires_in, Some(3599));
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":3599}"#).unwrap();
        assert_eq!(r.expires_in, Some(3599));
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(r.expires_in, None);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        // Beyond u64: the longest wait, not none (which retried at once).
        let day = Some(Duration::from_secs(24 * 3600));
        assert_eq!(parse_retry_after("99999999999999999999999999", now), day);
        assert_eq!(parse_retry_after(&"9".repeat(100), now), day);
    }
}
