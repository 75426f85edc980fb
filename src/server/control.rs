//! The running daemon as the control plane: accounts (status, tokens in,
//! refresh), browser sign-in through the daemon, what became of an event,
//! a push's preview, and webhooks for senders that cannot shape an event.
//! The folder of YAML files stays the source of truth for definitions;
//! these endpoints change token state and queues only.
//!
//! Auth (see [`super::auth`]): the account endpoints and `/oauth/{name}/start`
//! need the admin token; `/oauth/callback` is a browser redirect and is
//! authenticated by its `state` alone (random, single use, ten minutes,
//! bound in memory to the PKCE verifier of the sign-in that made it); the
//! rest take the ingest token too. Answers never hold a token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::Deserialize;

use super::auth::{require_admin, require_ingest, Auth};
use super::{error, read_body, BodyTimeout};
use crate::api;
use crate::daemon::Daemon;
use crate::event::{Event, MAX_DEPTH};
use crate::oauth::login::LoginRequest;
use crate::oauth::OAuthError;

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
    /// `--public-url` is not an http(s) URL without query or fragment.
    #[error("--public-url {0:?} is not an http:// or https:// URL without query or fragment")]
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
}

/// Characters an admin token given by hand has at least (a generated one
/// has 64): the console's sign-in and the API take guesses without limit.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// How the control plane is set up (`pushwerk serve` flags).
#[derive(Debug, Clone, Default)]
pub struct ControlOptions {
    /// The admin token (`None`: only the ingest-level endpoints can be used).
    pub admin_token: Option<String>,
    /// The daemon's address as browsers reach it (behind a proxy):
    /// the redirect URI is `{public_url}/oauth/callback`.
    pub public_url: Option<String>,
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
        Ok(Control {
            auth: Auth::new(ingest_token, options.admin_token.as_deref()),
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

/// The status of every account, or of `only`.
async fn account_views(
    daemon: &Arc<Daemon>,
    only: Option<String>,
) -> Result<api::Accounts, OAuthError> {
    let resolver = daemon.resolver().clone();
    blocking(move || {
        let now = Utc::now();
        let encrypted = resolver.is_encrypted();
        let mut status = resolver.status(now.date_naive())?;
        if let Some(n) = &only {
            status.retain(|s| &s.account == n);
        }
        Ok(api::Accounts {
            encrypted_at_rest: encrypted,
            accounts: status
                .iter()
                .map(|s| api::Account::from_status(s, encrypted, now))
                .collect(),
        })
    })
    .await
}

async fn one_account(daemon: &Arc<Daemon>, name: &str) -> Result<api::Account, Response> {
    match account_views(daemon, Some(name.to_owned())).await {
        Ok(mut a) if !a.accounts.is_empty() => Ok(a.accounts.remove(0)),
        Ok(_) => Err(unknown_account(daemon, name)),
        Err(e) => Err(oauth_failure(daemon, name, e)),
    }
}

async fn accounts(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require_admin(&control.auth, &headers) {
        return r;
    }
    match account_views(&daemon, None).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => oauth_failure(&daemon, "", e),
    }
}

async fn account(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require_admin(&control.auth, &headers) {
        return r;
    }
    if let Err(r) = checked_name("an account name", &name) {
        return r;
    }
    match one_account(&daemon, &name).await {
        Ok(a) => Json(a).into_response(),
        Err(r) => r,
    }
}

/// `?requeue=true`: re-queue the dead letters of the account's pushes once
/// it has new tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Requeue {
    #[serde(default)]
    requeue: bool,
}

/// Re-queues the dead letters of every push that uses `account`.
async fn requeue_account(daemon: &Arc<Daemon>, account: &str) -> Result<usize, String> {
    let pushes: Vec<String> = daemon
        .catalog()
        .pushes
        .iter()
        .filter(|p| p.compiled.accounts.contains(account))
        .map(|p| p.name().to_owned())
        .collect();
    let mut n = 0;
    for push in pushes {
        n += daemon
            .replay(None, Some(push))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(n)
}

async fn put_tokens(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Extension(BodyTimeout(timeout)): Extension<BodyTimeout>,
    Path(name): Path<String>,
    query: Result<Query<Requeue>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = require_admin(&control.auth, &headers) {
        return r;
    }
    let requeue = match query {
        Ok(Query(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the only query parameter is `requeue=true|false`: {e}"),
            )
        }
    };
    if let Err(r) = checked_name("an account name", &name) {
        return r;
    }
    if !daemon.catalog().accounts.contains_key(&name) {
        return unknown_account(&daemon, &name);
    }
    let body = match read_body(&headers, body, MAX_TOKENS_BODY, timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8 text");
    };
    // The same reading as `oauth import`: a token response or a bare
    // refresh token; its errors never quote a value.
    let tokens = match crate::cli::parse_import(text) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    };
    let resolver = daemon.resolver().clone();
    let handle = tokio::runtime::Handle::current();
    let account = name.clone();
    if let Err(e) = blocking(move || handle.block_on(resolver.import(&account, tokens))).await {
        return oauth_failure(&daemon, &name, e);
    }
    changed(&daemon, &name, requeue.requeue).await
}

/// The answer after an account got new tokens: its status, and the dead
/// letters re-queued when asked.
async fn changed(daemon: &Arc<Daemon>, name: &str, requeue: bool) -> Response {
    let requeued = if requeue {
        match requeue_account(daemon, name).await {
            Ok(n) => n,
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the tokens are stored, but re-queueing failed: {e}"),
                )
            }
        }
    } else {
        0
    };
    match one_account(daemon, name).await {
        Ok(account) => Json(api::AccountChanged { account, requeued }).into_response(),
        Err(r) => r,
    }
}

async fn refresh(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require_admin(&control.auth, &headers) {
        return r;
    }
    if let Err(r) = checked_name("an account name", &name) {
        return r;
    }
    if !daemon.catalog().accounts.contains_key(&name) {
        return unknown_account(&daemon, &name);
    }
    // The refresh writes the rotated tokens durably: off the async workers.
    let resolver = daemon.resolver().clone();
    let handle = tokio::runtime::Handle::current();
    let account = name.clone();
    let refreshed = blocking(move || {
        handle
            .block_on(resolver.refresh_now(&account))
            .map(|_token| ())
    })
    .await;
    if let Err(e) = refreshed {
        return oauth_failure(&daemon, &name, e);
    }
    changed(&daemon, &name, false).await
}

/// Whether the client asked for a page rather than JSON (a browser).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

async fn login_start(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Path(name): Path<String>,
    query: Result<Query<Requeue>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require_admin(&control.auth, &headers) {
        return r;
    }
    let requeue = match query {
        Ok(Query(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the only query parameter is `requeue=true|false`: {e}"),
            )
        }
    };
    if let Err(r) = checked_name("an account name", &name) {
        return r;
    }
    let catalog = daemon.catalog();
    let Some(account) = catalog.accounts.get(&name) else {
        return unknown_account(&daemon, &name);
    };
    // Everything the exchange needs (secret, URLs) is checked before a URL
    // is handed out: a sign-in that cannot end well does not start.
    let login = match crate::oauth::login::begin(account, &control.redirect_uri) {
        Ok(login) => login,
        Err(e) => return error(StatusCode::CONFLICT, e.to_string()),
    };
    let Some(state) = url::Url::parse(&login.authorize_url).ok().and_then(|u| {
        u.query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
    }) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the authorize URL carries no state",
        );
    };
    let answer = api::LoginStart {
        account: name.clone(),
        authorize_url: login.authorize_url.clone(),
        redirect_uri: control.redirect_uri.clone(),
        expires_at: Utc::now() + chrono::Duration::from_std(LOGIN_TTL).unwrap_or_default(),
    };
    {
        let mut logins = control.logins.lock().expect("logins lock");
        logins.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
        while logins.len() >= MAX_PENDING_LOGINS {
            let oldest = logins
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => logins.remove(&k),
                None => break,
            };
        }
        logins.insert(
            state,
            Pending {
                account: name.clone(),
                login,
                started: Instant::now(),
                requeue: requeue.requeue,
            },
        );
    }
    tracing::info!(account = %name, "browser sign-in started");
    if wants_html(&headers) {
        let mut r = StatusCode::SEE_OTHER.into_response();
        if let Ok(v) = HeaderValue::from_str(&answer.authorize_url) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    Json(answer).into_response()
}

/// Escapes text for HTML content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small page; nothing on it comes unescaped from a request.
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pushwerk: {t}</title></head><body><h1>pushwerk: {t}</h1><p>{m}</p></body></html>",
        t = html_escape(title),
        m = html_escape(message)
    );
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The callback URL holds the code: no referrer, no scripts, no framing.
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    r
}

async fn login_callback(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    RawQuery(query): RawQuery,
) -> Response {
    let failed = |status: StatusCode, message: String| page(status, "sign-in failed", &message);
    let query = query.unwrap_or_default();
    let state = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned());
    let Some(state) = state else {
        return failed(
            StatusCode::BAD_REQUEST,
            "the redirect carries no `state`: start the sign-in again".into(),
        );
    };
    // Single use: the sign-in is taken out whatever happens next.
    let pending = {
        let mut logins = control.logins.lock().expect("logins lock");
        logins.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
        logins.remove(&state)
    };
    let Some(pending) = pending else {
        return failed(
            StatusCode::BAD_REQUEST,
            "unknown, used or expired sign-in (it is valid for 10 minutes, once): start it again"
                .into(),
        );
    };
    let name = pending.account.clone();
    let code = match pending.login.code_from_redirect(&format!("?{query}")) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(account = %name, error = %e, "browser sign-in failed");
            return failed(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let catalog = daemon.catalog();
    let Some(account) = catalog.accounts.get(&name) else {
        return failed(
            StatusCode::BAD_REQUEST,
            format!("OAuth account `{name}` is no longer defined in the folder"),
        );
    };
    let response = match pending
        .login
        .exchange(&control.client, account, &code)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(account = %name, error = %e, "browser sign-in failed");
            return failed(StatusCode::BAD_GATEWAY, e.to_string());
        }
    };
    let resolver = daemon.resolver().clone();
    let handle = tokio::runtime::Handle::current();
    let account_name = name.clone();
    let requested = crate::oauth::login::login_scope(account);
    if let Err(e) =
        blocking(move || handle.block_on(resolver.store_login(&account_name, response, &requested)))
            .await
    {
        tracing::warn!(account = %name, error = %e, "browser sign-in failed");
        return failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    tracing::info!(account = %name, "signed in through the browser; tokens stored");
    let mut message = format!("stored new tokens of `{name}`.");
    if pending.requeue {
        match requeue_account(&daemon, &name).await {
            Ok(n) => message.push_str(&format!(
                " Re-queued {}.",
                crate::config::diagnostic::counted(n, "dead letter", "dead letters")
            )),
            Err(e) => message.push_str(&format!(" Re-queueing the dead letters failed: {e}")),
        }
    }
    message.push_str(" You can close this window.");
    page(StatusCode::OK, "signed in", &message)
}

async fn event_history(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require_ingest(&control.auth, &headers) {
        return r;
    }
    if let Err(r) = checked_name("an event id", &id) {
        return r;
    }
    let queue = daemon.queue.clone();
    let found = tokio::task::spawn_blocking(move || queue.event_history(&id)).await;
    match found {
        Ok(Ok(history))
            if history.known
                || !history.attempts.is_empty()
                || !history.jobs.is_empty()
                || !history.dead_letters.is_empty() =>
        {
            Json(history).into_response()
        }
        Ok(Ok(history)) => not_found(format!("no event `{}` within the event window", history.id)),
        Ok(Err(e)) => super::read_failed(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The sample event of a push: its trigger's type, and every `event.*`
/// field it uses set to a string naming the field.
fn sample_event(push: &crate::config::Push, now: chrono::DateTime<Utc>) -> Event {
    use serde_json::{Map, Value};
    let event_type = match &push.trigger {
        crate::config::Trigger::Event(on) => on.clone(),
        crate::config::Trigger::Schedule(_) => return Event::schedule_tick(push.name(), now),
    };
    let mut data = Map::new();
    for param in &push.compiled.params {
        let Some(path) = param.strip_prefix("event.") else {
            continue;
        };
        let mut node = &mut data;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                node.entry(part.to_string())
                    .or_insert_with(|| Value::String(format!("‹event.{path}›")));
            } else {
                let next = node
                    .entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !next.is_object() {
                    *next = Value::Object(Map::new());
                }
                node = next.as_object_mut().expect("made an object above");
            }
        }
    }
    Event {
        id: "sample".into(),
        event_type,
        time: now,
        data: Value::Object(data),
    }
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

async fn preview(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Extension(BodyTimeout(timeout)): Extension<BodyTimeout>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = require_ingest(&control.auth, &headers) {
        return r;
    }
    let body = match read_body(&headers, body, daemon.config.max_body, timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let request: api::PreviewRequest = match optional_json(
        &body,
        r#"expected {"event": {…}, "now": "RFC 3339"} (both optional)"#,
    ) {
        Ok(r) => r,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let catalog = daemon.catalog();
    let Some(push) = catalog.pushes.iter().find(|p| p.name() == name) else {
        let hint =
            crate::config::did_you_mean(&name, catalog.pushes.iter().map(|p| p.name().to_owned()));
        return not_found(format!("no push named `{name}`{hint}"));
    };
    let now = request.now.unwrap_or_else(Utc::now);
    let (event, sample_event) = match request.event {
        Some(v) => {
            let event: Event = match serde_json::from_value(v) {
                Ok(e) => e,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("event: {e}")),
            };
            if let Err(e) = event.validate() {
                return error(StatusCode::BAD_REQUEST, format!("event: {e}"));
            }
            (event, false)
        }
        None => (sample_event(push, now), true),
    };
    let tokens = crate::engine::TokenValues::new();
    let input = crate::pipeline::Input {
        catalog: &catalog,
        push,
        event: &event,
        attempt: 1,
        now,
        tokens: &tokens,
        secrets: crate::pipeline::SecretMode::Masked,
        endpoints: &daemon.config.endpoints,
    };
    let mut answer = api::Preview {
        push: name.clone(),
        sample_event,
        skipped: None,
        request: None,
        text: None,
    };
    match crate::pipeline::run(input) {
        Ok(crate::pipeline::Outcome::Skipped(reason)) => answer.skipped = Some(reason),
        Ok(crate::pipeline::Outcome::Prepared(p)) => {
            use crate::engine::output::{format, Format};
            let mut prepared = p.request;
            mask_literal_secrets(&mut prepared);
            answer.request = serde_json::from_str(&format(&prepared, Format::Json)).ok();
            answer.text = Some(format(&prepared, Format::Text));
        }
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
    Json(answer).into_response()
}

/// Header names whose values are credentials (compared without case).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "developertoken",
    "cookie",
];

/// What a preview shows instead of a secret written literally into a push.
pub const LITERAL_SECRET: &str = "‹secret›";

/// Masks the secrets a push file holds literally (not as `${env:…}` /
/// `${file:…}`, which are placeholders already): an SMTP password, and the
/// value of a credential header (`Authorization: Basic …`, `x-api-key`, a
/// literal Bing `DeveloperToken`) unless it only holds placeholders
/// (`Bearer ‹oauth.crm›`). A preview may be asked for with the ingest token
/// alone, and the console shows it: neither may learn a credential.
fn mask_literal_secrets(prepared: &mut crate::targets::Prepared) {
    use crate::targets::{Prepared, SmtpLogin};
    // Placeholders only, after an optional scheme (`Basic ‹env:AUTH›`).
    let is_placeholder = |v: &str| {
        let words: Vec<&str> = v.split_whitespace().collect();
        let skip = usize::from(words.len() > 1);
        !words.is_empty()
            && words[skip..]
                .iter()
                .all(|w| w.starts_with('‹') && w.ends_with('›'))
    };
    match prepared {
        Prepared::Smtp(m) => {
            if let Some(SmtpLogin::Password { password, .. }) = &mut m.login {
                if !is_placeholder(password) {
                    *password = LITERAL_SECRET.to_owned();
                }
            }
        }
        Prepared::Http(r) => {
            if let Some(url) = masked_query(&r.url) {
                r.url = url;
            }
            for (name, value) in &mut r.headers {
                if SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
                    && !is_placeholder(value)
                {
                    *value = LITERAL_SECRET.to_owned();
                }
            }
        }
    }
}

/// Query parameter names whose values are credentials (compared without
/// case): an API key or signature written into a push's `url`.
const SECRET_QUERY: &[&str] = &[
    "key",
    "apikey",
    "api_key",
    "api-key",
    "token",
    "access_token",
    "secret",
    "client_secret",
    "password",
    "sig",
    "signature",
    "code",
];

/// `url` with the values of credential query parameters replaced by
/// [`LITERAL_SECRET`] (placeholders are left alone); `None` when there is
/// nothing to mask.
fn masked_query(url: &str) -> Option<String> {
    let (base, query) = url.split_once('?')?;
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut changed = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value))
                if SECRET_QUERY.iter().any(|s| s.eq_ignore_ascii_case(name))
                    && !value.is_empty()
                    && !(value.starts_with('‹') && value.ends_with('›')) =>
            {
                changed = true;
                format!("{name}={LITERAL_SECRET}")
            }
            _ => pair.to_owned(),
        })
        .collect();
    changed.then(|| {
        let mut out = format!("{base}?{}", parts.join("&"));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    })
}

/// The id of a webhook's event: `Idempotency-Key`, else `X-Request-Id`,
/// else the SHA-256 of the type and the body (a resent body is a duplicate).
#[allow(clippy::result_large_err)]
fn hook_id(headers: &HeaderMap, event_type: &str, body: &[u8]) -> Result<String, Response> {
    for name in ["idempotency-key", "x-request-id"] {
        if let Some(v) = headers.get(name) {
            let v = v.to_str().map(str::trim).unwrap_or("");
            if v.is_empty() || v.len() > MAX_ID || v.chars().any(char::is_control) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("header `{name}` must be 1 to {MAX_ID} printable ASCII characters"),
                ));
            }
            return Ok(v.to_owned());
        }
    }
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(event_type.as_bytes());
    h.update(b"\n");
    h.update(body);
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

async fn hook(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Extension(BodyTimeout(timeout)): Extension<BodyTimeout>,
    Extension(health): Extension<Arc<super::health::StoreHealth>>,
    Path(event_type): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = require_ingest(&control.auth, &headers) {
        return r;
    }
    if !crate::event::is_valid_event_type(&event_type) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{:?} is not an event type: expected dot-separated words of a-z, 0-9, `_` or `-`, e.g. `form.submitted`", event_type.chars().take(MAX_ID).collect::<String>()),
        );
    }
    let body = match read_body(&headers, body, daemon.config.max_body, timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = crate::event::check_json(&body, MAX_DEPTH) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let data: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    if !data.is_object() {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON object (it becomes the event's `data`)",
        );
    }
    let id = match hook_id(&headers, &event_type, &body) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let event = Event {
        id: id.clone(),
        event_type,
        time: Utc::now(),
        data,
    };
    super::accept_events(&daemon, &health, vec![event], Some(id)).await
}

/// Attempts of one `send` at most (as `pushwerk send --attempts`).
pub const MAX_SEND_ATTEMPTS: u32 = 100;

/// `pushwerk send` through the daemon: one push, now, through the same
/// path as the daemon's deliveries (the daemon's token state), answered
/// when the attempts are over. Admin only: it sends with the account's
/// token outside the queue.
async fn send_now(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Extension(BodyTimeout(timeout)): Extension<BodyTimeout>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = require_admin(&control.auth, &headers) {
        return r;
    }
    let body = match read_body(&headers, body, daemon.config.max_body, timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let request: api::SendRequest = match optional_json(
        &body,
        r#"expected {"event": {…}, "attempts": N} (both optional)"#,
    ) {
        Ok(r) => r,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let attempts = request.attempts.unwrap_or(1);
    if !(1..=MAX_SEND_ATTEMPTS).contains(&attempts) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`attempts` must be 1 to {MAX_SEND_ATTEMPTS}"),
        );
    }
    let catalog = daemon.catalog();
    let Some(push) = catalog.pushes.iter().find(|p| p.name() == name) else {
        let hint =
            crate::config::did_you_mean(&name, catalog.pushes.iter().map(|p| p.name().to_owned()));
        return not_found(format!("no push named `{name}`{hint}"));
    };
    let event = match (request.event, &push.trigger) {
        (Some(v), _) => {
            let event: Event = match serde_json::from_value(v) {
                Ok(e) => e,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("event: {e}")),
            };
            if let Err(e) = event.validate() {
                return error(StatusCode::BAD_REQUEST, format!("event: {e}"));
            }
            event
        }
        (None, crate::config::Trigger::Schedule(_)) => {
            Event::schedule_tick(push.name(), Utc::now())
        }
        (None, crate::config::Trigger::Event(on)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("push `{name}` fires on `{on}` events: give one as `event`"),
            )
        }
    };
    let deliverer = control.deliverer.get_or_init(|| {
        crate::engine::Deliverer::new(
            daemon.resolver().clone(),
            crate::engine::Sender::new(Duration::from_secs(30)),
            daemon.config.endpoints.clone(),
            daemon.config.retry_after_cap,
        )
    });
    let mut made = Vec::new();
    let delivery = deliverer
        .deliver_with_retries(
            &catalog,
            push,
            &event,
            attempts,
            push.spec.retry.max_age.0,
            &daemon.config.backoff,
            |n, a| {
                made.push(api::SentAttempt {
                    attempt: n,
                    target: a.target.clone(),
                    outcome: match a.outcome {
                        crate::targets::Outcome::Delivered { .. } => "delivered",
                        crate::targets::Outcome::Retry { .. } => "retry",
                        _ => "failed",
                    }
                    .to_owned(),
                    summary: a.outcome.summary(),
                    duration_ms: a.duration.as_millis() as u64,
                })
            },
        )
        .await;
    let skipped = match delivery {
        crate::engine::Delivery::Skipped(reason) => Some(reason),
        crate::engine::Delivery::Attempted(_) => None,
    };
    tracing::info!(push = %name, attempts = made.len(), "sent through the API");
    Json(api::Sent {
        push: name,
        skipped,
        attempts: made,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_follows_public_url_else_listen_address() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            redirect_uri(at("127.0.0.1:8787"), None).unwrap(),
            "http://localhost:8787/oauth/callback"
        );
        assert_eq!(
            redirect_uri(at("0.0.0.0:9000"), None).unwrap(),
            "http://localhost:9000/oauth/callback"
        );
        assert_eq!(
            redirect_uri(at("10.1.2.3:9000"), None).unwrap(),
            "http://10.1.2.3:9000/oauth/callback"
        );
        assert_eq!(
            redirect_uri(at("10.1.2.3:9000"), Some("https://p.example.com/base/")).unwrap(),
            "https://p.example.com/base/oauth/callback"
        );
        for bad in [
            "p.example.com",
            "ftp://p.example.com",
            "https://p.example.com/?a=b",
            "https://u:p@p.example.com",
            "https://p.example.com/#x",
        ] {
            assert!(redirect_uri(at("127.0.0.1:1"), Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_escape_markup_and_quotes() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn credential_query_parameters_are_masked() {
        assert_eq!(
            masked_query("https://h.example/x?a=1&code=abc%2B&KEY=k#frag").as_deref(),
            Some("https://h.example/x?a=1&code=‹secret›&KEY=‹secret›#frag")
        );
        assert_eq!(masked_query("https://h.example/x?a=1&key=‹env:K›"), None);
        assert_eq!(masked_query("https://h.example/x"), None);
    }

    #[test]
    fn hook_ids_prefer_headers_then_hash_type_and_body() {
        let mut h = HeaderMap::new();
        let hashed = hook_id(&h, "form.sent", b"{}").unwrap();
        assert!(
            hashed.starts_with("sha256:") && hashed.len() == 7 + 64,
            "{hashed}"
        );
        assert_ne!(hashed, hook_id(&h, "form.other", b"{}").unwrap());
        assert_eq!(hashed, hook_id(&h, "form.sent", b"{}").unwrap());
        h.insert("x-request-id", "req-1".parse().unwrap());
        assert_eq!(hook_id(&h, "form.sent", b"{}").unwrap(), "req-1");
        h.insert("idempotency-key", "key-1".parse().unwrap());
        assert_eq!(hook_id(&h, "form.sent", b"{}").unwrap(), "key-1");
        h.insert("idempotency-key", "".parse().unwrap());
        assert!(hook_id(&h, "form.sent", b"{}").is_err());
    }
}
