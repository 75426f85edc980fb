//! Masking of credentials in a prepared request before a preview shows it:
//! secret headers, literal secrets and credential query parameters.

/// Header names whose values are credentials (compared without case).
pub(super) const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "developertoken",
    "cookie",
];

/// What a preview shows instead of a secret written literally into a push.
pub const LITERAL_SECRET: &str = "‹secret›";

/// Masks the secrets a push file holds literally (not as `${env:…}` /
/// `${file:…}`, which are placeholders already): an SMTP password, and the
/// value of a credential header (`Authorization: Basic …`, `x-api-key`, a
/// literal Bing `DeveloperToken`) unless it only holds placeholders
/// (`Bearer ‹oauth.crm›`). A preview may be asked for with the ingest token
/// alone, and the console shows it: neither may learn a credential.
pub(super) fn mask_literal_secrets(prepared: &mut crate::targets::Prepared) {
    use crate::targets::{Prepared, SmtpLogin};
    // Placeholders only, after an optional scheme (`Basic ‹env:AUTH›`).
    let is_placeholder = |v: &str| {
        let words: Vec<&str> = v.split_whitespace().collect();
        let skip = usize::from(words.len() > 1);
        !words.is_empty()
            && words[skip..]
                .iter()
                .all(|w| w.starts_with('‹') && w.ends_with('›'))
    };
    match prepared {
        Prepared::Smtp(m) => {
            if let Some(SmtpLogin::Password { password, .. }) = &mut m.login {
                if !is_placeholder(password) {
                    *password = LITERAL_SECRET.to_owned();
                }
            }
        }
        Prepared::Http(r) => {
            if let Some(url) = masked_userinfo(&r.url) {
                r.url = url;
            }
            if let Some(url) = masked_query(&r.url) {
                r.url = url;
            }
            for (name, value) in &mut r.headers {
                if SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
                    && !is_placeholder(value)
                {
                    *value = LITERAL_SECRET.to_owned();
                }
            }
        }
    }
}

/// `url` with a password written into its userinfo (`user:pw@host`)
/// replaced by [`LITERAL_SECRET`] (a placeholder is left alone); `None`
/// when there is nothing to mask.
pub(super) fn masked_userinfo(url: &str) -> Option<String> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = start + url[start..authority_end].rfind('@')?;
    let colon = start + url[start..at].find(':')?;
    let password = &url[colon + 1..at];
    if password.is_empty() || (password.starts_with('‹') && password.ends_with('›')) {
        return None;
    }
    Some(format!(
        "{}{LITERAL_SECRET}{}",
        &url[..colon + 1],
        &url[at..]
    ))
}

/// Query parameter names whose values are credentials (compared without
/// case): an API key or signature written into a push's `url`.
pub(super) const SECRET_QUERY: &[&str] = &[
    "key",
    "apikey",
    "api_key",
    "api-key",
    "token",
    "access_token",
    "secret",
    "client_secret",
    "password",
    "sig",
    "signature",
    "code",
];

/// `url` with the values of credential query parameters replaced by
/// [`LITERAL_SECRET`] (placeholders are left alone); `None` when there is
/// nothing to mask.
pub(super) fn masked_query(url: &str) -> Option<String> {
    let (base, query) = url.split_once('?')?;
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut changed = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value))
                if SECRET_QUERY.iter().any(|s| s.eq_ignore_ascii_case(name))
                    && !value.is_empty()
                    && !(value.starts_with('‹') && value.ends_with('›')) =>
            {
                changed = true;
                format!("{name}={LITERAL_SECRET}")
            }
            _ => pair.to_owned(),
        })
        .collect();
    changed.then(|| {
        let mut out = format!("{base}?{}", parts.join("&"));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    })
}
