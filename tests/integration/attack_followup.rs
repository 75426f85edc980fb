//! Regression tests for the follow-up of the adversarial review (issues
//! #10 and #11): each drives the real binary and fails without its fix.

use std::io::Write;
use std::time::Duration;

use crate::util::{pushwerk_in, stderr, stdout};

/// What the flooding SMTP server saw: how many bytes it got out, and
/// whether the client closed the connection before it was done.
struct Flood {
    sent: u64,
    cut_off: bool,
}

/// An SMTP server that sends `220-` and then up to `total` bytes without
/// a newline (the review's reply bomb). Serves one connection.
fn smtp_flood(total: u64) -> (u16, std::thread::JoinHandle<Flood>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let handle = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let _ = c.set_write_timeout(Some(Duration::from_secs(30)));
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0u64;
        let mut cut_off = c.write_all(b"220-").is_err();
        while !cut_off && sent < total {
            match c.write_all(&chunk) {
                Ok(()) => sent += chunk.len() as u64,
                Err(_) => cut_off = true,
            }
        }
        Flood { sent, cut_off }
    });
    (port, handle)
}

#[test]
fn an_smtp_server_flooding_its_greeting_is_cut_off_with_a_clear_error() {
    const TOTAL: u64 = 256 * 1024 * 1024;
    let (port, server) = smtp_flood(TOTAL);
    let push = format!(
        "name: mail\non: call.ended\nsmtp:\n  host: 127.0.0.1\n  port: {port}\n  tls: none\n  from: office@example.com\n  to: [sales@example.com]\n  subject: s\n  text: t\n"
    );
    let dir = crate::util::folder(&[
        ("pushes/mail.yaml", &push),
        (
            "ev.json",
            r#"{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{}}"#,
        ),
    ]);
    let out = pushwerk_in(dir.path(), &["send", "mail", "--event", "ev.json"], &[]);
    let flood = server.join().expect("the server ran");
    let text = stdout(&out) + &stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("SMTP reply over 1048576 bytes"),
        "the error names the limit: {text}"
    );
    // pushwerk closed the connection long before the server was done:
    // at most the limit plus what the kernels' socket buffers hold.
    assert!(flood.cut_off, "the client read all {} bytes", flood.sent);
    assert!(flood.sent < 64 * 1024 * 1024, "{} bytes sent", flood.sent);
}

fn event_with(dir: &std::path::Path, data: &str) {
    let event =
        format!(r#"{{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{data}}}"#);
    std::fs::write(dir.join("ev.json"), event).expect("event");
}

const ATTACHING_ACCOUNT: &str = "kind: oauth_account\nname: acc\ntoken_url: https://login.example.com/token\nclient_id: c\nclient_secret: ${file:docs/key.txt}\nscope: s\n";

fn attaching_push(path: &str) -> String {
    format!(
        "name: mail\non: call.ended\ngraph_mail:\n  account: acc\n  to: [\"a@example.com\"]\n  subject: s\n  text: t\n  attachments:\n    - name: doc\n      path: \"{path}\"\n"
    )
}

#[test]
fn check_refuses_an_attachment_path_that_starts_with_a_parameter() {
    for path in ["<< event.doc >>", "./<< event.doc >>", "../<< event.doc >>"] {
        let dir = crate::util::folder(&[
            ("pushes/mail.yaml", &attaching_push(path)),
            ("pushes/accounts.yaml", ATTACHING_ACCOUNT),
        ]);
        let out = pushwerk_in(dir.path(), &["check"], &[]);
        let text = stdout(&out) + &stderr(&out);
        assert!(!out.status.success(), "{path}: {text}");
        assert!(text.contains("pushes/mail.yaml:10:"), "{path}: {text}");
        assert!(
            text.contains("must start with a fixed folder"),
            "{path}: {text}"
        );
    }
    // A fixed folder below the push file's passes.
    let dir = crate::util::folder(&[
        ("pushes/mail.yaml", &attaching_push("files/<< event.doc >>")),
        ("pushes/accounts.yaml", ATTACHING_ACCOUNT),
    ]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    let text = stdout(&out) + &stderr(&out);
    assert!(!text.contains("must start with a fixed folder"), "{text}");
}

#[test]
fn a_file_secret_of_the_folder_is_never_attached() {
    const CANARY: &str = "file-secret-canary-W4";
    let dir = crate::util::folder(&[
        ("pushes/mail.yaml", &attaching_push("docs/<< event.doc >>")),
        ("pushes/accounts.yaml", ATTACHING_ACCOUNT),
        ("pushes/docs/key.txt", &format!("{CANARY}\n")),
        ("pushes/docs/offer.pdf", "%PDF-1.4 offer\n"),
    ]);
    let dry_run = || {
        pushwerk_in(
            dir.path(),
            &["dry-run", "mail", "--event", "ev.json", "--format", "json"],
            &[],
        )
    };
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(CANARY);
    for doc in ["key.txt", "./key.txt", "sub/../key.txt"] {
        event_with(dir.path(), &format!(r#"{{"doc":"{doc}"}}"#));
        let out = dry_run();
        let text = stdout(&out) + &stderr(&out);
        assert!(!out.status.success(), "{doc} was attached: {text}");
        assert!(
            !text.contains(CANARY) && !text.contains(&encoded[..16]),
            "{doc}: {text}"
        );
    }
    event_with(dir.path(), r#"{"doc":"key.txt"}"#);
    let text = stderr(&dry_run());
    assert!(
        text.contains("secret") && text.contains("never attached"),
        "{text}"
    );
    // A file referenced by a push (not an account) is refused as well.
    let hook = "name: hook\non: call.ended\nhttp:\n  url: https://example.com/in\n  headers:\n    Authorization: \"Bearer ${file:docs/token.txt}\"\n  json:\n    a: 1\n";
    std::fs::write(dir.path().join("pushes/hook.yaml"), hook).expect("hook");
    std::fs::write(dir.path().join("pushes/docs/token.txt"), "tok-canary\n").expect("token");
    event_with(dir.path(), r#"{"doc":"token.txt"}"#);
    let out = dry_run();
    let text = stdout(&out) + &stderr(&out);
    assert!(!out.status.success(), "token.txt was attached: {text}");
    assert!(text.contains("never attached"), "{text}");
    // An ordinary file beside the secrets is still attached.
    event_with(dir.path(), r#"{"doc":"offer.pdf"}"#);
    let out = dry_run();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn html_push(html: &str) -> String {
    format!(
        "name: page\non: call.ended\nsmtp:\n  host: 127.0.0.1\n  port: 25\n  tls: none\n  from: office@example.com\n  to: [sales@example.com]\n  subject: s\n  html: '{}'\n",
        html.replace('\'', "''")
    )
}

#[test]
fn srcset_meta_refresh_and_style_urls_are_checked_in_html_bodies() {
    for (html, attr) in [
        (
            r#"<img srcset="https://example.com/a.png 1x, << event.u >> 2x">"#,
            "srcset",
        ),
        (r#"<img srcset="<< event.u >>">"#, "srcset"),
        (
            r#"<meta http-equiv="refresh" content="0;url=<< event.u >>">"#,
            "content",
        ),
        (
            r#"<meta http-equiv="refresh" content="5; URL='<< event.u >>'">"#,
            "content",
        ),
        (
            r#"<div style="background: url(<< event.u >>)">x</div>"#,
            "style",
        ),
        (
            r#"<div style="background: url('<< event.u >>')">x</div>"#,
            "style",
        ),
    ] {
        let dir = crate::util::folder(&[("pushes/page.yaml", &html_push(html))]);
        let run = |u: &str| {
            event_with(dir.path(), &serde_json::json!({ "u": u }).to_string());
            pushwerk_in(dir.path(), &["dry-run", "page", "--event", "ev.json"], &[])
        };
        for u in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<b>x</b>",
        ] {
            let out = run(u);
            let text = stderr(&out);
            assert!(!out.status.success(), "{html} with {u}: {}", stdout(&out));
            assert!(
                text.contains("smtp.html")
                    && text.contains(&format!("`{attr}`"))
                    && text.contains("refused"),
                "{html} with {u}: {text}"
            );
        }
        let out = run("https://example.com/a.png");
        assert!(out.status.success(), "{html}: {}", stderr(&out));
    }
    // A CSS escape does not hide the scheme from the check.
    let dir = crate::util::folder(&[(
        "pushes/page.yaml",
        &html_push(r#"<div style="background: url(\6a avascript:alert(1))">x</div>"#),
    )]);
    event_with(dir.path(), "{}");
    let out = pushwerk_in(dir.path(), &["dry-run", "page", "--event", "ev.json"], &[]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("`style`"), "{}", stderr(&out));
}

#[test]
fn check_refuses_parameters_in_event_handlers_and_srcdoc_and_warns_in_style() {
    for html in [
        r##"<a href="#" onclick="track('<< event.id >>')">x</a>"##,
        r#"<img src="a.png" onerror=<< event.id >>>"#,
        r#"<iframe srcdoc="<p><< event.id >></p>"></iframe>"#,
    ] {
        let dir = crate::util::folder(&[("pushes/page.yaml", &html_push(html))]);
        let out = pushwerk_in(dir.path(), &["check"], &[]);
        let text = stdout(&out) + &stderr(&out);
        assert!(!out.status.success(), "{html}: {text}");
        assert!(
            text.contains("error:")
                && text.contains("HTML escaping does not make an event value safe"),
            "{html}: {text}"
        );
    }
    let dir = crate::util::folder(&[(
        "pushes/page.yaml",
        &html_push(
            r#"<p style="color: << event.color >>">x</p><a href="<< event.url >>" title="<< event.t >>">y</a>"#,
        ),
    )]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    let text = stdout(&out) + &stderr(&out);
    assert!(out.status.success(), "{text}");
    // Only the style attribute is reported: `href` and `title` are
    // checked at send time.
    assert_eq!(text.matches("warning:").count(), 1, "{text}");
    assert!(
        text.contains("a parameter in a `style` attribute"),
        "{text}"
    );
}

/// A token endpoint answering every request with `200` and `body`;
/// returns its URL and a counter of requests served.
fn token_endpoint(body: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/token", listener.local_addr().expect("address"));
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = std::io::BufReader::new(c.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut form = vec![0; length];
            let _ = reader.read_exact(&mut form);
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (url, served)
}

#[test]
fn a_token_response_with_an_empty_or_control_character_token_is_not_a_refresh() {
    for access in [
        "",
        "   ",
        "at-ok\r\nX-Injected: 1",
        "at\u{0}nul",
        "at\u{7f}del",
    ] {
        let body = serde_json::json!({
            "access_token": access,
            "refresh_token": "rt-next",
            "expires_in": 3600,
            "token_type": "Bearer",
        })
        .to_string();
        let (url, served) = token_endpoint(body);
        let account = format!(
            "kind: oauth_account\nname: acct\ntoken_url: {url}\nclient_id: c\nclient_secret: ${{env:ACCT_SECRET}}\nscope: api\n"
        );
        let dir = crate::util::folder(&[("pushes/acct.yaml", &account), ("rt.txt", "rt-seed\n")]);
        let env = [("ACCT_SECRET", "s3cret")];
        let import = pushwerk_in(
            dir.path(),
            &["oauth", "import", "acct", "--file", "rt.txt"],
            &env,
        );
        assert!(import.status.success(), "{}", stderr(&import));
        let out = pushwerk_in(dir.path(), &["oauth", "refresh", "acct"], &env);
        let text = stdout(&out) + &stderr(&out);
        assert!(
            served.load(std::sync::atomic::Ordering::SeqCst) >= 1,
            "{text}"
        );
        assert!(
            !out.status.success(),
            "{access:?} taken as refreshed: {text}"
        );
        assert!(
            text.contains("access_token") && text.contains("not taken as refreshed"),
            "{access:?}: {text}"
        );
        assert!(!text.contains("X-Injected"), "{text}");
        let status = pushwerk_in(dir.path(), &["oauth", "status"], &env);
        assert!(!stdout(&status).contains("rt-next"), "{}", stdout(&status));
    }
}

#[test]
fn an_out_of_range_event_time_names_the_field_and_the_range() {
    let dir = crate::util::folder(&[(
        "pushes/hook.yaml",
        "name: hook\non: call.ended\nhttp:\n  url: https://example.com/in\n  json:\n    a: 1\n",
    )]);
    for time in [
        "2026-13-01T00:00:00Z",
        "2026-02-30T10:00:00Z",
        "+10000-01-01T00:00:00Z",
        "0000-01-01T00:30:00+01:00",
    ] {
        std::fs::write(
            dir.path().join("ev.json"),
            format!(r#"{{"id":"e1","type":"call.ended","time":"{time}","data":{{}}}}"#),
        )
        .expect("event");
        let out = pushwerk_in(dir.path(), &["dry-run", "hook", "--event", "ev.json"], &[]);
        let text = stderr(&out);
        assert!(!out.status.success(), "{time}: {}", stdout(&out));
        assert!(
            text.contains(&format!("`time` \"{time}\""))
                && text.contains("0000-01-01T00:00:00Z to 9999-12-31T23:59:59Z"),
            "{time}: {text}"
        );
    }
}

#[test]
fn an_in_flight_beyond_64_bits_names_the_field_and_its_range() {
    let dir = crate::util::folder(&[(
        "pushes/hook.yaml",
        "name: hook\non: call.ended\nin_flight: 99999999999999999999999\nhttp:\n  url: https://example.com/in\n  json:\n    a: 1\n",
    )]);
    let out = pushwerk_in(dir.path(), &["check"], &[]);
    let text = stdout(&out) + &stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains("u128"), "{text}");
    assert!(
        text.contains("pushes/hook.yaml:3:")
            && text.contains("`in_flight`: the number 99999999999999999999999 is out of range")
            && text.contains("from 1 to 1024"),
        "{text}"
    );
}

/// A running `pushwerk serve` on a free port, killed when dropped.
struct Serve {
    child: std::process::Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TOKEN: &str = "followup-ingest-token";

async fn serve(root: &std::path::Path) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = std::fs::File::create(root.join("serve.log")).expect("log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pushwerk"))
        .current_dir(root)
        .args(["--dir", "pushes", "--data", "data", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("PUSHWERK_INGEST_TOKEN", TOKEN)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("serve starts");
    let serve = Serve {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = pushwerk::net::http_client()
            .build()
            .expect("HTTP client")
            .get(format!("{}/readyz", serve.base))
            .send()
            .await
        {
            if r.status() == 200 {
                return serve;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(root.join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_query_string_on_v1_gets_a_json_400_after_the_token_check() {
    let dir = crate::util::folder(&[(
        "pushes/hook.yaml",
        "name: hook\non: call.ended\nhttp:\n  url: https://example.com/in\n  json:\n    a: 1\n",
    )]);
    let daemon = serve(dir.path()).await;
    let http = pushwerk::net::http_client().build().expect("HTTP client");
    for path in [
        "/v1/deliveries?limit=abc",
        "/v1/deliveries?limit=-1",
        "/v1/dead-letters?limit=99999999999999999999999",
        "/v1/jobs?limit=x",
    ] {
        let r = http
            .get(format!("{}{path}", daemon.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 400, "{path}");
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = r.text().await.expect("body");
        assert!(ct.starts_with("application/json"), "{path}: {ct} {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("bad query string:") && error.contains("limit"),
            "{path}: {text}"
        );
        // Without the token: 401, the query is not looked at first.
        let r = http
            .get(format!("{}{path}", daemon.base))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401, "{path}");
    }
    // A good query still works.
    let r = http
        .get(format!("{}/v1/deliveries?limit=5", daemon.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

fn oauth_status(data: &std::path::Path) -> std::process::Output {
    let dir = crate::util::folder(&[(
        "pushes/hook.yaml",
        "name: hook\non: call.ended\nhttp:\n  url: https://example.com/in\n  json:\n    a: 1\n",
    )]);
    let data = data.to_str().expect("UTF-8 path");
    pushwerk_in(dir.path(), &["--data", data, "oauth", "status"], &[])
}

#[test]
fn a_group_writable_data_directory_is_refused_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    let out = oauth_status(&data);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is writable by its group (mode 770)"), "{err}");
    let mode = std::fs::metadata(&data).expect("meta").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o770, "the mode was changed");
    assert!(!data.join("sled").exists(), "a store was written");
    // Without group write it is taken.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let out = oauth_status(&data);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_data_directory_of_another_user_is_refused() {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    // As root: a directory given to `nobody`; as anyone else: `/`, which is
    // root's, neither world- nor group-writable.
    let (data, owner) = if effective_uid() == 0 {
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).expect("chown");
        (data, 65534)
    } else {
        (std::path::PathBuf::from("/"), 0)
    };
    assert_eq!(std::fs::metadata(&data).expect("meta").uid(), owner);
    let out = oauth_status(&data);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "belongs to uid {owner}, not to the user running pushwerk"
        )),
        "{err}"
    );
    assert!(!data.join("sled").exists(), "a store was written");
}

fn effective_uid() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    // The owner of a file this process just created is its effective uid.
    let f = tempfile::NamedTempFile::new().expect("temp file");
    f.as_file().metadata().expect("meta").uid()
}

/// A real SMTP server (Python's aiosmtpd, implicit TLS or STARTTLS) or a
/// TLS server that floods after the handshake, killed when dropped.
struct PyServer(std::process::Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TLS_SERVERS: &str = r#"
import asyncio, os, socket, ssl, sys, threading, time
mode, port_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain("leaf.pem", "leaf.key")
def announce(port):
    # Written once the server listens: the test reads its port here.
    open(port_file + ".tmp", "w").write(str(port))
    os.rename(port_file + ".tmp", port_file)
if mode == "flood":
    s = socket.socket()
    s.bind(("127.0.0.1", 0)); s.listen(4)
    announce(s.getsockname()[1])
    while True:
        # Wait for a TLS client (a stray connection is dropped).
        c, _ = s.accept()
        try:
            t = ctx.wrap_socket(c, server_side=True)
            break
        except Exception:
            c.close()
    sent, cut = 0, False
    try:
        t.sendall(b"220-")
        while sent < 256 * 1024 * 1024:
            t.sendall(b"x" * 65536); sent += 65536
    except Exception:
        cut = True
    open(out, "w").write(f"{sent} {cut}")
    sys.exit(0)
from aiosmtpd.controller import Controller
class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(f"{envelope.mail_from} {' '.join(envelope.rcpt_tos)}\n")
        return "250 OK"
# aiosmtpd's controller needs a port number up front (it connects to it to
# check the server is up): pick one, and pick again if another process
# takes it before the server binds it.
for _ in range(20):
    probe = socket.socket(); probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]; probe.close()
    if mode == "tls":
        c = Controller(Handler(), hostname="127.0.0.1", port=port, ssl_context=ctx)
    else:
        c = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True)
    try:
        c.start()
        break
    except Exception:
        continue
else:
    sys.exit("no port")
announce(port)
time.sleep(120)
"#;

/// A CA and a `localhost` certificate it signed, made with openssl(1).
fn make_certs(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-subj",
                "/CN=pushwerk test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "leaf.pem",
    ]);
}

/// Starts the server of `mode` and waits for the port it announces (the
/// server picks it: a port picked here could be taken by another test).
fn py_server(dir: &std::path::Path, mode: &str, out: &str) -> (PyServer, u16) {
    std::fs::write(dir.join("servers.py"), TLS_SERVERS).expect("script");
    let port_file = dir.join(format!("port-{mode}"));
    let _ = std::fs::remove_file(&port_file);
    let child = std::process::Command::new("python3")
        .current_dir(dir)
        .args(["servers.py", mode])
        .arg(&port_file)
        .arg(out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut server = PyServer(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            return (server, port);
        }
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            panic!("the {mode} server ended before it listened: {status}");
        }
        assert!(std::time::Instant::now() < deadline, "{mode} server not up");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn implicit_tls_and_starttls_deliver_to_a_real_server_and_the_cap_holds_under_tls() {
    let dir = crate::util::folder(&[(
        "ev.json",
        r#"{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{}}"#,
    )]);
    make_certs(dir.path());
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().expect("UTF-8 path");
    let push = |mode: &str, port: u16| {
        std::fs::create_dir_all(dir.path().join("pushes")).expect("pushes");
        std::fs::write(
            dir.path().join("pushes/mail.yaml"),
            format!("name: mail\non: call.ended\nsmtp:\n  host: localhost\n  port: {port}\n  tls: {mode}\n  from: office@example.com\n  to: [sales@example.com]\n  subject: s\n  text: t\n"),
        )
        .expect("push");
    };
    let send = || {
        pushwerk_in(
            dir.path(),
            &["send", "mail", "--event", "ev.json"],
            &[("SSL_CERT_FILE", ca)],
        )
    };
    for mode in ["tls", "starttls"] {
        let received = format!("received-{mode}.txt");
        let (_server, port) = py_server(dir.path(), mode, &received);
        push(mode, port);
        let out = send();
        let text = stdout(&out) + &stderr(&out);
        assert!(out.status.success(), "{mode}: {text}");
        let got = std::fs::read_to_string(dir.path().join(&received)).unwrap_or_default();
        assert_eq!(
            got, "office@example.com sales@example.com\n",
            "{mode}: {text}"
        );
    }
    // A server flooding inside TLS: the cap counts the bytes under TLS.
    let (server, port) = py_server(dir.path(), "flood", "flood.txt");
    push("tls", port);
    let out = send();
    let text = stdout(&out) + &stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("SMTP reply over 1048576 bytes"), "{text}");
    let mut server = server;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.0.try_wait().expect("try_wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood did not end"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let flood = std::fs::read_to_string(dir.path().join("flood.txt")).expect("flood result");
    let (sent, cut) = flood.split_once(' ').expect("two fields");
    assert_eq!(cut, "True", "the client read all {sent} bytes");
    assert!(
        sent.parse::<u64>().expect("number") < 64 * 1024 * 1024,
        "{sent} bytes sent"
    );
}
