//! The daemon's HTTP API: event ingest, what is in force, the delivery log,
//! dead letters and replay, health, readiness and metrics. Everything but
//! health and readiness needs `Authorization: Bearer <token>`
//! (the ingest or the admin token; the account endpoints the admin token;
//! metrics the metrics or the admin token unless `--metrics-public`; see
//! [`auth`]),
//! checked before a byte of the request body is read, so that a client
//! without the token costs no more than its request head.
//!
//! [`serve`] is the server loop around the router (HTTP/1.1 only, bounded
//! connections, head and body deadlines, shutdown within the grace period).

pub mod auth;
pub mod console;
pub mod control;
mod health;
mod serve;

use health::StoreHealth;

pub use control::{Control, ControlOptions};
pub use serve::{serve, serve_router, ServeOptions};

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::daemon::{Daemon, DaemonError};
use crate::event::{Event, MAX_DEPTH};

/// The router over `daemon`, with the default [`ServeOptions`].
pub fn router(daemon: Arc<Daemon>) -> Router {
    router_with(daemon, ServeOptions::default())
}

/// How long a request body may take to arrive (a request extension).
#[derive(Clone, Copy)]
struct BodyTimeout(Duration);

/// The router over `daemon`, reading request bodies within
/// `options.body_timeout`, without an admin token (the account endpoints
/// refuse every request) and with the sign-in redirect on the listen address.
pub fn router_with(daemon: Arc<Daemon>, options: ServeOptions) -> Router {
    let control = Control::without_admin(&daemon.token, daemon.config.listen);
    router_control(daemon, options, Arc::new(control))
}

/// The router over `daemon` with the control plane `control` (admin token,
/// sign-in redirect URI).
pub fn router_control(daemon: Arc<Daemon>, options: ServeOptions, control: Arc<Control>) -> Router {
    Router::new()
        .merge(control::routes())
        .route("/v1/events", post(ingest))
        .route("/v1/pushes", get(pushes))
        .route("/v1/deliveries", get(deliveries))
        .route("/v1/jobs", get(jobs))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/replay", post(replay))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(console::router(&daemon))
        .layer(Extension(control))
        .layer(Extension(BodyTimeout(options.body_timeout)))
        .layer(Extension(Arc::new(StoreHealth::default())))
        .with_state(daemon)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = crate::api::ErrorBody {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

/// A query string the handler cannot read, answered like every other
/// `/v1/*` error: JSON `{"error": …}` with status 400 and axum's reason
/// (axum's own rejection is plain text). Taken as a `Result` so that the
/// token is checked first.
// The error is the answer itself, built once on a rare path.
#[allow(clippy::result_large_err)]
fn query_or_400<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Response> {
    query.map(|Query(q)| q).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad query string: {}", e.body_text()),
        )
    })
}

/// How long an ingest may wait for the store before it is answered 503:
/// a store that hangs (sled on a full disk) must not hold clients forever.
/// The events may still be stored after that answer; a resend is then a
/// duplicate, so nothing is lost or delivered twice.
const COMMIT_DEADLINE: Duration = Duration::from_secs(15);

/// 503 with the reason and a `Retry-After`: the store cannot write now.
fn store_unavailable(reason: impl std::fmt::Display) -> Response {
    let mut answer = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot store now, try again later: {reason}"),
    );
    answer
        .headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("5"));
    answer
}

/// The answer to a failed store read: 503 when the store is unavailable
/// (it says so), else 500.
fn read_failed(e: crate::delivery::QueueError) -> Response {
    match e {
        crate::delivery::QueueError::Store(e) if e.is_passing() => store_unavailable(e),
        e => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Reads a request body of at most `max` bytes within `timeout`: 413 when
/// it is larger (refused from `Content-Length` before reading), 408 when
/// the client is too slow, 400 when the connection breaks.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("length limit exceeded: the request body is larger than {max} bytes"),
        )
    };
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let read = async {
        use http_body_util::BodyExt;
        let mut body = body;
        let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

/// Parses one event or an array of events; the first problem names its index.
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, String> {
    crate::event::check_json(body, MAX_DEPTH).map_err(|e| e.to_string())?;
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

async fn ingest(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Extension(BodyTimeout(timeout)): Extension<BodyTimeout>,
    Extension(health): Extension<Arc<StoreHealth>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(refused) = auth::require_ingest(control.auth(), &headers) {
        return refused;
    }
    let body = match read_body(&headers, body, daemon.config.max_body, timeout).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let events = match parse_events(&body) {
        Ok(e) => e,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    accept_events(&daemon, &health, events, None).await
}

/// Stores `events` (ingest and webhooks): 202 with what was accepted (and
/// the event id a webhook got, `hook_id`), 503 while the store cannot write.
async fn accept_events(
    daemon: &Arc<Daemon>,
    health: &StoreHealth,
    events: Vec<Event>,
    hook_id: Option<String>,
) -> Response {
    // While the store is known to fail, answer at once (a probe decides
    // whether it recovered) instead of queueing behind a hung commit.
    if let Err(reason) = health.check(daemon).await {
        return store_unavailable(reason);
    }
    match tokio::time::timeout(COMMIT_DEADLINE, daemon.ingest(events)).await {
        Ok(Ok(accepted)) => {
            health.ok();
            match hook_id {
                Some(id) => (
                    StatusCode::ACCEPTED,
                    Json(crate::api::HookAccepted {
                        id,
                        ingested: crate::api::Ingested {
                            accepted: accepted.accepted,
                            duplicates: accepted.duplicates,
                            jobs: accepted.jobs,
                        },
                    }),
                )
                    .into_response(),
                None => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
            }
        }
        Ok(Err(DaemonError::ShuttingDown)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        }
        Ok(Err(e)) => {
            // Whatever the store's reason (a full disk, an I/O error), the
            // events are not acknowledged: the client may resend them.
            tracing::error!(error = %e, "ingest failed");
            health.fail(&e.to_string());
            store_unavailable(e)
        }
        Err(_) => {
            let reason = format!(
                "the store did not commit within {}",
                humantime::format_duration(COMMIT_DEADLINE)
            );
            tracing::error!(reason, "ingest failed");
            health.fail(&reason);
            store_unavailable(reason)
        }
    }
}

async fn pushes(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = auth::require_ingest(control.auth(), &headers) {
        return refused;
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
            // #15: a content hash, so that nodes serving different
            // versions of a push are visible side by side.
            let hash = {
                use sha2::Digest as _;
                let spec = serde_json::to_vec(&p.spec).unwrap_or_default();
                let digest = sha2::Sha256::digest(&spec);
                digest[..8].iter().map(|b| format!("{b:02x}")).collect::<String>()
            };
            json!({ "name": p.name(), "file": p.file, "trigger": trigger, "target": p.spec.target.key(), "hash": hash })
        })
        .collect();
    let accounts: Vec<&String> = catalog.accounts.keys().collect();
    let node = daemon.queue.store().node().map(str::to_owned);
    Json(json!({ "pushes": pushes, "accounts": accounts, "files": daemon.files(), "node": node }))
        .into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    push: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn deliveries(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    headers: HeaderMap,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    if let Err(refused) = auth::require_ingest(control.auth(), &headers) {
        return refused;
    }
    let q = match query_or_400(q) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    let (push, status) = (q.push, q.status);
    match daemon
        .read_queue(move |queue| queue.log(push.as_deref(), status.as_deref(), limit))
        .await
    {
        Ok(entries) => Json(crate::api::Deliveries {
            deliveries: entries,
        })
        .into_response(),
        Err(DaemonError::Queue(e)) => read_failed(e),
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
    Extension(control): Extension<Arc<Control>>,
    headers: HeaderMap,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> Response {
    if let Err(refused) = auth::require_ingest(control.auth(), &headers) {
        return refused;
    }
    let q = match query_or_400(q) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    match daemon.jobs(q.push, limit).await {
        Ok((jobs, more)) => {
            let jobs = jobs
                .into_iter()
                .map(|j| crate::api::Job {
                    state: crate::api::JobState::of_attempt(j.attempt),
                    id: j.id,
                    push: j.push,
                    event_id: j.event_id,
                    due: j.due,
                    attempt: j.attempt,
                    accepted_at: j.accepted_at,
                    last_error: j.last_error,
                })
                .collect();
            Json(crate::api::Jobs { jobs, more }).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn dead_letters(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    headers: HeaderMap,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    if let Err(refused) = auth::require_ingest(control.auth(), &headers) {
        return refused;
    }
    let q = match query_or_400(q) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let push = q.push;
    match daemon
        .read_queue(move |queue| queue.dead_letters_report(push.as_deref()))
        .await
    {
        Ok(report) => {
            let items: Vec<Value> = report
                .dead_letters
                .iter()
                .map(|d| json!({ "job_id": d.job.id, "push": d.job.push, "event_id": d.job.event_id, "attempt": d.job.attempt, "reason": d.reason, "at": d.at }))
                .collect();
            Json(json!({ "dead_letters": items, "damaged": report.damaged })).into_response()
        }
        Err(DaemonError::Queue(e)) => read_failed(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

use crate::api::ReplayRequest;

async fn replay(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Extension(BodyTimeout(timeout)): Extension<BodyTimeout>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(refused) = auth::require_ingest(control.auth(), &headers) {
        return refused;
    }
    // A replay request is a few bytes.
    let body = match read_body(&headers, body, 4096, timeout).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
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
        Ok(n) => {
            // Damaged dead letters are skipped by the replay and stay in
            // the store: say how many, so that they are not missed.
            let damaged = daemon
                .read_queue(|queue| queue.dead_letters_report(None))
                .await
                .map(|r| r.damaged)
                .unwrap_or(0);
            (
                StatusCode::OK,
                Json(crate::api::Replayed {
                    replayed: n,
                    damaged,
                }),
            )
                .into_response()
        }
        Err(DaemonError::Queue(e)) => read_failed(e),
        Err(e @ (DaemonError::Flush(_) | DaemonError::Store(_))) => store_unavailable(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Ready when the daemon is (store open, definitions loaded, not stopping),
/// its delivery outcomes are durable and the store takes writes (see
/// [`StoreHealth`]); else 503 with the reason.
async fn readyz(
    State(daemon): State<Arc<Daemon>>,
    Extension(health): Extension<Arc<StoreHealth>>,
) -> Response {
    if !daemon.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    // A shared store (PostgreSQL) whose server does not answer (#15).
    if let Err(e) = daemon.queue.store().health() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store cannot be reached: {e}\n"),
        )
            .into_response();
    }
    // Delivery outcomes that cannot be made durable (a full disk) would be
    // lost in a crash: not ready until the completion writer confirms them.
    if let Some(reason) = daemon.outcomes_failing() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store cannot take writes: {reason}\n"),
        )
            .into_response();
    }
    match health.check(&daemon).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store cannot take writes: {reason}\n"),
        )
            .into_response(),
    }
}

/// `GET /metrics` (Prometheus text): push and account names and counts,
/// for the metrics token or the admin token (or everyone with
/// `--metrics-public`), checked before anything is rendered.
async fn metrics(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = auth::require_scraper(control.auth(), &headers) {
        return refused;
    }
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
