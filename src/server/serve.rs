//! The daemon's HTTP server loop, against hostile clients: HTTP/1.1 only
//! (no cleartext HTTP/2, whose streams would multiply what one connection
//! may hold), a bounded number of connections, a deadline for request heads
//! (a half-sent head, or an idle keep-alive connection, is closed when it
//! passes), and a shutdown that ends within the grace period whatever the
//! clients do. `axum::serve` offers none of these knobs, so the accept loop
//! is ours and each connection is hyper's HTTP/1 server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::daemon::Daemon;

/// How the HTTP server bounds its clients (`pushwerk serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Connections open at most (`--max-connections`); more wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// How long a client may take to send a request head, and how long an
    /// idle keep-alive connection stays open (`--header-timeout`).
    pub header_timeout: Duration,
    /// How long a client may take to send a request body (`--body-timeout`),
    /// and how long it may read none of an answer: a connection whose
    /// writes make no progress for that long is closed, so a client that
    /// asks and never reads cannot hold a connection slot.
    pub body_timeout: Duration,
    /// How long shutdown may take after SIGTERM (`--grace`): open
    /// connections are closed when it is over.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(10),
        }
    }
}

/// Largest request head accepted (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends, and how much of it at most. See [`WriteDeadline`].
const LINGER_TIME: Duration = Duration::from_secs(2);
/// See [`LINGER_TIME`].
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// Serves the API of `daemon` on `listener` until `shutdown` completes,
/// then stops accepting, lets open requests finish and the daemon shut down
/// (deliveries in flight, final flush), all within `options.grace`;
/// connections still open then are closed.
pub async fn serve(
    listener: TcpListener,
    daemon: Arc<Daemon>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let app = super::router_with(daemon.clone(), options);
    serve_router(listener, app, daemon, options, shutdown).await
}

/// [`serve`] with a router of the caller's (e.g. [`super::router_control`]).
pub async fn serve_router(
    listener: TcpListener,
    app: axum::Router,
    daemon: Arc<Daemon>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: the error is
                    // about this accept, not the listener; wait a little
                    // so that a full table does not spin the loop.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_timeout)
                .max_buf_size(MAX_HEAD.max(8192))
                .max_headers(100);
            let stream = WriteDeadline::new(stream, options.body_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                    // Finish the request in progress, then close.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let deadline = tokio::time::Instant::now() + options.grace;
    tracing::info!(
        target: crate::STATUS,
        "shutting down: finishing requests and deliveries in flight (up to {})",
        humantime::format_duration(options.grace)
    );
    let drain = async {
        loop {
            tokio::select! {
                next = connections.join_next() => if next.is_none() { break },
                _ = tokio::time::sleep_until(deadline) => {
                    let left = connections.len();
                    tracing::warn!(connections = left, "grace period over; closing the connections still open");
                    connections.abort_all();
                    while connections.join_next().await.is_some() {}
                    break;
                }
            }
        }
    };
    // The daemon bounds its own wait for deliveries by the grace period;
    // the bound here is for a store that does not answer (a full disk).
    let stop = async {
        let limit = options.grace + Duration::from_secs(2);
        if tokio::time::timeout(limit, daemon.shutdown())
            .await
            .is_err()
        {
            tracing::error!(
                "the store did not finish the final flush in time; what was accepted had been flushed before it was acknowledged"
            );
        }
    };
    tokio::join!(drain, stop);
}

/// A connection whose writes must make progress: a write (or flush) that
/// stays blocked for `limit` — the client reads none of the answer, while
/// its requests keep the server writing — fails with `TimedOut`, which ends
/// the connection and frees its slot. Without it, clients that pipeline
/// requests and never read the answers hold every connection slot for good
/// (the head timeout does not run while an answer is being written).
///
/// It also closes connections the way RFC 9112 §9.6 asks ("lingering
/// close"): when the server ends a connection whose client is still
/// sending — an answer of 413 or 401 given before a large body was read —
/// closing the socket at once makes the kernel answer the unread bytes with
/// a reset, and a reset can destroy the answer before the client reads it
/// (seen in CI: a 2 MiB event got a connection error instead of its 413).
/// So the shutdown first half-closes (the client sees the end of the
/// answer), then reads and discards what the client still sends until it
/// closes too, for at most [`LINGER_TIME`] and [`LINGER_BYTES`].
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Started when a write first blocks; cleared by any progress.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Set once our side is half-closed; then the linger runs.
    half_closed: bool,
    /// The end of the linger, started with it.
    linger: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Bytes discarded while lingering.
    lingered: usize,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
            half_closed: false,
            linger: None,
            lingered: 0,
        }
    }

    /// Maps a blocked write to `TimedOut` once it has been blocked for
    /// `limit`; any result other than `Pending` clears the clock.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read none of the answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite
    for WriteDeadline<S>
{
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if !self.half_closed {
            let poll = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
            match self.watch(cx, poll) {
                Poll::Ready(Ok(())) => self.half_closed = true,
                other => return other,
            }
        }
        // Lingering close: discard what the client still sends until it
        // closes, errs, or the linger's bounds are reached.
        let mut scratch = [0u8; 8192];
        loop {
            if self.lingered >= LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => self.lingered += buf.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let timer = self
                        .linger
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER_TIME)));
                    return match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}
