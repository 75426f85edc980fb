//! Regressions found by attacking the fixes of issues #10 and #11 through
//! the built binary: each test fails on the code before its fix.
//!
//! - a client that pipelines requests and never reads the answers held a
//!   connection slot for good (the head timeout does not run while an
//!   answer is written), so a few unauthenticated clients locked everyone
//!   out, `/healthz` included;
//! - a token endpoint (or a proxy's error page) echoing the token request
//!   put the client secret and the refresh token into the log, the error
//!   and `oauth status`;
//! - a target echoing the request's `Authorization` (or an API-key header)
//!   put the access token (or the `${env:…}` key) into the log and the
//!   delivery log (`GET /v1/deliveries`);
//! - a `Retry-After` beyond 64 bits was ignored: the job was retried at
//!   once instead of after the capped wait.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::util::{pushwerk_in, stderr, stdout, EXAMPLE_ENV};
use pushwerk_testkit::daemon::announced_port;

/// A `pushwerk serve` child, killed when dropped.
struct Daemon {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `pushwerk serve` on a folder of `files` with `extra` flags
    /// and `env`, and waits (up to 15 s) for `/healthz`.
    fn start(tmp: &Path, files: &[(&str, &str)], extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(tmp.join("pushes")).expect("mkdir");
        for (name, text) in files {
            std::fs::write(tmp.join("pushes").join(name), text).expect("write push");
        }
        let log = tmp.join("serve.log");
        let mut cmd = crate::util::pushwerk_command();
        cmd.arg("--dir")
            .arg(tmp.join("pushes"))
            .arg("--data")
            .arg(tmp.join("data"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("PUSHWERK_INGEST_TOKEN", "attack-test-token")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for name in EXAMPLE_ENV {
            cmd.env_remove(name);
        }
        cmd.envs(env.iter().copied());
        let mut daemon = Daemon {
            child: cmd.spawn().expect("pushwerk serve starts"),
            // The port the system picks, learnt from the daemon's announcement.
            port: 0,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !daemon.learn_port(tmp) || !daemon.healthz(Duration::from_secs(1)) {
            assert!(
                daemon.child.try_wait().expect("try_wait").is_none(),
                "the daemon exited:\n{}",
                daemon.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer /healthz within 15 s:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    /// `GET path` with the ingest token: the JSON answer.
    async fn get(&self, path: &str) -> serde_json::Value {
        pushwerk::net::http_client()
            .build()
            .expect("HTTP client")
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .bearer_auth("attack-test-token")
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON answer")
    }

    /// `POST /v1/events` of `event`: the status.
    async fn ingest(&self, event: &str) -> u16 {
        pushwerk::net::http_client()
            .build()
            .expect("HTTP client")
            .post(format!("http://127.0.0.1:{}/v1/events", self.port))
            .bearer_auth("attack-test-token")
            .body(event.to_owned())
            .send()
            .await
            .expect("POST /v1/events")
            .status()
            .as_u16()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the port is known: learns it from the daemon's announcement
    /// (`DATA/daemon.json` or its status line) once it has bound one.
    fn learn_port(&mut self, tmp: &Path) -> bool {
        if self.port == 0 {
            if let Some(port) = announced_port(&tmp.join("data"), self.child.id(), &self.log) {
                self.port = port;
            }
        }
        self.port != 0
    }

    /// Whether `GET /healthz` on a new connection answers 200 within `limit`.
    fn healthz(&self, limit: Duration) -> bool {
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(limit));
        let _ = c.set_write_timeout(Some(limit));
        if c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_its_answers_does_not_hold_a_connection_slot() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // One connection slot; a head timeout far beyond the test, so only the
    // stalled answer can free the slot.
    let daemon = Daemon::start(
        tmp.path(),
        &[],
        &[
            "--max-connections",
            "1",
            "--header-timeout",
            "10m",
            "--body-timeout",
            "2s",
        ],
        &[],
    );
    // No token needed: `/metrics` without one is answered 401, which
    // costs the server as little. Pipeline requests and read nothing, until the server stops taking them (its answers fill the
    // socket buffers, so it blocks writing and reads no more).
    let mut hog = tokio::net::TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .expect("connect");
    let batch = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    let mut blocked = false;
    for _ in 0..5_000 {
        match tokio::time::timeout(Duration::from_secs(1), hog.write_all(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break, // closed by the server: also no longer held
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "the server kept reading pipelined requests");
    // The slot comes free although the hog stays connected and idle.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if daemon.healthz(Duration::from_secs(1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still unanswered 30 s after a client stopped reading its answers (--body-timeout 2s):\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(hog);
}

/// A token endpoint that answers every request 400 with an error
/// description echoing the request's form body, as some error pages do.
/// Serves `count` requests, then ends.
fn echoing_token_endpoint(count: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/token", listener.local_addr().expect("address"));
    let handle = std::thread::spawn(move || {
        for _ in 0..count {
            let Ok((mut c, _)) = listener.accept() else {
                return;
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Head, then the body its Content-Length announces (bounded).
            let body = loop {
                let Ok(n) = c.read(&mut buf) else { break None };
                if n == 0 || got.len() > 64 * 1024 {
                    break None;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + length {
                        break Some(text[end + 4..end + 4 + length].to_owned());
                    }
                }
            };
            let echoed = body.unwrap_or_default();
            let answer = serde_json::json!({
                "error": "invalid_grant",
                "error_description": format!("cannot use the request {echoed}"),
            })
            .to_string();
            let _ = write!(
                c,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, handle)
}

#[test]
fn a_token_endpoint_echoing_the_request_never_gets_secrets_into_output() {
    const CLIENT_SECRET: &str = "client-secret-canary-7Q9";
    const REFRESH_TOKEN: &str = "refresh-token-canary-X4K";
    let (token_url, server) = echoing_token_endpoint(1);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("pushes")).expect("mkdir");
    std::fs::write(
        dir.join("pushes/accounts.yaml"),
        format!(
            "kind: oauth_account\nname: echo\ntoken_url: {token_url}\nclient_id: the-client\nclient_secret: ${{env:ECHO_CLIENT_SECRET}}\nscope: s\n"
        ),
    )
    .expect("write account");
    let env = [("ECHO_CLIENT_SECRET", CLIENT_SECRET)];
    // The refresh token from a file (stdin is not wired by the helper).
    std::fs::write(dir.join("rt.txt"), REFRESH_TOKEN).expect("write token");
    let import = pushwerk_in(dir, &["oauth", "import", "echo", "--file", "rt.txt"], &env);
    assert!(import.status.success(), "{}", stderr(&import));
    let refresh = pushwerk_in(dir, &["oauth", "refresh", "echo"], &env);
    let status = pushwerk_in(dir, &["oauth", "status", "echo"], &env);
    server.join().expect("the endpoint served");
    let seen = format!(
        "{}{}{}{}",
        stdout(&refresh),
        stderr(&refresh),
        stdout(&status),
        stderr(&status)
    );
    assert!(!refresh.status.success(), "the refresh was refused: {seen}");
    assert!(
        seen.contains("invalid_grant") && seen.contains("cannot use the request"),
        "the endpoint's error is still reported: {seen}"
    );
    for secret in [CLIENT_SECRET, REFRESH_TOKEN] {
        assert!(!seen.contains(secret), "`{secret}` in the output:\n{seen}");
    }
}

/// Polls `check` every 100 ms until it gives `Some`, or panics after `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event(id: &str) -> String {
    format!(r#"{{"id":"{id}","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{{}}}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_echoing_the_access_token_does_not_get_it_into_the_delivery_log() {
    const ACCESS_TOKEN: &str = "access-token-canary-M2P";
    const API_KEY: &str = "api-key-canary-Z5T";
    let target = pushwerk_testkit::microsoft::HttpReceiver::start().await;
    target.respond_next(
        1,
        400,
        vec![],
        &format!("bad credentials: Bearer {ACCESS_TOKEN}, key {API_KEY}"),
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let account = "kind: oauth_account\nname: crm\ntoken_url: http://127.0.0.1:9/token\nclient_id: c\nclient_secret: s3cret-value\nscope: s\n";
    let push = format!(
        "name: echoed\non: call.ended\nhttp:\n  url: {}\n  headers:\n    Authorization: Bearer << oauth.crm >>\n    X-Api-Key: ${{env:HOOK_KEY}}\n  json:\n    id: \"<< push.event_id >>\"\n",
        target.url("/leads")
    );
    std::fs::create_dir_all(tmp.path().join("pushes")).expect("mkdir");
    std::fs::write(tmp.path().join("pushes/accounts.yaml"), account).expect("account");
    std::fs::write(
        tmp.path().join("token.json"),
        format!(
            r#"{{"access_token":"{ACCESS_TOKEN}","refresh_token":"rt-value-1","expires_in":3600}}"#
        ),
    )
    .expect("token");
    let import = pushwerk_in(
        tmp.path(),
        &[
            "--data",
            "data",
            "oauth",
            "import",
            "crm",
            "--file",
            "token.json",
        ],
        &[],
    );
    assert!(import.status.success(), "{}", stderr(&import));
    let daemon = Daemon::start(
        tmp.path(),
        &[("echoed.yaml", &push)],
        &[],
        &[("HOOK_KEY", API_KEY)],
    );
    assert_eq!(daemon.ingest(&event("e-echo")).await, 202);
    let log = poll(
        "the attempt is in the delivery log",
        Duration::from_secs(20),
        || async {
            let log = daemon.get("/v1/deliveries?push=echoed").await;
            (log["deliveries"].as_array().is_some_and(|d| !d.is_empty())).then_some(log)
        },
    )
    .await;
    let text = log.to_string();
    assert!(
        text.contains("bad credentials"),
        "the target's answer is kept: {text}"
    );
    assert!(
        !text.contains(ACCESS_TOKEN),
        "the token in the delivery log: {text}"
    );
    assert!(
        !text.contains(API_KEY),
        "the API key in the delivery log: {text}"
    );
    assert!(text.contains("‹env:HOOK_KEY›"), "{text}");
    assert!(
        !daemon.log_text().contains(ACCESS_TOKEN) && !daemon.log_text().contains(API_KEY),
        "a secret in the daemon's log:\n{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_beyond_64_bits_waits_the_capped_time() {
    let target = pushwerk_testkit::microsoft::HttpReceiver::start().await;
    target.respond_next(
        1,
        503,
        vec![("Retry-After".into(), "99999999999999999999999999".into())],
        "busy",
    );
    let push = format!(
        "name: busy\non: call.ended\nhttp:\n  url: {}\n  json:\n    id: \"<< push.event_id >>\"\n",
        target.url("/hook")
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(tmp.path(), &[("busy.yaml", &push)], &[], &[]);
    assert_eq!(daemon.ingest(&event("e-busy")).await, 202);
    let job = poll(
        "the job waits for its retry",
        Duration::from_secs(20),
        || async {
            let jobs = daemon.get("/v1/jobs?push=busy").await;
            jobs["jobs"]
                .as_array()
                .and_then(|j| j.first().cloned())
                .filter(|j| j["state"] == "retrying")
        },
    )
    .await;
    let due = chrono::DateTime::parse_from_rfc3339(job["due"].as_str().expect("due"))
        .expect("due is RFC 3339");
    let wait = due.signed_duration_since(chrono::Utc::now());
    // The cap is 10 min; the backoff after a first attempt is seconds.
    assert!(
        wait > chrono::Duration::minutes(5),
        "retry due in {wait:?} although the target asked for more than the cap: {job}"
    );
    assert_eq!(target.requests().len(), 1, "no early retry");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_id_must_be_short_and_one_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(tmp.path(), &[], &[], &[]);
    let post = |body: String| {
        let url = format!("http://127.0.0.1:{}/v1/events", daemon.port);
        async move {
            let r = pushwerk::net::http_client()
                .build()
                .expect("HTTP client")
                .post(url)
                .bearer_auth("attack-test-token")
                .body(body)
                .send()
                .await
                .expect("POST /v1/events");
            (r.status().as_u16(), r.text().await.expect("answer"))
        }
    };
    // Half a megabyte of id became store keys and log fields.
    let (status, answer) = post(event(&"x".repeat(500_000))).await;
    assert_eq!(status, 400, "{}", &answer[..answer.len().min(300)]);
    assert!(answer.contains("`id`") && answer.len() < 1000, "{answer}");
    // A line break in an id forged lines in the text log.
    let forged = r#"e1\n2026-01-01T00:00:00Z ERROR forged line"#;
    let (status, answer) = post(event(forged)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("control character"), "{answer}");
    // An ordinary id still goes in.
    let (status, answer) = post(event("evt-0001")).await;
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn check_warns_of_an_event_value_put_into_a_url_path_unencoded() {
    // `https://api.example.com/v1/leads/<< event.id >>` with id
    // `../../admin?x=1` sent the request to `/admin?x=1`, and `check` said
    // nothing (it warns only when a parameter decides the host).
    let push = |name: &str, url: &str| {
        format!("name: {name}\non: call.ended\nhttp:\n  url: \"{url}\"\n  json:\n    a: 1\n")
    };
    let dir = crate::util::folder(&[
        (
            "raw.yaml",
            &push("raw", "https://api.example.com/v1/leads/<< event.id >>"),
        ),
        (
            "encoded.yaml",
            &push(
                "encoded",
                "https://api.example.com/v1/leads/<< event.id | path >>",
            ),
        ),
        (
            "query.yaml",
            &push(
                "query",
                "https://api.example.com/v1/leads?id=<< event.id | urlencode >>&x=<< event.y >>",
            ),
        ),
        (
            "fixed.yaml",
            &push("fixed", "https://api.example.com/v1/<< push.name >>"),
        ),
    ]);
    let out = pushwerk_in(dir.path(), &["check", "."], &[]);
    let text = stderr(&out) + &stdout(&out);
    let warned: Vec<&str> = text.lines().filter(|l| l.contains("unencoded")).collect();
    assert_eq!(warned.len(), 1, "{text}");
    assert!(
        warned[0].starts_with("./raw.yaml:4:8: warning:")
            && warned[0].contains("<< event.id | path >>"),
        "{text}"
    );
}

#[test]
fn a_malformed_event_file_is_explained_once() {
    // `error: event file ev.json: malformed event: missing field `time` at
    // line 1 column 30: missing field `time` at line 1 column 30`.
    let dir = crate::util::folder(&[
        (
            "pushes/hook.yaml",
            "name: hook\non: call.ended\nhttp:\n  url: https://example.com/in\n  json:\n    a: 1\n",
        ),
        ("ev.json", r#"{"id":"e1","type":"call.ended","data":{}}"#),
    ]);
    let out = pushwerk_in(dir.path(), &["dry-run", "hook", "--event", "ev.json"], &[]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert_eq!(text.matches("missing field `time`").count(), 1, "{text}");
}

#[test]
fn an_event_cannot_pick_a_definitions_or_hidden_file_as_attachment() {
    // With `path: "docs/<< event.doc >>"` an event naming a definitions
    // file in that folder (`accounts.yaml`, or `.env`) mailed it, client
    // secret and all. (A path starting with a parameter is a `check`
    // error now: see attack_followup.)
    let push = "name: mail\non: call.ended\ngraph_mail:\n  account: acc\n  to: [\"a@example.com\"]\n  subject: s\n  text: t\n  attachments:\n    - name: doc\n      path: \"docs/<< event.doc >>\"\n";
    let account = "kind: oauth_account\nname: acc\ntoken_url: https://login.example.com/token\nclient_id: c\nclient_secret: literal-secret-canary-J8\nscope: s\n";
    let dir = crate::util::folder(&[
        ("pushes/mail.yaml", push),
        ("pushes/docs/accounts.yaml", account),
        ("pushes/docs/.env", "SECRET=env-secret-canary-K3\n"),
        ("pushes/docs/offer.pdf", "%PDF-1.4 offer\n"),
    ]);
    let run = |doc: &str| {
        let event = format!(
            r#"{{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{{"doc":"{doc}"}}}}"#
        );
        std::fs::write(dir.path().join("ev.json"), event).expect("event");
        pushwerk_in(
            dir.path(),
            &["dry-run", "mail", "--event", "ev.json", "--format", "json"],
            &[],
        )
    };
    use base64::Engine as _;
    for (doc, canary) in [
        ("accounts.yaml", "literal-secret-canary-J8"),
        (".env", "env-secret-canary-K3"),
    ] {
        let out = run(doc);
        let text = stdout(&out) + &stderr(&out);
        let encoded = base64::engine::general_purpose::STANDARD.encode(canary);
        assert!(!out.status.success(), "{doc} was attached: {text}");
        assert!(
            !text.contains(canary) && !text.contains(&encoded[..16]),
            "{doc}: {text}"
        );
        assert!(text.contains("never attached"), "{doc}: {text}");
    }
    // An ordinary file beside the push is still attached.
    let out = run("offer.pdf");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sighup_while_the_daemon_starts_does_not_end_it() {
    // SIGHUP's default action is to end the process; it was caught only
    // once the folder watch started, so a `systemctl reload` (or a
    // logrotate hook) during the start killed the daemon.
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(tmp.path().join("pushes")).expect("mkdir");
    let data = tmp.path().join("data");
    let mut cmd = crate::util::pushwerk_command();
    cmd.arg("--dir")
        .arg(tmp.path().join("pushes"))
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PUSHWERK_INGEST_TOKEN", "attack-test-token")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("serve.log")).expect("log file"));
    for name in EXAMPLE_ENV {
        cmd.env_remove(name);
    }
    let mut daemon = Daemon {
        child: cmd.spawn().expect("pushwerk serve starts"),
        // Learnt from the daemon's announcement once it has bound one.
        port: 0,
        log: tmp.path().join("serve.log"),
    };
    let pid = daemon.child.id() as libc::pid_t;
    // The data directory appears when the store opens: the daemon is
    // starting. Hang up on it from then until it answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !data.exists() {
        assert!(
            Instant::now() < deadline,
            "the data directory never appeared"
        );
        assert!(
            daemon.child.try_wait().expect("try_wait").is_none(),
            "exited early"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut sent = 0;
    while !daemon.learn_port(tmp.path()) || !daemon.healthz(Duration::from_millis(200)) {
        if let Some(status) = daemon.child.try_wait().expect("try_wait") {
            panic!("the daemon ended after {sent} SIGHUPs during its start: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not answer within 15 s"
        );
        // SAFETY: `pid` is our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        sent += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert!(
        daemon.healthz(Duration::from_secs(2)),
        "answering after a SIGHUP"
    );
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "still running"
    );
}

/// An SMTP server that answers `AUTH …` with `535 … rejected <argument>
/// (<argument decoded>)`, as a chatty server may. Serves one session.
fn smtp_server_echoing_auth() -> (u16, std::thread::JoinHandle<()>) {
    use base64::Engine as _;
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let handle = std::thread::spawn(move || {
        let Ok((mut c, _)) = listener.accept() else {
            return;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let mut lines = std::io::BufReader::new(c.try_clone().expect("clone")).lines();
        let _ = c.write_all(b"220 echo ESMTP\r\n");
        for _ in 0..20 {
            let Some(Ok(line)) = lines.next() else { return };
            let upper = line.to_ascii_uppercase();
            let answer = if upper.starts_with("EHLO") {
                "250-echo\r\n250 AUTH PLAIN LOGIN\r\n".to_owned()
            } else if upper.starts_with("AUTH") {
                let arg = line
                    .split_whitespace()
                    .nth(2)
                    .unwrap_or_default()
                    .to_owned();
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(&arg)
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                    .unwrap_or_default();
                format!("535 5.7.8 rejected {arg} ({decoded})\r\n")
            } else if upper.starts_with("QUIT") {
                let _ = c.write_all(b"221 bye\r\n");
                return;
            } else {
                "250 ok\r\n".to_owned()
            };
            let _ = c.write_all(answer.as_bytes());
        }
    });
    (port, handle)
}

#[test]
fn an_smtp_server_echoing_the_auth_line_does_not_get_the_password_into_output() {
    use base64::Engine as _;
    const PASSWORD: &str = "smtp-password-canary-Q7";
    let (port, server) = smtp_server_echoing_auth();
    let push = format!(
        "name: mail\non: call.ended\nsmtp:\n  host: 127.0.0.1\n  port: {port}\n  tls: none\n  auth:\n    username: office@example.com\n    password: ${{env:SMTP_PASSWORD}}\n  from: office@example.com\n  to: [sales@example.com]\n  subject: s\n  text: t\n"
    );
    let dir = crate::util::folder(&[
        ("pushes/mail.yaml", &push),
        (
            "ev.json",
            r#"{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{}}"#,
        ),
    ]);
    let out = pushwerk_in(
        dir.path(),
        &["send", "mail", "--event", "ev.json"],
        &[("SMTP_PASSWORD", PASSWORD)],
    );
    server.join().expect("the server ran");
    let text = stdout(&out) + &stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("535") && text.contains("rejected"), "{text}");
    let plain = base64::engine::general_purpose::STANDARD
        .encode(format!("\0office@example.com\0{PASSWORD}"));
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.contains(&plain), "{text}");
}
