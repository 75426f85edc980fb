//! The way back out of PostgreSQL (issue #15), through the real binary on a
//! throwaway server ([`crate::pg_server`]): a redb store goes into the
//! database (`store migrate --to postgres`), a node works on it, and
//! `store migrate --from postgres --to redb` brings everything back into a
//! data directory — the queued jobs (those the node held too), the dead
//! letter, the delivery log, the account's tokens, ids that keep
//! increasing — refused while the node runs and into a data directory that
//! holds a store, and leaving the database as it was.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::pg_server::PgServer;
use crate::store_default::log_of;
use crate::util::{kit, stderr, stdout};
use pushwerk_testkit::daemon::{poll, Served, World};
use pushwerk_testkit::microsoft::HttpReceiver;

/// How long the `later` push waits: longer than the phases before the last
/// daemon starts (the first daemon, the way in, a node on PostgreSQL, the
/// way back), so that only the last daemon delivers those jobs. Those
/// phases take 2.7 s on an idle 2-core machine: the node stops cleanly, so
/// its heartbeat row is gone and the way back has no lease to wait out.
const DELAY: Duration = Duration::from_secs(10);

/// An account whose access token is valid for an hour (never refreshed).
const ACCOUNT: &str = "kind: oauth_account
name: crm
token_url: http://127.0.0.1:9/token
client_id: c
client_secret: s
scope: offline_access
";

/// `GET path` with the ingest token, as JSON.
async fn get_json(served: &Served, path: &str) -> Value {
    served
        .http()
        .get(served.url(path))
        .bearer_auth(served.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `path` until `done` holds of its answer (or 60 s pass).
async fn wait_until(served: &Served, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll(
        &format!("{path} to get there"),
        Duration::from_secs(60),
        || async {
            let v = get_json(served, path).await;
            done(&v).then_some(v)
        },
    )
    .await
}

/// Posts event `e<n>` with `data.n = n`; expects 202.
async fn post_event(served: &Served, n: u32) {
    let (status, body) = served
        .post(&json!({"id": format!("e{n}"), "type": "call.ended", "time": "2026-01-01T00:00:00Z", "data": {"n": n}}))
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_to_postgres_and_back_keeps_queue_dead_letters_log_tokens_and_ids() {
    let server = PgServer::start();
    let url = server.url();
    let sink = HttpReceiver::start().await;
    let later = format!(
        "name: later\non: call.ended\ndelay: {}s\nhttp:\n  url: {}\n  json:\n    n: << event.n >>\n",
        DELAY.as_secs(),
        sink.url("/later")
    );
    let now = format!(
        "name: now\non: call.ended\nhttp:\n  url: {}\n  headers:\n    Authorization: Bearer << oauth.crm >>\n  json:\n    n: << event.n >>\n",
        sink.url("/now")
    );
    let dead = "name: dead\non: call.ended\nwhen: event.n == 1\nhttp:\n  url: http://127.0.0.1:9/refused\nretry: { max_attempts: 1 }\n";
    let w = World::with_config_home(
        kit(),
        &[
            ("accounts.yaml", ACCOUNT),
            ("later.yaml", &later),
            ("now.yaml", &now),
            ("dead.yaml", dead),
        ],
    );
    let count = |path: &str| sink.requests().iter().filter(|r| r.path == path).count();
    let pg = [("PUSHWERK_DATABASE_URL", url.as_str())];

    // A redb store filled by the real daemon: three `later` jobs queued,
    // a dead letter, a delivery log.
    w.import(
        "crm",
        &json!({"refresh_token": "rt-1", "access_token": "at-1", "expires_in": 3600}),
    )
    .await;
    let started = Instant::now();
    let mut served = w
        .serve()
        .ready_within(Duration::from_secs(20))
        .start()
        .await;
    for n in 1..=3 {
        post_event(&served, n).await;
    }
    let log_redb = wait_until(&served, "/v1/deliveries", |v| {
        let l = log_of(v);
        l.iter().filter(|e| e.1 == "now").count() == 3 && l.iter().any(|e| e.1 == "dead")
    })
    .await;
    let log_redb = log_of(&log_redb);
    served.terminate(Duration::from_secs(20)).await;

    // Into PostgreSQL, and a node on it: it takes the queued jobs (leased
    // to it) and accepts event 4.
    let out = w
        .pushwerk(
            &["store", "migrate", "--from", "redb", "--to", "postgres"],
            &pg,
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut node = w
        .serve()
        .global(&["--store", "postgres", "--node-name", "a"])
        .env("PUSHWERK_DATABASE_URL", &url)
        .ready_within(Duration::from_secs(20))
        .start()
        .await;
    post_event(&node, 4).await;
    let log_pg = wait_until(&node, "/v1/deliveries", |v| {
        log_of(v).iter().filter(|e| e.1 == "now").count() == 4
    })
    .await;
    let log_pg = log_of(&log_pg);
    let dead_job = get_json(&node, "/v1/dead-letters").await["dead_letters"][0]["job_id"]
        .as_u64()
        .expect("a dead letter");
    assert_eq!(
        server.psql(
            "SELECT count(*) FROM pushwerk_kv WHERE tree = 'delivery' \
             AND substring(key from 1 for 2) = 'j:'::bytea AND lease_node = 'a'"
        ),
        "4",
        "the node holds the four `later` jobs"
    );

    // The way back, refused while the data directory holds a store (the
    // redb file the way in left as it was) …
    let back = ["store", "migrate", "--from", "postgres", "--to", "redb"];
    let out = w.pushwerk(&back, &pg).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds a redb store already (pushwerk.redb): move it away first"),
        "{}",
        stderr(&out)
    );
    std::fs::rename(w.data().join("pushwerk.redb"), w.root().join("old.redb")).unwrap();
    // … and while a node runs, named.
    let out = w.pushwerk(&back, &pg).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a pushwerk node is running on this database (`a`)"),
        "{}",
        stderr(&out)
    );
    assert!(!w.data().join("pushwerk.redb").exists(), "nothing written");
    assert_eq!(count("/later"), 0, "DELAY is too short for this machine");
    node.terminate(Duration::from_secs(20)).await;

    let rows = "SELECT count(*), count(lease_node), max(md5(value)) FROM pushwerk_kv";
    let before = server.psql(rows);
    let out = w.pushwerk(&back, &pg).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("copied PostgreSQL into redb:"), "{said}");
    assert!(said.contains("tokens 1"), "{said}");
    assert!(said.contains("same key file"), "{said}");
    assert_eq!(server.psql(rows), before, "the database is left as it was");

    // A daemon on the new redb store (no flag: `auto` opens it).
    assert_eq!(count("/later"), 0, "DELAY is too short for this machine");
    let served = w
        .serve()
        .ready_within(Duration::from_secs(20))
        .start()
        .await;
    let log_back = log_of(&get_json(&served, "/v1/deliveries").await);
    for entry in log_redb.iter().chain(&log_pg) {
        assert!(log_back.contains(entry), "{entry:?} lost: {log_back:?}");
    }
    // The queued jobs, the node's included, are delivered once each.
    poll("the four `later` jobs", Duration::from_secs(60), || async {
        (count("/later") >= 4).then_some(())
    })
    .await;
    assert!(started.elapsed() >= DELAY, "not before they were due");
    let mut ns: Vec<u64> = sink
        .requests()
        .iter()
        .filter(|r| r.path == "/later")
        .map(|r| r.json()["n"].as_u64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, vec![1, 2, 3, 4]);
    // The dead letter is replayable.
    let out = w
        .pushwerk(
            &["replay", &dead_job.to_string(), "--server", &served.url("")],
            &[("PUSHWERK_INGEST_TOKEN", served.token())],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // New jobs get ids above every id the database handed out, and the
    // account's token still opens (the bearer sent is the stored one).
    post_event(&served, 5).await;
    let log = wait_until(&served, "/v1/deliveries", |v| {
        let l = log_of(v);
        l.iter().filter(|e| e.1 == "now").count() == 5
            && l.iter().filter(|e| e.1 == "dead").count() >= 2
    })
    .await;
    let max_before = log_pg.iter().map(|e| e.0).max().unwrap();
    let new_job = log_of(&log)
        .into_iter()
        .filter(|e| e.1 == "now" && !log_pg.contains(e))
        .map(|e| e.0)
        .next()
        .unwrap();
    assert!(
        new_job > max_before,
        "job {new_job} is not above {max_before}"
    );
    let fifth = sink
        .requests()
        .into_iter()
        .find(|r| r.path == "/now" && r.json()["n"] == 5)
        .expect("event 5 delivered");
    assert!(
        fifth
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer at-1"),
        "{:?}",
        fifth.headers
    );
    let mut served = served;
    served.terminate(Duration::from_secs(20)).await;
    let out = w.pushwerk(&["oauth", "status", "crm"], &[]).await;
    assert!(stdout(&out).contains("crm: ok"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("refresh token:  stored"),
        "{}",
        stdout(&out)
    );
}

/// `store migrate --help` tells that `--from` takes `postgres`, and the way
/// back without a database URL says what it needs (exit 1, nothing made).
#[test]
fn the_way_back_is_in_the_help_and_needs_a_database_url() {
    let root = crate::util::root();
    let out = crate::util::pushwerk_in(&root, &["store", "migrate", "--help"], &[]);
    let help = stdout(&out);
    assert!(out.status.success(), "{help}");
    let at = help.find("      --from <FROM>").expect("a --from flag") + 6;
    let paragraph = &help[at..];
    let paragraph = &paragraph[..paragraph.find("\n      --").unwrap_or(paragraph.len())];
    assert!(paragraph.contains("postgres"), "{paragraph}");
    assert!(help.contains("--from postgres --to redb|sled"), "{help}");

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = crate::util::pushwerk_command()
        .current_dir(&root)
        .arg("--data")
        .arg(&data)
        .args(["store", "migrate", "--from", "postgres", "--to", "redb"])
        .env_remove("PUSHWERK_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--from postgres needs --database-url (or PUSHWERK_DATABASE_URL)"),
        "{}",
        stderr(&out)
    );
    assert!(!data.exists(), "nothing was made");
}
