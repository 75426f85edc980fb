//! The daemon's HTTP server against hostile clients (issue #10): the token
//! is checked before a body is read, cleartext HTTP/2 is not spoken,
//! connections are bounded, half-sent heads and slow bodies are cut off,
//! SIGTERM ends within `--grace` whatever clients do, deep, duplicate-key
//! and over-64-bit events are refused with the reason, and a damaged record
//! never blocks dead letters or replay.
//!
//! Every test starts its own `pushwerk serve` (own folder, data directory
//! and port) as a real process and kills it when done; raw TCP is used
//! where a well-behaved client library would hide what is tested.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use pushwerk_testkit::daemon::{http_client, poll, Served, World as KitWorld};
use pushwerk_testkit::microsoft::HttpReceiver;

const TOKEN: &str = "hostile-test-ingest-token";

// ---------------------------------------------------------------------------
// A daemon process (the kit's harness)

/// A folder and a data directory (the kit's [`KitWorld`]).
struct World(KitWorld);

impl std::ops::Deref for World {
    type Target = KitWorld;
    fn deref(&self) -> &KitWorld {
        &self.0
    }
}

impl World {
    fn new(files: &[(&str, &str)]) -> World {
        World(KitWorld::new(crate::util::kit(), files))
    }

    /// Starts `pushwerk [global…] serve --listen … extra…` and waits for `/readyz`.
    async fn start(&self, global: &[&str], extra: &[&str]) -> Served {
        self.serve()
            .token(TOKEN)
            .global(global)
            .args(extra)
            // No idle connections kept: they would hold slots of
            // `--max-connections`.
            .client(http_client().pool_max_idle_per_host(0))
            .start()
            .await
    }
}

/// What these tests do to a daemon beyond the kit's requests.
trait Hostile {
    /// A raw TCP connection to it.
    async fn connect(&self) -> TcpStream;
    /// `POST /v1/events` with this body text and the ingest token.
    async fn post_text(&self, body: String) -> (u16, Value);
    /// `POST /v1/replay` with `body`.
    async fn replay(&self, body: Value) -> (u16, Value);
}

impl Hostile for Served {
    async fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port()))
            .await
            .expect("connect")
    }

    async fn post_text(&self, body: String) -> (u16, Value) {
        self.post_raw(body, &format!("Bearer {TOKEN}")).await
    }

    async fn replay(&self, body: Value) -> (u16, Value) {
        let r = self
            .http()
            .post(self.url("/v1/replay"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST /v1/replay");
        Served::answer(r).await
    }
}

/// Reads from `stream` until `done(bytes so far)` holds, the peer closes,
/// or `timeout` passes (then it panics naming `what`). Returns the bytes
/// and whether the peer closed the connection.
async fn read_until(
    stream: &mut TcpStream,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if done(&got) {
            return (got, false);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "timed out after {timeout:?}: {what}; got so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

fn head_complete(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n")
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn http_push(name: &str, url: &str, extra: &str) -> String {
    format!(
        "name: {name}\non: call.ended\n{extra}http:\n  url: {url}\n  json:\n    id: \"<< push.event_id >>\"\n"
    )
}

fn event_text(id: &str, data: &str) -> String {
    format!(r#"{{"id":"{id}","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{data}}}"#)
}

/// `data` nested so that the whole event body has `levels` levels of objects.
fn deep_event(id: &str, levels: usize) -> String {
    // The event object is level 1 and `data` level 2.
    let mut data = String::from("1");
    for _ in 0..levels - 1 {
        data = format!(r#"{{"a":{data}}}"#);
    }
    event_text(id, &data)
}

// ---------------------------------------------------------------------------
// 1. The token before the body; HTTP/1.1 only; bounded connections

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_large_body_is_refused_from_the_head_alone() {
    let world = World::new(&[]);
    let served = world.start(&[], &[]).await;
    for authorization in ["", "Authorization: Bearer wrong-token\r\n"] {
        let mut conn = served.connect().await;
        // A head announcing a body just under the 1 MiB limit, and no body.
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{authorization}Content-Length: 1000000\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.expect("send head");
        let (got, _) = read_until(
            &mut conn,
            "the answer to a head whose body was not sent",
            Duration::from_secs(10),
            head_complete,
        )
        .await;
        assert_eq!(
            status_of(&got),
            Some(401),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // The same with a body sent in full is still 401 (and nothing accepted).
    let (status, body) = served
        .post_raw(event_text("e1", "{}"), "Bearer wrong-token")
        .await;
    assert_eq!(status, 401, "{body}");
}

/// A client that writes its whole (too large) body before it reads gets its
/// 413, not a connection reset: the server reads and discards what is still
/// coming before it closes (lingering close). Without it, the close with
/// unread bytes resets the connection and the writer fails with a broken
/// pipe (a 2 MiB event in CI; 8 MiB here makes it certain on loopback).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_writing_all_of_a_too_large_body_reads_its_413() {
    let world = World::new(&[]);
    let served = world.start(&[], &[]).await;
    for authorization in ["Authorization: Bearer wrong-token\r\n", ""] {
        let body = format!(
            "{{\"id\":\"big\",\"type\":\"call.ended\",\"time\":\"2026-01-01T00:00:00Z\",\"data\":{{\"x\":\"{}\"}}}}",
            "x".repeat(8 * 1024 * 1024)
        );
        let authorization = if authorization.is_empty() {
            format!("Authorization: Bearer {TOKEN}\r\n")
        } else {
            authorization.to_string()
        };
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{authorization}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut conn = served.connect().await;
        conn.write_all(head.as_bytes()).await.expect("send head");
        conn.write_all(body.as_bytes())
            .await
            .expect("the server reads what the client still sends until it has sent it all");
        let (got, _) = read_until(
            &mut conn,
            "the answer to a body sent in full",
            Duration::from_secs(10),
            head_complete,
        )
        .await;
        let expected = if authorization.contains("wrong-token") {
            401
        } else {
            413
        };
        assert_eq!(
            status_of(&got),
            Some(expected),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_prior_knowledge_is_refused() {
    let world = World::new(&[]);
    let served = world.start(&[], &[]).await;
    let mut conn = served.connect().await;
    // The HTTP/2 connection preface and an empty SETTINGS frame.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]);
    conn.write_all(&preface).await.expect("send preface");
    let (got, closed) = read_until(
        &mut conn,
        "the server closes an HTTP/2 connection",
        Duration::from_secs(10),
        |_| false,
    )
    .await;
    assert!(closed);
    // An HTTP/2 server would answer with its SETTINGS frame (type 4 at byte 3).
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 4"),
        "the server spoke something other than an HTTP/1.1 error: {got:?}"
    );
    // And a client insisting on HTTP/2 gets no answer.
    let h2 = pushwerk::net::http_client()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    assert!(h2.get(served.url("/healthz")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let world = World::new(&[]);
    let served = world
        .start(&[], &["--max-connections", "2", "--header-timeout", "60s"])
        .await;
    // Two clients hold every connection with half-sent heads.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = served.connect().await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("half a head");
        held.push(c);
    }
    // A third is not served while they are open …
    let mut third = served.connect().await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a connection beyond --max-connections was served"
    );
    // … and is, once one of them goes away.
    drop(held.pop());
    let (got, _) = read_until(
        &mut third,
        "the waiting connection is served after one closed",
        Duration::from_secs(10),
        head_complete,
    )
    .await;
    assert_eq!(status_of(&got), Some(200), "{got:?}");
}

// ---------------------------------------------------------------------------
// 2. Deadlines and shutdown

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_head_is_closed_after_the_header_timeout() {
    let world = World::new(&[]);
    let served = world.start(&[], &["--header-timeout", "1s"]).await;
    let mut conn = served.connect().await;
    conn.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a head");
    let (got, closed) = read_until(
        &mut conn,
        "the server closes a connection whose head is not finished",
        Duration::from_secs(15),
        |_| false,
    )
    .await;
    assert!(closed, "{got:?}");
    // The server still serves others.
    let r = served.http().get(served.url("/healthz")).send().await;
    assert_eq!(r.expect("healthz").status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_body_gets_408_after_the_body_timeout() {
    let world = World::new(&[]);
    let served = world.start(&[], &["--body-timeout", "1s"]).await;
    let mut conn = served.connect().await;
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{\"id\":"
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    let (got, _) = read_until(
        &mut conn,
        "the answer to a body that stops arriving",
        Duration::from_secs(15),
        head_complete,
    )
    .await;
    assert_eq!(
        status_of(&got),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_within_grace_whatever_clients_do() {
    let world = World::new(&[]);
    let mut served = world
        .start(
            &[],
            &[
                "--grace",
                "2s",
                "--header-timeout",
                "60s",
                "--body-timeout",
                "60s",
            ],
        )
        .await;
    // One client stuck in its head, one in its body, one idle keep-alive.
    let mut head = served.connect().await;
    head.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a head");
    let mut body = served.connect().await;
    body.write_all(
        format!("POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{").as_bytes(),
    )
    .await
    .expect("part of a body");
    let mut idle = served.connect().await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let (got, _) = read_until(&mut idle, "healthz", Duration::from_secs(10), |b| {
        b.ends_with(b"ok\n")
    })
    .await;
    assert_eq!(status_of(&got), Some(200));
    // Exit 0 within the 2 s grace (and the time to start exiting).
    let status = served.terminate(Duration::from_secs(6)).await;
    assert!(status.success(), "{status:?}");
    drop((head, body, idle));
}

// ---------------------------------------------------------------------------
// 3. Deep events; damaged records

#[tokio::test(flavor = "multi_thread")]
async fn deep_events_are_refused_and_one_at_the_limit_survives_a_restart() {
    let rx = HttpReceiver::start().await;
    let world = World::new(&[(
        "deep.yaml",
        &http_push("deep", &rx.url("/hook"), "delay: 3s\n"),
    )]);
    let mut served = world.start(&["--store", "redb"], &[]).await;
    for levels in [65, 127, 200, 10_000] {
        let (status, body) = served
            .post_text(deep_event(&format!("deep-{levels}"), levels))
            .await;
        assert_eq!(status, 400, "{levels} levels: {body}");
        let reason = body["error"].as_str().unwrap_or_default();
        assert!(reason.contains("deeper than 64 levels"), "{reason}");
    }
    // At the limit: accepted, stored, and delivered after a restart (it
    // is due 3 s after acceptance, so the first daemon is gone by then).
    let (status, body) = served.post_text(deep_event("at-limit", 64)).await;
    assert_eq!(status, 202, "{body}");
    assert!(served.terminate(Duration::from_secs(10)).await.success());
    assert!(rx.requests().is_empty(), "delivered before the restart");
    let served = world.start(&["--store", "redb"], &[]).await;
    assert!(
        rx.wait_for_requests(1, Duration::from_secs(20)).await,
        "the event at the depth limit was not delivered after a restart:\n{}",
        served.log_text()
    );
    assert_eq!(rx.requests()[0].json()["id"], "at-limit");
    assert!(
        !served.log_text().contains("damaged"),
        "{}",
        served.log_text()
    );
}

/// A dead-letter record as the daemon writes it.
fn dead_letter_record(job_id: u64, push: &str, event: &str) -> String {
    format!(
        r#"{{"job":{{"id":{job_id},"push":"{push}","event_id":"ev-{job_id}","attempt":8,"accepted_at":"2026-01-01T00:00:00Z","first_attempt_at":"2026-01-01T00:00:00Z","due_at":"2026-01-01T00:00:00Z"}},"event":{event},"reason":"gave up","at":"2026-01-01T00:00:00Z"}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_record_does_not_block_dead_letters_replay_or_the_log() {
    let rx = HttpReceiver::start().await;
    let world = World::new(&[("p.yaml", &http_push("p", &rx.url("/hook"), ""))]);
    {
        // Plant records in the store before the daemon opens it: one good
        // dead letter, one whose event nests too deep for serde_json to read
        // back (what an unbounded ingest used to store), one that is not
        // JSON at all, and a broken delivery-log entry.
        let store = pushwerk::store::open(&world.data(), pushwerk::store::StoreChoice::Redb)
            .expect("open store");
        let tree = pushwerk::store::trees::DELIVERY;
        let key = |id: u64| [b"d:".as_slice(), &id.to_be_bytes()].concat();
        let good = dead_letter_record(1, "p", &event_text("ev-1", "{}"));
        let mut deep = String::from("1");
        for _ in 0..140 {
            deep = format!(r#"{{"a":{deep}}}"#);
        }
        let deep = dead_letter_record(2, "p", &event_text("ev-2", &deep));
        store.put(tree, &key(1), good.as_bytes()).expect("put");
        store.put(tree, &key(2), deep.as_bytes()).expect("put");
        store.put(tree, &key(3), b"\x00not json").expect("put");
        store
            .put(tree, b"l:\x00\x00\x00\x00\x00\x00\x00\x01garbage", b"{")
            .expect("put");
        store.flush().expect("flush");
    }
    let served = world.start(&["--store", "redb"], &[]).await;
    let (status, body) = served.get_raw("/v1/dead-letters").await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<u64> = body["dead_letters"]
        .as_array()
        .expect("dead_letters")
        .iter()
        .map(|d| d["job_id"].as_u64().expect("job_id"))
        .collect();
    assert_eq!(listed, vec![1]);
    assert_eq!(body["damaged"], 2, "{body}");
    let (status, body) = served.get_raw("/v1/deliveries?limit=10").await;
    assert_eq!(status, 200, "{body}");
    // Replay: the good one goes out, the damaged ones are counted and stay.
    let (status, body) = served.replay(json!({ "push": "p" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], 1, "{body}");
    assert_eq!(body["damaged"], 2, "{body}");
    assert!(rx.wait_for_requests(1, Duration::from_secs(20)).await);
    assert_eq!(rx.requests()[0].json()["id"], "ev-1");
    let (status, body) = served.replay(json!({})).await;
    assert_eq!((status, &body["replayed"]), (200, &json!(0)), "{body}");
    assert!(
        served
            .log_text()
            .contains("skipping a damaged dead letter record"),
        "{}",
        served.log_text()
    );
}

// ---------------------------------------------------------------------------
// 4. Authorization scheme; duplicate keys; integers beyond 64 bits

#[tokio::test(flavor = "multi_thread")]
async fn bearer_scheme_is_case_insensitive_and_wrong_tokens_of_any_length_fail() {
    let world = World::new(&[]);
    let served = world.start(&[], &[]).await;
    for (n, scheme) in ["bearer", "BEARER", "Bearer", "bEaReR"].iter().enumerate() {
        let (status, body) = served
            .post_raw(
                event_text(&format!("s{n}"), "{}"),
                &format!("{scheme} {TOKEN}"),
            )
            .await;
        assert_eq!(status, 202, "{scheme}: {body}");
    }
    for wrong in [
        "Bearer ".to_owned(),
        "Bearer x".to_owned(),
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        TOKEN.to_owned(),
    ] {
        let (status, body) = served.post_raw(event_text("w", "{}"), &wrong).await;
        assert_eq!(status, 401, "{wrong:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_keys_and_integers_beyond_64_bits_are_refused_by_name() {
    let rx = HttpReceiver::start().await;
    let world = World::new(&[(
        "p.yaml",
        "name: p\non: call.ended\nhttp:\n  url: URL\n  json:\n    id: \"<< push.event_id >>\"\n    n: \"<< event.n >>\"\n"
            .replace("URL", &rx.url("/hook"))
            .as_str(),
    )]);
    let served = world.start(&[], &[]).await;
    let refused = [
        (
            event_text("d1", r#"{"caller":"a","caller":"b"}"#),
            "duplicate key `caller` in the object at `data`",
        ),
        (
            r#"{"id":"d2","id":"d3","type":"call.ended","time":"2026-01-01T00:00:00Z"}"#.to_owned(),
            "duplicate key `id`",
        ),
        (
            format!(
                "[{},{}]",
                event_text("d4", "{}"),
                event_text("d5", r#"{"x":{"y":1,"y":2}}"#)
            ),
            "duplicate key `y` in the object at `[1].data.x`",
        ),
        (
            event_text("b1", r#"{"n":18446744073709551616}"#),
            "`data.n`: the integer 18446744073709551616 is outside the 64-bit range",
        ),
        (
            event_text("b2", r#"{"calls":[1,-9223372036854775809]}"#),
            "`data.calls[1]`",
        ),
    ];
    for (text, reason) in refused {
        let (status, body) = served.post_text(text.clone()).await;
        assert_eq!(status, 400, "{text}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{text}: {error}");
    }
    // Nothing of those was accepted: an id refused before is new now.
    let (status, body) = served
        .post_text(event_text("d1", r#"{"n":18446744073709551615}"#))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert!(rx.wait_for_requests(1, Duration::from_secs(20)).await);
    // The largest u64 arrives exactly.
    assert_eq!(rx.requests()[0].json()["n"], json!(18446744073709551615u64));
}

// ---------------------------------------------------------------------------
// 5. A full disk

/// A tmpfs mounted over a directory for the test's lifetime (needs root,
/// as CI runs the tests; anyone else gets a loud failure, not a pass).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "this test mounts a small tmpfs to fill the disk for real and must run as root (as .ci/run does)"
        );
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (root without CAP_SYS_ADMIN?): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Fills the file system with `filler`, to the last block.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        for chunk in [1 << 20, 4096, 512] {
            let block = vec![0u8; chunk];
            while f.write_all(&block).is_ok() {}
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// An event of about 100 KB (the disk fills in a few).
fn bulky_event(id: &str) -> String {
    event_text(id, &format!(r#"{{"pad":"{}"}}"#, "x".repeat(100_000)))
}

/// Posts bulky events until the daemon answers 503 and `/readyz` is not
/// ready; returns the ids it accepted meanwhile.
async fn post_until_full(served: &Served, prefix: &str) -> Vec<String> {
    let mut accepted = Vec::new();
    for n in 0..200 {
        let id = format!("{prefix}-{n}");
        let (status, body) = served.post_text(bulky_event(&id)).await;
        match status {
            202 => accepted.push(id),
            503 => {
                let reason = body["error"].as_str().unwrap_or_default();
                assert!(
                    reason.contains("No space left on device"),
                    "503 without the reason: {body}"
                );
                let r = served.http().get(served.url("/readyz")).send().await;
                let r = r.expect("readyz");
                if r.status() == 503 {
                    let text = r.text().await.expect("readyz text");
                    assert!(text.contains("No space left on device"), "{text}");
                    return accepted;
                }
            }
            other => panic!("{id}: unexpected {other}: {body}"),
        }
    }
    panic!("the disk never showed as full:\n{}", served.log_text());
}

async fn full_disk(store: &str, recovers_without_restart: bool) {
    let rx = HttpReceiver::start().await;
    let world = World::new(&[("p.yaml", &http_push("p", &rx.url("/hook"), ""))]);
    let disk = Tmpfs::mount(&world.data(), "16m");
    let global = ["--store", store];
    let extra = ["--grace", "3s"];
    let mut served = world.start(&global, &extra).await;
    let (status, body) = served.post_text(event_text("before", "{}")).await;
    assert_eq!(status, 202, "{body}");
    let mut accepted = vec!["before".to_owned()];

    let filler = disk.fill();
    accepted.extend(post_until_full(&served, "full").await);
    if recovers_without_restart {
        // Space returns: ready again and accepting, without a restart.
        std::fs::remove_file(&filler).expect("free the space");
        poll(
            "/readyz ready after space returned",
            Duration::from_secs(20),
            || async {
                let r = served.http().get(served.url("/readyz")).send().await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
        let (status, body) = served.post_text(event_text("after", "{}")).await;
        assert_eq!(status, 202, "{body}");
        accepted.push("after".to_owned());
        disk.fill();
        accepted.extend(post_until_full(&served, "again").await);
    }
    // SIGTERM on a full disk still ends within the grace period (3 s).
    served.terminate(Duration::from_secs(8)).await;

    // With space back, every event acknowledged with 202 is delivered.
    std::fs::remove_file(&filler).expect("free the space");
    let served = world.start(&global, &extra).await;
    let delivered = |rx: &HttpReceiver| -> std::collections::BTreeSet<String> {
        rx.requests()
            .iter()
            .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
            .collect()
    };
    poll(
        "every accepted event delivered",
        Duration::from_secs(30),
        || async {
            let got = delivered(&rx);
            accepted.iter().all(|id| got.contains(id)).then_some(())
        },
    )
    .await;
    drop(served);
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_on_redb_answers_503_not_ready_recovers_and_loses_nothing() {
    full_disk("redb", true).await;
}

/// sled turns every write into an error after a full disk until it is
/// reopened: 503 and not ready meanwhile, SIGTERM within grace, and
/// nothing lost after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn full_disk_on_sled_answers_503_not_ready_and_loses_nothing_after_a_restart() {
    full_disk("sled", false).await;
}
