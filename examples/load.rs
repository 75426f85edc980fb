//! The load tool: the release daemon end to end on loopback (see BENCHMARKS.md).
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example load -- --events 20000 --concurrency 32
//! cargo run --release --example load -- --events 20000 --concurrency 32 --batch 100
//! cargo run --release --example load -- --events 25000 --rate 5000
//! cargo run --release --example load -- --token-storm
//! cargo run --release --example load -- --soak 1000000 --batch 50 --rate 2500
//! ```
//!
//! It starts, all on 127.0.0.1: a sink answering Graph `sendMail` (and any
//! other POST) with 202, a token-endpoint stand-in, and `pushwerk serve` as a
//! child process with tokens imported beforehand (`pushwerk oauth import`);
//! the sink, the token endpoint and the daemon harness are the test kit's
//! (`testkit/`, `pushwerk_testkit::{load, daemon}`).
//! Every event carries the client's send time (`event.sent_ns`, unix nanos),
//! which the push puts into the mail subject, so the sink measures
//! ingest → delivery latency. In the same run the tool measures the sink's
//! own limit (the tool hitting the sink directly with the same concurrency)
//! and the two-hop loopback limit (tool → relay → sink), and prints each rate
//! also as a ratio to both.
//!
//! Every loop is bounded in count and time; the daemon is stopped at the end
//! (SIGTERM, then kill).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use clap::{Parser, ValueEnum};
use pushwerk_testkit::daemon::{Pushwerk, Served, World as KitWorld};
use pushwerk_testkit::load::{serve, unix_ns, Sink, TokenEndpoint};

/// Drives the release daemon with events and measures deliveries at a local sink.
#[derive(Debug, Parser)]
#[command(name = "load")]
struct Args {
    /// Events to send (default 20,000; --token-storm: 5,000 = 10,000 deliveries).
    #[arg(long)]
    events: Option<u64>,
    /// Concurrent HTTP clients (also used to measure the sink's limit).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Events per ingest request (a JSON array when > 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Send at this many events/s instead of flat out.
    #[arg(long)]
    rate: Option<f64>,
    /// The pushwerk binary (default: `cargo build --release --bin pushwerk`, then target/release/pushwerk).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Target of the push: a Graph mail (4 in flight per mailbox) or an HTTP POST (8 per host).
    #[arg(long, value_enum, default_value_t = Target::Graph)]
    target: Target,
    /// More arguments for `pushwerk serve`, e.g. `--serve-arg=--event-window=60s`.
    #[arg(long, allow_hyphen_values = true)]
    serve_arg: Vec<String>,
    /// The daemon's store (`--store` of pushwerk).
    #[arg(long, default_value = "sled")]
    store: String,
    /// `in_flight:` of the push: deliveries to the sink in flight at most
    /// (default: the push's own default, 4 for a Graph mailbox, 8 per HTTP
    /// host). The sink is no mailbox: raise it to measure the engine rather
    /// than Graph's per-mailbox limit.
    #[arg(long)]
    in_flight: Option<u32>,
    /// Token storm: all deliveries (a Graph mail and an HTTP push per event)
    /// come due at once with an expired access token; reports token requests made.
    #[arg(long)]
    token_storm: bool,
    /// Soak: send this many events, report the store's disk use and RSS at the start
    /// and at the end, after the daemon's retention has run.
    #[arg(long)]
    soak: Option<u64>,
    /// How long to measure the sink's own limit.
    #[arg(long, default_value_t = 3.0)]
    sink_secs: f64,
    /// Longest time for sending events (a bound, not a target).
    #[arg(long, default_value_t = 900)]
    max_send_secs: u64,
    /// Longest wait for deliveries without progress after sending.
    #[arg(long, default_value_t = 20)]
    stall_secs: u64,
    /// Latency of the token endpoint stand-in (a real one takes 100–300 ms).
    #[arg(long, default_value_t = 200)]
    token_delay_ms: u64,
    /// How long to wait for the daemon to exit after SIGTERM before killing it.
    #[arg(long, default_value_t = 15)]
    stop_wait_secs: u64,
    /// Keep the temporary folder (pushes, store data, daemon log) and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Graph,
    Http,
}

const INGEST_TOKEN: &str = "load-test-ingest-token-0123456789abcdef";
const EXPIRED_TOKEN: &str = "at-imported-expired";

// ------------------------------------------------------------- the relay

/// A stand-in for an ideal daemon: forwards each request to the sink, no
/// storage, no rendering. Measures the two-hop loopback limit.
struct Relay {
    client: reqwest::Client,
    url: String,
}

async fn relay_handler(State(r): State<Arc<Relay>>, body: Bytes) -> StatusCode {
    match r
        .client
        .post(&r.url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(resp) if resp.status() == StatusCode::ACCEPTED => StatusCode::ACCEPTED,
        _ => StatusCode::BAD_GATEWAY,
    }
}

// ------------------------------------------------------------- the daemon

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user, system) used by process `pid` (`self` for this one).
fn cpu_secs(pid: &str) -> (f64, f64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf only reads a configuration value.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / tick
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    (field(11), field(12))
}

/// Context switches (voluntary + involuntary) summed over the threads of `pid`.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// (sum of file sizes, allocated bytes) under `dir`.
fn disk_use(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut sizes = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                sizes.0 += m.len();
                sizes.1 += m.blocks() * 512;
            }
        }
    }
    sizes
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

fn locate_binary(args: &Args) -> PathBuf {
    if let Some(b) = &args.bin {
        return b.clone();
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("building the daemon: cargo build --release --bin pushwerk");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "pushwerk"])
        .current_dir(manifest)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --release failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"));
    target.join("release/pushwerk")
}

/// The run's folder and data directory (the test kit's [`KitWorld`], kept
/// with `--keep`) and what the tool needs to know of it.
struct World {
    kit: KitWorld,
    /// Deliveries each event makes.
    per_event: u64,
    /// More arguments for `serve`.
    serve_args: Vec<String>,
}

fn write_world(
    bin: &Path,
    args: &Args,
    sink: std::net::SocketAddr,
    token: std::net::SocketAddr,
) -> World {
    let account = format!(
        "kind: oauth_account\nname: bench\ntoken_url: http://{token}/token\nclient_id: bench\nclient_secret: x\nscope: offline_access bench\n"
    );
    // In a token storm every delivery comes due at once, a few seconds after
    // the last event was accepted.
    let mut delay = if args.token_storm { "delay: 5s\n" } else { "" }.to_owned();
    if let Some(n) = args.in_flight {
        delay.push_str(&format!("in_flight: {n}\n"));
    }
    let graph = format!(
        "name: bench-mail\non: bench.event\n{delay}graph_mail:\n  account: bench\n  base_url: http://{sink}\n  to: [sink@example.com]\n  subject: \"<< event.sent_ns >>\"\n  text: \"load test event << push.event_id >>\"\n  save_to_sent_items: false\n"
    );
    let http = format!(
        "name: bench-http\non: bench.event\n{delay}http:\n  method: POST\n  url: http://{sink}/hook\n  headers:\n    Authorization: Bearer << oauth.bench >>\n  json:\n    sent_ns: << event.sent_ns >>\n    event: << push.event_id >>\n"
    );
    let mut files = vec![("accounts.yaml", account.as_str())];
    if args.token_storm || args.target == Target::Graph {
        files.push(("bench-mail.yaml", &graph));
    }
    if args.token_storm || args.target == Target::Http {
        files.push(("bench-http.yaml", &http));
    }
    // The generated key stays in this run's directory, not in the user's
    // ~/.config.
    let pushwerk = Pushwerk::new(bin, std::env::temp_dir());
    let mut kit = KitWorld::with_config_home(&pushwerk, &files);
    kit.set_env("PUSHWERK_STORE", &args.store);
    kit.set_env("PUSHWERK_LOG", "warn");
    World {
        kit,
        per_event: files.len() as u64 - 1,
        serve_args: args.serve_arg.clone(),
    }
}

fn import_tokens(world: &World, expired: bool) {
    let file = world.kit.root().join("token.json");
    let json = if expired {
        format!(
            r#"{{"access_token":"{EXPIRED_TOKEN}","refresh_token":"rt-imported","expires_in":0}}"#
        )
    } else {
        r#"{"access_token":"at-imported-valid","refresh_token":"rt-imported","expires_in":3600}"#
            .to_owned()
    };
    std::fs::write(&file, json).unwrap();
    let out = world
        .kit
        .command()
        .args(["oauth", "import", "bench", "--file"])
        .arg(&file)
        .output()
        .expect("run pushwerk oauth import");
    assert!(
        out.status.success(),
        "oauth import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn start_daemon(world: &World) -> Served {
    let serve_args: Vec<&str> = world.serve_args.iter().map(String::as_str).collect();
    world
        .kit
        .serve()
        .token(INGEST_TOKEN)
        .args(&["--grace", "5s"])
        .args(&serve_args)
        .ready_within(Duration::from_secs(60))
        .start()
        .await
}

// ------------------------------------------------------------- the driver

#[derive(Default)]
struct Drive {
    accepted: AtomicU64,
    refused: AtomicU64,
    requests: AtomicU64,
    last_accept_ns: AtomicU64,
    late: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct Plan {
    url: String,
    events: u64,
    batch: usize,
    concurrency: usize,
    rate: Option<f64>,
    run_id: String,
    deadline: Instant,
}

fn event_batch(plan: &Plan, from: u64, n: u64) -> String {
    let sent = unix_ns();
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let one = |i: u64| {
        format!(
            r#"{{"id":"{}-{i}","type":"bench.event","time":"{time}","data":{{"sent_ns":"{sent}","n":{i}}}}}"#,
            plan.run_id
        )
    };
    if plan.batch == 1 {
        one(from)
    } else {
        let items: Vec<String> = (from..from + n).map(one).collect();
        format!("[{}]", items.join(","))
    }
}

async fn drive(client: reqwest::Client, plan: Arc<Plan>, stats: Arc<Drive>) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..plan.concurrency.max(1) {
        let (client, plan, stats, next) =
            (client.clone(), plan.clone(), stats.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(plan.batch as u64, Ordering::Relaxed);
                if from >= plan.events || Instant::now() > plan.deadline {
                    return;
                }
                let n = (plan.events - from).min(plan.batch as u64);
                if let Some(rate) = plan.rate {
                    let due = start + Duration::from_secs_f64(from as f64 / rate);
                    if Instant::now() > due + Duration::from_millis(1) {
                        stats.late.fetch_add(n, Ordering::Relaxed);
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = event_batch(&plan, from, n);
                stats.requests.fetch_add(1, Ordering::Relaxed);
                let result = client
                    .post(&plan.url)
                    .bearer_auth(INGEST_TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match result {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        let accepted = r
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v.get("accepted").and_then(|a| a.as_u64()))
                            .unwrap_or(0);
                        stats.accepted.fetch_add(accepted, Ordering::Relaxed);
                        stats.last_accept_ns.fetch_max(unix_ns(), Ordering::Relaxed);
                    }
                    Ok(r) => {
                        stats.refused.fetch_add(n, Ordering::Relaxed);
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        stats
                            .first_error
                            .lock()
                            .unwrap()
                            .get_or_insert(format!("{status}: {text}"));
                    }
                    Err(e) => {
                        stats.refused.fetch_add(n, Ordering::Relaxed);
                        stats
                            .first_error
                            .lock()
                            .unwrap()
                            .get_or_insert(e.to_string());
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    start.elapsed()
}

/// The limit of `url`: the tool posting a Graph-mail-sized body with `c`
/// clients for `secs`. Requests/s. At the sink this is the sink's own limit;
/// at the relay, the two-hop loopback limit.
async fn probe(client: &reqwest::Client, url: String, c: usize, secs: f64) -> f64 {
    let body = r#"{"message":{"subject":"probe","body":{"contentType":"Text","content":"load test event probe-000000"},"toRecipients":[{"emailAddress":{"address":"sink@example.com"}}]},"saveToSentItems":false}"#;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c.max(1) {
        let (client, url, done, stop) = (client.clone(), url.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 10 M requests per client, and the stop flag.
            for _ in 0..10_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let ok = client
                    .post(&url)
                    .bearer_auth("at-probe")
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::ACCEPTED);
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let n = done.load(Ordering::SeqCst);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    n as f64 / elapsed.as_secs_f64()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e6
}

async fn metrics_lines(
    client: &reqwest::Client,
    daemon: &Served,
    prefixes: &[&str],
) -> Vec<String> {
    let Ok(r) = client
        .get(daemon.url("/metrics"))
        .bearer_auth(daemon.metrics_token().unwrap_or_default())
        .send()
        .await
    else {
        return Vec::new();
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(args.batch >= 1, "--batch must be at least 1");
    let bin = locate_binary(&args);
    assert!(bin.is_file(), "no pushwerk binary at {}", bin.display());
    let events = match (args.soak, args.events, args.token_storm) {
        (Some(n), _, _) => n,
        (None, Some(n), _) => n,
        (None, None, true) => 5_000,
        (None, None, false) => 20_000,
    };
    let mode = if args.token_storm {
        "token storm"
    } else if args.soak.is_some() {
        "soak"
    } else if args.rate.is_some() {
        "fixed rate"
    } else {
        "flat out"
    };
    println!(
        "pushwerk load: {mode}, {events} events, concurrency {}, batch {}, rate {}, target {:?}, in_flight {}, store {}, binary {}",
        args.concurrency,
        args.batch,
        args.rate.map_or("max".to_owned(), |r| format!("{r} events/s")),
        if args.token_storm { Target::Graph } else { args.target },
        args.in_flight.map_or("default".to_owned(), |n| n.to_string()),
        args.store,
        bin.display()
    );
    println!(
        "machine: {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_avg()
    );

    // The sink (Graph `sendMail` and any other POST: 202) and the token
    // endpoint stand-in come from the test kit.
    let sink = Arc::new(Sink::new(EXPIRED_TOKEN));
    let sink_addr = sink.start().await;
    let tokens = Arc::new(TokenEndpoint::new(Duration::from_millis(
        args.token_delay_ms,
    )));
    let token_addr = tokens.start().await;
    let client = pushwerk::net::http_client()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // The sink's own limit and the two-hop loopback limit (tool → relay →
    // sink: what a daemon that stored nothing and rendered nothing could
    // do), measured in this run before the daemon starts.
    let relay_addr = serve(
        Router::new()
            .route("/relay", post(relay_handler))
            .with_state(Arc::new(Relay {
                client: pushwerk::net::http_client()
                    .pool_max_idle_per_host(32)
                    .build()
                    .unwrap(),
                url: format!("http://{sink_addr}/v1.0/me/sendMail"),
            })),
    )
    .await;
    let limit = probe(
        &client,
        format!("http://{sink_addr}/v1.0/me/sendMail"),
        args.concurrency,
        args.sink_secs,
    )
    .await;
    let two_hop = probe(
        &client,
        format!("http://{relay_addr}/relay"),
        args.concurrency,
        args.sink_secs,
    )
    .await;
    sink.reset();
    println!(
        "sink limit (tool → sink directly, {} clients, {:.0} s): {limit:.0} requests/s; two-hop loopback limit (tool → relay → sink): {two_hop:.0} requests/s",
        args.concurrency, args.sink_secs
    );

    let world = write_world(&bin, &args, sink_addr, token_addr);
    import_tokens(&world, args.token_storm);
    let mut daemon = start_daemon(&world).await;
    let pid = daemon.pid();
    let start_rss = status_kb(pid, "VmRSS:").unwrap_or(0);
    let start_disk = disk_use(&world.kit.data());
    if args.soak.is_some() {
        println!(
            "start: daemon RSS {} (VmRSS), store data {} (allocated {})",
            mb(start_rss * 1024),
            mb(start_disk.0),
            mb(start_disk.1)
        );
    }

    let plan = Arc::new(Plan {
        url: daemon.url("/v1/events"),
        events,
        batch: if args.token_storm {
            args.batch.max(500)
        } else {
            args.batch
        },
        concurrency: args.concurrency,
        rate: args.rate,
        run_id: format!("load{}", unix_ns()),
        deadline: Instant::now() + Duration::from_secs(args.max_send_secs),
    });
    let stats = Arc::new(Drive::default());
    let daemon_cpu0 = cpu_secs(&pid.to_string());
    let tool_cpu0 = cpu_secs("self");
    let switches0 = context_switches(pid);
    let started_ns = unix_ns();
    let driver = tokio::spawn(drive(client.clone(), plan.clone(), stats.clone()));

    // Progress (soak) while sending; bounded by the send deadline.
    let mut next_report = Instant::now() + Duration::from_secs(30);
    while !driver.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if args.soak.is_some() && Instant::now() >= next_report {
            next_report = Instant::now() + Duration::from_secs(30);
            let d = disk_use(&world.kit.data());
            println!(
                "  … {} events accepted, {} delivered, RSS {}, store {} (load {})",
                stats.accepted.load(Ordering::Relaxed),
                sink.count.load(Ordering::Relaxed),
                mb(status_kb(pid, "VmRSS:").unwrap_or(0) * 1024),
                mb(d.0),
                load_avg()
            );
        }
    }
    let send_time = driver.await.unwrap();
    let daemon_cpu_sent = cpu_secs(&pid.to_string());
    let delivered_when_sent = sink.count.load(Ordering::SeqCst);
    let accepted = stats.accepted.load(Ordering::SeqCst);
    let expected = accepted * world.per_event;

    // Wait for the deliveries: until all arrived, or no progress for a while.
    let mut last = sink.count.load(Ordering::SeqCst);
    let mut last_progress = Instant::now();
    let hard_deadline = Instant::now() + Duration::from_secs(args.max_send_secs + 60);
    while sink.count.load(Ordering::SeqCst) < expected
        && last_progress.elapsed() < Duration::from_secs(args.stall_secs)
        && Instant::now() < hard_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = sink.count.load(Ordering::SeqCst);
        if now != last {
            last = now;
            last_progress = Instant::now();
        }
    }
    let load_at_end = load_avg();
    let daemon_cpu1 = cpu_secs(&pid.to_string());
    let tool_cpu1 = cpu_secs("self");
    let switches = context_switches(pid).saturating_sub(switches0);
    let delivered = sink.count.load(Ordering::SeqCst);
    let first_arrival = sink.first_ns.load(Ordering::SeqCst);
    let last_arrival = sink.last_ns.load(Ordering::SeqCst);
    let last_accept = stats.last_accept_ns.load(Ordering::SeqCst);

    let accept_secs = (last_accept.saturating_sub(started_ns)) as f64 / 1e9;
    let total_secs = (last_arrival.saturating_sub(started_ns)) as f64 / 1e9;
    let delivery_secs = (last_arrival.saturating_sub(first_arrival)) as f64 / 1e9;
    let events_per_s = accepted as f64 / accept_secs.max(1e-9);
    let deliveries_per_s = delivered as f64 / total_secs.max(1e-9);
    let mut lat = std::mem::take(&mut *sink.latencies_ns.lock().unwrap());
    lat.sort_unstable();

    println!(
        "sent {} requests in {:.2} s; accepted {accepted} events (202), refused {}{}",
        stats.requests.load(Ordering::SeqCst),
        send_time.as_secs_f64(),
        stats.refused.load(Ordering::SeqCst),
        stats
            .first_error
            .lock()
            .unwrap()
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    if let Some(rate) = args.rate {
        println!(
            "rate: asked {rate:.0} events/s, sent {:.0} events/s; {} events sent > 1 ms late",
            accepted as f64 / send_time.as_secs_f64().max(1e-9),
            stats.late.load(Ordering::SeqCst)
        );
    }
    println!(
        "events/s accepted:   {events_per_s:>9.0}  ({:.2} × sink limit)",
        events_per_s / limit
    );
    println!(
        "deliveries/s:        {deliveries_per_s:>9.0}  ({:.2} × sink limit, {:.2} × two-hop limit)  [{delivered} of {expected} delivered, first event sent → last delivery {total_secs:.2} s; between first and last delivery {:.0}/s]",
        deliveries_per_s / limit,
        deliveries_per_s / two_hop,
        delivered as f64 / delivery_secs.max(1e-9)
    );
    println!(
        "ingest→delivery:     p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (min {:.2} ms, p90 {:.2} ms, {} samples)",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        percentile(&lat, 0.0),
        percentile(&lat, 0.90),
        lat.len()
    );
    let (du, ds) = (daemon_cpu1.0 - daemon_cpu0.0, daemon_cpu1.1 - daemon_cpu0.1);
    let work = delivered.max(1) as f64;
    let sending = (daemon_cpu_sent.0 + daemon_cpu_sent.1) - (daemon_cpu0.0 + daemon_cpu0.1);
    println!(
        "daemon CPU:          user {du:.2} s + system {ds:.2} s = {:.0} µs per delivery, ingest included ({:.2} cores over the run); {} context switches ({:.1} per delivery)",
        (du + ds) * 1e6 / work,
        (du + ds) / total_secs.max(1e-9),
        switches,
        switches as f64 / delivered.max(1) as f64
    );
    println!(
        "                     while sending: {sending:.2} s CPU for {accepted} events accepted and {delivered_when_sent} delivered; after: {:.2} s CPU for {} deliveries ({:.0} µs each)",
        (du + ds) - sending,
        delivered.saturating_sub(delivered_when_sent),
        ((du + ds) - sending) * 1e6 / delivered.saturating_sub(delivered_when_sent).max(1) as f64
    );
    println!(
        "load tool CPU:       user {:.2} s + system {:.2} s (clients and sink share the 2 cores with the daemon)",
        tool_cpu1.0 - tool_cpu0.0,
        tool_cpu1.1 - tool_cpu0.1
    );
    println!(
        "token requests:      {}",
        tokens.requests.load(Ordering::SeqCst)
    );
    if args.token_storm {
        println!(
            "token storm:         {} deliveries due at once with an expired token → {} token request(s) (goal: 1); {} requests carried the expired token",
            expected,
            tokens.requests.load(Ordering::SeqCst),
            sink.expired_token_seen.load(Ordering::SeqCst)
        );
    }
    for l in metrics_lines(
        &client,
        &daemon,
        &[
            "pushwerk_deliveries_total",
            "pushwerk_dead_letters",
            "pushwerk_jobs_queued",
        ],
    )
    .await
    {
        println!("  metric {l}");
    }

    if args.soak.is_some() {
        // The daemon's housekeeping runs retention every 30 s: wait for a run
        // after the last delivery, bounded.
        println!("waiting 35 s for the daemon's retention to run …");
        tokio::time::sleep(Duration::from_secs(35)).await;
        let d = disk_use(&world.kit.data());
        let rss = status_kb(pid, "VmRSS:").unwrap_or(0);
        println!(
            "soak: RSS start {} → end {}; store data start {} → end {} (allocated {} → {}), {:.0} bytes per accepted event",
            mb(start_rss * 1024),
            mb(rss * 1024),
            mb(start_disk.0),
            mb(d.0),
            mb(start_disk.1),
            mb(d.1),
            d.0.saturating_sub(start_disk.0) as f64 / accepted.max(1) as f64
        );
    }
    let hwm = status_kb(pid, "VmHWM:").unwrap_or(0);
    let disk = disk_use(&world.kit.data());
    println!("daemon peak RSS:     {} (VmHWM)", mb(hwm * 1024));
    println!(
        "store disk use:      {} (sum of file sizes under DATA; allocated {})",
        mb(disk.0),
        mb(disk.1)
    );
    println!("load average:        start/end of deliveries {load_at_end}");
    let wait = Duration::from_secs(args.stop_wait_secs);
    let stopped = match daemon.stop(wait).await {
        Some(status) => format!("exited after SIGTERM ({status})"),
        None => format!("did not exit within {wait:?} of SIGTERM: killed"),
    };
    println!("daemon: {stopped}");
    let log = daemon.log_text();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        // `client_secret: x` is written into the file on purpose.
        .filter(|l| !l.contains("client_secret is written into the file"))
        .collect();
    println!(
        "daemon log:          {} warning/error lines{}",
        problems.len(),
        problems
            .first()
            .map(|l| format!(" (first: {l})"))
            .unwrap_or_default()
    );
    if args.keep {
        let path = world.kit.keep();
        println!("kept {}", path.display());
    }
}
