//! Who may call what: the two bearer tokens of the daemon's API.
//!
//! - The **ingest token** (`--ingest-token`, `DATA/ingest-token`) is what
//!   event senders hold: ingest, webhooks, and the read-only views that
//!   existed before the control plane (pushes, deliveries, dead letters,
//!   replay, an event's jobs, previews).
//! - The **admin token** (`--admin-token` / `PUSHWERK_ADMIN_TOKEN`, or
//!   generated into `DATA/admin-token`, mode 0600) is the operator's: it is
//!   accepted everywhere the ingest token is, and it alone opens the account
//!   endpoints (token status, importing tokens, refreshing, starting a
//!   browser sign-in). A sender that holds the ingest token can therefore
//!   not bind its own identity to an account, nor learn about accounts.
//!
//! - The **metrics token** (`--metrics-token` / `PUSHWERK_METRICS_TOKEN`, or
//!   generated into `DATA/metrics-token`, mode 0600) is a scraper's:
//!   `/metrics` (push and account names, counts) takes it or the admin
//!   token, and nothing else does. A Prometheus job holds a token that can
//!   read figures but not send events or manage accounts. `--metrics-public`
//!   serves `/metrics` to everyone instead (a loopback listener behind a
//!   scraper-only network).
//!
//! All are compared as SHA-256 digests in constant time, so that neither
//! the content nor the length of a token shows in an answer's timing.
//! [`require_admin`] and [`require_ingest`] are the single place that
//! decides; a console session cookie is meant to be accepted by
//! [`require_admin`] too.

use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};

/// Why a generated token (admin, metrics) could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read or written.
    #[error("token file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The token file holds a token too short for an admin or metrics
    /// token (written by hand): its length, never the token.
    #[error("the token in {path} is {length} characters long: an admin or metrics token has at least {min} (e.g. `pushwerk oauth keygen`); write a longer one there, or delete the file to have one generated", min = crate::server::control::MIN_ADMIN_TOKEN)]
    Short {
        /// The file.
        path: PathBuf,
        /// The token's length in characters.
        length: usize,
    },
}

/// Who may read `/metrics`.
#[derive(Clone)]
enum MetricsAccess {
    /// Everyone (`--metrics-public`).
    Public,
    /// The admin token, or this metrics token (a digest) when there is one.
    Token(Option<[u8; 32]>),
}

/// The tokens the API accepts (kept as digests only).
#[derive(Clone)]
pub struct Auth {
    ingest: [u8; 32],
    admin: Option<[u8; 32]>,
    metrics: MetricsAccess,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("admin_token", &self.admin.is_some())
            .field(
                "metrics",
                &match self.metrics {
                    MetricsAccess::Public => "public",
                    MetricsAccess::Token(Some(_)) => "metrics or admin token",
                    MetricsAccess::Token(None) => "admin token",
                },
            )
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is
/// matched case-insensitively, RFC 7235), if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get("authorization")?.as_bytes();
    value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| value[7..].trim_ascii())
}

impl Auth {
    /// Accepts `ingest` for ingest-level endpoints and `admin` (if any) for
    /// all; `/metrics` takes the admin token only (see [`Auth::with_metrics`]).
    pub fn new(ingest: &str, admin: Option<&str>) -> Auth {
        Auth {
            ingest: digest(ingest.as_bytes()),
            admin: admin.map(|a| digest(a.as_bytes())),
            metrics: MetricsAccess::Token(None),
        }
    }

    /// Who may read `/metrics`: everyone when `public`, else the admin
    /// token and `token` (the metrics token), if given.
    pub fn with_metrics(mut self, token: Option<&str>, public: bool) -> Auth {
        self.metrics = if public {
            MetricsAccess::Public
        } else {
            MetricsAccess::Token(token.map(|t| digest(t.as_bytes())))
        };
        self
    }

    /// Whether the request may read `/metrics`: it is public, or carries
    /// the metrics token or the admin token.
    pub fn may_scrape(&self, headers: &HeaderMap) -> bool {
        let metrics = match &self.metrics {
            MetricsAccess::Public => return true,
            MetricsAccess::Token(t) => t,
        };
        let Some(given) = bearer(headers) else {
            return false;
        };
        let given = digest(given);
        // Both comparisons always run: which token matched does not show.
        let scraper = metrics.as_ref().is_some_and(|m| equal(&given, m));
        let admin = self.admin.as_ref().is_some_and(|a| equal(&given, a));
        scraper | admin
    }

    /// Whether the request carries the admin token.
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        match (bearer(headers), &self.admin) {
            (Some(given), Some(admin)) => equal(&digest(given), admin),
            _ => false,
        }
    }

    /// Whether the request carries the ingest token or the admin token.
    pub fn is_ingest(&self, headers: &HeaderMap) -> bool {
        let Some(given) = bearer(headers) else {
            return false;
        };
        let given = digest(given);
        // Both comparisons always run: which token matched does not show.
        let ingest = equal(&given, &self.ingest);
        let admin = self.admin.as_ref().is_some_and(|a| equal(&given, a));
        ingest | admin
    }
}

fn refuse(message: &str) -> Response {
    use axum::response::IntoResponse;
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// `Ok` when the request may use the control endpoints (the admin token);
/// else the 401 answer to send.
#[allow(clippy::result_large_err)]
pub fn require_admin(auth: &Auth, headers: &HeaderMap) -> Result<(), Response> {
    if auth.is_admin(headers) {
        Ok(())
    } else {
        Err(refuse(
            "missing or wrong `Authorization: Bearer <admin token>` (DATA/admin-token or --admin-token)",
        ))
    }
}

/// `Ok` when the request may use the ingest-level endpoints (the ingest or
/// the admin token); else the 401 answer to send.
#[allow(clippy::result_large_err)]
pub fn require_ingest(auth: &Auth, headers: &HeaderMap) -> Result<(), Response> {
    if auth.is_ingest(headers) {
        Ok(())
    } else {
        Err(refuse(
            "missing or wrong `Authorization: Bearer <ingest token>`",
        ))
    }
}

/// `Ok` when the request may read `/metrics` (see [`Auth::may_scrape`]);
/// else the 401 answer to send, with `WWW-Authenticate: Bearer`.
#[allow(clippy::result_large_err)]
pub fn require_scraper(auth: &Auth, headers: &HeaderMap) -> Result<(), Response> {
    if auth.may_scrape(headers) {
        return Ok(());
    }
    let mut answer = refuse(
        "missing or wrong `Authorization: Bearer <metrics token>` (DATA/metrics-token, --metrics-token, or the admin token; --metrics-public serves /metrics without one)",
    );
    answer.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"pushwerk metrics\""),
    );
    Err(answer)
}

/// Where the generated admin token is kept.
pub fn admin_token_file(data: &Path) -> PathBuf {
    data.join("admin-token")
}

/// Where the generated metrics token is kept.
pub fn metrics_token_file(data: &Path) -> PathBuf {
    data.join("metrics-token")
}

/// The admin token: configured, or read from / generated into
/// `DATA/admin-token` (created 0600). Returns it and the file it is in.
pub fn admin_token(
    data: &Path,
    configured: Option<String>,
) -> Result<(String, Option<PathBuf>), AuthError> {
    token_in_file(admin_token_file(data), configured)
}

/// The metrics token: configured, or read from / generated into
/// `DATA/metrics-token` (created 0600), the way the admin token is.
/// Returns it and the file it is in.
pub fn metrics_token(
    data: &Path,
    configured: Option<String>,
) -> Result<(String, Option<PathBuf>), AuthError> {
    token_in_file(metrics_token_file(data), configured)
}

/// A token: `configured`, or read from / generated into `path` (0600).
/// One read from the file is refused here when it is shorter than an
/// admin token may be, naming the file (a given one is checked, and named
/// as given, by the control plane).
fn token_in_file(
    path: PathBuf,
    configured: Option<String>,
) -> Result<(String, Option<PathBuf>), AuthError> {
    let (token, from) = crate::secret::token_file::token_in_file(
        path,
        configured,
        crate::oauth::seal::Sealer::generate_key,
    )
    .map_err(|e| AuthError::File {
        reason: e.source.to_string(),
        path: e.path,
    })?;
    let length = token.chars().count();
    match from {
        Some(path) if length < crate::server::control::MIN_ADMIN_TOKEN => {
            Err(AuthError::Short { path, length })
        }
        from => Ok((token, from)),
    }
}

/// The value of cookie `name` in the request: the first one sent, if it is
/// not empty and at most 128 bytes (every cookie pushwerk sets is a 64-hex
/// value; a longer one is not ours). For the console session and the
/// sign-in binding.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", value.parse().unwrap());
        h
    }

    #[test]
    fn admin_token_opens_everything_ingest_token_only_ingest() {
        let auth = Auth::new("ingest-1", Some("admin-1"));
        assert!(auth.is_ingest(&with("Bearer ingest-1")));
        assert!(auth.is_ingest(&with("bearer admin-1")));
        assert!(auth.is_admin(&with("BEARER admin-1")));
        assert!(!auth.is_admin(&with("Bearer ingest-1")));
        assert!(!auth.is_ingest(&with("Bearer nope")));
        assert!(!auth.is_ingest(&HeaderMap::new()));
        assert!(!auth.is_admin(&with("Basic admin-1")));
        let no_admin = Auth::new("ingest-1", None);
        assert!(!no_admin.is_admin(&with("Bearer ingest-1")));
        assert!(!no_admin.is_admin(&with("Bearer ")));
    }

    #[test]
    fn metrics_take_the_metrics_or_admin_token_unless_public() {
        let auth = Auth::new("ingest-1", Some("admin-1")).with_metrics(Some("metrics-1"), false);
        assert!(auth.may_scrape(&with("Bearer metrics-1")));
        assert!(auth.may_scrape(&with("Bearer admin-1")));
        assert!(!auth.may_scrape(&with("Bearer ingest-1")));
        assert!(!auth.may_scrape(&with("Bearer metrics-2")));
        assert!(!auth.may_scrape(&HeaderMap::new()));
        // The metrics token opens nothing else.
        assert!(!auth.is_ingest(&with("Bearer metrics-1")));
        assert!(!auth.is_admin(&with("Bearer metrics-1")));
        let refused = require_scraper(&auth, &HeaderMap::new()).unwrap_err();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().contains_key("www-authenticate"));
        // Without a metrics token, the admin token alone.
        let admin_only = Auth::new("ingest-1", Some("admin-1"));
        assert!(admin_only.may_scrape(&with("Bearer admin-1")));
        assert!(!admin_only.may_scrape(&with("Bearer ")));
        let public = Auth::new("ingest-1", None).with_metrics(Some("metrics-1"), true);
        assert!(public.may_scrape(&HeaderMap::new()));
    }

    #[test]
    fn admin_token_is_generated_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (token, path) = admin_token(dir.path(), None).unwrap();
        let path = path.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, _) = admin_token(dir.path(), None).unwrap();
        assert_eq!(token, again);
        let (given, none) = admin_token(dir.path(), Some(" mine ".into())).unwrap();
        assert_eq!((given.as_str(), none), ("mine", None));
    }
}
