//! SMTP: the envelope and the RFC 5322 message, formatted by lettre's
//! builder — the same bytes the SMTP transport sends after `DATA`.

use std::time::SystemTime;

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::Message;

mod check;
pub mod spec;

use std::collections::BTreeSet;
use std::time::Duration;

pub use check::check;
pub use spec::{SmtpAuth, SmtpTarget, SmtpTls};

use super::outcome::{Outcome, Response, RetryDelay};
use super::{
    check_html_links, one_line_subject, parse_recipient, Endpoints, Fill, PrepareError, Prepared,
    RenderedPush, SmtpLogin, SmtpMail,
};

/// The HTML body escapes its parameters.
pub const HTML_FIELDS: &[&str] = &["html"];

/// The rendered section: login, addresses, subject and bodies filled by `f`.
pub fn fill<F: Fill>(t: &SmtpTarget, f: &mut F) -> Result<SmtpTarget<String>, F::Error> {
    Ok(SmtpTarget {
        auth: match &t.auth {
            Some(auth) => Some(SmtpAuth {
                username: f.text("auth.username", &auth.username)?,
                password: f.opt("auth.password", &auth.password)?,
                account: auth.account.clone(),
            }),
            None => None,
        },
        from: f.text("from", &t.from)?,
        to: f.list("to", &t.to)?,
        cc: f.list("cc", &t.cc)?,
        bcc: f.list("bcc", &t.bcc)?,
        reply_to: f.list("reply_to", &t.reply_to)?,
        subject: f.text("subject", &t.subject)?,
        text: f.opt("text", &t.text)?,
        html: f.opt("html", &t.html)?,
        host: t.host.clone(),
        port: t.port,
        tls: t.tls,
        timeout: t.timeout,
    })
}

/// The XOAUTH2 account, if the server is logged into with a token.
pub fn accounts(t: &SmtpTarget, _used: &BTreeSet<String>) -> BTreeSet<String> {
    t.auth.iter().filter_map(|a| a.account.clone()).collect()
}

/// One slot per server.
pub fn slot(t: &SmtpTarget, per_target: usize) -> (String, usize) {
    (format!("smtp:{}", t.host), per_target)
}

/// [`prepare`] for the registry.
pub fn build(
    t: &SmtpTarget<String>,
    push: &RenderedPush,
    _endpoints: &Endpoints,
) -> Result<Prepared, PrepareError> {
    prepare(t, push).map(Prepared::Smtp)
}

/// SMTP answers are replies inside the session, classified there by
/// [`classify_reply`]; an SMTP target never gets an HTTP answer.
pub fn classify_http(
    _t: &SmtpTarget<String>,
    _uses_token: bool,
    response: &Response,
    _retry_after_cap: Duration,
) -> Outcome {
    Outcome::Failed {
        status: Some(response.status),
        code: Some("internal".to_owned()),
        message: "an SMTP target got an HTTP answer".to_owned(),
        items: Vec::new(),
        reference: None,
    }
}

/// Builds the mail.
pub fn prepare(t: &SmtpTarget<String>, push: &RenderedPush) -> Result<SmtpMail, PrepareError> {
    let from = mailbox("smtp.from", &t.from)?;
    let subject = one_line_subject("smtp.subject", &t.subject)?;
    if let Some(html) = &t.html {
        check_html_links("smtp.html", html)?;
    }
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(subject)
        .date(SystemTime::from(push.now))
        .message_id(Some(format!("<{}@pushwerk>", push.idempotency_key)));
    let mut envelope_to = Vec::new();
    let mut any = false;
    for (field, list) in [
        ("to", &t.to),
        ("cc", &t.cc),
        ("bcc", &t.bcc),
        ("reply_to", &t.reply_to),
    ] {
        for mb in mailboxes(field, list)? {
            if field != "reply_to" {
                envelope_to.push(mb.email.to_string());
                any = true;
            }
            builder = match field {
                "to" => builder.to(mb),
                "cc" => builder.cc(mb),
                "bcc" => builder.bcc(mb),
                _ => builder.reply_to(mb),
            };
        }
    }
    if !any {
        return Err(PrepareError::InvalidField {
            field: "smtp.to".into(),
            reason: "every recipient rendered empty: a mail needs at least one".into(),
        });
    }
    let message = match (&t.text, &t.html) {
        (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        )),
        (Some(text), None) => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text.clone()),
        ),
        (None, Some(html)) => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html.clone()),
        ),
        (None, None) => {
            return Err(PrepareError::InvalidField {
                field: "smtp".into(),
                reason: "a mail needs `text` or `html`".into(),
            })
        }
    }
    .map_err(|e| PrepareError::InvalidField {
        field: "smtp".into(),
        reason: format!("cannot build the message: {e}"),
    })?;
    // `Message::formatted` keeps Bcc out of the headers; bcc stays in the envelope.
    let login = match &t.auth {
        None => None,
        Some(auth) => Some(match (&auth.account, &auth.password) {
            (Some(account), _) => SmtpLogin::Xoauth2 {
                username: auth.username.trim().to_owned(),
                account: account.clone(),
                token: push.token(account)?.to_owned(),
            },
            (None, password) => SmtpLogin::Password {
                username: auth.username.trim().to_owned(),
                password: password.clone().unwrap_or_default(),
            },
        }),
    };
    let port = t.port.unwrap_or(match t.tls {
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    });
    Ok(SmtpMail {
        host: t.host.clone(),
        port,
        tls: t.tls,
        login,
        envelope_from: from.email.to_string(),
        envelope_to,
        message: message.formatted(),
    })
}

fn mailbox(field: &str, text: &str) -> Result<Mailbox, PrepareError> {
    let (name, address) = parse_recipient(field, text)?;
    let address = address.parse().map_err(|e| PrepareError::InvalidField {
        field: field.to_owned(),
        reason: format!("{address:?} is not an e-mail address: {e}"),
    })?;
    Ok(Mailbox::new(name, address))
}

fn mailboxes(field: &str, list: &[String]) -> Result<Vec<Mailbox>, PrepareError> {
    list.iter()
        .enumerate()
        .filter(|(_, r)| !r.trim().is_empty())
        .map(|(i, r)| mailbox(&format!("smtp.{field}[{i}]"), r))
        .collect()
}

/// What an SMTP reply means: 2xx delivered, 4xx retry, 5xx failed, and an
/// authentication refusal (535) with XOAUTH2 one refresh and retry.
pub fn classify_reply(code: u16, text: &str, xoauth2: bool) -> Outcome {
    let text = text.chars().take(300).collect::<String>();
    match code {
        200..=299 => Outcome::Delivered {
            status: code,
            reference: text.split_whitespace().last().map(str::to_owned),
        },
        535 | 334 if xoauth2 => Outcome::RefreshAndRetry {
            status: code,
            reason: format!("{code} {text}"),
            reference: None,
        },
        400..=499 => Outcome::Retry {
            delay: RetryDelay::Backoff,
            status: Some(code),
            reason: format!("{code} {text}"),
            reference: None,
        },
        _ => Outcome::Failed {
            status: Some(code),
            code: Some(code.to_string()),
            message: text,
            items: Vec::new(),
            reference: None,
        },
    }
}
