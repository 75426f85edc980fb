//! Unit tests of store opening and choice (`store/mod.rs`).

use std::path::Path;

use super::*;

fn bytes_under(dir: &Path, out: &mut Vec<u8>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            bytes_under(&e.path(), out);
        } else {
            out.extend(std::fs::read(e.path()).unwrap());
        }
    }
}

fn holds(dir: &Path, needle: &[u8]) -> bool {
    let mut all = Vec::new();
    bytes_under(dir, &mut all);
    all.windows(needle.len()).any(|w| w == needle)
}

/// A compaction keeps every record and the id sequence, and leaves no
/// byte of an overwritten value in the data directory.
fn compaction_forgets_overwritten_values(choice: StoreChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let canary = b"CANARY-overwritten-value-0123456789";
    let last_id = {
        let s = open(&dir, choice).unwrap();
        s.put("t", b"secret", canary).unwrap();
        for i in 0..500u32 {
            s.put("bulk", &i.to_be_bytes(), &[7u8; 100]).unwrap();
        }
        s.flush().unwrap();
        s.put("t", b"secret", b"sealed").unwrap();
        let mut id = 0;
        for _ in 0..10 {
            id = s.next_id().unwrap();
        }
        s.flush().unwrap();
        id
    };
    if choice == StoreChoice::Sled {
        // redb may have reused the page already; sled's log keeps it.
        assert!(holds(&dir, canary), "the store keeps the old value");
    }
    let s = open_prepared(&dir, choice, |s| {
        s.put(trees::MAINTENANCE, COMPACT_PENDING, b"1")
    })
    .unwrap();
    assert_eq!(s.get("t", b"secret").unwrap(), Some(b"sealed".to_vec()));
    assert_eq!(s.count("bulk", &[], &[0xff]).unwrap(), 500);
    assert_eq!(s.get(trees::MAINTENANCE, COMPACT_PENDING).unwrap(), None);
    let id = s.next_id().unwrap();
    assert!(id > last_id, "{id} after {last_id}");
    s.flush().unwrap();
    drop(s);
    assert!(
        !holds(&dir, canary),
        "an overwritten value survived compaction"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // And it opens again, ids still increasing.
    let s = open(&dir, choice).unwrap();
    assert!(s.next_id().unwrap() > id);
}

#[test]
fn sled_compaction_forgets_overwritten_values() {
    compaction_forgets_overwritten_values(StoreChoice::Sled);
}

#[test]
fn redb_compaction_forgets_overwritten_values() {
    compaction_forgets_overwritten_values(StoreChoice::Redb);
}

#[test]
fn an_interrupted_sled_swap_is_finished_at_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    {
        let s = open(&dir, StoreChoice::Sled).unwrap();
        s.put("t", b"k", b"v").unwrap();
        s.flush().unwrap();
    }
    // Copy made and old store moved aside, crash before the second rename.
    std::fs::rename(dir.join("sled"), dir.join(SLED_OLD)).unwrap();
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(dir.join(SLED_OLD))
        .arg(dir.join(SLED_COMPACT))
        .status()
        .unwrap();
    assert!(copy.success());
    let s = open(&dir, StoreChoice::Auto).unwrap();
    assert_eq!(s.get("t", b"k").unwrap(), Some(b"v".to_vec()));
    assert!(!dir.join(SLED_OLD).exists() && !dir.join(SLED_COMPACT).exists());
}
