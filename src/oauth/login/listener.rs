//! The loopback listener that takes the browser's redirect for `oauth
//! login`: it reads request heads within a deadline, answers strays and bad
//! requests itself, and keeps the one good callback open until the login
//! has an outcome. Apart from the flow itself because this is the part that
//! faces whatever connects to the port.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{
    html_escape, LoginError, LoginRequest, LOGIN_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD, READ_TIMEOUT,
};

/// A loopback listener for the redirect.
pub struct RedirectListener {
    listener: TcpListener,
    /// `http://localhost:PORT/callback`.
    pub redirect_uri: String,
}

/// The browser's request that carried the code, kept open until the login
/// has an outcome: the page says "signed in" only once tokens are stored.
pub struct Callback {
    socket: TcpStream,
    /// The authorization code (state checked).
    pub code: String,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback").finish_non_exhaustive()
    }
}

impl Callback {
    /// Answers the browser: success, or why the login failed (escaped).
    pub async fn answer(mut self, outcome: Result<(), String>) {
        let (status, page) = match outcome {
            Ok(()) => (
                "200 OK",
                "<h1>pushwerk: signed in</h1><p>The tokens are stored. You can close this window.</p>"
                    .to_owned(),
            ),
            Err(reason) => (
                "500 Internal Server Error",
                format!(
                    "<h1>pushwerk: login failed</h1><p>{}</p>",
                    html_escape(&reason)
                ),
            ),
        };
        respond(&mut self.socket, status, &page).await;
    }
}

async fn respond(socket: &mut TcpStream, status: &str, page: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    let _ = tokio::time::timeout(READ_TIMEOUT, socket.write_all(response.as_bytes())).await;
    let _ = socket.shutdown().await;
}

/// Reads a request head (at most [`MAX_HEAD`] bytes, within
/// [`READ_TIMEOUT`]) and returns the request target; `None` for a client
/// that sends nothing usable in time.
async fn read_target(socket: &mut TcpStream) -> Option<String> {
    let read = async {
        let mut buf = vec![0u8; MAX_HEAD];
        let mut len = 0;
        while len < buf.len() {
            let n = socket.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf[..len]).into_owned();
        let mut line = head.lines().next()?.split_whitespace();
        let (_method, target) = (line.next()?, line.next()?);
        Some(target.to_owned())
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

impl RedirectListener {
    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub async fn bind(port: u16) -> Result<RedirectListener, LoginError> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| LoginError::Listen(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| LoginError::Listen(e.to_string()))?
            .port();
        Ok(RedirectListener {
            listener,
            redirect_uri: format!("http://localhost:{port}/callback"),
        })
    }

    /// Serves requests until one to `/callback` carries a code with the
    /// right `state`, and returns it with the browser's connection still
    /// open (answer it with [`Callback::answer`]).
    ///
    /// Connections are read side by side, each within [`READ_TIMEOUT`], so
    /// a client that connects and sends nothing holds up nothing. Another
    /// path gets 404; a `/callback` without a code, garbage, or a `state`
    /// other than the one sent gets 400 and the login keeps waiting. A
    /// wrong `state` is refused and logged as a warning but does not end
    /// the login: ending it would let any web page the browser shows abort
    /// a sign-in by requesting `localhost:PORT/callback?state=x`, while
    /// refusing it already keeps a foreign code out. An `error` redirect
    /// with the right `state` (or none) ends the login: the user or the
    /// provider said no. Gives up after [`LOGIN_TIMEOUT`].
    pub async fn wait(&self, login: &LoginRequest) -> Result<Callback, LoginError> {
        self.wait_for(login, LOGIN_TIMEOUT).await
    }

    async fn wait_for(
        &self,
        login: &LoginRequest,
        timeout: Duration,
    ) -> Result<Callback, LoginError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut reading = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept(), if reading.len() < MAX_CONNECTIONS => {
                    let (mut socket, _) = accepted.map_err(|e| LoginError::Listen(e.to_string()))?;
                    reading.spawn(async move {
                        let target = read_target(&mut socket).await;
                        (socket, target)
                    });
                }
                Some(done) = reading.join_next(), if !reading.is_empty() => {
                    let Ok((mut socket, Some(target))) = done else { continue };
                    let path = target.split('?').next().unwrap_or_default();
                    if path != "/callback" {
                        let page = "<h1>pushwerk: not found</h1><p>This listener only takes the sign-in redirect.</p>";
                        respond(&mut socket, "404 Not Found", page).await;
                        continue;
                    }
                    match login.code_from_redirect(&format!("http://localhost{target}")) {
                        Ok(code) => return Ok(Callback { socket, code }),
                        Err(e @ LoginError::Denied { .. }) => {
                            let page = format!("<h1>pushwerk: login failed</h1><p>{}</p>", html_escape(&e.to_string()));
                            respond(&mut socket, "400 Bad Request", &page).await;
                            return Err(e);
                        }
                        Err(e) => {
                            if matches!(e, LoginError::StateMismatch) {
                                tracing::warn!("refused a redirect with a `state` pushwerk did not send (forged, or from an older login); still waiting for the real one");
                            }
                            let page = format!(
                                "<h1>pushwerk: not the sign-in redirect</h1><p>{}</p><p>pushwerk is still waiting for the redirect of the sign-in it started.</p>",
                                html_escape(&e.to_string())
                            );
                            respond(&mut socket, "400 Bad Request", &page).await;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Err(LoginError::Timeout),
            }
        }
    }
}
