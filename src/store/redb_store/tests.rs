use super::*;
use crate::store::conformance;

#[test]
fn meets_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    conformance::exercise(&RedbStore::open(dir.path()).unwrap());
}

#[test]
fn values_survive_a_reopen_and_files_are_private() {
    conformance::survives_reopen(RedbStore::open);
}

#[test]
fn a_second_open_is_locked() {
    conformance::second_open_is_locked(RedbStore::open);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbStore::open(dir.path()).unwrap());
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(Bytes::new(META))
            .unwrap()
            .insert(SCHEMA_KEY, (SCHEMA_VERSION + 1).to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    match RedbStore::open(dir.path()) {
        Err(StoreError::SchemaVersion { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaVersion, got {other:?}"),
    }
}

#[test]
fn the_meta_table_is_not_a_tree() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStore::open(dir.path()).unwrap();
    assert!(matches!(
        s.put(META, b"k", b"v"),
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        s.get(META, SCHEMA_KEY),
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn ids_stay_increasing_across_reopens_within_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = None;
    for _ in 0..3 {
        let s = RedbStore::open(dir.path()).unwrap();
        for _ in 0..5 {
            let id = s.next_id().unwrap();
            assert!(last.is_none_or(|l| id > l), "{id} after {last:?}");
            last = Some(id);
        }
    }
}

/// A batch is one transaction: a reader's snapshot sees all of it or
/// none of it, never a part.
#[test]
fn readers_never_see_part_of_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(RedbStore::open(dir.path()).unwrap());
    let writer = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            for round in 0u32..200 {
                let v = round.to_be_bytes().to_vec();
                let ops = (0u8..20).map(|k| (vec![k], Some(v.clone()))).collect();
                s.apply_batch("t", ops).unwrap();
            }
        })
    };
    while !writer.is_finished() {
        let seen = s.range("t", &[], &[0xff], 100, false).unwrap();
        assert!(seen.is_empty() || seen.len() == 20, "{} keys", seen.len());
        assert!(seen.windows(2).all(|w| w[0].1 == w[1].1), "mixed rounds");
    }
    writer.join().unwrap();
    assert_eq!(s.count("t", &[], &[0xff]).unwrap(), 20);
}

// Crash tests: a child process (this test binary, running one ignored
// test) writes and then ends with `_exit`, which runs no destructor:
// what it had not made durable is lost, as in a crash.

const CHILD_DIR: &str = "PUSHWERK_REDB_CRASH_DIR";
const CHILD_MODE: &str = "PUSHWERK_REDB_CRASH_MODE";

/// Runs `crash_child` in a new process on `dir` in `mode`.
fn crash(dir: &Path, mode: &str) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::redb_store::tests::crash_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_MODE, mode)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7), "the child did not reach its crash");
}

#[test]
#[ignore = "the child half of the crash tests; run by them"]
fn crash_child() {
    let (Some(dir), Some(mode)) = (std::env::var_os(CHILD_DIR), std::env::var(CHILD_MODE).ok())
    else {
        return;
    };
    let dir = PathBuf::from(dir);
    // Ends the process at once, as a crash would, with the store open.
    fn crash_now<T>(_open: &T) -> ! {
        // SAFETY: `_exit` ends the process; nothing runs after it.
        unsafe { libc::_exit(7) }
    }
    match mode.as_str() {
        "flush" => {
            let s = RedbStore::open_with(&dir, None).unwrap();
            s.put("t", b"flushed", b"v").unwrap();
            s.apply_batch("t", vec![(b"batch".to_vec(), Some(b"v".to_vec()))])
                .unwrap();
            s.flush().unwrap();
            s.put("t", b"unflushed", b"v").unwrap();
            crash_now(&s)
        }
        "durable-batch" => {
            let s = RedbStore::open_with(&dir, None).unwrap();
            s.put("t", b"before", b"v").unwrap();
            s.apply_batch_durable("t", vec![(b"batch".to_vec(), Some(b"v".to_vec()))])
                .unwrap();
            s.put("t", b"after", b"v").unwrap();
            crash_now(&s)
        }
        "background" => {
            let s = RedbStore::open(&dir).unwrap();
            s.put("t", b"background", b"v").unwrap();
            std::thread::sleep(FLUSH_EVERY * 4);
            crash_now(&s)
        }
        "ids" => {
            let s = RedbStore::open_with(&dir, None).unwrap();
            let ids: Vec<u64> = (0..3).map(|_| s.next_id().unwrap()).collect();
            // Beside the data directory, which holds pushwerk's files only.
            std::fs::write(dir.with_file_name("ids"), format!("{}", ids[2])).unwrap();
            crash_now(&s)
        }
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn flush_makes_writes_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    crash(dir.path(), "flush");
    let s = RedbStore::open(dir.path()).unwrap();
    assert_eq!(s.get("t", b"flushed").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get("t", b"batch").unwrap(), Some(b"v".to_vec()));
    // Not flushed: lost, which shows the crash was real.
    assert_eq!(s.get("t", b"unflushed").unwrap(), None);
}

#[test]
fn a_durable_batch_survives_a_crash_with_every_write_before_it() {
    let dir = tempfile::tempdir().unwrap();
    crash(dir.path(), "durable-batch");
    let s = RedbStore::open(dir.path()).unwrap();
    assert_eq!(s.get("t", b"batch").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get("t", b"before").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get("t", b"after").unwrap(), None, "the crash was real");
}

#[test]
fn the_background_flush_makes_writes_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    crash(dir.path(), "background");
    let s = RedbStore::open(dir.path()).unwrap();
    assert_eq!(s.get("t", b"background").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn ids_stay_unique_after_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    crash(&dir, "ids");
    let given: u64 = std::fs::read_to_string(tmp.path().join("ids"))
        .unwrap()
        .parse()
        .unwrap();
    let s = RedbStore::open(&dir).unwrap();
    let id = s.next_id().unwrap();
    assert!(id > given, "{id} after {given} before the crash");
}
