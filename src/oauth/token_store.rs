//! Token records in the store: one sealed JSON record per account in the
//! `tokens` tree.

use std::sync::Arc;

use super::record::TokenRecord;
use super::seal::{SealError, Sealer};
use super::OAuthError;
use crate::store::{trees, Store, StoreChoice, StoreError};

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

    /// Opens the store of the data directory `data` for token records
    /// sealed with `sealer`. With a key, records written before it was set
    /// (plain JSON, a refresh token readable in the store's files) are
    /// sealed, and the store is rewritten into fresh files, so that no
    /// plaintext token stays behind in the data directory (an overwritten
    /// value lingers in sled's log and in redb's freed pages otherwise).
    pub fn open_store(
        data: &std::path::Path,
        choice: StoreChoice,
        sealer: &Sealer,
    ) -> Result<Arc<dyn Store>, StoreError> {
        crate::store::open_prepared(data, choice, |store| {
            seal_plain_records(store, sealer).map(|_| ())
        })
    }

    /// Whether records are encrypted at rest: a key is set and no stored
    /// record is plain (what `oauth status` reports, so it must be true).
    pub fn is_encrypted(&self) -> bool {
        self.sealer.is_encrypted()
            && self
                .store
                .scan_prefix(trees::TOKENS, b"")
                .map(|records| records.iter().all(|(_, v)| !Sealer::is_plain(v)))
                .unwrap_or(false)
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

/// Seals every plain token record in `store` with `sealer` (nothing
/// without a key) and returns how many there were. Before the first one is
/// rewritten, [`crate::store::COMPACT_PENDING`] is set and flushed, so that
/// the old bytes are compacted away even if this is interrupted.
pub(crate) fn seal_plain_records(store: &dyn Store, sealer: &Sealer) -> Result<usize, StoreError> {
    if !sealer.is_encrypted() {
        return Ok(0);
    }
    let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = store
        .scan_prefix(trees::TOKENS, b"")?
        .into_iter()
        .filter(|(_, v)| Sealer::is_plain(v))
        .map(|(k, v)| {
            let account = String::from_utf8_lossy(&k).into_owned();
            let sealed = sealer.seal(&account, &v[1..]);
            (k, Some(sealed))
        })
        .collect();
    if ops.is_empty() {
        return Ok(0);
    }
    store.put(trees::MAINTENANCE, crate::store::COMPACT_PENDING, b"1")?;
    store.flush()?;
    let n = ops.len();
    store.apply_batch(trees::TOKENS, ops)?;
    store.flush()?;
    Ok(n)
}
