//! Load-time checks of an `http:` section.

use super::HttpTarget;
use crate::targets::CheckCx;

/// The method, URL, body choice and success codes.
pub fn check(t: &HttpTarget, cx: &mut CheckCx<'_>) {
    let method = t.method.to_ascii_uppercase();
    if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].contains(&method.as_str()) {
        cx.error(
            "http.method",
            format!(
                "unknown HTTP method `{}`: expected GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS",
                t.method
            ),
        );
    }
    cx.url("http.url", t.url.as_str());
    let bodies = [t.json.is_some(), t.form.is_some(), t.raw.is_some()];
    if bodies.iter().filter(|b| **b).count() > 1 {
        cx.error("http", "give at most one body: `json`, `form` or `raw`");
    }
    if t.content_type.is_some() && t.raw.is_none() {
        cx.error_at_key(
            "http.content_type",
            "`content_type` goes with a `raw` body (`json` and `form` set their own)",
        );
    }
    if let Some(codes) = &t.success {
        if codes.is_empty() || codes.iter().any(|c| !(100..=599).contains(c)) {
            cx.error(
                "http.success",
                "`success` lists HTTP status codes between 100 and 599",
            );
        }
    }
}
