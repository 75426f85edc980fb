//! The plain key-value operations on `pushwerk_kv` — reads, ranges,
//! batches, compare-and-swap, ids — as every backend has them; what only
//! several nodes need is in [`super::claims`].

use std::collections::BTreeMap;
use std::sync::PoisonError;

use super::connect::{backend, Inner};
use super::PgStore;
use crate::store::{CasConflict, Entries, StoreError};

/// Ids are taken from the sequence in blocks of this many (its increment,
/// see [`super::MIGRATIONS`]), so that a job costs no round trip for its id.
pub(super) const ID_BLOCK: i64 = 1000;

/// The exclusive end of the keys that start with `prefix` (`None`: no end,
/// the prefix is all `0xff`).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Keys and values to upsert, and keys to delete.
type Collapsed = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The last operation on each key of a batch, in key order (a key written
/// then removed in one batch ends removed; one statement may touch a row
/// only once).
pub(super) fn collapse(ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Collapsed {
    let last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = ops.into_iter().collect();
    let (mut put_k, mut put_v, mut del) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in last {
        match v {
            Some(v) => {
                put_k.push(k);
                put_v.push(v);
            }
            None => del.push(k),
        }
    }
    (put_k, put_v, del)
}

/// Writes a batch inside `tx`; the rows written are leased to this node.
pub(super) async fn write_batch(
    inner: &Inner,
    tx: &tokio_postgres::Transaction<'_>,
    tree: &str,
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<(), StoreError> {
    let (put_k, put_v, del) = collapse(ops);
    if !del.is_empty() {
        inner.count(1);
        tx.execute(
            "DELETE FROM pushwerk_kv WHERE tree = $1 AND key = ANY($2)",
            &[&tree, &del],
        )
        .await
        .map_err(backend)?;
    }
    if !put_k.is_empty() {
        inner.count(1);
        tx.execute(
            "INSERT INTO pushwerk_kv (tree, key, value, lease_node)
             SELECT $1, k, v, $4 FROM unnest($2::bytea[], $3::bytea[]) AS t(k, v)
             ON CONFLICT (tree, key) DO UPDATE
             SET value = excluded.value, lease_node = excluded.lease_node",
            &[&tree, &put_k, &put_v, &inner.node],
        )
        .await
        .map_err(backend)?;
    }
    Ok(())
}

impl PgStore {
    /// [`Store::get`](crate::store::Store::get).
    pub(super) fn read(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (tree, key) = (tree.to_owned(), key.to_vec());
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let row = c
                    .query_opt(
                        "SELECT value FROM pushwerk_kv WHERE tree = $1 AND key = $2",
                        &[&tree, &key],
                    )
                    .await
                    .map_err(backend)?;
                Ok(row.map(|r| r.get(0)))
            })
        })
    }

    /// [`Store::apply_batch`](crate::store::Store::apply_batch): one
    /// transaction.
    pub(super) fn write(
        &self,
        tree: &str,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let tree = tree.to_owned();
        self.with_conn(move |c, i| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(backend)?;
                write_batch(i, &tx, &tree, ops).await?;
                i.count(2);
                tx.commit().await.map_err(backend)
            })
        })
    }

    /// [`Store::compare_and_swap`](crate::store::Store::compare_and_swap):
    /// one conditional statement, and on a miss a read of what is stored.
    pub(super) fn swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>, StoreError> {
        let (tree, key) = (tree.to_owned(), key.to_vec());
        let (old, new) = (old.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec));
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let done = match (&old, &new) {
                    (None, Some(new)) => c
                        .query_opt(
                            "INSERT INTO pushwerk_kv (tree, key, value, lease_node)
                             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
                            &[&tree, &key, new, &i.node],
                        )
                        .await
                        .map_err(backend)?
                        .is_some(),
                    (Some(old), Some(new)) => c
                        .query_opt(
                            "UPDATE pushwerk_kv SET value = $4, lease_node = $5
                             WHERE tree = $1 AND key = $2 AND value = $3 RETURNING 1",
                            &[&tree, &key, old, new, &i.node],
                        )
                        .await
                        .map_err(backend)?
                        .is_some(),
                    (Some(old), None) => c
                        .query_opt(
                            "DELETE FROM pushwerk_kv
                             WHERE tree = $1 AND key = $2 AND value = $3 RETURNING 1",
                            &[&tree, &key, old],
                        )
                        .await
                        .map_err(backend)?
                        .is_some(),
                    (None, None) => false,
                };
                if done {
                    return Ok(Ok(()));
                }
                i.count(1);
                let current: Option<Vec<u8>> = c
                    .query_opt(
                        "SELECT value FROM pushwerk_kv WHERE tree = $1 AND key = $2",
                        &[&tree, &key],
                    )
                    .await
                    .map_err(backend)?
                    .map(|r| r.get(0));
                if old.is_none() && new.is_none() && current.is_none() {
                    return Ok(Ok(()));
                }
                Ok(Err(CasConflict { current }))
            })
        })
    }

    /// Entries of `[start, end)` (no `end`: to the last key) in key order
    /// or reversed, at most `limit` of them (`None`: all).
    pub(super) fn rows(
        &self,
        tree: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Entries, StoreError> {
        let (tree, start, end) = (tree.to_owned(), start.to_vec(), end.map(<[u8]>::to_vec));
        let limit = limit.map(|l| l.min(i64::MAX as usize) as i64);
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let sql = format!(
                    "SELECT key, value FROM pushwerk_kv
                     WHERE tree = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3)
                     ORDER BY key {} LIMIT $4",
                    if reverse { "DESC" } else { "ASC" }
                );
                let rows = c
                    .query(&sql, &[&tree, &start, &end, &limit])
                    .await
                    .map_err(backend)?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            })
        })
    }

    /// [`Store::keys`](crate::store::Store::keys).
    pub(super) fn key_range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (tree, start, end) = (tree.to_owned(), start.to_vec(), end.to_vec());
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let rows = c
                    .query(
                        "SELECT key FROM pushwerk_kv WHERE tree = $1 AND key >= $2 AND key < $3
                         ORDER BY key LIMIT $4",
                        &[&tree, &start, &end, &limit],
                    )
                    .await
                    .map_err(backend)?;
                Ok(rows.into_iter().map(|r| r.get(0)).collect())
            })
        })
    }

    /// [`Store::count`](crate::store::Store::count).
    pub(super) fn count_range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
    ) -> Result<usize, StoreError> {
        let (tree, start, end) = (tree.to_owned(), start.to_vec(), end.to_vec());
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let row = c
                    .query_one(
                        "SELECT count(*) FROM pushwerk_kv WHERE tree = $1 AND key >= $2 AND key < $3",
                        &[&tree, &start, &end],
                    )
                    .await
                    .map_err(backend)?;
                Ok(row.get::<_, i64>(0).max(0) as usize)
            })
        })
    }

    /// [`Store::next_id`](crate::store::Store::next_id): from this node's
    /// block of the shared sequence, a new block when it is used up.
    pub(super) fn take_id(&self) -> Result<u64, StoreError> {
        let mut ids = self
            .inner
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ids.0 >= ids.1 {
            let first = self.with_conn(|c, i| {
                Box::pin(async move {
                    i.count(1);
                    let row = c
                        .query_one("SELECT nextval('pushwerk_ids')", &[])
                        .await
                        .map_err(backend)?;
                    Ok(row.get::<_, i64>(0))
                })
            })?;
            *ids = (first as u64, (first + ID_BLOCK) as u64);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// [`Store::size_on_disk`](crate::store::Store::size_on_disk): the
    /// table with its indexes and TOAST.
    pub(super) fn table_size(&self) -> Result<u64, StoreError> {
        self.with_conn(|c, i| {
            Box::pin(async move {
                i.count(1);
                let row = c
                    .query_one("SELECT pg_total_relation_size('pushwerk_kv')", &[])
                    .await
                    .map_err(backend)?;
                Ok(row.get::<_, i64>(0).max(0) as u64)
            })
        })
    }

    /// Whether the database holds no record yet (a migration's target).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.with_conn(|c, i| {
            Box::pin(async move {
                i.count(1);
                let row = c
                    .query_one("SELECT NOT EXISTS (SELECT 1 FROM pushwerk_kv)", &[])
                    .await
                    .map_err(backend)?;
                Ok(row.get(0))
            })
        })
    }

    /// Makes every id handed out from now on larger than `floor` (a
    /// migration carries the id counter over).
    pub fn raise_ids(&self, floor: u64) -> Result<(), StoreError> {
        let floor = floor.min(i64::MAX as u64 / 2) as i64;
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                c.execute(
                    "SELECT setval('pushwerk_ids', greatest($1, (SELECT last_value FROM pushwerk_ids)))",
                    &[&floor],
                )
                .await
                .map_err(backend)?;
                Ok(())
            })
        })?;
        *self
            .inner
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (0, 0);
        Ok(())
    }
}
