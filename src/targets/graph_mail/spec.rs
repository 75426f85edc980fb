//! The `graph_mail:` section of a push: its fields, their YAML names
//! and their JSON Schema. Generic over the leaf type: `TemplateText` as
//! written (the default: what YAML is loaded into and the schema describes),
//! `String` once rendered.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::template::TemplateText;

/// A mail sent through Microsoft Graph `sendMail` with an OAuth account's token.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphMailTarget<T = TemplateText> {
    /// The OAuth account (its `name`) whose access token authorises the request.
    pub account: String,
    /// Send from this mailbox (`/users/{user}/sendMail`, needed with app-only tokens); default `/me`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<T>,
    /// `from` address (send-as; needs rights in Exchange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<T>,
    /// Recipients: `a@example.com` or `Name <a@example.com>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<T>,
    /// Carbon-copy recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<T>,
    /// Blind carbon-copy recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<T>,
    /// Reply-to addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<T>,
    /// Subject line.
    pub subject: T,
    /// Plain-text body (give `text` or `html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<T>,
    /// HTML body (give `text` or `html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<T>,
    /// File attachments (up to 3 MB each; the whole request must stay under 4 MB).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentSpec<T>>,
    /// Custom `x-` headers of the message (`internetMessageHeaders`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, T>,
    /// Keep a copy in Sent Items (Graph's default is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_to_sent_items: Option<bool>,
    /// Graph base URL (default `https://graph.microsoft.com`, or the `PUSHWERK_GRAPH_URL` setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// One mail attachment: a file, or base64 content given by a template.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentSpec<T = TemplateText> {
    /// File name shown to the recipient.
    pub name: T,
    /// MIME type (default `application/octet-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<T>,
    /// Read the content from this file (relative to the push file's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<T>,
    /// The content, base64-encoded (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<T>,
}
