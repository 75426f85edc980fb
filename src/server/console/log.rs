//! The deliveries log and the dead letters, filtered and bounded, with
//! replay of dead letters.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use super::{checked_post, iso, redirect, signed_in, Console, MAX_ROWS};
use crate::daemon::Daemon;

#[derive(Deserialize, Default)]
pub(super) struct LogFilter {
    push: Option<String>,
    status: Option<String>,
    event: Option<String>,
}

pub(super) fn bounded(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().chars().take(200).collect::<String>())
        .filter(|s| !s.is_empty())
}

pub(super) async fn deliveries(
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

pub(super) async fn dead_letters(
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

pub(super) async fn replay(
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
