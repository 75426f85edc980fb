//! Delivery outcomes across a full disk on redb (issue #10, item 13): a job
//! delivered while the disk is full is neither lost from the schedule nor
//! left "queued" in the store, its delivery-log entry and dead letter do
//! not vanish when redb is reopened after the failed write, `/readyz` is
//! not ready while outcomes cannot be made durable, and SIGTERM on a full
//! disk still ends within `--grace`.
//!
//! Runs the real binary on a data directory that is a 2 MB tmpfs (root
//! only, as `.ci/run` runs the tests), filled for real.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::EXAMPLE_ENV;
use pushwerk_testkit::daemon::announced_port;
use pushwerk_testkit::microsoft::HttpReceiver;

const TOKEN: &str = "disk-full-outcomes-token";

/// A tmpfs mounted over a directory for the test's lifetime.
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
            "cannot mount a tmpfs at {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Fills the file system to the last block; returns the filler's path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        for chunk in [1 << 16, 4096, 512, 1] {
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

/// A `pushwerk serve` process, killed when dropped.
struct Served {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    http: reqwest::Client,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `pushwerk --store redb serve --grace 3s` on `root/pushes` and
/// `root/data`, and waits until it is ready.
async fn start(root: &Path, run: &str) -> Served {
    let log = root.join(format!("serve-{run}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushwerk"));
    cmd.arg("--dir")
        .arg(root.join("pushes"))
        .arg("--data")
        .arg(root.join("data"));
    for name in EXAMPLE_ENV.iter().chain(&[
        "PUSHWERK_DATA",
        "PUSHWERK_LISTEN",
        "PUSHWERK_SERVER",
        "PUSHWERK_KEY",
        "PUSHWERK_KEY_FILE",
        "PUSHWERK_LOG",
        "PUSHWERK_STORE",
        "RUST_LOG",
    ]) {
        cmd.env_remove(name);
    }
    // A port the system picks, learnt from the daemon's announcement: a
    // port picked here first could be taken by another test meanwhile.
    cmd.args(["--store", "redb", "serve", "--grace", "3s", "--listen"])
        .arg("127.0.0.1:0")
        .env("PUSHWERK_INGEST_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut served = Served {
        child: Some(cmd.spawn().expect("pushwerk serve starts")),
        port: 0,
        log,
        http: pushwerk::net::http_client()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let child = served.child.as_mut().expect("child");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the daemon exited ({status}) before it was ready:\n{}",
                served.log_text()
            );
        }
        if served.port == 0 {
            let pid = child.id();
            served.port = announced_port(&root.join("data"), pid, &served.log).unwrap_or(0);
        }
        if served.port != 0 && served.readyz().await.0 == 200 {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the daemon did not become ready within 15 s:\n{}",
        served.log_text()
    );
}

impl Served {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn readyz(&self) -> (u16, String) {
        match self.http.get(self.url("/readyz")).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, body: String) -> (u16, String) {
        let r = self
            .http
            .post(self.url("/v1/events"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /v1/events");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// SIGTERM; panics unless the process exits within `within`.
    async fn terminate(&mut self, within: Duration) {
        let child = self.child.as_mut().expect("the daemon runs");
        // SAFETY: our own child, not yet reaped.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + within;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                self.child = None;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {within:?} of SIGTERM:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The ids of the jobs `/v1/jobs` lists as waiting.
    async fn queued(&self) -> Option<Vec<u64>> {
        let (status, body) = self.get("/v1/jobs").await;
        (status == 200).then(|| {
            body["jobs"]
                .as_array()
                .map(|jobs| jobs.iter().filter_map(|j| j["id"].as_u64()).collect())
                .unwrap_or_default()
        })
    }

    /// `(push, status)` of every delivery-log entry.
    async fn deliveries(&self) -> Option<Vec<(String, String)>> {
        let (status, body) = self.get("/v1/deliveries").await;
        (status == 200).then(|| {
            body["deliveries"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                            (s("push"), s("status"))
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// The pushes of the dead letters.
    async fn dead_letters(&self) -> Option<Vec<String>> {
        let (status, body) = self.get("/v1/dead-letters").await;
        (status == 200).then(|| {
            body["dead_letters"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .filter_map(|d| d["push"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

/// Polls `check` until it gives `Some`, or panics after `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, served: &Served, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}\n{}",
            served.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn push(name: &str, url: &str) -> String {
    format!(
        "name: {name}\non: call.ended\ndelay: 4s\nhttp:\n  url: {url}\n  json:\n    id: \"<< push.event_id >>\"\n"
    )
}

/// Whether the delivery log records `push` with `status`.
fn logged(entries: &[(String, String)], push: &str, status: &str) -> bool {
    entries.iter().any(|(p, s)| p == push && s == status)
}

#[tokio::test(flavor = "multi_thread")]
async fn outcomes_of_deliveries_during_a_full_disk_are_kept_and_readyz_says_so() {
    let ok = HttpReceiver::start().await;
    let refusing = HttpReceiver::start().await;
    // A 400 is permanent: that job becomes a dead letter.
    refusing.respond_next(100, 400, Vec::new(), "no");
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    std::fs::create_dir_all(root.join("pushes")).expect("mkdir pushes");
    std::fs::create_dir_all(root.join("data")).expect("mkdir data");
    std::fs::write(root.join("pushes/ok.yaml"), push("ok", &ok.url("/hook"))).expect("push");
    std::fs::write(
        root.join("pushes/refused.yaml"),
        push("refused", &refusing.url("/hook")),
    )
    .expect("push");
    let disk = Tmpfs::mount(&root.join("data"), "2m");
    let mut served = start(root, "first").await;

    // A bulky event: its dead letter needs new pages in the store's file,
    // which a full disk cannot give.
    let event = format!(
        r#"{{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{{"pad":"{}"}}}}"#,
        "x".repeat(150_000)
    );
    let (status, body) = served.post(event).await;
    assert_eq!(status, 202, "{body}");
    let jobs = served.queued().await.expect("/v1/jobs");
    assert_eq!(jobs.len(), 2, "two jobs wait for their delay: {jobs:?}");

    // The disk fills while the jobs wait; they are delivered meanwhile.
    let filler = disk.fill();
    assert!(
        ok.wait_for_requests(1, Duration::from_secs(20)).await,
        "the ok push was not delivered:\n{}",
        served.log_text()
    );
    assert!(
        refusing.wait_for_requests(1, Duration::from_secs(20)).await,
        "the refused push was not tried:\n{}",
        served.log_text()
    );
    // Their outcomes cannot be made durable: not ready, with the reason.
    let reason = poll(
        "/readyz not ready while outcomes cannot be written",
        Duration::from_secs(15),
        &served,
        || async {
            let (status, text) = served.readyz().await;
            (status == 503).then_some(text)
        },
    )
    .await;
    assert!(
        reason.contains("cannot take writes") && reason.contains("No space left on device"),
        "{reason}"
    );

    // Space returns: within the run, ready again, nothing left queued, and
    // both outcomes recorded (or the job delivered again: at-least-once).
    std::fs::remove_file(&filler).expect("free the space");
    poll(
        "/readyz ready after space returned",
        Duration::from_secs(20),
        &served,
        || async { (served.readyz().await.0 == 200).then_some(()) },
    )
    .await;
    poll(
        "no job left queued after space returned",
        Duration::from_secs(20),
        &served,
        || async { served.queued().await.filter(Vec::is_empty) },
    )
    .await;
    let entries = served.deliveries().await.expect("/v1/deliveries");
    assert!(logged(&entries, "ok", "delivered"), "{entries:?}");
    assert!(logged(&entries, "refused", "dead"), "{entries:?}");
    let dead = served.dead_letters().await.expect("/v1/dead-letters");
    assert_eq!(dead, vec!["refused".to_owned()]);

    // SIGTERM on a full disk still ends within the grace period (3 s).
    let filler = disk.fill();
    served.terminate(Duration::from_secs(8)).await;
    std::fs::remove_file(&filler).expect("free the space");

    // What was recorded is durable: after a restart nothing is queued,
    // the log and the dead letter are there, nothing is delivered twice.
    let served = start(root, "second").await;
    assert_eq!(
        served.queued().await,
        Some(Vec::new()),
        "{}",
        served.log_text()
    );
    let entries = served.deliveries().await.expect("/v1/deliveries");
    assert!(logged(&entries, "ok", "delivered"), "{entries:?}");
    assert!(logged(&entries, "refused", "dead"), "{entries:?}");
    let dead = served.dead_letters().await.expect("/v1/dead-letters");
    assert_eq!(dead, vec!["refused".to_owned()]);
    let delivered = ok.requests().len();
    assert!(delivered >= 1, "{delivered}");
}
