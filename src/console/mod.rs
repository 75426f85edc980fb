//! The web console at `/`: server-rendered pages over the running daemon
//! (overview, pushes with a live preview, the parameter browser, accounts,
//! deliveries, dead letters, a test-event form), for a user who does not
//! open a terminal after `serve`.
//!
//! Everything is embedded in the binary (templates, CSS, JS: it works
//! offline). Pages are rendered by a minijinja environment of their own
//! with HTML auto-escaping and the standard `{{ }}` delimiters (the push
//! templates' environment is another one); no page context ever holds a
//! token or a secret value. Signing in takes the admin token
//! (`server::auth`); every POST needs the session's CSRF token
//! and a same-origin request; every answer carries a strict
//! Content-Security-Policy (no inline script or style).

// A refused request is answered with its page at once: the `Err` side of
// the guards is the axum response itself, returned straight to the router.
#![allow(clippy::result_large_err)]

pub mod session;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{SecondsFormat, Utc};
use minijinja::{context, AutoEscape, Environment, Value};
use serde::{Deserialize, Serialize};

use crate::config::Trigger;
use crate::daemon::Daemon;
use crate::delivery::LogStatus;
use crate::server::Control;
use session::Sessions;

/// The Content-Security-Policy of every console answer: nothing but the
/// console's own files, no inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Largest form body the console reads (a pasted event or token response).
const MAX_FORM: usize = 256 * 1024;

/// How long a form body may take to arrive.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest push file shown on a push page.
const MAX_YAML: u64 = 256 * 1024;

/// How often the accepted-events counter is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The span the events-per-minute figure is taken over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Rows shown at most in the delivery log and dead-letter tables.
const MAX_ROWS: usize = 200;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("pushes.html", include_str!("templates/pushes.html")),
    ("push.html", include_str!("templates/push.html")),
    ("parameters.html", include_str!("templates/parameters.html")),
    ("accounts.html", include_str!("templates/accounts.html")),
    ("deliveries.html", include_str!("templates/deliveries.html")),
    (
        "dead_letters.html",
        include_str!("templates/dead_letters.html"),
    ),
    ("send.html", include_str!("templates/send.html")),
    ("error.html", include_str!("templates/error.html")),
];

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's state: its page templates, the admin token, the sessions.
pub struct Console {
    pages: Environment<'static>,
    sessions: Sessions,
    /// The admin token, once someone signed in with it: the console calls
    /// the control API (browser sign-in, preview) with it on behalf of a
    /// signed-in user. Held in memory only, never put in a page.
    admin_token: std::sync::OnceLock<String>,
    /// The daemon's own router, for those calls (built on first use).
    api: std::sync::OnceLock<Router>,
    /// The origin of `--public-url` (`https://push.example.com`), which
    /// forms may come from besides the `Host` the daemon sees (behind a
    /// proxy). Taken from the control plane at the first sign-in.
    public_origin: std::sync::OnceLock<Option<String>>,
    /// (when, events accepted so far), sampled for the events-per-minute figure.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// The page environment: HTML auto-escaping for every template, standard
/// delimiters, undefined values an error (a typo in a page shows, never
/// renders as an empty string silently).
fn pages() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.set_debug(false);
    for (name, text) in TEMPLATES {
        env.add_template(name, text)
            .expect("the console's templates compile (a unit test checks)");
    }
    env
}

impl Default for Console {
    fn default() -> Console {
        Console::new()
    }
}

impl Console {
    /// A console with no session yet.
    pub fn new() -> Console {
        Console {
            pages: pages(),
            sessions: Sessions::default(),
            admin_token: std::sync::OnceLock::new(),
            api: std::sync::OnceLock::new(),
            public_origin: std::sync::OnceLock::new(),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    fn page(&self, name: &str, ctx: Value) -> Response {
        match self.pages.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => html_response(StatusCode::OK, html),
            Err(e) => {
                tracing::error!(page = name, error = %e, "cannot render a console page");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render this page")
            }
        }
    }

    fn error_page(&self, status: StatusCode, message: &str) -> Response {
        let mut r = self.page(
            "error.html",
            context! { title => "Error", message => message, csrf => "", page => "" },
        );
        *r.status_mut() = status;
        r
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_owned(),
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// The console's routes (merged into the API router by `server`).
///
/// Its handlers use the control plane's [`Control`] (admin token, sign-in
/// redirect URI), which the API router adds as a layer over these routes.
/// Inside a tokio runtime, a task samples the accepted-events counter every
/// few seconds (for the overview's events per minute) while `daemon` lives.
pub fn router(daemon: &Arc<Daemon>) -> Router<Arc<Daemon>> {
    let console = Arc::new(Console::new());
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let (weak_daemon, weak_console) = (Arc::downgrade(daemon), Arc::downgrade(&console));
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let (Some(d), Some(c)) = (weak_daemon.upgrade(), weak_console.upgrade()) else {
                    break;
                };
                c.sample(d.metrics.counter("pushwerk_events_accepted_total", &[]));
            }
        });
    }
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/pushes", get(pushes))
        .route("/pushes/{name}", get(push_page))
        .route("/pushes/{name}/preview", post(preview))
        .route("/parameters", get(parameters).post(parameters_for_event))
        .route("/accounts", get(accounts))
        .route("/accounts/{name}/signin", get(signin))
        .route("/accounts/{name}/import", post(import))
        .route("/accounts/{name}/refresh", post(refresh))
        .route("/deliveries", get(deliveries))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/replay", post(replay))
        .route("/send", get(send_page).post(send))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(Extension(console))
}

/// Adds the CSP and the other protective headers to every console answer.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on form
    // posts, and the origin check needs the real one.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.entry("cache-control")
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Sessions, forms, CSRF

/// A signed-in request: the session id and its CSRF token.
struct Signed {
    id: String,
    csrf: String,
    flash: Option<String>,
}

fn signed_in(console: &Console, headers: &HeaderMap) -> Result<Signed, Response> {
    match console.sessions.get(headers) {
        Some((id, s)) => {
            let flash = console.sessions.take_flash(&id);
            Ok(Signed {
                id,
                csrf: s.csrf,
                flash,
            })
        }
        None => Err(redirect("/login")),
    }
}

/// Reads a urlencoded form of at most [`MAX_FORM`] bytes.
async fn read_form(body: Body) -> Result<BTreeMap<String, String>, String> {
    let bytes = tokio::time::timeout(FORM_TIMEOUT, axum::body::to_bytes(body, MAX_FORM))
        .await
        .map_err(|_| "the form did not arrive in time".to_owned())?
        .map_err(|_| format!("the form is larger than {} KiB", MAX_FORM / 1024))?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

/// A signed-in, same-origin POST carrying the session's CSRF token: its form.
async fn checked_post(
    console: &Console,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Signed, BTreeMap<String, String>), Response> {
    let public = console.public_origin.get().cloned().flatten();
    if let Err(why) = session::same_origin(headers, public.as_deref()) {
        return Err(console.error_page(StatusCode::FORBIDDEN, why));
    }
    let signed = signed_in(console, headers)?;
    let form = read_form(body)
        .await
        .map_err(|e| console.error_page(StatusCode::BAD_REQUEST, &e))?;
    let given = form.get("csrf").map(String::as_str).unwrap_or("");
    if !session::same_secret(given, &signed.csrf) {
        return Err(console.error_page(
            StatusCode::FORBIDDEN,
            "this form has expired or did not come from the console: reload the page and try again",
        ));
    }
    Ok((signed, form))
}

async fn login_page(Extension(console): Extension<Arc<Console>>) -> Response {
    console.page(
        "login.html",
        context! { title => "Sign in", csrf => "", page => "login", error => Value::UNDEFINED },
    )
}

/// Whether cookies must be `Secure`: the daemon is reached over TLS
/// (`--public-url https://…`, which the sign-in redirect URI follows).
fn secure_cookies(control: &Control) -> bool {
    control
        .redirect_uri()
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The origin (`scheme://host[:port]`) browsers reach the daemon at: that
/// of `--public-url` (the sign-in redirect URI follows it), else the
/// listen address's (`http://localhost:PORT`, the daemon itself).
fn public_origin(control: &Control) -> Option<String> {
    url::Url::parse(control.redirect_uri())
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
}

async fn login(
    Extension(console): Extension<Arc<Console>>,
    Extension(control): Extension<Arc<Control>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let public = console
        .public_origin
        .get_or_init(|| public_origin(&control))
        .clone();
    if let Err(why) = session::same_origin(&headers, public.as_deref()) {
        return console.error_page(StatusCode::FORBIDDEN, why);
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(e) => return console.error_page(StatusCode::BAD_REQUEST, &e),
    };
    let given = form.get("token").map(|t| t.trim()).unwrap_or("");
    // The API's own check (digests compared in constant time).
    let mut as_bearer = HeaderMap::new();
    let is_admin = HeaderValue::from_str(&format!("Bearer {given}"))
        .map(|v| {
            as_bearer.insert(header::AUTHORIZATION, v);
            control.auth().is_admin(&as_bearer)
        })
        .unwrap_or(false);
    if given.is_empty() || !is_admin {
        let mut r = console.page(
            "login.html",
            context! { title => "Sign in", csrf => "", page => "login", error => "That is not the admin token (the file admin-token in the data directory, or --admin-token)." },
        );
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let _ = console.admin_token.set(given.to_owned());
    let (id, _) = console.sessions.create();
    let mut r = redirect("/");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::session_cookie(&id, secure_cookies(&control)))
            .expect("a hex cookie is a header value"),
    );
    r
}

impl Console {
    /// Calls the daemon's API as the admin (for a signed-in user): the
    /// status and the JSON answer.
    async fn call_api(
        &self,
        daemon: &Arc<Daemon>,
        control: &Arc<Control>,
        method: axum::http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        use hyper::service::Service as _;
        let token = self
            .admin_token
            .get()
            .ok_or("sign in again: the daemon restarted")?;
        let router = self
            .api
            .get_or_init(|| {
                crate::server::router_control(
                    daemon.clone(),
                    crate::server::ServeOptions::default(),
                    control.clone(),
                )
            })
            .clone();
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| e.to_string())?;
        let service = hyper_util::service::TowerToHyperService::new(router);
        let response = service.call(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 4 * 1024 * 1024)
            .await
            .map_err(|e| e.to_string())?;
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }
}

/// The answer's `error`, or a generic text.
fn api_error(status: StatusCode, value: &serde_json::Value) -> String {
    value["error"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the API answered {status}"))
}

async fn logout(
    Extension(console): Extension<Arc<Console>>,
    Extension(control): Extension<Arc<Control>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (signed, _) = match checked_post(&console, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    console.sessions.remove(&signed.id);
    let mut r = redirect("/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::clear_cookie(secure_cookies(&control)))
            .expect("a cookie is a header value"),
    );
    r
}

fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

// ---------------------------------------------------------------------------
// Overview

#[derive(Serialize)]
struct AccountRow {
    name: String,
    state: String,
    reason: Option<String>,
    access_token_expires: Option<String>,
    has_refresh_token: bool,
    last_refresh: Option<String>,
    last_use: Option<String>,
    last_error: Option<String>,
    client_secret_expires: Option<String>,
    warnings: Vec<String>,
    configured: bool,
}

fn account_rows(daemon: &Daemon) -> Result<Vec<AccountRow>, String> {
    let statuses = daemon
        .resolver()
        .status(Utc::now().date_naive())
        .map_err(|e| e.to_string())?;
    Ok(statuses
        .into_iter()
        .map(|s| AccountRow {
            name: s.account,
            state: s.state,
            reason: s.reason,
            access_token_expires: s.access_token_expires.map(iso),
            has_refresh_token: s.has_refresh_token,
            last_refresh: s.last_refresh.map(iso),
            last_use: s.last_use.map(iso),
            last_error: s.last_error,
            client_secret_expires: s.client_secret_expires.map(|d| d.to_string()),
            warnings: s.warnings,
            configured: s.configured,
        })
        .collect())
}

impl Console {
    /// Records the accepted-events counter now; keeps a minute of samples.
    fn sample(&self, total: u64) {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((now, total));
        while samples.len() > 2 && now.duration_since(samples[1].0) >= RATE_WINDOW {
            samples.pop_front();
        }
    }

    /// Events accepted per minute over the last minute (`None` until the
    /// samples span a few seconds).
    fn events_per_minute(&self, total: u64) -> Option<f64> {
        self.sample(total);
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (t0, n0) = *samples.front()?;
        let (t1, _) = *samples.back()?;
        let secs = t1.duration_since(t0).as_secs_f64();
        (secs >= SAMPLE_EVERY.as_secs_f64()).then(|| total.saturating_sub(n0) as f64 * 60.0 / secs)
    }
}

async fn overview(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = Utc::now();
    let events_total = daemon
        .metrics
        .counter("pushwerk_events_accepted_total", &[]);
    let events_per_minute = console
        .events_per_minute(events_total)
        .map(|r| format!("{r:.1}"));
    let d = daemon.clone();
    let figures = tokio::task::spawn_blocking(move || {
        let log = d.queue.log(None, None, 10_000).unwrap_or_default();
        let minute_ago = now - chrono::Duration::seconds(60);
        let hour_ago = now - chrono::Duration::hours(1);
        let last_minute = log.iter().filter(|e| e.at >= minute_ago).count();
        let last_hour: Vec<_> = log.iter().filter(|e| e.at >= hour_ago).collect();
        let delivered = last_hour
            .iter()
            .filter(|e| e.status == LogStatus::Delivered)
            .count();
        let failed = last_hour
            .iter()
            .filter(|e| matches!(e.status, LogStatus::Failed | LogStatus::Dead))
            .count();
        let pending = d.queue.pending().ok();
        let dead = d.queue.dead_letter_count().ok();
        (
            last_minute,
            last_hour.len(),
            delivered,
            failed,
            pending,
            dead,
        )
    })
    .await
    .unwrap_or((0, 0, 0, 0, None, None));
    let (last_minute, last_hour, delivered, failed, pending, dead) = figures;
    let accounts = account_rows(&daemon).unwrap_or_default();
    let attention: Vec<&AccountRow> = accounts
        .iter()
        .filter(|a| a.configured && a.state != "ok")
        .collect();
    let expiring: Vec<&AccountRow> = accounts.iter().filter(|a| !a.warnings.is_empty()).collect();
    let files = daemon.files();
    let broken = files
        .iter()
        .filter(|f| {
            !f.diagnostics.is_empty() && f.diagnostics.iter().any(|d| d.contains(": error: "))
        })
        .count();
    console.page(
        "overview.html",
        context! {
            title => "Overview", page => "overview", csrf => signed.csrf, flash => signed.flash,
            ready => daemon.is_ready(),
            events_total => events_total,
            events_per_minute => events_per_minute,
            deliveries_last_minute => last_minute,
            deliveries_last_hour => last_hour,
            delivered_last_hour => delivered,
            failed_last_hour => failed,
            queue_depth => pending,
            dead_letters => dead,
            pushes => daemon.catalog().pushes.len(),
            broken_files => broken,
            attention => Value::from(minijinja::value::Serde(&attention)),
            expiring => Value::from(minijinja::value::Serde(&expiring)),
            now => iso(now),
        },
    )
}

// ---------------------------------------------------------------------------
// Pushes

#[derive(Serialize)]
struct PushRow {
    name: String,
    description: Option<String>,
    trigger: String,
    target: &'static str,
    condition: Option<String>,
    file: String,
    line: usize,
    stale: bool,
}

/// `path` as the user wrote the folder: relative to its parent when it is
/// inside it (`pushes/lead-mail.yaml`), else as it is.
fn shown_path(daemon: &Daemon, path: &std::path::Path) -> String {
    let dir = &daemon.config.dir;
    let base = dir.parent().unwrap_or(dir);
    match path.strip_prefix(base) {
        Ok(rel) if !base.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// A diagnostic's text with the folder's path shortened as in [`shown_path`].
fn shown_diagnostic(daemon: &Daemon, text: &str) -> String {
    let dir = &daemon.config.dir;
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(base) => text.replace(&format!("{}/", base.display()), ""),
        None => text.to_owned(),
    }
}

fn push_rows(daemon: &Daemon) -> Vec<PushRow> {
    let catalog = daemon.catalog();
    let files = daemon.files();
    catalog
        .pushes
        .iter()
        .map(|p| PushRow {
            name: p.name().to_owned(),
            description: p.spec.description.clone(),
            trigger: match &p.trigger {
                Trigger::Event(on) => format!("on {on}"),
                Trigger::Schedule(s) => format!("schedule {}", s.source()),
            },
            target: p.spec.target.key(),
            condition: p.spec.when.clone(),
            file: shown_path(daemon, &p.file),
            line: p.position.line,
            stale: files.iter().any(|f| f.stale && f.file == p.file),
        })
        .collect()
}

async fn pushes(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    #[derive(Serialize)]
    struct FileRow {
        file: String,
        stale: bool,
        /// (text, `error` or `warning`)
        diagnostics: Vec<(String, &'static str)>,
    }
    let files: Vec<FileRow> = daemon
        .files()
        .into_iter()
        .filter(|f| !f.diagnostics.is_empty())
        .map(|f| FileRow {
            file: shown_path(&daemon, &f.file),
            stale: f.stale,
            diagnostics: f
                .diagnostics
                .iter()
                .map(|d| {
                    let kind = if d.contains(": warning: ") {
                        "warning"
                    } else {
                        "error"
                    };
                    (shown_diagnostic(&daemon, d), kind)
                })
                .collect(),
        })
        .collect();
    console.page(
        "pushes.html",
        context! { title => "Pushes", page => "pushes", csrf => signed.csrf, flash => signed.flash,
                   pushes => Value::from(minijinja::value::Serde(push_rows(&daemon))), files => Value::from(minijinja::value::Serde(&files)) },
    )
}

/// Keys whose literal values are secrets: shown masked on a push page
/// (a `${env:…}` / `${file:…}` reference is shown as written). Compared
/// without regard to case (`Authorization` is a header name).
const SECRET_KEYS: &[&str] = &[
    "client_secret",
    "password",
    "developer_token",
    "secret",
    "refresh_token",
    "access_token",
    "authorization",
    "x-api-key",
    "api_key",
    "api-key",
];

fn is_secret_key(key: &str) -> bool {
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// The push file's text with literal secret values masked: values of a
/// secret key in any YAML style (plain, quoted, `|`/`>` block scalars,
/// plain scalars over several lines, flow mappings such as
/// `auth: {username: u, password: x}`, or nested under the key), found with
/// the YAML parser; then, line by line, `key: value` forms (which also
/// covers a file the parser cannot read).
fn masked_yaml(text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (first, last, value) in secret_scalars(text) {
        let words: Vec<&str> = std::iter::once(value.trim())
            .chain(value.split_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        for line in lines.iter_mut().take(last).skip(first.saturating_sub(1)) {
            for w in &words {
                if line.contains(w) {
                    *line = line.replace(w, "‹hidden›");
                }
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in &lines {
        out.push_str(&masked_line(line));
        out.push('\n');
    }
    out
}

/// A `key: value` line with a secret key's literal value masked.
fn masked_line(line: &str) -> String {
    let trimmed = line.trim_start().trim_start_matches("- ");
    trimmed
        .split_once(':')
        .and_then(|(key, value)| {
            let value = value.trim();
            (is_secret_key(key)
                && !value.is_empty()
                && !value.starts_with("${")
                && !value.starts_with('#')
                && value != "‹hidden›")
                .then(|| {
                    let at = line.len() - trimmed.len() + trimmed.find(':').unwrap_or(0) + 1;
                    format!("{} ‹hidden›", &line[..at])
                })
        })
        .unwrap_or_else(|| line.to_owned())
}

/// The literal scalar values under a secret key in `text`: (first line,
/// last line, value), the lines 1-based and spanning from the value to the
/// next node (a block scalar's lines follow its indicator). Empty when the
/// text is not YAML.
fn secret_scalars(text: &str) -> Vec<(usize, usize, String)> {
    use saphyr_parser::{Event, Parser};
    enum Frame {
        /// A mapping: whether a key is awaited, whether the pending value
        /// is a secret, whether the whole mapping is under a secret key.
        Map {
            want_key: bool,
            secret_value: bool,
            inside_secret: bool,
        },
        Seq {
            inside_secret: bool,
        },
    }
    let mut events = Vec::new();
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => events.push((event, span.start.line())),
            Err(_) => break,
        }
    }
    let mut found = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    for i in 0..events.len() {
        let next_line = events.get(i + 1).map(|e| e.1).unwrap_or(usize::MAX);
        let line = events[i].1;
        // Whether the node at this position is a secret value, and whether
        // it is a mapping key.
        let (secret, is_key) = match stack.last() {
            Some(Frame::Map {
                want_key: true,
                inside_secret,
                ..
            }) => (*inside_secret, true),
            Some(Frame::Map {
                secret_value,
                inside_secret,
                ..
            }) => (*secret_value || *inside_secret, false),
            Some(Frame::Seq { inside_secret }) => (*inside_secret, false),
            None => (false, false),
        };
        let after_node = |stack: &mut Vec<Frame>| {
            if let Some(Frame::Map {
                want_key,
                secret_value,
                ..
            }) = stack.last_mut()
            {
                *want_key = !*want_key;
                if *want_key {
                    *secret_value = false;
                }
            }
        };
        match &events[i].0 {
            Event::Scalar(value, ..) => {
                if is_key {
                    let secret_key = is_secret_key(value);
                    if let Some(Frame::Map {
                        want_key,
                        secret_value,
                        ..
                    }) = stack.last_mut()
                    {
                        *want_key = false;
                        *secret_value = secret_key;
                    }
                } else {
                    if secret && !value.trim().is_empty() && !value.trim_start().starts_with("${") {
                        found.push((line, next_line.max(line), value.to_string()));
                    }
                    after_node(&mut stack);
                }
            }
            Event::Alias(_) => after_node(&mut stack),
            Event::MappingStart(..) => stack.push(Frame::Map {
                want_key: true,
                secret_value: false,
                inside_secret: secret,
            }),
            Event::SequenceStart(..) => stack.push(Frame::Seq {
                inside_secret: secret,
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                after_node(&mut stack);
            }
            Event::DocumentStart(_) => stack.clear(),
            _ => {}
        }
    }
    found
}

fn read_push_file(path: &std::path::Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            if let Err(e) = f.take(MAX_YAML).read_to_string(&mut text) {
                return format!("# cannot read {}: {e}", path.display());
            }
            masked_yaml(&text)
        }
        Err(e) => format!("# cannot read {}: {e}", path.display()),
    }
}

/// A sample event for a push's preview: its event type and the event
/// fields its templates use (empty strings, to be filled in).
fn sample_event(push: &crate::config::Push) -> String {
    let event_type = match &push.trigger {
        Trigger::Event(on) => on.clone(),
        Trigger::Schedule(_) => "schedule".to_owned(),
    };
    let mut data = serde_json::Map::new();
    for p in &push.compiled.params {
        if let Some(field) = p.strip_prefix("event.") {
            let top = field.split('.').next().unwrap_or(field);
            data.entry(top.to_owned())
                .or_insert(serde_json::Value::String(String::new()));
        }
    }
    let event = serde_json::json!({
        "id": "preview-1",
        "type": event_type,
        "time": iso(Utc::now()),
        "data": data,
    });
    serde_json::to_string_pretty(&event).unwrap_or_default()
}

fn push_context(
    daemon: &Daemon,
    name: &str,
    signed: Signed,
    event: Option<String>,
    preview: Option<Result<String, String>>,
) -> Option<Value> {
    let catalog = daemon.catalog();
    let push = catalog.pushes.iter().find(|p| p.name() == name)?;
    let row = push_rows(daemon).into_iter().find(|r| r.name == name)?;
    let event = event.unwrap_or_else(|| sample_event(push));
    let (preview, preview_error) = match preview {
        Some(Ok(text)) => (Some(text), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    Some(context! {
        title => name, page => "pushes", csrf => signed.csrf, flash => signed.flash,
        push => Value::from(minijinja::value::Serde(&row)), yaml => read_push_file(&push.file), event => event,
        preview => preview, preview_error => preview_error,
    })
}

#[derive(Deserialize)]
struct PushQuery {
    /// A dead letter whose event fills the preview.
    job: Option<u64>,
}

async fn push_page(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    Path(name): Path<String>,
    Query(query): Query<PushQuery>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // The event of a dead letter, to see what its push sends for it now.
    let mut event = None;
    if let Some(job) = query.job {
        let d = daemon.clone();
        let found = tokio::task::spawn_blocking(move || d.queue.dead_letters(None))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|all| all.into_iter().find(|x| x.job.id == job))
            .and_then(|x| x.event);
        event = found.and_then(|e| serde_json::to_string_pretty(&e).ok());
    }
    match push_context(&daemon, &name, signed, event, None) {
        Some(ctx) => console.page("push.html", ctx),
        None => console.error_page(StatusCode::NOT_FOUND, &format!("no push `{name}`")),
    }
}

/// The request `push` would send for the event in `event_json`, as the
/// API's preview gives it (secrets as placeholders), or why it would not
/// be sent.
async fn preview_text(
    console: &Console,
    daemon: &Arc<Daemon>,
    control: &Arc<Control>,
    push: &str,
    event_json: &str,
) -> Result<String, String> {
    let event: serde_json::Value =
        serde_json::from_str(event_json).map_err(|e| format!("the event is not JSON: {e}"))?;
    let path = format!("/v1/pushes/{}/preview", path_segment(push));
    let (status, answer) = console
        .call_api(
            daemon,
            control,
            axum::http::Method::POST,
            &path,
            Some(serde_json::json!({ "event": event })),
        )
        .await?;
    if !status.is_success() {
        return Err(api_error(status, &answer));
    }
    if let Some(reason) = answer["skipped"].as_str() {
        return Ok(format!("skipped: {reason}\n"));
    }
    answer["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "the preview holds no request".to_owned())
}

/// `name` as one percent-encoded URL path segment.
fn path_segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn preview(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    Extension(control): Extension<Arc<Control>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (signed, form) = match checked_post(&console, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let event = form.get("event").cloned().unwrap_or_default();
    let result = preview_text(&console, &daemon, &control, &name, &event).await;
    // The page's script asks for the preview alone, to show it as you type.
    if headers.get("x-console-fetch").is_some() {
        return match result {
            Ok(text) => plain(StatusCode::OK, &text),
            Err(e) => plain(StatusCode::UNPROCESSABLE_ENTITY, &e),
        };
    }
    match push_context(&daemon, &name, signed, Some(event), Some(result)) {
        Some(ctx) => console.page("push.html", ctx),
        None => console.error_page(StatusCode::NOT_FOUND, &format!("no push `{name}`")),
    }
}

// ---------------------------------------------------------------------------
// Parameters

async fn parameters(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    parameters_page(&console, &daemon, signed, None)
}

/// The parameter browser with the samples of a pasted event.
async fn parameters_for_event(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (signed, form) = match checked_post(&console, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let text = form.get("event").cloned().unwrap_or_default();
    parameters_page(&console, &daemon, signed, Some(text))
}

fn parameters_page(
    console: &Console,
    daemon: &Daemon,
    signed: Signed,
    event_text: Option<String>,
) -> Response {
    let catalog = daemon.catalog();
    let parsed = event_text
        .as_deref()
        .map(|t| crate::server::parse_events(t.as_bytes()));
    let (event, event_error) = match parsed {
        Some(Ok(mut events)) if events.len() == 1 => (events.pop(), None),
        Some(Ok(_)) => (None, Some("give one event, not an array".to_owned())),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let params = crate::params::catalogue(&catalog, event.as_ref(), Utc::now());
    #[derive(Serialize)]
    struct Row {
        name: String,
        kind: String,
        source: String,
        sample: String,
        secret: bool,
        template: String,
    }
    let rows: Vec<Row> = params
        .into_iter()
        .map(|p| Row {
            template: format!("<< {} >>", p.name),
            name: p.name,
            kind: p.kind,
            source: p.source,
            sample: p.sample,
            secret: p.secret,
        })
        .collect();
    console.page(
        "parameters.html",
        context! { title => "Parameters", page => "parameters", csrf => signed.csrf, flash => signed.flash,
                   params => Value::from(minijinja::value::Serde(&rows)),
                   event => event_text.unwrap_or_default(), event_error => event_error },
    )
}

// ---------------------------------------------------------------------------
// Accounts

async fn accounts(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (rows, error) = match account_rows(&daemon) {
        Ok(rows) => (rows, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    console.page(
        "accounts.html",
        context! { title => "Accounts", page => "accounts", csrf => signed.csrf, flash => signed.flash,
                   accounts => Value::from(minijinja::value::Serde(&rows)), error => error },
    )
}

/// "Sign in": starts the API's browser sign-in for the account and sends
/// the browser to the provider's authorize page (PKCE, state); the
/// provider sends it back to `/oauth/callback`.
async fn signin(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    Extension(control): Extension<Arc<Control>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = signed_in(&console, &headers) {
        return r;
    }
    let path = format!("/oauth/{}/start", path_segment(&name));
    match console
        .call_api(&daemon, &control, axum::http::Method::GET, &path, None)
        .await
    {
        Ok((status, answer)) if status.is_success() => match answer["authorize_url"].as_str() {
            Some(url) => redirect(url),
            None => {
                console.error_page(StatusCode::BAD_GATEWAY, "the sign-in gave no authorize URL")
            }
        },
        Ok((status, answer)) => console.error_page(status, &api_error(status, &answer)),
        Err(e) => console.error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

async fn import(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (signed, form) = match checked_post(&console, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let text = form.get("tokens").map(String::as_str).unwrap_or("");
    let message = match crate::cli::parse_import(text) {
        Err(e) => format!("`{name}`: nothing imported: {e}"),
        Ok(tokens) => match daemon.resolver().import(&name, tokens).await {
            Ok(()) => format!("`{name}`: tokens stored"),
            Err(e) => format!("`{name}`: nothing imported: {e}"),
        },
    };
    console.sessions.set_flash(&signed.id, message);
    redirect("/accounts")
}

async fn refresh(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (signed, _) = match checked_post(&console, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let message = match daemon.resolver().refresh_now(&name).await {
        Ok(_) => format!("`{name}`: refreshed"),
        Err(e) => format!("`{name}`: refresh failed: {e}"),
    };
    console.sessions.set_flash(&signed.id, message);
    redirect("/accounts")
}

// ---------------------------------------------------------------------------
// Deliveries and dead letters

#[derive(Deserialize, Default)]
struct LogFilter {
    push: Option<String>,
    status: Option<String>,
    event: Option<String>,
}

fn bounded(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().chars().take(200).collect::<String>())
        .filter(|s| !s.is_empty())
}

async fn deliveries(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    Query(filter): Query<LogFilter>,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (push, status, event) = (
        bounded(filter.push),
        bounded(filter.status),
        bounded(filter.event),
    );
    let d = daemon.clone();
    let (p, s, e) = (push.clone(), status.clone(), event.clone());
    let result = tokio::task::spawn_blocking(move || {
        let limit = if e.is_some() { 10_000 } else { MAX_ROWS };
        d.queue
            .log(p.as_deref(), s.as_deref(), limit)
            .map(|entries| {
                entries
                    .into_iter()
                    .filter(|x| e.as_deref().is_none_or(|id| x.event_id == id))
                    .take(MAX_ROWS)
                    .collect::<Vec<_>>()
            })
    })
    .await;
    let (rows, error) = match result {
        Ok(Ok(rows)) => (rows, None),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    #[derive(Serialize)]
    struct Row {
        at: String,
        job_id: u64,
        push: String,
        event_id: String,
        attempt: u32,
        status: String,
        code: Option<u16>,
        reference: Option<String>,
        error: Option<String>,
        duration_ms: u64,
    }
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|x| Row {
            at: iso(x.at),
            job_id: x.job_id,
            push: x.push,
            event_id: x.event_id,
            attempt: x.attempt,
            status: x.status.to_string(),
            code: x.code,
            reference: x.reference,
            error: x.error,
            duration_ms: x.duration_ms,
        })
        .collect();
    let push_names: Vec<String> = daemon
        .catalog()
        .pushes
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    console.page(
        "deliveries.html",
        context! { title => "Deliveries", page => "deliveries", csrf => signed.csrf, flash => signed.flash,
                   rows => Value::from(minijinja::value::Serde(&rows)), error => error, push => push, status => status, event => event,
                   push_names => push_names,
                   statuses => vec!["delivered", "retry", "failed", "dead", "skipped"] },
    )
}

async fn dead_letters(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let d = daemon.clone();
    let report = tokio::task::spawn_blocking(move || d.queue.dead_letters_report(None)).await;
    #[derive(Serialize)]
    struct Row {
        job_id: u64,
        push: String,
        event_id: String,
        attempt: u32,
        reason: String,
        at: String,
    }
    let (rows, damaged, error) = match report {
        Ok(Ok(r)) => {
            let rows: Vec<Row> = r
                .dead_letters
                .into_iter()
                .take(MAX_ROWS)
                .map(|x| Row {
                    job_id: x.job.id,
                    push: x.job.push,
                    event_id: x.job.event_id,
                    attempt: x.job.attempt,
                    reason: x.reason,
                    at: iso(x.at),
                })
                .collect();
            (rows, r.damaged, None)
        }
        Ok(Err(e)) => (Vec::new(), 0, Some(e.to_string())),
        Err(e) => (Vec::new(), 0, Some(e.to_string())),
    };
    let mut by_push: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *by_push.entry(r.push.clone()).or_default() += 1;
    }
    console.page(
        "dead_letters.html",
        context! { title => "Dead letters", page => "dead_letters", csrf => signed.csrf, flash => signed.flash,
                   rows => Value::from(minijinja::value::Serde(&rows)), damaged => damaged, error => error, by_push => Value::from(minijinja::value::Serde(&by_push)) },
    )
}

async fn replay(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (signed, form) = match checked_post(&console, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let job_id = form
        .get("job_id")
        .and_then(|j| j.trim().parse::<u64>().ok());
    let push = bounded(form.get("push").cloned());
    if job_id.is_none() && push.is_none() {
        return console.error_page(StatusCode::BAD_REQUEST, "say which dead letter to replay");
    }
    let message = match daemon.replay(job_id, push.clone()).await {
        Ok(n) => match (job_id, push) {
            (Some(id), _) => format!("re-queued {n} job (job {id})"),
            (None, Some(p)) => format!("re-queued {n} dead letters of `{p}`"),
            _ => format!("re-queued {n}"),
        },
        Err(e) => format!("replay failed: {e}"),
    };
    console.sessions.set_flash(&signed.id, message);
    redirect("/dead-letters")
}

// ---------------------------------------------------------------------------
// Send a test event

fn event_types(daemon: &Daemon) -> Vec<String> {
    let mut types: Vec<String> = daemon
        .catalog()
        .pushes
        .iter()
        .filter_map(|p| match &p.trigger {
            Trigger::Event(on) => Some(on.clone()),
            Trigger::Schedule(_) => None,
        })
        .collect();
    types.sort();
    types.dedup();
    types
}

async fn send_page(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    console.page(
        "send.html",
        context! { title => "Send a test event", page => "send", csrf => signed.csrf, flash => signed.flash,
                   types => event_types(&daemon), id => format!("test-{}", session::random_hex(6)),
                   data => "{\n  \n}", chosen => "" },
    )
}

async fn send(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (signed, form) = match checked_post(&console, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let (id, event_type, data) = (field("id"), field("type"), field("data"));
    let data = if data.is_empty() {
        "{}".to_owned()
    } else {
        data
    };
    let built = serde_json::from_str::<serde_json::Value>(&data)
        .map_err(|e| format!("the data is not JSON: {e}"))
        .and_then(|data| {
            let event = serde_json::json!({ "id": id, "type": event_type, "time": iso(Utc::now()), "data": data });
            crate::server::parse_events(event.to_string().as_bytes())
        });
    let message = match built {
        Err(e) => Err(e),
        Ok(events) => match daemon.ingest(events).await {
            Ok(a) => Ok(format!(
                "event `{id}`: {} accepted, {} duplicate, {} job(s) queued",
                a.accepted, a.duplicates, a.jobs
            )),
            Err(e) => Err(format!("not accepted: {e}")),
        },
    };
    match message {
        Ok(m) => {
            console.sessions.set_flash(&signed.id, m);
            redirect(&format!(
                "/deliveries?event={}",
                url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            ))
        }
        Err(e) => {
            let mut r = console.page(
                "send.html",
                context! { title => "Send a test event", page => "send", csrf => signed.csrf,
                flash => e, types => event_types(&daemon), id => id,
                data => form.get("data").cloned().unwrap_or_default(), chosen => event_type },
            );
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_and_escape() {
        let env = pages();
        let html = env
            .get_template("error.html")
            .unwrap()
            .render(
                context! { title => "t", message => "<script>x</script>", csrf => "", page => "" },
            )
            .unwrap();
        assert!(html.contains("&lt;script&gt;x&lt;"), "{html}");
        assert!(!html.contains("<script>x"));
    }

    #[test]
    fn literal_secrets_in_yaml_are_masked() {
        let text = "name: a\nclient_secret: hunter2\npassword: ${env:P}\n  secret: \"abc\"\n";
        let m = masked_yaml(text);
        assert!(!m.contains("hunter2") && !m.contains("abc"), "{m}");
        assert!(m.contains("password: ${env:P}"), "{m}");
        assert!(m.contains("client_secret: ‹hidden›"), "{m}");
    }

    #[test]
    fn secrets_in_block_flow_and_multiline_yaml_are_masked() {
        let text = "name: a\nsmtp:\n  auth: {username: u, password: FLOWPW}\n  other:\n    password: |\n      BLOCKPW\n    client_secret: >-\n      FOLDED1\n      FOLDED2\n    developer_token:\n      PLAINMULTI\n    secret:\n      - SEQPW\n  headers: {Authorization: \"Bearer HDRTOKEN\", X-Ok: shown}\n  password: ${env:PW}\n  subject: hi\n";
        let m = masked_yaml(text);
        for canary in [
            "FLOWPW",
            "BLOCKPW",
            "FOLDED1",
            "FOLDED2",
            "PLAINMULTI",
            "SEQPW",
            "HDRTOKEN",
        ] {
            assert!(!m.contains(canary), "{canary} shown:\n{m}");
        }
        for kept in [
            "username: u",
            "X-Ok: shown",
            "password: ${env:PW}",
            "subject: hi",
            "name: a",
        ] {
            assert!(m.contains(kept), "{kept} lost:\n{m}");
        }
        assert_eq!(m.lines().count(), text.lines().count());
    }
}
