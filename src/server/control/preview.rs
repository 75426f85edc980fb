//! `POST /v1/pushes/{name}/preview`: what a push would send for an event
//! (the request prepared as for delivery, with secrets masked), and the
//! sample event used when none is given.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;

use super::mask::mask_literal_secrets;
use super::{not_found, optional_json, Control};
use crate::api;
use crate::daemon::Daemon;
use crate::event::Event;
use crate::server::auth::require_ingest;
use crate::server::{error, read_body, BodyTimeout};

/// The sample event of a push: its trigger's type, and every `event.*`
/// field it uses set to a string naming the field.
pub(super) fn sample_event(push: &crate::config::Push, now: chrono::DateTime<Utc>) -> Event {
    use serde_json::{Map, Value};
    let event_type = match &push.trigger {
        crate::config::Trigger::Event(on) => on.clone(),
        crate::config::Trigger::Schedule(_) => return Event::schedule_tick(push.name(), now),
    };
    let mut data = Map::new();
    for param in &push.compiled.params {
        let Some(path) = param.strip_prefix("event.") else {
            continue;
        };
        let mut node = &mut data;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                node.entry(part.to_string())
                    .or_insert_with(|| Value::String(format!("‹event.{path}›")));
            } else {
                let next = node
                    .entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !next.is_object() {
                    *next = Value::Object(Map::new());
                }
                node = next.as_object_mut().expect("made an object above");
            }
        }
    }
    Event {
        id: "sample".into(),
        event_type,
        time: now,
        data: Value::Object(data),
    }
}

pub(super) async fn preview(
    State(daemon): State<Arc<Daemon>>,
    Extension(control): Extension<Arc<Control>>,
    Extension(BodyTimeout(timeout)): Extension<BodyTimeout>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = require_ingest(&control.auth, &headers) {
        return r;
    }
    let body = match read_body(&headers, body, daemon.config.max_body, timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let request: api::PreviewRequest = match optional_json(
        &body,
        r#"expected {"event": {…}, "now": "RFC 3339"} (both optional)"#,
    ) {
        Ok(r) => r,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let catalog = daemon.catalog();
    let Some(push) = catalog.pushes.iter().find(|p| p.name() == name) else {
        let hint =
            crate::config::did_you_mean(&name, catalog.pushes.iter().map(|p| p.name().to_owned()));
        return not_found(format!("no push named `{name}`{hint}"));
    };
    let now = request.now.unwrap_or_else(Utc::now);
    let (event, sample_event) = match request.event {
        Some(v) => {
            let event: Event = match serde_json::from_value(v) {
                Ok(e) => e,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("event: {e}")),
            };
            if let Err(e) = event.validate() {
                return error(StatusCode::BAD_REQUEST, format!("event: {e}"));
            }
            (event, false)
        }
        None => (sample_event(push, now), true),
    };
    let tokens = crate::engine::TokenValues::new();
    let input = crate::pipeline::Input {
        catalog: &catalog,
        push,
        event: &event,
        attempt: 1,
        now,
        tokens: &tokens,
        secrets: crate::pipeline::SecretMode::Masked,
        endpoints: &daemon.config.endpoints,
    };
    let mut answer = api::Preview {
        push: name.clone(),
        sample_event,
        skipped: None,
        request: None,
        text: None,
    };
    match crate::pipeline::run(input) {
        Ok(crate::pipeline::Outcome::Skipped(reason)) => answer.skipped = Some(reason),
        Ok(crate::pipeline::Outcome::Prepared(p)) => {
            use crate::engine::output::{format, Format};
            let mut prepared = p.request;
            mask_literal_secrets(&mut prepared);
            answer.request = serde_json::from_str(&format(&prepared, Format::Json)).ok();
            answer.text = Some(format(&prepared, Format::Text));
        }
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
    Json(answer).into_response()
}
