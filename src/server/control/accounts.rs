//! The account endpoints: status of every account or one, tokens put in
//! from elsewhere, and a refresh on request, each answering with the
//! account's status (never a token). Admin only.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;

use super::{blocking, checked_name, oauth_failure, unknown_account, Control, MAX_TOKENS_BODY};
use crate::api;
use crate::daemon::Daemon;
use crate::oauth::OAuthError;
use crate::server::auth::require_admin;
use crate::server::{error, read_body, BodyTimeout};

/// The status of every account, or of `only`.
pub(super) async fn account_views(
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

pub(super) async fn one_account(
    daemon: &Arc<Daemon>,
    name: &str,
) -> Result<api::Account, Response> {
    match account_views(daemon, Some(name.to_owned())).await {
        Ok(mut a) if !a.accounts.is_empty() => Ok(a.accounts.remove(0)),
        Ok(_) => Err(unknown_account(daemon, name)),
        Err(e) => Err(oauth_failure(daemon, name, e)),
    }
}

pub(super) async fn accounts(
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

pub(super) async fn account(
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
pub(super) struct Requeue {
    #[serde(default)]
    pub(super) requeue: bool,
}

/// Re-queues the dead letters of every push that uses `account`.
pub(super) async fn requeue_account(daemon: &Arc<Daemon>, account: &str) -> Result<usize, String> {
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

pub(super) async fn put_tokens(
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
    let tokens = match crate::oauth::ImportedTokens::parse(text) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
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
pub(super) async fn changed(daemon: &Arc<Daemon>, name: &str, requeue: bool) -> Response {
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

pub(super) async fn refresh(
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
