//! Microsoft Graph `sendMail`: `POST {base}/v1.0/me/sendMail` (or
//! `/users/{id}/sendMail`) with a JSON message. Shapes as in Microsoft's
//! reference (names are case-sensitive; unknown properties are rejected).

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Map, Value};

mod check;
pub mod spec;

use std::collections::BTreeSet;

pub use check::check;
pub use spec::{AttachmentSpec, GraphMailTarget};

use super::outcome::{Outcome, Response};
use super::{
    check_header, check_header_text, check_html_links, join_url, one_line_subject, parse_recipient,
    Endpoints, Fill, HttpRequest, PrepareError, Prepared, RenderedPush,
};

/// The HTML body escapes its parameters.
pub const HTML_FIELDS: &[&str] = &["html"];

/// The rendered section: mailbox, addresses, subject, body, attachments
/// (their `path` rendered; the render then reads the file into
/// `content_base64`) and headers filled by `f`.
pub fn fill<F: Fill>(t: &GraphMailTarget, f: &mut F) -> Result<GraphMailTarget<String>, F::Error> {
    Ok(GraphMailTarget {
        user: f.opt("user", &t.user)?,
        from: f.opt("from", &t.from)?,
        to: f.list("to", &t.to)?,
        cc: f.list("cc", &t.cc)?,
        bcc: f.list("bcc", &t.bcc)?,
        reply_to: f.list("reply_to", &t.reply_to)?,
        subject: f.text("subject", &t.subject)?,
        text: f.opt("text", &t.text)?,
        html: f.opt("html", &t.html)?,
        attachments: t
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let at = format!("attachments[{i}]");
                Ok(AttachmentSpec {
                    name: f.text(&format!("{at}.name"), &a.name)?,
                    content_type: f.opt(&format!("{at}.content_type"), &a.content_type)?,
                    path: f.opt(&format!("{at}.path"), &a.path)?,
                    content_base64: f.opt(&format!("{at}.content_base64"), &a.content_base64)?,
                })
            })
            .collect::<Result<_, _>>()?,
        headers: f.map("headers", &t.headers)?,
        account: t.account.clone(),
        save_to_sent_items: t.save_to_sent_items,
        base_url: t.base_url.clone(),
    })
}

/// The account whose token authorises `sendMail`.
pub fn accounts(t: &GraphMailTarget, _used: &BTreeSet<String>) -> BTreeSet<String> {
    BTreeSet::from([t.account.clone()])
}

/// One slot per account, at most 4 in flight: Microsoft allows 4
/// concurrent requests per mailbox.
pub fn slot(t: &GraphMailTarget, per_target: usize) -> (String, usize) {
    (format!("graph:{}", t.account), 4.min(per_target))
}

/// [`prepare`] for the registry.
pub fn build(
    t: &GraphMailTarget<String>,
    push: &RenderedPush,
    endpoints: &Endpoints,
) -> Result<Prepared, PrepareError> {
    prepare(t, push, endpoints).map(Prepared::Http)
}

/// [`classify`] for the registry.
pub fn classify_http(
    _t: &GraphMailTarget<String>,
    _uses_token: bool,
    response: &Response,
    retry_after_cap: Duration,
) -> Outcome {
    classify(response, retry_after_cap)
}

/// Graph refuses a `sendMail` request over about 4 MB.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Inline attachments over 3 MB need an upload session.
pub const MAX_INLINE_ATTACHMENT_BYTES: usize = 3 * 1024 * 1024;

/// Why an attachment file is not attached. Messages name the rule and the
/// folder, never the file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// The rendered path is empty.
    #[error("the path rendered empty")]
    Empty,
    /// The rendered path is absolute or leaves its folder (`..`, or a
    /// symbolic link pointing outside).
    #[error("the path leaves `{folder}`: attachments are read only from inside the folder the push's fixed path names (the push file's folder when the path starts with a parameter); `..`, absolute paths and symbolic links pointing outside are refused")]
    Outside {
        /// The folder it must stay in, as written relative to the push file.
        folder: String,
    },
    /// The file is a definitions file (`.yaml`, `.yml`) or hidden (a name
    /// starting with `.` on its way): never sent as an attachment.
    #[error("definitions files (.yaml, .yml) and hidden files or folders (.env, .git/…) are never attached")]
    NotAttachable,
    /// The file is missing, unreadable or not a regular file.
    #[error("{0}")]
    Io(String),
    /// The file is a `${file:…}` secret of the folder's pushes or
    /// accounts: an event value must not be able to pick it.
    #[error(
        "the file is referenced as a `${{file:…}}` secret in the folder and is never attached"
    )]
    Secret,
    /// The file is over Graph's inline limit.
    #[error("the file is over {MAX_INLINE_ATTACHMENT_BYTES} bytes, Graph's limit for an inline attachment")]
    TooLarge,
}

/// The folder an attachment path is confined to: the fixed directory part
/// of the path as written (`files/` in `files/<< event.doc >>`), relative to
/// the push file's folder. Everything after the first parameter, statement
/// or secret reference is decided at render time and must stay inside it.
pub fn fixed_folder(source: &str) -> &str {
    let cut = [
        crate::template::VARIABLE_START,
        crate::template::BLOCK_START,
        crate::template::COMMENT_START,
        "${",
    ]
    .iter()
    .filter_map(|d| source.find(d))
    .min()
    .unwrap_or(source.len());
    let fixed = source[..cut].trim_start();
    match fixed.rfind('/') {
        Some(i) => &fixed[..=i],
        None => "",
    }
}

/// Reads an attachment whose path rendered to `rendered`, written as
/// `source` in the push file in `push_dir`. The file must resolve (symbolic
/// links followed) to a regular file inside [`fixed_folder`] of `source`,
/// and be at most [`MAX_INLINE_ATTACHMENT_BYTES`]; a file in `secrets`
/// (canonical paths, see `pipeline::render::secret_files`) is refused.
pub fn read_attachment(
    push_dir: &std::path::Path,
    source: &str,
    rendered: &str,
    secrets: &[std::path::PathBuf],
) -> Result<Vec<u8>, AttachmentError> {
    use std::io::Read as _;
    let rendered = rendered.trim();
    if rendered.is_empty() {
        return Err(AttachmentError::Empty);
    }
    let folder_text = fixed_folder(source);
    let outside = || AttachmentError::Outside {
        folder: if folder_text.is_empty() {
            "./".to_owned()
        } else {
            folder_text.to_owned()
        },
    };
    if std::path::Path::new(rendered).is_absolute() || rendered.contains('\0') {
        return Err(outside());
    }
    let io = |e: std::io::Error| AttachmentError::Io(e.kind().to_string());
    let root = push_dir.join(folder_text).canonicalize().map_err(io)?;
    let full = push_dir.join(rendered);
    // Refuse a climb even when it comes back (`files/../files/x`): the
    // lexical check needs no file system; the canonical one catches links.
    let climbs = std::path::Path::new(rendered)
        .strip_prefix(folder_text)
        .map_or(true, |rest| {
            rest.components().any(|c| {
                !matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
        });
    if climbs {
        return Err(outside());
    }
    let resolved = full.canonicalize().map_err(io)?;
    if !resolved.starts_with(&root) {
        return Err(outside());
    }
    // Inside the folder, but no attachment: a definitions file (accounts
    // hold client ids, token URLs, perhaps a secret) or a hidden file or
    // folder (`.env`, `.git`), which an event value could otherwise pick
    // when the path starts with a parameter.
    let inner = resolved.strip_prefix(&root).unwrap_or(&resolved);
    let hidden = inner
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    let definitions = resolved
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    if hidden || definitions {
        return Err(AttachmentError::NotAttachable);
    }
    if secrets.contains(&resolved) {
        return Err(AttachmentError::Secret);
    }
    let file = std::fs::File::open(&resolved).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(AttachmentError::Io("not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_INLINE_ATTACHMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > MAX_INLINE_ATTACHMENT_BYTES {
        return Err(AttachmentError::TooLarge);
    }
    Ok(bytes)
}

/// Builds the `sendMail` request.
pub fn prepare(
    t: &GraphMailTarget<String>,
    push: &RenderedPush,
    endpoints: &Endpoints,
) -> Result<HttpRequest, PrepareError> {
    let token = push.token(&t.account)?;
    let base = t.base_url.as_deref().unwrap_or(&endpoints.graph);
    let path = match t
        .user
        .as_ref()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        // A path segment of its own: `.` or `..` would climb out of `/users/`
        // (URL parsers resolve them even encoded); `/` and the rest are encoded.
        Some("." | "..") => {
            return Err(PrepareError::InvalidField {
                field: "graph_mail.user".into(),
                reason: "a mailbox cannot be `.` or `..` (expected a user id or address)".into(),
            })
        }
        Some(user) => format!(
            "v1.0/users/{}/sendMail",
            url::form_urlencoded::byte_serialize(user.as_bytes()).collect::<String>()
        ),
        None => "v1.0/me/sendMail".to_owned(),
    };

    let subject = one_line_subject("graph_mail.subject", &t.subject)?;
    let mut message = Map::new();
    message.insert("subject".into(), Value::String(subject));
    let (content_type, content) = match (&t.html, &t.text) {
        (Some(html), _) => ("HTML", html),
        (None, Some(text)) => ("Text", text),
        (None, None) => {
            return Err(PrepareError::InvalidField {
                field: "graph_mail".into(),
                reason: "a mail needs `text` or `html`".into(),
            })
        }
    };
    if content_type == "HTML" {
        check_html_links("graph_mail.html", content)?;
    }
    message.insert(
        "body".into(),
        json!({ "contentType": content_type, "content": content }),
    );
    for (field, key, list) in [
        ("to", "toRecipients", &t.to),
        ("cc", "ccRecipients", &t.cc),
        ("bcc", "bccRecipients", &t.bcc),
        ("reply_to", "replyTo", &t.reply_to),
    ] {
        let recipients = recipients(field, list)?;
        if !recipients.is_empty() {
            message.insert(key.into(), Value::Array(recipients));
        }
    }
    if message.get("toRecipients").is_none()
        && message.get("ccRecipients").is_none()
        && message.get("bccRecipients").is_none()
    {
        return Err(PrepareError::InvalidField {
            field: "graph_mail.to".into(),
            reason: "every recipient rendered empty: a mail needs at least one".into(),
        });
    }
    if let Some(from) = t.from.as_ref().filter(|f| !f.trim().is_empty()) {
        message.insert("from".into(), email_address("graph_mail.from", from)?);
    }
    if !t.headers.is_empty() {
        let mut headers = Vec::new();
        for (name, value) in &t.headers {
            check_header(&format!("graph_mail.headers.{name}"), name, value)?;
            headers.push(json!({ "name": name, "value": value }));
        }
        message.insert("internetMessageHeaders".into(), Value::Array(headers));
    }
    if !t.attachments.is_empty() {
        let mut attachments = Vec::new();
        for (i, a) in t.attachments.iter().enumerate() {
            let field = format!("graph_mail.attachments[{i}]");
            // Both end up in the MIME headers Exchange writes for the part.
            check_header_text(&format!("{field}.name"), &a.name)?;
            if let Some(ct) = &a.content_type {
                check_header_text(&format!("{field}.content_type"), ct)?;
            }
            let b64 = a
                .content_base64
                .as_ref()
                .map(|c| c.trim())
                .unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| PrepareError::InvalidField {
                    field: format!("{field}.content_base64"),
                    reason: format!("not valid base64: {e}"),
                })?;
            if decoded.len() > MAX_INLINE_ATTACHMENT_BYTES {
                return Err(PrepareError::InvalidField {
                    field,
                    reason: format!(
                        "attachment is {} bytes; Graph takes at most {MAX_INLINE_ATTACHMENT_BYTES} bytes inline, larger files need an upload session, which pushwerk does not build: link to the file instead",
                        decoded.len()
                    ),
                });
            }
            attachments.push(json!({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": a.name,
                "contentType": a.content_type.as_deref().unwrap_or("application/octet-stream"),
                "contentBytes": b64,
            }));
        }
        message.insert("attachments".into(), Value::Array(attachments));
    }
    let mut body = Map::new();
    body.insert("message".into(), Value::Object(message));
    if let Some(save) = t.save_to_sent_items {
        body.insert("saveToSentItems".into(), Value::Bool(save));
    }
    let body = serde_json::to_vec(&Value::Object(body)).expect("JSON values serialise");
    if body.len() > MAX_REQUEST_BYTES {
        return Err(PrepareError::TooLarge {
            size: body.len(),
            limit: MAX_REQUEST_BYTES,
            service: "Microsoft Graph sendMail",
        });
    }
    Ok(super::graph::json_post(join_url(base, &path), token, body))
}

fn recipients(field: &str, list: &[String]) -> Result<Vec<Value>, PrepareError> {
    list.iter()
        .enumerate()
        // A recipient that rendered empty (an optional event field) is left out.
        .filter(|(_, r)| !r.trim().is_empty())
        .map(|(i, r)| email_address(&format!("graph_mail.{field}[{i}]"), r))
        .collect()
}

fn email_address(field: &str, text: &str) -> Result<Value, PrepareError> {
    let (name, address) = parse_recipient(field, text)?;
    let mut inner = Map::new();
    inner.insert("address".into(), Value::String(address));
    if let Some(name) = name {
        inner.insert("name".into(), Value::String(name));
    }
    Ok(json!({ "emailAddress": inner }))
}

/// What Graph's answer to `sendMail` means (reference §2.3–§2.7).
pub fn classify(response: &Response, retry_after_cap: Duration) -> Outcome {
    match response.status {
        202 | 200 => Outcome::Delivered {
            status: response.status,
            reference: super::graph::request_id(response),
        },
        _ => super::graph::classify_failure(response, retry_after_cap, "the mail may have been sent"),
    }
}
