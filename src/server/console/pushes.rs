//! The pushes list and a push's page: its definition (secrets masked),
//! diagnostics, a sample event and the live preview through the control API.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use super::mask::masked_yaml;
use super::{checked_post, iso, plain, signed_in, Console, Signed, MAX_YAML};
use crate::config::Trigger;
use crate::daemon::Daemon;
use crate::server::Control;

#[derive(Serialize)]
pub(super) struct PushRow {
    name: String,
    description: Option<String>,
    trigger: String,
    target: &'static str,
    condition: Option<String>,
    file: String,
    line: usize,
    stale: bool,
}

/// `path` as the user wrote the folder: relative to its parent when it is
/// inside it (`pushes/lead-mail.yaml`), else as it is.
pub(super) fn shown_path(daemon: &Daemon, path: &std::path::Path) -> String {
    let dir = &daemon.config.dir;
    let base = dir.parent().unwrap_or(dir);
    match path.strip_prefix(base) {
        Ok(rel) if !base.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// A diagnostic's text with the folder's path shortened as in [`shown_path`].
pub(super) fn shown_diagnostic(daemon: &Daemon, text: &str) -> String {
    let dir = &daemon.config.dir;
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(base) => text.replace(&format!("{}/", base.display()), ""),
        None => text.to_owned(),
    }
}

pub(super) fn push_rows(daemon: &Daemon) -> Vec<PushRow> {
    let catalog = daemon.catalog();
    let files = daemon.files();
    catalog
        .pushes
        .iter()
        .map(|p| PushRow {
            name: p.name().to_owned(),
            description: p.spec.description.clone(),
            trigger: match &p.trigger {
                Trigger::Event(on) => format!("on {on}"),
                Trigger::Schedule(s) => format!("schedule {}", s.source()),
            },
            target: p.spec.target.key(),
            condition: p.spec.when.clone(),
            file: shown_path(daemon, &p.file),
            line: p.position.line,
            stale: files.iter().any(|f| f.stale && f.file == p.file),
        })
        .collect()
}

pub(super) async fn pushes(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    #[derive(Serialize)]
    struct FileRow {
        file: String,
        stale: bool,
        /// (text, `error` or `warning`)
        diagnostics: Vec<(String, &'static str)>,
    }
    let files: Vec<FileRow> = daemon
        .files()
        .into_iter()
        .filter(|f| !f.diagnostics.is_empty())
        .map(|f| FileRow {
            file: shown_path(&daemon, &f.file),
            stale: f.stale,
            diagnostics: f
                .diagnostics
                .iter()
                .map(|d| {
                    let kind = if d.contains(": warning: ") {
                        "warning"
                    } else {
                        "error"
                    };
                    (shown_diagnostic(&daemon, d), kind)
                })
                .collect(),
        })
        .collect();
    console.page(
        "pushes.html",
        context! { title => "Pushes", page => "pushes", csrf => signed.csrf, flash => signed.flash,
                   pushes => Value::from(minijinja::value::Serde(push_rows(&daemon))), files => Value::from(minijinja::value::Serde(&files)) },
    )
}

pub(super) fn read_push_file(path: &std::path::Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            if let Err(e) = f.take(MAX_YAML).read_to_string(&mut text) {
                return format!("# cannot read {}: {e}", path.display());
            }
            masked_yaml(&text)
        }
        Err(e) => format!("# cannot read {}: {e}", path.display()),
    }
}

/// A sample event for a push's preview: its event type and the event
/// fields its templates use (empty strings, to be filled in).
pub(super) fn sample_event(push: &crate::config::Push) -> String {
    let event_type = match &push.trigger {
        Trigger::Event(on) => on.clone(),
        Trigger::Schedule(_) => "schedule".to_owned(),
    };
    let mut data = serde_json::Map::new();
    for p in &push.compiled.params {
        if let Some(field) = p.strip_prefix("event.") {
            let top = field.split('.').next().unwrap_or(field);
            data.entry(top.to_owned())
                .or_insert(serde_json::Value::String(String::new()));
        }
    }
    let event = serde_json::json!({
        "id": "preview-1",
        "type": event_type,
        "time": iso(Utc::now()),
        "data": data,
    });
    serde_json::to_string_pretty(&event).unwrap_or_default()
}

pub(super) fn push_context(
    daemon: &Daemon,
    name: &str,
    signed: Signed,
    event: Option<String>,
    preview: Option<Result<String, String>>,
) -> Option<Value> {
    let catalog = daemon.catalog();
    let push = catalog.pushes.iter().find(|p| p.name() == name)?;
    let row = push_rows(daemon).into_iter().find(|r| r.name == name)?;
    let event = event.unwrap_or_else(|| sample_event(push));
    let (preview, preview_error) = match preview {
        Some(Ok(text)) => (Some(text), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    Some(context! {
        title => name, page => "pushes", csrf => signed.csrf, flash => signed.flash,
        push => Value::from(minijinja::value::Serde(&row)), yaml => read_push_file(&push.file), event => event,
        preview => preview, preview_error => preview_error,
    })
}

#[derive(Deserialize)]
pub(super) struct PushQuery {
    /// A dead letter whose event fills the preview.
    job: Option<u64>,
}

pub(super) async fn push_page(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    Path(name): Path<String>,
    Query(query): Query<PushQuery>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // The event of a dead letter, to see what its push sends for it now.
    let mut event = None;
    if let Some(job) = query.job {
        let d = daemon.clone();
        let found = tokio::task::spawn_blocking(move || d.queue.dead_letters(None))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|all| all.into_iter().find(|x| x.job.id == job))
            .and_then(|x| x.event);
        event = found.and_then(|e| serde_json::to_string_pretty(&e).ok());
    }
    match push_context(&daemon, &name, signed, event, None) {
        Some(ctx) => console.page("push.html", ctx),
        None => console.error_page(StatusCode::NOT_FOUND, &format!("no push `{name}`")),
    }
}

/// The request `push` would send for the event in `event_json`, as the
/// API's preview gives it (secrets as placeholders), or why it would not
/// be sent.
pub(super) async fn preview_text(
    console: &Console,
    daemon: &Arc<Daemon>,
    control: &Arc<Control>,
    push: &str,
    event_json: &str,
) -> Result<String, String> {
    let event: serde_json::Value =
        serde_json::from_str(event_json).map_err(|e| format!("the event is not JSON: {e}"))?;
    let path = format!("/v1/pushes/{}/preview", path_segment(push));
    let answer: crate::api::Preview = console
        .call_api(
            daemon,
            control,
            axum::http::Method::POST,
            &path,
            Some(serde_json::json!({ "event": event })),
        )
        .await
        .map_err(|(_, reason)| reason)?;
    if let Some(reason) = answer.skipped {
        return Ok(format!("skipped: {reason}\n"));
    }
    answer
        .text
        .ok_or_else(|| "the preview holds no request".to_owned())
}

/// `name` as one percent-encoded URL path segment.
pub(super) fn path_segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

pub(super) async fn preview(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    Extension(control): Extension<Arc<Control>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (signed, form) = match checked_post(&console, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let event = form.get("event").cloned().unwrap_or_default();
    let result = preview_text(&console, &daemon, &control, &name, &event).await;
    // The page's script asks for the preview alone, to show it as you type.
    if headers.get("x-console-fetch").is_some() {
        return match result {
            Ok(text) => plain(StatusCode::OK, &text),
            Err(e) => plain(StatusCode::UNPROCESSABLE_ENTITY, &e),
        };
    }
    match push_context(&daemon, &name, signed, Some(event), Some(result)) {
        Some(ctx) => console.page("push.html", ctx),
        None => console.error_page(StatusCode::NOT_FOUND, &format!("no push `{name}`")),
    }
}
