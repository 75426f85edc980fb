//! Printing a prepared request the way a person or a script wants it: as
//! HTTP text, as JSON `{"method","url","headers","body"}`, or as a curl
//! command that sends the same bytes.

use serde_json::{json, Value};

use crate::config::SmtpTls;
use crate::targets::{HttpRequest, Prepared, SmtpLogin, SmtpMail};

/// Output formats of dry-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The request as HTTP/1.1 text (or the SMTP dialogue's essentials).
    Text,
    /// One JSON object.
    Json,
    /// A curl command line (HTTP targets only).
    Curl,
}

/// Formats `prepared` in `format`.
pub fn format(prepared: &Prepared, format: Format) -> String {
    match (prepared, format) {
        (Prepared::Http(r), Format::Text) => http_text(r),
        (Prepared::Http(r), Format::Json) => pretty(&http_json(r)),
        (Prepared::Http(r), Format::Curl) => curl(r),
        (Prepared::Smtp(m), Format::Json) => pretty(&smtp_json(m)),
        (Prepared::Smtp(m), _) => smtp_text(m),
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON values serialise");
    s.push('\n');
    s
}

fn body_text(r: &HttpRequest) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `POST url`, the headers, a blank line and the exact body.
pub fn http_text(r: &HttpRequest) -> String {
    let mut out = format!("{} {}\n", r.method, r.url);
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\n"));
    }
    if !r.body.is_empty() {
        out.push('\n');
        out.push_str(&body_text(r));
        out.push('\n');
    }
    out
}

/// The request as JSON; a JSON body is embedded as a value, others as text.
pub fn http_json(r: &HttpRequest) -> Value {
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let is_json = r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"));
    let body = if r.body.is_empty() {
        Value::Null
    } else if is_json {
        serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(body_text(r)))
    } else {
        Value::String(body_text(r))
    };
    json!({ "method": r.method, "url": r.url, "headers": headers, "body": body })
}

/// Quotes `s` for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r#"'\''"#))
}

/// A curl command that sends the same request.
pub fn curl(r: &HttpRequest) -> String {
    let mut out = format!("curl -X {} {}", r.method, sh(&r.url));
    for (k, v) in &r.headers {
        out.push_str(&format!(" \\\n  -H {}", sh(&format!("{k}: {v}"))));
    }
    if !r.body.is_empty() {
        out.push_str(&format!(" \\\n  --data-binary {}", sh(&body_text(r))));
    }
    out.push('\n');
    out
}

fn tls_name(tls: SmtpTls) -> &'static str {
    match tls {
        SmtpTls::Starttls => "starttls",
        SmtpTls::Tls => "tls",
        SmtpTls::None => "none",
    }
}

fn login_line(m: &SmtpMail) -> String {
    match &m.login {
        None => "no AUTH".to_owned(),
        Some(SmtpLogin::Password { username, password }) => {
            format!("AUTH PLAIN as {username} with {password}")
        }
        Some(SmtpLogin::Xoauth2 {
            username, token, ..
        }) => format!("AUTH XOAUTH2 as {username} with {token}"),
    }
}

/// Server, login, envelope and the message after `DATA`.
pub fn smtp_text(m: &SmtpMail) -> String {
    let mut out = format!(
        "SMTP {}:{} ({})\n{}\n",
        m.host,
        m.port,
        tls_name(m.tls),
        login_line(m)
    );
    out.push_str(&format!("MAIL FROM:<{}>\n", m.envelope_from));
    for to in &m.envelope_to {
        out.push_str(&format!("RCPT TO:<{to}>\n"));
    }
    out.push_str("DATA\n");
    out.push_str(&String::from_utf8_lossy(&m.message));
    if !m.message.ends_with(b"\n") {
        out.push('\n');
    }
    out.push_str(".\n");
    out
}

/// The mail as JSON.
pub fn smtp_json(m: &SmtpMail) -> Value {
    let auth = match &m.login {
        None => Value::Null,
        Some(SmtpLogin::Password { username, password }) => {
            json!({ "mechanism": "PLAIN", "username": username, "password": password })
        }
        Some(SmtpLogin::Xoauth2 {
            username,
            account,
            token,
        }) => {
            json!({ "mechanism": "XOAUTH2", "username": username, "account": account, "token": token })
        }
    };
    json!({
        "smtp": { "host": m.host, "port": m.port, "tls": tls_name(m.tls), "auth": auth },
        "envelope": { "from": m.envelope_from, "to": m.envelope_to },
        "message": String::from_utf8_lossy(&m.message),
    })
}
