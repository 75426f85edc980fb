//! What makes several nodes on one database safe: each node's heartbeat
//! row in `pushwerk_nodes` (and its goodbye), the leases on the rows of
//! `pushwerk_kv` that follow from it (a dead node's rows taken over with
//! `FOR UPDATE SKIP LOCKED`), and unique claims of event ids inserted in
//! the same transaction as their jobs.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::connect::{backend, Inner};
use super::kv::write_batch;
use super::{PgStore, HEARTBEAT};
use crate::store::{ClaimedBatch, Entries, StoreError};

impl Inner {
    /// Tells the database that this node is alive (its rows stay its own),
    /// as long as the name is still this process's: a process that was
    /// away longer than its lease (paused, cut off) may find the name taken
    /// by a new process; it then does not take it back (two processes under
    /// one name would both deliver the name's jobs) and is fenced off.
    pub(super) async fn heartbeat(&self) -> Result<(), StoreError> {
        if let Some(lost) = self.lost() {
            return Err(lost);
        }
        let slot = self.conn().await?;
        let c = slot.as_ref().expect("connected");
        self.count(1);
        let updated = c
            .execute(
                "UPDATE pushwerk_nodes SET seen = now()
                 WHERE node = $1 AND (extract(epoch FROM started) * 1000000)::bigint = $2",
                &[&self.node, &self.incarnation.load(Ordering::Relaxed)],
            )
            .await
            .map_err(backend)?;
        if updated == 0 {
            self.name_lost.store(true, Ordering::Relaxed);
            let lost = self.lost().expect("just lost");
            tracing::error!(node = %self.node, "{lost}");
            return Err(lost);
        }
        Ok(())
    }

    /// Why this process no longer reads or writes, if another process took
    /// its name (see [`Inner::heartbeat`]).
    pub(super) fn lost(&self) -> Option<StoreError> {
        self.name_lost.load(Ordering::Relaxed).then(|| {
            StoreError::Refused(format!(
                "another process took this node's name `{}` while this one was away longer than \
                 its lease (no heartbeat: paused, or cut off from the database); this process \
                 no longer reads or writes the database: stop it (the other one runs under the name)",
                self.node
            ))
        })
    }

    /// Takes this node's name at start (its first heartbeat). A heartbeat
    /// row of that name younger than the lease belongs to a live node —
    /// refused, as two processes under one name would take each other's
    /// rows for their own — or to one that died a moment ago: so the row
    /// is watched until the lease runs out; a heartbeat meanwhile means a
    /// live holder (refused at once), none means the name is free.
    pub(super) async fn take_name(&self) -> Result<(), StoreError> {
        let mut deadline = Instant::now();
        let mut first_seen: Option<String> = None;
        loop {
            let slot = self.conn().await?;
            let c = slot.as_ref().expect("connected");
            self.count(1);
            let taken = c
                .query_opt(
                    "INSERT INTO pushwerk_nodes (node, seen, lease_ms) VALUES ($1, now(), $2)
                     ON CONFLICT (node) DO UPDATE
                     SET seen = now(), started = now(), lease_ms = excluded.lease_ms
                     WHERE pushwerk_nodes.seen
                           <= now() - pushwerk_nodes.lease_ms * interval '1 millisecond'
                     RETURNING (extract(epoch FROM started) * 1000000)::bigint",
                    &[&self.node, &self.lease_ms],
                )
                .await
                .map_err(backend)?;
            if let Some(row) = taken {
                self.incarnation.store(row.get(0), Ordering::Relaxed);
                return Ok(());
            }
            self.count(1);
            let row: Option<(String, i64)> = c
                .query_opt(
                    "SELECT seen::text, lease_ms FROM pushwerk_nodes WHERE node = $1",
                    &[&self.node],
                )
                .await
                .map_err(backend)?
                .map(|r| (r.get(0), r.get(1)));
            drop(slot);
            let held = || {
                StoreError::Refused(format!(
                    "another pushwerk node named `{}` is running on this database (its heartbeat is fresh): \
                     stop it, or give this one another --node-name (PUSHWERK_NODE)",
                    self.node
                ))
            };
            match (&first_seen, row) {
                // Gone meanwhile (it stopped cleanly): take it now.
                (_, None) => continue,
                (None, Some((seen, lease_ms))) => {
                    // The holder's own lease, which may not be this one's.
                    let lease = Duration::from_millis(lease_ms.max(0) as u64);
                    deadline = Instant::now() + lease + HEARTBEAT * 2;
                    tracing::warn!(
                        node = %self.node,
                        "the node name has a fresh heartbeat: waiting up to {} s for its lease to run out (a process that died) — a live holder refuses this start",
                        lease.as_secs()
                    );
                    first_seen = Some(seen);
                }
                (Some(first), Some((seen, _))) if *first != seen => return Err(held()),
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(held());
            }
            tokio::time::sleep(HEARTBEAT / 5).await;
        }
    }

    /// Removes this node's heartbeat row: its rows are orphans at once.
    /// A row that another process took meanwhile is left alone.
    pub(super) async fn goodbye(&self) -> Result<(), StoreError> {
        let slot = self.conn().await?;
        let c = slot.as_ref().expect("connected");
        c.execute(
            "DELETE FROM pushwerk_nodes
             WHERE node = $1 AND (extract(epoch FROM started) * 1000000)::bigint = $2",
            &[&self.node, &self.incarnation.load(Ordering::Relaxed)],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }
}

impl PgStore {
    /// [`Store::health`](crate::store::Store::health): the heartbeat's
    /// last error, or a heartbeat that is late.
    pub(super) fn beat_health(&self) -> Result<(), StoreError> {
        let beat = self
            .inner
            .beat
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(lost) = self.inner.lost() {
            return Err(lost);
        }
        if let Some(e) = &beat.1 {
            return Err(self.inner.unreachable(StoreError::Unavailable(e.clone())));
        }
        // Late by more than a few beats (a server that hangs): not ready
        // well before the lease runs out and other nodes take over.
        let late = (HEARTBEAT * 5)
            .min(Duration::from_millis(self.inner.lease_ms as u64 / 2).max(HEARTBEAT * 2));
        if beat.0.elapsed() > late {
            return Err(self.inner.unreachable(StoreError::Unavailable(
                "PostgreSQL has not answered the heartbeat".into(),
            )));
        }
        Ok(())
    }

    /// Rows of `[start, end)` whose holder's heartbeat is older than the
    /// holder's own lease (or that have none), locked with `SKIP LOCKED` and leased to this node, and
    /// with `mine`, the rows this node holds already (read, not locked: no
    /// write for them); in key order, at most `limit`.
    pub(super) fn claim_rows(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
        mine: bool,
    ) -> Result<Entries, StoreError> {
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
                        "WITH c AS (
                             SELECT key, value FROM pushwerk_kv k
                             WHERE tree = $1 AND key >= $2 AND key < $3
                               AND lease_node IS DISTINCT FROM $4
                               AND NOT EXISTS (
                                   SELECT 1 FROM pushwerk_nodes n WHERE n.node = k.lease_node
                                   AND n.seen > now() - n.lease_ms * interval '1 millisecond')
                             ORDER BY key LIMIT $5 FOR UPDATE SKIP LOCKED),
                         u AS (
                             UPDATE pushwerk_kv k SET lease_node = $4 FROM c
                             WHERE k.tree = $1 AND k.key = c.key),
                         m AS (
                             SELECT key, value FROM pushwerk_kv
                             WHERE $6 AND tree = $1 AND key >= $2 AND key < $3 AND lease_node = $4
                             ORDER BY key LIMIT $5)
                         SELECT key, value FROM c UNION ALL SELECT key, value FROM m
                         ORDER BY key LIMIT $5",
                        &[&tree, &start, &end, &i.node, &limit, &mine],
                    )
                    .await
                    .map_err(backend)?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            })
        })
    }

    /// [`Store::apply_claimed`](crate::store::Store::apply_claimed): each
    /// claim key inserted if new, and the ops of the claims won, in one
    /// transaction.
    pub(super) fn write_claimed(
        &self,
        tree: &str,
        items: Vec<ClaimedBatch>,
    ) -> Result<Vec<bool>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let tree = tree.to_owned();
        self.with_conn(move |c, i| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(backend)?;
                // Claims in key order, so that two nodes inserting the same
                // ids wait for each other instead of deadlocking.
                let mut order: Vec<usize> = (0..items.len()).collect();
                order.sort_by(|a, b| items[*a].claim.0.cmp(&items[*b].claim.0));
                let keys: Vec<&Vec<u8>> = order.iter().map(|&n| &items[n].claim.0).collect();
                let values: Vec<&Vec<u8>> = order.iter().map(|&n| &items[n].claim.1).collect();
                i.count(1);
                let rows = tx
                    .query(
                        "INSERT INTO pushwerk_kv (tree, key, value, lease_node)
                         SELECT $1, k, v, $4 FROM unnest($2::bytea[], $3::bytea[])
                             WITH ORDINALITY AS t(k, v, n) ORDER BY n
                         ON CONFLICT DO NOTHING RETURNING key",
                        &[&tree, &keys, &values, &i.node],
                    )
                    .await
                    .map_err(backend)?;
                let won: HashSet<Vec<u8>> = rows.into_iter().map(|r| r.get(0)).collect();
                let mut applied = Vec::with_capacity(items.len());
                let mut ops = Vec::new();
                for item in items {
                    let ok = won.contains(&item.claim.0);
                    if ok {
                        ops.extend(item.ops);
                    }
                    applied.push(ok);
                }
                write_batch(i, &tx, &tree, ops).await?;
                i.count(2);
                tx.commit().await.map_err(backend)?;
                Ok(applied)
            })
        })
    }

    /// Gives up every row this process holds, so that the first live node
    /// takes them (a migration's copy).
    pub fn release_rows(&self) -> Result<(), StoreError> {
        self.with_conn(|c, i| {
            Box::pin(async move {
                i.count(1);
                c.execute(
                    "UPDATE pushwerk_kv SET lease_node = NULL WHERE lease_node = $1",
                    &[&i.node],
                )
                .await
                .map_err(backend)?;
                Ok(())
            })
        })
    }
}
