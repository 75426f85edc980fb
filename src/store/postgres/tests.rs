//! The store on a real (throwaway) PostgreSQL server: the store contract,
//! migrations under concurrent starts, leases and takeover, a copy from
//! redb, unique claims under contention, and the pure helpers.

use std::time::Instant;

use super::connect::describe;
use super::kv::{collapse, prefix_end};
use super::*;
use crate::store::ClaimedBatch;

use super::test_node as node;

/// The store contract every backend keeps, on a real server, and a
/// server that is not there is a passing error, not a panic.
#[test]
fn keeps_the_store_contract_on_a_real_server() {
    // Over TCP, as most deployments connect (the others use a socket).
    let server = pg_server::PgServer::start_tcp();
    let s = node(&server, "a", DEFAULT_LEASE);
    crate::store::conformance::exercise(&s);
    assert!(s.health().is_ok());
    assert!(s.queries() > 0);
    // Ids stay unique across nodes (blocks of the one sequence).
    let t = node(&server, "b", DEFAULT_LEASE);
    let mut ids: Vec<u64> = (0..1500)
        .flat_map(|_| [s.next_id().unwrap(), t.next_id().unwrap()])
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3000);
    let gone = PgStore::connect(&PgSettings {
        url: "postgres://postgres@127.0.0.1:1/postgres".into(),
        node: "x".into(),
        lease: DEFAULT_LEASE,
    });
    let message = gone.unwrap_err().to_string();
    assert!(message.contains("cannot reach the database"), "{message}");
}

/// Several nodes starting at once migrate once; a schema newer than
/// this build is refused.
#[test]
fn migrations_run_once_when_nodes_start_together() {
    let server = pg_server::PgServer::start();
    let url = server.url();
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || {
                PgStore::connect(&PgSettings {
                    url,
                    node: format!("n{n}"),
                    lease: DEFAULT_LEASE,
                })
                .map(|_| ())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(
        server.psql("SELECT count(*) FROM pushwerk_schema"),
        MIGRATIONS.len().to_string()
    );
    server.psql("INSERT INTO pushwerk_schema (version) VALUES (99)");
    let newer = PgStore::connect(&PgSettings {
        url,
        node: "late".into(),
        lease: DEFAULT_LEASE,
    });
    assert!(
        matches!(newer, Err(StoreError::SchemaVersion { found: 99, .. })),
        "{newer:?}"
    );
}

/// Rows a live node wrote are its own; once its heartbeat stops
/// (dropped store), another node claims them after the lease.
#[test]
fn claims_skip_live_nodes_and_take_over_dead_ones() {
    let server = pg_server::PgServer::start();
    let lease = Duration::from_millis(1500);
    let a = node(&server, "a", lease);
    let b = node(&server, "b", lease);
    let ops = (0u8..10).map(|i| (vec![b'j', i], Some(vec![i]))).collect();
    a.apply_batch("q", ops).unwrap();
    assert_eq!(a.claim("q", b"j", b"k", 100).unwrap().len(), 10, "its own");
    assert!(b.claim("q", b"j", b"k", 100).unwrap().is_empty(), "a lives");
    assert!(b.claim_orphans("q", b"j", b"k", 100).unwrap().is_empty());
    a.crash();
    let start = Instant::now();
    let taken = loop {
        let taken = b.claim("q", b"j", b"k", 100).unwrap();
        if !taken.is_empty() || start.elapsed() > Duration::from_secs(10) {
            break taken;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(taken.len(), 10);
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "not before the lease"
    );
    let c = node(&server, "c", lease);
    assert!(
        c.claim("q", b"j", b"k", 100).unwrap().is_empty(),
        "b holds them now"
    );
    // A node that stops cleanly hands its rows over at once.
    drop(b);
    assert_eq!(c.claim_orphans("q", b"j", b"k", 100).unwrap().len(), 10);
}

/// Each node is judged by its own lease (`serve --lease`), kept beside its
/// heartbeat: when two crashed nodes' rows are claimed by a third with a
/// short lease, the rows of the one with a short lease are taken after it,
/// those of the one with a long lease are not — the claimer's own lease
/// does not decide (it would take rows a paused node still holds).
#[test]
fn a_node_is_judged_by_its_own_lease() {
    let server = pg_server::PgServer::start();
    let short = Duration::from_millis(1500);
    let long = Duration::from_secs(600);
    let patient = node(&server, "patient", long);
    let hasty = node(&server, "hasty", short);
    let claimer = node(&server, "claimer", short);
    let rows = |first: u8| (0u8..5).map(|i| (vec![first, i], Some(vec![i]))).collect();
    patient.apply_batch("q", rows(b'a')).unwrap();
    hasty.apply_batch("q", rows(b'b')).unwrap();
    let leases = server
        .psql("SELECT string_agg(node || '=' || lease_ms, ',' ORDER BY node) FROM pushwerk_nodes");
    assert_eq!(leases, "claimer=1500,hasty=1500,patient=600000");
    patient.crash();
    hasty.crash();
    let start = Instant::now();
    let keys = |first: u8| -> std::collections::BTreeSet<Vec<u8>> {
        (0u8..5).map(|i| vec![first, i]).collect()
    };
    // `claim` answers the rows taken and those held already: by key.
    let mut taken = std::collections::BTreeSet::new();
    while !keys(b'b').is_subset(&taken) {
        assert!(start.elapsed() < Duration::from_secs(20), "never taken");
        taken.extend(
            claimer
                .claim("q", b"a", b"c", 100)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(start.elapsed() >= short / 2, "not before its lease");
    // Judged by the claimer's lease, the patient node's rows would have
    // come over in the same claim; one claim more, a heartbeat later.
    std::thread::sleep(HEARTBEAT);
    taken.extend(
        claimer
            .claim("q", b"a", b"c", 100)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k),
    );
    assert_eq!(taken, keys(b'b'), "only the hasty node's rows");
    let live: Vec<String> = claimer
        .live_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(live, ["patient"], "alive by its own lease");
}

/// A database made by a build before `--lease` (schema version 1) is
/// brought up to date when a node starts: the nodes that were there keep
/// the default lease they ran with.
#[test]
fn a_version_1_database_gets_the_lease_column() {
    let server = pg_server::PgServer::start();
    server.psql(&format!(
        "CREATE TABLE pushwerk_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); \
         {} INSERT INTO pushwerk_schema (version) VALUES (1); \
         INSERT INTO pushwerk_nodes (node, seen) VALUES ('old', now() - interval '1 hour');",
        MIGRATIONS[0].1
    ));
    let s = node(&server, "new", Duration::from_secs(5));
    assert_eq!(
        server.psql("SELECT max(version) FROM pushwerk_schema"),
        MIGRATIONS.last().unwrap().0.to_string()
    );
    assert_eq!(
        server.psql(
            "SELECT string_agg(node || '=' || lease_ms, ',' ORDER BY node) FROM pushwerk_nodes"
        ),
        format!("new=5000,old={}", DEFAULT_LEASE.as_millis())
    );
    assert!(s.health().is_ok());
}

/// `store migrate --from redb --to postgres`: every record copied, ids
/// continue above the store's, the jobs go to the first node that
/// claims them; a second copy into the same database is refused.
#[test]
fn a_redb_store_is_copied_into_an_empty_database() {
    let server = pg_server::PgServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let last = {
        let s = crate::store::open(&dir, crate::store::StoreChoice::Redb).unwrap();
        s.put("tokens", b"acct", b"sealed").unwrap();
        s.apply_batch(
            "delivery",
            (0u8..50)
                .map(|i| (vec![b'j', b':', i], Some(vec![i])))
                .collect(),
        )
        .unwrap();
        let mut last = 0;
        for _ in 0..10 {
            last = s.next_id().unwrap();
        }
        s.flush().unwrap();
        last
    };
    let importer = node(&server, "importer", DEFAULT_LEASE);
    let trees =
        crate::store::migrate::copy_to_postgres(&dir, crate::store::StoreChoice::Redb, &importer)
            .unwrap();
    assert!(trees.contains(&("delivery".to_owned(), 50)), "{trees:?}");
    assert!(trees.contains(&("tokens".to_owned(), 1)), "{trees:?}");
    let again =
        crate::store::migrate::copy_to_postgres(&dir, crate::store::StoreChoice::Redb, &importer);
    assert!(matches!(again, Err(StoreError::Refused(_))), "{again:?}");
    let a = node(&server, "a", DEFAULT_LEASE);
    assert_eq!(a.get("tokens", b"acct").unwrap(), Some(b"sealed".to_vec()));
    assert!(a.next_id().unwrap() > last);
    assert_eq!(
        a.claim_orphans("delivery", b"j:", b"j;", 100)
            .unwrap()
            .len(),
        50
    );
}

/// The same claim key from two nodes at once is applied once.
#[test]
fn concurrent_claims_of_one_key_apply_once() {
    let server = pg_server::PgServer::start();
    let stores: Vec<Arc<PgStore>> = (0..3)
        .map(|n| Arc::new(node(&server, &format!("n{n}"), DEFAULT_LEASE)))
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let threads: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut won = 0;
                for e in 0..200u32 {
                    let item = ClaimedBatch {
                        claim: (format!("e:{e}").into_bytes(), vec![]),
                        ops: vec![(format!("j:{e}:{n}").into_bytes(), Some(vec![1]))],
                    };
                    won += s.apply_claimed("t", vec![item], true).unwrap()[0] as usize;
                }
                won
            })
        })
        .collect();
    let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(won, 200);
    assert_eq!(stores[0].count("t", b"j:", b"j;").unwrap(), 200);
}

#[test]
fn prefix_ends() {
    assert_eq!(prefix_end(b"j:"), Some(b"j;".to_vec()));
    assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"\xff\xff"), None);
    assert_eq!(prefix_end(b""), None);
}

#[test]
fn a_batch_keeps_the_last_operation_per_key() {
    let (k, v, d) = collapse(vec![
        (b"a".to_vec(), Some(b"1".to_vec())),
        (b"a".to_vec(), None),
        (b"b".to_vec(), None),
        (b"b".to_vec(), Some(b"2".to_vec())),
    ]);
    assert_eq!(
        (k, v, d),
        (
            vec![b"b".to_vec()],
            vec![b"2".to_vec()],
            vec![b"a".to_vec()]
        )
    );
}

#[test]
fn passwords_are_masked_in_messages() {
    let d = describe("postgres://u:hunter2@127.0.0.1:5432/db");
    assert!(!d.contains("hunter2"), "{d}");
    assert!(d.contains("u:***@127.0.0.1:5432/db"), "{d}");
    let d = describe("postgres://u@db.example/db?sslmode=disable&password=hunter2");
    assert!(!d.contains("hunter2"), "{d}");
    assert!(d.contains("sslmode=disable"), "{d}");
    let d = describe("host=/run/postgresql user=u password=hunter2");
    assert!(!d.contains("hunter2"), "{d}");
    let settings = PgSettings {
        url: "postgres://u:hunter2@127.0.0.1:5432/db".into(),
        node: "a".into(),
        lease: DEFAULT_LEASE,
    };
    let d = format!("{settings:?}");
    assert!(!d.contains("hunter2") && d.contains("u:***@"), "{d}");
}

/// A database that went away is told as such — unreachable, naming the
/// URL without its password — not as a full disk; reads and `/readyz`'s
/// health say the same.
#[test]
fn an_outage_names_the_database_not_the_disk() {
    let mut server = pg_server::PgServer::start();
    let url = server
        .url()
        .replacen("postgres://postgres@", "postgres://postgres:hunter2@", 1);
    // Trust authentication: the password is accepted and not checked.
    let s = PgStore::connect(&PgSettings {
        url,
        node: "a".into(),
        lease: DEFAULT_LEASE,
    })
    .unwrap();
    s.put("t", b"k", b"v").unwrap();
    server.stop();
    let e = s.get("t", b"k").unwrap_err();
    assert!(e.is_passing(), "{e:?}");
    let message = e.to_string();
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.contains("postgres:***@"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!message.contains("disk"), "{message}");
    let start = Instant::now();
    let health = loop {
        match s.health() {
            Err(e) => break e.to_string(),
            Ok(()) => {
                assert!(start.elapsed() < Duration::from_secs(10), "still healthy");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(health.contains("unreachable"), "{health}");
    assert!(
        !health.contains("hunter2") && !health.contains("disk"),
        "{health}"
    );
}

/// A node name is one live process's: a second store under the name of a
/// live node is refused (naming it) without disturbing the live one; the
/// name of a node that stopped cleanly is free at once, and that of a node
/// that died once its lease ran out.
#[test]
fn a_live_node_name_is_refused_and_a_dead_ones_is_taken_after_its_lease() {
    let server = pg_server::PgServer::start();
    let lease = Duration::from_millis(1500);
    let a = node(&server, "a", lease);
    a.put("q", b"j1", b"1").unwrap();
    let start = Instant::now();
    let twin = PgStore::connect(&PgSettings {
        url: server.url(),
        node: "a".into(),
        lease,
    });
    match twin {
        Err(StoreError::Refused(m)) => assert!(m.contains("named `a`"), "{m}"),
        other => panic!("a second `a` was not refused: {other:?}"),
    }
    assert!(start.elapsed() < lease, "refused on the live heartbeat");
    // The live node still holds its name and its rows.
    assert!(a.health().is_ok());
    let b = node(&server, "b", lease);
    assert!(b.claim_orphans("q", b"j", b"k", 10).unwrap().is_empty());
    // Stopped cleanly: the name is free at once.
    drop(a);
    let start = Instant::now();
    let a = node(&server, "a", lease);
    assert!(start.elapsed() < lease, "no wait after a clean stop");
    // Died: the restarted node waits out the lease, then runs.
    a.crash();
    let start = Instant::now();
    let a = node(&server, "a", lease);
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "not before the lease"
    );
    assert!(a.health().is_ok());
}

/// A node that was away longer than its lease (stopped with SIGSTOP, cut
/// off by the network) while another process took its name does not take
/// the name back when it returns: the new holder's heartbeat row stays
/// the new holder's, the returning node reports why it is not healthy,
/// reads and writes nothing more (no job of the name delivered twice, no
/// event accepted under a name that is no longer its own), and its goodbye
/// leaves the row alone.
#[test]
fn a_node_whose_name_was_taken_while_it_was_away_does_not_take_it_back() {
    let server = pg_server::PgServer::start();
    let lease = Duration::from_millis(1500);
    let a = node(&server, "a", lease);
    a.put("q", b"j1", b"1").unwrap();
    // While `a` is away, a new process takes the name (what `take_name`
    // does once the lease ran out: a new `started`, a fresh `seen`).
    let holder = "SELECT started::text FROM pushwerk_nodes WHERE node = 'a'";
    let before = server.psql(holder);
    server.psql(
        "UPDATE pushwerk_nodes SET started = now() + interval '1 minute', seen = now() WHERE node = 'a'",
    );
    let taken = server.psql(holder);
    assert_ne!(before, taken);
    // `a` comes back: its next heartbeat finds the name another's.
    let start = Instant::now();
    let reason = loop {
        match a.health() {
            Err(e) => break e.to_string(),
            Ok(()) => {
                assert!(
                    start.elapsed() < HEARTBEAT * 5,
                    "the returning node still passes for the name's holder"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(
        reason.contains("`a`") && reason.contains("another process"),
        "{reason}"
    );
    assert_eq!(server.psql(holder), taken, "the new holder keeps the name");
    // Nothing more is read or written under the name.
    assert!(a.get("q", b"j1").is_err());
    assert!(a.put("q", b"j2", b"2").is_err());
    assert!(a.claim_orphans("q", b"j", b"k", 10).is_err());
    drop(a);
    assert_eq!(server.psql(holder), taken, "the goodbye left the row alone");
}
