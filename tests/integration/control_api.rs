//! The running daemon as the control plane, through the real binary and
//! its HTTP API: accounts (status, tokens in, refresh) with the admin token,
//! browser sign-in through the daemon (start → begin link → provider →
//! callback in the same browser), an
//! event's history, previews, webhooks, and the CLI using the API while a
//! daemon holds the data directory. A canary token imported through the API
//! must appear in no answer and no log line.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use pushwerk_testkit::daemon::{http_client, Served as KitServed, World as KitWorld};
use pushwerk_testkit::identity::{IdentityMock, MockConfig, Mode};
use pushwerk_testkit::microsoft::{GraphMock, HttpReceiver};

const INGEST: &str = "control-test-ingest-token";
const ADMIN: &str = "control-test-admin-token";
const GRAPH_PREFIX: &str = "mock-at.graph.microsoft.com.";
const MAIL_SCOPE: &str = "offline_access https://graph.microsoft.com/Mail.Send";

/// A folder and a data directory (the kit's [`KitWorld`]), and a daemon on them.
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

    /// `pushwerk --dir … --data … args…` (no token in the environment:
    /// the CLI finds the daemon and its tokens in the data directory).
    async fn pushwerk(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        self.pushwerk_input(args, stdin).await
    }

    /// Starts `pushwerk serve` (generated admin token unless `extra` says
    /// otherwise) and waits until it is ready.
    async fn start(&self, extra: &[&str]) -> Served {
        let kit = self
            .serve()
            .token(INGEST)
            .args(&["--grace", "5s", "--log", "info"])
            .args(extra)
            .client(http_client().redirect(reqwest::redirect::Policy::none()))
            .start()
            .await;
        let admin = std::fs::read_to_string(self.data().join("admin-token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|_| ADMIN.to_owned());
        Served { kit, admin }
    }
}

/// The kit's daemon and its admin token.
struct Served {
    kit: KitServed,
    admin: String,
}

impl std::ops::Deref for Served {
    type Target = KitServed;
    fn deref(&self) -> &KitServed {
        &self.kit
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut KitServed {
        &mut self.kit
    }
}

/// Every answer body seen, to search for the canary at the end.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<String>>);

impl Served {
    /// SIGTERM and wait for the exit.
    async fn terminate(&mut self) {
        self.kit.terminate(Duration::from_secs(15)).await;
    }

    /// A request with `token` (if any); the status and the body (JSON if it is).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Body>,
        seen: &Seen,
    ) -> (u16, Value) {
        let mut r = self.http().request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r = match body {
            Some(Body::Json(v)) => r.json(&v),
            Some(Body::Text(t)) => r.body(t),
            None => r,
        };
        let answer = r.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = answer.status().as_u16();
        let text = answer.text().await.expect("body");
        seen.0.lock().unwrap().push(text.clone());
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Sends a raw request head and reads the answer's status and body.
async fn raw_head(port: u16, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap_or(0);
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length || n == 0 {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, body.to_owned());
            }
        }
        assert!(
            n > 0 && Instant::now() < deadline,
            "no complete answer: {text}"
        );
    }
}

enum Body {
    Json(Value),
    Text(String),
}

use reqwest::Method;

async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
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
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn account_yaml(identity: &IdentityMock) -> String {
    format!(
        "kind: oauth_account\nname: ms_mail\ntoken_url: {}\nclient_id: {}\nclient_secret: mock-secret\nscope: {MAIL_SCOPE}\n",
        identity.token_url(),
        MockConfig::default().client_id
    )
}

fn mail_push(graph: &GraphMock) -> String {
    format!(
        "name: mail\non: call.ended\ngraph_mail:\n  account: ms_mail\n  base_url: {}\n  to: [sales@example.com]\n  subject: Call << push.event_id >>\n  text: hello << event.caller | default('') >>\n",
        graph.base_url()
    )
}

fn event(id: &str) -> Value {
    json!({"id": id, "type": "call.ended", "time": "2026-11-25T14:00:00Z", "data": {"caller": "Erika"}})
}

fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------

/// Accounts: admin token only (the ingest token and no token get 401),
/// tokens imported through the API, status with expiry and encryption,
/// bad input answered 400 with the reason, and the canary refresh and
/// access tokens in no answer and no log line.
#[tokio::test(flavor = "multi_thread")]
async fn accounts_need_the_admin_token_and_never_show_a_token() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let graph = GraphMock::start().await;
    let world = World::new(&[
        ("accounts.yaml", &account_yaml(&identity)),
        ("mail.yaml", &mail_push(&graph)),
    ]);
    let served = world.start(&[]).await;
    let seen = Seen::default();

    // The generated admin token: 0600, and not the ingest token.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(world.data().join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_ne!(served.admin, INGEST);

    for (method, path) in [
        (Method::GET, "/v1/accounts"),
        (Method::GET, "/v1/accounts/ms_mail"),
        (Method::PUT, "/v1/accounts/ms_mail/tokens"),
        (Method::POST, "/v1/accounts/ms_mail/refresh"),
        (Method::GET, "/oauth/ms_mail/start"),
        (Method::POST, "/v1/pushes/mail/send"),
    ] {
        for token in [None, Some(INGEST), Some("wrong")] {
            let (status, body) = served
                .send(
                    method.clone(),
                    path,
                    token,
                    Some(Body::Text("rt-x".into())),
                    &seen,
                )
                .await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains("admin token"),
                "{body}"
            );
        }
    }
    // Nothing was stored by the refused import.
    let (_, before) = served
        .send(
            Method::GET,
            "/v1/accounts/ms_mail",
            Some(&served.admin),
            None,
            &seen,
        )
        .await;
    assert_eq!(before["status"], "no_tokens", "{before}");

    // Bad input: 400 (or 404) naming the problem; nothing stored.
    let bad: [(&str, &str, u16, &str); 5] = [
        ("/v1/accounts/ms_mail/tokens", "", 400, "nothing to import"),
        (
            "/v1/accounts/ms_mail/tokens",
            "{\"refresh_token\": ",
            400,
            "not a token response at line 1",
        ),
        (
            "/v1/accounts/ms_mail/tokens",
            "two words",
            400,
            "expected one refresh token",
        ),
        (
            "/v1/accounts/ms_mial/tokens",
            "rt-1",
            404,
            "did you mean `ms_mail`",
        ),
        (
            "/v1/accounts/ms_mail/tokens?requeue=maybe",
            "rt-1",
            400,
            "requeue=true|false",
        ),
    ];
    for (path, body, want, reason) in bad {
        let (status, answer) = served
            .send(
                Method::PUT,
                path,
                Some(&served.admin),
                Some(Body::Text(body.into())),
                &seen,
            )
            .await;
        assert_eq!(status, want, "{path} {body:?}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(reason),
            "{path}: {answer}"
        );
    }
    // A body over 64 KiB is refused from its Content-Length, before it is
    // sent (a raw head, so that the client is not still writing when the
    // answer comes).
    let (status, answer) = raw_head(
        served.port(),
        &format!(
            "PUT /v1/accounts/ms_mail/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
            served.admin,
            70 * 1024
        ),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    let (_, still) = served
        .send(
            Method::GET,
            "/v1/accounts/ms_mail",
            Some(&served.admin),
            None,
            &seen,
        )
        .await;
    assert_eq!(still["status"], "no_tokens", "{still}");

    // The canary: a token response imported through the API.
    let canary_rt = "CANARY-refresh-7f3a9c";
    let canary_at = "mock-at.graph.microsoft.com.CANARY-access-51be";
    identity.seed_refresh_token(canary_rt, MAIL_SCOPE);
    let (status, changed) = served
        .send(
            Method::PUT,
            "/v1/accounts/ms_mail/tokens",
            Some(&served.admin),
            Some(Body::Text(
                json!({"access_token": canary_at, "refresh_token": canary_rt, "expires_in": 3600})
                    .to_string(),
            )),
            &seen,
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let account = &changed["account"];
    assert_eq!(account["name"], "ms_mail");
    assert_eq!(account["status"], "ok", "{account}");
    assert_eq!(account["has_refresh_token"], true);
    assert_eq!(account["encrypted"], true);
    assert!(account["access_token_expires"].is_string(), "{account}");
    assert!(account["last_refresh"].is_string(), "{account}");

    let (status, list) = served
        .send(
            Method::GET,
            "/v1/accounts",
            Some(&served.admin),
            None,
            &seen,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["encrypted_at_rest"], true);
    assert_eq!(list["accounts"][0]["name"], "ms_mail");
    assert_eq!(list["accounts"][0]["status"], "ok");

    // Refresh through the API: one token request with the canary; the
    // rotated tokens stay inside too.
    let (status, refreshed) = served
        .send(
            Method::POST,
            "/v1/accounts/ms_mail/refresh",
            Some(&served.admin),
            None,
            &seen,
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(identity.used_refresh_tokens(), vec![canary_rt.to_owned()]);
    let rotated: Vec<String> = identity
        .refresh_tokens()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let issued = identity.issued_access_tokens();
    assert!(!issued.is_empty());

    // A refused grant: needs_reauth with the provider's code and message.
    identity.set_mode(Mode::Fail {
        status: 400,
        error: "invalid_grant".into(),
        aadsts: 70008,
        description: "The refresh token has expired due to inactivity.".into(),
        suberror: None,
    });
    let (status, refused) = served
        .send(
            Method::POST,
            "/v1/accounts/ms_mail/refresh",
            Some(&served.admin),
            None,
            &seen,
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    let (_, after) = served
        .send(
            Method::GET,
            "/v1/accounts/ms_mail",
            Some(&served.admin),
            None,
            &seen,
        )
        .await;
    assert_eq!(after["status"], "needs_reauth", "{after}");
    let code = after["problem"]["code"].as_str().unwrap();
    assert!(
        code.contains("invalid_grant") && code.contains("70008"),
        "{after}"
    );
    assert!(
        after["problem"]["message"]
            .as_str()
            .unwrap()
            .contains("expired due to inactivity"),
        "{after}"
    );

    // Every other endpoint, answered too, for the canary search.
    for (method, path, body) in [
        (Method::GET, "/v1/pushes", None),
        (Method::GET, "/v1/deliveries", None),
        (Method::GET, "/v1/dead-letters", None),
        (
            Method::POST,
            "/v1/pushes/mail/preview",
            Some(Body::Json(json!({"event": event("p-1")}))),
        ),
        (Method::GET, "/oauth/ms_mail/start", None),
    ] {
        let (status, answer) = served
            .send(method.clone(), path, Some(&served.admin), body, &seen)
            .await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
    }
    let mut served = served;
    served.terminate().await;
    let log = served.log_text();
    let answers = seen.0.lock().unwrap().join("\n");
    let mut secrets = vec![
        canary_rt.to_owned(),
        canary_at.to_owned(),
        "CANARY".to_owned(),
    ];
    secrets.extend(rotated);
    secrets.extend(issued);
    for secret in &secrets {
        assert!(
            !answers.contains(secret.as_str()),
            "an answer shows {secret}"
        );
        assert!(
            !log.contains(secret.as_str()),
            "the log shows {secret}:\n{log}"
        );
    }
    assert!(
        log.contains("tokens imported"),
        "the import is logged: {log}"
    );
}

/// `oauth import` while the daemon runs goes through its API (no "in use"
/// refusal, no restart), `oauth status` and `replay` too, and the dead
/// letter waiting for the account goes out.
#[tokio::test(flavor = "multi_thread")]
async fn oauth_import_into_a_running_daemon_then_the_waiting_delivery_goes_out() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let graph = GraphMock::start().await;
    graph.accept_token_prefix(GRAPH_PREFIX);
    let world = World::new(&[
        ("accounts.yaml", &account_yaml(&identity)),
        ("mail.yaml", &mail_push(&graph)),
    ]);
    let served = world.start(&[]).await;
    let seen = Seen::default();
    let announced: Value = serde_json::from_str(
        &std::fs::read_to_string(world.data().join("daemon.json")).expect("daemon.json"),
    )
    .unwrap();
    assert_eq!(announced["url"], served.url(""), "{announced}");

    // No tokens yet: the delivery fails and waits as a dead letter.
    let (status, _) = served
        .send(
            Method::POST,
            "/v1/events",
            Some(INGEST),
            Some(Body::Json(event("imp-1"))),
            &seen,
        )
        .await;
    assert_eq!(status, 202);
    poll(
        "a dead letter of `mail`",
        Duration::from_secs(15),
        || async {
            let (_, d) = served
                .send(
                    Method::GET,
                    "/v1/dead-letters?push=mail",
                    Some(INGEST),
                    None,
                    &seen,
                )
                .await;
            d["dead_letters"]
                .as_array()
                .filter(|a| !a.is_empty())
                .cloned()
        },
    )
    .await;
    assert!(graph.requests().is_empty());

    // The CLI, on the same data directory, while the daemon runs.
    let out = world.pushwerk(&["oauth", "status", "ms_mail"], None).await;
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("ms_mail: no_tokens"),
        "{}",
        out_text(&out)
    );
    assert!(
        out_text(&out).contains("asking it at"),
        "{}",
        out_text(&out)
    );

    identity.seed_refresh_token("rt-live", MAIL_SCOPE);
    let tokens = json!({"access_token": "mock-at.graph.microsoft.com.live", "refresh_token": "rt-live", "expires_in": 3600});
    let out = world
        .pushwerk(&["oauth", "import", "ms_mail"], Some(&tokens.to_string()))
        .await;
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("stored tokens of `ms_mail` in the running daemon"),
        "{}",
        out_text(&out)
    );
    assert!(!out_text(&out).contains("in use"), "{}", out_text(&out));

    let out = world.pushwerk(&["oauth", "status"], None).await;
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(out_text(&out).contains("ms_mail: ok"), "{}", out_text(&out));
    let out = world
        .pushwerk(&["oauth", "status", "--format", "json"], None)
        .await;
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON status");
    assert_eq!(doc["encrypted_at_rest"], true, "{doc}");
    assert_eq!(doc["accounts"][0]["account"], "ms_mail", "{doc}");
    assert_eq!(doc["accounts"][0]["state"], "ok", "{doc}");
    assert_eq!(doc["accounts"][0]["has_refresh_token"], true, "{doc}");

    let out = world.pushwerk(&["oauth", "refresh", "ms_mail"], None).await;
    assert!(out.status.success(), "{}", out_text(&out));
    assert_eq!(identity.used_refresh_tokens(), vec!["rt-live".to_owned()]);

    // `replay` finds the daemon from the data directory (no --server).
    let out = world
        .pushwerk(&["replay", "--failed", "--push", "mail"], None)
        .await;
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("replayed 1 dead letter"),
        "{}",
        out_text(&out)
    );
    assert!(graph.wait_for_requests(1, Duration::from_secs(15)).await);
    assert_eq!(graph.requests()[0].status, 202);
    assert_eq!(graph.sent_messages()[0]["message"]["subject"], "Call imp-1");

    // `send` while the daemon runs: sent by the daemon, same lines.
    let event_file = world.root().join("send-1.json");
    std::fs::write(&event_file, event("send-1").to_string()).unwrap();
    let out = world
        .pushwerk(
            &["send", "mail", "--event", event_file.to_str().unwrap()],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("mail attempt 1 → POST ")
            && out_text(&out).contains("delivered (202)"),
        "{}",
        out_text(&out)
    );
    assert!(graph.wait_for_requests(2, Duration::from_secs(15)).await);
    assert_eq!(
        graph.sent_messages()[1]["message"]["subject"],
        "Call send-1"
    );
    let out = world
        .pushwerk(
            &["send", "mial", "--event", event_file.to_str().unwrap()],
            None,
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("did you mean `mail`"),
        "{}",
        out_text(&out)
    );

    // The event's history: the dead attempt and the delivery.
    let history = poll("two attempts of imp-1", Duration::from_secs(10), || async {
        let (_, h) = served
            .send(Method::GET, "/v1/events/imp-1", Some(INGEST), None, &seen)
            .await;
        (h["attempts"].as_array().map_or(0, Vec::len) >= 2).then_some(h)
    })
    .await;
    assert_eq!(history["known"], true);
    let statuses: Vec<&str> = history["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["dead", "delivered"], "{history}");
    assert_eq!(history["dead_letters"], json!([]));
    let out = world
        .pushwerk(&["deliveries", "--push", "mail"], None)
        .await;
    assert!(out.status.success(), "{}", out_text(&out));
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("delivered mail  event imp-1  attempt 1")),
        "{lines}"
    );
    assert!(
        lines
            .lines()
            .any(|l| l.contains("dead     mail  event imp-1  attempt 1")),
        "{lines}"
    );

    // After the daemon stops, the announcement is gone and the CLI uses the store.
    let mut served = served;
    served.terminate().await;
    assert!(!world.data().join("daemon.json").exists());
    let out = world.pushwerk(&["oauth", "status", "ms_mail"], None).await;
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(
        !out_text(&out).contains("asking it at"),
        "{}",
        out_text(&out)
    );
}

/// Browser sign-in through the daemon: `start` (admin only) gives the
/// provider's URL with PKCE and a state; the provider sends the browser to
/// the daemon's callback, which stores the tokens and re-queues the
/// account's dead letters; a state works once, a forged one not at all.
#[tokio::test(flavor = "multi_thread")]
async fn browser_sign_in_through_the_daemon_stores_tokens_and_requeues() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let graph = GraphMock::start().await;
    graph.accept_token_prefix(GRAPH_PREFIX);
    let world = World::new(&[
        ("accounts.yaml", &account_yaml(&identity)),
        ("mail.yaml", &mail_push(&graph)),
    ]);
    let served = world.start(&["--admin-token", ADMIN]).await;
    let seen = Seen::default();
    assert!(
        !world.data().join("admin-token").exists(),
        "a given admin token is not written"
    );

    served
        .send(
            Method::POST,
            "/v1/events",
            Some(INGEST),
            Some(Body::Json(event("sign-1"))),
            &seen,
        )
        .await;
    poll("a dead letter", Duration::from_secs(15), || async {
        let (_, d) = served
            .send(Method::GET, "/v1/dead-letters", Some(ADMIN), None, &seen)
            .await;
        d["dead_letters"]
            .as_array()
            .filter(|a| !a.is_empty())
            .cloned()
    })
    .await;

    let (status, start) = served
        .send(
            Method::GET,
            "/oauth/ms_mail/start?requeue=true",
            Some(ADMIN),
            None,
            &seen,
        )
        .await;
    assert_eq!(status, 200, "{start}");
    let redirect = format!("http://localhost:{}/oauth/callback", served.port());
    assert_eq!(start["redirect_uri"], redirect);
    // The browser opens the sign-in's begin link, which binds the sign-in
    // to it (a cookie) and sends it on to the provider.
    let begin = start["authorize_url"].as_str().unwrap();
    let (authorize, cookie) = crate::harden::open_begin_link(served.http(), begin).await;
    let q: std::collections::HashMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], redirect);
    assert!(q["state"].len() >= 32, "{q:?}");

    // A browser asking for a page is sent on with 303.
    let r = served
        .http()
        .get(served.url("/oauth/ms_mail/start"))
        .bearer_auth(ADMIN)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&format!(
            "http://localhost:{}/oauth/begin?id=",
            served.port()
        )));

    // A forged state: refused, nothing stored.
    let (status, page) = served
        .send(
            Method::GET,
            "/oauth/callback?code=x&state=forged<script>",
            None,
            None,
            &seen,
        )
        .await;
    assert_eq!(status, 400);
    let page = page.as_str().unwrap();
    assert!(page.contains("unknown, used or expired sign-in"), "{page}");
    assert!(!page.contains("<script>"), "{page}");

    // The provider (the mock's authorize endpoint) redirects to the callback.
    let r = served.http().get(authorize.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(back.starts_with(&redirect), "{back}");
    let back = back.replace("localhost", "127.0.0.1");
    let r = served
        .http()
        .get(&back)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("stored new tokens of `ms_mail`"), "{page}");
    assert!(page.contains("Re-queued 1 dead letter"), "{page}");
    let tokens = identity.issued_access_tokens();
    assert_eq!(tokens.len(), 1);
    assert!(!page.contains(&tokens[0]));
    let exchange = &identity.requests()[0];
    assert_eq!(exchange.form["grant_type"], "authorization_code");
    assert_eq!(exchange.form["redirect_uri"], redirect);
    assert!(exchange.form.contains_key("code_verifier"));

    // The re-queued delivery goes out with the new token.
    assert!(graph.wait_for_requests(1, Duration::from_secs(15)).await);
    assert_eq!(
        graph.requests()[0].header("authorization"),
        Some(format!("Bearer {}", tokens[0]).as_str())
    );
    let (_, account) = served
        .send(
            Method::GET,
            "/v1/accounts/ms_mail",
            Some(ADMIN),
            None,
            &seen,
        )
        .await;
    assert_eq!(account["status"], "ok", "{account}");

    // The same redirect again: the state was used.
    let r = served
        .http()
        .get(&back)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(identity.requests().len(), 1, "no second exchange");

    // The provider's error (denied), HTML-escaped.
    identity.deny_authorization(true);
    let (_, start) = served
        .send(
            Method::GET,
            "/oauth/ms_mail/start",
            Some(ADMIN),
            None,
            &seen,
        )
        .await;
    let (authorize, cookie) =
        crate::harden::open_begin_link(served.http(), start["authorize_url"].as_str().unwrap())
            .await;
    let r = served.http().get(authorize.as_str()).send().await.unwrap();
    let back = r.headers()["location"]
        .to_str()
        .unwrap()
        .replace("localhost", "127.0.0.1");
    let r = served
        .http()
        .get(&back)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("access_denied"));
    let log = served.log_text();
    assert!(!log.contains(&tokens[0]), "{log}");
}

/// `--public-url` sets the redirect URI for a daemon behind a proxy; a
/// bad one stops the start with a clear message.
#[tokio::test(flavor = "multi_thread")]
async fn public_url_sets_the_redirect_uri() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let world = World::new(&[("accounts.yaml", &account_yaml(&identity))]);
    let served = world
        .start(&["--public-url", "https://pushwerk.example.com/"])
        .await;
    let seen = Seen::default();
    let (status, start) = served
        .send(
            Method::GET,
            "/oauth/ms_mail/start",
            Some(&served.admin),
            None,
            &seen,
        )
        .await;
    assert_eq!(status, 200, "{start}");
    assert_eq!(
        start["redirect_uri"],
        "https://pushwerk.example.com/oauth/callback"
    );
    drop(served);
    // Killed (SIGKILL on drop): its announcement is left behind, and the
    // CLI, finding the store unlocked, uses the store.
    assert!(world.data().join("daemon.json").exists());
    let out = world.pushwerk(&["oauth", "status", "ms_mail"], None).await;
    assert!(
        out_text(&out).contains("ms_mail: no_tokens"),
        "{}",
        out_text(&out)
    );
    assert!(
        !out_text(&out).contains("asking it at"),
        "{}",
        out_text(&out)
    );
    let out = world
        .pushwerk(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--public-url",
                "ftp://x?y",
            ],
            None,
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("--public-url"),
        "{}",
        out_text(&out)
    );
}

/// Webhooks: any JSON object becomes `data`; the id comes from
/// `Idempotency-Key` / `X-Request-Id` or the body's hash (a resend is a
/// duplicate); bad input is 400 with the reason; the ingest token suffices.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_take_any_object_and_resends_are_duplicates() {
    let rx = HttpReceiver::start().await;
    let push = format!(
        "name: crm\non: form.submitted\nhttp:\n  url: {}\n  json:\n    name: << event.name >>\n    id: << push.event_id >>\n",
        rx.url("/lead")
    );
    let world = World::new(&[("crm.yaml", &push)]);
    let served = world.start(&[]).await;
    let seen = Seen::default();
    let form = json!({"name": "Erika", "nested": {"a": [1, 2]}});

    let r = served
        .http()
        .post(served.url("/v1/hooks/form.submitted"))
        .bearer_auth(INGEST)
        .header("idempotency-key", "form-77")
        .json(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"id": "form-77", "accepted": 1, "duplicates": 0, "jobs": 1})
    );
    let r = served
        .http()
        .post(served.url("/v1/hooks/form.submitted"))
        .bearer_auth(INGEST)
        .header("x-request-id", "form-77")
        .json(&form)
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["duplicates"], 1, "{answer}");

    // Without a header: the hash of the body, so a resend is a duplicate.
    let (status, first) = served
        .send(
            Method::POST,
            "/v1/hooks/form.submitted",
            Some(INGEST),
            Some(Body::Json(json!({"name": "Max"}))),
            &seen,
        )
        .await;
    assert_eq!(status, 202, "{first}");
    assert!(
        first["id"].as_str().unwrap().starts_with("sha256:"),
        "{first}"
    );
    let (_, again) = served
        .send(
            Method::POST,
            "/v1/hooks/form.submitted",
            Some(INGEST),
            Some(Body::Json(json!({"name": "Max"}))),
            &seen,
        )
        .await;
    assert_eq!(again["duplicates"], 1, "{again}");
    assert_eq!(again["id"], first["id"]);

    assert!(rx.wait_for_requests(2, Duration::from_secs(15)).await);
    let mut bodies: Vec<Value> = rx.requests().iter().map(|r| r.json()).collect();
    bodies.sort_by_key(|b| b["name"].as_str().unwrap().to_owned());
    assert_eq!(bodies[0], json!({"name": "Erika", "id": "form-77"}));
    assert_eq!(bodies[1]["name"], "Max");

    // Bad input.
    let cases: [(&str, Option<&str>, &str, &str); 6] = [
        (
            "/v1/hooks/Form%20Submitted",
            Some(INGEST),
            "{}",
            "is not an event type",
        ),
        (
            "/v1/hooks/form.submitted",
            Some(INGEST),
            "[1]",
            "expected a JSON object",
        ),
        (
            "/v1/hooks/form.submitted",
            Some(INGEST),
            "{\"a\":",
            "malformed JSON",
        ),
        (
            "/v1/hooks/form.submitted",
            Some(INGEST),
            "{\"a\":1,\"a\":2}",
            "`a`",
        ),
        ("/v1/hooks/form.submitted", None, "{}", "ingest token"),
        (
            "/v1/hooks/form.submitted",
            Some("wrong"),
            "{}",
            "ingest token",
        ),
    ];
    for (path, token, body, reason) in cases {
        let (status, answer) = served
            .send(
                Method::POST,
                path,
                token,
                Some(Body::Text(body.into())),
                &seen,
            )
            .await;
        let want = if token == Some(INGEST) { 400 } else { 401 };
        assert_eq!(status, want, "{path} {body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(reason),
            "{path} {body}: {answer}"
        );
    }
    let deep = format!("{}1{}", "{\"a\":".repeat(70), "}".repeat(70));
    let (status, answer) = served
        .send(
            Method::POST,
            "/v1/hooks/form.submitted",
            Some(INGEST),
            Some(Body::Text(deep)),
            &seen,
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let r = served
        .http()
        .post(served.url("/v1/hooks/form.submitted"))
        .bearer_auth(INGEST)
        .header("idempotency-key", "k".repeat(300))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("idempotency-key"));

    // An event's history needs a token; an unknown one is 404.
    let (status, _) = served
        .send(Method::GET, "/v1/events/form-77", None, None, &seen)
        .await;
    assert_eq!(status, 401);
    let (status, answer) = served
        .send(Method::GET, "/v1/events/nope", Some(INGEST), None, &seen)
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = served
        .send(
            Method::GET,
            &format!("/v1/events/{}", "e".repeat(300)),
            Some(INGEST),
            None,
            &seen,
        )
        .await;
    assert_eq!(status, 400, "{answer}");
}

/// Preview: the exact request of a push for a given event or a sample
/// one, with tokens as placeholders; bad input 400, unknown push 404.
#[tokio::test(flavor = "multi_thread")]
async fn preview_shows_the_request_with_secrets_masked() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let graph = GraphMock::start().await;
    let world = World::new(&[
        ("accounts.yaml", &account_yaml(&identity)),
        ("mail.yaml", &mail_push(&graph)),
    ]);
    let served = world.start(&[]).await;
    let seen = Seen::default();
    identity.seed_refresh_token("rt-prev", MAIL_SCOPE);
    let (status, _) = served
        .send(
            Method::PUT,
            "/v1/accounts/ms_mail/tokens",
            Some(&served.admin),
            Some(Body::Text(json!({"access_token": "PREVIEW-SECRET-AT", "refresh_token": "rt-prev", "expires_in": 3600}).to_string())),
            &seen,
        )
        .await;
    assert_eq!(status, 200);

    let (status, preview) = served
        .send(
            Method::POST,
            "/v1/pushes/mail/preview",
            Some(INGEST),
            Some(Body::Json(json!({"event": event("prev-1")}))),
            &seen,
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["sample_event"], false);
    let request = &preview["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(
        request["url"],
        format!("{}/v1.0/me/sendMail", graph.base_url())
    );
    assert_eq!(
        request["headers"]["Authorization"], "Bearer ‹oauth.ms_mail›",
        "{request}"
    );
    assert!(
        preview["text"].as_str().unwrap().contains("Call prev-1"),
        "{preview}"
    );
    assert!(!preview.to_string().contains("PREVIEW-SECRET-AT"));

    // No event: a sample with the fields the push uses.
    let (status, sample) = served
        .send(
            Method::POST,
            "/v1/pushes/mail/preview",
            Some(INGEST),
            None,
            &seen,
        )
        .await;
    assert_eq!(status, 200, "{sample}");
    assert_eq!(sample["sample_event"], true);
    assert!(
        sample["text"]
            .as_str()
            .unwrap()
            .contains("hello ‹event.caller›"),
        "{sample}"
    );
    assert!(graph.requests().is_empty(), "a preview sends nothing");

    for (path, body, want, reason) in [
        ("/v1/pushes/mial/preview", "{}", 404, "did you mean `mail`"),
        ("/v1/pushes/mail/preview", "{\"evnt\": {}}", 400, "unknown field `evnt`"),
        ("/v1/pushes/mail/preview", "{\"event\": {\"id\": \"\", \"type\": \"call.ended\", \"time\": \"2026-01-01T00:00:00Z\"}}", 400, "`id` must not be empty"),
        ("/v1/pushes/mail/preview", "{\"now\": \"yesterday\"}", 400, "now"),
    ] {
        let (status, answer) = served
            .send(Method::POST, path, Some(INGEST), Some(Body::Text(body.into())), &seen)
            .await;
        assert_eq!(status, want, "{path} {body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(reason), "{path} {body}: {answer}");
    }
    let (status, _) = served
        .send(Method::POST, "/v1/pushes/mail/preview", None, None, &seen)
        .await;
    assert_eq!(status, 401);
    assert!(!served.log_text().contains("PREVIEW-SECRET-AT"));
}

/// `oauth login` while the daemon runs: the CLI prints the daemon's sign-in
/// URL, the browser goes through the provider to the daemon's callback, and
/// the CLI ends once the daemon has stored the tokens.
#[tokio::test(flavor = "multi_thread")]
async fn oauth_login_through_a_running_daemon_waits_for_its_callback() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let world = World::new(&[("accounts.yaml", &account_yaml(&identity))]);
    let served = world.start(&[]).await;
    let mut cmd = world.command();
    cmd.args(["oauth", "login", "ms_mail"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = KillOnDrop(Some(cmd.spawn().expect("login runs")));
    let child = guard.0.as_mut().unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read stderr on a thread until the authorize URL shows.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let begin = format!("http://localhost:{}/oauth/begin?id=", served.port());
    let link = poll(
        "the sign-in link on stderr",
        Duration::from_secs(15),
        || {
            let found = rx.try_iter().find(|l| l.starts_with(&begin));
            async move { found }
        },
    )
    .await;
    let (url, cookie) = crate::harden::open_begin_link(served.http(), &link).await;
    assert!(url.as_str().starts_with(&identity.authorize_url()), "{url}");
    assert!(
        url.as_str()
            .contains(&format!("localhost%3A{}%2Foauth%2Fcallback", served.port())),
        "{url}"
    );
    let r = served.http().get(url.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let back = r.headers()["location"]
        .to_str()
        .unwrap()
        .replace("localhost", "127.0.0.1");
    let r = served
        .http()
        .get(&back)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = poll("the login to end", Duration::from_secs(15), || {
        let s = child.try_wait().expect("try_wait");
        async move { s }
    })
    .await;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("signed in: stored tokens of `ms_mail` in the running daemon"),
        "{out}"
    );
}

/// A child process killed when the test ends, whatever happens.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
