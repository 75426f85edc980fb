//! Dispatchers: one file per target, each a pure `prepare` that turns a
//! rendered push into the exact request to send. Dry-run prints what
//! `prepare` returns; the daemon sends it. Nothing here does I/O.

pub mod bing_ads;
pub mod graph_mail;
pub mod http;
pub mod outcome;
pub mod smtp;

pub use outcome::{ItemError, Outcome, Response, RetryDelay};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::config::{BingAdsTarget, GraphMailTarget, HttpTarget, SmtpTarget, SmtpTls};

/// Base URLs of the Microsoft services: configuration, so that tests,
/// sandboxes and sovereign clouds can point elsewhere. A target's own
/// `base_url` wins over these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Microsoft Graph (`PUSHWERK_GRAPH_URL`).
    pub graph: String,
    /// Microsoft Advertising Campaign Management (`PUSHWERK_BING_ADS_URL`).
    pub bing_ads: String,
}

impl Default for Endpoints {
    /// The public production services.
    fn default() -> Self {
        Endpoints {
            graph: "https://graph.microsoft.com".to_owned(),
            bing_ads: "https://campaign.api.bingads.microsoft.com".to_owned(),
        }
    }
}

impl Endpoints {
    /// The defaults, overridden by `PUSHWERK_GRAPH_URL` / `PUSHWERK_BING_ADS_URL`.
    pub fn from_env(lookup: &crate::config::secret::EnvLookup) -> Endpoints {
        let d = Endpoints::default();
        Endpoints {
            graph: lookup("PUSHWERK_GRAPH_URL").unwrap_or(d.graph),
            bing_ads: lookup("PUSHWERK_BING_ADS_URL").unwrap_or(d.bing_ads),
        }
    }
}

/// A push's target with every template rendered.
#[derive(Debug, Clone)]
pub enum RenderedTarget {
    /// Rendered HTTP target.
    Http(HttpTarget),
    /// Rendered Graph mail.
    GraphMail(GraphMailTarget),
    /// Rendered Bing Ads conversion.
    BingAds(BingAdsTarget),
    /// Rendered SMTP mail.
    Smtp(SmtpTarget),
}

/// Everything `prepare` needs: the rendered target, the access tokens (or
/// their placeholders in a dry-run) and the delivery's identity.
#[derive(Debug, Clone)]
pub struct RenderedPush {
    /// The push's name.
    pub push: String,
    /// The rendered target.
    pub target: RenderedTarget,
    /// Access token (or placeholder) per account the push uses.
    pub tokens: BTreeMap<String, String>,
    /// Render time (mail `Date`).
    pub now: DateTime<Utc>,
    /// Stable per push and event: the same on every retry.
    pub idempotency_key: String,
}

impl RenderedPush {
    fn token(&self, account: &str) -> Result<&str, PrepareError> {
        self.tokens.get(account).map(String::as_str).ok_or_else(|| {
            MissingToken {
                account: account.to_owned(),
            }
            .into()
        })
    }
}

/// An HTTP request, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method, upper case.
    pub method: String,
    /// Full URL including the query.
    pub url: String,
    /// Headers in sending order.
    pub headers: Vec<(String, String)>,
    /// Body bytes (empty for none).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// The value of header `name` in `headers` (case-insensitive).
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// How an SMTP client logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpLogin {
    /// `AUTH PLAIN`/`LOGIN` with a password (or its placeholder).
    Password {
        /// Login name.
        username: String,
        /// The password.
        password: String,
    },
    /// `AUTH XOAUTH2` with an access token (or its placeholder).
    Xoauth2 {
        /// Login name (the mailbox).
        username: String,
        /// The account whose token is used.
        account: String,
        /// The access token.
        token: String,
    },
}

/// A mail ready for an SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpMail {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Connection security.
    pub tls: SmtpTls,
    /// Login, if any.
    pub login: Option<SmtpLogin>,
    /// `MAIL FROM` address.
    pub envelope_from: String,
    /// `RCPT TO` addresses (to, cc and bcc).
    pub envelope_to: Vec<String>,
    /// The RFC 5322 message as sent after `DATA`.
    pub message: Vec<u8>,
}

/// What a dispatcher produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// An HTTP request (http, graph_mail, bing_ads).
    Http(HttpRequest),
    /// An SMTP mail.
    Smtp(SmtpMail),
}

/// Why a rendered push cannot become a request. Messages never contain a
/// token or secret: only field names and the rendered non-secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// A rendered field has an unusable value.
    #[error("`{field}`: {reason}")]
    InvalidField {
        /// The field, e.g. `graph_mail.to[0]`.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The request is larger than the service accepts.
    #[error("request is {size} bytes, over the {limit}-byte limit of {service}")]
    TooLarge {
        /// Request size.
        size: usize,
        /// The limit.
        limit: usize,
        /// Which service sets it.
        service: &'static str,
    },
    /// No token (or placeholder) was given for an account.
    #[error(transparent)]
    MissingToken(#[from] MissingToken),
    /// A dispatcher (or a library it calls) panicked on this push's values:
    /// reported as a failed delivery instead of taking the worker down.
    #[error("cannot build the request from these values (internal error in the {0} dispatcher)")]
    Internal(&'static str),
}

/// No access token (nor a placeholder) at hand for an account a push uses.
///
/// One definition for the two places that can find a token missing:
/// rendering a push for sending, and preparing its request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no access token for OAuth account `{account}`")]
pub struct MissingToken {
    /// The account's name (never a token).
    pub account: String,
}

/// Builds the request for `push`.
///
/// Every value that reaches a header is checked before a library sees it,
/// but a panic in a dependency on some unforeseen value must still not take
/// a worker (and the target's in-flight slot) down: it becomes
/// [`PrepareError::Internal`], a failed delivery.
pub fn prepare(push: &RenderedPush, endpoints: &Endpoints) -> Result<Prepared, PrepareError> {
    let kind = match &push.target {
        RenderedTarget::Http(_) => "http",
        RenderedTarget::GraphMail(_) => "graph_mail",
        RenderedTarget::BingAds(_) => "bing_ads",
        RenderedTarget::Smtp(_) => "smtp",
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        prepare_inner(push, endpoints)
    }))
    .unwrap_or(Err(PrepareError::Internal(kind)))
}

fn prepare_inner(push: &RenderedPush, endpoints: &Endpoints) -> Result<Prepared, PrepareError> {
    match &push.target {
        RenderedTarget::Http(t) => http::prepare(t, push).map(Prepared::Http),
        RenderedTarget::GraphMail(t) => graph_mail::prepare(t, push, endpoints).map(Prepared::Http),
        RenderedTarget::BingAds(t) => bing_ads::prepare(t, push, endpoints).map(Prepared::Http),
        RenderedTarget::Smtp(t) => smtp::prepare(t, push).map(Prepared::Smtp),
    }
}

/// Rejects a header value that could split the request (CR, LF, NUL).
fn check_header(field: &str, name: &str, value: &str) -> Result<(), PrepareError> {
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !name_ok {
        return Err(PrepareError::InvalidField {
            field: field.to_owned(),
            reason: format!("`{name}` is not a valid header name"),
        });
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(PrepareError::InvalidField {
            field: field.to_owned(),
            reason: "header value contains a line break or NUL".to_owned(),
        });
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(PrepareError::InvalidField {
            field: field.to_owned(),
            reason: "header value contains a control character".to_owned(),
        });
    }
    Ok(())
}

/// Rejects a value bound for a mail header (subject, display name) that
/// holds a control character: CR or LF would start a new header (`Bcc:`
/// injection), and lettre's builder panics on them.
pub fn check_header_text(field: &str, value: &str) -> Result<(), PrepareError> {
    match value.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => Err(PrepareError::InvalidField {
            field: field.to_owned(),
            reason: format!(
                "contains the control character U+{:04X} ({}); header values must be one line without control characters",
                u32::from(c),
                match c {
                    '\r' => "carriage return",
                    '\n' => "line feed",
                    '\0' => "NUL",
                    '\t' => "tab",
                    _ => "control character",
                }
            ),
        }),
    }
}

/// Attributes whose value a mail client follows or loads as a URL.
const URL_ATTRIBUTES: [&str; 11] = [
    "href",
    "src",
    "action",
    "formaction",
    "xlink:href",
    "background",
    "poster",
    "cite",
    "data",
    "lowsrc",
    "dynsrc",
];

/// Refuses an HTML mail body with a link or source whose scheme runs code
/// or smuggles content: `javascript:`, `vbscript:`, and `data:` (except
/// `data:image/…` other than SVG in `src` and `srcset`). Checked on the
/// rendered body, so it holds however the value got there (an event value,
/// `| safe`, entities or tabs inside the scheme). Besides the URL
/// attributes, every candidate of a `srcset`, the `url=` of a `<meta
/// http-equiv=refresh content="0;url=…">` and every `url(…)` in a `style`
/// attribute are checked.
pub fn check_html_links(field: &str, html: &str) -> Result<(), PrepareError> {
    for (attr, value) in html_attributes(html) {
        let value = decode_entities(&value);
        let urls: Vec<(String, bool)> = match attr.as_str() {
            a if URL_ATTRIBUTES.contains(&a) => vec![(value, a == "src")],
            "srcset" | "imagesrcset" => value
                .split(',')
                .map(|c| (c.split_whitespace().next().unwrap_or("").to_owned(), true))
                .collect(),
            "content" => refresh_url(&value)
                .map(|u| vec![(u, false)])
                .unwrap_or_default(),
            "style" => css_urls(&value).into_iter().map(|u| (u, true)).collect(),
            _ => continue,
        };
        for (url, image_ok) in urls {
            check_link(field, &attr, &url, image_ok)?;
        }
    }
    Ok(())
}

fn check_link(field: &str, attr: &str, url: &str, image_ok: bool) -> Result<(), PrepareError> {
    let url: String = url
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect::<String>()
        .to_ascii_lowercase();
    let scheme = ["javascript:", "vbscript:", "data:"]
        .into_iter()
        .find(|s| url.starts_with(s));
    let image = image_ok && url.starts_with("data:image/") && !url.starts_with("data:image/svg");
    match scheme.filter(|_| !image) {
        Some(scheme) => Err(PrepareError::InvalidField {
            field: field.to_owned(),
            reason: format!("`{attr}` with a `{scheme}` URL is refused in an HTML mail body (links must be http:, https:, mailto:, tel: or relative)"),
        }),
        None => Ok(()),
    }
}

/// The URL of a refresh `content` value (`0;url=…`, `5, URL='…'`), if any.
fn refresh_url(content: &str) -> Option<String> {
    let lower = content.to_ascii_lowercase();
    let rest = lower
        .trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    let rest = rest.trim_start().strip_prefix([';', ','])?.trim_start();
    let rest = rest
        .strip_prefix("url")?
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let start = content.len() - rest.len();
    Some(
        content[start..]
            .trim_matches(|c: char| c == '\'' || c == '"' || c.is_whitespace())
            .to_owned(),
    )
}

/// Every `url(…)` argument in a CSS declaration list, CSS escapes
/// (`\6a`, `\:`) and comments removed first.
fn css_urls(style: &str) -> Vec<String> {
    let css = css_unescape(style);
    let lower = css.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("url(") {
        let start = from + pos + 4;
        let end = lower[start..].find(')').map_or(lower.len(), |e| start + e);
        out.push(
            css[start..end]
                .trim_matches(|c: char| c == '\'' || c == '"' || c.is_whitespace())
                .to_owned(),
        );
        from = end.min(lower.len());
    }
    out
}

fn css_unescape(css: &str) -> String {
    let mut out = String::with_capacity(css.len());
    let mut chars = css.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let mut hex = String::new();
                while hex.len() < 6 && chars.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                    hex.push(chars.next().unwrap_or('0'));
                }
                if hex.is_empty() {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    if chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                    out.push(
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or('\u{FFFD}'),
                    );
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Attributes where an event value, even HTML-escaped, is code or a
/// document: `on*` handlers run it as script (`&#39;` is a quote again by
/// then), `srcdoc` renders it as HTML. `check` refuses a parameter there.
pub fn is_script_attribute(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    (name.starts_with("on") && name.len() > 2) || name == "srcdoc"
}

/// The attributes of an HTML body template whose value holds a parameter
/// or statement (`<< … >>`, `<% … %>`): `(attribute, value as written)`.
/// For `check`, which refuses them in [`is_script_attribute`]s and warns
/// in `style`.
pub fn templated_attributes(source: &str) -> Vec<(String, String)> {
    html_attributes(source)
        .into_iter()
        .filter(|(_, v)| {
            v.contains(crate::template::VARIABLE_START) || v.contains(crate::template::BLOCK_START)
        })
        .collect()
}

/// `(attribute name in lower case, raw value)` of every attribute of every
/// tag in `html`; comments are skipped. Lenient, like a browser: it never
/// fails.
fn html_attributes(html: &str) -> Vec<(String, String)> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        i += off + 1;
        if html[i..].starts_with("!--") {
            i = html[i..].find("-->").map_or(b.len(), |e| i + e + 3);
            continue;
        }
        if !b.get(i).is_some_and(|c| c.is_ascii_alphabetic()) {
            continue;
        }
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
            i += 1;
        }
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            if i >= b.len() || b[i] == b'>' {
                break;
            }
            let start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && !b"=>/".contains(&b[i]) {
                i += 1;
            }
            let name = html[start..i].to_ascii_lowercase();
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if b.get(i) != Some(&b'=') {
                if start == i {
                    i += 1;
                }
                continue;
            }
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = match b.get(i) {
                Some(&q) if q == b'"' || q == b'\'' => {
                    let end = html[i + 1..].find(q as char).map_or(b.len(), |e| i + 1 + e);
                    let v = &html[i + 1..end];
                    i = (end + 1).min(b.len());
                    v
                }
                _ => {
                    let start = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    &html[start..i]
                }
            };
            out.push((name, value.to_owned()));
        }
    }
    out
}

/// Decodes the character references that can hide a scheme (`&#106;`,
/// `&#x6A;`, `&colon;`, `&Tab;`, `&NewLine;`); others are kept as written.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '#')
            .unwrap_or(rest.len());
        let name = &rest[..end];
        let decoded = if let Some(num) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
        {
            u32::from_str_radix(num, 16).ok().and_then(char::from_u32)
        } else if let Some(num) = name.strip_prefix('#') {
            num.parse::<u32>().ok().and_then(char::from_u32)
        } else {
            match name.to_ascii_lowercase().as_str() {
                "colon" => Some(':'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "lpar" => Some('('),
                "rpar" => Some(')'),
                "tab" => Some('\t'),
                "newline" => Some('\n'),
                _ => None,
            }
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end..];
                rest = rest.strip_prefix(';').unwrap_or(rest);
            }
            None => out.push('&'),
        }
    }
    out.push_str(rest);
    out
}

/// A subject as one header line: each run of line breaks and tabs becomes
/// one space (what unfolding a folded header does; a caller name with a
/// line break still makes a readable subject), any other control character
/// is refused like in [`check_header_text`].
pub fn one_line_subject(field: &str, value: &str) -> Result<String, PrepareError> {
    let mut out = String::with_capacity(value.len());
    let mut in_break = false;
    for c in value.chars() {
        if matches!(c, '\r' | '\n' | '\t') {
            if !in_break {
                out.push(' ');
            }
            in_break = true;
        } else {
            out.push(c);
            in_break = false;
        }
    }
    check_header_text(field, &out)?;
    Ok(out)
}

/// Joins a base URL and a path without doubling or losing the slash.
fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Splits `Name <a@example.com>` into name and address; checks the address.
pub fn parse_recipient(field: &str, text: &str) -> Result<(Option<String>, String), PrepareError> {
    let text = text.trim();
    // Before anything else: a line break in a name would become a header.
    check_header_text(field, text)?;
    let (name, address) = match (text.rfind('<'), text.ends_with('>')) {
        (Some(open), true) => {
            let name = text[..open].trim().trim_matches('"').trim();
            let address = text[open + 1..text.len() - 1].trim();
            (
                (!name.is_empty()).then(|| name.to_owned()),
                address.to_owned(),
            )
        }
        _ => (None, text.to_owned()),
    };
    let valid = match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !address
                    .chars()
                    .any(|c| c.is_whitespace() || c == '<' || c == '>' || c.is_control())
        }
        None => false,
    };
    if !valid {
        return Err(PrepareError::InvalidField {
            field: field.to_owned(),
            reason: format!("{address:?} is not an e-mail address (expected `a@example.com` or `Name <a@example.com>`)"),
        });
    }
    Ok((name, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_with_and_without_names() {
        assert_eq!(
            parse_recipient("to", "a@b.test").unwrap(),
            (None, "a@b.test".into())
        );
        assert_eq!(
            parse_recipient("to", "\"Sales Team\" <sales@b.test>").unwrap(),
            (Some("Sales Team".into()), "sales@b.test".into())
        );
        assert!(parse_recipient("to", "no-at-sign").is_err());
        assert!(parse_recipient("to", "").is_err());
        assert!(parse_recipient("to", "a b@c.test").is_err());
    }

    #[test]
    fn names_and_subjects_with_control_characters_are_refused() {
        assert!(parse_recipient("to", "Evil\r\nBcc: x <a@example.com>").is_err());
        assert!(parse_recipient("to", "Evil\u{0}Name <a@example.com>").is_err());
        assert!(check_header_text("subject", "Hi\nBcc: x@example.com").is_err());
        assert!(check_header_text("subject", "Grüße, O'Brien").is_ok());
        assert_eq!(
            one_line_subject("subject", "Hi\r\n\tBcc: x@example.com\nend").unwrap(),
            "Hi Bcc: x@example.com end"
        );
        assert!(one_line_subject("subject", "Hi\u{0}there").is_err());
        assert!(one_line_subject("subject", "Hi\u{1b}[31m").is_err());
    }

    #[test]
    fn html_links_with_script_schemes_are_refused() {
        let bad = [
            r#"<a href="javascript:alert(1)">x</a>"#,
            r#"<img srcset="a.png 1x, javascript:alert(1) 2x">"#,
            r#"<meta http-equiv="refresh" content="0;url=javascript:alert(1)">"#,
            r#"<meta http-equiv="refresh" content="0; URL='data:text/html,x'">"#,
            r#"<p style="background:url(&quot;javascript:alert(1)&quot;)">x</p>"#,
            r#"<p style="background:u\72l(javascript:alert(1))">x</p>"#,
            r#"<p style="background:url(/**/javascript:alert(1))">x</p>"#,
            r#"<a HREF = 'JavaScript:alert(1)'>x</a>"#,
            "<a href=\"java\tscript:alert(1)\">x</a>",
            r#"<a href="&#106;avascript&#x3A;alert(1)">x</a>"#,
            r#"<a href=" javascript&colon;alert(1)">x</a>"#,
            r#"<img src=vbscript:x>"#,
            r#"<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>"#,
            r#"<img src="data:image/svg+xml;base64,PHN2Zz4=">"#,
        ];
        for html in bad {
            assert!(check_html_links("html", html).is_err(), "{html}");
        }
        let good = [
            r#"<a href="https://example.com/?q=javascript:x">x</a>"#,
            r#"<img srcset="a.png 1x, data:image/png;base64,AAAA 2x">"#,
            r#"<meta http-equiv="refresh" content="30">"#,
            r#"<meta name="description" content="javascript: the good parts">"#,
            r#"<p style="background:url(https://example.com/a.png); color: red">x</p>"#,
            r#"<a href="mailto:a@example.com">x</a><img src="data:image/png;base64,iVBO">"#,
            r#"<p title="javascript:">text javascript: here</p><!-- <a href="javascript:x"> -->"#,
            "<a href=\"/relative\">x</a> <b>unclosed <",
        ];
        for html in good {
            assert!(check_html_links("html", html).is_ok(), "{html}");
        }
    }

    #[test]
    fn header_values_cannot_split_requests() {
        assert!(check_header("h", "X-Ok", "fine").is_ok());
        assert!(check_header("h", "X-Bad", "a\r\nInjected: 1").is_err());
        assert!(check_header("h", "Bad Name", "v").is_err());
    }
}
