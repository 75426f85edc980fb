//! The refresh path of the [`Resolver`]: deciding whether a stored token
//! will do ([`Resolver::token`]), the single-flight refresh-token grant
//! with its backoff and `needs_reauth` handling (`Resolver::refresh_locked`),
//! and the scope a refresh asks for. Apart from the rest of the resolver
//! because this is the one place a token request is made.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::Resolver;
use crate::config::{OAuthAccount, Secret};
use crate::oauth::client::{expiry_after, TokenFailure, TokenResponse};
use crate::oauth::record::{AccountState, TokenRecord};
use crate::oauth::OAuthError;

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
pub(super) fn refresh_scope(account: &OAuthAccount, granted: Option<&str>) -> Option<String> {
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

/// What a caller needs from [`Resolver::token`].
#[derive(Clone, Copy)]
pub(super) enum Want<'a> {
    /// Any token valid beyond the skew.
    Valid,
    /// A token other than this one, which a target refused.
    Replace(&'a str),
    /// A newly refreshed token.
    Force,
}

#[derive(Default)]
pub(super) struct Flight {
    failures: u32,
    next_attempt: Option<Instant>,
    last_reason: String,
}

impl Resolver {
    pub(super) async fn token(
        &self,
        account_name: &str,
        want: Want<'_>,
    ) -> Result<Secret, OAuthError> {
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
        // On a store shared by several nodes, one refresh per account
        // cluster-wide (a lease row), and the record read afresh from the
        // store, where another node may have put newer tokens.
        let _cluster = self
            .tokens
            .lock_refresh(
                account_name,
                self.settings.request_timeout + std::time::Duration::from_secs(5),
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

    pub(super) async fn refresh_locked(
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

    pub(super) fn apply_response(
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
}
