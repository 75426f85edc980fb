//! Push data an attacker controls (issue #10): event values that try to
//! read files outside the push folder, split mail headers, run script in an
//! HTML mail or move an HTTP request to another path or host. Every test
//! goes through the real binary (`dry-run`, `check`, `serve`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::util::{folder, pushwerk_in, stderr, stdout, ACCOUNT_MS_MAIL, NOW};
use pushwerk_testkit::smtp::SmtpMock;

/// Writes `data` as a `call.ended` event to `dir/name`; returns the path.
fn event_file(dir: &Path, name: &str, data: Value) -> String {
    let path = dir.join(name);
    let event = json!({"id": "evt-hostile", "type": "call.ended", "time": "2026-11-24T14:03:11Z", "data": data});
    std::fs::write(&path, event.to_string()).expect("write event");
    path.to_str().expect("UTF-8 path").to_owned()
}

fn dry_run(dir: &Path, push: &str, event: &str) -> std::process::Output {
    pushwerk_in(dir, &["dry-run", push, "--event", event, "--now", NOW], &[])
}

const ATTACHMENT_PUSH: &str = "name: doc-mail
on: call.ended
graph_mail:
  account: ms_mail
  to: [sales@example.com]
  subject: Your document
  text: attached
  attachments:
    - name: doc.txt
      path: \"files/<< event.doc >>\"
";

// ---------------------------------------------------------------------------
// #10.1 attachment paths

#[test]
fn attachment_paths_cannot_leave_their_folder_and_a_file_inside_is_attached() {
    let dir = folder(&[
        ("pushes/accounts.yaml", ACCOUNT_MS_MAIL),
        ("pushes/doc-mail.yaml", ATTACHMENT_PUSH),
        ("pushes/files/ok.txt", "legitimate attachment\n"),
        ("pushes/secret.txt", "SECRET-BESIDE-THE-PUSH\n"),
        ("outside.txt", "OUTSIDE-THE-FOLDER\n"),
    ]);
    std::os::unix::fs::symlink(
        dir.path().join("outside.txt"),
        dir.path().join("pushes/files/link.txt"),
    )
    .expect("symlink");
    let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);

    std::fs::write(
        dir.path().join("pushes/doc-any.yaml"),
        ATTACHMENT_PUSH
            .replace("doc-mail", "doc-any")
            .replace("files/<< event.doc >>", "<< event.doc >>"),
    )
    .expect("write");
    let hostile = [
        ("doc-mail", "../../../../etc/passwd", "files/"),
        ("doc-mail", "../secret.txt", "files/"),
        ("doc-mail", "../../outside.txt", "files/"),
        ("doc-mail", "link.txt", "files/"),
        ("doc-mail", "sub/../../secret.txt", "files/"),
    ];
    // A path starting with a parameter has no folder to stay in: `check`
    // refuses the push (attack_followup), so no event reaches a file.
    let out = crate::util::pushwerk_in(dir.path(), &["check"], &[]);
    assert!(
        stdout(&out).contains("doc-any.yaml") && stdout(&out).contains("fixed folder")
            || stderr(&out).contains("doc-any.yaml") && stderr(&out).contains("fixed folder"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    for (push, doc, folder) in hostile {
        let ev = event_file(dir.path(), "ev.json", json!({ "doc": doc }));
        let out = dry_run(dir.path(), push, &ev);
        let (so, se) = (stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{doc}: {so}{se}");
        assert!(
            se.contains("graph_mail.attachments[0].path")
                && se.contains(&format!("leaves `{folder}`")),
            "{doc}: the error names the field and the rule: {se}"
        );
        for content in [
            &passwd[..],
            b"SECRET-BESIDE-THE-PUSH\n",
            b"OUTSIDE-THE-FOLDER\n",
        ] {
            if !content.is_empty() {
                assert!(!so.contains(&b64(content)), "{doc}: file content printed");
            }
        }
        assert!(!so.contains("contentBytes"), "{doc}: {so}");
    }

    let ev = event_file(dir.path(), "ev.json", json!({ "doc": "ok.txt" }));
    let out = dry_run(dir.path(), "doc-mail", &ev);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&b64(b"legitimate attachment\n")),
        "{}",
        stdout(&out)
    );
}

// ---------------------------------------------------------------------------
// #10.4 control characters in mail headers

fn smtp_push(port: u16) -> String {
    format!(
        "name: note
on: call.ended
smtp:
  host: 127.0.0.1
  port: {port}
  tls: none
  from: \"pushwerk <office@example.com>\"
  to: [\"<< event.to >>\"]
  subject: \"<< event.subject | default('Call') >>\"
  text: hello
"
    )
}

#[test]
fn line_breaks_in_mail_headers_are_a_clear_dry_run_error_not_a_panic() {
    let dir = folder(&[
        ("pushes/note.yaml", &smtp_push(2525)),
        ("pushes/accounts.yaml", ACCOUNT_MS_MAIL),
        (
            "pushes/graph.yaml",
            "name: gnote\non: call.ended\ngraph_mail:\n  account: ms_mail\n  to: [\"<< event.to >>\"]\n  subject: \"<< event.subject | default('Call') >>\"\n  text: hello\n",
        ),
    ]);
    let cases = [
        (
            "note",
            json!({"to": "Evil\r\nBcc: x <a@example.com>"}),
            "smtp.to[0]",
        ),
        (
            "note",
            json!({"to": "a@example.com", "subject": "Hi\u{0}\u{1b}[2J"}),
            "smtp.subject",
        ),
        (
            "gnote",
            json!({"to": "Evil\nName <a@example.com>"}),
            "graph_mail.to[0]",
        ),
        (
            "gnote",
            json!({"to": "a@example.com", "subject": "Hi\u{7}"}),
            "graph_mail.subject",
        ),
    ];
    for (push, data, field) in cases {
        let ev = event_file(dir.path(), "ev.json", data.clone());
        let out = dry_run(dir.path(), push, &ev);
        let se = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{push} {data}: {se}");
        assert!(
            se.contains(field) && se.contains("control character"),
            "{push} {data}: {se}"
        );
        assert!(!se.contains("panicked"), "{se}");
    }
}

/// A running `pushwerk serve`, killed when dropped.
struct Daemon {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const INGEST_TOKEN: &str = "hostile-test-ingest-token";

impl Daemon {
    async fn start(root: &Path) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = root.join("serve.log");
        let mut cmd = crate::util::pushwerk_command();
        cmd.current_dir(root)
            .args(["--dir", "pushes", "--data", "data", "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("PUSHWERK_INGEST_TOKEN", INGEST_TOKEN)
            .env_remove("PUSHWERK_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        let daemon = Daemon {
            child: cmd.spawn().expect("serve starts"),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let http = pushwerk::net::http_client().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", daemon.base)).send().await {
                if r.status() == 200 {
                    return daemon;
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready: {}",
                std::fs::read_to_string(&daemon.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let mut r = pushwerk::net::http_client()
            .build()
            .unwrap()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(INGEST_TOKEN);
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().await.expect("request");
        let status = r.status();
        let v: Value = r.json().await.expect("JSON answer");
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_breaks_in_smtp_names_are_dead_lettered_and_do_not_block_the_server() {
    let smtp = SmtpMock::start().await;
    let dir = folder(&[("pushes/note.yaml", &smtp_push(smtp.port()))]);
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    let daemon = Daemon::start(dir.path()).await;
    // More hostile events than the SMTP server's in-flight limit (8): a
    // panicking worker used to keep its slot for good.
    let mut events: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("bad-{i}"), "type": "call.ended", "time": "2026-11-24T14:03:11Z", "data": {"to": format!("Evil{i}\r\nBcc: x <a@example.com>")}}))
        .collect();
    events.push(json!({"id": "good", "type": "call.ended", "time": "2026-11-24T14:03:11Z", "data": {"to": "Sales <sales@example.com>", "subject": "Hi\r\nBcc: victim@example.com"}}));
    daemon
        .request(
            reqwest::Method::POST,
            "/v1/events",
            Some(&Value::Array(events)),
        )
        .await;

    assert!(
        smtp.wait_for_deliveries(1, Duration::from_secs(20)).await,
        "the good mail was not delivered: {}",
        std::fs::read_to_string(&daemon.log).unwrap_or_default()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let d = daemon
            .request(reqwest::Method::GET, "/v1/dead-letters?push=note", None)
            .await["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if d.len() >= 10 || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.len(), 10, "{dead:?}");
    for d in &dead {
        let reason = d["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("smtp.to[0]") && reason.contains("carriage return"),
            "{reason}"
        );
        assert_eq!(d["attempt"], 1, "not retried: {d}");
    }
    let delivered = smtp.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].rcpt_to, vec!["sales@example.com".to_owned()]);
    // The line break in the subject was folded: one header line, no `Bcc:`.
    let data = String::from_utf8_lossy(&delivered[0].data);
    assert!(
        data.contains("\r\nSubject: Hi Bcc: victim@example.com\r\n"),
        "{data}"
    );
    assert!(!data.contains("\nBcc:"), "{data}");
    let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");

    // `replay` of one dead letter says so in the singular.
    let job = dead[0]["job_id"].to_string();
    let out = pushwerk_in(
        dir.path(),
        &["replay", &job, "--server", &daemon.base],
        &[("PUSHWERK_INGEST_TOKEN", INGEST_TOKEN)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "replayed 1 dead letter");
}

// ---------------------------------------------------------------------------
// #10 HTML bodies and URLs

#[test]
fn html_bodies_escape_json_and_refuse_script_links() {
    let push = "name: page
on: call.ended
graph_mail:
  account: ms_mail
  to: [sales@example.com]
  subject: Lead
  html: '<a href=\"<< event.url >>\">site</a><script>var lead = << event.lead | json >>;</script>'
";
    let dir = folder(&[
        ("pushes/accounts.yaml", ACCOUNT_MS_MAIL),
        ("pushes/page.yaml", push),
    ]);
    let ev = event_file(
        dir.path(),
        "ev.json",
        json!({"url": "https://example.com/", "lead": {"name": "</script><img src=x onerror=alert(1)>"}}),
    );
    let out = dry_run(dir.path(), "page", &ev);
    let so = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let body: Value = serde_json::from_str(so.lines().last().unwrap()).expect("JSON body");
    let html = body["message"]["body"]["content"].as_str().unwrap();
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;&#x2f;script&gt;&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );

    for url in [
        "javascript:alert(document.cookie)",
        "JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    ] {
        let ev = event_file(
            dir.path(),
            "ev.json",
            json!({"url": url, "lead": {"name": "x"}}),
        );
        let out = dry_run(dir.path(), "page", &ev);
        let se = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{url}: {}", stdout(&out));
        assert!(
            se.contains("graph_mail.html") && se.contains("`href`") && se.contains("refused"),
            "{url}: {se}"
        );
    }
}

#[test]
fn the_path_filter_keeps_an_event_value_inside_one_path_segment() {
    let push = "name: hook
on: call.ended
http:
  url: \"https://api.example.com/v1/leads/<< event.id | path >>\"
";
    let dir = folder(&[("pushes/hook.yaml", push)]);
    let ev = event_file(dir.path(), "ev.json", json!({"id": "../../admin?x=1#frag"}));
    let out = dry_run(dir.path(), "hook", &ev);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = stdout(&out).lines().nth(1).unwrap_or_default().to_owned();
    assert_eq!(
        first,
        "POST https://api.example.com/v1/leads/..%2F..%2Fadmin%3Fx%3D1%23frag"
    );

    let ev = event_file(dir.path(), "ev.json", json!({"id": ".."}));
    let out = dry_run(dir.path(), "hook", &ev);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`.` or `..`"), "{}", stderr(&out));
}

#[test]
fn check_warns_when_a_template_decides_scheme_host_or_userinfo() {
    let url_push =
        |name: &str, url: &str| format!("name: {name}\non: call.ended\nhttp:\n  url: \"{url}\"\n");
    let dir = folder(&[
        (
            "pushes/a.yaml",
            &url_push("a", "https://<< event.host >>/hook"),
        ),
        (
            "pushes/b.yaml",
            &url_push("b", "https://api.example.com<< event.p >>"),
        ),
        (
            "pushes/c.yaml",
            &url_push("c", "https://<< event.user >>@api.example.com/"),
        ),
        ("pushes/d.yaml", &url_push("d", "<< event.url >>")),
        (
            "pushes/ok.yaml",
            &url_push("ok", "https://api.example.com/v1/<< event.id | path >>"),
        ),
    ]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    let se = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "warnings only: {se}");
    for file in ["a.yaml", "b.yaml", "c.yaml", "d.yaml"] {
        assert!(
            se.lines().any(|l| l.contains(file)
                && l.contains("warning")
                && l.contains("decides the scheme, host or user:password")),
            "{file}: {se}"
        );
    }
    assert!(!se.contains("ok.yaml"), "{se}");
    let out = pushwerk_in(dir.path(), &["check", "--deny-warnings"], &[]);
    assert_eq!(out.status.code(), Some(1));
}

// ---------------------------------------------------------------------------
// A real SMTP server (Python's aiosmtpd, installed by .ci/run)

/// Receives mail on `port` and writes each message's envelope and parsed
/// headers as `N.json` into the output folder; prints `ready` once listening.
const AIOSMTPD_SERVER: &str = r#"
import asyncio, json, os, sys, email
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]
count = 0

class Save:
    async def handle_DATA(self, server, session, envelope):
        global count
        msg = email.message_from_bytes(envelope.original_content)
        record = {"mail_from": envelope.mail_from, "rcpt": envelope.rcpt_tos,
                  "headers": [[k, str(v)] for k, v in msg.items()]}
        tmp = os.path.join(out, ".%d.tmp" % count)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(out, "%d.json" % count))
        count += 1
        return "250 OK"

c = Controller(Save(), hostname="127.0.0.1", port=port)
c.start()
print("ready", flush=True)
try:
    sys.stdin.read()
finally:
    c.stop()
"#;

/// The aiosmtpd process; stopped when dropped.
struct RealSmtp {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
}

impl Drop for RealSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealSmtp {
    fn start(out: &Path) -> RealSmtp {
        use std::io::BufRead as _;
        std::fs::create_dir_all(out).expect("mkdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new("python3")
            .args(["-c", AIOSMTPD_SERVER, &port.to_string()])
            .arg(out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (aiosmtpd is installed by .ci/run: pip install aiosmtpd)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("aiosmtpd starts within 20 s");
        assert_eq!(
            line.trim(),
            "ready",
            "aiosmtpd did not start (pip install aiosmtpd)"
        );
        RealSmtp {
            child,
            port,
            out: out.to_path_buf(),
        }
    }

    /// The messages received so far, in order.
    fn received(&self) -> Vec<Value> {
        let mut files: Vec<_> = std::fs::read_dir(&self.out)
            .expect("read out dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
            .collect()
    }
}

#[test]
fn a_real_smtp_server_gets_one_line_headers_and_no_injected_recipient() {
    let dir = tempfile::tempdir().expect("tmp");
    let smtp = RealSmtp::start(&dir.path().join("received"));
    std::fs::create_dir_all(dir.path().join("pushes")).unwrap();
    std::fs::write(dir.path().join("pushes/note.yaml"), smtp_push(smtp.port)).unwrap();
    let send = |data: Value| {
        let ev = event_file(dir.path(), "ev.json", data);
        pushwerk_in(
            dir.path(),
            &["--data", "data", "send", "note", "--event", &ev],
            &[],
        )
    };

    // Refused before any connection: nothing reaches the server.
    let out = send(json!({"to": "Evil\r\nBcc: x <victim@example.com>"}));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("carriage return"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let out = send(json!({
        "to": "\"Sales, Team\" <sales@example.com>",
        "subject": "Hi\r\nBcc: victim@example.com\r\n\r\nbody?",
    }));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let received = smtp.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let mail = &received[0];
    assert_eq!(mail["rcpt"], json!(["sales@example.com"]));
    let headers: Vec<(String, String)> = mail["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let named = |n: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert!(named("bcc").is_empty(), "{headers:?}");
    assert_eq!(named("subject"), ["Hi Bcc: victim@example.com body?"]);
    assert_eq!(named("to").len(), 1, "{headers:?}");
    assert!(named("to")[0].contains("sales@example.com"), "{headers:?}");
}

#[test]
fn a_templated_graph_mailbox_stays_one_path_segment() {
    let push = "name: as-user
on: call.ended
graph_mail:
  account: ms_mail
  user: \"<< event.mailbox >>\"
  to: [sales@example.com]
  subject: hi
  text: hello
";
    let dir = folder(&[
        ("pushes/accounts.yaml", ACCOUNT_MS_MAIL),
        ("pushes/as-user.yaml", push),
    ]);
    let ev = event_file(
        dir.path(),
        "ev.json",
        json!({"mailbox": "a/../../../beta/me?x=1#f"}),
    );
    let out = dry_run(dir.path(), "as-user", &ev);
    assert!(out.status.success(), "{}", stderr(&out));
    let so = stdout(&out);
    assert!(
        so.contains("\nPOST https://graph.microsoft.com/v1.0/users/a%2F..%2F..%2F..%2Fbeta%2Fme%3Fx%3D1%23f/sendMail\n"),
        "{so}"
    );
    for dots in [".", ".."] {
        let ev = event_file(dir.path(), "ev.json", json!({ "mailbox": dots }));
        let out = dry_run(dir.path(), "as-user", &ev);
        assert_eq!(out.status.code(), Some(1), "{dots}: {}", stdout(&out));
        assert!(stderr(&out).contains("graph_mail.user"), "{}", stderr(&out));
    }
}
