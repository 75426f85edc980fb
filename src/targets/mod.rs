//! Targets: one folder per kind of destination (`http`, `graph_mail`, …:
//! the list is [`registry!`]), each holding its YAML section
//! (`spec`), its load-time checks (`check`), its pure request builder
//! (`prepare`: rendered values → the exact request), the meaning of its
//! answers (`classify_http`), and its tests.
//!
//! Every target is registered once, in [`registry!`]: its module, the push
//! document's field, [`TargetSpec`]'s variant and every dispatch below are
//! generated from that list. A target module provides, by convention:
//!
//! - `spec::<Type><T = TemplateText>`: the section, one definition for two
//!   forms: `Type` as written (serde + JSON Schema) and `Type<String>`
//!   rendered, every template replaced by its output;
//! - `HTML_FIELDS`: its fields whose parameters are HTML-escaped;
//! - `fill(&Type, &mut impl Fill) -> Result<Type<String>, _>`: the render,
//!   leaf by leaf, each named by its YAML path (also how `check` finds them);
//! - `check(&Type, &mut CheckCx)`: rules serde cannot express;
//! - `accounts(&Type, used) -> BTreeSet<String>`: the accounts whose token it presents;
//! - `slot(&Type, per_target) -> (String, u32)`: its in-flight slot and limit;
//! - `build(&Type<String>, &RenderedPush, &Endpoints) -> Result<Prepared, PrepareError>`;
//! - `classify_http(&Type<String>, uses_token, &Response, cap) -> Outcome`.
//!
//! Nothing here does I/O: dry-run prints what `prepare` returns; the
//! engine sends it.

mod check_cx;
pub mod checks;
mod duration;
mod graph;
pub mod leaves;
pub mod outcome;
pub mod request;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::template::TemplateText;

pub(crate) use checks::{check_header, join_url};
pub use checks::{
    check_header_text, check_html_links, is_script_attribute, one_line_subject, parse_recipient,
    templated_attributes, templated_raw_text,
};
pub use leaves::{Fill, Leaf};
pub use outcome::{ItemError, Outcome, Response, RetryDelay};
pub use request::{
    find_header, Endpoints, HttpRequest, MissingToken, PrepareError, Prepared, RenderedPush,
    RenderedTarget, SmtpLogin, SmtpMail,
};

pub use check_cx::{CheckCx, CheckSink};
pub use duration::DurationText;

/// The registered targets: `YAML key => Variant(module::spec::Type)`, each
/// with the description its field has in the push document. Calls `$then!`
/// with the list, so that each generated item sees every target.
macro_rules! registry {
    ($then:ident) => {
        $then! {
            /// Target: any HTTP endpoint.
            http => Http(http::spec::HttpTarget),
            /// Target: a mail sent with Microsoft Graph `sendMail`.
            graph_mail => GraphMail(graph_mail::spec::GraphMailTarget),
            /// Target: a Microsoft Advertising (Bing Ads) offline conversion.
            bing_ads => BingAds(bing_ads::spec::BingAdsTarget),
            /// Target: a mail sent over SMTP.
            smtp => Smtp(smtp::spec::SmtpTarget),
            /// Target: a message to a Microsoft Teams channel or chat, sent through Microsoft Graph.
            teams_message => TeamsMessage(teams_message::spec::TeamsMessageTarget),
        }
    };
}
pub(crate) use registry;

/// Declares each registered target's module (`targets/<key>/`).
macro_rules! target_modules {
    ($( $(#[$doc:meta])* $key:ident => $variant:ident($module:ident :: spec :: $ty:ident), )*) => {
        $( pub mod $module; )*
    };
}
registry!(target_modules);

/// Defines [`TargetSpec`] and its dispatch from the registry.
macro_rules! target_spec {
    ($( $(#[$doc:meta])* $key:ident => $variant:ident($module:ident :: spec :: $ty:ident), )*) => {
        /// A push's one target: as written (`TargetSpec`, every template a
        /// [`TemplateText`]) or rendered ([`RenderedTarget`], every template
        /// replaced by its output).
        #[derive(Clone, Debug)]
        pub enum TargetSpec<T = TemplateText> {
            $( $(#[$doc])* $variant($module::spec::$ty<T>), )*
        }

        /// The YAML keys of every target, in registry order.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

        impl<T> TargetSpec<T> {
            /// The target's YAML key (`http`, `graph_mail`, …).
            pub fn key(&self) -> &'static str {
                match self { $( TargetSpec::$variant(_) => stringify!($key), )* }
            }
        }

        impl TargetSpec {
            /// The rendered target: every template leaf replaced by what
            /// `f` makes of it, the rest copied.
            pub fn fill<F: Fill>(&self, f: &mut F) -> Result<RenderedTarget, F::Error> {
                Ok(match self { $( TargetSpec::$variant(t) => TargetSpec::$variant($module::fill(t, f)?), )* })
            }

            /// Every template leaf of the section, in order: what `check` compiles.
            pub fn leaves(&self) -> Vec<Leaf> {
                let mut collect = leaves::Collect::default();
                let Ok(_) = self.fill(&mut collect);
                collect.0
            }

            /// Load-time checks serde cannot express.
            pub fn check(&self, cx: &mut CheckCx<'_>) {
                match self { $( TargetSpec::$variant(t) => $module::check(t, cx), )* }
            }

            /// The accounts whose token the target presents (a refused
            /// token refreshes these); `used` are all accounts the push's
            /// templates name.
            pub fn presented_accounts(&self, used: &BTreeSet<String>) -> BTreeSet<String> {
                match self { $( TargetSpec::$variant(t) => $module::accounts(t, used), )* }
            }

            /// The in-flight slot deliveries to this target share, and how
            /// many may be in flight at once (`per_target` is the default).
            pub fn slot(&self, per_target: usize) -> (String, usize) {
                match self { $( TargetSpec::$variant(t) => $module::slot(t, per_target), )* }
            }
        }

        impl RenderedTarget {
            fn build(&self, push: &RenderedPush, endpoints: &Endpoints) -> Result<Prepared, PrepareError> {
                match self { $( TargetSpec::$variant(t) => $module::build(t, push, endpoints), )* }
            }

            /// What the target's HTTP answer means. `uses_token`: the push
            /// presents an access token, so a 401 may ask for a refresh.
            pub fn classify_http(&self, uses_token: bool, response: &Response, retry_after_cap: Duration) -> Outcome {
                match self { $( TargetSpec::$variant(t) => $module::classify_http(t, uses_token, response, retry_after_cap), )* }
            }
        }

        /// The template names' endings (`#graph_mail.html`) whose
        /// parameters are HTML-escaped: every target's HTML fields.
        pub fn html_fields() -> Vec<String> {
            let mut out = Vec::new();
            $( out.extend($module::HTML_FIELDS.iter().map(|f| format!("#{}.{f}", stringify!($key)))); )*
            out
        }

        impl Serialize for TargetSpec {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $( TargetSpec::$variant(t) => t.serialize(s), )* }
            }
        }
    };
}
registry!(target_spec);

/// How secrets enter a render and a request: the caller says, nothing
/// downstream guesses from the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretMode {
    /// Tokens and `${…}` secrets are placeholders (`‹oauth.crm›`): a
    /// dry-run, a preview. Checks that need the real value are skipped and
    /// values derived from a secret (a signature) are shown as placeholders.
    #[default]
    Masked,
    /// Real values, shown to the operator (`dry-run --show-secrets`):
    /// nothing is sent.
    Shown,
    /// Real values, for sending.
    Real,
}

impl SecretMode {
    /// Whether secret values are placeholders.
    pub fn is_masked(self) -> bool {
        self == SecretMode::Masked
    }
}

/// Builds the request for `push`.
///
/// Every value that reaches a header is checked before a library sees it,
/// but a panic in a dependency on some unforeseen value must still not take
/// a worker (and the target's in-flight slot) down: it becomes
/// [`PrepareError::Internal`], a failed delivery.
pub fn prepare(push: &RenderedPush, endpoints: &Endpoints) -> Result<Prepared, PrepareError> {
    let kind = push.target.key();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        push.target.build(push, endpoints)
    }))
    .unwrap_or(Err(PrepareError::Internal(kind)))
}

/// The host part of a URL template up to its first parameter (for slot keys).
pub(crate) fn url_host(url: &str) -> &str {
    url.split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', '?', '<'])
        .next()
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_bodies_come_from_the_targets() {
        let fields = html_fields();
        assert!(
            fields.contains(&"#graph_mail.html".to_owned()),
            "{fields:?}"
        );
        assert!(fields.contains(&"#smtp.html".to_owned()), "{fields:?}");
        assert!(
            !fields.iter().any(|f| f.starts_with("#http.")),
            "nothing of an HTTP request is HTML: {fields:?}"
        );
    }

    #[test]
    fn every_registered_key_is_a_field_of_the_push_document() {
        let schema = serde_json::to_value(schemars::schema_for!(crate::config::PushDoc)).unwrap();
        for key in KEYS {
            assert!(schema["properties"].get(key).is_some(), "{key}");
        }
    }
}
