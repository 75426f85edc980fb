//! The parameter browser: which `event.*` fields and filters each push
//! uses, and what a pasted event would give them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use minijinja::{context, Value};
use serde::Serialize;

use super::{checked_post, signed_in, Console, Signed};
use crate::daemon::Daemon;

pub(super) async fn parameters(
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
pub(super) async fn parameters_for_event(
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

pub(super) fn parameters_page(
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
