//! One delivery attempt of one push for one event, the way the daemon and
//! `pushwerk send` make it: tokens from the resolver → render → prepare →
//! send → classify, with one refresh-and-retry when a target refuses the
//! access token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::bing_batch::{BatchSettings, Batcher};
use super::send::{Sender, Sent};
use crate::config::{Catalog, Push};
use crate::event::Event;
use crate::oauth::{OAuthError, Resolver};
use crate::pipeline::{self, PreparedPush, SecretMode};
use crate::targets::{Endpoints, Outcome, Prepared, RenderedTarget, RetryDelay, TargetSpec};

/// What an attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The outcome.
    pub outcome: Outcome,
    /// Requests sent to the target (2 after a refresh-and-retry).
    pub requests: u32,
    /// `METHOD URL` or `SMTP host:port` of the last request (no secrets: tokens go in headers).
    pub target: Option<String>,
    /// How long the attempt took.
    pub duration: Duration,
}

/// The result of [`Deliverer::deliver`].
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The push does not apply to the event.
    Skipped(String),
    /// An attempt was made (or could not be: the outcome says why).
    Attempted(Attempt),
}

/// Delivers pushes.
pub struct Deliverer {
    resolver: Arc<Resolver>,
    sender: Sender,
    endpoints: Endpoints,
    retry_after_cap: Duration,
    /// Packs Bing conversions ready together into one request.
    bing: Arc<Batcher>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

fn failed(code: &str, message: String) -> Outcome {
    Outcome::Failed {
        status: None,
        code: Some(code.to_owned()),
        message,
        items: Vec::new(),
        reference: None,
    }
}

/// The outcome of a token that could not be had.
fn token_outcome(e: OAuthError) -> Outcome {
    match e {
        OAuthError::Unavailable { retry_in, .. } => Outcome::Retry {
            delay: RetryDelay::After(retry_in),
            status: None,
            reason: e.to_string(),
            reference: None,
        },
        OAuthError::NeedsReauth { .. } => failed("needs_reauth", e.to_string()),
        // The token store could not write (a full disk): the refreshed
        // tokens are kept in memory and the next attempt uses them; the
        // job is not the problem, so it is retried, not dead-lettered.
        OAuthError::Store(_) => Outcome::Retry {
            delay: RetryDelay::Backoff,
            status: None,
            reason: e.to_string(),
            reference: None,
        },
        other => failed("token", other.to_string()),
    }
}

impl Deliverer {
    /// A deliverer with its resolver, transports and endpoints. Bing
    /// conversions are batched as `PUSHWERK_BING_BATCH_MAX` and
    /// `PUSHWERK_BING_LINGER` say (an unusable value is reported and the
    /// default kept).
    pub fn new(
        resolver: Arc<Resolver>,
        sender: Sender,
        endpoints: Endpoints,
        retry_after_cap: Duration,
    ) -> Deliverer {
        let settings =
            BatchSettings::from_env(&crate::config::secret::process_env).unwrap_or_else(|e| {
                tracing::warn!("{e}; using the default");
                BatchSettings::default()
            });
        Deliverer::with_batching(resolver, sender, endpoints, retry_after_cap, settings)
    }

    /// [`Deliverer::new`] with these Bing batch settings.
    pub fn with_batching(
        resolver: Arc<Resolver>,
        sender: Sender,
        endpoints: Endpoints,
        retry_after_cap: Duration,
        settings: BatchSettings,
    ) -> Deliverer {
        let bing = Arc::new(Batcher::new(
            settings,
            sender.clone(),
            endpoints.clone(),
            retry_after_cap,
        ));
        Deliverer {
            resolver,
            sender,
            endpoints,
            retry_after_cap,
            bing,
        }
    }

    /// How Bing conversions are batched.
    pub fn bing_batch(&self) -> BatchSettings {
        self.bing.settings()
    }

    /// The resolver (for `oauth` state and metrics).
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// One attempt (attempt number `attempt`, from 1) of `push` for `event`.
    pub async fn deliver(
        &self,
        catalog: &Catalog,
        push: &Push,
        event: &Event,
        attempt: u32,
    ) -> Delivery {
        let started = Instant::now();
        let mut requests = 0;
        let mut refreshed = false;
        loop {
            let tokens = match self.resolver.tokens_for(&push.compiled.accounts).await {
                Ok(t) => t,
                Err(e) => return self.done(token_outcome(e), requests, None, started),
            };
            let input = pipeline::Input {
                catalog,
                push,
                event,
                attempt,
                now: Utc::now(),
                tokens: &tokens,
                secrets: SecretMode::Real,
                endpoints: &self.endpoints,
            };
            let PreparedPush { rendered, request } = match pipeline::run(input) {
                Ok(pipeline::Outcome::Skipped(reason)) => return Delivery::Skipped(reason),
                Ok(pipeline::Outcome::Prepared(p)) => *p,
                Err(e) => {
                    return self.done(failed(e.step(), e.to_string()), requests, None, started)
                }
            };
            requests += 1;
            let (outcome, target) = match (&rendered.target, &request) {
                // Joins the batch of its request; the outcome is its own.
                (TargetSpec::BingAds(_), Prepared::Http(http)) => {
                    let http = http.clone();
                    self.bing.submit(rendered, &http).await
                }
                _ => {
                    self.send(
                        &rendered.target,
                        &request,
                        !push.compiled.accounts.is_empty(),
                    )
                    .await
                }
            };
            let labels: Vec<String> = tokens.keys().map(|a| format!("oauth.{a}")).collect();
            let secrets = labels
                .iter()
                .map(String::as_str)
                .zip(tokens.values().map(String::as_str))
                .chain(push.compiled.secrets.iter().filter_map(|(label, secret)| {
                    secret.as_ref().ok().map(|s| (label.as_str(), s.expose()))
                }));
            let outcome = outcome.masked(secrets);
            match outcome {
                Outcome::RefreshAndRetry {
                    status,
                    reason,
                    reference,
                } => {
                    let presented = push.spec.target.presented_accounts(&push.compiled.accounts);
                    if refreshed {
                        // A freshly refreshed token was refused too: a
                        // credential problem no retry can mend.
                        let message = format!("the target refused a freshly refreshed access token ({status}): {reason}");
                        if matches!(push.spec.target, TargetSpec::BingAds(_)) {
                            for account in &presented {
                                let _ = self.resolver.mark_needs_reauth(account, &message).await;
                            }
                        }
                        let outcome = Outcome::Failed {
                            status: Some(status),
                            code: Some("token_refused".to_owned()),
                            message,
                            items: Vec::new(),
                            reference,
                        };
                        return self.done(outcome, requests, Some(target), started);
                    }
                    refreshed = true;
                    tracing::info!(push = %push.name(), status, "target refused the access token; refreshing once");
                    for account in &presented {
                        let used = tokens.get(account).cloned().unwrap_or_default();
                        if let Err(e) = self.resolver.refresh_rejected(account, &used).await {
                            return self.done(token_outcome(e), requests, Some(target), started);
                        }
                    }
                }
                outcome => return self.done(outcome, requests, Some(target), started),
            }
        }
    }

    /// Attempts until delivered, failed for good, `max_attempts` made, or
    /// the next wait would pass `max_age` since the first attempt. Waits
    /// honour the target's `Retry-After` (capped) or back off. `on_attempt`
    /// sees every attempt as it happens.
    #[allow(clippy::too_many_arguments)]
    pub async fn deliver_with_retries(
        &self,
        catalog: &Catalog,
        push: &Push,
        event: &Event,
        max_attempts: u32,
        max_age: Duration,
        backoff: &crate::backoff::Backoff,
        mut on_attempt: impl FnMut(u32, &Attempt),
    ) -> Delivery {
        let clock = crate::clock::Clock::system();
        let policy = crate::retry::Policy {
            max_attempts,
            max_age,
            backoff: *backoff,
            retry_after_cap: self.retry_after_cap,
        };
        let first_at = clock.now();
        let mut attempt = 1;
        loop {
            let delivery = self.deliver(catalog, push, event, attempt).await;
            let Delivery::Attempted(a) = &delivery else {
                return delivery;
            };
            on_attempt(attempt, a);
            let tries = crate::retry::Tries { attempt, first_at };
            match crate::retry::decide(&a.outcome, tries, &policy, clock.now()) {
                crate::retry::Decision::Retry(at) => clock.sleep_until(at).await,
                crate::retry::Decision::Done | crate::retry::Decision::Dead(_) => return delivery,
            }
            attempt += 1;
        }
    }

    /// [`Deliverer::deliver_with_retries`] for several events at once
    /// (`pushwerk send --event a.json --event b.json`): the deliveries run
    /// together, so Bing conversions share batch requests. `on_attempt`
    /// sees the event's index with every attempt. One delivery per event,
    /// in order.
    #[allow(clippy::too_many_arguments)]
    pub async fn deliver_all_with_retries(
        &self,
        catalog: &Catalog,
        push: &Push,
        events: &[Event],
        max_attempts: u32,
        max_age: Duration,
        backoff: &crate::backoff::Backoff,
        on_attempt: &(dyn Fn(usize, u32, &Attempt) + Sync),
    ) -> Vec<Delivery> {
        let runs = events.iter().enumerate().map(|(i, event)| {
            self.deliver_with_retries(
                catalog,
                push,
                event,
                max_attempts,
                max_age,
                backoff,
                move |n, a| on_attempt(i, n, a),
            )
        });
        join_all(runs.collect()).await
    }

    fn done(
        &self,
        outcome: Outcome,
        requests: u32,
        target: Option<String>,
        started: Instant,
    ) -> Delivery {
        Delivery::Attempted(Attempt {
            outcome,
            requests,
            target,
            duration: started.elapsed(),
        })
    }

    async fn send(
        &self,
        target: &RenderedTarget,
        prepared: &Prepared,
        uses_token: bool,
    ) -> (Outcome, String) {
        match (prepared, target) {
            (Prepared::Http(request), _) => {
                let timeout = match target {
                    TargetSpec::Http(t) => t.timeout.map(|d| d.0),
                    _ => None,
                };
                // A generic HTTP URL may carry a secret in its path (webhook
                // keys): only its origin is shown. Microsoft's paths are not.
                let shown = match target {
                    TargetSpec::Http(_) => origin(&request.url),
                    _ => crate::net::url_for_display(&request.url),
                };
                let label = format!("{} {shown}", request.method);
                let response = match self.sender.send_http(request, timeout).await {
                    Sent::Known(outcome) => return (outcome, label),
                    Sent::Http(r) => r,
                };
                let cap = self.retry_after_cap;
                (target.classify_http(uses_token, &response, cap), label)
            }
            (Prepared::Smtp(mail), TargetSpec::Smtp(t)) => {
                let label = format!("SMTP {}:{}", mail.host, mail.port);
                (
                    self.sender.send_smtp(mail, t.timeout.map(|d| d.0)).await,
                    label,
                )
            }
            (Prepared::Smtp(_), _) => unreachable!("only SMTP targets prepare SMTP mails"),
        }
    }
}

/// Runs `futures` together on this task; their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// `scheme://host[:port]` of a URL, for logs.
fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "<url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_store_that_cannot_write_retries_the_job() {
        // Disk full while a refreshed token was written: the job was
        // dead-lettered although nothing was wrong with it.
        let e = OAuthError::Store(crate::store::StoreError::Unavailable(
            "No space left on device (os error 28)".into(),
        ));
        assert!(
            matches!(
                token_outcome(e),
                Outcome::Retry {
                    delay: RetryDelay::Backoff,
                    ..
                }
            ),
            "a store error is transient"
        );
        let e = OAuthError::NoTokens("crm".into());
        assert!(matches!(token_outcome(e), Outcome::Failed { .. }));
    }
}
