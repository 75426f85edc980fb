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
