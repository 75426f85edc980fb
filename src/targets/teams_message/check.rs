//! Load-time checks of a `teams_message:` section.

use super::TeamsMessageTarget;
use crate::targets::CheckCx;

/// Account, one destination (a channel or a chat), one body, base URL.
pub fn check(t: &TeamsMessageTarget, cx: &mut CheckCx<'_>) {
    cx.use_account("teams_message.account", &t.account);
    match (&t.team, &t.channel, &t.chat) {
        (Some(_), Some(_), None) | (None, None, Some(_)) => {}
        (None, None, None) => cx.error(
            "teams_message",
            "a Teams message needs a destination: `team` and `channel`, or `chat`",
        ),
        (_, _, Some(_)) => cx.error_at_key(
            "teams_message.chat",
            "give `team` and `channel` (a channel message) or `chat` (a chat message), not both",
        ),
        (Some(_), None, None) => cx.error(
            "teams_message",
            "`team` needs `channel`: the channel's id, e.g. `19:…@thread.tacv2`",
        ),
        (None, Some(_), None) => cx.error(
            "teams_message",
            "`channel` needs `team`: the id of the team the channel belongs to",
        ),
    }
    if t.subject.is_some() && t.chat.is_some() {
        cx.error_at_key(
            "teams_message.subject",
            "`subject` applies to channel messages only; a chat message has none",
        );
    }
    match (&t.text, &t.html) {
        (Some(_), Some(_)) => cx.error_at_key(
            "teams_message.html",
            "a Teams message has one body: give `text` or `html`, not both",
        ),
        (None, None) => cx.error(
            "teams_message",
            "a Teams message needs a body: `text` or `html`",
        ),
        _ => {}
    }
    // An id copied from a Teams link ("Get link to channel") is
    // URL-encoded (`19%3a…%40thread.tacv2`): encoded once more in the
    // path, Graph answers 404 and the push never works.
    for (key, id) in [("team", &t.team), ("channel", &t.channel), ("chat", &t.chat)] {
        let Some(id) = id.as_ref().map(|v| v.as_str()) else {
            continue;
        };
        if !crate::template::is_template(id) && looks_url_encoded(id) {
            cx.warning(
                &format!("teams_message.{key}"),
                format!("`{key}` looks URL-encoded (copied from a Teams link?): write the id decoded, e.g. `19:…@thread.tacv2` for `19%3a…%40thread.tacv2`; pushwerk encodes it in the path, so `%` is sent as `%25` and Graph answers 404"),
            );
        }
    }
    if let Some(html) = &t.html {
        cx.html_body("teams_message.html", &html.0);
    }
    if let Some(base) = &t.base_url {
        cx.url("teams_message.base_url", base);
    }
}

/// Whether `id` holds a `%XX` escape (`%3a`, `%40`): a real Teams id never does.
fn looks_url_encoded(id: &str) -> bool {
    id.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}
