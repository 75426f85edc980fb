//! The typed shapes of the YAML documents a user writes: pushes and OAuth
//! accounts. Every struct denies unknown fields, so a typo is an error with a
//! line and column instead of a silently ignored setting. The JSON Schemas in
//! `schemas/` are generated from these types.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string field that is a template: `<< … >>` parameters are filled at
/// render time. YAML numbers and booleans are accepted and kept as their text
/// (`value: 120.5`), because the rendered result is text anyway.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TemplateText(pub String);

impl TemplateText {
    /// The template source as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TemplateText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TemplateText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TemplateText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TemplateText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TemplateText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (a template), a number or a boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<TemplateText, E> {
                Ok(TemplateText(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<TemplateText, E> {
                Ok(TemplateText(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for TemplateText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TemplateText".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A template: text with `<< parameter >>` placeholders, e.g. `<< event.caller_number >>`.",
            "type": ["string", "number", "boolean"]
        })
    }
}

/// A duration written as humans write it (`30s`, `5m`, `1h 30m`, `2d`),
/// parsed when the file is loaded so a typo is reported with its position.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl fmt::Debug for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for DurationText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(DurationText)
            .map_err(|e| {
                serde::de::Error::custom(format_args!(
                    "invalid duration {text:?}: {e}; expected e.g. `30s`, `5m`, `1h 30m`, `2d`"
                ))
            })
    }
}

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration such as `30s`, `5m`, `1h 30m`, `24h`, `2d`.",
            "type": "string",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Zµ]+(\\s*[0-9]+\\s*[a-zA-Zµ]+)*\\s*$"
        })
    }
}

/// The `kind:` marker of a push document (optional: a document without
/// `kind` is a push).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushKind {
    /// A push definition.
    Push,
}

/// The `kind:` marker of an OAuth account document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// An OAuth account whose access token is the parameter `oauth.<name>`.
    OauthAccount,
}

/// One push definition: when to push, under which condition, and what to send.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "pushwerk push")]
pub struct PushSpec {
    /// Optional document kind; `push` when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<PushKind>,
    /// Unique name of the push, used in logs, the delivery log and on the command line.
    pub name: String,
    /// What the push is for, for the people who read the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Event trigger: the event type that fires this push, e.g. `call.ended`.
    #[serde(default, rename = "on", skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    /// Time trigger: a crontab(5) line (`0 8 * * 1` is Monday 08:00) or six/seven fields with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// For `schedule` pushes: the IANA timezone the cron fields are read in (default `UTC`), e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// For `schedule` pushes: fire once for ticks missed while the daemon was down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catch_up: bool,
    /// Condition (a template expression such as `event.duration > 30`); the push is skipped when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Wait this long after the event before sending (e.g. `1h` before a Bing Ads upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DurationText>,
    /// Target: any HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTarget>,
    /// Target: a mail sent with Microsoft Graph `sendMail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_mail: Option<GraphMailTarget>,
    /// Target: a Microsoft Advertising (Bing Ads) offline conversion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bing_ads: Option<BingAdsTarget>,
    /// Target: a mail sent over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpTarget>,
    /// How often and how long a failing delivery is retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Deliveries to this push's target (its HTTP host, Graph mailbox, Bing
    /// Ads account or SMTP server) in flight at most (default 8; Graph mail
    /// 4, the number of concurrent requests Microsoft allows per mailbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub in_flight: Option<u32>,
}

/// Retry policy of a push: attempts and age limits before a dead letter.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 8).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Give up once the first attempt is this old (default 24h).
    #[serde(default = "default_max_age")]
    pub max_age: DurationText,
}

fn default_max_attempts() -> u32 {
    8
}

fn default_max_age() -> DurationText {
    DurationText(Duration::from_secs(24 * 3600))
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_max_attempts(),
            max_age: default_max_age(),
        }
    }
}

/// An HTTP request to any endpoint (the classic "push configuration").
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTarget {
    /// HTTP method (default `POST`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Target URL; a template (`<< event.campaign | urlencode >>` for query values).
    pub url: TemplateText,
    /// Request headers; values are templates (`Bearer << oauth.crm >>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, TemplateText>,
    /// Query parameters appended to the URL, URL-encoded by pushwerk.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, TemplateText>,
    /// Structured JSON body: every leaf is a template, the result is serialised as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub json: Option<serde_json::Value>,
    /// Form body (`application/x-www-form-urlencoded`); values are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<BTreeMap<String, TemplateText>>,
    /// Raw body text (a template), sent with `content_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<TemplateText>,
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
    pub signing: Option<SigningSpec>,
}

/// Request signing: `X-Pushwerk-Timestamp: <unix seconds>` and
/// `X-Pushwerk-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`
/// with a secret shared with the receiver.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningSpec {
    /// The shared secret (`${env:…}` or `${file:…}`).
    pub secret: TemplateText,
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

/// A Microsoft Advertising offline conversion (`ApplyOfflineConversions`, REST v13).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BingAdsTarget {
    /// The OAuth account (scope `https://ads.microsoft.com/msads.manage`).
    pub account: String,
    /// The developer token (`${env:…}` recommended; sandbox: `BBD37VB98`).
    pub developer_token: TemplateText,
    /// Manager account (customer) id, header `CustomerId`.
    pub customer_id: TemplateText,
    /// Ad account id that owns the conversion goal, header `CustomerAccountId`.
    pub customer_account_id: TemplateText,
    /// The conversion to apply.
    pub conversion: ConversionSpec,
    /// Campaign Management base URL (default `https://campaign.api.bingads.microsoft.com`, or `PUSHWERK_BING_ADS_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// The fields of one `OfflineConversion`; every value is a template.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionSpec {
    /// `ConversionName`: must equal an offline conversion goal's name.
    pub name: TemplateText,
    /// `ConversionTime`: UTC, ISO-8601 (`<< event.time | iso8601 >>`).
    pub time: TemplateText,
    /// `MicrosoftClickId` (MSCLKID); optional when a hashed e-mail or phone is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_id: Option<TemplateText>,
    /// `ConversionValue`, a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<TemplateText>,
    /// `ConversionCurrencyCode`, e.g. `EUR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<TemplateText>,
    /// `HashedEmailAddress`: `<< event.email | sha256 >>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed_email: Option<TemplateText>,
    /// `HashedPhoneNumber`: `<< event.caller_number | e164 | sha256 >>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed_phone: Option<TemplateText>,
    /// `ExternalAttributionCredit` (0 < x ≤ 1), for externally attributed goals only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_attribution_credit: Option<TemplateText>,
    /// `ExternalAttributionModel`, for externally attributed goals only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_attribution_model: Option<TemplateText>,
}

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
pub struct SmtpAuth {
    /// The login name (for Office 365, the mailbox address).
    pub username: TemplateText,
    /// A password (`${env:…}` or `${file:…}`); give this or `account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<TemplateText>,
    /// An OAuth account for XOAUTH2 (scope `https://outlook.office.com/SMTP.Send`); give this or `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// A mail sent over SMTP.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpTarget {
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
    pub auth: Option<SmtpAuth>,
    /// Sender: `a@example.com` or `Name <a@example.com>`.
    pub from: TemplateText,
    /// Recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<TemplateText>,
    /// Carbon-copy recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<TemplateText>,
    /// Blind carbon-copy recipients (in the envelope only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<TemplateText>,
    /// Reply-to addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<TemplateText>,
    /// Subject line.
    pub subject: TemplateText,
    /// Plain-text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TemplateText>,
    /// HTML body (with `text` too, the mail is multipart/alternative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<TemplateText>,
    /// Connection and command timeout (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
}

/// An OAuth account: the control panel's OAuth account form as YAML. Token
/// material is never written here; it lives in the token store.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "pushwerk OAuth account")]
pub struct OAuthAccountSpec {
    /// Always `oauth_account`.
    pub kind: AccountKind,
    /// The parameter name: `ms_mail` gives `<< oauth.ms_mail >>`.
    pub name: String,
    /// What the account is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Token endpoint of the refresh-token grant, e.g. `https://login.microsoftonline.com/common/oauth2/v2.0/token`.
    pub token_url: String,
    /// Authorization endpoint for `oauth login` (default: derived from a Microsoft `token_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    /// Application (client) id.
    pub client_id: String,
    /// Client secret: `${env:NAME}` or `${file:PATH}`; never written anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Space-separated scopes, e.g. `offline_access https://graph.microsoft.com/Mail.Send`.
    pub scope: String,
    /// Extra post-body values sent with every token request (values may be `${env:…}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
    /// Extra query parameters of the authorize URL of `oauth login`, e.g.
    /// `{ prompt: consent }` or `{ login_hint: me@example.com }`. Outside
    /// Microsoft, `prompt=consent` is sent by default when `offline_access`
    /// is asked for (OpenID Connect Core §11); an empty value leaves a
    /// parameter out. The parameters pushwerk sets itself (`client_id`,
    /// `redirect_uri`, `state`, PKCE, …) cannot be replaced.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorize_params: BTreeMap<String, String>,
    /// When the client secret expires (Azure secrets do; 24 months in the usual setup), `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires: Option<chrono::NaiveDate>,
}
