//! The daemon's HTTP API: event ingest, what is in force, the delivery log,
//! dead letters and replay, health, readiness and metrics. Everything but
//! health, readiness and metrics needs `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::daemon::{Daemon, DaemonError};
use crate::event::Event;

/// The router over `daemon`.
pub fn router(daemon: Arc<Daemon>) -> Router {
    let max_body = daemon.config.max_body;
    Router::new()
        .route("/v1/events", post(ingest))
        .route("/v1/pushes", get(pushes))
        .route("/v1/deliveries", get(deliveries))
        .route("/v1/jobs", get(jobs))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/replay", post(replay))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(daemon)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Constant-time comparison of the bearer token.
fn authorized(daemon: &Daemon, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), daemon.token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong `Authorization: Bearer <ingest token>`",
    )
}

/// Parses one event or an array of events; the first problem names its index.
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        other @ Value::Object(_) => vec![other],
        _ => return Err("expected an event object or an array of events".into()),
    };
    if items.is_empty() {
        return Err("an empty array holds no event".into());
    }
    let single = items.len() == 1;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = if single {
                String::new()
            } else {
                format!("event [{i}]: ")
            };
            let event: Event = serde_json::from_value(item).map_err(|e| format!("{at}{e}"))?;
            event.validate().map_err(|e| format!("{at}{e}"))?;
            Ok(event)
        })
        .collect()
}

async fn ingest(State(daemon): State<Arc<Daemon>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&daemon, &headers) {
        return unauthorized();
    }
    let events = match parse_events(&body) {
        Ok(e) => e,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    match daemon.ingest(events).await {
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(DaemonError::ShuttingDown) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        Err(e) => {
            tracing::error!(error = %e, "ingest failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

async fn pushes(State(daemon): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    if !authorized(&daemon, &headers) {
        return unauthorized();
    }
    let catalog = daemon.catalog();
    let pushes: Vec<Value> = catalog
        .pushes
        .iter()
        .map(|p| {
            let trigger = match &p.trigger {
                crate::config::Trigger::Event(on) => json!({ "on": on }),
                crate::config::Trigger::Schedule(s) => json!({ "schedule": s.source() }),
            };
            json!({ "name": p.name(), "file": p.file, "trigger": trigger, "target": p.target.key() })
        })
        .collect();
    let accounts: Vec<&String> = catalog.accounts.keys().collect();
    Json(json!({ "pushes": pushes, "accounts": accounts, "files": daemon.files() })).into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    push: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn deliveries(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> Response {
    if !authorized(&daemon, &headers) {
        return unauthorized();
    }
    match daemon.queue.log(
        q.push.as_deref(),
        q.status.as_deref(),
        q.limit.unwrap_or(100).min(10_000),
    ) {
        Ok(entries) => Json(json!({ "deliveries": entries })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct JobsQuery {
    push: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/jobs?push=&limit=`: queued and retrying jobs, the next due
/// first (default 100, at most 10,000), with `more` when the list is cut.
async fn jobs(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    Query(q): Query<JobsQuery>,
) -> Response {
    if !authorized(&daemon, &headers) {
        return unauthorized();
    }
    let limit = q.limit.unwrap_or(100).min(10_000);
    match daemon.jobs(q.push, limit).await {
        Ok((jobs, more)) => Json(json!({ "jobs": jobs, "more": more })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn dead_letters(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> Response {
    if !authorized(&daemon, &headers) {
        return unauthorized();
    }
    match daemon.queue.dead_letters(q.push.as_deref()) {
        Ok(dead) => {
            let items: Vec<Value> = dead
                .iter()
                .map(|d| json!({ "job_id": d.job.id, "push": d.job.push, "event_id": d.job.event_id, "attempt": d.job.attempt, "reason": d.reason, "at": d.at }))
                .collect();
            Json(json!({ "dead_letters": items })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    job_id: Option<u64>,
    push: Option<String>,
}

async fn replay(State(daemon): State<Arc<Daemon>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&daemon, &headers) {
        return unauthorized();
    }
    let request: ReplayRequest = if body.is_empty() {
        ReplayRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"job_id\": N}} or {{\"push\": \"name\"}}: {e}"),
                )
            }
        }
    };
    match daemon.replay(request.job_id, request.push).await {
        Ok(n) => (StatusCode::OK, Json(json!({ "replayed": n }))).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn readyz(State(daemon): State<Arc<Daemon>>) -> Response {
    if daemon.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        daemon.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_one_or_many_and_name_the_bad_one() {
        let one = br#"{"id":"1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{}}"#;
        assert_eq!(parse_events(one).unwrap().len(), 1);
        let many = br#"[{"id":"1","type":"call.ended","time":"2026-01-01T00:00:00Z"},{"id":"2","type":"Bad Type","time":"2026-01-01T00:00:00Z"}]"#;
        let err = parse_events(many).unwrap_err();
        assert!(err.starts_with("event [1]: invalid event: `type`"), "{err}");
        assert!(parse_events(b"{")
            .unwrap_err()
            .starts_with("malformed JSON"));
        assert!(parse_events(b"[]").is_err());
        assert!(
            parse_events(br#"{"id":"1","type":"a","time":"2026-01-01T00:00:00Z","extra":1}"#)
                .unwrap_err()
                .contains("unknown field `extra`")
        );
    }
}
