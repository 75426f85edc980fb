//! A local mock of an SMTP submission server in the style of Exchange Online,
//! behaving as `../shared/reference/microsoft-apis.md` §4 describes: the
//! `220` greeting, a multi-line `EHLO` answer, `AUTH XOAUTH2` with or without
//! an initial response (§4.3 format, §4.4 dialogue, §4.5 checks), `AUTH PLAIN`
//! and `AUTH LOGIN` against configured passwords, `MAIL`/`RCPT` (up to 500
//! recipients)/`DATA` with dot-unstuffing, and the Exchange reply texts.
//!
//! **TLS is not mocked.** The tests run pushwerk with `tls: none` (a local
//! relay), so the mock never advertises `STARTTLS` and advertises
//! `AUTH PLAIN LOGIN XOAUTH2` directly after `EHLO`; a client that requires
//! STARTTLS cannot use it. Unlike §4.5, it neither checks that a token was
//! minted for `https://outlook.office.com` (tests choose the accepted tokens
//! with [`SmtpMock::accept_token`]) nor restricts `MAIL FROM` to the
//! authenticated user, and it has no rate limit (use
//! [`SmtpMock::reject_next_data`] to answer `451 4.3.2` / `554 5.2.0`).
//!
//! Every accepted connection is served by its own tokio task; dropping the
//! [`SmtpMock`] aborts the listener and all connections.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::distr::Alphanumeric;
use rand::Rng;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// The name the mock gives itself in replies.
pub const MOCK_HOST: &str = "mock.local";

/// Recipients accepted per message (§4.1: 500 recipients/message).
pub const MAX_RECIPIENTS: usize = 500;

/// The advertised `SIZE` (35 MiB, as Exchange Online advertises).
pub const MAX_MESSAGE_SIZE: usize = 36_700_160;

/// Longest command line accepted (an XOAUTH2 line carries a whole JWT).
const MAX_LINE: u64 = 64 * 1024;

/// `235` after a successful AUTH.
pub const AUTH_OK: &str = "235 2.7.0 Authentication successful";

/// `535` for wrong credentials (§4.4, with the mock's host in brackets).
pub const AUTH_FAILED: &str = "535 5.7.3 Authentication unsuccessful [mock.local]";

/// `535` while [`SmtpMock::disable_smtp_auth`] is on (§4.4).
pub const AUTH_DISABLED: &str =
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.";

/// `530` for `MAIL FROM` before AUTH when credentials are configured (§4.4).
pub const NOT_AUTHENTICATED: &str = "530 5.7.57 Client not authenticated to send mail.";

/// A message the mock accepted at the end of `DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The `MAIL FROM` address, without angle brackets (empty for `<>`).
    pub mail_from: String,
    /// The `RCPT TO` addresses in order, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// The message as sent, dot-unstuffed, up to and including the CRLF
    /// before the terminating `.` line.
    pub data: Vec<u8>,
    /// The successful AUTH of the session, if any.
    pub auth: Option<AuthSeen>,
}

/// The credentials of a successful AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSeen {
    /// `AUTH PLAIN`.
    Plain {
        /// The authentication identity.
        user: String,
        /// The password.
        password: String,
    },
    /// `AUTH LOGIN`.
    Login {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `AUTH XOAUTH2`.
    Xoauth2 {
        /// The `user=` value.
        user: String,
        /// The bearer token.
        token: String,
    },
}

/// The answer for the next messages at the end of `DATA`.
#[derive(Debug)]
struct DataReject {
    remaining: usize,
    reply: String,
}

#[derive(Debug, Default)]
struct State {
    tokens: HashSet<String>,
    token_prefixes: Vec<String>,
    passwords: HashMap<String, String>,
    auth_disabled: bool,
    reject: Option<DataReject>,
    delivered: Vec<Delivered>,
    auth_attempts: Vec<(String, bool)>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    delivered: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running mock server; see the module documentation.
#[derive(Debug)]
pub struct SmtpMock {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for SmtpMock {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connections: aborting it drops
        // the set, which aborts every connection task.
        self.task.abort();
    }
}

impl SmtpMock {
    /// Listens on `127.0.0.1` on a free port.
    pub async fn start() -> SmtpMock {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP mock");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        SmtpMock { port, shared, task }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The listening host, `127.0.0.1`.
    pub fn host(&self) -> String {
        "127.0.0.1".to_string()
    }

    /// Adds an XOAUTH2 bearer token that authenticates (any `user=`).
    pub fn accept_token(&self, token: &str) {
        self.shared.lock().tokens.insert(token.to_string());
    }

    /// Accepts every XOAUTH2 token starting with `prefix` (the identity
    /// mock's tokens for a resource, issued during a test).
    pub fn accept_token_prefix(&self, prefix: &str) {
        self.shared.lock().token_prefixes.push(prefix.to_string());
    }

    /// Adds (or replaces) a user's password for AUTH PLAIN and AUTH LOGIN.
    pub fn accept_password(&self, user: &str, password: &str) {
        self.shared
            .lock()
            .passwords
            .insert(user.to_string(), password.to_string());
    }

    /// `true`: every AUTH is answered with [`AUTH_DISABLED`] (535 5.7.139).
    pub fn disable_smtp_auth(&self, yes: bool) {
        self.shared.lock().auth_disabled = yes;
    }

    /// The next `count` messages are answered at the end of `DATA` with
    /// `"{code} {text}"` (e.g. `451`, `"4.3.2 System not accepting network
    /// messages"`, or `554`, `"5.2.0 ..."`) and not recorded. Replaces any
    /// earlier setting; `count` 0 clears it.
    pub fn reject_next_data(&self, count: usize, code: u16, text: &str) {
        assert!(
            (400..600).contains(&code),
            "a DATA rejection needs a 4xx or 5xx code, not {code}"
        );
        self.shared.lock().reject = (count > 0).then(|| DataReject {
            remaining: count,
            reply: format!("{code} {text}"),
        });
    }

    /// The messages accepted so far, in order.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.shared.lock().delivered.clone()
    }

    /// Every AUTH command so far: (mechanism in upper case, succeeded).
    pub fn auth_attempts(&self) -> Vec<(String, bool)> {
        self.shared.lock().auth_attempts.clone()
    }

    /// Waits until at least `n` messages were accepted; `false` on timeout.
    pub async fn wait_for_deliveries(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.delivered.notified();
            tokio::pin!(notified);
            // Registered before the check, so a delivery in between is seen.
            notified.as_mut().enable();
            if self.shared.lock().delivered.len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.shared.lock().delivered.len() >= n;
            }
        }
    }
}

/// Encodes an XOAUTH2 initial response (§4.3):
/// `base64("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")`.
pub fn xoauth2_initial_response(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// Decodes an XOAUTH2 initial response strictly (§4.5): standard padded
/// base64, exactly `user=<addr>` `0x01` `auth=Bearer <token>` `0x01 0x01`.
/// Returns `(user, token)`.
pub fn parse_xoauth2(b64: &str) -> Result<(String, String), String> {
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| format!("invalid base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let body = text
        .strip_suffix("\x01\x01")
        .ok_or_else(|| "missing the trailing 0x01 0x01".to_string())?;
    let parts: Vec<&str> = body.split('\x01').collect();
    let [user_part, auth_part] = parts[..] else {
        return Err(format!("expected 2 fields, found {}", parts.len()));
    };
    let user = user_part
        .strip_prefix("user=")
        .ok_or_else(|| "first field is not user=".to_string())?;
    if user.is_empty() || !user.contains('@') || user.contains(char::is_whitespace) {
        return Err(format!("user= is not an address: {user:?}"));
    }
    let token = auth_part
        .strip_prefix("auth=Bearer ")
        .ok_or_else(|| "second field is not auth=Bearer <token>".to_string())?;
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err("empty or malformed bearer token".to_string());
    }
    Ok((user.to_string(), token.to_string()))
}

/// Decodes an AUTH PLAIN response (RFC 4616): `authzid NUL authcid NUL
/// passwd`, authzid empty or equal to authcid. Returns `(user, password)`.
fn parse_plain(b64: &str) -> Option<(String, String)> {
    let text = String::from_utf8(decode_sasl(b64)?).ok()?;
    let parts: Vec<&str> = text.split('\0').collect();
    let [authzid, user, password] = parts[..] else {
        return None;
    };
    if user.is_empty() || !(authzid.is_empty() || authzid == user) {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

/// Strict base64 of a SASL response; `=` is the empty response (RFC 4954).
fn decode_sasl(b64: &str) -> Option<Vec<u8>> {
    if b64 == "=" {
        return Some(Vec::new());
    }
    STANDARD.decode(b64).ok()
}

fn decode_sasl_text(b64: &str) -> Option<String> {
    String::from_utf8(decode_sasl(b64)?).ok()
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // E.g. out of file descriptors: let other tasks run, try again.
            tokio::task::yield_now().await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            // A client that goes away is not the mock's concern.
            let _ = Session::new(stream, shared).run().await;
        });
    }
}

/// A line from the client, or why there is none.
enum Line {
    Text(String),
    TooLong,
    Closed,
}

/// One SMTP connection.
struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    shared: Arc<Shared>,
    greeted: bool,
    auth: Option<AuthSeen>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

/// What an AUTH exchange ends with.
enum AuthEnd {
    Reply(String),
    Closed,
}

impl Session {
    fn new(stream: TcpStream, shared: Arc<Shared>) -> Session {
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Session {
            reader: BufReader::new(reader),
            writer,
            shared,
            greeted: false,
            auth: None,
            mail_from: None,
            rcpt_to: Vec::new(),
        }
    }

    async fn reply(&mut self, text: &str) -> io::Result<()> {
        // One write per reply: two small writes would meet Nagle's algorithm
        // and the client's delayed ACK (a 40 ms stall per reply).
        let mut bytes = Vec::with_capacity(text.len() + 2);
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).await?;
        self.writer.flush().await
    }

    /// Reads one line (CRLF or LF), without its line ending.
    async fn line(&mut self) -> io::Result<Line> {
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(Line::Closed);
        }
        if buf.last() != Some(&b'\n') {
            return Ok(if n as u64 >= MAX_LINE {
                Line::TooLong
            } else {
                Line::Closed
            });
        }
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        match String::from_utf8(buf) {
            Ok(s) => Ok(Line::Text(s)),
            // Replaced characters never match a command or a credential.
            Err(e) => Ok(Line::Text(
                String::from_utf8_lossy(e.as_bytes()).into_owned(),
            )),
        }
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    async fn run(mut self) -> io::Result<()> {
        self.reply(&format!(
            "220 {MOCK_HOST} Microsoft ESMTP MAIL Service ready"
        ))
        .await?;
        loop {
            let line = match self.line().await? {
                Line::Text(line) => line,
                Line::TooLong => {
                    self.reply("500 5.5.6 Line too long").await?;
                    return Ok(());
                }
                Line::Closed => return Ok(()),
            };
            let (verb, arg) = match line.split_once(' ') {
                Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.trim()),
                None => (line.to_ascii_uppercase(), ""),
            };
            match verb.as_str() {
                "EHLO" | "HELO" => {
                    if arg.is_empty() {
                        self.reply(&format!("501 5.5.4 Invalid domain name in {verb}"))
                            .await?;
                        continue;
                    }
                    self.greeted = true;
                    self.reset_transaction();
                    let answer = if verb == "EHLO" {
                        format!(
                            "250-{MOCK_HOST} Hello [127.0.0.1]\r\n\
                             250-SIZE {MAX_MESSAGE_SIZE}\r\n\
                             250-ENHANCEDSTATUSCODES\r\n\
                             250-AUTH PLAIN LOGIN XOAUTH2\r\n\
                             250 8BITMIME"
                        )
                    } else {
                        format!("250 {MOCK_HOST} Hello [127.0.0.1]")
                    };
                    self.reply(&answer).await?;
                }
                "AUTH" => match self.auth_command(arg).await? {
                    AuthEnd::Reply(r) => self.reply(&r).await?,
                    AuthEnd::Closed => return Ok(()),
                },
                "MAIL" => {
                    let r = self.mail(arg);
                    self.reply(&r).await?;
                }
                "RCPT" => {
                    let r = self.rcpt(arg);
                    self.reply(&r).await?;
                }
                "DATA" => {
                    if self.mail_from.is_none() {
                        self.reply("503 5.5.1 Bad sequence of commands: need MAIL")
                            .await?;
                    } else if self.rcpt_to.is_empty() {
                        self.reply("503 5.5.1 Bad sequence of commands: need RCPT")
                            .await?;
                    } else if !self.data().await? {
                        return Ok(());
                    }
                }
                "RSET" => {
                    self.reset_transaction();
                    self.reply("250 2.0.0 Resetting").await?;
                }
                "NOOP" => self.reply("250 2.0.0 OK").await?,
                "QUIT" => {
                    self.reply("221 2.0.0 Service closing transmission channel")
                        .await?;
                    return Ok(());
                }
                _ => self.reply("500 5.5.2 Command not recognized").await?,
            }
        }
    }

    fn credentials_configured(&self) -> bool {
        let state = self.shared.lock();
        !state.tokens.is_empty() || !state.passwords.is_empty()
    }

    fn mail(&mut self, arg: &str) -> String {
        if !self.greeted {
            return "503 5.5.1 Send hello first".to_string();
        }
        if self.auth.is_none() && self.credentials_configured() {
            return NOT_AUTHENTICATED.to_string();
        }
        if self.mail_from.is_some() {
            return "503 5.5.1 Sender already specified".to_string();
        }
        match path_arg(arg, "FROM:") {
            Some(addr) => {
                self.mail_from = Some(addr);
                "250 2.1.0 Sender OK".to_string()
            }
            None => "501 5.5.4 Invalid arguments".to_string(),
        }
    }

    fn rcpt(&mut self, arg: &str) -> String {
        if self.mail_from.is_none() {
            return "503 5.5.1 Bad sequence of commands: need MAIL".to_string();
        }
        match path_arg(arg, "TO:") {
            Some(addr) if !addr.is_empty() => {
                if self.rcpt_to.len() >= MAX_RECIPIENTS {
                    return "452 4.5.3 Too many recipients".to_string();
                }
                self.rcpt_to.push(addr);
                "250 2.1.5 Recipient OK".to_string()
            }
            _ => "501 5.5.4 Invalid arguments".to_string(),
        }
    }

    /// `DATA` after a valid envelope; `false` if the client went away.
    async fn data(&mut self) -> io::Result<bool> {
        self.reply("354 Start mail input; end with <CRLF>.<CRLF>")
            .await?;
        let mut data = Vec::new();
        let mut too_big = false;
        loop {
            let mut line = Vec::new();
            if self.reader.read_until(b'\n', &mut line).await? == 0 || line.last() != Some(&b'\n') {
                return Ok(false);
            }
            if line == b".\r\n" || line == b".\n" {
                break;
            }
            let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
            if data.len() + unstuffed.len() > MAX_MESSAGE_SIZE {
                too_big = true;
            } else {
                data.extend_from_slice(unstuffed);
            }
        }
        let mail_from = self.mail_from.take().unwrap_or_default();
        let rcpt_to = std::mem::take(&mut self.rcpt_to);
        if too_big {
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size")
                .await?;
            return Ok(true);
        }
        let answer = {
            let mut state = self.shared.lock();
            let rejection = state.reject.as_mut().map(|r| {
                r.remaining -= 1;
                (r.reply.clone(), r.remaining == 0)
            });
            match rejection {
                Some((reply, used_up)) => {
                    if used_up {
                        state.reject = None;
                    }
                    reply
                }
                None => {
                    state.delivered.push(Delivered {
                        mail_from,
                        rcpt_to,
                        data,
                        auth: self.auth.clone(),
                    });
                    self.shared.delivered.notify_waiters();
                    let id: String = rand::rng()
                        .sample_iter(&Alphanumeric)
                        .take(20)
                        .map(|c| char::from(c).to_ascii_uppercase())
                        .collect();
                    format!("250 2.0.0 OK <{id}@{MOCK_HOST}> [Hostname={MOCK_HOST}]")
                }
            }
        };
        self.reply(&answer).await?;
        Ok(true)
    }

    /// Reads a SASL response after a `334` challenge.
    async fn challenge(&mut self, text: &str) -> io::Result<Option<String>> {
        self.reply(text).await?;
        match self.line().await? {
            Line::Text(line) => Ok(Some(line.trim().to_string())),
            Line::TooLong | Line::Closed => Ok(None),
        }
    }

    async fn auth_command(&mut self, arg: &str) -> io::Result<AuthEnd> {
        if !self.greeted {
            return Ok(AuthEnd::Reply("503 5.5.1 Send hello first".to_string()));
        }
        if self.auth.is_some() {
            return Ok(AuthEnd::Reply(
                "503 5.5.1 Already authenticated".to_string(),
            ));
        }
        if self.mail_from.is_some() {
            return Ok(AuthEnd::Reply(
                "503 5.5.1 AUTH not permitted during a mail transaction".to_string(),
            ));
        }
        let (mechanism, initial) = match arg.split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
            None => (arg.to_ascii_uppercase(), None),
        };
        if mechanism.is_empty() {
            return Ok(AuthEnd::Reply("501 5.5.4 Invalid arguments".to_string()));
        }
        let disabled = self.shared.lock().auth_disabled;
        if disabled {
            self.record_attempt(&mechanism, false);
            return Ok(AuthEnd::Reply(AUTH_DISABLED.to_string()));
        }
        let seen = match mechanism.as_str() {
            "XOAUTH2" => {
                let Some(response) = self.initial_or_challenge(initial).await? else {
                    return Ok(AuthEnd::Closed);
                };
                if response == "*" {
                    return Ok(self.cancelled(&mechanism));
                }
                parse_xoauth2(&response).ok().and_then(|(user, token)| {
                    let state = self.shared.lock();
                    let accepted = state.tokens.contains(&token)
                        || state
                            .token_prefixes
                            .iter()
                            .any(|p| token.starts_with(p.as_str()));
                    accepted.then_some(AuthSeen::Xoauth2 { user, token })
                })
            }
            "PLAIN" => {
                let Some(response) = self.initial_or_challenge(initial).await? else {
                    return Ok(AuthEnd::Closed);
                };
                if response == "*" {
                    return Ok(self.cancelled(&mechanism));
                }
                parse_plain(&response).and_then(|(user, password)| {
                    self.password_matches(&user, &password)
                        .then_some(AuthSeen::Plain { user, password })
                })
            }
            "LOGIN" => {
                let user = match initial {
                    Some(user) => user,
                    None => match self.challenge("334 VXNlcm5hbWU6").await? {
                        Some(user) => user,
                        None => return Ok(AuthEnd::Closed),
                    },
                };
                if user == "*" {
                    return Ok(self.cancelled(&mechanism));
                }
                let Some(password) = self.challenge("334 UGFzc3dvcmQ6").await? else {
                    return Ok(AuthEnd::Closed);
                };
                if password == "*" {
                    return Ok(self.cancelled(&mechanism));
                }
                match (decode_sasl_text(&user), decode_sasl_text(&password)) {
                    (Some(user), Some(password)) if self.password_matches(&user, &password) => {
                        Some(AuthSeen::Login { user, password })
                    }
                    _ => None,
                }
            }
            _ => {
                self.record_attempt(&mechanism, false);
                return Ok(AuthEnd::Reply(
                    "504 5.7.4 Unrecognized authentication type".to_string(),
                ));
            }
        };
        self.record_attempt(&mechanism, seen.is_some());
        Ok(AuthEnd::Reply(match seen {
            Some(seen) => {
                self.auth = Some(seen);
                AUTH_OK.to_string()
            }
            None => AUTH_FAILED.to_string(),
        }))
    }

    async fn initial_or_challenge(
        &mut self,
        initial: Option<String>,
    ) -> io::Result<Option<String>> {
        match initial {
            Some(initial) => Ok(Some(initial)),
            None => self.challenge("334 ").await,
        }
    }

    fn cancelled(&self, mechanism: &str) -> AuthEnd {
        self.record_attempt(mechanism, false);
        AuthEnd::Reply("501 5.0.0 Authentication cancelled".to_string())
    }

    fn password_matches(&self, user: &str, password: &str) -> bool {
        self.shared.lock().passwords.get(user).map(String::as_str) == Some(password)
    }

    fn record_attempt(&self, mechanism: &str, ok: bool) {
        self.shared
            .lock()
            .auth_attempts
            .push((mechanism.to_string(), ok));
    }
}

/// The address of `FROM:<addr> [params]` / `TO:<addr> [params]`
/// (`keyword` case-insensitive, optional space after the colon).
fn path_arg(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    let addr = &inner[..end];
    let params = &inner[end + 1..];
    if !(params.is_empty() || params.starts_with(' ')) || addr.contains(char::is_whitespace) {
        return None;
    }
    Some(addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    const VECTOR_B64: &str = "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==";
    const WAIT: Duration = Duration::from_secs(10);

    fn transport(
        mock: &SmtpMock,
        login: Option<(&str, &str, Mechanism)>,
    ) -> AsyncSmtpTransport<Tokio1Executor> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mock.host())
            .port(mock.port())
            .timeout(Some(WAIT));
        if let Some((user, secret, mechanism)) = login {
            builder = builder
                .credentials(Credentials::new(user.to_string(), secret.to_string()))
                .authentication(vec![mechanism]);
        }
        builder.build()
    }

    fn message() -> Message {
        Message::builder()
            .from("Sender <sender@contoso.example>".parse().unwrap())
            .to("rcpt1@fabrikam.example".parse().unwrap())
            .cc("rcpt2@fabrikam.example".parse().unwrap())
            .subject("Weekly report")
            .body("first line\r\n.starts with a dot\r\nlast line\r\n".to_string())
            .unwrap()
    }

    /// A raw SMTP client for the dialogues lettre does not produce.
    struct Raw {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl Raw {
        async fn connect(mock: &SmtpMock) -> (Raw, String) {
            let stream = TcpStream::connect((mock.host(), mock.port()))
                .await
                .unwrap();
            let (reader, writer) = stream.into_split();
            let mut raw = Raw {
                reader: BufReader::new(reader),
                writer,
            };
            let greeting = raw.read_reply().await;
            (raw, greeting)
        }

        /// A complete (possibly multi-line) reply, lines joined with `\n`.
        async fn read_reply(&mut self) -> String {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                self.reader.read_line(&mut line).await.unwrap();
                assert!(line.ends_with("\r\n"), "reply line {line:?}");
                let line = line.trim_end_matches("\r\n").to_string();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    return lines.join("\n");
                }
            }
        }

        async fn send(&mut self, text: &str) {
            self.writer.write_all(text.as_bytes()).await.unwrap();
        }

        async fn cmd(&mut self, line: &str) -> String {
            self.send(&format!("{line}\r\n")).await;
            self.read_reply().await
        }
    }

    #[test]
    fn xoauth2_test_vector_of_section_4_3_decodes() {
        assert_eq!(
            parse_xoauth2(VECTOR_B64).unwrap(),
            (
                "test@contoso.onmicrosoft.com".to_string(),
                "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA".to_string()
            )
        );
        assert_eq!(
            xoauth2_initial_response(
                "test@contoso.onmicrosoft.com",
                "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA"
            ),
            VECTOR_B64
        );
    }

    #[test]
    fn malformed_xoauth2_responses_are_refused() {
        let enc = |s: &str| STANDARD.encode(s);
        for bad in [
            VECTOR_B64.trim_end_matches('='),                  // no padding
            &format!("{VECTOR_B64} "),                         // trailing space
            &enc("user=a@b.example\x01auth=Bearer t\x01"),     // one 0x01 at the end
            &enc("user=a@b.example\x01auth=Bearer t"),         // none
            &enc("auth=Bearer t\x01user=a@b.example\x01\x01"), // order
            &enc("user=a@b.example\x01auth=bearer t\x01\x01"), // scheme case
            &enc("user=a@b.example\x01auth=Bearer \x01\x01"),  // empty token
            &enc("user=\x01auth=Bearer t\x01\x01"),            // empty user
            &enc("user=a@b.example\x01x=y\x01auth=Bearer t\x01\x01"), // extra field
        ] {
            assert!(parse_xoauth2(bad).is_err(), "accepted {bad:?}");
        }
        assert!(parse_xoauth2(&enc("user=a@b.example\x01auth=Bearer t\x01\x01")).is_ok());
    }

    #[tokio::test]
    async fn lettre_xoauth2_delivers_once_with_envelope_and_credentials() {
        let mock = SmtpMock::start().await;
        mock.accept_token("at-outlook-1");
        let transport = transport(
            &mock,
            Some(("sender@contoso.example", "at-outlook-1", Mechanism::Xoauth2)),
        );
        let response = transport.send(message()).await.unwrap();
        assert_eq!(u16::from(response.code()), 250);
        assert!(mock.wait_for_deliveries(1, WAIT).await);
        let delivered = mock.delivered();
        assert_eq!(delivered.len(), 1);
        let d = &delivered[0];
        assert_eq!(d.mail_from, "sender@contoso.example");
        assert_eq!(
            d.rcpt_to,
            vec!["rcpt1@fabrikam.example", "rcpt2@fabrikam.example"]
        );
        assert_eq!(
            d.auth,
            Some(AuthSeen::Xoauth2 {
                user: "sender@contoso.example".to_string(),
                token: "at-outlook-1".to_string()
            })
        );
        let text = String::from_utf8(d.data.clone()).unwrap();
        assert!(text.contains("Subject: Weekly report\r\n"), "{text}");
        // lettre dot-stuffs, the mock unstuffs.
        assert!(
            text.contains("\r\nfirst line\r\n.starts with a dot\r\nlast line\r\n"),
            "{text}"
        );
        assert_eq!(mock.auth_attempts(), vec![("XOAUTH2".to_string(), true)]);
    }

    #[tokio::test]
    async fn lettre_xoauth2_with_a_wrong_token_gets_535_and_nothing_is_delivered() {
        let mock = SmtpMock::start().await;
        mock.accept_token("at-outlook-1");
        let transport = transport(
            &mock,
            Some(("sender@contoso.example", "at-graph-1", Mechanism::Xoauth2)),
        );
        let e = transport.send(message()).await.unwrap_err();
        assert_eq!(e.status().map(u16::from), Some(535), "{e}");
        assert!(e.is_permanent());
        assert!(e.to_string().contains("5.7.3"), "{e}");
        assert!(mock.delivered().is_empty());
        assert_eq!(mock.auth_attempts(), vec![("XOAUTH2".to_string(), false)]);
    }

    #[tokio::test]
    async fn lettre_plain_and_login_with_a_password_deliver() {
        let mock = SmtpMock::start().await;
        mock.accept_password("relay@contoso.example", "s3cret pass");
        for mechanism in [Mechanism::Plain, Mechanism::Login] {
            transport(
                &mock,
                Some(("relay@contoso.example", "s3cret pass", mechanism)),
            )
            .send(message())
            .await
            .unwrap();
        }
        let wrong = transport(
            &mock,
            Some(("relay@contoso.example", "wrong", Mechanism::Plain)),
        )
        .send(message())
        .await
        .unwrap_err();
        assert_eq!(wrong.status().map(u16::from), Some(535));
        let delivered = mock.delivered();
        assert_eq!(delivered.len(), 2);
        assert_eq!(
            delivered[0].auth,
            Some(AuthSeen::Plain {
                user: "relay@contoso.example".to_string(),
                password: "s3cret pass".to_string()
            })
        );
        assert_eq!(
            delivered[1].auth,
            Some(AuthSeen::Login {
                user: "relay@contoso.example".to_string(),
                password: "s3cret pass".to_string()
            })
        );
        assert_eq!(
            mock.auth_attempts(),
            vec![
                ("PLAIN".to_string(), true),
                ("LOGIN".to_string(), true),
                ("PLAIN".to_string(), false)
            ]
        );
    }

    #[tokio::test]
    async fn rejected_data_is_transient_and_the_next_send_goes_through() {
        let mock = SmtpMock::start().await;
        mock.accept_token("tok");
        mock.reject_next_data(1, 451, "4.3.2 System not accepting network messages");
        let transport = transport(
            &mock,
            Some(("sender@contoso.example", "tok", Mechanism::Xoauth2)),
        );
        let e = transport.send(message()).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(e.status().map(u16::from), Some(451));
        assert!(mock.delivered().is_empty());
        transport.send(message()).await.unwrap();
        assert!(mock.wait_for_deliveries(1, WAIT).await);
        assert_eq!(mock.delivered().len(), 1);

        mock.reject_next_data(1, 554, "5.2.0 STOREDRV.Submission.Exception");
        let e = transport.send(message()).await.unwrap_err();
        assert!(e.is_permanent(), "{e}");
        assert_eq!(mock.delivered().len(), 1);
    }

    #[tokio::test]
    async fn disabled_smtp_auth_answers_535_5_7_139() {
        let mock = SmtpMock::start().await;
        mock.accept_token("tok");
        mock.disable_smtp_auth(true);
        let transport = transport(
            &mock,
            Some(("sender@contoso.example", "tok", Mechanism::Xoauth2)),
        );
        let e = transport.send(message()).await.unwrap_err();
        assert_eq!(e.status().map(u16::from), Some(535));
        assert!(
            e.to_string()
                .contains("5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."),
            "{e}"
        );
        assert!(mock.delivered().is_empty());
        mock.disable_smtp_auth(false);
        transport.send(message()).await.unwrap();
        assert_eq!(
            mock.auth_attempts(),
            vec![
                ("XOAUTH2".to_string(), false),
                ("XOAUTH2".to_string(), true)
            ]
        );
    }

    #[tokio::test]
    async fn mail_without_auth_is_refused_only_when_credentials_are_configured() {
        let mock = SmtpMock::start().await;
        transport(&mock, None).send(message()).await.unwrap();
        assert_eq!(mock.delivered().len(), 1);
        assert_eq!(mock.delivered()[0].auth, None);

        mock.accept_password("u@contoso.example", "p");
        let e = transport(&mock, None).send(message()).await.unwrap_err();
        assert_eq!(e.status().map(u16::from), Some(530));
        assert!(e.to_string().contains("5.7.57"), "{e}");
        assert_eq!(mock.delivered().len(), 1);
    }

    #[tokio::test]
    async fn raw_dialogue_xoauth2_after_334_and_the_other_commands() {
        let mock = SmtpMock::start().await;
        mock.accept_token("EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA");
        let (mut c, greeting) = Raw::connect(&mock).await;
        assert_eq!(
            greeting,
            "220 mock.local Microsoft ESMTP MAIL Service ready"
        );
        let ehlo = c.cmd("EHLO client.example").await;
        assert!(ehlo.contains("250-AUTH PLAIN LOGIN XOAUTH2"), "{ehlo}");
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert!(ehlo.ends_with("\n250 8BITMIME"), "{ehlo}");
        assert_eq!(
            c.cmd("MAIL FROM:<test@contoso.onmicrosoft.com>").await,
            NOT_AUTHENTICATED
        );
        assert_eq!(c.cmd("AUTH XOAUTH2").await, "334 ");
        assert_eq!(c.cmd(VECTOR_B64).await, AUTH_OK);
        assert_eq!(
            c.cmd("AUTH XOAUTH2 x").await,
            "503 5.5.1 Already authenticated"
        );
        assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
        assert_eq!(c.cmd("VRFY x").await, "500 5.5.2 Command not recognized");
        assert_eq!(
            c.cmd("DATA").await,
            "503 5.5.1 Bad sequence of commands: need MAIL"
        );
        assert!(c
            .cmd("mail from: <test@contoso.onmicrosoft.com> BODY=8BITMIME")
            .await
            .starts_with("250 "));
        assert!(c
            .cmd("RCPT TO:<a@fabrikam.example>")
            .await
            .starts_with("250 "));
        assert_eq!(c.cmd("RSET").await, "250 2.0.0 Resetting");
        assert!(c.cmd("MAIL FROM:<>").await.starts_with("250 "));
        assert!(c
            .cmd("RCPT TO:<b@fabrikam.example>")
            .await
            .starts_with("250 "));
        assert_eq!(
            c.cmd("DATA").await,
            "354 Start mail input; end with <CRLF>.<CRLF>"
        );
        c.send("Subject: x\r\n\r\n..leading dot\r\n.\r\n").await;
        let ok = c.read_reply().await;
        assert!(ok.starts_with("250 2.0.0 OK <"), "{ok}");
        assert_eq!(
            c.cmd("QUIT").await,
            "221 2.0.0 Service closing transmission channel"
        );
        let delivered = mock.delivered();
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].mail_from, "");
        assert_eq!(delivered[0].rcpt_to, vec!["b@fabrikam.example"]);
        assert_eq!(delivered[0].data, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(
            delivered[0].auth,
            Some(AuthSeen::Xoauth2 {
                user: "test@contoso.onmicrosoft.com".to_string(),
                token: "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA".to_string()
            })
        );
    }

    #[tokio::test]
    async fn raw_more_than_500_recipients_get_452() {
        let mock = SmtpMock::start().await;
        let (mut c, _) = Raw::connect(&mock).await;
        c.cmd("EHLO client.example").await;
        assert!(c
            .cmd("MAIL FROM:<s@contoso.example>")
            .await
            .starts_with("250 "));
        for i in 0..MAX_RECIPIENTS {
            let r = c.cmd(&format!("RCPT TO:<r{i}@fabrikam.example>")).await;
            assert!(r.starts_with("250 "), "{i}: {r}");
        }
        assert_eq!(
            c.cmd("RCPT TO:<one-too-many@fabrikam.example>").await,
            "452 4.5.3 Too many recipients"
        );
        c.cmd("DATA").await;
        c.send("x\r\n.\r\n").await;
        assert!(c.read_reply().await.starts_with("250 "));
        assert!(mock.wait_for_deliveries(1, WAIT).await);
        assert_eq!(mock.delivered()[0].rcpt_to.len(), MAX_RECIPIENTS);
        assert!(!mock.wait_for_deliveries(2, Duration::from_millis(50)).await);
    }
}
