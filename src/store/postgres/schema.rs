//! The tables pushwerk keeps in PostgreSQL and how a node brings a
//! database up to them: versioned migrations, run once even when several
//! nodes start together, and a database written by a newer pushwerk
//! refused instead of misread.

use super::connect::{backend, Inner};
use crate::store::StoreError;

/// The advisory-lock key under which migrations run (`pushwerk` in ASCII,
/// truncated): one node migrates, the others wait and find it done.
const MIGRATION_LOCK: i64 = 0x7075_7368_7765_726b;

/// The schema, one entry per version, applied in order inside one
/// transaction each; `pushwerk_schema` records what was applied.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE pushwerk_kv (
         tree text NOT NULL,
         key bytea NOT NULL,
         value bytea NOT NULL,
         lease_node text,
         PRIMARY KEY (tree, key)
     );
     CREATE TABLE pushwerk_nodes (
         node text PRIMARY KEY,
         seen timestamptz NOT NULL,
         started timestamptz NOT NULL DEFAULT now()
     );
     CREATE SEQUENCE pushwerk_ids INCREMENT BY 1000 START WITH 1;",
    ),
    // Each node's lease beside its heartbeat: the others judge a node by
    // its own lease (`serve --lease`), so nodes with different settings
    // never take rows a live node still holds. Rows of nodes from before
    // count with the lease they had, the default.
    (
        2,
        "ALTER TABLE pushwerk_nodes ADD COLUMN lease_ms bigint NOT NULL DEFAULT 10000;",
    ),
];

impl Inner {
    /// Applies the migrations this database lacks, under [`MIGRATION_LOCK`].
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mut slot = self.conn().await?;
        let c = slot.as_mut().expect("connected");
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(backend)?;
        let result = async {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS pushwerk_schema (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(backend)?;
            let row = c
                .query_one("SELECT coalesce(max(version), 0) FROM pushwerk_schema", &[])
                .await
                .map_err(backend)?;
            let found: i32 = row.get(0);
            let supported = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
            if found > supported {
                return Err(StoreError::SchemaVersion {
                    found: found as u32,
                    supported: supported as u32,
                });
            }
            for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
                let tx = c.transaction().await.map_err(backend)?;
                tx.batch_execute(sql).await.map_err(backend)?;
                tx.execute(
                    "INSERT INTO pushwerk_schema (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                tracing::info!(version, "PostgreSQL schema migrated");
            }
            Ok(())
        }
        .await;
        let unlock = c
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        result?;
        unlock.map_err(backend)?;
        Ok(())
    }
}
