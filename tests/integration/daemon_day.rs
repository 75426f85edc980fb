//! The daemon in a user's day, through the real binary: a panicking
//! delivery frees its target's slot, a truncated file keeps its pushes,
//! reads of the folder cause no reloads, SIGHUP reloads, odd folders
//! (symlink loops, deep nesting, huge files) are reported and never hang,
//! waiting jobs are listed, `when:` on a missing field is false, and the
//! metrics are current.
//!
//! Every test starts its own daemon (own folder, data directory and port)
//! and kills it when done.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use pushwerk_testkit::daemon::{metric, poll, Served, World as KitWorld};
use pushwerk_testkit::microsoft::HttpReceiver;

const TOKEN: &str = "daemon-day-ingest-token";

// ---------------------------------------------------------------------------
// A daemon process (the kit's harness, with `--log info` and `--grace 5s`)

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

    /// Starts `pushwerk serve` (with `env`) on a free port and waits for `/readyz`.
    async fn start(&self, env: &[(&str, &str)]) -> Served {
        let mut serve = self
            .serve()
            .token(TOKEN)
            .global(&["--log", "info"])
            .args(&["--grace", "5s"]);
        for (k, v) in env {
            serve = serve.env(k, v);
        }
        serve.start().await
    }
}

/// The names of the pushes a daemon serves (`GET /v1/pushes`).
async fn push_names(served: &Served) -> Vec<String> {
    served.get("/v1/pushes").await["pushes"]
        .as_array()
        .expect("pushes")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect()
}

fn http_push(name: &str, url: &str, extra: &str) -> String {
    format!(
        "name: {name}\non: call.ended\n{extra}http:\n  url: {url}\n  json:\n    id: \"<< push.event_id >>\"\n"
    )
}

fn event(id: &str, data: Value) -> Value {
    json!({ "id": id, "type": "call.ended", "time": "2026-01-01T00:00:00Z", "data": data })
}

fn events(prefix: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| event(&format!("{prefix}-{i}"), json!({})))
            .collect(),
    )
}

/// Writes `text` to `path` atomically (a dotfile, which the daemon ignores, renamed).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

// ---------------------------------------------------------------------------
// #10.7 A panic in a delivery frees its slot

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_delivery_is_dead_lettered_and_its_target_keeps_delivering() {
    let rx = HttpReceiver::start().await;
    // Both pushes go to the same host: one target, 8 slots.
    let world = World::new(&[
        (
            "boom.yaml",
            &http_push("boom", &rx.url("/boom"), "").replace("call.ended", "call.boom"),
        ),
        ("fine.yaml", &http_push("fine", &rx.url("/fine"), "")),
    ]);
    let served = world.start(&[("PUSHWERK_TEST_PANIC_PUSH", "boom")]).await;
    // Twelve panics: more than the target's 8 slots.
    let booms: Vec<Value> = (0..12)
        .map(|i| json!({ "id": format!("boom-{i}"), "type": "call.boom", "time": "2026-01-01T00:00:00Z" }))
        .collect();
    assert_eq!(served.ingest(&Value::Array(booms)).await["jobs"], 12);
    let dead = poll(
        "12 dead letters of the panicking push",
        Duration::from_secs(20),
        || async {
            let dead = served.get("/v1/dead-letters?push=boom").await["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (dead.len() == 12).then_some(dead)
        },
    )
    .await;
    for d in &dead {
        let reason = d["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("panicked") && reason.contains("test fault point"),
            "{d}"
        );
    }
    let log = served.deliveries("push=boom").await;
    assert_eq!(log.len(), 12, "{log:?}");
    assert!(log.iter().all(|e| e["status"] == "dead"), "{log:?}");

    // The target still delivers, all of it.
    assert_eq!(served.ingest(&events("fine", 10)).await["jobs"], 10);
    assert!(
        rx.wait_for_requests(10, Duration::from_secs(20)).await,
        "the target stopped delivering after panics: {} requests\n{}",
        rx.requests().len(),
        served.log_text()
    );
    assert!(rx.requests().iter().all(|r| r.path == "/fine"));
}

// ---------------------------------------------------------------------------
// #10.9 A truncated file keeps its pushes

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_push_file_keeps_its_push_until_it_is_deleted() {
    let rx = HttpReceiver::start().await;
    let hook = http_push("hook", &rx.url("/hook"), "");
    let world = World::new(&[("hook.yaml", &hook)]);
    let served = world.start(&[]).await;
    let file = world.pushes().join("hook.yaml");

    // `: > hook.yaml`, the first half of a rewrite.
    let reloads = served.metric("pushwerk_reloads_total").await;
    std::fs::File::create(&file).expect("truncate");
    let state = poll(
        "the truncation is noticed",
        Duration::from_secs(10),
        || async {
            // The counter first: a state read before it could predate the
            // reload the counter then reports.
            let reloaded = served.metric("pushwerk_reloads_total").await > reloads;
            if !reloaded {
                return None;
            }
            Some(served.get("/v1/pushes").await)
        },
    )
    .await;
    assert_eq!(state["pushes"][0]["name"], "hook", "{state}");
    assert_eq!(state["files"][0]["stale"], true, "{state}");
    assert!(
        state["files"][0]["diagnostics"][0]
            .as_str()
            .unwrap_or_default()
            .contains("the file is empty"),
        "{state}"
    );
    // An event meanwhile still gets its job, and it is delivered.
    assert_eq!(served.ingest(&event("during", json!({}))).await["jobs"], 1);
    assert!(rx.wait_for_requests(1, Duration::from_secs(10)).await);

    // The rest of the rewrite: the new content is in force.
    std::fs::write(&file, hook.replace("/hook", "/hook2")).expect("rewrite");
    poll(
        "the rewritten file is in force",
        Duration::from_secs(10),
        || async {
            let p = served.get("/v1/pushes").await;
            (p["files"][0]["stale"] == false).then_some(())
        },
    )
    .await;
    assert_eq!(served.ingest(&event("after", json!({}))).await["jobs"], 1);
    assert!(rx.wait_for_requests(2, Duration::from_secs(10)).await);
    assert_eq!(rx.requests()[1].path, "/hook2");

    // Only deleting the file removes the push.
    std::fs::remove_file(&file).expect("delete");
    poll(
        "the deleted push is gone",
        Duration::from_secs(10),
        || async { push_names(&served).await.is_empty().then_some(()) },
    )
    .await;
    assert_eq!(served.ingest(&event("gone", json!({}))).await["jobs"], 0);
}

// ---------------------------------------------------------------------------
// #11.6 Reads of the folder cause no reload

#[tokio::test(flavor = "multi_thread")]
async fn reading_the_folder_causes_no_reload_and_an_edit_still_does() {
    let rx = HttpReceiver::start().await;
    // A literal client secret: a warning at every load, as in the report.
    let account = "kind: oauth_account\nname: crm\ntoken_url: https://id.example.com/token\nclient_id: x\nclient_secret: literal\nscope: crm\n";
    let world = World::new(&[
        ("a.yaml", &http_push("a", &rx.url("/a"), "")),
        ("b.yaml", &http_push("b", &rx.url("/b"), "")),
        ("accounts.yaml", account),
    ]);
    let mut served = world.start(&[]).await;
    assert_eq!(served.metric("pushwerk_reloads_total").await, 0.0);
    let warnings_before = served
        .log_text()
        .matches("client_secret is written")
        .count();

    // What `cat`, an editor or a backup tool does, and `pushwerk check`.
    let files: Vec<PathBuf> = ["a.yaml", "b.yaml", "accounts.yaml"]
        .iter()
        .map(|f| world.pushes().join(f))
        .collect();
    for _ in 0..100 {
        for f in &files {
            std::fs::read(f).expect("read");
        }
    }
    let check = world
        .pushwerk(&["check", world.pushes().to_str().unwrap()], &[])
        .await;
    assert!(check.status.success(), "{check:?}");
    // A negative check needs a window: 2 s is more than ten settle periods
    // of the watcher (150 ms), in which the old daemon reloaded ~25 times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        served.metric("pushwerk_reloads_total").await,
        0.0,
        "{}",
        served.log_text()
    );
    assert_eq!(
        served
            .log_text()
            .matches("client_secret is written")
            .count(),
        warnings_before
    );
    assert!(served.alive());

    // A real edit is still picked up, with one reload.
    write_atomically(
        &world.pushes().join("c.yaml"),
        &http_push("c", &rx.url("/c"), ""),
    );
    poll(
        "the new push is in force",
        Duration::from_secs(10),
        || async {
            push_names(&served)
                .await
                .contains(&"c".to_owned())
                .then_some(())
        },
    )
    .await;
    assert_eq!(served.metric("pushwerk_reloads_total").await, 1.0);
}

// ---------------------------------------------------------------------------
// #11.7 SIGHUP reloads

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_folder_and_the_daemon_lives_on() {
    let rx = HttpReceiver::start().await;
    // The secret lives outside the folder: no watcher sees it change.
    let key = PathBuf::from("../hook-key.txt");
    let world = World::new(&[(
        "hook.yaml",
        &format!(
            "name: hook\non: call.ended\nhttp:\n  url: {}\n  headers:\n    X-Key: \"${{file:{}}}\"\n  json:\n    id: \"<< push.event_id >>\"\n",
            rx.url("/hook"),
            key.display()
        ),
    )]);
    let key_file = world.root().join("hook-key.txt");
    std::fs::write(&key_file, "old-key").expect("write key");
    let mut served = world.start(&[]).await;
    served.ingest(&event("before", json!({}))).await;
    assert!(rx.wait_for_requests(1, Duration::from_secs(10)).await);
    assert_eq!(rx.requests()[0].header("x-key"), Some("old-key"));

    std::fs::write(&key_file, "new-key").expect("rotate key");
    served.signal(libc::SIGHUP);
    poll("the SIGHUP reload", Duration::from_secs(10), || async {
        (served.metric("pushwerk_reloads_total").await == 1.0).then_some(())
    })
    .await;
    assert!(
        served.alive(),
        "SIGHUP ended the daemon:\n{}",
        served.log_text()
    );
    assert!(
        served.log_text().contains("SIGHUP: reloading the folder"),
        "{}",
        served.log_text()
    );
    served.ingest(&event("after", json!({}))).await;
    assert!(rx.wait_for_requests(2, Duration::from_secs(10)).await);
    assert_eq!(rx.requests()[1].header("x-key"), Some("new-key"));
    assert!(served.alive());
}

// ---------------------------------------------------------------------------
// #10.14 Folder pitfalls

#[tokio::test(flavor = "multi_thread")]
async fn check_walks_symlink_loops_once_and_refuses_deep_and_huge_files() {
    let world = World::new(&[("hook.yaml", &http_push("hook", "https://example.com/h", ""))]);
    let dir = world.pushes();
    std::fs::create_dir(dir.join("sub")).expect("mkdir sub");
    std::fs::write(
        dir.join("sub/other.yaml"),
        http_push("other", "https://example.com/o", ""),
    )
    .expect("write");
    // Two links back to the folder itself, one to its parent from below.
    std::os::unix::fs::symlink(".", dir.join("loop1")).expect("symlink");
    std::os::unix::fs::symlink(&dir, dir.join("loop2")).expect("symlink");
    std::os::unix::fs::symlink("..", dir.join("sub/up")).expect("symlink");
    // 200 KB of `[`, and a file over 1 MiB.
    std::fs::write(
        dir.join("deep.yaml"),
        format!("name: deep\njson: {}", "[".repeat(200_000)),
    )
    .expect("write");
    std::fs::write(
        dir.join("huge.yaml"),
        format!("# {}\n", "x".repeat(1024 * 1024)),
    )
    .expect("write");

    // A FIFO named like a push file (opening it would wait for a writer).
    let fifo = std::ffi::CString::new(dir.join("pipe.yaml").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");

    let out = world.pushwerk(&["check", dir.to_str().unwrap()], &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The real files, each once.
    assert!(
        stderr.contains("5 files, 2 pushes, 0 accounts, 3 errors"),
        "{stderr}"
    );
    let pipe = format!(
        "{}:1:1: error: not a regular file",
        dir.join("pipe.yaml").display()
    );
    assert!(stderr.lines().any(|l| l.starts_with(&pipe)), "{stderr}");
    assert!(!stderr.contains("duplicate push name"), "{stderr}");
    let deep = format!("{}:2:", dir.join("deep.yaml").display());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&deep) && l.contains("nested more than 64 levels")),
        "{stderr}"
    );
    let huge = format!("{}:1:1: error: file is", dir.join("huge.yaml").display());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&huge) && l.contains("over the limit of 1048576 bytes")),
        "{stderr}"
    );

    // The daemon loads the same folder, and its other files work.
    let served = world.start(&[]).await;
    let mut names = push_names(&served).await;
    names.sort();
    assert_eq!(names, ["hook", "other"]);
}

// ---------------------------------------------------------------------------
// #11.9 Waiting and skipped work is visible

#[tokio::test(flavor = "multi_thread")]
async fn delayed_and_retrying_jobs_are_listed_and_skips_are_counted() {
    let rx = HttpReceiver::start().await;
    let world = World::new(&[
        (
            "later.yaml",
            &http_push("later", &rx.url("/later"), "delay: 1h\n"),
        ),
        (
            "flaky.yaml",
            &http_push(
                "flaky",
                &rx.url("/flaky"),
                "when: event.answered\nretry: { max_attempts: 3 }\n",
            ),
        ),
    ]);
    rx.respond_next(1, 503, vec![("Retry-After".into(), "3600".into())], "down");
    let served = world.start(&[]).await;
    served
        .ingest(&json!([
            event("e1", json!({ "answered": true })),
            event("e2", json!({ "answered": false })),
        ]))
        .await;
    let jobs = poll(
        "the retrying job is listed",
        Duration::from_secs(10),
        || async {
            let jobs = served.get("/v1/jobs").await;
            let list = jobs["jobs"].as_array().cloned().unwrap_or_default();
            list.iter()
                .any(|j| j["push"] == "flaky" && j["attempt"] == 2)
                .then_some(jobs)
        },
    )
    .await;
    let list = jobs["jobs"].as_array().expect("jobs");
    assert_eq!(jobs["more"], false);
    assert_eq!(list.len(), 3, "{jobs}");
    let later: Vec<&Value> = list.iter().filter(|j| j["push"] == "later").collect();
    assert_eq!(later.len(), 2, "{jobs}");
    for j in &later {
        assert_eq!(j["state"], "queued");
        assert_eq!(j["attempt"], 1);
        assert_eq!(j["last_error"], Value::Null);
        let due: chrono::DateTime<chrono::Utc> = j["due"].as_str().unwrap().parse().unwrap();
        assert!(
            due > chrono::Utc::now() + chrono::Duration::minutes(50),
            "{j}"
        );
    }
    let flaky = list.iter().find(|j| j["push"] == "flaky").unwrap();
    assert_eq!(flaky["state"], "retrying");
    assert_eq!(flaky["event_id"], "e1");
    assert!(
        flaky["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("503"),
        "{flaky}"
    );
    // `limit` and `push` bound the answer.
    let one = served.get("/v1/jobs?limit=1").await;
    assert_eq!(one["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(one["more"], true);
    let only = served.get("/v1/jobs?push=flaky").await;
    assert_eq!(only["jobs"].as_array().unwrap().len(), 1);

    // `pushwerk jobs` shows the same.
    let out = world
        .pushwerk(
            &["jobs", "--server", &served.url("")],
            &[("PUSHWERK_INGEST_TOKEN", TOKEN)],
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("retrying flaky  event e1  attempt 2") && l.contains("last error:")),
        "{stdout}"
    );
    // Due times to the second, as `deliveries` prints them.
    for line in stdout.lines() {
        let due = line.split_whitespace().next().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(due).is_ok() && due.len() == 20,
            "due time not to the second: {line}"
        );
    }

    // e2 was skipped by `when:`: counted, and logged.
    let metrics = served.metrics().await;
    assert_eq!(
        metric(&metrics, "pushwerk_events_skipped_total{push=\"flaky\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        served
            .log_text()
            .lines()
            .any(|l| l.contains("INFO") && l.contains("skipped") && l.contains("e2")),
        "{}",
        served.log_text()
    );
}

// ---------------------------------------------------------------------------
// #11.10 `when:` on a missing field is false

#[tokio::test(flavor = "multi_thread")]
async fn a_condition_on_a_missing_field_is_false_but_a_body_stays_strict() {
    let rx = HttpReceiver::start().await;
    let push = http_push(
        "long-calls",
        &rx.url("/long"),
        "when: event.answered and event.duration > 30\ndelay: 1s\n",
    );
    let world = World::new(&[("long.yaml", &push)]);
    let served = world.start(&[]).await;
    let answer = served
        .ingest(&json!([
            event("no-duration", json!({ "answered": true })),
            event("long", json!({ "answered": true, "duration": 40 })),
        ]))
        .await;
    assert_eq!(answer["jobs"], 1, "{answer}");
    assert!(rx.wait_for_requests(1, Duration::from_secs(10)).await);
    assert_eq!(rx.requests()[0].json()["id"], "long");
    let dead = served.get("/v1/dead-letters").await;
    assert_eq!(dead["dead_letters"], json!([]), "{dead}");
    assert_eq!(
        served
            .metric("pushwerk_events_skipped_total{push=\"long-calls\"}")
            .await,
        1.0
    );

    // dry-run says why.
    let file = world.root().join("event.json");
    std::fs::write(
        &file,
        event("no-duration", json!({ "answered": true })).to_string(),
    )
    .expect("write event");
    let out = world
        .pushwerk(
            &["dry-run", "long-calls", "--event", file.to_str().unwrap()],
            &[],
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("skipped: condition `event.answered and event.duration > 30` is false")
            && stdout.contains("the event has no `event.duration`"),
        "{stdout}"
    );

    // A body naming a missing field is still an error.
    std::fs::write(
        world.pushes().join("long.yaml"),
        format!("{push}    caller: \"<< event.caller >>\"\n"),
    )
    .expect("write");
    let long = world.root().join("long.json");
    std::fs::write(
        &long,
        event("long2", json!({ "answered": true, "duration": 40 })).to_string(),
    )
    .expect("write event");
    let out = world
        .pushwerk(
            &["dry-run", "long-calls", "--event", long.to_str().unwrap()],
            &[],
        )
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("has no `event.caller`"), "{stderr}");
}

// ---------------------------------------------------------------------------
// #11.11 Metrics are current

#[tokio::test(flavor = "multi_thread")]
async fn dead_letter_gauge_follows_dead_letters_and_replays_and_due_latency_excludes_delay() {
    let rx = HttpReceiver::start().await;
    let world = World::new(&[(
        "refused.yaml",
        &http_push("refused", &rx.url("/refused"), ""),
    )]);
    rx.respond_next(1, 400, vec![], "no");
    let served = world.start(&[]).await;
    served.ingest(&event("bad", json!({}))).await;
    // Dead-lettered: the gauge says so at once (well within the 30 s
    // housekeeping period that used to update it).
    poll(
        "the dead-letter gauge is 1",
        Duration::from_secs(5),
        || async { (served.metric("pushwerk_dead_letters").await == 1.0).then_some(()) },
    )
    .await;
    let out = world
        .pushwerk(
            &["replay", "--failed", "--server", &served.url("")],
            &[("PUSHWERK_INGEST_TOKEN", TOKEN)],
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    poll(
        "the dead-letter gauge is 0",
        Duration::from_secs(5),
        || async { (served.metric("pushwerk_dead_letters").await == 0.0).then_some(()) },
    )
    .await;
    assert!(rx.wait_for_requests(2, Duration::from_secs(10)).await);

    // A delayed push: ingest→delivery includes the delay, due→delivery not.
    std::fs::write(
        world.pushes().join("refused.yaml"),
        http_push("refused", &rx.url("/refused"), "delay: 2s\n"),
    )
    .expect("write");
    poll("the delay is in force", Duration::from_secs(10), || async {
        (served.metric("pushwerk_reloads_total").await >= 1.0).then_some(())
    })
    .await;
    let before = served.metrics().await;
    let sum = |text: &str, name: &str| metric(text, &format!("{name}_sum")).unwrap_or(0.0);
    let count = |text: &str, name: &str| metric(text, &format!("{name}_count")).unwrap_or(0.0);
    served.ingest(&event("delayed", json!({}))).await;
    assert!(rx.wait_for_requests(3, Duration::from_secs(10)).await);
    let after = poll(
        "the delivery is measured",
        Duration::from_secs(5),
        || async {
            let m = served.metrics().await;
            (count(&m, "pushwerk_due_to_delivery_seconds")
                > count(&before, "pushwerk_due_to_delivery_seconds"))
            .then_some(m)
        },
    )
    .await;
    let ingest = sum(&after, "pushwerk_ingest_to_delivery_seconds")
        - sum(&before, "pushwerk_ingest_to_delivery_seconds");
    let due = sum(&after, "pushwerk_due_to_delivery_seconds")
        - sum(&before, "pushwerk_due_to_delivery_seconds");
    // Both are measured at the same moment: they differ by the delay exactly.
    assert!(
        (ingest - due - 2.0).abs() < 0.01,
        "ingest {ingest} due {due}"
    );
}
