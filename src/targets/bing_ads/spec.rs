//! The `bing_ads:` section of a push: its fields, their YAML names
//! and their JSON Schema. Generic over the leaf type: `TemplateText` as
//! written (the default: what YAML is loaded into and the schema describes),
//! `String` once rendered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::template::TemplateText;

/// A Microsoft Advertising offline conversion (`ApplyOfflineConversions`, REST v13).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// `conversion` has optional fields, so its `Deserialize` wants `T: Default`.
#[serde(bound(deserialize = "T: Deserialize<'de> + Default"))]
pub struct BingAdsTarget<T = TemplateText> {
    /// The OAuth account (scope `https://ads.microsoft.com/msads.manage`).
    pub account: String,
    /// The developer token (`${env:…}` recommended; sandbox: `BBD37VB98`).
    pub developer_token: T,
    /// Manager account (customer) id, header `CustomerId`.
    pub customer_id: T,
    /// Ad account id that owns the conversion goal, header `CustomerAccountId`.
    pub customer_account_id: T,
    /// The conversion to apply.
    pub conversion: ConversionSpec<T>,
    /// Campaign Management base URL (default `https://campaign.api.bingads.microsoft.com`, or `PUSHWERK_BING_ADS_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// The fields of one `OfflineConversion`; every value is a template.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionSpec<T = TemplateText> {
    /// `ConversionName`: must equal an offline conversion goal's name.
    pub name: T,
    /// `ConversionTime`: UTC, ISO-8601 (`<< event.time | iso8601 >>`).
    pub time: T,
    /// `MicrosoftClickId` (MSCLKID); optional when a hashed e-mail or phone is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_id: Option<T>,
    /// `ConversionValue`, a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<T>,
    /// `ConversionCurrencyCode`, e.g. `EUR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<T>,
    /// `HashedEmailAddress`: `<< event.email | sha256 >>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed_email: Option<T>,
    /// `HashedPhoneNumber`: `<< event.caller_number | e164 | sha256 >>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed_phone: Option<T>,
    /// `ExternalAttributionCredit` (0 < x ≤ 1), for externally attributed goals only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_attribution_credit: Option<T>,
    /// `ExternalAttributionModel`, for externally attributed goals only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_attribution_model: Option<T>,
}
