//! What a target's load-time check reports to ([`CheckCx`]), and the
//! checks several targets share: URLs and HTML body attributes.
//!
//! The targets sit below `config`: they only see this small surface, and
//! `config` (which knows files, positions and the accounts of the folder)
//! implements [`CheckSink`] behind it. So the push model depends on the
//! targets and never the reverse.

use crate::template;

/// Where a target's check reports: implemented by the folder loader, which
/// turns a YAML path into a file position and knows the folder's accounts.
pub trait CheckSink {
    /// An error at the value of `path`.
    fn error(&mut self, path: &str, message: String);
    /// An error at the key of `path` (for "this field should not be here").
    fn error_at_key(&mut self, path: &str, message: String);
    /// A warning at the value of `path`.
    fn warning(&mut self, path: &str, message: String);
    /// The push uses account `name` (written at `path`): an error unless
    /// the folder defines it.
    fn use_account(&mut self, path: &str, name: &str);
}

/// What a target's load-time check reports to: errors and warnings at the
/// position of a YAML path (`graph_mail.to[0]`), and the accounts it uses.
pub struct CheckCx<'a> {
    sink: &'a mut dyn CheckSink,
}

impl<'a> CheckCx<'a> {
    /// A context reporting to `sink`.
    pub fn new(sink: &'a mut dyn CheckSink) -> Self {
        CheckCx { sink }
    }
    /// An error at the value of `path`.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.sink.error(path, message.into())
    }
    /// An error at the key of `path` (for "this field should not be here").
    pub fn error_at_key(&mut self, path: &str, message: impl Into<String>) {
        self.sink.error_at_key(path, message.into())
    }
    /// A warning at the value of `path`.
    pub fn warning(&mut self, path: &str, message: impl Into<String>) {
        self.sink.warning(path, message.into())
    }
    /// The push uses account `name` (written at `path`): an error unless
    /// the folder defines it.
    pub fn use_account(&mut self, path: &str, name: &str) {
        self.sink.use_account(path, name)
    }
    /// Checks a URL field (`http.url`, `…base_url`): http(s), and for a
    /// templated URL, who decides its host and what enters its path.
    pub fn url(&mut self, path: &str, text: &str) {
        check_url(self, path, text)
    }
    /// Checks an HTML body template's attributes (`on*`, `srcdoc`, `style`)
    /// and its `<style>` and `<script>` elements.
    pub fn html_body(&mut self, field: &str, source: &str) {
        check_html_attributes(self, field, source)
    }
}

fn check_url(cx: &mut CheckCx<'_>, path: &str, text: &str) {
    // A templated URL is checked once rendered; a fixed one now.
    if template::is_template(text) || text.contains("${") {
        let prefix = text
            .split(template::VARIABLE_START)
            .next()
            .unwrap_or_default();
        if path == "http.url" && template::is_template(text) && !fixed_origin(text) {
            cx.warning(
                path,
                "a parameter decides the scheme, host or user:password of this URL: an event value could send the request (and its headers) to another host; write `https://host/` literally and put values in the path with `| path` or in `query:`",
            );
        }
        if path == "http.url" && fixed_origin(text) {
            if let Some(expr) = unencoded_path_parameter(text) {
                cx.warning(
                    path,
                    format!("`<< {expr} >>` is put into the URL's path unencoded: an event value with `/`, `..`, `\\`, `?` or `#` changes the path and query (`../../admin?x=1` reaches `/admin?x=1`); write `<< {expr} | path >>` (one encoded segment) or pass it in `query:`"),
                );
            }
        }
        if !(prefix.is_empty() || prefix.starts_with("http://") || prefix.starts_with("https://")) {
            cx.error(path, "URL must start with `http://` or `https://`");
        }
        return;
    }
    match url::Url::parse(text) {
        // A base URL is joined with the service's path: a query or fragment
        // in it would swallow that path (`…/?key=X/v1.0/chats/…`).
        Ok(u)
            if path.ends_with("base_url")
                && (u.query().is_some() || u.fragment().is_some()) =>
        {
            cx.error(
                path,
                "a base URL cannot have a query (`?…`) or fragment (`#…`): the service's path is appended to it",
            )
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(u) => cx.error(
            path,
            format!("URL scheme must be http or https, found `{}`", u.scheme()),
        ),
        Err(e) => cx.error(path, format!("not a URL: {e}")),
    }
}

/// The first parameter of a URL template that takes an event value (it
/// names `event`) into the path — before any literal `?` or `#` — without
/// a last `| path` or `| urlencode` filter, as written (trimmed).
fn unencoded_path_parameter(text: &str) -> Option<&str> {
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find(template::VARIABLE_START) {
        let before = &text[..offset + start];
        if before.contains(['?', '#']) {
            return None;
        }
        let inner_start = start + template::VARIABLE_START.len();
        let end = rest[inner_start..].find(template::VARIABLE_END)?;
        let expr = rest[inner_start..inner_start + end].trim();
        let last_filter = expr
            .rsplit('|')
            .next()
            .unwrap_or_default()
            .trim()
            .split(['(', ' '])
            .next()
            .unwrap_or_default();
        let encoded = expr.contains('|') && matches!(last_filter, "path" | "urlencode");
        if expr.contains("event") && !encoded {
            return Some(expr);
        }
        let next = inner_start + end + template::VARIABLE_END.len();
        offset += next;
        rest = &rest[next..];
    }
    None
}

/// Whether the text before a URL's first parameter or statement fixes its
/// scheme, user:password and host: it has `://` and then the end of the
/// authority (`/`, `?` or `#`). A URL starting with a `${env:…}` secret is
/// the operator's choice, not an event's.
fn fixed_origin(text: &str) -> bool {
    let cut = [
        template::VARIABLE_START,
        template::BLOCK_START,
        template::COMMENT_START,
    ]
    .iter()
    .filter_map(|d| text.find(d))
    .min()
    .unwrap_or(text.len());
    let fixed = text[..cut].trim_start();
    fixed.starts_with("${")
        || fixed
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains(['/', '?', '#']))
}

/// A parameter in an `on*` handler or `srcdoc` of an HTML body is an
/// error: HTML escaping does not neutralise a value there (the handler
/// runs it as script after the entities are decoded, `srcdoc` renders it
/// as a document). In `style`, and inside a `<style>` or `<script>`
/// element, it is a warning: escaping does not apply to CSS or script
/// (CSS can load URLs), and mail and Teams clients drop scripts.
fn check_html_attributes(cx: &mut CheckCx<'_>, field: &str, source: &str) {
    for (element, parameter) in super::templated_raw_text(source) {
        let why = match element {
            "style" => "an event value can add declarations there (restyle the message, load a URL); prefer fixed styles, or a class chosen with `<% if %>`",
            _ => "an event value can add statements there; mail and Teams clients drop scripts anyway, so leave the script out",
        };
        cx.warning(
            field,
            format!(
                "a parameter inside a `<{element}>` element (`{parameter}`): HTML escaping does not make a value safe in {}: {why}",
                if element == "style" { "CSS" } else { "script" }
            ),
        );
    }
    for (attr, value) in super::templated_attributes(source) {
        if super::is_script_attribute(&attr) {
            cx.error(
                field,
                format!(
                    "a parameter in the `{attr}` attribute (`{attr}=\"{}\"`): HTML escaping does not make an event value safe in an event handler or `srcdoc`; move the value into a data attribute or the text",
                    value.chars().take(80).collect::<String>()
                ),
            );
        } else if attr == "style" {
            cx.warning(
                field,
                format!(
                    "a parameter in a `style` attribute (`style=\"{}\"`): an event value can change the layout or load a URL there; prefer fixed styles",
                    value.chars().take(80).collect::<String>()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_fixed_only_when_the_authority_ends_before_a_parameter() {
        assert!(fixed_origin(
            "https://api.example.com/v1/<< event.id | path >>"
        ));
        assert!(fixed_origin("https://api.example.com?x=<< event.id >>"));
        assert!(fixed_origin("${env:CRM_URL}/<< event.id >>"));
        assert!(!fixed_origin("https://<< event.host >>/x"));
        assert!(!fixed_origin("https://api.example.com<< event.path >>"));
        assert!(!fixed_origin("<< event.url >>"));
        assert!(!fixed_origin("https://<< event.user >>@api.example.com/"));
    }
}
