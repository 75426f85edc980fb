//! The `graph_mail:` section of a push as written: its fields, their YAML names
//! and their JSON Schema.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::template::TemplateText;

/// A mail sent through Microsoft Graph `sendMail` with an OAuth account's token.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphMailTarget {
    /// The OAuth account (its `name`) whose access token authorises the request.
    pub account: String,
    /// Send from this mailbox (`/users/{user}/sendMail`, needed with app-only tokens); default `/me`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<TemplateText>,
    /// `from` address (send-as; needs rights in Exchange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<TemplateText>,
    /// Recipients: `a@example.com` or `Name <a@example.com>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<TemplateText>,
    /// Carbon-copy recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<TemplateText>,
    /// Blind carbon-copy recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<TemplateText>,
    /// Reply-to addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<TemplateText>,
    /// Subject line.
    pub subject: TemplateText,
    /// Plain-text body (give `text` or `html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TemplateText>,
    /// HTML body (give `text` or `html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<TemplateText>,
    /// File attachments (up to 3 MB each; the whole request must stay under 4 MB).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentSpec>,
    /// Custom `x-` headers of the message (`internetMessageHeaders`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, TemplateText>,
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
pub struct AttachmentSpec {
    /// File name shown to the recipient.
    pub name: TemplateText,
    /// MIME type (default `application/octet-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<TemplateText>,
    /// Read the content from this file (relative to the push file's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<TemplateText>,
    /// The content, base64-encoded (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<TemplateText>,
}
