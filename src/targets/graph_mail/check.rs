//! Load-time checks of a `graph_mail:` section.

use super::GraphMailTarget;
use crate::targets::CheckCx;

/// Account, recipients, one body, attachments, headers and base URL.
pub fn check(t: &GraphMailTarget, cx: &mut CheckCx<'_>) {
    cx.use_account("graph_mail.account", &t.account);
    if t.to.is_empty() && t.cc.is_empty() && t.bcc.is_empty() {
        cx.error(
            "graph_mail",
            "a mail needs at least one recipient in `to`, `cc` or `bcc`",
        );
    }
    match (&t.text, &t.html) {
        (Some(_), Some(_)) => cx.error_at_key(
            "graph_mail.html",
            "Graph mail has one body: give `text` or `html`, not both",
        ),
        (None, None) => cx.error("graph_mail", "a mail needs a body: `text` or `html`"),
        _ => {}
    }
    if let Some(html) = &t.html {
        cx.html_body("graph_mail.html", &html.0);
    }
    for (i, a) in t.attachments.iter().enumerate() {
        if a.path.is_some() == a.content_base64.is_some() {
            cx.error(
                &format!("graph_mail.attachments[{i}]"),
                "an attachment needs exactly one of `path` or `content_base64`",
            );
        }
        if let Some(path) = &a.path {
            check_attachment_folder(cx, i, &path.0);
        }
    }
    for name in t.headers.keys() {
        if !name.to_ascii_lowercase().starts_with("x-") {
            cx.error_at_key(
                &format!("graph_mail.headers.{name}"),
                format!("Graph allows only custom `x-` message headers, found `{name}`"),
            );
        }
    }
    if let Some(base) = &t.base_url {
        cx.url("graph_mail.base_url", base);
    }
}

/// An attachment path completed at render time (a parameter, statement or
/// secret in it) must start with a literal folder below the push file's
/// (`files/<< event.doc >>`): the rendered file is confined to that folder,
/// and without one an event value could pick any file beside the push,
/// `${file:…}` secrets included.
fn check_attachment_folder(cx: &mut CheckCx<'_>, i: usize, path: &str) {
    use std::path::{Component, Path};
    let completed = crate::template::is_template(path) || path.contains("${");
    if !completed {
        return;
    }
    let fixed = super::fixed_folder(path);
    let components: Vec<Component<'_>> = Path::new(fixed).components().collect();
    let below = components
        .iter()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && components.iter().any(|c| matches!(c, Component::Normal(_)));
    if !below {
        cx.error(
            &format!("graph_mail.attachments[{i}].path"),
            format!(
                "an attachment path with a parameter must start with a fixed folder below the push file's, e.g. `files/{}`: the file is then read only from that folder, never from the push's own folder where definitions and `${{file:…}}` secrets live",
                path.trim().trim_start_matches("./")
            ),
        );
    }
}
