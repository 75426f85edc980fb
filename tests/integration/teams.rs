//! The `teams_message` target through the real binary (`pushwerk send`,
//! `dry-run`, and the daemon) against a Graph Teams mock that behaves like
//! the real endpoint: it checks the bearer token, the team, channel and
//! chat ids in the path and the chatMessage body, answers 201 with the
//! created chatMessage, and can be scripted to answer 429 (Retry-After),
//! 401 or 403 as Graph does.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use pushwerk_testkit::identity::{IdentityMock, MockConfig};

const TEAM: &str = "fbe2bf47-16c8-47cf-b4a5-4b9b187c508b";
const CHANNEL: &str = "19:4a95f7d8db4c4e7fae857bcebe0623e6@thread.tacv2";
const CHAT: &str = "19:2da4c29f6d7041eca70b638b43d45437@thread.v2";
const SCOPE: &str = "offline_access https://graph.microsoft.com/ChannelMessage.Send https://graph.microsoft.com/ChatMessage.Send";
/// Tokens the identity mock issues for Graph scopes start with this.
const GRAPH_PREFIX: &str = "mock-at.graph.microsoft.com.";
const INGEST: &str = "teams-ingest-token-0123456789";

// ---------------------------------------------------------------------------
// The Graph Teams mock

/// One request the mock received, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    authorization: Option<String>,
    body: Value,
    status: u16,
}

/// A scripted answer, used once before the normal handling.
#[derive(Clone, Debug)]
struct Scripted {
    status: u16,
    retry_after: Option<u64>,
    code: &'static str,
    message: &'static str,
}

#[derive(Default)]
struct TeamsState {
    received: Vec<Received>,
    script: VecDeque<Scripted>,
    next_id: u64,
}

#[derive(Clone)]
struct TeamsMock {
    state: Arc<Mutex<TeamsState>>,
    base: String,
}

fn graph_error(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> Response {
    let mut r = (
        StatusCode::from_u16(status).expect("status"),
        [("request-id", "0b7f5a1c-teams-mock")],
        axum::Json(json!({ "error": { "code": code, "message": message, "innerError": { "request-id": "0b7f5a1c-teams-mock" } } })),
    )
        .into_response();
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert("retry-after", s.to_string().parse().expect("header"));
    }
    r
}

impl TeamsMock {
    async fn start() -> TeamsMock {
        let state = Arc::new(Mutex::new(TeamsState {
            next_id: 1_616_990_032_035,
            ..TeamsState::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let mock = TeamsMock { state, base };
        let app = Router::new()
            .route(
                "/v1.0/teams/{team}/channels/{channel}/messages",
                post(
                    |State(m): State<TeamsMock>,
                     UrlPath((team, channel)): UrlPath<(String, String)>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        m.handle(Dest::Channel { team, channel }, &headers, &body)
                    },
                ),
            )
            .route(
                "/v1.0/chats/{chat}/messages",
                post(
                    |State(m): State<TeamsMock>,
                     UrlPath(chat): UrlPath<String>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        m.handle(Dest::Chat(chat), &headers, &body)
                    },
                ),
            )
            .with_state(mock.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        mock
    }

    fn script(&self, answers: &[Scripted]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().cloned());
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn handle(&self, dest: Dest, headers: &HeaderMap, body: &[u8]) -> Response {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let path = match &dest {
            Dest::Channel { team, channel } => format!("/teams/{team}/channels/{channel}"),
            Dest::Chat(chat) => format!("/chats/{chat}"),
        };
        let response = self.answer(&dest, authorization.as_deref(), &parsed);
        self.state.lock().unwrap().received.push(Received {
            path,
            authorization,
            body: parsed,
            status: response.status().as_u16(),
        });
        response
    }

    fn answer(&self, dest: &Dest, authorization: Option<&str>, body: &Value) -> Response {
        // Graph checks the token first: a missing or foreign one is 401.
        let token_ok = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| t.starts_with(GRAPH_PREFIX));
        if !token_ok {
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                None,
            );
        }
        if let Some(s) = self.state.lock().unwrap().script.pop_front() {
            return graph_error(s.status, s.code, s.message, s.retry_after);
        }
        match dest {
            Dest::Channel { team, channel } if team != TEAM || channel != CHANNEL => {
                return graph_error(404, "NotFound", "Team or channel not found.", None)
            }
            Dest::Chat(chat) if chat != CHAT => {
                return graph_error(404, "NotFound", "Chat not found.", None)
            }
            _ => {}
        }
        // The chatMessage body: known properties only, a body with a
        // content type of text or html and some content.
        let Some(obj) = body.as_object() else {
            return graph_error(
                400,
                "BadRequest",
                "Empty Payload. JSON content expected.",
                None,
            );
        };
        if let Some(unknown) = obj
            .keys()
            .find(|k| !["body", "subject", "importance"].contains(&k.as_str()))
        {
            return graph_error(
                400,
                "BadRequest",
                &format!("Invalid property '{unknown}'."),
                None,
            );
        }
        let content_type = body["body"]["contentType"].as_str().unwrap_or_default();
        let content = body["body"]["content"].as_str().unwrap_or_default();
        if !["text", "html"].contains(&content_type) || content.is_empty() {
            return graph_error(400, "BadRequest", "Missing body content.", None);
        }
        if matches!(dest, Dest::Chat(_)) && body.get("subject").is_some() {
            return graph_error(
                400,
                "BadRequest",
                "Subject is not supported in chats.",
                None,
            );
        }
        let id = {
            let mut st = self.state.lock().unwrap();
            st.next_id += 1;
            st.next_id.to_string()
        };
        let mut message = json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#chatMessage",
            "id": id,
            "replyToId": null,
            "etag": id,
            "messageType": "message",
            "createdDateTime": chrono::Utc::now().to_rfc3339(),
            "subject": body.get("subject").cloned().unwrap_or(Value::Null),
            "importance": body.get("importance").cloned().unwrap_or(json!("normal")),
            "body": body["body"].clone(),
        });
        match dest {
            Dest::Channel { team, channel } => {
                message["channelIdentity"] = json!({ "teamId": team, "channelId": channel })
            }
            Dest::Chat(chat) => message["chatId"] = json!(chat),
        }
        (StatusCode::CREATED, axum::Json(message)).into_response()
    }
}

enum Dest {
    Channel { team: String, channel: String },
    Chat(String),
}

// ---------------------------------------------------------------------------
// A folder, a data directory, the binary

struct World {
    tmp: tempfile::TempDir,
    identity: IdentityMock,
    teams: TeamsMock,
}

fn channel_push() -> String {
    format!(
        "name: teams\non: call.ended\nteams_message:\n  account: ms_teams\n  team: {TEAM}\n  channel: \"{CHANNEL}\"\n  subject: Call from << event.caller >>\n  html: \"<p>Caller: <b><< event.caller >></b></p>\"\n  importance: high\n"
    )
}

fn chat_push() -> String {
    format!(
        "name: teams-chat\non: call.missed\nteams_message:\n  account: ms_teams\n  chat: \"{CHAT}\"\n  text: Missed call from << event.caller >>\n"
    )
}

impl World {
    /// The account `ms_teams` at a fresh identity mock (a refresh token
    /// imported: the first send refreshes), the two pushes, the mock.
    async fn new() -> World {
        let identity = IdentityMock::start(MockConfig::default()).await;
        let teams = TeamsMock::start().await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let pushes = tmp.path().join("pushes");
        std::fs::create_dir_all(&pushes).unwrap();
        std::fs::create_dir_all(tmp.path().join("data")).unwrap();
        let account = format!(
            "kind: oauth_account\nname: ms_teams\ntoken_url: {}\nclient_id: {}\nclient_secret: mock-secret\nscope: {SCOPE}\n",
            identity.token_url(),
            MockConfig::default().client_id
        );
        std::fs::write(pushes.join("accounts.yaml"), account).unwrap();
        std::fs::write(
            pushes.join("teams.yaml"),
            format!("{}---\n{}", channel_push(), chat_push()),
        )
        .unwrap();
        let world = World {
            tmp,
            identity,
            teams,
        };
        world.identity.seed_refresh_token("rt-ms_teams", SCOPE);
        std::fs::write(world.tmp.path().join("rt.txt"), "rt-ms_teams").unwrap();
        let rt = world.tmp.path().join("rt.txt");
        let out = world
            .pushwerk(&[
                "oauth",
                "import",
                "ms_teams",
                "--file",
                rt.to_str().unwrap(),
            ])
            .await;
        assert!(out.status.success(), "oauth import: {}", text(&out));
        world
    }

    fn event(&self, id: &str, event_type: &str, caller: &str) -> PathBuf {
        let event = json!({
            "id": id, "type": event_type, "time": chrono::Utc::now().to_rfc3339(),
            "data": { "caller": caller }
        });
        let path = self.tmp.path().join(format!("{id}.json"));
        std::fs::write(&path, event.to_string()).unwrap();
        path
    }

    fn command(&self) -> Command {
        let mut cmd = crate::util::pushwerk_command();
        cmd.arg("--dir")
            .arg(self.tmp.path().join("pushes"))
            .arg("--data")
            .arg(self.tmp.path().join("data"));
        for name in [
            "PUSHWERK_DATA",
            "PUSHWERK_LISTEN",
            "PUSHWERK_INGEST_TOKEN",
            "PUSHWERK_SERVER",
            "PUSHWERK_KEY",
            "PUSHWERK_KEY_FILE",
            "PUSHWERK_LOG",
            "PUSHWERK_BING_ADS_URL",
            "RUST_LOG",
        ] {
            cmd.env_remove(name);
        }
        cmd.env("PUSHWERK_GRAPH_URL", &self.teams.base);
        cmd
    }

    async fn pushwerk(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args).stdin(Stdio::null());
        tokio::task::spawn_blocking(move || cmd.output().expect("pushwerk runs"))
            .await
            .expect("join")
    }

    async fn send(&self, push: &str, event: &Path) -> Output {
        let event = event.to_str().unwrap();
        self.pushwerk(&["send", push, "--event", event, "--attempts", "3"])
            .await
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------
// send and dry-run

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_posts_a_channel_message_and_reports_its_id() {
    let w = World::new().await;
    let out = w
        .send(
            "teams",
            &w.event("evt-1", "call.ended", "Erika <Mustermann>"),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let received = w.teams.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let r = &received[0];
    assert_eq!(r.path, format!("/teams/{TEAM}/channels/{CHANNEL}"));
    assert_eq!(r.status, 201);
    let issued = w.identity.issued_access_tokens();
    assert_eq!(
        r.authorization.as_deref(),
        Some(format!("Bearer {}", issued[0]).as_str()),
        "the refreshed token of ms_teams"
    );
    assert_eq!(
        r.body,
        json!({
            "subject": "Call from Erika <Mustermann>",
            "body": { "contentType": "html", "content": "<p>Caller: <b>Erika &lt;Mustermann&gt;</b></p>" },
            "importance": "high"
        }),
        "event values are HTML-escaped in an HTML message"
    );
    assert!(
        text(&out).contains("delivered (201) [1616990032036]"),
        "the chatMessage id is the delivery's reference: {}",
        text(&out)
    );
    assert!(!text(&out).contains(&issued[0]), "no token in the output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_request_with_a_placeholder_token_and_sends_nothing() {
    let w = World::new().await;
    let event = w.event("evt-dry", "call.missed", "+49 30 1234");
    let out = w
        .pushwerk(&["dry-run", "teams-chat", "--event", event.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains(&format!("POST {}/v1.0/chats/{CHAT}/messages", w.teams.base)),
        "{shown}"
    );
    assert!(shown.contains("Bearer ‹oauth.ms_teams›"), "{shown}");
    assert!(
        shown.contains(r#""contentType":"text""#) && shown.contains("Missed call from +49 30 1234"),
        "{shown}"
    );
    assert!(w.teams.received().is_empty());
    assert_eq!(
        w.identity.token_request_count(),
        0,
        "a dry-run refreshes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_teams_message_without_a_destination_at_its_position() {
    let dir = crate::util::folder(&[(
        "pushes/p.yaml",
        "kind: oauth_account\nname: ms_teams\ntoken_url: https://login.microsoftonline.com/common/oauth2/v2.0/token\nclient_id: x\nscope: ChannelMessage.Send\n---\nname: t\non: call.ended\nteams_message:\n  account: ms_teams\n  team: abc\n  text: hi\n",
    )]);
    let out = crate::util::pushwerk_in(dir.path(), &["check"], &[]);
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(
        shown.contains("p.yaml:10:3:") && shown.contains("`team` needs `channel`"),
        "{shown}"
    );
}

// ---------------------------------------------------------------------------
// Graph's error semantics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_after_graphs_wait_and_then_delivered() {
    let w = World::new().await;
    w.teams.script(&[Scripted {
        status: 429,
        retry_after: Some(1),
        code: "TooManyRequests",
        message: "Too many requests.",
    }]);
    let out = w
        .send("teams", &w.event("evt-429", "call.ended", "x"))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let statuses: Vec<u16> = w.teams.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 201]);
    assert!(
        text(&out).contains("attempt 1")
            && text(&out).contains("retry in 1s (429): TooManyRequests"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_refreshed_once_and_the_message_sent_again() {
    let w = World::new().await;
    // The first token is taken; then Graph refuses it once (revoked).
    w.teams.script(&[Scripted {
        status: 401,
        retry_after: None,
        code: "InvalidAuthenticationToken",
        message: "Lifetime validation failed, the token is expired.",
    }]);
    let out = w
        .send("teams", &w.event("evt-401", "call.ended", "x"))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let received = w.teams.received();
    assert_eq!(
        received.iter().map(|r| r.status).collect::<Vec<_>>(),
        [401, 201]
    );
    let issued = w.identity.issued_access_tokens();
    assert_eq!(
        issued.len(),
        2,
        "the first send's refresh, then exactly one more"
    );
    assert_eq!(
        received[1].authorization.as_deref(),
        Some(format!("Bearer {}", issued[1]).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_fails_at_once_with_graphs_code_and_message() {
    let w = World::new().await;
    w.teams.script(&[Scripted {
        status: 403,
        retry_after: None,
        code: "Forbidden",
        message:
            "Missing role permissions on the request. API requires one of 'ChannelMessage.Send'.",
    }]);
    let out = w
        .send("teams", &w.event("evt-403", "call.ended", "x"))
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("failed (403) Forbidden: Missing role permissions on the request. API requires one of 'ChannelMessage.Send'."),
        "{}",
        text(&out)
    );
    assert_eq!(w.teams.received().len(), 1, "a 403 is not retried");
}

// ---------------------------------------------------------------------------
// The daemon

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_an_ingested_event_to_a_chat_and_logs_the_message_id() {
    let w = World::new().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = std::fs::File::create(w.tmp.path().join("serve.log")).unwrap();
    let mut cmd = w.command();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("PUSHWERK_INGEST_TOKEN", INGEST)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let _served = Served(cmd.spawn().expect("serve starts"));
    let base = format!("http://127.0.0.1:{port}");
    let http = pushwerk::net::http_client().build().unwrap();
    let log_text = || std::fs::read_to_string(w.tmp.path().join("serve.log")).unwrap_or_default();
    let mut ready = false;
    for _ in 0..400 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "the daemon did not become ready:\n{}", log_text());
    let event = json!({
        "id": "evt-daemon", "type": "call.missed", "time": chrono::Utc::now().to_rfc3339(),
        "data": { "caller": "+49 30 999" }
    });
    let r = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(INGEST)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut delivered = None;
    for _ in 0..400 {
        let answer: Value = http
            .get(format!("{base}/v1/deliveries?push=teams-chat"))
            .bearer_auth(INGEST)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(d) = answer["deliveries"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["status"] == "delivered"))
        {
            delivered = Some(d.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let delivered =
        delivered.unwrap_or_else(|| panic!("not delivered within 10 s:\n{}", log_text()));
    let received = w.teams.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, format!("/chats/{CHAT}"));
    assert_eq!(
        received[0].body,
        json!({ "body": { "contentType": "text", "content": "Missed call from +49 30 999" } })
    );
    assert_eq!(delivered["code"], 201);
    assert_eq!(delivered["reference"], "1616990032036");
    assert_eq!(delivered["event_id"], "evt-daemon");
}
