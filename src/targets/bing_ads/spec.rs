//! The `bing_ads:` section of a push as written: its fields, their YAML names
//! and their JSON Schema.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::template::TemplateText;

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
