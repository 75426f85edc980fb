//! Browser sign-in through the daemon: `/oauth/{name}/start` (admin token)
//! makes a sign-in (PKCE, a random `state`) and hands out its single-use
//! begin link; `GET /oauth/begin` shows a "Continue" button, and its post
//! binds the sign-in to that browser (a cookie, see [`super::binding`])
//! and sends it to the provider; `/oauth/callback` exchanges the code and stores the tokens, in
//! that browser only. The pages are small and escaped; the `state` is
//! single use and bound in memory to its verifier.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;

use super::accounts::{requeue_account, Requeue};
use super::binding;
use super::{
    blocking, checked_name, unknown_account, Control, Pending, LOGIN_TTL, MAX_PENDING_LOGINS,
};
use crate::api;
use crate::daemon::Daemon;
use crate::server::auth::require_admin;
use crate::server::{error, read_body, BodyTimeout};

/// Whether the client asked for a page rather than JSON (a browser).
pub(super) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

pub(super) async fn login_start(
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
    // The browser is sent to the begin link, on the callback's origin, not
    // to the provider: the link binds the sign-in to the browser opening it.
    let link = binding::random_hex(32);
    let begin_url = format!(
        "{}begin?id={link}",
        control
            .redirect_uri
            .strip_suffix("callback")
            .unwrap_or(&control.redirect_uri)
    );
    let answer = api::LoginStart {
        account: name.clone(),
        authorize_url: begin_url,
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
                begin: binding::digest(&link),
                bound: None,
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
pub(super) fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pushwerk: {t}</title></head><body><h1>pushwerk: {t}</h1><p>{m}</p></body></html>",
        t = html_escape(title),
        m = html_escape(message)
    );
    html_answer(status, body)
}

/// An HTML answer with the headers every sign-in page has.
fn html_answer(status: StatusCode, body: String) -> Response {
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

/// A waiting sign-in found by its begin link.
struct WaitingSignIn {
    /// The sign-in's `state` (its key, and its cookie's name).
    state: String,
    /// The account it signs in.
    account: String,
    /// The provider's authorize URL (PKCE challenge, state).
    authorize_url: String,
    /// Whether the browser it is bound to came back (it has its cookies).
    again: bool,
}

/// Finds the waiting sign-in whose begin link has `id`; with `bind`, binds
/// it to the browser holding that value. A bound one is refused (409) but
/// for the browser it is bound to, whose `headers` carry its cookie: it
/// may come back (back button, reload) and continue again. An unknown,
/// used or expired link is refused (400). The refusal is the page to show.
#[allow(clippy::result_large_err)]
fn find_begin(
    control: &Control,
    id: &str,
    bind: Option<&str>,
    headers: &HeaderMap,
) -> Result<WaitingSignIn, Response> {
    let wanted = binding::digest(id);
    let found = {
        let mut logins = control.logins.lock().expect("logins lock");
        logins.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
        // At most MAX_PENDING_LOGINS entries; every one is compared.
        let mut found = None;
        for (state, pending) in logins.iter_mut() {
            if !binding::same_digest(&pending.begin, &wanted) {
                continue;
            }
            let again = match pending.bound {
                Some(bound) if !binding::matches(headers, state, Some(&bound)) => {
                    found = Some(None);
                    continue;
                }
                // The browser that continued, back again: still its sign-in.
                Some(_) => true,
                None => {
                    if let Some(value) = bind {
                        pending.bound = Some(binding::digest(value));
                    }
                    false
                }
            };
            found = Some(Some(WaitingSignIn {
                state: state.clone(),
                account: pending.account.clone(),
                authorize_url: pending.login.authorize_url.clone(),
                again,
            }));
        }
        found
    };
    let failed = |status: StatusCode, message: &str| page(status, "sign-in failed", message);
    match found {
        Some(Some(waiting)) => Ok(waiting),
        Some(None) => {
            tracing::warn!("refused a sign-in link continued in another browser");
            Err(failed(
                StatusCode::CONFLICT,
                "this sign-in was already continued in another browser; it works in one browser only: finish it there, or start the sign-in again",
            ))
        }
        None => Err(failed(
            StatusCode::BAD_REQUEST,
            "unknown, used or expired sign-in link (it is valid for 10 minutes): start the sign-in again",
        )),
    }
}

/// The `id` of a begin link's query or form body.
fn begin_id(encoded: &str) -> Option<String> {
    url::form_urlencoded::parse(encoded.as_bytes())
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.into_owned())
        .filter(|id| !id.is_empty() && id.len() <= 128)
}

const NO_ID: &str = "the sign-in link carries no `id`: start the sign-in again";

/// `GET /oauth/begin?id=…`: the sign-in's begin link. It only shows what
/// is about to happen (the account, the provider's host) and a "Continue"
/// button that posts the id back: a GET binds and uses up nothing, so a
/// link previewer (a chat or mail client fetching the link to show a
/// preview, a mail scanner, a browser's prefetch) cannot take the sign-in
/// away from the person it was sent to. Needs no token: the link is the
/// capability, handed out to the admin by `/oauth/{name}/start`.
pub(super) async fn login_begin(
    Extension(control): Extension<Arc<Control>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(id) = begin_id(&query.unwrap_or_default()) else {
        return page(StatusCode::BAD_REQUEST, "sign-in failed", NO_ID);
    };
    let WaitingSignIn {
        account,
        authorize_url,
        ..
    } = match find_begin(&control, &id, None, &headers) {
        Ok(waiting) => waiting,
        Err(refused) => return refused,
    };
    let provider = url::Url::parse(&authorize_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>pushwerk: sign in {a}</title></head><body><h1>pushwerk: sign in {a}</h1><p>Sign in the account <strong>{a}</strong> at <strong>{p}</strong>. The tokens you grant are stored by this pushwerk daemon and used by its pushes.</p><form method=\"post\" action=\"begin\"><input type=\"hidden\" name=\"id\" value=\"{i}\"><button type=\"submit\" id=\"begin-continue\">Continue to sign in</button></form></body></html>",
        a = html_escape(&account),
        p = html_escape(&provider),
        i = html_escape(&id),
    );
    html_answer(StatusCode::OK, body)
}

/// `POST /oauth/begin` (the begin page's form, `id=…`): the first browser
/// that continues gets the cookie that the callback will ask for, and is
/// sent on to the provider's authorize page; another one is refused (the
/// link works in one browser). The first one may post again (it is back
/// from the provider's page): it goes on, keeping its cookie.
pub(super) async fn login_begin_continue(
    Extension(control): Extension<Arc<Control>>,
    Extension(BodyTimeout(timeout)): Extension<BodyTimeout>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // The form is one id: a few hundred bytes at most.
    let body = match read_body(&headers, body, 4096, timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(id) = begin_id(&String::from_utf8_lossy(&body)) else {
        return page(StatusCode::BAD_REQUEST, "sign-in failed", NO_ID);
    };
    let value = binding::random_hex(32);
    let WaitingSignIn {
        state,
        authorize_url,
        again,
        ..
    } = match find_begin(&control, &id, Some(&value), &headers) {
        Ok(waiting) => waiting,
        Err(refused) => return refused,
    };
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    match HeaderValue::from_str(&authorize_url) {
        Ok(v) => h.insert(header::LOCATION, v),
        Err(_) => {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "sign-in failed",
                "the authorize URL is not a header value",
            )
        }
    };
    // The browser coming back keeps the cookies it has (its binding is
    // unchanged); a first one gets them, for the callback and for the
    // begin link.
    if !again {
        let ttl = LOGIN_TTL.as_secs();
        for cookie in [
            binding::set_cookie(&state, &value, &control.redirect_uri, ttl),
            binding::set_begin_cookie(&state, &value, &control.redirect_uri, ttl),
        ] {
            h.append(
                header::SET_COOKIE,
                HeaderValue::from_str(&cookie)
                    .expect("a cookie of hex and a URL path is a header value"),
            );
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

pub(super) async fn login_callback(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
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
    // Only in the browser that opened the begin link; a refused attempt
    // leaves the sign-in waiting for that browser. Once accepted, it is
    // single use: taken out whatever happens next.
    let pending = {
        let mut logins = control.logins.lock().expect("logins lock");
        logins.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
        match logins.get(&state) {
            None => None,
            Some(p) if !binding::matches(&headers, &state, p.bound.as_ref()) => Some(Err(())),
            Some(_) => logins.remove(&state).map(Ok),
        }
    };
    let pending = match pending {
        None => return failed(
            StatusCode::BAD_REQUEST,
            "unknown, used or expired sign-in (it is valid for 10 minutes, once): start it again"
                .into(),
        ),
        Some(Err(())) => {
            tracing::warn!(
                "refused a sign-in callback from a browser that did not start the sign-in"
            );
            return failed(
                StatusCode::FORBIDDEN,
                "this sign-in was not started in this browser (its sign-in cookie is missing or \
                 does not match): finish it in the browser that opened the sign-in link, or \
                 start it again here; nothing was stored"
                    .into(),
            );
        }
        Some(Ok(p)) => p,
    };
    // Whatever the outcome, the used sign-in's cookie is removed.
    let clear = [
        binding::clear_cookie(&state, &control.redirect_uri),
        binding::clear_begin_cookie(&state, &control.redirect_uri),
    ];
    let mut answer = finish(&daemon, &control, &query, pending).await;
    for c in clear {
        if let Ok(v) = HeaderValue::from_str(&c) {
            answer.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    answer
}

/// Exchanges the code of an accepted callback and stores the tokens: the
/// page to show.
async fn finish(
    daemon: &Arc<Daemon>,
    control: &Control,
    query: &str,
    pending: Pending,
) -> Response {
    let failed = |status: StatusCode, message: String| page(status, "sign-in failed", &message);
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
        match requeue_account(daemon, &name).await {
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
