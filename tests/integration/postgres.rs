//! Several `pushwerk serve` processes on one PostgreSQL (issue #15), as real
//! processes on a throwaway server ([`crate::pg_server`]): a node killed
//! mid-run loses nothing, one refresh per account cluster-wide against a
//! strict rotating token endpoint, cron fires once per tick, one event id
//! posted to two nodes is delivered once, and the nodes ride out a
//! restart of PostgreSQL.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::pg_server::PgServer;
use crate::util::EXAMPLE_ENV;
use pushwerk_testkit::daemon::announced_port;
use pushwerk_testkit::identity::{IdentityMock, MockConfig};
use pushwerk_testkit::microsoft::{GraphMock, HttpReceiver};

const TOKEN: &str = "pg-test-ingest-token";
const MAIL_SCOPE: &str = "offline_access https://graph.microsoft.com/Mail.Send";

/// A pushes folder shared by the nodes, a data directory per node.
struct Cluster {
    tmp: tempfile::TempDir,
    url: String,
}

/// A running node; killed when dropped.
struct Node {
    child: Option<Child>,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn new(server: &PgServer, files: &[(&str, &str)]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("pushes")).unwrap();
        for (name, text) in files {
            std::fs::write(tmp.path().join("pushes").join(name), text).unwrap();
        }
        Cluster {
            tmp,
            url: server.url(),
        }
    }

    fn command(&self, node: &str) -> Command {
        let mut cmd = crate::util::pushwerk_command();
        cmd.arg("--dir")
            .arg(self.tmp.path().join("pushes"))
            .arg("--data")
            .arg(self.tmp.path().join(format!("data-{node}")))
            .args(["--store", "postgres", "--node-name", node])
            .env("PUSHWERK_DATABASE_URL", &self.url);
        for name in EXAMPLE_ENV {
            cmd.env_remove(name);
        }
        for name in [
            "PUSHWERK_DATA",
            "PUSHWERK_LISTEN",
            "PUSHWERK_INGEST_TOKEN",
            "PUSHWERK_KEY",
            "PUSHWERK_KEY_FILE",
            "PUSHWERK_LOG",
            "PUSHWERK_STORE",
            "RUST_LOG",
        ] {
            cmd.env_remove(name);
        }
        cmd
    }

    /// `pushwerk oauth import NAME` into the shared store.
    fn import(&self, account: &str, tokens: &Value) {
        let file = self.tmp.path().join("tokens.json");
        std::fs::write(&file, tokens.to_string()).unwrap();
        let out = self
            .command("importer")
            .args(["oauth", "import", account, "--file"])
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "oauth import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pushwerk serve` as `node`, on a port the system picks (learnt
    /// from the node's own announcement, checked against its pid: a port
    /// picked here and bound later could be taken by another test's
    /// server in between), ready.
    async fn start(&self, node: &str) -> Node {
        self.start_with(node, &[]).await
    }

    /// [`Cluster::start`] with more `serve` options.
    async fn start_with(&self, node: &str, extra: &[&str]) -> Node {
        let log = self.tmp.path().join(format!("{node}.log"));
        let data = self.tmp.path().join(format!("data-{node}"));
        let child = self
            .command(node)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--grace", "2s", "--log", "info"])
            .args(extra)
            .env("PUSHWERK_INGEST_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut n = Node {
            child: Some(child),
            base: String::new(),
            log,
            http: pushwerk::net::http_client().build().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = announced_port(&data, pid, &n.log) {
                break port;
            }
            if let Some(status) = n.child.as_mut().expect("running").try_wait().unwrap() {
                n.child = None;
                panic!("node {node} exited ({status}):\n{}", n.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "node {node} did not announce its port within 20 s:\n{}",
                n.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        n.base = format!("http://127.0.0.1:{port}");
        assert!(
            n.wait_ready(Duration::from_secs(20)).await,
            "node {node} exited before it was ready:\n{}",
            n.log_text()
        );
        n
    }
}

impl Node {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn ready(&self) -> Option<bool> {
        let r = self.http.get(self.url("/readyz")).send().await.ok()?;
        Some(r.status() == 200)
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().unwrap().is_some() {
                    self.child = None;
                    return false;
                }
            }
            if self.ready().await == Some(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("not ready within {within:?}:\n{}", self.log_text());
    }

    /// Stops it as a service manager does (SIGTERM) and waits until it
    /// has exited; panics unless it exits with success within 20 s.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 20 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status}:\n{}", self.log_text());
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// `POST /v1/events`: the status and body, or `None` if no answer came.
    async fn post(&self, body: &Value) -> Option<(u16, Value)> {
        let r = self
            .http
            .post(self.url("/v1/events"))
            .bearer_auth(TOKEN)
            .json(body)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        Some((status, body))
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }
}

fn event(id: &str) -> Value {
    json!({ "id": id, "type": "call.ended", "time": "2026-01-01T00:00:00Z", "data": {} })
}

fn http_push(url: &str) -> String {
    format!("name: hook\non: call.ended\nhttp:\n  url: {url}\n  json:\n    id: \"<< push.event_id >>\"\n")
}

/// How often each event id reached the receiver.
fn ids_received(rx: &HttpReceiver) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for r in rx.requests() {
        if let Some(id) = r.json()["id"].as_str() {
            *ids.entry(id.to_owned()).or_default() += 1;
        }
    }
    ids
}

/// Waits until every id in `want` reached the receiver, or panics.
async fn wait_delivered(
    rx: &HttpReceiver,
    want: &[String],
    within: Duration,
) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + within;
    loop {
        let got = ids_received(rx);
        let missing = want.iter().filter(|id| !got.contains_key(*id)).count();
        if missing == 0 {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted events were not delivered within {within:?}",
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 10,000 events in batches of 20 over three nodes; one node is `kill -9`ed
/// a third of the way in. Every event any node accepted is delivered;
/// the batches whose answer was lost with the node are posted again to a
/// live node (idempotent ingest). Duplicate deliveries come only from jobs
/// the dead node had sent but not yet recorded, so they stay few.
#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_deliver_every_accepted_event_when_one_is_killed() {
    const EVENTS: usize = 10_000;
    const BATCH: usize = 20;
    let server = PgServer::start();
    let rx = HttpReceiver::start().await;
    let cluster = Cluster::new(&server, &[("hook.yaml", &http_push(&rx.url("/hook")))]);
    // The node that is killed runs with a short lease (`--lease 3s`):
    // the others judge it by its own lease and take its jobs over after
    // it, not after their default 10 s.
    let mut nodes = [
        cluster.start("n0").await,
        cluster.start_with("n1", &["--lease", "3s"]).await,
        cluster.start("n2").await,
    ];
    let started = Instant::now();
    let batches: Vec<Vec<String>> = (0..EVENTS / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| format!("ev-{}", b * BATCH + i))
                .collect()
        })
        .collect();
    let mut accepted = Vec::new();
    let mut killed = false;
    for (round, chunk) in batches.chunks(24).enumerate() {
        if !killed && round * 24 * BATCH >= EVENTS / 3 {
            nodes[1].kill9();
            killed = true;
        }
        let live: Vec<&Node> = nodes.iter().filter(|n| n.child.is_some()).collect();
        let posts = chunk.iter().enumerate().map(|(i, ids)| {
            let node = live[i % live.len()];
            let body = Value::Array(ids.iter().map(|id| event(id)).collect());
            async move { (ids, node.post(&body).await) }
        });
        for (ids, answer) in futures_join(posts).await {
            match answer {
                Some((202, _)) => accepted.extend(ids.iter().cloned()),
                // Lost with a dead node: sent again to a live one.
                _ => {
                    let body = Value::Array(ids.iter().map(|id| event(id)).collect());
                    let (status, answer) = nodes[0].post(&body).await.expect("n0 answers");
                    assert_eq!(status, 202, "{answer}");
                    accepted.extend(ids.iter().cloned());
                }
            }
        }
    }
    assert!(killed);
    let got = wait_delivered(&rx, &accepted, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let deliveries: usize = got.values().sum();
    let duplicates = deliveries - got.len();
    eprintln!(
        "{EVENTS} events over 3 nodes (one killed): {deliveries} deliveries, {duplicates} duplicates, {:.1} s",
        elapsed.as_secs_f64()
    );
    assert_eq!(got.len(), EVENTS, "every event delivered");
    assert!(
        duplicates <= 1_000,
        "{duplicates} duplicate deliveries: more than the dead node can have had in flight"
    );
    // The survivors recorded every job: nothing is left queued.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = nodes[0].get("/v1/jobs?limit=10").await;
        if jobs["jobs"].as_array().is_some_and(|j| j.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "jobs left queued: {jobs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().map(|r| r.expect("finished")).collect()
}

/// Three nodes, an expired access token, a token endpoint that rotates
/// refresh tokens strictly (a reused one is refused, which revokes the
/// grant): events on every node at once make exactly one token request,
/// and every mail goes out with the one new token.
#[tokio::test(flavor = "multi_thread")]
async fn one_token_refresh_across_three_nodes() {
    let server = PgServer::start();
    let identity = IdentityMock::start(MockConfig {
        strict_rotation: true,
        ..MockConfig::default()
    })
    .await;
    let graph = GraphMock::start().await;
    graph.accept_token_prefix("mock-at.graph.microsoft.com.");
    identity.seed_refresh_token("rt-seed", MAIL_SCOPE);
    let account = format!(
        "kind: oauth_account\nname: ms_mail\ntoken_url: {}\nclient_id: {}\nclient_secret: mock-secret\nscope: {MAIL_SCOPE}\n",
        identity.token_url(),
        MockConfig::default().client_id
    );
    let push = format!(
        "name: mail\non: call.ended\ngraph_mail:\n  account: ms_mail\n  base_url: {}\n  to: [sales@example.com]\n  subject: Call << push.event_id >>\n  text: hello\n",
        graph.base_url()
    );
    let cluster = Cluster::new(
        &server,
        &[("accounts.yaml", &account), ("mail.yaml", &push)],
    );
    cluster.import(
        "ms_mail",
        &json!({"access_token": "mock-at.graph.microsoft.com.expired", "refresh_token": "rt-seed", "expires_in": 0}),
    );
    let nodes = [
        cluster.start("a").await,
        cluster.start("b").await,
        cluster.start("c").await,
    ];
    let posts = (0..30).map(|i| {
        let node = &nodes[i % 3];
        async move { node.post(&event(&format!("storm-{i}"))).await }
    });
    for answer in futures_join(posts).await {
        assert_eq!(answer.map(|a| a.0), Some(202));
    }
    assert!(
        graph.wait_for_requests(30, Duration::from_secs(30)).await,
        "every mail sent: {} of 30",
        graph.requests().len()
    );
    assert_eq!(
        identity.token_request_count(),
        1,
        "one refresh cluster-wide"
    );
    let statuses: Vec<u16> = identity.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200], "no refresh token reused");
    let issued = identity.issued_access_tokens();
    assert_eq!(issued.len(), 1);
    for r in graph.requests() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {}", issued[0]).as_str()),
            "every node used the one new token"
        );
    }
}

/// A per-second cron push on three nodes for 5 s: each tick fires once.
#[tokio::test(flavor = "multi_thread")]
async fn cron_fires_once_per_tick_across_three_nodes() {
    let server = PgServer::start();
    let rx = HttpReceiver::start().await;
    let push = format!(
        "name: tick\nschedule: \"* * * * * *\"\nhttp:\n  url: {}\n  json:\n    id: \"<< push.event_id >>\"\n",
        rx.url("/tick")
    );
    let cluster = Cluster::new(&server, &[("tick.yaml", &push)]);
    let first_start = Instant::now();
    let nodes = [
        cluster.start("a").await,
        cluster.start("b").await,
        cluster.start("c").await,
    ];
    // The scenario is "three nodes share the clock for a while": 5 ticks
    // each contended by three nodes (10 s caught nothing that 5 s misses).
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(nodes);
    let seconds = first_start.elapsed().as_secs() as usize;
    let got = ids_received(&rx);
    let repeated: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "ticks fired more than once: {repeated:?}"
    );
    assert!(
        got.keys().all(|id| id.starts_with("schedule:tick:")),
        "{got:?}"
    );
    // One a second while any node ran: at least the 5 s all three ran,
    // at most one per second since the first started.
    assert!(
        (4..=seconds + 1).contains(&got.len()),
        "{} ticks in {seconds} s",
        got.len()
    );
}

/// The same event id posted to two nodes at the same moment is accepted
/// once (the other answer counts it a duplicate) and delivered once.
#[tokio::test(flavor = "multi_thread")]
async fn one_event_id_posted_to_two_nodes_at_once_is_delivered_once() {
    // Over TCP, as most deployments connect (the others use a socket).
    let server = PgServer::start_tcp();
    let rx = HttpReceiver::start().await;
    let cluster = Cluster::new(&server, &[("hook.yaml", &http_push(&rx.url("/hook")))]);
    let a = cluster.start("a").await;
    let b = cluster.start("b").await;
    // Both nodes show the push with one hash, each under its own name.
    let (pa, pb) = (a.get("/v1/pushes").await, b.get("/v1/pushes").await);
    assert_eq!(
        (pa["node"].as_str(), pb["node"].as_str()),
        (Some("a"), Some("b"))
    );
    let hash = pa["pushes"][0]["hash"].as_str().expect("a hash").to_owned();
    assert_eq!(pb["pushes"][0]["hash"], hash.as_str());
    let ids: Vec<String> = (0..50).map(|i| format!("twice-{i}")).collect();
    for id in &ids {
        let body = event(id);
        let (x, y) = tokio::join!(a.post(&body), b.post(&body));
        let (x, y) = (x.expect("a answers"), y.expect("b answers"));
        assert_eq!((x.0, y.0), (202, 202));
        let accepted = x.1["accepted"].as_u64().unwrap() + y.1["accepted"].as_u64().unwrap();
        let duplicates = x.1["duplicates"].as_u64().unwrap() + y.1["duplicates"].as_u64().unwrap();
        assert_eq!((accepted, duplicates), (1, 1), "{id}: {} / {}", x.1, y.1);
    }
    let got = wait_delivered(&rx, &ids, Duration::from_secs(30)).await;
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_later = ids_received(&rx);
    assert_eq!(got, got_later);
    assert!(got.values().all(|n| *n == 1), "{got:?}");
}

/// PostgreSQL stopped under load: the nodes report not ready (and refuse
/// events with 503) meanwhile; after it is back they are ready again by
/// themselves, and every event they accepted is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_ride_out_a_postgres_restart() {
    let mut server = PgServer::start();
    let rx = HttpReceiver::start().await;
    let cluster = Cluster::new(&server, &[("hook.yaml", &http_push(&rx.url("/hook")))]);
    let mut a = cluster.start("a").await;
    let mut b = cluster.start("b").await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut n = 0;
    async fn post(node: &Node, n: &mut usize) -> (String, Option<u16>) {
        *n += 1;
        let id = format!("r-{n}");
        let answer = node.post(&Value::Array(vec![event(&id)])).await;
        (id, answer.map(|a| a.0))
    }
    for _ in 0..100 {
        let (id, answer) = post(if n % 2 == 0 { &a } else { &b }, &mut n).await;
        if answer == Some(202) {
            accepted.push(id);
        }
    }
    server.stop();
    // Not ready within a few seconds; events are refused, not lost.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ra, rb) = (a.ready().await, b.ready().await);
        if ra == Some(false) && rb == Some(false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready with PostgreSQL down"
        );
        let (id, answer) = post(&a, &mut n).await;
        match answer {
            Some(202) => accepted.push(id),
            _ => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..10 {
        let (id, answer) = post(&b, &mut n).await;
        match answer {
            Some(202) => accepted.push(id),
            _ => refused += 1,
        }
    }
    assert!(
        refused >= 10,
        "events are refused while the database is down"
    );
    server.resume();
    assert!(a.wait_ready(Duration::from_secs(30)).await, "a recovers");
    assert!(b.wait_ready(Duration::from_secs(30)).await, "b recovers");
    for _ in 0..100 {
        let (id, answer) = post(if n % 2 == 0 { &a } else { &b }, &mut n).await;
        assert_eq!(answer, Some(202));
        accepted.push(id);
    }
    let got = wait_delivered(&rx, &accepted, Duration::from_secs(60)).await;
    assert!(got.len() >= 200, "{}", got.len());
}

/// A second `pushwerk serve` under the name of a running node exits with
/// an error naming the node, and the running node goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_node_under_a_running_nodes_name_is_refused() {
    let server = PgServer::start();
    let rx = HttpReceiver::start().await;
    let cluster = Cluster::new(&server, &[("hook.yaml", &http_push(&rx.url("/hook")))]);
    let a = cluster.start("a").await;
    let mut twin = cluster
        .command("a")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PUSHWERK_INGEST_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = twin.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = twin.kill();
            let _ = twin.wait();
            panic!("the second `a` is still running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut twin.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("another pushwerk node named `a`"), "{err}");
    assert_eq!(a.ready().await, Some(true), "the running node is untouched");
    let (status, _) = a.post(&event("after-twin")).await.expect("a answers");
    assert_eq!(status, 202);
    wait_delivered(&rx, &["after-twin".to_owned()], Duration::from_secs(20)).await;
}

/// A node stopped cleanly (SIGTERM) removes its heartbeat row as it exits,
/// so the others take its leased jobs at once and a node started under its
/// name does not wait out the lease. (The row stayed: the daemon's commit
/// threads held the store at exit, so its drop never said goodbye.)
#[tokio::test(flavor = "multi_thread")]
async fn a_node_stopped_cleanly_leaves_no_heartbeat_behind() {
    let server = PgServer::start();
    let rx = HttpReceiver::start().await;
    let cluster = Cluster::new(&server, &[("hook.yaml", &http_push(&rx.url("/hook")))]);
    let count = || server.psql("SELECT count(*) FROM pushwerk_nodes WHERE node = 'a'");
    let mut a = cluster.start("a").await;
    assert_eq!(count(), "1", "a running node has its heartbeat row");
    a.terminate();
    assert_eq!(count(), "0", "{}", a.log_text());
}
