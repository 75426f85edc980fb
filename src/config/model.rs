//! The typed shapes of the YAML documents a user writes: pushes and OAuth
//! accounts. Every struct denies unknown fields, so a typo is an error with a
//! line and column instead of a silently ignored setting. The JSON Schemas in
//! `schemas/` are generated from these types.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::targets::bing_ads::{BingAdsTarget, ConversionSpec};
pub use crate::targets::graph_mail::{AttachmentSpec, GraphMailTarget};
pub use crate::targets::http::{HttpTarget, SigningSpec};
pub use crate::targets::smtp::{SmtpAuth, SmtpTarget, SmtpTls};
use crate::targets::TargetSpec;

/// Durations are target vocabulary (timeouts, delays); re-exported here.
pub use crate::targets::DurationText;
/// Template text lives in the leaf [`crate::template`]; re-exported here
/// where the push model has always named it.
pub use crate::template::TemplateText;

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

/// Defines [`PushDoc`] (a push as written, one optional field per
/// registered target) and its conversions from the target registry.
macro_rules! push_doc {
    ($( $(#[$doc:meta])* $key:ident => $variant:ident($module:ident :: spec :: $ty:ident), )*) => {
        // A push document as written, with one optional field per target
        // (exactly one must be given; `check` says so with its position).
        // Its JSON Schema is the push file's schema.
        /// One push definition: when to push, under which condition, and what to send.
        #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[schemars(title = "pushwerk push")]
        pub struct PushDoc {
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
            $(
                $(#[$doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $key: Option<crate::targets::$module::spec::$ty>,
            )*
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

        impl PushDoc {
            /// The targets given, in registry order.
            pub fn targets(&self) -> Vec<TargetSpec> {
                let mut out = Vec::new();
                $( if let Some(t) = &self.$key { out.push(TargetSpec::$variant(t.clone())); } )*
                out
            }

            /// The push with `target` as its one target.
            pub fn into_spec(self, target: TargetSpec) -> PushSpec {
                let PushDoc { kind, name, description, on, schedule, timezone, catch_up, when, delay, retry, in_flight, .. } = self;
                PushSpec { kind, name, description, on, schedule, timezone, catch_up, when, delay, retry, in_flight, target }
            }
        }

        impl From<PushSpec> for PushDoc {
            fn from(p: PushSpec) -> PushDoc {
                let PushSpec { kind, name, description, on, schedule, timezone, catch_up, when, delay, retry, in_flight, target } = p;
                let mut doc = PushDoc { kind, name, description, on, schedule, timezone, catch_up, when, delay, retry, in_flight, $( $key: None, )* };
                match target { $( TargetSpec::$variant(t) => doc.$key = Some(t), )* }
                doc
            }
        }
    };
}
crate::targets::registry!(push_doc);

/// One push definition: when to push, under which condition, and its one
/// target. Written and read as a [`PushDoc`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "PushDoc", try_from = "PushDoc")]
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
    /// What to send, and where.
    pub target: TargetSpec,
    /// How often and how long a failing delivery is retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Deliveries to this push's target (its HTTP host, Graph mailbox, Bing
    /// Ads account or SMTP server) in flight at most (default 8; Graph mail
    /// 4, the number of concurrent requests Microsoft allows per mailbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u32>,
}

impl TryFrom<PushDoc> for PushSpec {
    type Error = String;
    fn try_from(doc: PushDoc) -> Result<PushSpec, String> {
        let mut targets = doc.targets();
        match targets.len() {
            1 => Ok(doc.into_spec(targets.remove(0))),
            0 => Err(format!(
                "push has no target: add one of {}",
                crate::targets::KEYS.join(", ")
            )),
            _ => Err("a push has exactly one target".to_owned()),
        }
    }
}

impl JsonSchema for PushSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        PushDoc::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        PushDoc::json_schema(generator)
    }
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
