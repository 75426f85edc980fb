//! Signing in and out of the console: the sign-in page, the admin-token
//! check that starts a session (with its cookie, `Secure` behind HTTPS),
//! and the sign-out that ends it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use minijinja::{context, Value};

use super::{checked_post, read_form, redirect, session, Console};
use crate::server::Control;

pub(super) async fn login_page(Extension(console): Extension<Arc<Console>>) -> Response {
    console.page(
        "login.html",
        context! { title => "Sign in", csrf => "", page => "login", error => Value::UNDEFINED },
    )
}

/// Whether cookies must be `Secure`: the daemon is reached over TLS
/// (`--public-url https://…`, which the sign-in redirect URI follows).
pub(super) fn secure_cookies(control: &Control) -> bool {
    control
        .redirect_uri()
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The origin (`scheme://host[:port]`) browsers reach the daemon at: that
/// of `--public-url` (the sign-in redirect URI follows it), else the
/// listen address's (`http://localhost:PORT`, the daemon itself).
pub(super) fn public_origin(control: &Control) -> Option<String> {
    url::Url::parse(control.redirect_uri())
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
}

pub(super) async fn login(
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

pub(super) async fn logout(
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
