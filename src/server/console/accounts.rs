//! The accounts page and its actions: browser sign-in, token import and
//! refresh, each through the control API.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use minijinja::{context, Value};

use super::overview::account_rows;
use super::pushes::path_segment;
use super::{checked_post, redirect, signed_in, Console};
use crate::daemon::Daemon;
use crate::server::Control;

pub(super) async fn accounts(
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
/// the browser to the sign-in's begin link, which binds the sign-in to
/// this browser (a cookie) and sends it on to the provider's authorize
/// page (PKCE, state); the provider sends it back to `/oauth/callback`,
/// which completes the sign-in in this browser only.
///
/// A form post with the session's CSRF token, not a link: a sign-in stores
/// whatever identity the browser is signed in to at the provider, so a
/// page that could start one in the admin's browser (a page on another
/// port of this host is "same site", and the session cookie's
/// `SameSite=Strict` does not stop it) must not be able to.
pub(super) async fn signin(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    Extension(control): Extension<Arc<Control>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let signed = match checked_post(&console, &headers, body).await {
        Ok((signed, _)) => signed,
        Err(r) => return r,
    };
    let path = format!("/oauth/{}/start", path_segment(&name));
    match console
        .call_api(&daemon, &control, axum::http::Method::GET, &path, None)
        .await
    {
        // A page that goes on by itself, not a redirect: the console's
        // CSP (`form-action 'self'`) stops a form post's redirects at
        // another origin (the begin link's `localhost`, the provider).
        Ok(crate::api::LoginStart { authorize_url, .. }) => console.page(
            "signin.html",
            context! { title => "Sign in", page => "accounts", csrf => signed.csrf,
            account => name, link => authorize_url },
        ),
        Err((status, reason)) => console.error_page(status, &reason),
    }
}

pub(super) async fn import(
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
    let message = match crate::oauth::ImportedTokens::parse(text) {
        Err(e) => format!("`{name}`: nothing imported: {e}"),
        Ok(tokens) => match daemon.resolver().import(&name, tokens).await {
            Ok(()) => format!("`{name}`: tokens stored"),
            Err(e) => format!("`{name}`: nothing imported: {e}"),
        },
    };
    console.sessions.set_flash(&signed.id, message);
    redirect("/accounts")
}

pub(super) async fn refresh(
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
