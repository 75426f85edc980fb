//! The way back out of PostgreSQL, on a real (throwaway) server.

use super::*;
use crate::store::postgres::{pg_server::PgServer, test_node, DEFAULT_LEASE};

/// Every record (more than one page) comes back, jobs a node held
/// included; the refresh leases stay behind; ids continue above every
/// block any node took; the database is left as it was. Refused while
/// a node runs (named), and into a data directory with a store.
#[test]
fn a_database_is_copied_back_into_a_data_directory() {
    let server = PgServer::start();
    let a = test_node(&server, "a", DEFAULT_LEASE);
    let b = test_node(&server, "b", DEFAULT_LEASE);
    a.put("tokens", b"ms_mail", b"sealed-bytes").unwrap();
    a.put("token_leases", b"ms_mail", b"{\"node\":\"a\"}")
        .unwrap();
    let jobs = (0u32..25_000)
        .map(|i| {
            (
                [b"j:".as_slice(), &i.to_be_bytes()].concat(),
                Some(b"job".to_vec()),
            )
        })
        .collect();
    a.apply_batch("delivery", jobs).unwrap();
    let mut last = 0;
    for _ in 0..5 {
        last = last.max(a.next_id().unwrap()).max(b.next_id().unwrap());
    }
    let rows = "SELECT count(*), count(lease_node) FROM pushwerk_kv";
    let before = server.psql(rows);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let exporter = test_node(&server, "exporter", DEFAULT_LEASE);
    let e = copy_from_postgres(&exporter, &dir, StoreChoice::Redb).unwrap_err();
    assert!(matches!(e, StoreError::Refused(_)), "{e}");
    assert!(e.to_string().contains("`a`, `b`"), "{e}");
    assert!(!super::super::holds_store(&dir), "nothing was written");
    // Stopped cleanly: the rows keep `a` as their holder.
    drop(a);
    drop(b);

    let held = tmp.path().join("held");
    super::super::open(&held, StoreChoice::Sled).unwrap();
    let e = copy_from_postgres(&exporter, &held, StoreChoice::Redb).unwrap_err();
    assert!(e.to_string().contains("holds a sled store already"), "{e}");

    // A node that died (no goodbye) a moment ago: its heartbeat is
    // watched until the lease runs out, then the copy goes on.
    test_node(&server, "c", DEFAULT_LEASE).crash();
    drop(exporter);
    let lease = std::time::Duration::from_millis(1500);
    let exporter = test_node(&server, "exporter-2", lease);
    let start = std::time::Instant::now();
    let trees = copy_from_postgres(&exporter, &dir, StoreChoice::Redb).unwrap();
    assert!(start.elapsed() >= lease / 2, "{:?}", start.elapsed());
    assert_eq!(
        trees,
        vec![("delivery".into(), 25_000), ("tokens".into(), 1)],
        "the refresh leases stay behind"
    );
    assert_eq!(server.psql(rows), before, "the database is as it was");
    assert!(!dir.join(STAGING).exists());
    let s = super::super::open(&dir, StoreChoice::Auto).unwrap();
    assert_eq!(
        s.get("tokens", b"ms_mail").unwrap().unwrap(),
        b"sealed-bytes"
    );
    assert_eq!(s.count("delivery", b"j:", b"j;").unwrap(), 25_000);
    // Blocks of 1000 from 1: `b`'s, which holds `last`, ends here.
    let block_end = last - (last - 1) % 1000 + 1000;
    assert!(s.next_id().unwrap() >= block_end, "above every block");
    // The copied jobs are plain records: the queue takes them all.
    assert_eq!(
        s.range("delivery", b"j:", b"j;", 30_000, false)
            .unwrap()
            .len(),
        25_000
    );
}
