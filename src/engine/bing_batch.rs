//! Bing Ads batching: conversions of the same account, developer token,
//! customer, ad account and endpoint that are ready together go out as one
//! `ApplyOfflineConversions` request (Microsoft takes up to 1,000 per call
//! and throttles per call, code 117), and the answer is mapped back to each
//! conversion by `PartialErrors[].Index`.
//!
//! Two halves:
//!
//! - [`Batcher`], used by the [`Deliverer`](super::Deliverer): each delivery
//!   renders and prepares its own conversion (so a bad one fails alone),
//!   then joins the open batch of its request head (URL and headers, the
//!   access token included). A batch goes out when it is full or its linger
//!   is over; every delivery gets its own outcome. A 117 or a refused token
//!   therefore reaches every job of the batch: each is retried after the
//!   wait, and the refresh-and-retry of each job shares one single-flight
//!   refresh and rejoins one batch.
//! - [`take_riders`], used by the daemon's worker loop: when it takes a Bing
//!   job, the due jobs that would share its request are taken with it,
//!   without a delivery slot each (the one request holds one), so a batch is
//!   not limited by the per-account and global in-flight limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::send::{Sender, Sent};
use crate::config::{Catalog, Push};
use crate::delivery::{Job, Scheduler};
use crate::targets::bing_ads::{classify_batch, prepare_batch, CALL_RATE_WAIT, MAX_BATCH};
use crate::targets::{Endpoints, HttpRequest, Outcome, RenderedPush, RenderedTarget};

/// How conversions are packed: at most `max` per request, and a batch
/// waits at most `linger` after its first conversion for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Conversions per request at most (1–1,000; default 1,000).
    pub max: usize,
    /// How long a batch waits for more after its first conversion (default 200 ms; at most 10 s).
    pub linger: Duration,
    /// The wait after a `CallRateExceeded` (117) before the batch goes again
    /// (default Microsoft's 60 s; 1 s to 10 min): a policy, set shorter by
    /// `PUSHWERK_BING_CALL_RATE_WAIT` where 60 s is too long to wait (tests).
    pub call_rate_wait: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max: MAX_BATCH,
            linger: Duration::from_millis(200),
            call_rate_wait: CALL_RATE_WAIT,
        }
    }
}

/// Longest linger accepted: a batch must not hold deliveries back for long.
pub const MAX_LINGER: Duration = Duration::from_secs(10);

/// Why a batch setting from the environment is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchSettingsError {
    /// `PUSHWERK_BING_BATCH_MAX` is not a number in 1–1,000.
    #[error("PUSHWERK_BING_BATCH_MAX={0:?}: expected a number of conversions per request from 1 to 1000")]
    Max(String),
    /// `PUSHWERK_BING_LINGER` is not a duration up to 10 s.
    #[error("PUSHWERK_BING_LINGER={0:?}: expected a duration from 0ms to 10s, such as `200ms`")]
    Linger(String),
    /// `PUSHWERK_BING_CALL_RATE_WAIT` is not a duration from 1 s to 10 min.
    #[error(
        "PUSHWERK_BING_CALL_RATE_WAIT={0:?}: expected a duration from 1s to 10m, such as `60s`"
    )]
    CallRateWait(String),
}

impl BatchSettings {
    /// The defaults, overridden by `PUSHWERK_BING_BATCH_MAX`,
    /// `PUSHWERK_BING_LINGER` (`0ms` sends each conversion at once) and
    /// `PUSHWERK_BING_CALL_RATE_WAIT`.
    pub fn from_env(
        lookup: &crate::config::secret::EnvLookup,
    ) -> Result<BatchSettings, BatchSettingsError> {
        let mut s = BatchSettings::default();
        if let Some(v) = lookup("PUSHWERK_BING_BATCH_MAX") {
            s.max = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_BATCH).contains(n))
                .ok_or_else(|| BatchSettingsError::Max(bounded(&v)))?;
        }
        if let Some(v) = lookup("PUSHWERK_BING_LINGER") {
            s.linger = humantime::parse_duration(v.trim())
                .ok()
                .filter(|d| *d <= MAX_LINGER)
                .ok_or_else(|| BatchSettingsError::Linger(bounded(&v)))?;
        }
        if let Some(v) = lookup("PUSHWERK_BING_CALL_RATE_WAIT") {
            s.call_rate_wait = humantime::parse_duration(v.trim())
                .ok()
                .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(600)).contains(d))
                .ok_or_else(|| BatchSettingsError::CallRateWait(bounded(&v)))?;
        }
        Ok(s)
    }
}

/// An outside value, cut short for an error message.
fn bounded(v: &str) -> String {
    v.chars().take(40).collect()
}

/// One delivery waiting in a batch for its outcome (and the request label).
struct Waiting {
    push: Box<RenderedPush>,
    reply: oneshot::Sender<(Outcome, String)>,
}

struct Open {
    /// Tells a linger timer whether the batch it was started for is still open.
    id: u64,
    waiting: Vec<Waiting>,
}

#[derive(Default)]
struct OpenBatches {
    next_id: u64,
    by_head: HashMap<String, Open>,
}

/// Collects prepared Bing conversions into batch requests (see the module
/// documentation).
pub struct Batcher {
    settings: BatchSettings,
    sender: Sender,
    endpoints: Endpoints,
    retry_after_cap: Duration,
    open: Mutex<OpenBatches>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("settings", &self.settings)
            .finish()
    }
}

/// What makes two requests the same but for their conversions: the URL and
/// every header (the access token and developer token included). Kept in
/// memory only, never shown.
fn head_key(request: &HttpRequest) -> String {
    let mut key = format!("{} {}\n", request.method, request.url);
    for (k, v) in &request.headers {
        key.push_str(&k.to_ascii_lowercase());
        key.push(':');
        key.push_str(v);
        key.push('\n');
    }
    key
}

impl Batcher {
    /// A batcher sending with `sender`.
    pub fn new(
        settings: BatchSettings,
        sender: Sender,
        endpoints: Endpoints,
        retry_after_cap: Duration,
    ) -> Batcher {
        Batcher {
            settings,
            sender,
            endpoints,
            retry_after_cap,
            open: Mutex::new(OpenBatches::default()),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> BatchSettings {
        self.settings
    }

    /// Sends the conversion of `push` (a rendered Bing target, `request` its
    /// single-conversion request) in the batch of its request head, and
    /// returns its own outcome and the request's label.
    pub async fn submit(
        self: &Arc<Self>,
        push: RenderedPush,
        request: &HttpRequest,
    ) -> (Outcome, String) {
        let label = format!(
            "{} {}",
            request.method,
            crate::net::url_for_display(&request.url)
        );
        let (tx, rx) = oneshot::channel();
        let key = head_key(request);
        let waiting = Waiting {
            push: Box::new(push),
            reply: tx,
        };
        let full = {
            let mut open = self.open.lock().expect("batch lock");
            let open = &mut *open;
            let id = open.next_id;
            let batch = open.by_head.entry(key.clone()).or_insert_with(|| Open {
                id,
                waiting: Vec::new(),
            });
            let first = batch.waiting.is_empty();
            batch.waiting.push(waiting);
            if first {
                open.next_id += 1;
            }
            if batch.waiting.len() >= self.settings.max || self.settings.linger.is_zero() {
                open.by_head.remove(&key).map(|b| b.waiting)
            } else {
                if first {
                    let this = self.clone();
                    let key = key.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(this.settings.linger).await;
                        let due = {
                            let mut open = this.open.lock().expect("batch lock");
                            match open.by_head.get(&key) {
                                Some(b) if b.id == id => open.by_head.remove(&key),
                                _ => None,
                            }
                        };
                        if let Some(batch) = due {
                            this.send(batch.waiting, label_of(&key)).await;
                        }
                    });
                }
                None
            }
        };
        if let Some(batch) = full {
            // Sent from a task of its own: the other deliveries of the batch
            // must get their answer even if this one's caller goes away.
            let this = self.clone();
            let label = label.clone();
            tokio::spawn(async move { this.send(batch, label).await });
        }
        match rx.await {
            Ok(answer) => answer,
            Err(_) => (
                Outcome::Retry {
                    delay: crate::targets::RetryDelay::Backoff,
                    status: None,
                    reason: "the batch request was abandoned".into(),
                    reference: None,
                },
                label,
            ),
        }
    }

    /// Sends one batch and hands each delivery its outcome.
    async fn send(&self, batch: Vec<Waiting>, label: String) {
        let items: Vec<_> = batch
            .iter()
            .filter_map(|w| match &w.push.target {
                RenderedTarget::BingAds(t) => Some((t, &*w.push)),
                _ => None,
            })
            .collect();
        let outcomes = if items.len() != batch.len() {
            vec![internal("a non-Bing delivery in a Bing batch"); batch.len()]
        } else {
            match prepare_batch(&items, &self.endpoints) {
                Err(e) => vec![internal(&e.to_string()); batch.len()],
                Ok(request) => {
                    tracing::debug!(conversions = batch.len(), "sending a Bing Ads batch");
                    match self.sender.send_http(&request, None).await {
                        Sent::Known(outcome) => vec![outcome; batch.len()],
                        Sent::Http(response) => classify_batch(
                            &response,
                            batch.len(),
                            self.retry_after_cap,
                            self.settings.call_rate_wait,
                        ),
                    }
                }
            }
        };
        for (w, outcome) in batch.into_iter().zip(outcomes) {
            let _ = w.reply.send((outcome, label.clone()));
        }
    }
}

fn internal(message: &str) -> Outcome {
    Outcome::Failed {
        status: None,
        code: Some("prepare".into()),
        message: message.to_owned(),
        items: Vec::new(),
        reference: None,
    }
}

/// `METHOD URL` of a head key (its first line).
fn label_of(key: &str) -> String {
    crate::net::url_for_display(key.lines().next().unwrap_or_default())
}

/// What a Bing push's requests share whatever the event: its account,
/// developer token, customer and ad account ids and base URL, when none of
/// them is templated. `None` for other pushes and for templated fields (the
/// batcher still joins their requests when they render the same).
fn static_head(push: &Push) -> Option<String> {
    let crate::targets::TargetSpec::BingAds(t) = &push.spec.target else {
        return None;
    };
    let fields = [
        t.developer_token.as_str(),
        t.customer_id.as_str(),
        t.customer_account_id.as_str(),
    ];
    if fields.iter().any(|f| f.contains("<<") || f.contains("<%")) {
        return None;
    }
    Some(format!(
        "{}\n{}\n{}\n{}\n{}",
        t.account,
        fields[0],
        fields[1],
        fields[2],
        t.base_url.as_deref().unwrap_or_default()
    ))
}

/// The due jobs that go out in the same Bing request as `lead` (just taken
/// from `schedule`): up to the batch size less one, taken without a slot of
/// their own. Empty unless `lead` is a Bing push with a static request head.
pub fn take_riders(
    catalog: &Catalog,
    schedule: &Mutex<Scheduler>,
    lead: &Job,
    now: DateTime<Utc>,
    settings: BatchSettings,
) -> Vec<Job> {
    let Some(head) = catalog.push(&lead.push).and_then(static_head) else {
        return Vec::new();
    };
    // Whether each push seen shares the lead's head, worked out once.
    let mut same: HashMap<String, bool> = HashMap::new();
    let fits = |job: &Job| {
        if let Some(fit) = same.get(&job.push) {
            return *fit;
        }
        let fit = catalog
            .push(&job.push)
            .and_then(static_head)
            .is_some_and(|h| h == head);
        same.insert(job.push.clone(), fit);
        fit
    };
    schedule
        .lock()
        .expect("schedule lock")
        .take_riders(now, settings.max.saturating_sub(1), fits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<BatchSettings, BatchSettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BatchSettings::from_env(&move |name: &str| vars.get(name).cloned())
    }

    #[test]
    fn settings_come_from_the_environment_within_bounds() {
        assert_eq!(from(&[]), Ok(BatchSettings::default()));
        assert_eq!(
            from(&[
                ("PUSHWERK_BING_BATCH_MAX", "50"),
                ("PUSHWERK_BING_LINGER", "0ms"),
                ("PUSHWERK_BING_CALL_RATE_WAIT", "2s")
            ]),
            Ok(BatchSettings {
                max: 50,
                linger: Duration::ZERO,
                call_rate_wait: Duration::from_secs(2)
            })
        );
        assert_eq!(BatchSettings::default().call_rate_wait, CALL_RATE_WAIT);
        for bad in ["0s", "999ms", "11m", "soon"] {
            let e = from(&[("PUSHWERK_BING_CALL_RATE_WAIT", bad)]).unwrap_err();
            assert_eq!(e, BatchSettingsError::CallRateWait(bad.to_owned()));
        }
        for bad in ["0", "1001", "many"] {
            assert!(matches!(
                from(&[("PUSHWERK_BING_BATCH_MAX", bad)]),
                Err(BatchSettingsError::Max(_))
            ));
        }
        for bad in ["11s", "soon"] {
            let e = from(&[("PUSHWERK_BING_LINGER", bad)]).unwrap_err();
            assert!(e.to_string().contains("PUSHWERK_BING_LINGER"), "{e}");
        }
    }
}
