//! Token records in the store: one sealed JSON record per account in the
//! `tokens` tree.

use std::sync::Arc;

use super::record::TokenRecord;
use super::seal::{SealError, Sealer};
use super::OAuthError;
use crate::store::{trees, Store};

/// Reads and writes token records.
#[derive(Clone)]
pub struct TokenStore {
    store: Arc<dyn Store>,
    sealer: Sealer,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("sealer", &self.sealer)
            .finish()
    }
}

impl TokenStore {
    /// Token records in `store`, sealed with `sealer`.
    pub fn new(store: Arc<dyn Store>, sealer: Sealer) -> TokenStore {
        TokenStore { store, sealer }
    }

    /// Whether records are encrypted at rest.
    pub fn is_encrypted(&self) -> bool {
        self.sealer.is_encrypted()
    }

    /// The record of `account`, if any.
    pub fn get(&self, account: &str) -> Result<Option<TokenRecord>, OAuthError> {
        let Some(bytes) = self.store.get(trees::TOKENS, account.as_bytes())? else {
            return Ok(None);
        };
        let plain = self.sealer.open(account, &bytes)?;
        let record = serde_json::from_slice(&plain)
            .map_err(|_| OAuthError::Seal(SealError::Format(account.to_owned())))?;
        Ok(Some(record))
    }

    /// Writes `record`; with `durable`, flushes before returning (a rotated
    /// refresh token must survive a crash before it is used).
    pub fn put(&self, record: &TokenRecord, durable: bool) -> Result<(), OAuthError> {
        let plain = serde_json::to_vec(record).expect("token records serialise");
        let sealed = self.sealer.seal(&record.account, &plain);
        self.store
            .put(trees::TOKENS, record.account.as_bytes(), &sealed)?;
        if durable {
            self.store.flush()?;
        }
        Ok(())
    }

    /// Every stored record's account name.
    pub fn accounts(&self) -> Result<Vec<String>, OAuthError> {
        Ok(self
            .store
            .scan_prefix(trees::TOKENS, b"")?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }
}
