//! The `http:` section of a push: its fields, their YAML names
//! and their JSON Schema. Generic over the leaf type: `TemplateText` as
//! written (the default: what YAML is loaded into and the schema describes),
//! `String` once rendered.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::targets::DurationText;
use crate::template::TemplateText;

/// An HTTP request to any endpoint (the classic "push configuration").
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTarget<T = TemplateText> {
    /// HTTP method (default `POST`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Target URL; a template (`<< event.campaign | urlencode >>` for query values).
    pub url: T,
    /// Request headers; values are templates (`Bearer << oauth.crm >>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, T>,
    /// Query parameters appended to the URL, URL-encoded by pushwerk.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, T>,
    /// Structured JSON body: every leaf is a template, the result is serialised as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub json: Option<serde_json::Value>,
    /// Form body (`application/x-www-form-urlencoded`); values are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<BTreeMap<String, T>>,
    /// Raw body text (a template), sent with `content_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<T>,
    /// Content type of a `raw` body (default `text/plain; charset=utf-8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Statuses that count as delivered (default: any 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<Vec<u16>>,
    /// Request timeout (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// Sign each request so the receiver can check it came from pushwerk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningSpec<T>>,
}

/// Request signing: `X-Pushwerk-Timestamp: <unix seconds>` and
/// `X-Pushwerk-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`
/// with a secret shared with the receiver.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningSpec<T = TemplateText> {
    /// The shared secret (`${env:…}` or `${file:…}`).
    pub secret: T,
    /// Signature header name (default `X-Pushwerk-Signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Timestamp header name (default `X-Pushwerk-Timestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_header: Option<String>,
}

fn default_method() -> String {
    "POST".to_owned()
}
