//! What a target's answer means: delivered, retry (at a time or with
//! backoff), refresh the token and retry once, or failed for good with the
//! target's own code and message.

use std::time::Duration;

use serde::Serialize;

/// A target's answer, as the transport received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status, or the SMTP reply code.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body bytes (for SMTP: the reply text).
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::find_header(&self.headers, name)
    }

    /// The start of the body as text, for error messages.
    pub fn body_start(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut s: String = text.chars().take(max).collect();
        if text.chars().count() > max {
            s.push('…');
        }
        s
    }
}

pub use crate::net::RetryDelay;

/// One item of a batch that the target refused (Bing `PartialErrors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    /// Zero-based index in the request.
    pub index: usize,
    /// Numeric code (e.g. 5616).
    pub code: Option<i64>,
    /// Symbolic code (e.g. `ConversionTimeEarlierThanClickTime`).
    pub error_code: Option<String>,
    /// The target's message.
    pub message: String,
}

/// The meaning of a target's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Accepted.
    Delivered {
        /// HTTP status or SMTP code.
        status: u16,
        /// The target's id for the request (Graph `request-id`, Bing `TrackingId`, SMTP queue id).
        reference: Option<String>,
    },
    /// Not now; try again.
    Retry {
        /// When.
        delay: RetryDelay,
        /// HTTP status or SMTP code, if there was an answer.
        status: Option<u16>,
        /// Why.
        reason: String,
        /// The target's id for the request.
        reference: Option<String>,
    },
    /// The access token was refused: refresh it once and try again at once.
    RefreshAndRetry {
        /// HTTP status or SMTP code.
        status: u16,
        /// Why.
        reason: String,
        /// The target's id for the request.
        reference: Option<String>,
    },
    /// Refused for good.
    Failed {
        /// HTTP status or SMTP code, if there was an answer.
        status: Option<u16>,
        /// The target's error code (`ErrorInvalidRecipients`, `5616`).
        code: Option<String>,
        /// The target's message.
        message: String,
        /// Items of a batch that failed (Bing `PartialErrors`).
        items: Vec<ItemError>,
        /// The target's id for the request.
        reference: Option<String>,
    },
}

impl Outcome {
    /// The outcome with each of `secrets` (label, value) replaced by
    /// `‹label›` (`‹oauth.crm›`, `‹env:HOOK_KEY›`) in every text that came
    /// from the target: a target (or a proxy's error page) echoing the
    /// request's `Authorization` or an API-key header must not put the
    /// secret into the log and the delivery log.
    pub fn masked<'a>(mut self, secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Outcome {
        let secrets: Vec<(&str, &str)> = secrets
            .into_iter()
            // Placeholders (dry-run) and very short values are no secrets to mask.
            .filter(|(_, value)| value.chars().count() >= 6)
            .collect();
        if secrets.is_empty() {
            return self;
        }
        let mask = |text: &mut String| {
            for (name, value) in &secrets {
                if text.contains(value) {
                    *text = text.replace(value, &format!("‹{name}›"));
                }
            }
        };
        match &mut self {
            Outcome::Delivered { reference, .. } => reference.iter_mut().for_each(mask),
            Outcome::Retry {
                reason, reference, ..
            }
            | Outcome::RefreshAndRetry {
                reason, reference, ..
            } => {
                mask(reason);
                reference.iter_mut().for_each(mask);
            }
            Outcome::Failed {
                code,
                message,
                items,
                reference,
                ..
            } => {
                mask(message);
                code.iter_mut().for_each(mask);
                reference.iter_mut().for_each(mask);
                for item in items {
                    mask(&mut item.message);
                    item.error_code.iter_mut().for_each(mask);
                }
            }
        }
        self
    }

    /// Whether the push reached its target.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }

    /// A one-line description for logs and the command line.
    pub fn summary(&self) -> String {
        let reference =
            |r: &Option<String>| r.as_ref().map(|r| format!(" [{r}]")).unwrap_or_default();
        match self {
            Outcome::Delivered {
                status,
                reference: r,
            } => format!("delivered ({status}){}", reference(r)),
            Outcome::Retry {
                delay,
                status,
                reason,
                reference: r,
            } => {
                let when = match delay {
                    RetryDelay::After(d) => format!("in {}", humantime::format_duration(*d)),
                    RetryDelay::Backoff => "with backoff".to_owned(),
                };
                let status = status.map(|s| format!(" ({s})")).unwrap_or_default();
                format!("retry {when}{status}: {reason}{}", reference(r))
            }
            Outcome::RefreshAndRetry {
                status,
                reason,
                reference: r,
            } => {
                format!("token refused ({status}): {reason}{}", reference(r))
            }
            Outcome::Failed {
                status,
                code,
                message,
                items,
                reference: r,
            } => {
                let status = status.map(|s| format!(" ({s})")).unwrap_or_default();
                let code = code.as_ref().map(|c| format!(" {c}")).unwrap_or_default();
                let mut s = format!("failed{status}{code}: {message}{}", reference(r));
                for i in items {
                    s.push_str(&format!(
                        "\n  item {}: {} {}: {}",
                        i.index,
                        i.code.map(|c| c.to_string()).unwrap_or_default(),
                        i.error_code.as_deref().unwrap_or_default(),
                        i.message
                    ));
                }
                s
            }
        }
    }
}

/// `Retry-After` (seconds or HTTP date), capped at `cap`.
pub fn retry_after(response: &Response, cap: Duration) -> Option<Duration> {
    let value = response.header("retry-after")?;
    crate::net::parse_retry_after(value, chrono::Utc::now()).map(|d| d.min(cap))
}
