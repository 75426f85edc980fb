//! Load-time checks of an `smtp:` section.

use super::{SmtpTarget, SmtpTls};
use crate::targets::CheckCx;

/// Recipients, a body, the host, and one way to log in.
pub fn check(t: &SmtpTarget, cx: &mut CheckCx<'_>) {
    if t.to.is_empty() && t.cc.is_empty() && t.bcc.is_empty() {
        cx.error(
            "smtp",
            "a mail needs at least one recipient in `to`, `cc` or `bcc`",
        );
    }
    if t.text.is_none() && t.html.is_none() {
        cx.error("smtp", "a mail needs a body: `text`, `html` or both");
    }
    if let Some(html) = &t.html {
        cx.html_body("smtp.html", &html.0);
    }
    if t.host.trim().is_empty() || t.host.contains(['/', ' ', ':']) {
        cx.error(
            "smtp.host",
            "`host` is a host name such as `smtp.office365.com` (the port goes in `port`)",
        );
    }
    if let Some(auth) = &t.auth {
        match (&auth.password, &auth.account) {
            (Some(_), None) => {}
            (None, Some(account)) => cx.use_account("smtp.auth.account", account),
            _ => cx.error(
                "smtp.auth",
                "give exactly one of `password` or `account` (XOAUTH2)",
            ),
        }
        if t.tls == SmtpTls::None {
            cx.warning(
                "smtp.tls",
                "credentials over an unencrypted connection: only for a relay on this host",
            );
        }
    }
}
