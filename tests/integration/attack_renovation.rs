//! Attacks on what the renovation of issue #12 changed (one pipeline, one
//! retry rule, the `teams_message` target), through the real binary
//! against a scripted Graph mock on loopback. Each test is a defect that
//! was found and fixed, or a guarantee the attack checked and a user
//! relies on.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;

use pushwerk_testkit::identity::{IdentityMock, MockConfig};

const SCOPE: &str = "offline_access https://graph.microsoft.com/ChannelMessage.Send";

/// A Graph mock answering every POST: the scripted statuses first (with
/// Graph's error body), then 201 with a created chatMessage. It records
/// the path of every request.
#[derive(Clone, Default)]
struct Graph {
    script: Arc<Mutex<VecDeque<u16>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Graph {
    async fn start(script: &[u16]) -> (Graph, String) {
        let graph = Graph::default();
        graph.script.lock().unwrap().extend(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new()
            .fallback(
                |State(g): State<Graph>, uri: Uri, _body: Bytes| async move { g.answer(&uri) },
            )
            .with_state(graph.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (graph, base)
    }

    fn answer(&self, uri: &Uri) -> Response {
        let n = {
            let mut paths = self.paths.lock().unwrap();
            paths.push(uri.path().to_owned());
            paths.len()
        };
        match self.script.lock().unwrap().pop_front() {
            Some(status) => (
                StatusCode::from_u16(status).expect("status"),
                [("request-id", format!("req-{n}"))],
                axum::Json(json!({ "error": { "code": "InternalServerError", "message": "Failed to process request." } })),
            )
                .into_response(),
            None => (
                StatusCode::CREATED,
                axum::Json(json!({ "id": format!("{}", 1_700_000_000_000u64 + n as u64), "messageType": "message" })),
            )
                .into_response(),
        }
    }

    fn posts(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

/// A folder with the account `ms_teams` (its refresh token imported, at a
/// fresh identity mock) and a channel push `teams` for `call.ended`.
struct World {
    tmp: tempfile::TempDir,
    _identity: IdentityMock,
    graph_url: String,
}

impl World {
    async fn new(graph_url: String) -> World {
        let identity = IdentityMock::start(MockConfig::default()).await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let pushes = tmp.path().join("pushes");
        std::fs::create_dir_all(&pushes).unwrap();
        std::fs::write(
            pushes.join("accounts.yaml"),
            format!(
                "kind: oauth_account\nname: ms_teams\ntoken_url: {}\nclient_id: {}\nclient_secret: mock-secret\nscope: {SCOPE}\n",
                identity.token_url(),
                MockConfig::default().client_id
            ),
        )
        .unwrap();
        std::fs::write(
            pushes.join("teams.yaml"),
            "name: teams\non: call.ended\nteams_message:\n  account: ms_teams\n  team: fbe2bf47-16c8-47cf-b4a5-4b9b187c508b\n  channel: \"19:4a95f7d8db4c4e7fae857bcebe0623e6@thread.tacv2\"\n  text: Call from << event.caller >>\n",
        )
        .unwrap();
        identity.seed_refresh_token("rt-ms_teams", SCOPE);
        std::fs::write(tmp.path().join("rt.txt"), "rt-ms_teams").unwrap();
        let world = World {
            tmp,
            _identity: identity,
            graph_url,
        };
        let rt = world.path("rt.txt");
        let out = world
            .run(&[
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

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn event(&self, id: &str) -> PathBuf {
        let event = json!({
            "id": id, "type": "call.ended", "time": chrono::Utc::now().to_rfc3339(),
            "data": { "caller": "Erika" }
        });
        let path = self.path(&format!("{id}.json"));
        std::fs::write(&path, event.to_string()).unwrap();
        path
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd: Command = crate::util::pushwerk_command();
        cmd.arg("--dir")
            .arg(self.path("pushes"))
            .arg("--data")
            .arg(self.path("data"));
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
        cmd.env("PUSHWERK_GRAPH_URL", &self.graph_url)
            .args(args)
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || cmd.output().expect("pushwerk runs"))
            .await
            .expect("join")
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A 500 or 502 from Graph may come after the message was posted (the
/// reference's "5xx other than 503/504 = outcome unknown"): posting it
/// again would put it in the channel twice. It fails, saying why, and is
/// posted once; a 503 is still retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_500_is_not_posted_twice_but_a_503_is_retried() {
    for status in [500, 502] {
        let (graph, url) = Graph::start(&[status]).await;
        let w = World::new(url).await;
        let event = w.event("evt-500");
        let out = w
            .run(&[
                "send",
                "teams",
                "--event",
                event.to_str().unwrap(),
                "--attempts",
                "3",
            ])
            .await;
        assert_eq!(
            graph.posts().len(),
            1,
            "a {status} is not resent: {}",
            text(&out)
        );
        assert_eq!(out.status.code(), Some(1), "failed: {}", text(&out));
        assert!(
            text(&out).contains("outcome is unknown"),
            "the reason says the message may have been posted: {}",
            text(&out)
        );
    }

    let (graph, url) = Graph::start(&[503]).await;
    let w = World::new(url).await;
    let event = w.event("evt-503");
    let out = w
        .run(&[
            "send",
            "teams",
            "--event",
            event.to_str().unwrap(),
            "--attempts",
            "3",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(graph.posts().len(), 2, "503 then 201: {}", text(&out));
}

/// A new user copies the channel id from Teams' "Get link to channel",
/// where it is URL-encoded. Encoded again in the path, every post would
/// get Graph's 404; `check` says so at the id's line, with the fix.
#[test]
fn check_warns_of_a_teams_id_copied_url_encoded_from_a_link() {
    let dir = crate::util::folder(&[
        (
            "accounts.yaml",
            &format!("kind: oauth_account\nname: ms_teams\ntoken_url: https://login.microsoftonline.com/common/oauth2/v2.0/token\nclient_id: c\nclient_secret: ${{env:ATTACK_RENOVATION_UNSET}}\nscope: {SCOPE}\n"),
        ),
        (
            "teams.yaml",
            "name: teams\non: call.ended\nteams_message:\n  account: ms_teams\n  team: fbe2bf47-16c8-47cf-b4a5-4b9b187c508b\n  channel: \"19%3a4a95f7d8db4c4e7fae857bcebe0623e6%40thread.tacv2\"\n  text: Call from << event.caller >>\n",
        ),
    ]);
    let out = crate::util::pushwerk_in(dir.path(), &["check", "."], &[]);
    let all = text(&out);
    let line = all
        .lines()
        .find(|l| l.contains("looks URL-encoded"))
        .unwrap_or_else(|| panic!("a warning about the encoded id: {all}"));
    assert!(
        line.starts_with("./teams.yaml:6:") || line.starts_with("teams.yaml:6:"),
        "at the channel's line: {line}"
    );
    assert!(line.contains("`19:…@thread.tacv2`"), "{line}");
}

/// A password written into a base URL (`http://user:pw@host`) is for the
/// request, not for the terminal: `send` names the URL without userinfo,
/// query or fragment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_does_not_print_a_password_written_into_a_base_url() {
    let (graph, url) = Graph::start(&[]).await;
    let with_password = url.replacen("http://", "http://user:SECRETPW@", 1);
    let w = World::new(with_password).await;
    let event = w.event("evt-userinfo");
    let out = w
        .run(&["send", "teams", "--event", event.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(graph.posts().len(), 1, "{}", text(&out));
    assert!(!text(&out).contains("SECRETPW"), "{}", text(&out));
    assert!(text(&out).contains("/v1.0/teams/"), "{}", text(&out));
}

/// A base URL is joined with the service's path: with a query or a
/// fragment in it every request would go to the wrong path, so `check`
/// refuses it at its line.
#[test]
fn check_refuses_a_base_url_with_a_query_or_fragment() {
    for base in ["https://graph.example/?key=1", "https://graph.example/#x"] {
        let dir = crate::util::folder(&[
            (
                "accounts.yaml",
                &format!("kind: oauth_account\nname: ms_teams\ntoken_url: https://login.microsoftonline.com/common/oauth2/v2.0/token\nclient_id: c\nclient_secret: ${{env:ATTACK_RENOVATION_UNSET}}\nscope: {SCOPE}\n"),
            ),
            (
                "teams.yaml",
                &format!("name: teams\non: call.ended\nteams_message:\n  account: ms_teams\n  chat: \"19:abc@unq.gbl.spaces\"\n  text: hi\n  base_url: \"{base}\"\n"),
            ),
        ]);
        let out = crate::util::pushwerk_in(dir.path(), &["check", "."], &[]);
        let all = text(&out);
        assert!(!out.status.success(), "{all}");
        let line = all
            .lines()
            .find(|l| l.contains("cannot have a query"))
            .unwrap_or_else(|| panic!("an error about the base URL: {all}"));
        assert!(
            line.contains("teams.yaml:7:"),
            "at the base_url line: {line}"
        );
    }
}
