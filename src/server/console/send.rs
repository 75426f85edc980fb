//! The test-event form: an event typed in the browser, accepted like any
//! other ingested event.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use minijinja::context;

use super::{checked_post, iso, redirect, session, signed_in, Console};
use crate::config::Trigger;
use crate::daemon::Daemon;

pub(super) fn event_types(daemon: &Daemon) -> Vec<String> {
    let mut types: Vec<String> = daemon
        .catalog()
        .pushes
        .iter()
        .filter_map(|p| match &p.trigger {
            Trigger::Event(on) => Some(on.clone()),
            Trigger::Schedule(_) => None,
        })
        .collect();
    types.sort();
    types.dedup();
    types
}

pub(super) async fn send_page(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    console.page(
        "send.html",
        context! { title => "Send a test event", page => "send", csrf => signed.csrf, flash => signed.flash,
                   types => event_types(&daemon), id => format!("test-{}", session::random_hex(6)),
                   data => "{\n  \n}", chosen => "" },
    )
}

pub(super) async fn send(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (signed, form) = match checked_post(&console, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let (id, event_type, data) = (field("id"), field("type"), field("data"));
    let data = if data.is_empty() {
        "{}".to_owned()
    } else {
        data
    };
    let built = serde_json::from_str::<serde_json::Value>(&data)
        .map_err(|e| format!("the data is not JSON: {e}"))
        .and_then(|data| {
            let event = serde_json::json!({ "id": id, "type": event_type, "time": iso(Utc::now()), "data": data });
            crate::server::parse_events(event.to_string().as_bytes())
        });
    let message = match built {
        Err(e) => Err(e),
        Ok(events) => match daemon.ingest(events).await {
            Ok(a) => Ok(format!(
                "event `{id}`: {} accepted, {} duplicate, {} job(s) queued",
                a.accepted, a.duplicates, a.jobs
            )),
            Err(e) => Err(format!("not accepted: {e}")),
        },
    };
    match message {
        Ok(m) => {
            console.sessions.set_flash(&signed.id, m);
            redirect(&format!(
                "/deliveries?event={}",
                url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            ))
        }
        Err(e) => {
            let mut r = console.page(
                "send.html",
                context! { title => "Send a test event", page => "send", csrf => signed.csrf,
                flash => e, types => event_types(&daemon), id => id,
                data => form.get("data").cloned().unwrap_or_default(), chosen => event_type },
            );
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
    }
}
