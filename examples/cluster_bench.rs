//! Several nodes on one PostgreSQL against one node on redb (issue #15;
//! BENCHMARKS.md, "Several nodes on PostgreSQL").
//!
//! ```text
//! cargo build --release --bin pushwerk
//! cargo run --release --example cluster_bench -- [EVENTS] [BATCH] [CLIENTS]
//! ```
//!
//! For each setup — redb with 1 node, PostgreSQL with 1, 2 and 3 nodes —
//! it starts a fresh store (a throwaway PostgreSQL cluster with default
//! durability and `pg_stat_statements`, the same helper the tests use;
//! needs Debian's `postgresql` package), an HTTP sink on loopback, and the
//! release daemons (`target/release/pushwerk`, or `PUSHWERK_BIN`); posts
//! EVENTS events (default 10,000) in batches of BATCH (50) from CLIENTS
//! (16) concurrent clients spread over the nodes, and reports deliveries/s
//! (first post to last delivery at the sink), the p99 of ingest→delivery
//! from the delivery log, and the statements PostgreSQL ran per delivery
//! (with and without the nodes' heartbeats). Everything runs on loopback
//! and stops by itself. `CLUSTER_BENCH_PG_NODES=N` stops at N PostgreSQL
//! nodes (0: the redb run only, to compare two builds).

#[path = "../tests/integration/pg_server.rs"]
mod pg_server;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "cluster-bench-ingest-token";

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The sink: counts POSTs, answers 200.
async fn sink() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, count)
}

struct Run {
    label: String,
    per_second: f64,
    p99_ms: u64,
    statements: Option<(f64, f64)>,
}

async fn run(
    label: &str,
    nodes: usize,
    pg: Option<&pg_server::PgServer>,
    (events, batch, clients): (usize, usize, usize),
) -> Run {
    let bin = std::env::var("PUSHWERK_BIN").unwrap_or_else(|_| "target/release/pushwerk".into());
    let tmp = tempfile::tempdir().unwrap();
    let (url, delivered) = sink().await;
    let pushes = tmp.path().join("pushes");
    std::fs::create_dir_all(&pushes).unwrap();
    std::fs::write(
        pushes.join("hook.yaml"),
        format!("name: hook\non: call.ended\nhttp:\n  url: {url}\n  json:\n    id: \"<< push.event_id >>\"\n"),
    )
    .unwrap();
    let mut children = Vec::new();
    let mut bases = Vec::new();
    for n in 0..nodes {
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.arg("--dir")
            .arg(&pushes)
            .arg("--data")
            .arg(tmp.path().join(format!("data-{n}")))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("PUSHWERK_INGEST_TOKEN", TOKEN)
            .env("XDG_CONFIG_HOME", tmp.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match pg {
            Some(pg) => {
                cmd.args(["--store", "postgres", "--node-name", &format!("n{n}")])
                    .env("PUSHWERK_DATABASE_URL", pg.url());
            }
            None => {
                cmd.args(["--store", "redb"]);
            }
        }
        children.push(cmd.spawn().unwrap_or_else(|e| panic!("{bin}: {e}")));
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    let _nodes = Nodes(children);
    let http = pushwerk::net::http_client().build().unwrap();
    for base in &bases {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{base} not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let Some(pg) = pg {
        pg.psql("SELECT pg_stat_statements_reset()");
    }
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let bases = Arc::new(bases);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, next, bases) = (http.clone(), next.clone(), bases.clone());
            tokio::spawn(async move {
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b * batch >= events {
                        return;
                    }
                    let body: Vec<Value> = (b * batch..((b + 1) * batch).min(events))
                        .map(|i| json!({"id": format!("e{i}"), "type": "call.ended", "time": "2026-01-01T00:00:00Z", "data": {}}))
                        .collect();
                    let base = &bases[(b + c) % bases.len()];
                    let r = http
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(TOKEN)
                        .json(&body)
                        .send()
                        .await
                        .expect("POST /v1/events");
                    assert_eq!(r.status(), 202);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while delivered.load(Ordering::Relaxed) < events {
        assert!(Instant::now() < deadline, "not delivered in 10 minutes");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let statements = pg.map(|pg| {
        let all: f64 = pg
            .psql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'")
            .parse()
            .unwrap();
        let beats: f64 = pg
            .psql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%INTO pushwerk_nodes%'")
            .parse()
            .unwrap();
        (all / events as f64, (all - beats) / events as f64)
    });
    // Completions are written in batches: wait until the log holds them.
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let log: Value = http
            .get(format!(
                "{}/v1/deliveries?status=delivered&limit=10000",
                bases[0]
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        latencies = log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["latency_ms"].as_u64())
            .collect();
        if latencies.len() >= events.min(10_000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    Run {
        label: label.into(),
        per_second: events as f64 / elapsed.as_secs_f64(),
        p99_ms: p99,
        statements,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("EVENTS BATCH CLIENTS: numbers"))
        .collect();
    let shape = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(50),
        args.get(2).copied().unwrap_or(16),
    );
    println!(
        "events {}, batches of {}, {} clients; nproc {}; load {}",
        shape.0,
        shape.1,
        shape.2,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut runs = vec![run("redb, 1 node", 1, None, shape).await];
    // `CLUSTER_BENCH_PG_NODES=0`: redb only (to compare two builds on it).
    let max_nodes: usize = std::env::var("CLUSTER_BENCH_PG_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    for nodes in 1..=max_nodes {
        let pg = pg_server::PgServer::start_tcp_with(&[
            "-c",
            "shared_preload_libraries=pg_stat_statements",
        ]);
        pg.psql("CREATE EXTENSION pg_stat_statements");
        runs.push(
            run(
                &format!("postgres, {nodes} node(s)"),
                nodes,
                Some(&pg),
                shape,
            )
            .await,
        );
    }
    let base = runs[0].per_second;
    println!("| setup | deliveries/s | × redb | p99 ingest→delivery | statements per delivery (without heartbeats) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &runs {
        println!(
            "| {} | {:.0} | {:.2} | {} ms | {} |",
            r.label,
            r.per_second,
            r.per_second / base,
            r.p99_ms,
            r.statements
                .map(|(a, b)| format!("{a:.2} ({b:.2})"))
                .unwrap_or_else(|| "-".into())
        );
    }
}
