//! The `smtp:` section of a push: its fields, their YAML names
//! and their JSON Schema. Generic over the leaf type: `TemplateText` as
//! written (the default: what YAML is loaded into and the schema describes),
//! `String` once rendered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::targets::DurationText;
use crate::template::TemplateText;

/// How an SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587; the default).
    #[default]
    Starttls,
    /// Implicit TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only for a relay on this host or a trusted network.
    None,
}

/// SMTP authentication: a password, or XOAUTH2 with an OAuth account's token.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpAuth<T = TemplateText> {
    /// The login name (for Office 365, the mailbox address).
    pub username: T,
    /// A password (`${env:…}` or `${file:…}`); give this or `account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<T>,
    /// An OAuth account for XOAUTH2 (scope `https://outlook.office.com/SMTP.Send`); give this or `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// A mail sent over SMTP.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpTarget<T = TemplateText> {
    /// Server host name, e.g. `smtp.office365.com`.
    pub host: String,
    /// Server port (default 587 for `starttls`, 465 for `tls`, 25 for `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Connection security (default `starttls`).
    #[serde(default)]
    pub tls: SmtpTls,
    /// Authentication; none for an open local relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SmtpAuth<T>>,
    /// Sender: `a@example.com` or `Name <a@example.com>`.
    pub from: T,
    /// Recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<T>,
    /// Carbon-copy recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<T>,
    /// Blind carbon-copy recipients (in the envelope only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<T>,
    /// Reply-to addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<T>,
    /// Subject line.
    pub subject: T,
    /// Plain-text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<T>,
    /// HTML body (with `text` too, the mail is multipart/alternative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<T>,
    /// Connection and command timeout (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
}
