//! The `teams_message:` section of a push: its fields, their YAML names
//! and their JSON Schema. Generic over the leaf type: `TemplateText` as
//! written (the default: what YAML is loaded into and the schema describes),
//! `String` once rendered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::template::TemplateText;

/// A message to a Microsoft Teams channel (`team` + `channel`) or chat
/// (`chat`), posted through Microsoft Graph with an OAuth account's
/// delegated token (`ChannelMessage.Send` or `ChatMessage.Send`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamsMessageTarget<T = TemplateText> {
    /// The OAuth account (its `name`) whose access token authorises the request.
    pub account: String,
    /// The team's id (a GUID); give it with `channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<T>,
    /// The channel's id, e.g. `19:…@thread.tacv2`; give it with `team`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<T>,
    /// The chat's id, e.g. `19:…@thread.v2`; instead of `team` and `channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<T>,
    /// Subject line of a channel message (channels only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<T>,
    /// Plain-text message (give `text` or `html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<T>,
    /// HTML message (give `text` or `html`); parameters are HTML-escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<T>,
    /// Importance of the message (Graph's default is `normal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importance: Option<Importance>,
    /// Graph base URL (default `https://graph.microsoft.com`, or the `PUSHWERK_GRAPH_URL` setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// A chatMessage's `importance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    /// Normal.
    Normal,
    /// High.
    High,
    /// Urgent (shown as urgent in Teams).
    Urgent,
}

impl Importance {
    /// Graph's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Importance::Normal => "normal",
            Importance::High => "high",
            Importance::Urgent => "urgent",
        }
    }
}
