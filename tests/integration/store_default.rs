//! Issue #14, "the right store by default, encrypted tokens by default",
//! through the real binary: a new data directory gets redb and a key file
//! generated outside it (commands that only read create none), a lost or
//! wrong key is reported with the accounts and what to run, `oauth rekey`
//! leaves no record sealed with the old key, and `store migrate` moves a
//! daemon's queue, dead letters, delivery log and tokens from sled to redb
//! and back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{folder, stderr, stdout, EXAMPLE_ENV};
use pushwerk_testkit::daemon::{poll, Served, World as KitWorld};
use pushwerk_testkit::microsoft::HttpReceiver;

const REFRESH: &str = "CANARY-rt-store-default-5b1e9f";

/// An account the tests give tokens to (never refreshed here).
const ACCOUNT: &str = "kind: oauth_account
name: crm
token_url: http://127.0.0.1:9/token
client_id: c
client_secret: s
scope: offline_access
";

/// A test's folder, data directory and config directory (where the key
/// file goes), all in one temporary directory.
struct World {
    kit: KitWorld,
}

impl World {
    fn new(files: &[(&str, &str)]) -> World {
        let mut all = vec![("pushes/accounts.yaml", ACCOUNT)];
        all.extend_from_slice(files);
        World {
            kit: KitWorld::in_dir(crate::util::kit(), folder(&all)),
        }
    }

    fn path(&self) -> &Path {
        self.kit.root()
    }

    fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    fn config(&self) -> PathBuf {
        self.path().join("config")
    }

    fn key_file(&self) -> PathBuf {
        self.config().join("pushwerk").join("key")
    }

    /// `pushwerk --dir pushes --data data …` in the world, with its own
    /// config directory and no key settings from outside.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = crate::util::pushwerk_command();
        cmd.current_dir(self.path())
            .args(["--dir", "pushes", "--data", "data"])
            .args(args)
            .env("XDG_CONFIG_HOME", self.config())
            .stdin(Stdio::null());
        for name in EXAMPLE_ENV {
            cmd.env_remove(name);
        }
        for name in [
            "PUSHWERK_DATA",
            "PUSHWERK_STORE",
            "PUSHWERK_KEY",
            "PUSHWERK_KEY_FILE",
            "PUSHWERK_INGEST_TOKEN",
            "PUSHWERK_SERVER",
            "PUSHWERK_LOG",
            "PUSHWERK_LOG_FORMAT",
            "RUST_LOG",
        ] {
            cmd.env_remove(name);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("pushwerk runs")
    }

    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.run(args, env);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    fn import(&self, account: &str, extra: &[&str]) {
        let file = self.path().join("tokens.json");
        std::fs::write(
            &file,
            json!({"refresh_token": REFRESH, "access_token": "at-1", "expires_in": 3600})
                .to_string(),
        )
        .unwrap();
        let mut args = extra.to_vec();
        args.extend(["oauth", "import", account, "--file", "tokens.json"]);
        self.ok(&args, &[]);
    }

    fn names_in(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
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

fn data_holds(dir: &Path, needle: &[u8]) -> bool {
    let mut all = Vec::new();
    bytes_under(dir, &mut all);
    all.windows(needle.len()).any(|w| w == needle)
}

/// The sealed token record of `account` as the store holds it (read with
/// the library while no process holds the store).
fn record_bytes(data: &Path, account: &str) -> Vec<u8> {
    let store = pushwerk::store::open(data, pushwerk::store::StoreChoice::Auto).expect("open");
    store
        .get("tokens", account.as_bytes())
        .expect("get")
        .expect("a token record")
}

#[test]
fn a_new_data_directory_gets_redb_and_a_generated_key_and_read_only_commands_make_none() {
    let hook = "name: hook\non: x\nhttp:\n  url: http://127.0.0.1:9/h\n  headers:\n    Authorization: Bearer << oauth.crm >>\n";
    let w = World::new(&[
        (
            "event.json",
            r#"{"id":"e","type":"x","time":"2026-01-01T00:00:00Z","data":{}}"#,
        ),
        ("pushes/hook.yaml", hook),
    ]);
    // Commands that only read create nothing in the config directory.
    w.ok(&["check"], &[]);
    w.ok(&["params"], &[]);
    w.ok(&["dry-run", "hook", "--event", "event.json"], &[]);
    // Stored tokens only: there are none, which is the error; no key made.
    let out = w.run(
        &["dry-run", "hook", "--event", "event.json", "--show-secrets"],
        &[],
    );
    assert!(
        stderr(&out).contains("has no tokens yet"),
        "{}",
        stderr(&out)
    );
    assert!(!w.config().exists(), "a read-only command made a key");

    w.import("crm", &[]);
    assert_eq!(w.names_in(&w.data()), vec!["pushwerk.redb"]);
    let key = w.key_file();
    assert_eq!(mode(&key), 0o600, "the key file is private");
    assert_eq!(mode(key.parent().unwrap()), 0o700);
    assert!(
        !data_holds(&w.data(), REFRESH.as_bytes()),
        "the refresh token is sealed by default"
    );

    let out = w.ok(&["oauth", "status", "crm"], &[]);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "token state: encrypted at rest (ChaCha20-Poly1305), key: {}",
            key.display()
        )),
        "{text}"
    );
    assert!(text.contains("crm: ok"), "{text}");
    let out = w.ok(&["oauth", "status", "--format", "json"], &[]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["encrypted_at_rest"], true);
    assert_eq!(v["key"], key.display().to_string());

    // --key-file wins, and is generated where it points.
    let w2 = World::new(&[]);
    let other = w2.path().join("elsewhere").join("k");
    let out = w2.run(
        &["--key-file", other.to_str().unwrap(), "oauth", "status"],
        &[],
    );
    assert!(!w2.config().exists(), "--key-file wins over the default");
    assert!(
        stderr(&out).contains(&format!(
            "generated the key that encrypts token state: {}",
            other.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&other), 0o600);

    // PUSHWERK_KEY=none is the loud opt-out.
    let out = w.run(&["oauth", "status"], &[("PUSHWERK_KEY", "none")]);
    assert!(
        stdout(&out).starts_with("token state: NOT encrypted at rest: encryption is turned off"),
        "{}",
        stdout(&out)
    );
}

/// The README's first command, `serve --dir pushes --data data`, on a clean
/// directory: redb, and a key generated outside the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_clean_directory_makes_redb_and_a_key_without_any_flag() {
    let w = World::new(&[]);
    let served = start(&w, &[]).await;
    let log = served.log_text();
    served.stop().await;
    let names = w.names_in(&w.data());
    assert!(names.contains(&"pushwerk.redb".to_owned()), "{names:?}");
    assert!(!names.contains(&"sled".to_owned()), "{names:?}");
    assert_eq!(mode(&w.key_file()), 0o600);
    assert!(
        log.contains(&format!(
            "generated the key that encrypts token state: {}",
            w.key_file().display()
        )),
        "{log}"
    );
}

#[test]
fn without_a_home_and_a_key_nothing_is_stored_in_plain_text() {
    let w = World::new(&[]);
    let file = w.path().join("tokens.json");
    std::fs::write(&file, REFRESH).unwrap();
    let out = w
        .command(&["oauth", "import", "crm", "--file", "tokens.json"], &[])
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("HOME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no key for token state"),
        "{}",
        stderr(&out)
    );
    assert!(!w.data().exists() || !data_holds(&w.data(), REFRESH.as_bytes()));
}

#[test]
fn a_lost_key_is_reported_with_the_accounts_and_never_replaced_silently() {
    let w = World::new(&[]);
    w.import("crm", &[]);
    let key = std::fs::read_to_string(w.key_file()).unwrap();
    let before = record_bytes(&w.data(), "crm");

    // The key file is gone: no new key is generated, nothing overwritten.
    std::fs::remove_file(w.key_file()).unwrap();
    for args in [
        &["oauth", "status"][..],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let out = w.run(args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains(&format!(
                "the key file {} does not exist",
                w.key_file().display()
            )) && err.contains("`crm`")
                && err.contains("no new key was generated")
                && err.contains("pushwerk oauth import NAME"),
            "{args:?}: {err}"
        );
        assert!(!w.key_file().exists(), "{args:?} generated a key");
    }
    assert_eq!(record_bytes(&w.data(), "crm"), before);

    // Restored: everything works again.
    std::fs::write(w.key_file(), &key).unwrap();
    let out = w.ok(&["oauth", "status", "crm"], &[]);
    assert!(stdout(&out).contains("crm: ok"), "{}", stdout(&out));

    // Another key: the account is reported unreadable with what to run,
    // the others are listed, nothing crashes; a new import mends it.
    std::fs::remove_file(w.key_file()).unwrap();
    let out = w.ok(&["oauth", "keygen", "--write"], &[]);
    assert!(stdout(&out).contains(&w.key_file().display().to_string()));
    let out = w.run(&["oauth", "status"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("crm: unreadable"), "{text}");
    assert!(text.contains("pushwerk oauth import crm"), "{text}");
    assert!(
        stderr(&out).contains("cannot be decrypted with the key from"),
        "{}",
        stderr(&out)
    );
    w.import("crm", &[]);
    let out = w.ok(&["oauth", "status", "crm"], &[]);
    assert!(stdout(&out).contains("crm: ok"), "{}", stdout(&out));
}

#[test]
fn rekey_reseals_every_record_and_leaves_nothing_sealed_with_the_old_key() {
    for store in ["redb", "sled"] {
        let w = World::new(&[]);
        w.import("crm", &["--store", store]);
        let old_key = std::fs::read_to_string(w.key_file()).unwrap();
        let old_record = record_bytes(&w.data(), "crm");
        assert!(
            data_holds(&w.data(), &old_record),
            "the scan finds the record"
        );

        let out = w.ok(&["oauth", "rekey"], &[]);
        assert!(stdout(&out).contains("re-sealed the token state of 1 account"));
        let new_key = std::fs::read_to_string(w.key_file()).unwrap();
        assert_ne!(old_key, new_key, "{store}: the key file holds a new key");
        assert_eq!(mode(&w.key_file()), 0o600);
        assert_eq!(
            w.names_in(&w.config().join("pushwerk")),
            vec!["key"],
            "{store}: key.old is removed once the rewrite is durable"
        );
        assert!(
            !data_holds(&w.data(), &old_record),
            "{store}: a record sealed with the old key is still in the files"
        );
        assert!(!data_holds(&w.data(), REFRESH.as_bytes()));
        // The new key opens it, the old one does not.
        let out = w.ok(&["oauth", "status", "crm"], &[]);
        assert!(stdout(&out).contains("crm: ok"), "{}", stdout(&out));
        let out = w.run(
            &["oauth", "status", "crm"],
            &[("PUSHWERK_KEY", old_key.trim())],
        );
        assert!(stdout(&out).contains("crm: unreadable"), "{}", stdout(&out));

        // Refused while another process holds the store: nothing changes.
        let held = pushwerk::store::open(&w.data(), pushwerk::store::StoreChoice::Auto).unwrap();
        let out = w.run(&["oauth", "rekey"], &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("in use by another pushwerk process"),
            "{}",
            stderr(&out)
        );
        drop(held);
        assert_eq!(std::fs::read_to_string(w.key_file()).unwrap(), new_key);
        assert_eq!(w.names_in(&w.config().join("pushwerk")), vec!["key"]);
    }
}

#[test]
fn a_rekey_interrupted_before_the_key_file_was_replaced_is_finished() {
    use pushwerk::oauth::seal::Sealer;
    let w = World::new(&[]);
    w.import("crm", &[]);
    let old = Sealer::from_key_file(&w.key_file()).unwrap();
    // What rekey had done when it was killed: the new key staged as
    // key.new, the record re-sealed with it and flushed; key still old.
    let new_text = Sealer::generate_key();
    let new = Sealer::from_key_text(&new_text).unwrap();
    std::fs::write(w.config().join("pushwerk/key.new"), &new_text).unwrap();
    {
        let store = pushwerk::store::open(&w.data(), pushwerk::store::StoreChoice::Auto).unwrap();
        let sealed = store.get("tokens", b"crm").unwrap().unwrap();
        let plain = old.open("crm", &sealed).unwrap();
        store
            .put("tokens", b"crm", &new.seal("crm", &plain))
            .unwrap();
        store.flush().unwrap();
    }
    let out = w.ok(&["oauth", "status", "crm"], &[]);
    assert!(stdout(&out).contains("crm: ok"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("finished an interrupted `oauth rekey`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(w.key_file()).unwrap().trim(),
        new_text
    );
    assert_eq!(w.names_in(&w.config().join("pushwerk")), vec!["key"]);
}

/// `pushwerk [extra…] serve --grace 5s` on the world (the ingest token
/// generated into the data directory), ready.
async fn start(w: &World, extra: &[&str]) -> Served {
    w.kit
        .serve()
        .generated_token()
        .global(extra)
        .args(&["--grace", "5s"])
        .ready_within(Duration::from_secs(20))
        .start()
        .await
}

/// What these tests ask of a running daemon beyond the kit's requests.
trait StoreDaemon {
    /// `GET path` with the ingest token, as JSON.
    async fn get_json(&self, path: &str) -> Value;
    /// Posts event `e<n>` with `data.n = n`; expects 202.
    async fn post_event(&self, n: u32);
    /// Polls `path` until `done` holds of its answer (or 60 s pass).
    async fn wait_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value;
    /// SIGTERM, and waits (up to 20 s) for the exit.
    async fn stop(self);
}

impl StoreDaemon for Served {
    async fn get_json(&self, path: &str) -> Value {
        self.http()
            .get(self.url(path))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post_event(&self, n: u32) {
        let (status, body) = self
            .post(&json!({"id": format!("e{n}"), "type": "call.ended", "time": "2026-01-01T00:00:00Z", "data": {"n": n}}))
            .await;
        assert_eq!(status, 202, "{body}");
    }

    async fn wait_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        poll(
            &format!("{path} to get there"),
            Duration::from_secs(60),
            || async {
                let v = self.get_json(path).await;
                done(&v).then_some(v)
            },
        )
        .await
    }

    async fn stop(mut self) {
        self.terminate(Duration::from_secs(20)).await;
    }
}

/// Log entries without the fields that are the same anyway, as a set.
pub(crate) fn log_of(v: &Value) -> Vec<(u64, String, u64, String)> {
    let mut out: Vec<_> = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["job_id"].as_u64().unwrap(),
                e["push"].as_str().unwrap().to_owned(),
                e["attempt"].as_u64().unwrap(),
                e["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_moves_queue_dead_letters_log_and_tokens_sled_to_redb_and_back() {
    let sink = HttpReceiver::start().await;
    // Long enough to still be queued when the first daemon stops (from the
    // first event to the stop took 0.11 s at load 6.5), short enough not to
    // wait long for it afterwards (the second daemon is up 0.3 s after it).
    const DELAY: Duration = Duration::from_secs(3);
    let later = format!(
        "name: later\non: call.ended\ndelay: {}s\nhttp:\n  url: {}\n  json:\n    n: << event.n >>\n",
        DELAY.as_secs(),
        sink.url("/later")
    );
    let now = format!(
        "name: now\non: call.ended\nhttp:\n  url: {}\n  json:\n    n: << event.n >>\n",
        sink.url("/now")
    );
    let dead = "name: dead\non: call.ended\nwhen: event.n == 1\nhttp:\n  url: http://127.0.0.1:9/refused\nretry: { max_attempts: 1 }\n";
    let w = World::new(&[
        ("pushes/later.yaml", &later),
        ("pushes/now.yaml", &now),
        ("pushes/dead.yaml", dead),
    ]);
    let count = |path: &str| sink.requests().iter().filter(|r| r.path == path).count();

    // A sled store filled by the real daemon.
    w.import("crm", &["--store", "sled"]);
    let served = start(&w, &["--store", "sled"]).await;
    let posted = Instant::now();
    for n in 1..=3 {
        served.post_event(n).await;
    }
    served
        .wait_until("/v1/dead-letters", |v| {
            v["dead_letters"].as_array().unwrap().len() == 1
        })
        .await;
    let log = served
        .wait_until("/v1/deliveries", |v| {
            let l = log_of(v);
            l.iter().filter(|e| e.1 == "now").count() == 3
        })
        .await;
    let log_before = log_of(&log);
    // The delayed jobs wait in the first daemon's queue when it stops.
    served
        .wait_until("/v1/jobs?push=later", |v| {
            v["jobs"].as_array().unwrap().len() == 3
        })
        .await;
    served.stop().await;
    assert_eq!(
        count("/later"),
        0,
        "the delayed jobs are still queued (the first daemon stopped {:?} after the first event; the delay is {DELAY:?})",
        posted.elapsed()
    );
    let token_before = record_bytes(&w.data(), "crm");

    // sled → redb.
    let out = w.ok(&["store", "migrate", "--from", "sled", "--to", "redb"], &[]);
    assert!(
        stdout(&out).contains("the old store is kept as"),
        "{}",
        stdout(&out)
    );
    let names = w.names_in(&w.data());
    assert!(names.contains(&"pushwerk.redb".to_owned()), "{names:?}");
    assert!(!names.contains(&"sled".to_owned()), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("sled.migrated-")),
        "the old store is kept: {names:?}"
    );
    assert_eq!(
        record_bytes(&w.data(), "crm"),
        token_before,
        "sealed as it was"
    );

    // The daemon on redb (no flag: `auto` opens what is there).
    let served = start(&w, &[]).await;
    assert!(
        !served.log_text().contains("ERROR"),
        "{}",
        served.log_text()
    );
    let log = served.get_json("/v1/deliveries").await;
    let log_after = log_of(&log);
    for entry in &log_before {
        assert!(log_after.contains(entry), "{entry:?} lost: {log_after:?}");
    }
    let dead_letters = served.get_json("/v1/dead-letters").await;
    let job = dead_letters["dead_letters"][0]["job_id"].as_u64().unwrap();
    // Refused while the daemon holds the store.
    let out = w.run(&["store", "migrate", "--from", "redb", "--to", "sled"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in use by another pushwerk process"),
        "{}",
        stderr(&out)
    );
    // The queued jobs are delivered from the new store.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count("/later") < 3 {
        assert!(
            Instant::now() < deadline,
            "queued jobs not delivered after the migration"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ns: Vec<u64> = sink
        .requests()
        .iter()
        .filter(|r| r.path == "/later")
        .map(|r| r.json()["n"].as_u64().unwrap())
        .collect();
    ns.sort();
    ns.dedup();
    assert_eq!(ns, vec![1, 2, 3]);
    // The dead letter is replayable; new jobs get ids above the old ones.
    let replay = w.run(
        &["replay", &job.to_string(), "--server", &served.url("")],
        &[("PUSHWERK_INGEST_TOKEN", served.token())],
    );
    assert!(replay.status.success(), "{}", stderr(&replay));
    served.post_event(4).await;
    // New jobs get ids above every migrated one (the counter was carried).
    let max_before = log_before.iter().map(|e| e.0).max().unwrap();
    let log = served
        .wait_until("/v1/deliveries", |v| {
            let l = log_of(v);
            l.iter().filter(|e| e.1 == "now").count() == 4
                && l.iter().filter(|e| e.1 == "dead").count() >= 2
        })
        .await;
    let new_job = log_of(&log)
        .into_iter()
        .filter(|e| e.1 == "now" && !log_before.contains(e))
        .map(|e| e.0)
        .next()
        .unwrap();
    assert!(
        new_job > max_before,
        "job {new_job} after the migration is not above {max_before}"
    );
    let log_before_back = log_of(&log);
    served.stop().await;
    let out = w.ok(&["oauth", "status", "crm"], &[]);
    assert!(stdout(&out).contains("crm: ok"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("refresh token:  stored"),
        "{}",
        stdout(&out)
    );

    // And back: redb → sled.
    w.ok(&["store", "migrate", "--from", "redb", "--to", "sled"], &[]);
    let names = w.names_in(&w.data());
    assert!(names.contains(&"sled".to_owned()), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("pushwerk.redb.migrated-")),
        "{names:?}"
    );
    assert_eq!(record_bytes(&w.data(), "crm"), token_before);
    let served = start(&w, &["--store", "sled"]).await;
    let log_back = log_of(&served.get_json("/v1/deliveries").await);
    for entry in &log_before_back {
        assert!(log_back.contains(entry), "{entry:?} lost: {log_back:?}");
    }
    let dead_letters = served.get_json("/v1/dead-letters").await;
    assert_eq!(dead_letters["dead_letters"].as_array().unwrap().len(), 1);
    served.stop().await;
    let out = w.ok(&["oauth", "status", "crm"], &[]);
    assert!(stdout(&out).contains("crm: ok"), "{}", stdout(&out));
}
