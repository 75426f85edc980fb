//! The resolver: the current access token of an account, refreshed when
//! needed.
//!
//! - A stored token is used while it is valid for more than a margin: the
//!   skew (default 5 minutes), or a quarter of the token's lifetime if that
//!   is shorter ([`TokenRecord::margin`]).
//! - Otherwise one refresh-token grant is made, whatever the number of
//!   concurrent callers (single-flight per account: a per-account lock, and
//!   a re-check of the stored state after taking it; a token that another
//!   caller obtained meanwhile — a higher `generation` than the one seen
//!   before waiting — is used as long as it has not expired).
//! - A refresh asks for no more scope than was granted ([`refresh_scope`](refresh::refresh_scope)).
//! - The new refresh token (Microsoft rotates it on every use; a response
//!   without one keeps the old) and access token are written and flushed
//!   *before* the token is handed out.
//! - A refused grant (`invalid_grant`, `invalid_client`,
//!   `interaction_required`, …) puts the account in `needs_reauth`: no more
//!   token requests until a person imports or logs in again.
//! - Timeouts, 5xx, 429 and `temporarily_unavailable` start exponential
//!   backoff with jitter (or the server's `Retry-After`, capped); until the
//!   next step no token request is made, callers get `Unavailable` with the
//!   time to wait.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio::time::Instant;

use super::client::{expiry_after, TokenClient, MAX_LIFETIME_SECS};
use super::record::{AccountState, TokenRecord};
use super::token_store::TokenStore;
use super::OAuthError;
use crate::config::{OAuthAccount, Secret};

mod refresh;
mod types;

pub use refresh::is_microsoft_identity;
use refresh::{Flight, Want};
pub use types::{AccountStatus, ImportError, ImportedTokens, ResolverSettings};

/// Hands out access tokens; see the module documentation.
pub struct Resolver {
    tokens: TokenStore,
    client: TokenClient,
    settings: ResolverSettings,
    accounts: RwLock<Arc<BTreeMap<String, OAuthAccount>>>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Flight>>>>,
    cache: RwLock<HashMap<String, TokenRecord>>,
    token_requests: AtomicU64,
    outcomes: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Resolver {
    /// A resolver over `tokens` for the accounts of a catalog.
    pub fn new(
        tokens: TokenStore,
        accounts: BTreeMap<String, OAuthAccount>,
        settings: ResolverSettings,
    ) -> Resolver {
        let client = TokenClient::new(settings.request_timeout);
        Resolver {
            tokens,
            client,
            settings,
            accounts: RwLock::new(Arc::new(accounts)),
            flights: Mutex::new(HashMap::new()),
            cache: RwLock::new(HashMap::new()),
            token_requests: AtomicU64::new(0),
            outcomes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Replaces the account definitions (after the folder changed).
    pub fn set_accounts(&self, accounts: BTreeMap<String, OAuthAccount>) {
        *self.accounts.write().expect("accounts lock") = Arc::new(accounts);
    }

    /// Token requests made since start (for metrics and tests).
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    /// Token requests by account and outcome (`ok`, `refused`, `unavailable`), for metrics.
    pub fn token_request_outcomes(&self) -> BTreeMap<(String, &'static str), u64> {
        self.outcomes.lock().expect("outcomes lock").clone()
    }

    fn count(&self, account: &str, outcome: &'static str) {
        *self
            .outcomes
            .lock()
            .expect("outcomes lock")
            .entry((account.to_owned(), outcome))
            .or_default() += 1;
    }

    /// Whether token state is encrypted at rest.
    pub fn is_encrypted(&self) -> bool {
        self.tokens.is_encrypted()
    }

    fn account(&self, name: &str) -> Result<OAuthAccount, OAuthError> {
        self.accounts
            .read()
            .expect("accounts lock")
            .get(name)
            .cloned()
            .ok_or_else(|| OAuthError::UnknownAccount(name.to_owned()))
    }

    fn flight(&self, account: &str) -> Arc<tokio::sync::Mutex<Flight>> {
        self.flights
            .lock()
            .expect("flights lock")
            .entry(account.to_owned())
            .or_default()
            .clone()
    }

    fn record(&self, account: &str) -> Result<Option<TokenRecord>, OAuthError> {
        if let Some(r) = self.cache.read().expect("cache lock").get(account) {
            return Ok(Some(r.clone()));
        }
        let loaded = self.tokens.get(account)?;
        if let Some(r) = &loaded {
            self.cache
                .write()
                .expect("cache lock")
                .entry(account.to_owned())
                .or_insert_with(|| r.clone());
        }
        Ok(loaded)
    }

    fn save(&self, record: TokenRecord, durable: bool) -> Result<(), OAuthError> {
        // One lock across the write and the cache update, so that a
        // concurrent `touch` cannot write an older record over this one.
        let mut cache = self.cache.write().expect("cache lock");
        let result = self.tokens.put(&record, durable);
        cache.insert(record.account.clone(), record);
        result
    }

    fn skew(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.skew).unwrap_or_default()
    }

    /// Marks a use; written at most once a minute per account.
    fn touch(&self, account: &str, now: DateTime<Utc>) {
        // The hot path: a use within the last second changes nothing, so a
        // shared lock suffices; the exclusive one only once a second.
        let recent = |t: DateTime<Utc>| now - t < chrono::Duration::seconds(1);
        if let Some(r) = self.cache.read().expect("cache lock").get(account) {
            if r.last_use.is_some_and(recent) {
                return;
            }
        }
        let mut cache = self.cache.write().expect("cache lock");
        if let Some(r) = cache.get_mut(account) {
            let stale = r
                .last_use
                .is_none_or(|t| now - t > chrono::Duration::seconds(60));
            r.last_use = Some(now);
            if stale {
                let _ = self.tokens.put(r, false);
            }
        }
    }

    /// The usable access token of `account`, refreshing it if needed.
    pub async fn access_token(&self, account: &str) -> Result<Secret, OAuthError> {
        self.token(account, Want::Valid).await
    }

    /// Like [`Resolver::access_token`], but waits through backoff steps for up to `max_wait`.
    pub async fn access_token_waiting(
        &self,
        account: &str,
        max_wait: Duration,
    ) -> Result<Secret, OAuthError> {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.access_token(account).await {
                Err(OAuthError::Unavailable { retry_in, .. })
                    if Instant::now() + retry_in <= deadline =>
                {
                    tokio::time::sleep(retry_in).await;
                }
                other => return other,
            }
        }
    }

    /// A target refused `rejected` (401): refresh once, unless someone has
    /// already replaced that token.
    pub async fn refresh_rejected(
        &self,
        account: &str,
        rejected: &str,
    ) -> Result<Secret, OAuthError> {
        self.token(account, Want::Replace(rejected)).await
    }

    /// Refreshes now, whatever the token's expiry (`oauth refresh`, keep-alive).
    pub async fn refresh_now(&self, account: &str) -> Result<Secret, OAuthError> {
        self.token(account, Want::Force).await
    }

    /// The stored access token if it is still valid, without any token
    /// request (dry-run with `--show-secrets`).
    pub fn stored_token(&self, account: &str) -> Result<Secret, OAuthError> {
        let record = self
            .record(account)?
            .ok_or_else(|| OAuthError::NoTokens(account.to_owned()))?;
        if let AccountState::NeedsReauth { reason } = &record.state {
            return Err(OAuthError::NeedsReauth {
                account: account.to_owned(),
                reason: reason.clone(),
            });
        }
        record
            .fresh_access_token(Utc::now(), chrono::Duration::zero())
            .map(|t| Secret::new(format!("oauth.{account}"), t))
            .ok_or_else(|| OAuthError::StoredTokenExpired(account.to_owned()))
    }

    /// Tokens for every account in `accounts`, for a render.
    pub async fn tokens_for(
        &self,
        accounts: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, String>, OAuthError> {
        let mut out = BTreeMap::new();
        for a in accounts {
            out.insert(a.clone(), self.access_token(a).await?.expose().to_owned());
        }
        Ok(out)
    }

    /// Puts an account into `needs_reauth` (a target refused even a freshly
    /// refreshed token: Bing Ads 105/109 twice).
    pub async fn mark_needs_reauth(&self, account: &str, reason: &str) -> Result<(), OAuthError> {
        let flight = self.flight(account);
        let _flight = flight.lock().await;
        let mut record = self
            .record(account)?
            .unwrap_or_else(|| TokenRecord::new(account));
        record.state = AccountState::NeedsReauth {
            reason: reason.to_owned(),
        };
        tracing::error!(account, reason, "account needs a new login");
        self.save(record, true)
    }

    /// Stores tokens given by hand or by a login, and clears `needs_reauth`.
    pub async fn import(&self, account: &str, tokens: ImportedTokens) -> Result<(), OAuthError> {
        self.account(account)?;
        let flight = self.flight(account);
        let mut flight = flight.lock().await;
        let now = Utc::now();
        // A record this key cannot open (sealed with a lost key) is
        // replaced: new tokens are how it is mended.
        let mut record = match self.record(account) {
            Ok(record) => record,
            Err(OAuthError::Seal(e)) => {
                tracing::warn!(account, "replacing a token record that cannot be read: {e}");
                None
            }
            Err(e) => return Err(e),
        }
        .unwrap_or_else(|| TokenRecord::new(account));
        record.expires_at = match (&tokens.access_token, tokens.expires_at, tokens.expires_in) {
            (None, _, _) => None,
            (Some(_), Some(at), _) => Some(at.min(expiry_after(now, MAX_LIFETIME_SECS))),
            (Some(_), None, Some(secs)) => Some(expiry_after(now, secs)),
            // Unknown expiry: refresh before the first use.
            (Some(_), None, None) => Some(now),
        };
        record.access_token = tokens.access_token;
        record.refresh_token = Some(tokens.refresh_token);
        record.scope = tokens.scope.or(record.scope);
        record.last_refresh = Some(now);
        record.last_error = None;
        record.state = AccountState::Ok;
        record.generation += 1;
        self.save(record, true)?;
        *flight = Flight::default();
        tracing::info!(account, "tokens imported");
        Ok(())
    }

    /// Accounts due for a keep-alive refresh at `now`.
    pub fn keep_alive_due(&self, now: DateTime<Utc>) -> Result<Vec<String>, OAuthError> {
        let period = chrono::Duration::from_std(self.settings.keep_alive_after).unwrap_or_default();
        let accounts = self.accounts.read().expect("accounts lock").clone();
        let mut due = Vec::new();
        for name in accounts.keys() {
            if let Some(r) = self.record(name)? {
                let ok = r.state == AccountState::Ok && r.refresh_token.is_some();
                if ok && r.last_refresh.is_none_or(|t| now - t >= period) {
                    due.push(name.clone());
                }
            }
        }
        Ok(due)
    }

    /// Refreshes every account due for keep-alive; returns each outcome.
    pub async fn keep_alive(&self) -> Vec<(String, Result<(), OAuthError>)> {
        let due = match self.keep_alive_due(Utc::now()) {
            Ok(d) => d,
            Err(e) => return vec![(String::new(), Err(e))],
        };
        let mut out = Vec::new();
        for name in due {
            let result = self.refresh_now(&name).await.map(|_| ());
            out.push((name, result));
        }
        out
    }

    /// The status of every configured or stored account.
    pub fn status(&self, today: NaiveDate) -> Result<Vec<AccountStatus>, OAuthError> {
        let accounts = self.accounts.read().expect("accounts lock").clone();
        let mut names: BTreeSet<String> = accounts.keys().cloned().collect();
        names.extend(self.tokens.accounts()?);
        let mut out = Vec::new();
        for name in names {
            // A record this key cannot open (sealed with another key) is
            // that account's problem, reported as its state; the others
            // are listed as usual.
            let (record, unreadable) = match self.record(&name) {
                Ok(record) => (record, None),
                Err(OAuthError::Seal(e)) => (None, Some(e.to_string())),
                Err(e) => return Err(e),
            };
            let spec = accounts.get(&name).map(|a| &a.spec);
            let secret_expires = spec.and_then(|s| s.client_secret_expires);
            let mut warnings = Vec::new();
            if let Some(exp) = secret_expires {
                let days = (exp - today).num_days();
                if days < 0 {
                    warnings.push(format!("client secret expired on {exp}: create a new one in Azure and update the account"));
                } else if days <= self.settings.secret_warning_days {
                    warnings.push(format!("client secret expires on {exp}, in {days} days: create a new one in Azure before then"));
                }
            }
            if spec.is_none() {
                warnings.push("stored tokens of an account no file defines".to_owned());
            }
            let (state, reason) = match record.as_ref().map(|r| &r.state) {
                None if unreadable.is_some() => ("unreadable".to_owned(), unreadable),
                None => ("no_tokens".to_owned(), None),
                Some(AccountState::Ok) => ("ok".to_owned(), None),
                Some(AccountState::NeedsReauth { reason }) => {
                    ("needs_reauth".to_owned(), Some(reason.clone()))
                }
            };
            out.push(AccountStatus {
                account: name.clone(),
                configured: spec.is_some(),
                state,
                reason,
                access_token_expires: record.as_ref().and_then(|r| r.expires_at),
                has_refresh_token: record.as_ref().is_some_and(|r| r.refresh_token.is_some()),
                last_refresh: record.as_ref().and_then(|r| r.last_refresh),
                last_use: record.as_ref().and_then(|r| r.last_use),
                last_error: record.as_ref().and_then(|r| {
                    r.last_error
                        .as_ref()
                        .map(|e| format!("{} at {}", e, e.at.to_rfc3339()))
                }),
                client_secret_expires: secret_expires,
                warnings,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
