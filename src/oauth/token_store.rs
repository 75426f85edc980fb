//! Token records in the store: one sealed JSON record per account in the
//! `tokens` tree.

use std::sync::Arc;

use super::record::TokenRecord;
use super::seal::{KeySpec, SealError, Sealer};
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

    /// Opens the store of the data directory `data` with the key `spec`
    /// names. A key file that does not exist yet is generated when `use_`
    /// is [`KeyUse::Generate`] (and said where, once) — unless the store
    /// holds records sealed with a key already: that key is lost, and a new
    /// one would make them unreadable for good, so this is refused with
    /// what to do ([`SealError::KeyLost`]). Plain records are sealed (see
    /// [`TokenStore::open_store`]). Records the key cannot open (sealed
    /// with another key) are reported once as a warning naming the
    /// accounts; the others work.
    pub fn open_keyed(
        data: &std::path::Path,
        choice: StoreChoice,
        spec: &KeySpec,
        use_: KeyUse,
    ) -> Result<TokenStore, OAuthError> {
        let existing = spec.load()?;
        let mut outcome: Option<SealError> = None;
        let mut chosen: Option<Sealer> = None;
        let opened = crate::store::open_prepared(data, choice, |store| {
            let sealer = match existing {
                Some(sealer) => sealer,
                None => {
                    let sealed = sealed_accounts(store)?;
                    let made = if !sealed.is_empty() {
                        Err(SealError::KeyLost {
                            path: spec.describe(),
                            accounts: sealed,
                        })
                    } else if use_ == KeyUse::ExistingOnly {
                        Ok(Sealer::plain())
                    } else {
                        spec.create().inspect(|_| {
                            tracing::info!(
                                target: "pushwerk::status",
                                "generated the key that encrypts token state: {} (mode 0600). Back it up together with the data directory: without it the stored tokens cannot be read",
                                spec.describe()
                            )
                        })
                    };
                    match made {
                        Ok(sealer) => sealer,
                        Err(e) => {
                            let message = e.to_string();
                            outcome = Some(e);
                            return Err(StoreError::Refused(message));
                        }
                    }
                }
            };
            seal_plain_records(store, &sealer)?;
            chosen = Some(sealer);
            Ok(())
        });
        let store = match (opened, outcome) {
            (Err(_), Some(e)) => return Err(e.into()),
            (Err(e), None) => return Err(e.into()),
            (Ok(store), _) => store,
        };
        let sealer = chosen.unwrap_or_else(Sealer::plain);
        let tokens = TokenStore::new(store, sealer);
        let unreadable = tokens.unreadable()?;
        if let (false, Some(path)) = (unreadable.is_empty(), spec.path()) {
            // `oauth rekey` interrupted after the records were re-sealed
            // but before the new key (staged as KEY.new) replaced the old
            // one: finish it.
            let staged = super::seal::key_sibling(path, "new");
            if let Ok(new) = Sealer::from_key_file(&staged) {
                let renewed = TokenStore::new(tokens.store.clone(), new);
                if renewed.unreadable()?.is_empty() {
                    std::fs::rename(&staged, path).map_err(|e| {
                        SealError::KeyCreate(path.display().to_string(), e.to_string())
                    })?;
                    tracing::info!(
                        target: "pushwerk::status",
                        "finished an interrupted `oauth rekey`: {} now holds the key the token state is sealed with",
                        path.display()
                    );
                    return Ok(renewed);
                }
            }
        }
        if !unreadable.is_empty() {
            tracing::warn!(
                "the token state of {} cannot be decrypted with the key from {} (it was sealed with another key): restore the key it was sealed with, or sign in again with `pushwerk oauth import NAME` or `pushwerk oauth login NAME`; the other accounts work",
                unreadable
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                spec.describe()
            );
        }
        Ok(tokens)
    }

    /// The accounts whose sealed records this key cannot open.
    pub fn unreadable(&self) -> Result<Vec<String>, OAuthError> {
        Ok(self
            .store
            .scan_prefix(trees::TOKENS, b"")?
            .into_iter()
            .filter(|(_, v)| !Sealer::is_plain(v))
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .filter(|(account, v)| self.sealer.open(account, v).is_err())
            .map(|(account, _)| account)
            .collect())
    }

    /// The store the records live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The sealer records are written with.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
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
    ///
    /// On a store shared by several nodes (#15) the write is a
    /// compare-and-swap on the stored generation: a record older than the
    /// stored one (another node refreshed since this one read it) is not
    /// written, so a node can never put a rotated-away refresh token back.
    pub fn put(&self, record: &TokenRecord, durable: bool) -> Result<(), OAuthError> {
        let plain = serde_json::to_vec(record).expect("token records serialise");
        let sealed = self.sealer.seal(&record.account, &plain);
        if self.is_shared() {
            self.put_if_not_older(record, &sealed)?;
            return Ok(());
        }
        self.store
            .put(trees::TOKENS, record.account.as_bytes(), &sealed)?;
        if durable {
            self.store.flush()?;
        }
        Ok(())
    }

    /// Whether other processes share the token records (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.store.node().is_some()
    }

    /// The shared-store write of [`TokenStore::put`]: true if written,
    /// false if the stored record has a newer generation.
    fn put_if_not_older(&self, record: &TokenRecord, sealed: &[u8]) -> Result<bool, OAuthError> {
        let key = record.account.as_bytes();
        let mut current = self.store.get(trees::TOKENS, key)?;
        loop {
            if let Some(bytes) = &current {
                let stored = self
                    .sealer
                    .open(&record.account, bytes)
                    .ok()
                    .and_then(|p| serde_json::from_slice::<TokenRecord>(&p).ok());
                if stored.is_some_and(|s| s.generation > record.generation) {
                    tracing::debug!(account = %record.account, "another node wrote newer tokens; not overwritten");
                    return Ok(false);
                }
            }
            match self.store.compare_and_swap(
                trees::TOKENS,
                key,
                current.as_deref(),
                Some(sealed),
            )? {
                Ok(()) => return Ok(true),
                Err(conflict) => current = conflict.current,
            }
        }
    }

    /// Takes the cluster-wide refresh lease of `account` on a shared store
    /// (#15): one node at a time refreshes an account, so a refresh token
    /// that the provider rotates is sent once. Waits (polling) while
    /// another node holds it, at most `max_wait`; a lease whose holder died
    /// expires after [`REFRESH_LEASE`]. `None` on an embedded store (the
    /// resolver's in-process lock is enough there). Released on drop.
    pub async fn lock_refresh(
        &self,
        account: &str,
        max_wait: std::time::Duration,
    ) -> Result<Option<RefreshLease>, OAuthError> {
        let Some(node) = self.store.node() else {
            return Ok(None);
        };
        let deadline = tokio::time::Instant::now() + max_wait;
        let key = account.as_bytes().to_vec();
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            let mine = serde_json::to_vec(&serde_json::json!({
                "node": node,
                "until": now + REFRESH_LEASE.as_millis() as i64,
            }))
            .expect("a lease serialises");
            let current = self.store.get(LEASES, &key)?;
            let expired = current.as_deref().is_none_or(|v| {
                serde_json::from_slice::<serde_json::Value>(v)
                    .ok()
                    .and_then(|l| l["until"].as_i64())
                    .is_none_or(|until| until < now)
            });
            if expired
                && self
                    .store
                    .compare_and_swap(LEASES, &key, current.as_deref(), Some(&mine))?
                    .is_ok()
            {
                return Ok(Some(RefreshLease {
                    store: self.store.clone(),
                    key,
                    value: mine,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OAuthError::Unavailable {
                    account: account.to_owned(),
                    retry_in: std::time::Duration::from_secs(1),
                    reason: "another node is refreshing this account's token".into(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
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

/// The tree of refresh leases on a shared store: account → holder and expiry.
const LEASES: &str = "token_leases";

/// How long a refresh lease lasts if its holder dies before releasing it:
/// longer than a token request may take (its timeout is 30 s by default).
pub const REFRESH_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// A held refresh lease ([`TokenStore::lock_refresh`]); released on drop
/// (only if still this node's).
pub struct RefreshLease {
    store: Arc<dyn Store>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl std::fmt::Debug for RefreshLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshLease").finish()
    }
}

impl Drop for RefreshLease {
    fn drop(&mut self) {
        let _ = self
            .store
            .compare_and_swap(LEASES, &self.key, Some(&self.value), None);
    }
}

/// Whether a command may generate a missing key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Commands that write tokens or open the store for writing (`serve`,
    /// `send`, `oauth import|login|refresh|status`): a missing default key
    /// file is generated.
    Generate,
    /// Commands that only read (`dry-run --show-secrets`): nothing is
    /// created in the user's config directory.
    ExistingOnly,
}

/// The accounts whose records in `store` are sealed (not plain).
fn sealed_accounts(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    Ok(store
        .scan_prefix(trees::TOKENS, b"")?
        .into_iter()
        .filter(|(_, v)| !Sealer::is_plain(v))
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect())
}

/// Re-seals every record of `store` (opened with `old`) with `new`, in one
/// batch, and asks for a compaction (set and flushed first, as in
/// [`seal_plain_records`]) so that no record sealed with the old key stays
/// in the files. Refused, changing nothing, if `old` cannot open a record.
pub(crate) fn reseal_records(
    store: &dyn Store,
    old: &Sealer,
    new: &Sealer,
) -> Result<usize, OAuthError> {
    let mut ops = Vec::new();
    let mut unreadable = Vec::new();
    for (k, v) in store.scan_prefix(trees::TOKENS, b"")? {
        let account = String::from_utf8_lossy(&k).into_owned();
        match old.open(&account, &v) {
            Ok(plain) => ops.push((k, Some(new.seal(&account, &plain)))),
            Err(_) => unreadable.push(account),
        }
    }
    if !unreadable.is_empty() {
        return Err(OAuthError::Store(StoreError::Refused(format!(
            "the current key cannot decrypt the token state of {} (sealed with another key): nothing was re-keyed. Restore the key they were sealed with, or sign them in again (`pushwerk oauth import NAME` or `pushwerk oauth login NAME`) and run rekey then",
            unreadable.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
        ))));
    }
    let n = ops.len();
    store.put(trees::MAINTENANCE, crate::store::COMPACT_PENDING, b"1")?;
    store.flush()?;
    store.apply_batch(trees::TOKENS, ops)?;
    store.flush()?;
    Ok(n)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::{pg_server::PgServer, test_node, DEFAULT_LEASE};

    fn tokens(server: &PgServer, node: &str) -> TokenStore {
        TokenStore::new(
            Arc::new(test_node(server, node, DEFAULT_LEASE)),
            Sealer::plain(),
        )
    }

    /// On a shared store a node never writes a record older than the one
    /// stored (its refresh token was rotated away by another node).
    #[test]
    fn a_stale_record_does_not_overwrite_a_newer_one() {
        let server = PgServer::start();
        let (a, b) = (tokens(&server, "a"), tokens(&server, "b"));
        assert!(a.is_shared());
        let mut record = TokenRecord::new("acct");
        record.refresh_token = Some("rt-2".into());
        record.generation = 2;
        a.put(&record, true).unwrap();
        let mut stale = record.clone();
        stale.refresh_token = Some("rt-1".into());
        stale.generation = 1;
        b.put(&stale, true).unwrap();
        assert_eq!(
            b.get("acct").unwrap().unwrap().refresh_token.as_deref(),
            Some("rt-2")
        );
        let mut newer = record.clone();
        newer.refresh_token = Some("rt-3".into());
        newer.generation = 3;
        b.put(&newer, true).unwrap();
        assert_eq!(
            a.get("acct").unwrap().unwrap().refresh_token.as_deref(),
            Some("rt-3")
        );
    }

    /// One node at a time holds an account's refresh lease; the next one
    /// gets it once it is released.
    #[tokio::test(flavor = "multi_thread")]
    async fn one_node_at_a_time_holds_the_refresh_lease() {
        let server = PgServer::start();
        let (a, b) = (tokens(&server, "a"), tokens(&server, "b"));
        let held = a
            .lock_refresh("acct", std::time::Duration::from_secs(1))
            .await
            .unwrap();
        assert!(held.is_some());
        let waited = b
            .lock_refresh("acct", std::time::Duration::from_millis(200))
            .await;
        assert!(
            matches!(waited, Err(OAuthError::Unavailable { .. })),
            "{waited:?}"
        );
        assert!(b
            .lock_refresh("other", std::time::Duration::from_millis(200))
            .await
            .unwrap()
            .is_some());
        drop(held);
        assert!(b
            .lock_refresh("acct", std::time::Duration::from_secs(1))
            .await
            .unwrap()
            .is_some());
    }
}
