//! Reading a whole database out, for `store migrate --from postgres`: the
//! nodes that are alive (a copy is refused while one runs), and every row
//! of one consistent snapshot streamed in pages, so that a large delivery
//! log never sits in memory at once.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_postgres::IsolationLevel;

use super::connect::{backend, Inner};
use super::kv::ID_BLOCK;
use super::PgStore;
use crate::store::StoreError;

/// Rows of one tree in key order: one page of [`PgStore::export`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The tree the rows belong to.
    pub tree: String,
    /// Keys and values, at most the page size given to the export.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the reading task hands to the caller, in this order: the live
/// nodes, the pages, the id floor.
enum Message {
    Nodes(Vec<String>),
    Rows(Page),
    Ids(u64),
}

/// Live nodes other than `inner`'s own, by name.
const LIVE_NODES: &str = "SELECT node, seen::text, lease_ms FROM pushwerk_nodes
     WHERE node <> $1 AND seen > now() - lease_ms * interval '1 millisecond'
     ORDER BY node";

/// A node whose heartbeat is younger than its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    /// Its name.
    pub name: String,
    /// Its last heartbeat (the server's time, as text): one that changes
    /// is a running node.
    pub seen: String,
    /// Its own lease: how long its rows stay its own after that heartbeat.
    pub lease: std::time::Duration,
}

impl LiveNode {
    fn from_row(r: &tokio_postgres::Row) -> LiveNode {
        let lease_ms: i64 = r.get(2);
        LiveNode {
            name: r.get(0),
            seen: r.get(1),
            lease: std::time::Duration::from_millis(lease_ms.max(0) as u64),
        }
    }
}

impl PgStore {
    /// The nodes, other than this process, whose heartbeat is younger than
    /// their own lease: processes that may be writing to the database now,
    /// or that stopped a moment ago (a heartbeat that changes is a live
    /// node).
    pub fn live_nodes(&self) -> Result<Vec<LiveNode>, StoreError> {
        self.with_conn(|c, i| {
            Box::pin(async move {
                i.count(1);
                let rows = c.query(LIVE_NODES, &[&i.node]).await.map_err(backend)?;
                Ok(rows.iter().map(LiveNode::from_row).collect())
            })
        })
    }

    /// Reads every row of the database, except those of the trees in
    /// `skip`, from one snapshot (a read-only `REPEATABLE READ`
    /// transaction): first `nodes` is given the live nodes of that
    /// snapshot (see [`PgStore::live_nodes`]) and may refuse, then `sink`
    /// gets the rows in (tree, key) order, in pages of at most `page` rows
    /// of one tree each; at most two pages are read ahead. Returns a floor
    /// for ids: every id the database handed out (to any node, in blocks)
    /// is below it. Nothing is written. Call it outside async code (it
    /// waits for the pages).
    pub fn export(
        &self,
        page: usize,
        skip: &[&str],
        nodes: impl FnOnce(&[String]) -> Result<(), StoreError>,
        mut sink: impl FnMut(Page) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let page = page.clamp(1, i32::MAX as usize);
        let skip: Vec<String> = skip.iter().map(|s| (*s).to_owned()).collect();
        let (tx, mut rx) = mpsc::channel(2);
        let inner = self.inner.clone();
        self.runtime().spawn(async move {
            if let Err(e) = read_all(&inner, page, skip, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        let mut nodes = Some(nodes);
        let mut next = || {
            rx.blocking_recv()
                .unwrap_or_else(|| {
                    Err(StoreError::Unavailable(
                        "the PostgreSQL runtime stopped".into(),
                    ))
                })
                .map_err(|e| self.inner.unreachable(e))
        };
        loop {
            match next()? {
                Message::Nodes(live) => {
                    if let Some(check) = nodes.take() {
                        check(&live)?;
                    }
                }
                Message::Rows(p) => sink(p)?,
                Message::Ids(floor) => return Ok(floor),
            }
        }
    }
}

/// The reading task of [`PgStore::export`] on a pooled connection (forgot
/// if it broke).
async fn read_all(
    inner: &Arc<Inner>,
    page: usize,
    skip: Vec<String>,
    tx: &mpsc::Sender<Result<Message, StoreError>>,
) -> Result<(), StoreError> {
    let mut slot = inner.conn().await?;
    let result = read_snapshot(inner, slot.as_mut().expect("connected"), page, skip, tx).await;
    if matches!(result, Err(StoreError::Unavailable(_))) {
        *slot = None;
    }
    result
}

/// Reads the snapshot; stops when the caller stops listening (the
/// transaction is then rolled back).
async fn read_snapshot(
    inner: &Inner,
    c: &mut tokio_postgres::Client,
    page: usize,
    skip: Vec<String>,
    tx: &mpsc::Sender<Result<Message, StoreError>>,
) -> Result<(), StoreError> {
    let gone = || StoreError::Backend("the copy was abandoned".into());
    let t = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(backend)?;
    inner.count(2);
    let live: Vec<String> = t
        .query(LIVE_NODES, &[&inner.node])
        .await
        .map_err(backend)?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    tx.send(Ok(Message::Nodes(live)))
        .await
        .map_err(|_| gone())?;
    let stmt = t
        .prepare(
            "SELECT tree, key, value FROM pushwerk_kv
             WHERE NOT (tree = ANY($1)) ORDER BY tree, key",
        )
        .await
        .map_err(backend)?;
    let portal = t.bind(&stmt, &[&skip]).await.map_err(backend)?;
    loop {
        inner.count(1);
        let rows = t
            .query_portal(&portal, page as i32)
            .await
            .map_err(backend)?;
        if rows.is_empty() {
            break;
        }
        let mut current: Option<Page> = None;
        for row in rows {
            let tree: String = row.get(0);
            if current.as_ref().is_some_and(|p| p.tree != tree) {
                let done = current.take().expect("a page");
                tx.send(Ok(Message::Rows(done))).await.map_err(|_| gone())?;
            }
            current
                .get_or_insert_with(|| Page {
                    tree,
                    rows: Vec::new(),
                })
                .rows
                .push((row.get(1), row.get(2)));
        }
        if let Some(p) = current {
            tx.send(Ok(Message::Rows(p))).await.map_err(|_| gone())?;
        }
    }
    // Read last (a sequence is outside any snapshot): the highest value
    // any node took; each took a block of ID_BLOCK ids from it.
    inner.count(2);
    let floor: i64 = t
        .query_one(
            "SELECT CASE WHEN is_called THEN last_value + $1 ELSE last_value END FROM pushwerk_ids",
            &[&ID_BLOCK],
        )
        .await
        .map_err(backend)?
        .get(0);
    t.commit().await.map_err(backend)?;
    tx.send(Ok(Message::Ids(floor.max(0) as u64)))
        .await
        .map_err(|_| gone())?;
    Ok(())
}
