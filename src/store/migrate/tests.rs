//! The copy between the embedded stores, and its staging.

use super::*;

/// A store of `kind` with a token and 25,000 jobs (more than one batch
/// of the copy).
fn fill(dir: &Path, kind: StoreChoice) -> u64 {
    fill_with(dir, kind, 25_000)
}

fn fill_with(dir: &Path, kind: StoreChoice, jobs: u32) -> u64 {
    let s = super::super::open(dir, kind).unwrap();
    s.put("tokens", b"ms_mail", b"sealed-bytes").unwrap();
    // One batch: 25,000 single writes to redb are 25,000 commits (35 s).
    let jobs = (0..jobs)
        .map(|i| (i.to_be_bytes().to_vec(), Some(b"job".to_vec())))
        .collect();
    s.apply_batch("delivery", jobs).unwrap();
    let mut id = 0;
    for _ in 0..5 {
        id = s.next_id().unwrap();
    }
    s.flush().unwrap();
    id
}

fn round_trip(from: StoreChoice, to: StoreChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let last = fill(&dir, from);
    let done = migrate(&dir, from, to).unwrap();
    assert!(done.old_store.exists());
    assert!(done.trees.contains(&("delivery".into(), 25_000)));
    assert!(!dir.join(STAGING).exists());
    // `auto` opens the new store; the old one is accepted beside it.
    let s = super::super::open(&dir, StoreChoice::Auto).unwrap();
    assert_eq!(
        s.get("tokens", b"ms_mail").unwrap().unwrap(),
        b"sealed-bytes"
    );
    assert_eq!(s.count("delivery", &[], &[0xff]).unwrap(), 25_000);
    assert!(s.next_id().unwrap() > last);
    drop(s);
    assert!(super::super::open(&dir, to).is_ok());
}

#[test]
fn sled_to_redb_and_back() {
    round_trip(StoreChoice::Sled, StoreChoice::Redb);
    round_trip(StoreChoice::Redb, StoreChoice::Sled);
}

#[test]
fn refused_when_the_target_exists_or_the_source_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // A refusal reads no records: a few are enough.
    fill_with(&dir, StoreChoice::Redb, 10);
    let e = migrate(&dir, StoreChoice::Sled, StoreChoice::Redb).unwrap_err();
    assert!(e.to_string().contains("holds no sled store"), "{e}");
    let held = super::super::open(&dir, StoreChoice::Redb).unwrap();
    let e = migrate(&dir, StoreChoice::Redb, StoreChoice::Sled).unwrap_err();
    assert!(matches!(e, StoreError::Locked(_)), "{e}");
    drop(held);
}

#[test]
fn an_interrupted_migration_is_finished_or_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    fill(&dir, StoreChoice::Sled);
    // A copy that never completed: deleted, the source stays.
    std::fs::create_dir_all(dir.join(STAGING).join("sled")).unwrap();
    let s = super::super::open(&dir, StoreChoice::Auto).unwrap();
    assert_eq!(s.count("delivery", &[], &[0xff]).unwrap(), 25_000);
    drop(s);
    assert!(!dir.join(STAGING).exists());
}
