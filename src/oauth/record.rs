//! The token state of one account, as kept in the store.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether an account can be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AccountState {
    /// Tokens work (or a transient error will pass).
    Ok,
    /// The token endpoint refused the grant: a person must log in again
    /// (`oauth login` / `oauth import`). No token request is made until then.
    NeedsReauth {
        /// The OAuth error and AADSTS code with Microsoft's description.
        reason: String,
    },
}

/// The last error of the token endpoint, without anything secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenError {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// OAuth `error` (`invalid_grant`) or a transport class (`timeout`, `http 503`).
    pub code: String,
    /// The AADSTS number, if Microsoft gave one.
    pub aadsts: Option<u32>,
    /// First line of the description.
    pub description: String,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.aadsts {
            Some(n) => write!(f, "{} AADSTS{n}: {}", self.code, self.description),
            None => write!(f, "{}: {}", self.code, self.description),
        }
    }
}

/// Everything pushwerk knows about one account's tokens. The token fields
/// are secret: `Debug` masks them, and the record is encrypted at rest when
/// a key is configured.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The account's name.
    pub account: String,
    /// The current access token.
    pub access_token: Option<String>,
    /// When the access token expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// The newest refresh token (Microsoft rotates it on every use).
    pub refresh_token: Option<String>,
    /// Scopes granted with the last token.
    pub scope: Option<String>,
    /// Last successful refresh (or import/login).
    pub last_refresh: Option<DateTime<Utc>>,
    /// Last time a push used the token.
    pub last_use: Option<DateTime<Utc>>,
    /// Last token-endpoint error.
    pub last_error: Option<TokenError>,
    /// Usable or waiting for a person.
    pub state: AccountState,
    /// Counts refreshes; tells a 401 retry whether someone refreshed meanwhile.
    pub generation: u64,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mask = |o: &Option<String>| o.as_ref().map(|_| "‹secret›");
        f.debug_struct("TokenRecord")
            .field("account", &self.account)
            .field("access_token", &mask(&self.access_token))
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &mask(&self.refresh_token))
            .field("scope", &self.scope)
            .field("last_refresh", &self.last_refresh)
            .field("last_use", &self.last_use)
            .field("last_error", &self.last_error)
            .field("state", &self.state)
            .field("generation", &self.generation)
            .finish()
    }
}

impl TokenRecord {
    /// An empty record for `account`.
    pub fn new(account: &str) -> TokenRecord {
        TokenRecord {
            account: account.to_owned(),
            access_token: None,
            expires_at: None,
            refresh_token: None,
            scope: None,
            last_refresh: None,
            last_use: None,
            last_error: None,
            state: AccountState::Ok,
            generation: 0,
        }
    }

    /// The access token if it stays valid for more than the refresh margin
    /// after `now` (see [`TokenRecord::margin`]).
    pub fn fresh_access_token(&self, now: DateTime<Utc>, skew: chrono::Duration) -> Option<&str> {
        let margin = self.margin(skew);
        match (&self.access_token, self.expires_at) {
            (Some(t), Some(exp)) if exp - now > margin => Some(t),
            _ => None,
        }
    }

    /// How long before its expiry the access token counts as stale:
    /// `skew`, but at most a quarter of the token's lifetime (from
    /// `last_refresh` to `expires_at`). A fixed 5 minutes would make a
    /// 5-minute token (Keycloak's default) stale on arrival, and every
    /// render would refresh; with the quarter a token is used for at least
    /// three quarters of its life. Unknown lifetime: `skew`.
    pub fn margin(&self, skew: chrono::Duration) -> chrono::Duration {
        match (self.last_refresh, self.expires_at) {
            (Some(from), Some(to)) if to > from => skew.min((to - from) / 4),
            _ => skew,
        }
    }

    /// The access token if it has not expired at `now` at all (no margin).
    pub fn unexpired_access_token(&self, now: DateTime<Utc>) -> Option<&str> {
        match (&self.access_token, self.expires_at) {
            (Some(t), Some(exp)) if exp > now => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_tokens() {
        let mut r = TokenRecord::new("a");
        r.access_token = Some("CANARY-AT".into());
        r.refresh_token = Some("CANARY-RT".into());
        let shown = format!("{r:?}");
        assert!(!shown.contains("CANARY"), "{shown}");
    }

    #[test]
    fn freshness_honours_the_skew() {
        let now = Utc::now();
        let mut r = TokenRecord::new("a");
        r.access_token = Some("t".into());
        r.expires_at = Some(now + chrono::Duration::minutes(4));
        assert_eq!(
            r.fresh_access_token(now, chrono::Duration::minutes(5)),
            None
        );
        assert_eq!(
            r.fresh_access_token(now, chrono::Duration::minutes(3)),
            Some("t")
        );
    }

    #[test]
    fn the_margin_is_five_minutes_or_a_quarter_of_the_lifetime() {
        let now = Utc::now();
        let five = chrono::Duration::minutes(5);
        for lifetime in [30i64, 120, 300, 3600] {
            let mut r = TokenRecord::new("a");
            r.access_token = Some("t".into());
            r.last_refresh = Some(now);
            r.expires_at = Some(now + chrono::Duration::seconds(lifetime));
            assert_eq!(r.fresh_access_token(now, five), Some("t"), "{lifetime}");
            let margin = (lifetime / 4).min(300);
            let late = now + chrono::Duration::seconds(lifetime - margin + 1);
            assert_eq!(r.fresh_access_token(late, five), None, "{lifetime}");
        }
        // A long-lived token keeps the full 5 minutes.
        let mut r = TokenRecord::new("a");
        r.last_refresh = Some(now);
        r.expires_at = Some(now + chrono::Duration::hours(1));
        assert_eq!(r.margin(five), five);
    }
}
