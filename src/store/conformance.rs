//! The [`Store`](super::Store) contract as tests, run against every
//! implementation so that the stores stay interchangeable.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{CasConflict, Store, StoreError};

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn keys_of(entries: &super::Entries) -> Vec<Vec<u8>> {
    entries.iter().map(|(k, _)| k.clone()).collect()
}

/// Every trait operation on a fresh, empty store.
pub(crate) fn exercise(s: &dyn Store) {
    // Reads of a tree never written are empty, not errors.
    assert_eq!(s.get("none", b"k").unwrap(), None);
    assert!(s.scan_prefix("none", b"").unwrap().is_empty());
    assert!(s.range("none", b"", b"\xff", 10, false).unwrap().is_empty());
    assert!(s.keys("none", b"", b"\xff", 10).unwrap().is_empty());
    assert_eq!(s.count("none", b"", b"\xff").unwrap(), 0);

    // put, overwrite, remove; trees are separate.
    s.put("a", b"k", b"v1").unwrap();
    s.put("a", b"k", b"v2").unwrap();
    assert_eq!(s.get("a", b"k").unwrap(), Some(b("v2")));
    assert_eq!(s.get("b", b"k").unwrap(), None);
    s.remove("a", b"k").unwrap();
    s.remove("a", b"k").unwrap();
    assert_eq!(s.get("a", b"k").unwrap(), None);

    // compare_and_swap.
    s.compare_and_swap("c", b"k", None, Some(b"v1"))
        .unwrap()
        .unwrap();
    let conflict = |current: &str| {
        Err(CasConflict {
            current: Some(b(current)),
        })
    };
    assert_eq!(
        s.compare_and_swap("c", b"k", None, Some(b"x")).unwrap(),
        conflict("v1")
    );
    assert_eq!(
        s.compare_and_swap("c", b"k", Some(b"nope"), Some(b"x"))
            .unwrap(),
        conflict("v1")
    );
    s.compare_and_swap("c", b"k", Some(b"v1"), Some(b"v2"))
        .unwrap()
        .unwrap();
    assert_eq!(s.get("c", b"k").unwrap(), Some(b("v2")));
    s.compare_and_swap("c", b"k", Some(b"v2"), None)
        .unwrap()
        .unwrap();
    assert_eq!(s.get("c", b"k").unwrap(), None);
    assert_eq!(
        s.compare_and_swap("c", b"k", Some(b"v2"), Some(b"x"))
            .unwrap(),
        Err(CasConflict { current: None })
    );

    // apply_batch: inserts, overwrites and removals land together; a
    // key inserted then removed in one batch ends removed.
    s.put("d", b"k1", b"old").unwrap();
    s.put("d", b"k2", b"old").unwrap();
    s.apply_batch(
        "d",
        vec![
            (b("k1"), None),
            (b("k2"), Some(b("new"))),
            (b("k3"), Some(b("new"))),
            (b("k4"), Some(b("gone"))),
            (b("k4"), None),
        ],
    )
    .unwrap();
    assert_eq!(
        s.scan_prefix("d", b"").unwrap(),
        vec![(b("k2"), b("new")), (b("k3"), b("new"))]
    );
    s.apply_batch("d", vec![]).unwrap();

    // scan_prefix, including a prefix of 0xff bytes.
    for k in ["p", "p/1", "p/3", "p/2", "q/1", "o"] {
        s.put("e", k.as_bytes(), b"v").unwrap();
    }
    s.put("e", b"\xff\xff", b"v").unwrap();
    s.put("e", b"\xff", b"v").unwrap();
    let found = s.scan_prefix("e", b"p/").unwrap();
    assert_eq!(keys_of(&found), vec![b("p/1"), b("p/2"), b("p/3")]);
    let found = s.scan_prefix("e", b"\xff").unwrap();
    assert_eq!(
        keys_of(&found),
        vec![b"\xff".to_vec(), b"\xff\xff".to_vec()]
    );
    assert_eq!(s.scan_prefix("e", b"").unwrap().len(), 8);

    // range, keys and count: start inclusive, end exclusive, limit,
    // reverse from the end.
    for i in 0u8..10 {
        s.put("f", &[i], &[i, i]).unwrap();
    }
    let k = |v: &[u8]| v.iter().map(|i| vec![*i]).collect::<Vec<_>>();
    let got = s.range("f", &[2], &[7], 100, false).unwrap();
    assert_eq!(keys_of(&got), k(&[2, 3, 4, 5, 6]));
    assert_eq!(got[0].1, vec![2, 2]);
    let got = s.range("f", &[2], &[7], 100, true).unwrap();
    assert_eq!(keys_of(&got), k(&[6, 5, 4, 3, 2]));
    let got = s.range("f", &[2], &[7], 2, false).unwrap();
    assert_eq!(keys_of(&got), k(&[2, 3]));
    let got = s.range("f", &[2], &[7], 2, true).unwrap();
    assert_eq!(keys_of(&got), k(&[6, 5]));
    assert!(s.range("f", &[2], &[7], 0, false).unwrap().is_empty());
    assert!(s.range("f", &[4], &[4], 10, false).unwrap().is_empty());
    assert!(s.range("f", &[4], &[4], 10, true).unwrap().is_empty());
    let got = s.range("f", &[], &[0xff], 100, false).unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(s.keys("f", &[2], &[7], 3).unwrap(), k(&[2, 3, 4]));
    assert_eq!(s.keys("f", &[2], &[7], 100).unwrap(), k(&[2, 3, 4, 5, 6]));
    assert!(s.keys("f", &[2], &[7], 0).unwrap().is_empty());
    assert_eq!(s.count("f", &[2], &[7]).unwrap(), 5);
    assert_eq!(s.count("f", &[], &[0xff]).unwrap(), 10);
    assert_eq!(s.count("f", &[4], &[4]).unwrap(), 0);

    // next_id: unique and increasing.
    let ids: Vec<u64> = (0..2500).map(|_| s.next_id().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing");

    s.flush().unwrap();
    assert!(s.size_on_disk().unwrap() > 0);
}

/// Values and ids survive a flush, a close and a reopen, and the data
/// directory is private (0700, files 0600).
pub(crate) fn survives_reopen<S: Store>(open: impl Fn(&Path) -> Result<S, StoreError>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let last_id = {
        let s = open(&data).unwrap();
        s.put("t", b"k", b"v1").unwrap();
        s.apply_batch("t", vec![(b("b1"), Some(b("x"))), (b("b2"), Some(b("y")))])
            .unwrap();
        let id = s.next_id().unwrap();
        s.flush().unwrap();
        id
    };
    let s = open(&data).unwrap();
    assert_eq!(s.get("t", b"k").unwrap(), Some(b("v1")));
    assert_eq!(s.count("t", b"b", b"c").unwrap(), 2);
    let id = s.next_id().unwrap();
    assert!(id > last_id, "{id} after a reopen is not above {last_id}");
    drop(s);

    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    fn check(dir: &Path) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let m = e.metadata().unwrap().permissions().mode() & 0o777;
            if e.path().is_dir() {
                assert_eq!(m, 0o700, "{}", e.path().display());
                check(&e.path());
            } else {
                assert_eq!(m & 0o077, 0, "{} is {m:o}", e.path().display());
            }
        }
    }
    check(&data);
}

/// A second open of a directory in use is refused as `Locked`.
pub(crate) fn second_open_is_locked<S: Store + std::fmt::Debug>(
    open: impl Fn(&Path) -> Result<S, StoreError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).unwrap();
    match open(dir.path()) {
        Err(StoreError::Locked(path)) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    open(dir.path()).unwrap();
}
