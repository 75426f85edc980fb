//! Adversarial checks of the control plane and the console through the
//! real binary on loopback: what a console page or an API answer must
//! never show (literal secrets of a push file, in any YAML style), and
//! what a hostile request must not achieve.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pushwerk_testkit::daemon::{http_client, Served, World as KitWorld};

const INGEST: &str = "attack-control-ingest-canary";

/// A folder, a data directory and a config directory (for the key): the
/// kit's [`KitWorld::with_config_home`].
struct World(KitWorld);

impl std::ops::Deref for World {
    type Target = KitWorld;
    fn deref(&self) -> &KitWorld {
        &self.0
    }
}

impl World {
    fn new(files: &[(&str, &str)]) -> World {
        World(KitWorld::with_config_home(crate::util::kit(), files))
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.root().join(sub)
    }

    /// `pushwerk serve` on a free loopback port, ready.
    async fn serve(&self) -> Served {
        self.serve_with(&[]).await
    }

    /// `pushwerk serve` with `extra` flags on a free loopback port, ready.
    async fn serve_with(&self, extra: &[&str]) -> Served {
        self.0
            .serve()
            .token(INGEST)
            .args(&["--grace", "5s", "--log", "info"])
            .args(extra)
            .client(http_client().redirect(reqwest::redirect::Policy::none()))
            .start()
            .await
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.path("data").join("admin-token"))
            .expect("generated admin token")
            .trim()
            .to_owned()
    }
}

/// A push page shows the push's YAML with literal secrets masked: not only
/// `password: x` on one line (the case first covered) but every YAML
/// style a user may write — a flow mapping (`auth: {username: u,
/// password: x}`), a `|` or `>-` block scalar, a plain scalar continued on
/// the next line — and a literal `Authorization` header. The canaries must
/// not be on the page; the rest of the file must be.
#[tokio::test(flavor = "multi_thread")]
async fn push_page_masks_literal_secrets_in_every_yaml_style() {
    let flow = "name: flow_mail\non: call.ended\nsmtp:\n  host: 127.0.0.1\n  port: 2525\n  tls: none\n  auth: {username: u, password: CANARY-FLOW-PW}\n  from: a@example.com\n  to: [b@example.com]\n  subject: hi\n  text: hello\n";
    let block = "name: block_mail\non: call.ended\nsmtp:\n  host: 127.0.0.1\n  port: 2525\n  tls: none\n  auth:\n    username: u\n    password: |-\n      CANARY-BLOCK-PW\n  from: a@example.com\n  to: [b@example.com]\n  subject: hi\n  text: hello\n";
    let plain = "name: plain_mail\non: call.ended\nsmtp:\n  host: 127.0.0.1\n  port: 2525\n  tls: none\n  auth:\n    username: u\n    password:\n      CANARY-PLAIN-PW\n  from: a@example.com\n  to: [b@example.com]\n  subject: hi\n  text: hello\n";
    let header = "name: hook\non: call.ended\nhttp:\n  url: http://127.0.0.1:9/x\n  headers: {Authorization: \"Bearer CANARY-HEADER-TOKEN\", X-Shown: visible-value}\n  raw: '<< event.caller >>'\n";
    let world = World::new(&[
        ("flow.yaml", flow),
        ("block.yaml", block),
        ("plain.yaml", plain),
        ("hook.yaml", header),
    ]);
    let served = world.serve().await;
    let cookie = served.console_login(&world.admin_token()).await;
    for (push, canary, shown) in [
        ("flow_mail", "CANARY-FLOW-PW", "username: u"),
        ("block_mail", "CANARY-BLOCK-PW", "username: u"),
        ("plain_mail", "CANARY-PLAIN-PW", "username: u"),
        ("hook", "CANARY-HEADER-TOKEN", "visible-value"),
    ] {
        let (status, html) = served.page(&cookie, &format!("/pushes/{push}")).await;
        assert_eq!(status, 200, "{push}: {html}");
        assert!(!html.contains(canary), "{push} shows {canary}:\n{html}");
        assert!(
            html.contains(shown),
            "{push}: the YAML is not shown:\n{html}"
        );
        assert!(html.contains("‹hidden›"), "{push}: no mask:\n{html}");
    }
}

/// The preview may be asked for with the ingest token alone (an event
/// sender's): it must not hand out a credential written literally into a
/// push file — an SMTP password, an `Authorization` or `x-api-key` header —
/// while `${env:…}` values and tokens stay placeholders and the rest of
/// the request is shown as it would be sent.
#[tokio::test(flavor = "multi_thread")]
async fn preview_with_the_ingest_token_shows_no_literal_credential() {
    let smtp = "name: smtp_mail\non: call.ended\nsmtp:\n  host: 127.0.0.1\n  port: 2525\n  tls: none\n  auth: {username: mailer, password: CANARY-SMTP-PASSWORD}\n  from: a@example.com\n  to: [b@example.com]\n  subject: hi\n  text: hello << event.caller >>\n";
    let http = "name: hook\non: call.ended\nhttp:\n  url: http://127.0.0.1:9/x?shown=yes&code=CANARY-URL-CODE\n  headers:\n    Authorization: Basic CANARY-BASIC-AUTH\n    x-api-key: CANARY-API-KEY\n    X-Shown: visible-value\n  raw: 'caller << event.caller >>'\n";
    let world = World::new(&[("smtp.yaml", smtp), ("hook.yaml", http)]);
    let served = world.serve().await;
    let event = serde_json::json!({"event": {"id": "e1", "type": "call.ended", "time": "2026-11-25T14:00:00Z", "data": {"caller": "Erika"}}});
    for (push, canaries, shown) in [
        ("smtp_mail", &["CANARY-SMTP-PASSWORD"][..], "hello Erika"),
        (
            "hook",
            &["CANARY-BASIC-AUTH", "CANARY-API-KEY", "CANARY-URL-CODE"][..],
            "visible-value",
        ),
    ] {
        let r = served
            .http()
            .post(served.url(&format!("/v1/pushes/{push}/preview")))
            .bearer_auth(INGEST)
            .json(&event)
            .send()
            .await
            .expect("preview");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        assert_eq!(status, 200, "{push}: {text}");
        for canary in canaries {
            assert!(!text.contains(canary), "{push} shows {canary}: {text}");
        }
        assert!(text.contains(shown), "{push}: {text}");
        assert!(text.contains("‹secret›"), "{push}: {text}");
    }
}

/// A key file other users may read (copied back from a backup with `cp`,
/// mode 0644) decrypts every copy of the token state: using it is said,
/// with the file and the fix, while the command still works; a private
/// key file is used without a word.
#[test]
fn a_key_file_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new(&[]);
    let key = world.path("config").join("pushwerk").join("key");
    let status = |world: &World| {
        let out = world
            .command()
            .args(["oauth", "status"])
            .output()
            .expect("pushwerk runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // The first use generates the key, private.
    let (ok, text) = status(&world);
    assert!(ok, "{text}");
    assert!(key.exists(), "no key generated: {text}");
    assert!(!text.contains("chmod 600"), "{text}");
    let (ok, text) = status(&world);
    assert!(ok && !text.contains("chmod 600"), "{text}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (ok, text) = status(&world);
    assert!(ok, "the command still works: {text}");
    assert!(
        text.contains("mode 644") && text.contains(&format!("chmod 600 {}", key.display())),
        "no warning about the readable key file: {text}"
    );
}

/// Behind a reverse proxy (`--public-url https://push.example.test`), the
/// daemon sees the proxy's upstream as `Host` (nginx's default is the
/// `proxy_pass` address) while the browser sends the public origin: the
/// console's sign-in and forms must work there, and a form from any other
/// origin must still be refused.
#[tokio::test(flavor = "multi_thread")]
async fn console_forms_work_behind_a_proxy_with_public_url() {
    let world = World::new(&[]);
    let served = world
        .serve_with(&["--public-url", "https://push.example.test/"])
        .await;
    let admin = world.admin_token();
    let post_login = |origin: &'static str| {
        served
            .http()
            .post(served.url("/login"))
            .header("origin", origin)
            .header("sec-fetch-site", "same-origin")
            .form(&[("token", admin.as_str())])
            .send()
    };
    let evil = post_login("https://evil.example").await.expect("login");
    assert_eq!(evil.status(), 403, "a foreign origin is refused");
    let ok = post_login("https://push.example.test")
        .await
        .expect("login");
    let status = ok.status();
    let text_headers = format!("{:?}", ok.headers());
    assert_eq!(
        status,
        303,
        "sign-in from the public origin refused: {}",
        ok.text().await.unwrap_or_default()
    );
    assert!(text_headers.contains("pushwerk_session"), "{text_headers}");
}

/// A token response with an empty or blank `refresh_token` (a bad paste)
/// is refused with a 400 and replaces nothing: the account keeps the
/// tokens it had (here: its access token's expiry, an hour away, stays).
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_refresh_token_is_refused_and_replaces_nothing() {
    let account = "kind: oauth_account\nname: ms_mail\ntoken_url: http://127.0.0.1:9/token\nclient_id: abc\nclient_secret: ${env:ATTACK_CONTROL_UNSET}\nscope: offline_access https://graph.microsoft.com/Mail.Send\n";
    let world = World::new(&[("account.yaml", account)]);
    let served = world.serve().await;
    let admin = world.admin_token();
    let put = |body: &'static str| {
        served
            .http()
            .put(served.url("/v1/accounts/ms_mail/tokens"))
            .bearer_auth(&admin)
            .body(body)
            .send()
    };
    let good = put(r#"{"refresh_token":"rt-good","access_token":"at-good","expires_in":3600}"#)
        .await
        .expect("put");
    assert_eq!(good.status(), 200);
    let expiry = |v: &serde_json::Value| v["account"]["access_token_expires"].clone();
    let before: serde_json::Value = good.json().await.expect("json");
    assert!(expiry(&before).is_string(), "{before}");
    for bad in [
        r#"{"refresh_token":""}"#,
        r#"{"refresh_token":"   "}"#,
        r#"{"refresh_token":"","access_token":"x","expires_in":60}"#,
        r#"{"refresh_token":"rt","access_token":"","expires_in":60}"#,
    ] {
        let r = put(bad).await.expect("put");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        assert_eq!(status, 400, "{bad} accepted: {text}");
        assert!(text.contains("refresh_token"), "{bad}: {text}");
    }
    let now: serde_json::Value = served
        .http()
        .get(served.url("/v1/accounts/ms_mail"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let now_expiry = now["access_token_expires"]
        .clone()
        .as_str()
        .map(str::to_owned)
        .or_else(|| expiry(&now).as_str().map(str::to_owned));
    assert_eq!(
        now_expiry.as_deref(),
        expiry(&before).as_str(),
        "the good tokens were replaced: {now}"
    );
}

/// `serve` refuses an admin token that is the ingest token (every event
/// sender would manage accounts and send as them) or short enough to be
/// guessed (the sign-in takes guesses without limit), saying what to do;
/// a long one of its own is taken.
#[test]
fn serve_refuses_an_admin_token_equal_to_the_ingest_token_or_short() {
    let world = World::new(&[]);
    for (admin, expected) in [
        (INGEST, "the admin token is the ingest token"),
        ("secret", "the admin token is 6 characters long"),
    ] {
        let log = world.path("refused.log");
        let mut child = world
            .command()
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", admin])
            .env("PUSHWERK_INGEST_TOKEN", INGEST)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("pushwerk runs");
        // It must exit by itself; one that serves is stopped here.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{admin}: served:\n{text}"
        );
        assert!(text.contains(expected), "{admin}: {text}");
        assert!(!text.contains("pushwerk serving"), "{text}");
    }
}

/// A token read from the data directory goes only to the daemon that holds
/// that directory: with no daemon running, `deliveries`, `jobs` and
/// `replay` refuse instead of sending it to whatever listens where the
/// daemon used to (another local user may have taken the port), whether
/// the address comes from `--server` or from a stale `DATA/daemon.json`.
#[test]
fn tokens_from_the_data_directory_never_reach_a_listener_that_is_not_its_daemon() {
    use std::io::Read;
    let world = World::new(&[]);
    let data = world.path("data");
    std::fs::write(
        data.join("ingest-token"),
        "squat-ingest-canary-0123456789\n",
    )
    .unwrap();
    std::fs::write(data.join("admin-token"), "squat-admin-canary-0123456789\n").unwrap();
    // The squatter: records what it is sent and answers `{}` as a daemon
    // would, so that a client that does send a token finishes and the
    // check below fails (rather than the client waiting for an answer).
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    squatter.set_nonblocking(true).unwrap();
    let url = format!("http://{}", squatter.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((mut conn, _)) = squatter.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                received.lock().unwrap().extend_from_slice(&head);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        })
    };
    // A stale announcement naming the squatter, with a live pid (ours).
    std::fs::write(
        data.join("daemon.json"),
        format!("{{\"url\":\"{url}\",\"pid\":{}}}", std::process::id()),
    )
    .unwrap();
    // No store in DATA either (and none made by these commands): nothing
    // to read locally, no daemon to ask.
    let runs: [&[&str]; 4] = [
        &["deliveries", "--server", &url],
        &["jobs", "--server", &url],
        &["replay", "--failed", "--server", &url],
        &["deliveries"],
    ];
    for args in runs {
        let out = world.command().args(args).output().expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("no daemon is serving"), "{args:?}: {err}");
    }
    assert!(
        !pushwerk::store::holds_store(&data),
        "a command made a store"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    recorder.join().unwrap();
    let received = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(
        !received.contains("canary"),
        "a token reached the squatter: {received}"
    );
}

/// With no daemon serving the data directory, `deliveries`, `jobs` and
/// `replay` read and mend its store directly (issue #13: nobody has to
/// start a daemon to look at, or re-queue, what the last one left).
#[tokio::test(flavor = "multi_thread")]
async fn without_a_daemon_deliveries_jobs_and_replay_use_the_store() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let push = |name: &str, extra: &str| {
        format!("name: {name}\non: t\nhttp:\n  url: http://127.0.0.1:{closed}/{name}\n{extra}")
    };
    let world = World::new(&[
        ("later.yaml", &push("later", "delay: 1h\n")),
        (
            "doomed.yaml",
            &push("doomed", "retry: { max_attempts: 1 }\n"),
        ),
    ]);
    let served = world.serve().await;
    let r = served
        .http()
        .post(served.url("/v1/events"))
        .bearer_auth(INGEST)
        .json(&serde_json::json!({"id": "e1", "type": "t", "time": "2026-12-01T10:00:00Z", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dead: serde_json::Value = served
            .http()
            .get(served.url("/v1/dead-letters"))
            .bearer_auth(INGEST)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if dead["dead_letters"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter: {dead}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGTERM: the daemon flushes and exits.
    let mut served = served;
    let mut child = served.take_child();
    // SAFETY: sends SIGTERM to the daemon this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    let run = |args: &[&str]| {
        let out = world.command().args(args).output().expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let failed = run(&["deliveries", "--failed"]);
    assert!(
        failed.contains("dead") && failed.contains("doomed"),
        "{failed}"
    );
    let jobs = run(&["jobs"]);
    assert!(jobs.contains("later") && !jobs.contains("doomed"), "{jobs}");
    assert_eq!(
        run(&["replay", "--failed"]).trim(),
        "replayed 1 dead letter"
    );
    let jobs = run(&["jobs"]);
    assert!(jobs.contains("later") && jobs.contains("doomed"), "{jobs}");
}
