//! The data directory and its stores through the real binary: pushwerk
//! changes no mode outside what it created (a shared directory such as a
//! 1777 `/tmp` is refused, a symlink is never followed), a damaged store of
//! either kind is a clear error with exit code 1 and never a panic, and
//! turning encryption on leaves no plaintext refresh token in any file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::util::{folder, stderr, stdout, EXAMPLE_ENV};

const ACCOUNT: &str = "kind: oauth_account
name: ms_mail
token_url: http://127.0.0.1:9/token
client_id: test-client
client_secret: test-secret
scope: offline_access
";

const PUSH: &str = "name: hook
on: call.ended
http:
  url: http://127.0.0.1:9/hook
  headers:
    Authorization: Bearer << oauth.ms_mail >>
  json:
    n: << event.n >>
";

const EVENT: &str =
    r#"{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{"n":1}}"#;

/// A folder with an account and a push using it, plus an event file.
fn setup() -> tempfile::TempDir {
    folder(&[
        ("pushes/accounts.yaml", ACCOUNT),
        ("pushes/hook.yaml", PUSH),
        ("event.json", EVENT),
    ])
}

/// `pushwerk --dir pushes --data DATA args…` in `cwd`, killed (and the test
/// failed) if it has not exited within 30 s.
fn run(cwd: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = crate::util::pushwerk_command();
    cmd.current_dir(cwd)
        .arg("--dir")
        .arg("pushes")
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in EXAMPLE_ENV {
        cmd.env_remove(name);
    }
    for name in [
        "PUSHWERK_DATA",
        "PUSHWERK_STORE",
        "PUSHWERK_KEY",
        "PUSHWERK_KEY_FILE",
        "PUSHWERK_INGEST_TOKEN",
        "PUSHWERK_LOG",
        "PUSHWERK_LOG_FORMAT",
        "RUST_LOG",
    ] {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("pushwerk starts");
    let pid = child.id() as libc::pid_t;
    // Waited for on a thread, so the answer is taken the moment the process
    // exits (this test runs about a hundred of them).
    let (tx, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().expect("output"));
    });
    match exited.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: `pid` is our child, not yet reaped (its waiter has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = exited.recv().expect("output after the kill");
            panic!(
                "pushwerk {args:?} did not exit within 30 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Commands that open the store (all but `serve`, which gets its own check).
const STORE_COMMANDS: [&[&str]; 4] = [
    &["oauth", "status"],
    &["oauth", "import", "ms_mail", "--file", "token.txt"],
    &["oauth", "refresh", "ms_mail"],
    &["send", "hook", "--event", "event.json"],
];

#[test]
fn a_world_writable_data_directory_is_refused_and_keeps_every_mode() {
    let tmp = setup();
    std::fs::write(tmp.path().join("token.txt"), "rt-1").unwrap();
    // A shared directory like /tmp: 1777, holding other users' files.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    let file = shared.join("someone-elses.txt");
    std::fs::write(&file, "x").unwrap();
    set_mode(&file, 0o644);
    let sub = shared.join("their-dir");
    std::fs::create_dir(&sub).unwrap();
    set_mode(&sub, 0o755);

    for args in STORE_COMMANDS.iter().copied().chain([&["serve"][..]]) {
        let out = run(tmp.path(), &shared, args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("is writable by every user (mode 1777)"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(mode(&shared), 0o1777, "{args:?} changed the shared dir");
        assert_eq!(mode(&file), 0o644, "{args:?} changed a file in it");
        assert_eq!(mode(&sub), 0o755, "{args:?} changed a folder in it");
        assert!(
            !shared.join("sled").exists() && !shared.join("pushwerk.redb").exists(),
            "{args:?} wrote a store"
        );
    }
}

#[test]
fn a_data_directory_with_foreign_files_is_refused_and_keeps_every_mode() {
    let tmp = setup();
    let data = tmp.path().join("home");
    std::fs::create_dir(&data).unwrap();
    set_mode(&data, 0o755);
    let notes = data.join("notes.txt");
    std::fs::write(&notes, "x").unwrap();
    set_mode(&notes, 0o644);

    let out = run(tmp.path(), &data, &["oauth", "status"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("holds entries that are not pushwerk's (notes.txt)"),
        "{err}"
    );
    assert_eq!(mode(&data), 0o755);
    assert_eq!(mode(&notes), 0o644);
}

#[test]
fn symlinks_in_the_data_directory_are_never_followed() {
    let tmp = setup();
    std::fs::write(tmp.path().join("token.txt"), "rt-1").unwrap();
    let data = tmp.path().join("data");
    // sled: a store that is a folder, where a symlink could be planted.
    let out = run(
        tmp.path(),
        &data,
        &[
            "--store",
            "sled",
            "oauth",
            "import",
            "ms_mail",
            "--file",
            "token.txt",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        mode(&data),
        0o700,
        "a data directory pushwerk creates is private"
    );

    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "not pushwerk's").unwrap();
    set_mode(&outside, 0o644);
    let outside_dir = tmp.path().join("outside-dir");
    std::fs::create_dir(&outside_dir).unwrap();
    set_mode(&outside_dir, 0o755);

    // Inside the store's own folder: skipped when modes are narrowed.
    std::os::unix::fs::symlink(&outside, data.join("sled/link-to-file")).unwrap();
    std::os::unix::fs::symlink(&outside_dir, data.join("sled/link-to-dir")).unwrap();
    let out = run(tmp.path(), &data, &["oauth", "status"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&outside), 0o644, "a symlink in sled/ was followed");
    assert_eq!(mode(&outside_dir), 0o755, "a symlink in sled/ was followed");
    std::fs::remove_file(data.join("sled/link-to-file")).unwrap();
    std::fs::remove_file(data.join("sled/link-to-dir")).unwrap();

    // At the top, under a foreign name or under pushwerk's own: refused.
    for name in ["evil", "ingest-token"] {
        let link = data.join(name);
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        for args in [&["oauth", "status"][..], &["serve"]] {
            let out = run(tmp.path(), &data, args, &[]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {err}");
            assert!(err.contains(&format!("not pushwerk's ({name})")), "{err}");
            assert_eq!(mode(&outside), 0o644, "{name} {args:?}");
            assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not pushwerk's");
        }
        std::fs::remove_file(&link).unwrap();
    }
}

/// xorshift64: deterministic damage without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Overwrites `count` random runs of 1–63 bytes of `file` with random bytes.
fn damage(file: &Path, seed: u64, count: usize) {
    let mut bytes = std::fs::read(file).expect("read store file");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for _ in 0..count {
        let at = rng.below(bytes.len().saturating_sub(64).max(1));
        let len = 1 + rng.below(63);
        for b in bytes.iter_mut().skip(at).take(len) {
            *b = rng.next() as u8;
        }
    }
    std::fs::write(file, bytes).expect("write store file");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Runs every command that opens the store on a damaged `data`: exit 1,
/// the damage named with advice, no panic.
fn assert_refused_cleanly(cwd: &Path, data: &Path, what: &str) {
    for args in STORE_COMMANDS.iter().copied().chain([&["serve"][..]]) {
        let out = run(cwd, data, args, &[]);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{what} {args:?}: {err}");
        assert_eq!(out.status.code(), Some(1), "{what} {args:?}: {err}");
        assert!(
            err.contains("is damaged or unreadable")
                && err.contains("restore the data directory from a backup"),
            "{what} {args:?}: {err}"
        );
    }
}

/// A sled store with a token and a few megabytes of records (several
/// segments and a snapshot, as a daemon's store has).
fn sled_store(cwd: &Path) -> PathBuf {
    let data = cwd.join("pristine");
    let out = run(
        cwd,
        &data,
        &[
            "--store",
            "sled",
            "oauth",
            "import",
            "ms_mail",
            "--file",
            "token.txt",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let store = pushwerk::store::SledStore::open(&data).expect("open sled");
    let value = vec![b'x'; 200];
    for i in 0..20_000u32 {
        pushwerk::store::Store::put(&store, "delivery", format!("k{i:08}").as_bytes(), &value)
            .unwrap();
    }
    pushwerk::store::Store::flush(&store).unwrap();
    data
}

#[test]
fn a_damaged_sled_store_is_an_error_never_a_panic() {
    let tmp = setup();
    std::fs::write(tmp.path().join("token.txt"), "rt-1").unwrap();
    let pristine = sled_store(tmp.path());
    // Damage that made sled 0.34 panic at open ("tried to serialize
    // Uninitialized", index out of bounds) or report corruption. The copies
    // are independent: checked side by side (about 70 processes).
    std::thread::scope(|scope| {
        for seed in 0..12u64 {
            let (cwd, pristine) = (tmp.path(), &pristine);
            scope.spawn(move || {
                let data = cwd.join(format!("damaged-{seed}"));
                copy_dir(pristine, &data);
                damage(&data.join("sled/db"), seed, 50 + 100 * (seed as usize % 5));
                if seed % 2 == 1 {
                    for e in std::fs::read_dir(data.join("sled")).unwrap().flatten() {
                        if e.file_name().to_string_lossy().starts_with("snap.") {
                            std::fs::remove_file(e.path()).unwrap();
                        }
                    }
                }
                // Some damage sled reads as a torn end of its log (fewer
                // records, no error): that is sled's recovery, not a failure
                // to report.
                let out = run(cwd, &data, &["oauth", "status"], &[]);
                let err = stderr(&out);
                assert!(!err.contains("panicked"), "seed {seed}: {err}");
                // A panic exits 101 even when its message is not printed.
                assert!(
                    matches!(out.status.code(), Some(0 | 1)),
                    "seed {seed}: exit {:?}: {err}",
                    out.status.code()
                );
                if err.contains("is damaged or unreadable") {
                    assert_refused_cleanly(cwd, &data, &format!("sled seed {seed}"));
                }
            });
        }
    });
    // A small store (one token record) damaged all over: sled recovers
    // nothing of it, which is reported, not opened as an empty store.
    let small = tmp.path().join("small");
    let out = run(
        tmp.path(),
        &small,
        &[
            "--store",
            "sled",
            "oauth",
            "import",
            "ms_mail",
            "--file",
            "token.txt",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let db = small.join("sled/db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().step_by(7) {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    assert_refused_cleanly(tmp.path(), &small, "sled small");

    // Damage at the very start of the log is always reported: the file cut
    // to its first 4 KiB. (A cut at a third of the file was reported only
    // as long as the records past the cut were ones sled needed: where its
    // flusher put the segments varies from run to run, and about one run in
    // ten it opened the store.)
    let data = tmp.path().join("truncated");
    copy_dir(&pristine, &data);
    let db = data.join("sled/db");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(4096)
        .unwrap();
    assert_refused_cleanly(tmp.path(), &data, "sled truncated");
}

#[test]
fn a_damaged_redb_store_is_an_error_never_a_panic() {
    let tmp = setup();
    std::fs::write(tmp.path().join("token.txt"), "rt-1").unwrap();
    let pristine = tmp.path().join("pristine");
    let out = run(
        tmp.path(),
        &pristine,
        &[
            "--store",
            "redb",
            "oauth",
            "import",
            "ms_mail",
            "--file",
            "token.txt",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for (seed, count) in [(0u64, 0usize), (1, 20), (2, 200)] {
        let data = tmp.path().join(format!("damaged-{seed}"));
        copy_dir(&pristine, &data);
        let file = data.join("pushwerk.redb");
        if count == 0 {
            // The header: not a redb file any more.
            let mut bytes = std::fs::read(&file).unwrap();
            for b in bytes.iter_mut().take(64) {
                *b = 0xA5;
            }
            std::fs::write(&file, bytes).unwrap();
        } else {
            damage(&file, seed, count);
        }
        let out = run(tmp.path(), &data, &["oauth", "status"], &[]);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "seed {seed}: {err}");
        if count == 0 || err.contains("is damaged or unreadable") {
            assert_refused_cleanly(tmp.path(), &data, &format!("redb seed {seed}"));
        } else {
            // Damage redb does not notice at open: never a panic.
            let _ = stdout(&out);
        }
    }
}

fn bytes_under(dir: &Path, out: &mut Vec<u8>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        if e.file_type().expect("file type").is_dir() {
            bytes_under(&e.path(), out);
        } else {
            out.extend(std::fs::read(e.path()).expect("read file"));
        }
    }
}

fn data_holds(dir: &Path, needle: &str) -> bool {
    let mut all = Vec::new();
    bytes_under(dir, &mut all);
    all.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A refresh token stored in plain text (an existing store from before
/// encryption was the default, made here with the opt-out
/// `PUSHWERK_KEY=none`), then the first start without any key setting:
/// a key is generated into the config directory, the record sealed and the
/// store rewritten, so the token's bytes are in no file of the data
/// directory, `oauth status` says "encrypted at rest" truly, and the token
/// still refreshes.
async fn encryption_turned_on_later(store: &str) {
    use pushwerk_testkit::identity::{IdentityMock, MockConfig};
    let mock = IdentityMock::start(MockConfig::default()).await;
    let canary = format!("CANARY-refresh-{store}-7f3a9c1d5e");
    let scope = "offline_access https://graph.microsoft.com/Mail.Send";
    mock.seed_refresh_token(&canary, scope);
    let account = format!(
        "kind: oauth_account\nname: ms_mail\ntoken_url: {}\nclient_id: {}\nclient_secret: mock-secret\nscope: {scope}\n",
        mock.token_url(),
        MockConfig::default().client_id
    );
    let tmp = folder(&[("pushes/accounts.yaml", &account)]);
    std::fs::write(tmp.path().join("token.txt"), &canary).unwrap();
    let cwd = tmp.path().to_path_buf();
    let data = cwd.join("data");
    let config = cwd.join("config");
    let config_text: &'static str = Box::leak(config.display().to_string().into_boxed_str());
    let pushwerk = |args: Vec<&'static str>, env: Vec<(&'static str, &'static str)>| {
        let (cwd, data) = (cwd.clone(), data.clone());
        let mut env = env;
        env.insert(0, ("XDG_CONFIG_HOME", config_text));
        tokio::task::spawn_blocking(move || run(&cwd, &data, &args, &env))
    };
    let store_arg: &'static str = if store == "redb" { "redb" } else { "sled" };

    let out = pushwerk(
        vec![
            "--store",
            store_arg,
            "oauth",
            "import",
            "ms_mail",
            "--file",
            "token.txt",
        ],
        vec![("PUSHWERK_KEY", "none")],
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        data_holds(&data, &canary),
        "with encryption turned off the token is stored in plain text (the scan works)"
    );
    assert!(
        !config.join("pushwerk/key").exists(),
        "no key made for none"
    );

    let out = pushwerk(vec!["oauth", "status"], vec![]).await.unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.starts_with("token state: encrypted at rest"), "{text}");
    let key_file = config.join("pushwerk/key");
    assert!(text.contains(&key_file.display().to_string()), "{text}");
    assert!(
        stderr(&out).contains("generated the key that encrypts token state"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&key_file), 0o600);
    assert!(
        !data_holds(&data, &canary),
        "{store}: the plaintext refresh token is still in the data directory"
    );
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "no leftovers of the rewrite: {names:?}");

    // Without the key the sealed record cannot be read: it really is sealed.
    let out = pushwerk(vec!["oauth", "status"], vec![("PUSHWERK_KEY", "none")])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("ms_mail: unreadable"),
        "{}",
        stdout(&out)
    );

    // The token still works.
    let out = pushwerk(vec!["oauth", "refresh", "ms_mail"], vec![])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mock.used_refresh_tokens(), vec![canary.clone()]);
    assert!(!data_holds(&data, &canary));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_encryption_on_leaves_no_plaintext_token_in_sled() {
    encryption_turned_on_later("sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_encryption_on_leaves_no_plaintext_token_in_redb() {
    encryption_turned_on_later("redb").await;
}
