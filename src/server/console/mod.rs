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

mod accounts;
mod calls;
mod log;
mod login;
mod mask;
mod overview;
mod parameters;
mod pushes;
mod send;
pub mod session;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{SecondsFormat, Utc};
use minijinja::{context, AutoEscape, Environment, Value};

use crate::daemon::Daemon;
use session::Sessions;

use accounts::{accounts, import, refresh, signin};
use log::{dead_letters, deliveries, replay};
use login::{login, login_page, logout};
use overview::overview;
use parameters::{parameters, parameters_for_event};
use pushes::{preview, push_page, pushes};
use send::{send, send_page};

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
    ("signin.html", include_str!("templates/signin.html")),
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
/// Its handlers use the control plane's [`Control`](super::Control) (admin token, sign-in
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
        .route("/accounts/{name}/signin", post(signin))
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

fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;
