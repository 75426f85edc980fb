//! Checks shared by the targets: header values that cannot split a request,
//! mail header text, recipients, and the links of HTML bodies.

use super::PrepareError;

/// Rejects a header value that could split the request (CR, LF, NUL).
pub(crate) fn check_header(field: &str, name: &str, value: &str) -> Result<(), PrepareError> {
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

/// The raw-text elements (`<style>`, `<script>`) of an HTML body template
/// whose content holds a parameter (`<< … >>`): `(element, the first
/// parameter as written)`. HTML escaping protects text and attribute
/// values, not CSS or script: browsers do not decode entities there, and
/// a value needs no quote to add a declaration or a statement. For
/// `check`, which warns about them. Comments are skipped; a missing end
/// tag runs to the end, as in a browser.
pub fn templated_raw_text(source: &str) -> Vec<(&'static str, String)> {
    // ASCII lower-casing keeps every byte offset.
    let lower = source.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = lower[i..].find('<') {
        let at = i + off;
        if lower[at..].starts_with("<!--") {
            i = lower[at..].find("-->").map_or(lower.len(), |e| at + e + 3);
            continue;
        }
        let element = ["style", "script"].into_iter().find(|e| {
            lower[at + 1..].starts_with(e)
                && lower
                    .as_bytes()
                    .get(at + 1 + e.len())
                    .is_none_or(|c| c.is_ascii_whitespace() || *c == b'>' || *c == b'/')
        });
        let Some(element) = element else {
            i = at + 1;
            continue;
        };
        let Some(gt) = lower[at..].find('>') else {
            break;
        };
        let start = at + gt + 1;
        let end = lower[start..]
            .find(&format!("</{element}"))
            .map_or(lower.len(), |e| start + e);
        let content = &source[start..end];
        if let Some(p) = content.find(crate::template::VARIABLE_START) {
            let rest = &content[p..];
            let shown = rest
                .find(crate::template::VARIABLE_END)
                .map_or(rest, |e| &rest[..e + crate::template::VARIABLE_END.len()]);
            out.push((element, shown.chars().take(80).collect()));
        }
        i = end;
    }
    out
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
pub(crate) fn join_url(base: &str, path: &str) -> String {
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
    fn parameters_inside_style_and_script_elements_are_found() {
        let found = templated_raw_text(
            "<STYLE type=\"text/css\">p { color: << event.color >>; }</style>\
             <p class=x><< event.text >></p>\
             <script>var id = << event.id | json >>;</SCRIPT>\
             <!-- <style><< event.hidden >></style> -->\
             <stylesheet><< event.not_style >></stylesheet>",
        );
        assert_eq!(
            found,
            [
                ("style", "<< event.color >>".to_owned()),
                ("script", "<< event.id | json >>".to_owned()),
            ]
        );
        // Fixed CSS, a parameter in the text beside it, a statement alone.
        assert!(templated_raw_text(
            "<style>p { color: red }</style><p><< event.x >></p><style><% if x %>b{}<% endif %></style>"
        )
        .is_empty());
        // An unclosed element runs to the end.
        assert_eq!(
            templated_raw_text("<style>a { background: url(<< event.u >>) }"),
            [("style", "<< event.u >>".to_owned())]
        );
    }

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
