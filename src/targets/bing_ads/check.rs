//! Load-time checks of a `bing_ads:` section.

use super::BingAdsTarget;
use crate::targets::CheckCx;

/// Account, the conversion's identity, literal ids and base URL.
pub fn check(t: &BingAdsTarget, cx: &mut CheckCx<'_>) {
    cx.use_account("bing_ads.account", &t.account);
    let c = &t.conversion;
    if c.click_id.is_none() && c.hashed_email.is_none() && c.hashed_phone.is_none() {
        cx.error("bing_ads.conversion", "a conversion needs `click_id` (the MSCLKID), or `hashed_email` / `hashed_phone` for enhanced conversions");
    }
    // An id written literally is checked now; one from a parameter or a
    // secret when it is rendered.
    for (field, value) in [
        ("customer_id", &t.customer_id),
        ("customer_account_id", &t.customer_account_id),
    ] {
        let v = value.as_str().trim();
        let completed = crate::template::is_template(v) || v.contains("${");
        if !completed && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit())) {
            cx.error(
                &format!("bing_ads.{field}"),
                "is not a numeric Microsoft Advertising id",
            );
        }
    }
    if let Some(base) = &t.base_url {
        cx.url("bing_ads.base_url", base);
    }
}
