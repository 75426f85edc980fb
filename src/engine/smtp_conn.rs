//! One SMTP session over a socket pushwerk bounds itself.
//!
//! lettre checks its reply-line limit only after a whole line has been
//! read, so a server sending `220-` and then endless bytes without a
//! newline grew one delivery's memory without limit (2 GB per attempt in
//! the adversarial review). Here lettre is handed a stream that refuses to
//! read more than [`MAX_SMTP_READ`] bytes per connection and gives up when
//! the server says nothing for the target's timeout; the whole session has
//! a deadline too. The cap sits under TLS in every mode: for `tls: tls` the
//! handshake runs over the capped socket (lettre's own TLS settings, as
//! before), and lettre's STARTTLS upgrade wraps the capped socket it was
//! given, so the bound holds before and after the upgrade.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::SmtpTls;

/// The most a server may send on one connection. A session for one mail
/// (greeting, EHLO, AUTH, MAIL, RCPT per recipient, DATA, QUIT) needs a
/// few kilobytes; 1 MiB leaves room for chatty servers and bounds the
/// memory of the (at most eight) deliveries in flight per server.
pub const MAX_SMTP_READ: u64 = 1024 * 1024;

/// How many target timeouts a whole session may take: the timeout bounds
/// each wait for a reply, this bounds a server that drips a byte at a time.
const SESSION_TIMEOUTS: u32 = 10;

/// Why a session ended without a reply to classify.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The server sent more than [`MAX_SMTP_READ`] bytes: cut off.
    #[error("SMTP reply over {limit} bytes on one connection; the connection was closed")]
    TooLarge {
        /// The limit that was passed.
        limit: u64,
    },
    /// The whole session took longer than its deadline.
    #[error("SMTP session not finished within {0:?}; the connection was closed")]
    Deadline(Duration),
    /// The TCP connection could not be made.
    #[error("connection failed")]
    Connect(#[source] io::Error),
    /// lettre's error: a reply with a code, or a protocol or network error.
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// The login a session performs after EHLO (and STARTTLS).
#[derive(Debug)]
pub struct Login<'a> {
    /// lettre's credentials (user name and password or access token).
    pub credentials: Credentials,
    /// The mechanisms to offer, in order of preference.
    pub mechanisms: &'a [Mechanism],
}

/// Connects to `host:port`, secures the connection as `tls` says, logs in
/// and sends `message`; the socket reads at most [`MAX_SMTP_READ`] bytes.
pub async fn send_bounded(
    host: &str,
    port: u16,
    tls: SmtpTls,
    login: Option<Login<'_>>,
    envelope: &Envelope,
    message: &[u8],
    timeout: Duration,
) -> Result<Response, SessionError> {
    send_bounded_with_limit(
        host,
        port,
        tls,
        login,
        envelope,
        message,
        timeout,
        MAX_SMTP_READ,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn send_bounded_with_limit(
    host: &str,
    port: u16,
    tls: SmtpTls,
    login: Option<Login<'_>>,
    envelope: &Envelope,
    message: &[u8],
    timeout: Duration,
    limit: u64,
) -> Result<Response, SessionError> {
    let over = Arc::new(AtomicBool::new(false));
    let deadline = timeout.saturating_mul(SESSION_TIMEOUTS);
    let session = session(
        host,
        port,
        tls,
        login,
        envelope,
        message,
        timeout,
        limit,
        over.clone(),
    );
    let result = tokio::time::timeout(deadline, session).await;
    // The stream's own error says "over the limit" too, but lettre wraps it
    // as a network error; the flag tells it apart whatever lettre makes of it.
    if over.load(Ordering::Relaxed) {
        return Err(SessionError::TooLarge { limit });
    }
    match result {
        Err(_) => Err(SessionError::Deadline(deadline)),
        Ok(r) => r,
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    host: &str,
    port: u16,
    tls: SmtpTls,
    login: Option<Login<'_>>,
    envelope: &Envelope,
    message: &[u8],
    timeout: Duration,
    limit: u64,
    over: Arc<AtomicBool>,
) -> Result<Response, SessionError> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(SessionError::Connect(e)),
        Err(_) => {
            return Err(SessionError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connection timed out after {timeout:?}"),
            )));
        }
    };
    let peer = tcp.peer_addr().map_err(SessionError::Connect)?;
    let capped = Capped {
        inner: tcp,
        peer,
        read: 0,
        limit,
        idle: timeout,
        timer: None,
        over,
    };
    let hello = ClientId::default();
    let params = || TlsParameters::new(host.to_owned());
    let mut conn = match tls {
        SmtpTls::Tls => {
            #[allow(deprecated)]
            let mut stream =
                lettre::transport::smtp::client::AsyncNetworkStream::use_existing_tokio1(Box::new(
                    capped,
                ));
            stream.upgrade_tls(params()?).await?;
            AsyncSmtpConnection::connect_with_transport(Box::new(Secured(stream)), &hello).await?
        }
        SmtpTls::None | SmtpTls::Starttls => {
            AsyncSmtpConnection::connect_with_transport(Box::new(capped), &hello).await?
        }
    };
    if tls == SmtpTls::Starttls {
        // lettre upgrades the stream it was given: TLS over the capped socket.
        conn.starttls(params()?, &hello).await?;
    }
    if let Some(login) = login {
        conn.auth(login.mechanisms, &login.credentials).await?;
    }
    let result = conn.send(envelope, message).await;
    // As lettre's transport does without a pool: QUIT and close.
    conn.abort().await;
    Ok(result?)
}

/// A TCP stream that reads at most `limit` bytes in all and fails a read
/// that waits longer than `idle` for the server.
#[derive(Debug)]
struct Capped {
    inner: TcpStream,
    peer: SocketAddr,
    read: u64,
    limit: u64,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    over: Arc<AtomicBool>,
}

impl AsyncRead for Capped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read >= this.limit {
            this.over.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(over_limit(this.limit)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.timer = None;
                // One read is at most the reader's buffer (8 KiB for
                // lettre, a TLS record for rustls) past the limit.
                this.read += (buf.filled().len() - before) as u64;
                if this.read > this.limit {
                    this.over.store(true, Ordering::Relaxed);
                    return Poll::Ready(Err(over_limit(this.limit)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.timer = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no reply from the SMTP server within {idle:?}"),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

fn over_limit(limit: u64) -> io::Error {
    io::Error::other(format!("SMTP reply over {limit} bytes"))
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Capped {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

/// lettre's TLS stream (over [`Capped`]) seen through tokio's traits, so
/// that lettre can run the session over it.
#[allow(deprecated)]
#[derive(Debug)]
struct Secured(lettre::transport::smtp::client::AsyncNetworkStream);

impl AsyncRead for Secured {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let dst = buf.initialize_unfilled();
        match futures_io::AsyncRead::poll_read(Pin::new(&mut self.get_mut().0), cx, dst) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Secured {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures_io::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().0), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_close(Pin::new(&mut self.get_mut().0), cx)
    }
}

impl AsyncTokioStream for Secured {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}
