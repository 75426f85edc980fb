//! Events in and their outcome: webhooks for senders that cannot shape an
//! event (`/v1/hooks/{type}`), `pushwerk send` through the daemon
//! (`/v1/pushes/{name}/send`), and what became of an event
//! (`/v1/events/{id}`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;

use super::{checked_name, not_found, optional_json, Control, MAX_ID};
use crate::api;
use crate::daemon::Daemon;
use crate::event::{Event, MAX_DEPTH};
use crate::server::auth::{require_admin, require_ingest};
use crate::server::{error, read_body, BodyTimeout};

pub(super) async fn event_history(
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
            Json(api::EventHistory::from(history)).into_response()
        }
        Ok(Ok(history)) => not_found(format!("no event `{}` within the event window", history.id)),
        Ok(Err(e)) => crate::server::read_failed(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The id of a webhook's event: `Idempotency-Key`, else `X-Request-Id`,
/// else the SHA-256 of the type and the body (a resent body is a duplicate).
#[allow(clippy::result_large_err)]
pub(super) fn hook_id(
    headers: &HeaderMap,
    event_type: &str,
    body: &[u8],
) -> Result<String, Response> {
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

pub(super) async fn hook(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Extension(BodyTimeout(timeout)): Extension<BodyTimeout>,
    Extension(health): Extension<Arc<crate::server::health::StoreHealth>>,
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
    crate::server::accept_events(&daemon, &health, vec![event], Some(id)).await
}

/// Attempts of one `send` at most (as `pushwerk send --attempts`).
pub const MAX_SEND_ATTEMPTS: u32 = 100;

/// `pushwerk send` through the daemon: one push, now, through the same
/// path as the daemon's deliveries (the daemon's token state), answered
/// when the attempts are over. Admin only: it sends with the account's
/// token outside the queue.
pub(super) async fn send_now(
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
