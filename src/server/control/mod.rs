//! The running daemon as the control plane: accounts (status, tokens in,
//! refresh), browser sign-in through the daemon, what became of an event,
//! a push's preview, and webhooks for senders that cannot shape an event.
//! The folder of YAML files stays the source of truth for definitions;
//! these endpoints change token state and queues only.
//!
//! Auth (see [`super::auth`]): the account endpoints and `/oauth/{name}/start`
//! need the admin token; `/oauth/begin` (the sign-in's single-use link)
//! and `/oauth/callback` are browser navigations: the callback is honoured
//! for its `state` (random, single use, ten minutes, bound in memory to the
//! PKCE verifier of the sign-in that made it) only in the browser that
//! continued the begin link (a cookie, see [`binding`]); the rest take the
//! ingest token too. Answers never hold a token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;

use super::auth::Auth;
use super::error;
use crate::daemon::Daemon;
use crate::event::MAX_DEPTH;
use crate::oauth::login::LoginRequest;
use crate::oauth::OAuthError;

mod accounts;
mod binding;
mod events;
mod login;
mod mask;
mod preview;

pub use events::MAX_SEND_ATTEMPTS;
pub use login::html_escape;
pub use mask::LITERAL_SECRET;

use accounts::{account, accounts, put_tokens, refresh};
use events::{event_history, hook, send_now};
use login::{login_begin, login_begin_continue, login_callback, login_start};
use preview::preview;

/// How long a browser sign-in may take from `start` to `callback`
/// (Microsoft's authorization codes live about as long).
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// Sign-ins started and not finished, at most: each holds a few hundred
/// bytes; the oldest is dropped to make room.
pub const MAX_PENDING_LOGINS: usize = 64;

/// A token import body, at most (a token response is a few KiB).
pub const MAX_TOKENS_BODY: usize = 64 * 1024;

/// Longest event id taken from a webhook header or a path.
pub const MAX_ID: usize = 256;

/// Why the control plane could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// `--public-url` is not an http(s) URL without query or fragment, or
    /// its path holds a `;` (it is the sign-in cookie's `Path`, where a
    /// `;` would end the attribute).
    #[error("--public-url {0:?} is not an http:// or https:// URL without query, fragment or `;` in its path")]
    PublicUrl(String),
    /// The admin token could not be set up.
    #[error(transparent)]
    Auth(#[from] super::auth::AuthError),
    /// The admin token is the ingest token: every event sender would be
    /// an admin (import tokens, send, start sign-ins).
    #[error("the admin token is the ingest token: every event sender could manage accounts and send as them; give the admin token a value of its own (or leave --admin-token / PUSHWERK_ADMIN_TOKEN unset to have one generated into DATA/admin-token)")]
    SameTokens,
    /// The admin token is short enough to be guessed over the network.
    #[error("the admin token is {0} characters long: give one of at least {MIN_ADMIN_TOKEN} (e.g. `pushwerk oauth keygen`), or leave --admin-token / PUSHWERK_ADMIN_TOKEN unset to have one generated into DATA/admin-token")]
    WeakAdminToken(usize),
    /// The metrics token is the ingest token: every event sender could
    /// read the metrics, and every scraper could send events.
    #[error("the metrics token is the ingest token: every scraper could send events; give the metrics token a value of its own (or leave --metrics-token / PUSHWERK_METRICS_TOKEN unset to have one generated into DATA/metrics-token)")]
    SameMetricsToken,
    /// The metrics token is the admin token: every scraper's configuration
    /// would hold the admin token, and the metrics token would open
    /// everything instead of nothing else.
    #[error("the metrics token is the admin token: every scraper would hold the admin token (accounts, sign-ins, sending); give the metrics token a value of its own (or leave --metrics-token / PUSHWERK_METRICS_TOKEN unset and delete DATA/metrics-token to have one generated), or scrape with the admin token itself")]
    SameMetricsAdminToken,
    /// The metrics token is short enough to be guessed over the network.
    #[error("the metrics token is {0} characters long: give one of at least {MIN_ADMIN_TOKEN} (e.g. `pushwerk oauth keygen`), or leave --metrics-token / PUSHWERK_METRICS_TOKEN unset to have one generated into DATA/metrics-token")]
    WeakMetricsToken(usize),
    /// A metrics token and `--metrics-public` both given: one says a token
    /// is needed, the other that none is.
    #[error("--metrics-public serves /metrics without a token, and a metrics token is given (--metrics-token / PUSHWERK_METRICS_TOKEN): leave one out")]
    PublicMetricsWithToken,
}

/// Characters an admin token given by hand has at least (a generated one
/// has 64): the console's sign-in and the API take guesses without limit.
pub const MIN_ADMIN_TOKEN: usize = crate::secret::token_file::MIN_TOKEN_CHARS;

/// How the control plane is set up (`pushwerk serve` flags).
#[derive(Debug, Clone, Default)]
pub struct ControlOptions {
    /// The admin token (`None`: only the ingest-level endpoints can be used).
    pub admin_token: Option<String>,
    /// The daemon's address as browsers reach it (behind a proxy):
    /// the redirect URI is `{public_url}/oauth/callback`.
    pub public_url: Option<String>,
    /// The token `/metrics` takes besides the admin token (`None`: the
    /// admin token only).
    pub metrics_token: Option<String>,
    /// `/metrics` without a token (`--metrics-public`).
    pub metrics_public: bool,
}

/// The redirect URI of browser sign-ins: `{public_url}/oauth/callback`, or
/// the listen address (`localhost` for a loopback or unspecified address,
/// since providers allow plain http only for localhost).
pub fn redirect_uri(listen: SocketAddr, public_url: Option<&str>) -> Result<String, ControlError> {
    if let Some(p) = public_url {
        let url = url::Url::parse(p).map_err(|_| ControlError::PublicUrl(p.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.fragment().is_some()
            || url.host_str().is_none()
            || !url.username().is_empty()
            || url.path().contains(';')
        {
            return Err(ControlError::PublicUrl(p.to_owned()));
        }
        return Ok(format!(
            "{}/oauth/callback",
            url.as_str().trim_end_matches('/')
        ));
    }
    Ok(default_redirect_uri(listen))
}

fn default_redirect_uri(listen: SocketAddr) -> String {
    let ip = listen.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        format!("http://localhost:{}/oauth/callback", listen.port())
    } else {
        format!("http://{listen}/oauth/callback")
    }
}

struct Pending {
    account: String,
    login: LoginRequest,
    started: Instant,
    requeue: bool,
    /// SHA-256 of the id of the sign-in's begin link (single use).
    begin: [u8; 32],
    /// SHA-256 of the cookie value given to the browser that opened the
    /// begin link; `None` until one did. The callback needs the cookie.
    bound: Option<[u8; 32]>,
}

/// The control plane's state (a request extension).
pub struct Control {
    auth: Auth,
    redirect_uri: String,
    logins: Mutex<HashMap<String, Pending>>,
    client: crate::oauth::client::TokenClient,
    /// `send` through the daemon: its resolver (token state, single-flight)
    /// with a sender of its own. Made on first use.
    deliverer: std::sync::OnceLock<crate::engine::Deliverer>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

impl Control {
    /// The control plane of a daemon whose API token is `ingest_token`,
    /// listening on `listen`.
    pub fn new(
        ingest_token: &str,
        listen: SocketAddr,
        options: &ControlOptions,
    ) -> Result<Control, ControlError> {
        if let Some(admin) = options.admin_token.as_deref() {
            if admin.trim() == ingest_token.trim() {
                return Err(ControlError::SameTokens);
            }
            let length = admin.trim().chars().count();
            if length < MIN_ADMIN_TOKEN {
                return Err(ControlError::WeakAdminToken(length));
            }
        }
        if let Some(metrics) = options.metrics_token.as_deref() {
            if options.metrics_public {
                return Err(ControlError::PublicMetricsWithToken);
            }
            if metrics.trim() == ingest_token.trim() {
                return Err(ControlError::SameMetricsToken);
            }
            if options
                .admin_token
                .as_deref()
                .is_some_and(|admin| admin.trim() == metrics.trim())
            {
                return Err(ControlError::SameMetricsAdminToken);
            }
            let length = metrics.trim().chars().count();
            if length < MIN_ADMIN_TOKEN {
                return Err(ControlError::WeakMetricsToken(length));
            }
        }
        let metrics_token = options.metrics_token.as_deref().map(str::trim);
        Ok(Control {
            auth: Auth::new(ingest_token, options.admin_token.as_deref())
                .with_metrics(metrics_token, options.metrics_public),
            redirect_uri: redirect_uri(listen, options.public_url.as_deref())?,
            logins: Mutex::new(HashMap::new()),
            client: crate::oauth::client::TokenClient::new(Duration::from_secs(30)),
            deliverer: std::sync::OnceLock::new(),
        })
    }

    /// A control plane without an admin token (the account endpoints refuse
    /// every request) and with the redirect URI on the listen address.
    pub fn without_admin(ingest_token: &str, listen: SocketAddr) -> Control {
        Control {
            auth: Auth::new(ingest_token, None),
            redirect_uri: default_redirect_uri(listen),
            logins: Mutex::new(HashMap::new()),
            client: crate::oauth::client::TokenClient::new(Duration::from_secs(30)),
            deliverer: std::sync::OnceLock::new(),
        }
    }

    /// The auth of the API (for other handlers).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The redirect URI sign-ins use.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }
}

/// The control routes (merged into the daemon's router).
pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/v1/accounts", get(accounts))
        .route("/v1/accounts/{name}", get(account))
        .route("/v1/accounts/{name}/tokens", put(put_tokens))
        .route("/v1/accounts/{name}/refresh", post(refresh))
        .route("/oauth/{name}/start", get(login_start))
        .route("/oauth/begin", get(login_begin).post(login_begin_continue))
        .route("/oauth/callback", get(login_callback))
        .route("/v1/events/{id}", get(event_history))
        .route("/v1/pushes/{name}/preview", post(preview))
        .route("/v1/pushes/{name}/send", post(send_now))
        .route("/v1/hooks/{type}", post(hook))
}

fn not_found(what: String) -> Response {
    error(StatusCode::NOT_FOUND, what)
}

fn unknown_account(daemon: &Daemon, name: &str) -> Response {
    let catalog = daemon.catalog();
    let hint = crate::config::did_you_mean(name, catalog.accounts.keys().cloned());
    not_found(format!("no OAuth account named `{name}`{hint}"))
}

/// A path segment named by a client: bounded, printable.
#[allow(clippy::result_large_err)]
fn checked_name(what: &str, name: &str) -> Result<(), Response> {
    if name.is_empty() || name.len() > MAX_ID || name.chars().any(char::is_control) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("{what} must be 1 to {MAX_ID} printable characters"),
        ));
    }
    Ok(())
}

/// Runs a store operation off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OAuthError> + Send + 'static,
) -> Result<T, OAuthError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(OAuthError::Store(crate::store::StoreError::Unavailable(
            e.to_string(),
        )))
    })
}

fn oauth_failure(daemon: &Daemon, name: &str, e: OAuthError) -> Response {
    let status = match &e {
        OAuthError::UnknownAccount(_) => return unknown_account(daemon, name),
        OAuthError::NoTokens(_) | OAuthError::NeedsReauth { .. } => StatusCode::CONFLICT,
        OAuthError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::Secret { .. } => StatusCode::CONFLICT,
        OAuthError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// An optional JSON request body: empty (or blank) is the type's default;
/// else depth-checked like an event and parsed. The error is the reason
/// for a 400, saying `expected` when the body is not what the endpoint takes.
fn optional_json<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    crate::event::check_json(body, MAX_DEPTH + 1).map_err(|e| e.to_string())?;
    serde_json::from_slice(body).map_err(|e| format!("{expected}: {e}"))
}

#[cfg(test)]
mod tests;
