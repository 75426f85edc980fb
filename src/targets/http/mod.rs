//! Any HTTP endpoint: method, URL with query, headers and a JSON, form or
//! raw body.

use std::time::Duration;

mod check;
pub mod spec;

use std::collections::BTreeSet;

pub use check::check;
pub use spec::{HttpTarget, SigningSpec};

use super::outcome::{retry_after, Outcome, Response, RetryDelay};
use super::{check_header, Endpoints, Fill, HttpRequest, PrepareError, Prepared, RenderedPush};

/// No HTML fields: nothing in an HTTP request is escaped for HTML.
pub const HTML_FIELDS: &[&str] = &[];

/// The rendered section: URL, headers, query, body and signing secret
/// filled by `f`.
pub fn fill<F: Fill>(t: &HttpTarget, f: &mut F) -> Result<HttpTarget<String>, F::Error> {
    Ok(HttpTarget {
        url: f.text("url", &t.url)?,
        headers: f.map("headers", &t.headers)?,
        query: f.map("query", &t.query)?,
        json: t.json.as_ref().map(|j| f.json("json", j)).transpose()?,
        form: t.form.as_ref().map(|m| f.map("form", m)).transpose()?,
        raw: f.opt("raw", &t.raw)?,
        signing: match &t.signing {
            Some(s) => Some(SigningSpec {
                secret: f.text("signing.secret", &s.secret)?,
                header: s.header.clone(),
                timestamp_header: s.timestamp_header.clone(),
            }),
            None => None,
        },
        method: t.method.clone(),
        content_type: t.content_type.clone(),
        success: t.success.clone(),
        timeout: t.timeout,
    })
}

/// The accounts an HTTP push presents: every `oauth.*` its templates name.
pub fn accounts(_t: &HttpTarget, used: &BTreeSet<String>) -> BTreeSet<String> {
    used.clone()
}

/// One slot per host (as written, up to its first parameter).
pub fn slot(t: &HttpTarget, per_target: usize) -> (String, usize) {
    (
        format!("http:{}", super::url_host(t.url.as_str())),
        per_target,
    )
}

/// [`prepare`] for the registry.
pub fn build(
    t: &HttpTarget<String>,
    push: &RenderedPush,
    _endpoints: &Endpoints,
) -> Result<Prepared, PrepareError> {
    prepare(t, push).map(Prepared::Http)
}

/// [`classify`] for the registry.
pub fn classify_http(
    t: &HttpTarget<String>,
    uses_token: bool,
    response: &Response,
    retry_after_cap: Duration,
) -> Outcome {
    classify(t, uses_token, response, retry_after_cap)
}

/// Builds the request. The `Idempotency-Key` header is the same on every
/// retry of one push for one event, so a receiver can drop duplicates.
pub fn prepare(t: &HttpTarget<String>, push: &RenderedPush) -> Result<HttpRequest, PrepareError> {
    let url_text = t.url.trim();
    let mut url = url::Url::parse(url_text).map_err(|e| PrepareError::InvalidField {
        field: "http.url".into(),
        // The URL itself is not echoed: it may hold a secret.
        reason: format!("the rendered URL is not a URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(PrepareError::InvalidField {
            field: "http.url".into(),
            reason: format!("scheme must be http or https, found `{}`", url.scheme()),
        });
    }
    if !t.query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &t.query {
            pairs.append_pair(k, v);
        }
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in &t.headers {
        check_header(&format!("http.headers.{name}"), name, value)?;
        headers.push((name.clone(), value.clone()));
    }
    let has = |headers: &[(String, String)], name: &str| {
        headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    let (body, content_type) = if let Some(json) = &t.json {
        (
            serde_json::to_vec(json).expect("JSON values serialise"),
            Some("application/json".to_owned()),
        )
    } else if let Some(form) = &t.form {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            s.append_pair(k, v);
        }
        (
            s.finish().into_bytes(),
            Some("application/x-www-form-urlencoded".to_owned()),
        )
    } else if let Some(raw) = &t.raw {
        let ct = t
            .content_type
            .clone()
            .unwrap_or_else(|| "text/plain; charset=utf-8".to_owned());
        (raw.clone().into_bytes(), Some(ct))
    } else {
        (Vec::new(), None)
    };
    if let Some(ct) = content_type {
        if !has(&headers, "content-type") {
            headers.push(("Content-Type".into(), ct));
        }
    }
    if let Some(signing) = &t.signing {
        let timestamp = push.now.timestamp().to_string();
        let secret = signing.secret.as_str();
        // Masked, the secret is a placeholder: show that the header is
        // there, not a signature made with the placeholder.
        let signature = if push.secrets.is_masked() {
            "sha256=‹hmac›".to_owned()
        } else {
            format!("sha256={}", sign(secret.as_bytes(), &timestamp, &body))
        };
        let ts_header = signing
            .timestamp_header
            .clone()
            .unwrap_or_else(|| "X-Pushwerk-Timestamp".into());
        let sig_header = signing
            .header
            .clone()
            .unwrap_or_else(|| "X-Pushwerk-Signature".into());
        check_header("http.signing.timestamp_header", &ts_header, &timestamp)?;
        check_header("http.signing.header", &sig_header, &signature)?;
        headers.push((ts_header, timestamp));
        headers.push((sig_header, signature));
    }
    if !has(&headers, "idempotency-key") {
        headers.push(("Idempotency-Key".into(), push.idempotency_key.clone()));
    }
    Ok(HttpRequest {
        method: t.method.to_ascii_uppercase(),
        url: url.to_string(),
        headers,
        body,
    })
}

/// What an HTTP endpoint's answer means. `uses_token`: the push sends an
/// OAuth access token, so a 401 asks for one refresh and retry.
pub fn classify(
    t: &HttpTarget<String>,
    uses_token: bool,
    response: &Response,
    retry_after_cap: Duration,
) -> Outcome {
    let status = response.status;
    let reference = response
        .header("x-request-id")
        .or_else(|| response.header("request-id"))
        .map(str::to_owned);
    let success = match &t.success {
        Some(codes) => codes.contains(&status),
        None => (200..300).contains(&status),
    };
    if success {
        return Outcome::Delivered { status, reference };
    }
    if matches!(status, 408 | 425 | 429) || (500..600).contains(&status) {
        return Outcome::Retry {
            delay: retry_after(response, retry_after_cap)
                .map_or(RetryDelay::Backoff, RetryDelay::After),
            status: Some(status),
            reason: format!("HTTP {status}: {}", response.body_start(200)),
            reference,
        };
    }
    if status == 401 && uses_token {
        return Outcome::RefreshAndRetry {
            status,
            reason: format!("HTTP 401: {}", response.body_start(200)),
            reference,
        };
    }
    Outcome::Failed {
        status: Some(status),
        code: None,
        message: format!("HTTP {status}: {}", response.body_start(200)),
        items: Vec::new(),
        reference,
    }
}

/// Hex HMAC-SHA256 of `"<timestamp>.<body>"` with `secret`: what a receiver
/// recomputes to verify a signed push.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // printf %s '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", "1700000000", br#"{"a":1}"#),
            "a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }
}
