//! Microsoft Advertising `ApplyOfflineConversions` over REST (Campaign
//! Management v13): `POST {base}/CampaignManagement/v13/OfflineConversions/Apply`
//! with the four authentication headers. SOAP is switched off by Microsoft on
//! 31 Jan 2027 and is not built.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

mod check;
pub mod spec;

use std::collections::BTreeSet;

pub use check::check;
pub use spec::{BingAdsTarget, ConversionSpec};

use super::outcome::{retry_after, ItemError, Outcome, Response, RetryDelay};
use super::{join_url, Endpoints, Fill, HttpRequest, PrepareError, Prepared, RenderedPush};

/// No HTML fields.
pub const HTML_FIELDS: &[&str] = &[];

/// The rendered section: the developer token, ids and the conversion's
/// fields filled by `f`.
pub fn fill<F: Fill>(t: &BingAdsTarget, f: &mut F) -> Result<BingAdsTarget<String>, F::Error> {
    let c = &t.conversion;
    Ok(BingAdsTarget {
        developer_token: f.text("developer_token", &t.developer_token)?,
        customer_id: f.text("customer_id", &t.customer_id)?,
        customer_account_id: f.text("customer_account_id", &t.customer_account_id)?,
        conversion: ConversionSpec {
            name: f.text("conversion.name", &c.name)?,
            time: f.text("conversion.time", &c.time)?,
            click_id: f.opt("conversion.click_id", &c.click_id)?,
            value: f.opt("conversion.value", &c.value)?,
            currency: f.opt("conversion.currency", &c.currency)?,
            hashed_email: f.opt("conversion.hashed_email", &c.hashed_email)?,
            hashed_phone: f.opt("conversion.hashed_phone", &c.hashed_phone)?,
            external_attribution_credit: f.opt(
                "conversion.external_attribution_credit",
                &c.external_attribution_credit,
            )?,
            external_attribution_model: f.opt(
                "conversion.external_attribution_model",
                &c.external_attribution_model,
            )?,
        },
        account: t.account.clone(),
        base_url: t.base_url.clone(),
    })
}

/// The account whose token authorises the upload.
pub fn accounts(t: &BingAdsTarget, _used: &BTreeSet<String>) -> BTreeSet<String> {
    BTreeSet::from([t.account.clone()])
}

/// One slot per account.
pub fn slot(t: &BingAdsTarget, per_target: usize) -> (String, usize) {
    (format!("bing:{}", t.account), per_target)
}

/// [`prepare`] for the registry.
pub fn build(
    t: &BingAdsTarget<String>,
    push: &RenderedPush,
    endpoints: &Endpoints,
) -> Result<Prepared, PrepareError> {
    prepare(t, push, endpoints).map(Prepared::Http)
}

/// [`classify`] for the registry.
pub fn classify_http(
    _t: &BingAdsTarget<String>,
    _uses_token: bool,
    response: &Response,
    retry_after_cap: Duration,
) -> Outcome {
    classify(response, retry_after_cap)
}

/// The REST path of the operation.
pub const APPLY_PATH: &str = "CampaignManagement/v13/OfflineConversions/Apply";

/// Builds the request for one conversion.
pub fn prepare(
    t: &BingAdsTarget<String>,
    push: &RenderedPush,
    endpoints: &Endpoints,
) -> Result<HttpRequest, PrepareError> {
    prepare_batch(&[(t, push)], endpoints)
}

/// Most conversions Microsoft takes in one request.
pub const MAX_BATCH: usize = 1000;

/// Builds one request for several conversions of the same account,
/// customer and ad account (Microsoft recommends packing up to 1,000); the
/// answer's `PartialErrors` map back by position with [`classify_batch`].
pub fn prepare_batch(
    items: &[(&BingAdsTarget<String>, &RenderedPush)],
    endpoints: &Endpoints,
) -> Result<HttpRequest, PrepareError> {
    let Some((t, push)) = items.first() else {
        return Err(invalid("bing_ads", "an empty batch".into()));
    };
    if items.len() > MAX_BATCH {
        return Err(invalid(
            "bing_ads",
            format!(
                "{} conversions in one request; Microsoft takes at most {MAX_BATCH}",
                items.len()
            ),
        ));
    }
    let token = push.token(&t.account)?;
    let base = t.base_url.as_deref().unwrap_or(&endpoints.bing_ads);
    let mut conversions = Vec::with_capacity(items.len());
    for (other, _) in items {
        let same = other.account == t.account
            && other.customer_id == t.customer_id
            && other.customer_account_id == t.customer_account_id
            && other.developer_token == t.developer_token
            && other.base_url == t.base_url;
        if !same {
            return Err(invalid(
                "bing_ads",
                "a batch holds conversions of one account, customer and ad account only".into(),
            ));
        }
        conversions.push(conversion_json(other)?);
    }
    let body = serde_json::json!({ "OfflineConversions": conversions });
    for (field, value) in [
        ("customer_id", &t.customer_id),
        ("customer_account_id", &t.customer_account_id),
    ] {
        let v = value.trim();
        // Masked, an id from a secret is a placeholder (a literal id was
        // checked when the file loaded); real ids are numbers.
        let numeric = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        if !(numeric || push.secrets.is_masked()) {
            return Err(invalid(
                &format!("bing_ads.{field}"),
                // Not echoed: the value may come from `${env:…}`.
                "is not a numeric Microsoft Advertising id".to_owned(),
            ));
        }
    }
    Ok(HttpRequest {
        method: "POST".into(),
        url: join_url(base, APPLY_PATH),
        headers: vec![
            ("Authorization".into(), format!("Bearer {token}")),
            (
                "DeveloperToken".into(),
                t.developer_token.trim().to_owned(),
            ),
            ("CustomerId".into(), t.customer_id.trim().to_owned()),
            (
                "CustomerAccountId".into(),
                t.customer_account_id.trim().to_owned(),
            ),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: serde_json::to_vec(&body).expect("JSON values serialise"),
    })
}

fn invalid(field: &str, reason: String) -> PrepareError {
    PrepareError::InvalidField {
        field: field.to_owned(),
        reason,
    }
}

/// A rendered optional field: `None` when absent or rendered empty.
fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The `OfflineConversion` object; `None` fields are omitted.
pub fn conversion_json(t: &BingAdsTarget<String>) -> Result<Value, PrepareError> {
    let c = &t.conversion;
    let mut out = Map::new();
    let name = c.name.trim();
    if name.is_empty() {
        return Err(invalid(
            "bing_ads.conversion.name",
            "the conversion goal name rendered empty".into(),
        ));
    }
    out.insert("ConversionName".into(), Value::String(name.to_owned()));
    let time = c.time.trim();
    let parsed: DateTime<Utc> = DateTime::parse_from_rfc3339(time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            invalid(
                "bing_ads.conversion.time",
                format!("{time:?} is not an ISO-8601 time with a zone; use `<< event.time | iso8601 >>`"),
            )
        })?;
    out.insert(
        "ConversionTime".into(),
        Value::String(parsed.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    );
    if let Some(v) = present(&c.click_id) {
        out.insert("MicrosoftClickId".into(), Value::String(v.to_owned()));
    }
    if let Some(v) = present(&c.value) {
        let n: f64 = v
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .ok_or_else(|| {
                invalid(
                    "bing_ads.conversion.value",
                    format!("{v:?} is not a number"),
                )
            })?;
        out.insert("ConversionValue".into(), number(n));
    }
    if let Some(v) = present(&c.currency) {
        if v.len() != 3 || !v.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(invalid(
                "bing_ads.conversion.currency",
                format!("{v:?} is not a three-letter ISO 4217 code"),
            ));
        }
        out.insert(
            "ConversionCurrencyCode".into(),
            Value::String(v.to_ascii_uppercase()),
        );
    }
    for (field, key, v) in [
        (
            "hashed_email",
            "HashedEmailAddress",
            present(&c.hashed_email),
        ),
        (
            "hashed_phone",
            "HashedPhoneNumber",
            present(&c.hashed_phone),
        ),
    ] {
        if let Some(v) = v {
            if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    &format!("bing_ads.conversion.{field}"),
                    "expected a SHA-256 hex digest: apply the `sha256` filter (after `e164` for phones)".into(),
                ));
            }
            out.insert(key.into(), Value::String(v.to_ascii_lowercase()));
        }
    }
    if let Some(v) = present(&c.external_attribution_credit) {
        let n: f64 = v
            .parse()
            .ok()
            .filter(|n| *n > 0.0 && *n <= 1.0)
            .ok_or_else(|| {
                invalid(
                    "bing_ads.conversion.external_attribution_credit",
                    format!("{v:?} is not a number in (0, 1]"),
                )
            })?;
        out.insert("ExternalAttributionCredit".into(), number(n));
    }
    if let Some(v) = present(&c.external_attribution_model) {
        out.insert(
            "ExternalAttributionModel".into(),
            Value::String(v.to_owned()),
        );
    }
    if !out.contains_key("MicrosoftClickId")
        && !out.contains_key("HashedEmailAddress")
        && !out.contains_key("HashedPhoneNumber")
    {
        return Err(invalid(
            "bing_ads.conversion.click_id",
            "the MSCLKID rendered empty and no hashed e-mail or phone is given: Microsoft cannot attribute the conversion".into(),
        ));
    }
    Ok(Value::Object(out))
}

fn number(n: f64) -> Value {
    serde_json::Number::from_f64(n)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// How long Microsoft Advertising asks to wait after `CallRateExceeded` (117).
pub const CALL_RATE_WAIT: Duration = Duration::from_secs(60);

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApplyResponse {
    #[serde(default)]
    partial_errors: Option<Vec<BatchError>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    message: Option<String>,
}

/// An `AdApiError` / `OperationError` / `BatchError` of a fault body.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FaultError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Fault {
    #[serde(default, rename = "Type")]
    kind: Option<String>,
    #[serde(default)]
    errors: Option<Vec<FaultError>>,
    #[serde(default)]
    operation_errors: Option<Vec<FaultError>>,
    #[serde(default)]
    batch_errors: Option<Vec<FaultError>>,
    #[serde(default)]
    tracking_id: Option<String>,
}

fn parse_fault(body: &[u8]) -> Option<Fault> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    // Both SDKs parse the unwrapped form; one doc page shows it wrapped.
    let inner = value.get("ApplicationFault").cloned().unwrap_or(value);
    serde_json::from_value(inner).ok()
}

/// What Microsoft Advertising's answer to `ApplyOfflineConversions` means
/// (reference §3.1, §3.3, §3.4). Partial errors arrive with HTTP 200.
pub fn classify(response: &Response, retry_after_cap: Duration) -> Outcome {
    classify_batch(response, 1, retry_after_cap, CALL_RATE_WAIT)
        .pop()
        .expect("one outcome per conversion")
}

/// The outcome of each of the `count` conversions of a batch request: a 200
/// with `PartialErrors` fails exactly the conversions named by `Index`;
/// any other answer applies to all of them.
pub fn classify_batch(
    response: &Response,
    count: usize,
    retry_after_cap: Duration,
    call_rate_wait: Duration,
) -> Vec<Outcome> {
    let status = response.status;
    let reference = response.header("trackingid").map(str::to_owned);
    if status != 200 {
        return vec![classify_fault(response, retry_after_cap, call_rate_wait); count];
    }
    let delivered = Outcome::Delivered {
        status,
        reference: reference.clone(),
    };
    let errors = match serde_json::from_slice::<ApplyResponse>(&response.body) {
        Ok(r) => r.partial_errors.unwrap_or_default(),
        Err(e) => {
            let failed = Outcome::Failed {
                status: Some(status),
                code: None,
                message: format!(
                    "200 with a body that is not an ApplyOfflineConversions response ({e}): {}",
                    response.body_start(200)
                ),
                items: Vec::new(),
                reference,
            };
            return vec![failed; count];
        }
    };
    let mut outcomes = vec![delivered; count];
    let mut by_index: Vec<Vec<ItemError>> = vec![Vec::new(); count];
    // Errors without an `Index` inside the batch name no conversion: one
    // of them failed, which one is unknown.
    let mut unattributed: Vec<ItemError> = Vec::new();
    for e in errors {
        let item = ItemError {
            index: e.index.unwrap_or(count),
            code: e.code,
            error_code: e.error_code,
            message: e.message.unwrap_or_default(),
        };
        match by_index.get_mut(item.index) {
            Some(slot) => slot.push(item),
            None => unattributed.push(item),
        }
    }
    let unnamed = unattributed.first().map(|first| {
        // Failing the first conversion (as before) blamed a conversion
        // Bing may have taken and recorded the failed one as delivered.
        // Every conversion not named otherwise fails, saying why, so no
        // refused conversion passes for delivered.
        Outcome::Failed {
            status: Some(status),
            code: first
                .error_code
                .clone()
                .or_else(|| first.code.map(|c| c.to_string())),
            message: format!(
                "Bing refused a conversion of this batch of {count} without naming which (no Index in the batch): {}; this one may have been taken — replay it to be sure",
                first.message
            ),
            items: unattributed.clone(),
            reference: reference.clone(),
        }
    });
    for (i, items) in by_index.into_iter().enumerate() {
        if items.is_empty() {
            if let Some(unnamed) = &unnamed {
                outcomes[i] = unnamed.clone();
            }
        }
        if let Some(first) = items.first() {
            outcomes[i] = Outcome::Failed {
                status: Some(status),
                code: first
                    .error_code
                    .clone()
                    .or_else(|| first.code.map(|c| c.to_string())),
                message: format!("conversion refused: {}", first.message),
                items,
                reference: reference.clone(),
            };
        }
    }
    outcomes
}

/// The meaning of a non-200 answer (a fault body).
fn classify_fault(
    response: &Response,
    retry_after_cap: Duration,
    call_rate_wait: Duration,
) -> Outcome {
    let status = response.status;
    let mut reference = response.header("trackingid").map(str::to_owned);
    let fault = parse_fault(&response.body);
    if reference.is_none() {
        reference = fault.as_ref().and_then(|f| f.tracking_id.clone());
    }
    let errors: Vec<&FaultError> = fault
        .as_ref()
        .map(|f| {
            [&f.errors, &f.operation_errors, &f.batch_errors]
                .into_iter()
                .flatten()
                .flatten()
                .collect()
        })
        .unwrap_or_default();
    let codes: Vec<i64> = errors.iter().filter_map(|e| e.code).collect();
    let describe = || match errors.first() {
        Some(e) => format!(
            "{} {}: {}",
            e.code.map(|c| c.to_string()).unwrap_or_default(),
            e.error_code.as_deref().unwrap_or_default(),
            e.message.as_deref().unwrap_or_default()
        ),
        None => response.body_start(200),
    };
    let first_code = errors.first().and_then(|e| {
        e.error_code
            .clone()
            .or_else(|| e.code.map(|c| c.to_string()))
    });
    if codes.iter().any(|c| *c == 105 || *c == 109) {
        return Outcome::RefreshAndRetry {
            status,
            reason: describe(),
            reference,
        };
    }
    if codes.contains(&117) {
        return Outcome::Retry {
            delay: RetryDelay::After(
                retry_after(response, retry_after_cap)
                    .unwrap_or(call_rate_wait)
                    .max(call_rate_wait),
            ),
            status: Some(status),
            reason: describe(),
            reference,
        };
    }
    // InternalError (0) and ApplyFailed (5612) are transient, except that a
    // 400 is a validation failure of the request itself: resending cannot help.
    let transient_code = status != 400 && codes.iter().any(|c| *c == 0 || *c == 5612);
    if transient_code || status == 429 || status >= 500 || status == 404 {
        let delay =
            retry_after(response, retry_after_cap).map_or(RetryDelay::Backoff, RetryDelay::After);
        return Outcome::Retry {
            delay,
            status: Some(status),
            reason: describe(),
            reference,
        };
    }
    if status == 401 && fault.as_ref().and_then(|f| f.kind.as_deref()).is_none() {
        return Outcome::RefreshAndRetry {
            status,
            reason: describe(),
            reference,
        };
    }
    Outcome::Failed {
        status: Some(status),
        code: first_code,
        message: describe(),
        items: Vec::new(),
        reference,
    }
}

#[cfg(test)]
mod tests;
