//! Microsoft Teams messages through Microsoft Graph: a message to a channel
//! or to a chat, with the same OAuth accounts as `graph_mail`.
//!
//! ## What Graph expects (Microsoft's "Send chatMessage in a channel or a chat")
//!
//! - Channel: `POST {graph}/v1.0/teams/{team-id}/channels/{channel-id}/messages`;
//!   chat: `POST {graph}/v1.0/chats/{chat-id}/messages`. Team ids are GUIDs,
//!   channel ids look like `19:…@thread.tacv2`, chat ids `19:…@thread.v2`
//!   or `19:…@unq.gbl.spaces` (`:` and `@` are legal in a path segment and
//!   sent as they are; anything else outside the unreserved set is encoded).
//! - Permissions: delegated `ChannelMessage.Send` (channel) or
//!   `ChatMessage.Send` (chat). Application permissions are for migration
//!   only, so the account signs in as a user, like `graph_mail`'s `/me`.
//! - Body: a `chatMessage` with `body: { contentType: "text" | "html",
//!   content }`; a channel message may have a `subject`; `importance` is
//!   `normal`, `high` or `urgent`.
//! - Answer: `201 Created` with the created `chatMessage` (its `id`,
//!   `createdDateTime`, `webUrl`, …); the `id` is the delivery's reference.
//! - Errors: Graph's usual `{ "error": { "code", "message" } }`. 429 and
//!   503/504 carry `Retry-After`; 401 means the token was refused (one
//!   refresh, one retry); 403 (`Forbidden`: no permission, not a member)
//!   fails with Graph's code and message. Microsoft limits the API to
//!   about 10 messages per 10 s per app and user, so 429s are expected in
//!   bursts. Another 5xx leaves the outcome unknown (the message may have
//!   been posted), so it fails rather than being posted twice.
//! - Size: Teams refuses messages over about 28 KB.

mod check;
pub mod spec;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Map, Value};

pub use check::check;
pub use spec::{Importance, TeamsMessageTarget};

use super::outcome::{Outcome, Response};
use super::{
    check_html_links, join_url, one_line_subject, Endpoints, Fill, HttpRequest, PrepareError,
    Prepared, RenderedPush,
};

/// The HTML body escapes its parameters.
pub const HTML_FIELDS: &[&str] = &["html"];

/// The rendered section: the ids, the subject and the body filled by `f`.
pub fn fill<F: Fill>(
    t: &TeamsMessageTarget,
    f: &mut F,
) -> Result<TeamsMessageTarget<String>, F::Error> {
    Ok(TeamsMessageTarget {
        team: f.opt("team", &t.team)?,
        channel: f.opt("channel", &t.channel)?,
        chat: f.opt("chat", &t.chat)?,
        subject: f.opt("subject", &t.subject)?,
        text: f.opt("text", &t.text)?,
        html: f.opt("html", &t.html)?,
        account: t.account.clone(),
        importance: t.importance,
        base_url: t.base_url.clone(),
    })
}

/// Teams refuses a message over about 28 KB.
pub const MAX_REQUEST_BYTES: usize = 28 * 1024;

/// The account whose token authorises the post.
pub fn accounts(t: &TeamsMessageTarget, _used: &BTreeSet<String>) -> BTreeSet<String> {
    BTreeSet::from([t.account.clone()])
}

/// One slot per account (Graph throttles messages per app and user).
pub fn slot(t: &TeamsMessageTarget, per_target: usize) -> (String, usize) {
    (format!("teams:{}", t.account), per_target)
}

/// [`prepare`] for the registry.
pub fn build(
    t: &TeamsMessageTarget<String>,
    push: &RenderedPush,
    endpoints: &Endpoints,
) -> Result<Prepared, PrepareError> {
    prepare(t, push, endpoints).map(Prepared::Http)
}

/// [`classify`] for the registry.
pub fn classify_http(
    _t: &TeamsMessageTarget<String>,
    _uses_token: bool,
    response: &Response,
    retry_after_cap: Duration,
) -> Outcome {
    classify(response, retry_after_cap)
}

fn invalid(field: &str, reason: impl Into<String>) -> PrepareError {
    PrepareError::InvalidField {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// One path segment from a rendered id: trimmed, not empty, not `.` or
/// `..`, every byte outside the unreserved set, `:` and `@` encoded.
fn segment(field: &str, value: Option<&str>) -> Result<String, PrepareError> {
    let v = value.map(str::trim).unwrap_or_default();
    match v {
        "" => Err(invalid(field, "rendered empty (expected an id)")),
        "." | ".." => Err(invalid(field, "an id cannot be `.` or `..`")),
        _ => Ok(v
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()),
    }
}

/// Builds the `POST …/messages` request.
pub fn prepare(
    t: &TeamsMessageTarget<String>,
    push: &RenderedPush,
    endpoints: &Endpoints,
) -> Result<HttpRequest, PrepareError> {
    let token = push.token(&t.account)?;
    let base = t.base_url.as_deref().unwrap_or(&endpoints.graph);
    let path = match (t.chat.as_deref(), t.team.as_deref(), t.channel.as_deref()) {
        (Some(chat), None, None) => {
            format!(
                "v1.0/chats/{}/messages",
                segment("teams_message.chat", Some(chat))?
            )
        }
        (None, team, channel) => format!(
            "v1.0/teams/{}/channels/{}/messages",
            segment("teams_message.team", team)?,
            segment("teams_message.channel", channel)?
        ),
        _ => {
            return Err(invalid(
                "teams_message",
                "give `team` and `channel`, or `chat`",
            ))
        }
    };
    let (content_type, content) = match (&t.html, &t.text) {
        (Some(html), _) => ("html", html.as_str()),
        (None, Some(text)) => ("text", text.as_str()),
        (None, None) => return Err(invalid("teams_message", "a message needs `text` or `html`")),
    };
    if content_type == "html" {
        check_html_links("teams_message.html", content)?;
    }
    if content.trim().is_empty() {
        return Err(invalid(
            &format!("teams_message.{content_type}"),
            "the message rendered empty",
        ));
    }
    let mut message = Map::new();
    if let Some(subject) = t.subject.as_ref().filter(|s| !s.trim().is_empty()) {
        if t.chat.is_some() {
            return Err(invalid(
                "teams_message.subject",
                "chat messages have no subject",
            ));
        }
        message.insert(
            "subject".into(),
            Value::String(one_line_subject("teams_message.subject", subject)?),
        );
    }
    message.insert(
        "body".into(),
        json!({ "contentType": content_type, "content": content }),
    );
    if let Some(importance) = t.importance {
        message.insert(
            "importance".into(),
            Value::String(importance.as_str().into()),
        );
    }
    let body = serde_json::to_vec(&Value::Object(message)).expect("JSON values serialise");
    if body.len() > MAX_REQUEST_BYTES {
        return Err(PrepareError::TooLarge {
            size: body.len(),
            limit: MAX_REQUEST_BYTES,
            service: "Microsoft Teams",
        });
    }
    Ok(super::graph::json_post(join_url(base, &path), token, body))
}

#[derive(serde::Deserialize)]
struct Created {
    id: String,
}

/// What Graph's answer to a message post means: 201 delivered (the
/// message's `id` is the reference); 429, 503 and 504 retried
/// (`Retry-After` honoured, capped); 401 one refresh and retry; anything
/// else (another 5xx: outcome unknown) failed with Graph's code and message.
pub fn classify(response: &Response, retry_after_cap: Duration) -> Outcome {
    let status = response.status;
    if status == 201 || status == 200 {
        let id = serde_json::from_slice::<Created>(&response.body)
            .ok()
            .map(|c| c.id)
            .filter(|id| !id.is_empty() && !id.chars().any(char::is_control));
        return Outcome::Delivered {
            status,
            reference: id.or_else(|| super::graph::request_id(response)),
        };
    }
    super::graph::classify_failure(response, retry_after_cap, "the message may have been posted")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::RetryDelay;
    use crate::targets::{SecretMode, TargetSpec};

    fn target() -> TeamsMessageTarget<String> {
        TeamsMessageTarget {
            account: "ms_teams".into(),
            team: Some("fbe2bf47-16c8-47cf-b4a5-4b9b187c508b".into()),
            channel: Some("19:4a95f7d8db4c4e7fae857bcebe0623e6@thread.tacv2".into()),
            chat: None,
            subject: Some("Missed call".into()),
            text: None,
            html: Some("<p>Call from <b>+49 30 1234</b></p>".into()),
            importance: Some(Importance::High),
            base_url: None,
        }
    }

    fn rendered(t: TeamsMessageTarget<String>) -> RenderedPush {
        RenderedPush::new(
            "teams".into(),
            TargetSpec::TeamsMessage(t),
            [("ms_teams".to_owned(), "tok-123".to_owned())].into(),
            chrono::Utc::now(),
            "k".into(),
            SecretMode::Real,
        )
    }

    fn build(t: TeamsMessageTarget<String>) -> Result<HttpRequest, PrepareError> {
        let push = rendered(t.clone());
        let endpoints = Endpoints {
            graph: "https://graph.test/".into(),
            ..Endpoints::default()
        };
        prepare(&t, &push, &endpoints)
    }

    #[test]
    fn a_channel_message_is_posted_to_the_channel_with_the_token() {
        let r = build(target()).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.url,
            "https://graph.test/v1.0/teams/fbe2bf47-16c8-47cf-b4a5-4b9b187c508b/channels/19:4a95f7d8db4c4e7fae857bcebe0623e6@thread.tacv2/messages"
        );
        assert_eq!(r.header("authorization"), Some("Bearer tok-123"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({
                "subject": "Missed call",
                "body": { "contentType": "html", "content": "<p>Call from <b>+49 30 1234</b></p>" },
                "importance": "high"
            })
        );
    }

    #[test]
    fn a_chat_message_has_a_text_body_and_no_subject() {
        let mut t = target();
        t.team = None;
        t.channel = None;
        t.subject = None;
        t.html = None;
        t.importance = None;
        t.chat = Some("19:meeting_abc@thread.v2".into());
        t.text = Some("Lead: 42".into());
        let r = build(t).unwrap();
        assert_eq!(
            r.url,
            "https://graph.test/v1.0/chats/19:meeting_abc@thread.v2/messages"
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({ "body": { "contentType": "text", "content": "Lead: 42" } })
        );
    }

    #[test]
    fn ids_cannot_leave_their_path_segment() {
        let mut t = target();
        t.channel = Some("../../me/chats?x=1#y".into());
        let r = build(t).unwrap();
        assert!(
            r.url
                .ends_with("/channels/..%2F..%2Fme%2Fchats%3Fx%3D1%23y/messages"),
            "{}",
            r.url
        );
        let mut t = target();
        t.team = Some("..".into());
        assert!(build(t).is_err());
        let mut t = target();
        t.channel = Some("  ".into());
        assert!(build(t).is_err());
    }

    #[test]
    fn script_links_and_oversized_messages_are_refused() {
        let mut t = target();
        t.html = Some(r#"<a href="javascript:alert(1)">x</a>"#.into());
        assert!(matches!(
            build(t),
            Err(PrepareError::InvalidField { field, .. }) if field == "teams_message.html"
        ));
        let mut t = target();
        t.html = Some("x".repeat(MAX_REQUEST_BYTES));
        assert!(matches!(build(t), Err(PrepareError::TooLarge { .. })));
        let mut t = target();
        t.subject = Some("a\u{0}b".into());
        assert!(build(t).is_err());
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Outcome {
        let response = Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        classify(&response, Duration::from_secs(600))
    }

    #[test]
    fn graph_answers_mean_what_graph_says() {
        assert_eq!(
            answer(
                201,
                &[("request-id", "r1")],
                r#"{"id":"1616990032035","messageType":"message"}"#
            ),
            Outcome::Delivered {
                status: 201,
                reference: Some("1616990032035".into())
            }
        );
        assert!(matches!(
            answer(429, &[("retry-after", "7")], r#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#),
            Outcome::Retry { delay: RetryDelay::After(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            answer(503, &[], "unavailable"),
            Outcome::Retry {
                delay: RetryDelay::Backoff,
                ..
            }
        ));
        assert!(matches!(
            answer(502, &[], "bad gateway"),
            Outcome::Failed { status: Some(502), ref message, .. } if message.contains("outcome is unknown")
        ));
        assert!(matches!(
            answer(
                401,
                &[],
                r#"{"error":{"code":"InvalidAuthenticationToken","message":"expired"}}"#
            ),
            Outcome::RefreshAndRetry { status: 401, .. }
        ));
        match answer(
            403,
            &[("request-id", "r9")],
            r#"{"error":{"code":"Forbidden","message":"Missing role permissions on the request."}}"#,
        ) {
            Outcome::Failed {
                status,
                code,
                message,
                reference,
                ..
            } => {
                assert_eq!(status, Some(403));
                assert_eq!(code.as_deref(), Some("Forbidden"));
                assert_eq!(message, "Missing role permissions on the request.");
                assert_eq!(reference.as_deref(), Some("r9"));
            }
            other => panic!("{other:?}"),
        }
    }
}
