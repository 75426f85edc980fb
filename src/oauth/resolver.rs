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
//! - A refresh asks for no more scope than was granted ([`refresh_scope`]).
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
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::client::{expiry_after, TokenClient, TokenFailure, TokenResponse, MAX_LIFETIME_SECS};
use super::record::{AccountState, TokenRecord};
use super::token_store::TokenStore;
use super::OAuthError;
use crate::config::{OAuthAccount, Secret};

/// Whether `token_url` is the Microsoft identity platform's (the public
/// cloud, the US government and China clouds, and the consumer endpoint).
pub fn is_microsoft_identity(token_url: &str) -> bool {
    const HOSTS: [&str; 5] = [
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.partner.microsoftonline.cn",
        "login.chinacloudapi.cn",
        "login.live.com",
    ];
    url::Url::parse(token_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|h| HOSTS.contains(&h.as_str()))
}

/// The `scope` of a refresh-token request: never more than was granted.
///
/// - Microsoft: the configured scope, as before. Microsoft reports the
///   granted scope in its own spelling (`https://graph.microsoft.com/Mail.Send`
///   for `Mail.Send`) and without `offline_access`, accepts any subset of the
///   consent, and its refresh example carries `offline_access`
///   (`../shared/reference/microsoft-apis.md` §1.5).
/// - Everyone else: the configured scopes that the last token response
///   granted, in the configured order. A provider that granted fewer
///   (no `offline_access` without `prompt=consent`, OpenID Connect Core
///   §11) refuses a refresh asking for more (`invalid_scope`). None of them
///   granted: no `scope` at all, which means "as originally granted"
///   (RFC 6749 §6). Granted scope unknown (a bare imported refresh token):
///   the configured scope.
fn refresh_scope(account: &OAuthAccount, granted: Option<&str>) -> Option<String> {
    let configured = &account.spec.scope;
    if is_microsoft_identity(&account.spec.token_url) {
        return Some(configured.clone());
    }
    let Some(granted) = granted else {
        return Some(configured.clone());
    };
    let granted: BTreeSet<&str> = granted.split_whitespace().collect();
    let kept: Vec<&str> = configured
        .split_whitespace()
        .filter(|s| granted.contains(s))
        .collect();
    (!kept.is_empty()).then(|| kept.join(" "))
}

/// Tunables of the resolver.
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    /// A token valid for less than this is refreshed first (default 5 min),
    /// but at most a quarter of the token's lifetime
    /// ([`TokenRecord::margin`]).
    pub skew: Duration,
    /// Refresh an account not refreshed for this long (default 24 h), so a
    /// Microsoft refresh token never reaches its 90-day inactivity expiry.
    pub keep_alive_after: Duration,
    /// First backoff step after a transient failure (default 1 s).
    pub backoff_base: Duration,
    /// Longest backoff step (default 5 min).
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured (default 10 min).
    pub retry_after_cap: Duration,
    /// Token request timeout (default 30 s).
    pub request_timeout: Duration,
    /// Warn when a client secret expires within this many days (default 30).
    pub secret_warning_days: i64,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            skew: Duration::from_secs(300),
            keep_alive_after: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            retry_after_cap: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            secret_warning_days: 30,
        }
    }
}

/// Tokens given by hand (`oauth import`): what a token endpoint returned.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedTokens {
    /// The access token (optional: with only a refresh token, the first use refreshes).
    #[serde(default, deserialize_with = "one_token_or_none")]
    pub access_token: Option<String>,
    /// The refresh token (one word: an empty or blank one is refused, so
    /// that a bad paste cannot replace a good token).
    #[serde(deserialize_with = "one_token")]
    pub refresh_token: String,
    /// Lifetime of the access token in seconds, as the token endpoint says
    /// it (clamped to `0..=`[`MAX_LIFETIME_SECS`]).
    #[serde(default, deserialize_with = "super::client::lifetime_secs")]
    pub expires_in: Option<u64>,
    /// Or the expiry itself (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Granted scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// Ignored fields of a pasted token response.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Ignored fields of a pasted token response (read leniently, clamped).
    #[serde(default, deserialize_with = "super::client::lifetime_secs")]
    pub ext_expires_in: Option<u64>,
    /// Ignored fields of a pasted token response.
    #[serde(default)]
    pub id_token: Option<String>,
}

/// A token from outside: one word of printable characters, never empty
/// (the value itself is never put in the error).
fn one_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let token = text.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(serde::de::Error::custom(
            "a token must be one word of printable characters, not empty",
        ));
    }
    Ok(token.to_owned())
}

/// [`one_token`] for an optional token (`null` or absent is none).
fn one_token_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Token(#[serde(deserialize_with = "one_token")] String);
    Ok(Option::<Token>::deserialize(d)?.map(|t| t.0))
}

impl std::fmt::Debug for ImportedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedTokens")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What `oauth status` shows of one account. Never a token.
#[derive(Debug, Clone, Serialize)]
pub struct AccountStatus {
    /// The account.
    pub account: String,
    /// Whether the folder defines it.
    pub configured: bool,
    /// `ok`, `needs_reauth` or `no_tokens`.
    pub state: String,
    /// Why it needs a new login.
    pub reason: Option<String>,
    /// When the access token expires.
    pub access_token_expires: Option<DateTime<Utc>>,
    /// Whether a refresh token is stored.
    pub has_refresh_token: bool,
    /// Last successful refresh.
    pub last_refresh: Option<DateTime<Utc>>,
    /// Last use by a push.
    pub last_use: Option<DateTime<Utc>>,
    /// Last token-endpoint error.
    pub last_error: Option<String>,
    /// When the client secret expires.
    pub client_secret_expires: Option<NaiveDate>,
    /// Things to act on (a secret about to expire).
    pub warnings: Vec<String>,
}

/// What a caller needs from [`Resolver::token`].
#[derive(Clone, Copy)]
enum Want<'a> {
    /// Any token valid beyond the skew.
    Valid,
    /// A token other than this one, which a target refused.
    Replace(&'a str),
    /// A newly refreshed token.
    Force,
}

#[derive(Default)]
struct Flight {
    failures: u32,
    next_attempt: Option<Instant>,
    last_reason: String,
}

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

    async fn token(&self, account_name: &str, want: Want<'_>) -> Result<Secret, OAuthError> {
        let label = format!("oauth.{account_name}");
        let now = Utc::now();
        // The generation seen before waiting for the lock: a higher one
        // after it means someone refreshed meanwhile, and that token is
        // used, whatever its lifetime (single-flight).
        let mut seen = None;
        if matches!(want, Want::Valid | Want::Replace(_)) {
            if let Some(r) = self.record(account_name)? {
                seen = Some(r.generation);
                if matches!(want, Want::Valid) && r.state == AccountState::Ok {
                    if let Some(t) = r.fresh_access_token(now, self.skew()) {
                        let token = Secret::new(&label, t);
                        self.touch(account_name, now);
                        return Ok(token);
                    }
                }
            }
        }
        let account = self.account(account_name)?;
        let flight = self.flight(account_name);
        let mut flight = flight.lock().await;
        // #15 hook: on a store shared by several nodes, one refresh per
        // account cluster-wide (a lease row), and the record read afresh
        // from the store, where another node may have put newer tokens.
        let _cluster = self
            .tokens
            .lock_refresh(
                account_name,
                self.settings.request_timeout + Duration::from_secs(5),
            )
            .await?;
        if _cluster.is_some() {
            self.cache.write().expect("cache lock").remove(account_name);
        }
        // Re-check: another caller may have refreshed while we waited.
        let now = Utc::now();
        let record = self
            .record(account_name)?
            .ok_or_else(|| OAuthError::NoTokens(account_name.to_owned()))?;
        if let AccountState::NeedsReauth { reason } = &record.state {
            return Err(OAuthError::NeedsReauth {
                account: account_name.to_owned(),
                reason: reason.clone(),
            });
        }
        let refreshed_meanwhile = seen.is_some_and(|g| record.generation > g);
        let candidate = if refreshed_meanwhile {
            record.unexpired_access_token(now)
        } else {
            record.fresh_access_token(now, self.skew())
        };
        if let Some(t) = candidate {
            let usable = match want {
                Want::Valid => true,
                Want::Replace(old) => old != t,
                Want::Force => false,
            };
            if usable {
                self.touch(account_name, now);
                return Ok(Secret::new(&label, t));
            }
        }
        if let Some(at) = flight.next_attempt {
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                return Err(OAuthError::Unavailable {
                    account: account_name.to_owned(),
                    retry_in: wait,
                    reason: flight.last_reason.clone(),
                });
            }
        }
        self.refresh_locked(&account, &mut flight, record).await
    }

    async fn refresh_locked(
        &self,
        account: &OAuthAccount,
        flight: &mut Flight,
        mut record: TokenRecord,
    ) -> Result<Secret, OAuthError> {
        let name = account.spec.name.clone();
        let refresh_token = record
            .refresh_token
            .clone()
            .ok_or_else(|| OAuthError::NoTokens(name.clone()))?;
        let mut form = BTreeMap::new();
        for (k, v) in &account.extra {
            let v = v.as_ref().map_err(|e| OAuthError::Secret {
                account: name.clone(),
                source: e.clone(),
            })?;
            form.insert(k.clone(), v.expose().to_owned());
        }
        form.insert("grant_type".into(), "refresh_token".into());
        form.insert("refresh_token".into(), refresh_token);
        form.insert("client_id".into(), account.spec.client_id.clone());
        if let Some(scope) = refresh_scope(account, record.scope.as_deref()) {
            form.insert("scope".into(), scope);
        }
        if let Some(secret) = &account.client_secret {
            let secret = secret.as_ref().map_err(|e| OAuthError::Secret {
                account: name.clone(),
                source: e.clone(),
            })?;
            form.insert("client_secret".into(), secret.expose().to_owned());
        }
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let result = self.client.request(&account.spec.token_url, &form).await;
        drop(form);
        let now = Utc::now();
        match result {
            Ok(response) => {
                let token = self.apply_response(&mut record, response, now);
                record.generation += 1;
                self.save(record, true)?;
                *flight = Flight::default();
                self.count(&name, "ok");
                tracing::info!(account = %name, "access token refreshed");
                Ok(Secret::new(format!("oauth.{name}"), token))
            }
            Err(TokenFailure::Rejected(error)) => {
                let reason = error.to_string();
                tracing::error!(account = %name, error = %reason, "token endpoint refused the grant; the account needs a new login");
                self.count(&name, "refused");
                record.state = AccountState::NeedsReauth {
                    reason: reason.clone(),
                };
                record.last_error = Some(error);
                self.save(record, true)?;
                Err(OAuthError::NeedsReauth {
                    account: name,
                    reason,
                })
            }
            Err(TokenFailure::Transient { error, retry_after }) => {
                flight.failures += 1;
                self.count(&name, "unavailable");
                let wait = match retry_after {
                    Some(d) => d
                        .min(self.settings.retry_after_cap)
                        .max(self.settings.backoff_base),
                    None => crate::backoff::Backoff {
                        base: self.settings.backoff_base,
                        max: self.settings.backoff_max,
                    }
                    .delay(flight.failures),
                };
                flight.next_attempt = Some(Instant::now() + wait);
                flight.last_reason = error.to_string();
                tracing::warn!(account = %name, error = %error, failures = flight.failures, retry_in = ?wait, "token request failed; backing off");
                record.last_error = Some(error);
                self.save(record, false)?;
                Err(OAuthError::Unavailable {
                    account: name,
                    retry_in: wait,
                    reason: flight.last_reason.clone(),
                })
            }
        }
    }

    fn apply_response(
        &self,
        record: &mut TokenRecord,
        response: TokenResponse,
        now: DateTime<Utc>,
    ) -> String {
        let token = response.access_token.clone();
        record.access_token = Some(response.access_token);
        record.expires_at = Some(expiry_after(now, response.expires_in.unwrap_or(3600)));
        if let Some(rt) = response.refresh_token {
            record.refresh_token = Some(rt);
        }
        if response.scope.is_some() {
            record.scope = response.scope;
        }
        record.last_refresh = Some(now);
        record.last_error = None;
        record.state = AccountState::Ok;
        token
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

    /// Stores the answer of an authorization-code exchange that asked for
    /// `requested_scope`. A response without `scope` granted exactly what
    /// was asked (RFC 6749 §5.1).
    pub async fn store_login(
        &self,
        account: &str,
        response: TokenResponse,
        requested_scope: &str,
    ) -> Result<(), OAuthError> {
        let refresh_token = response.refresh_token.clone().ok_or_else(|| {
            OAuthError::Login(super::login::LoginError::NoRefreshToken(account.to_owned()))
        })?;
        self.import(
            account,
            ImportedTokens {
                access_token: Some(response.access_token),
                refresh_token,
                expires_in: Some(response.expires_in.unwrap_or(3600)),
                expires_at: None,
                scope: Some(response.scope.unwrap_or_else(|| requested_scope.to_owned())),
                token_type: None,
                ext_expires_in: None,
                id_token: None,
            },
        )
        .await
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
mod tests {
    use super::*;

    fn account(token_url: &str, scope: &str) -> OAuthAccount {
        let spec: crate::config::OAuthAccountSpec = serde_yaml::from_str(&format!(
            "kind: oauth_account\nname: a\ntoken_url: {token_url}\nclient_id: c\nscope: {scope}\n"
        ))
        .unwrap();
        OAuthAccount {
            spec,
            file: "a.yaml".into(),
            position: Default::default(),
            client_secret: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn microsoft_refreshes_keep_the_configured_scope() {
        let a = account(
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            "offline_access Mail.Send",
        );
        // Microsoft spells the grant its own way and leaves offline_access out.
        assert_eq!(
            refresh_scope(&a, Some("https://graph.microsoft.com/Mail.Send")).as_deref(),
            Some("offline_access Mail.Send")
        );
    }

    #[test]
    fn other_providers_get_no_more_than_was_granted() {
        let a = account(
            "https://id.example/token",
            "openid offline_access api:read api:write",
        );
        assert_eq!(
            refresh_scope(&a, Some("api:read openid profile")).as_deref(),
            Some("openid api:read")
        );
        assert_eq!(refresh_scope(&a, Some("other")), None, "RFC 6749 §6");
        assert_eq!(
            refresh_scope(&a, None).as_deref(),
            Some("openid offline_access api:read api:write"),
            "unknown grant: as configured"
        );
    }
}
