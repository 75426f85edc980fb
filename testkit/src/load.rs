//! Stand-ins for the load tool (`examples/load.rs`) and benches: a sink that
//! answers every POST with 202 and measures ingest → delivery latency, and a
//! token endpoint that answers every refresh after a set delay. Unlike the
//! mocks in [`crate::microsoft`] and [`crate::identity`] they check nothing,
//! so a measurement shows the engine's limit, not the mock's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;

/// Latencies kept at most (memory bound of a long soak).
pub const MAX_LATENCIES: usize = 5_000_000;

/// Now, in nanoseconds since the Unix epoch (what events carry as `sent_ns`).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// Serves `app` on `127.0.0.1:0` in a background task; returns its address.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// What the sink saw: deliveries counted, first and last arrival, and the
/// latency of each delivery whose body carried its event's send time.
#[derive(Debug, Default)]
pub struct Sink {
    /// Requests received.
    pub count: AtomicU64,
    /// First arrival (unix ns; `u64::MAX` after [`Sink::reset`] until one arrives).
    pub first_ns: AtomicU64,
    /// Last arrival (unix ns).
    pub last_ns: AtomicU64,
    /// Arrival minus send time of each delivery, up to [`MAX_LATENCIES`].
    pub latencies_ns: Mutex<Vec<u64>>,
    /// Requests carrying `Authorization: Bearer <expired token>`.
    pub expired_token_seen: AtomicU64,
    /// The access token counted in `expired_token_seen`.
    expired_token: String,
}

impl Sink {
    /// A sink counting requests that still carry `expired_token`.
    pub fn new(expired_token: &str) -> Sink {
        let sink = Sink {
            expired_token: expired_token.to_owned(),
            ..Sink::default()
        };
        sink.reset();
        sink
    }

    /// Forgets everything seen (between two measurements).
    pub fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.first_ns.store(u64::MAX, Ordering::SeqCst);
        self.last_ns.store(0, Ordering::SeqCst);
        self.latencies_ns.lock().unwrap().clear();
        self.expired_token_seen.store(0, Ordering::SeqCst);
    }

    /// Serves the sink on a free loopback port: every POST (any path) gets
    /// `202` with a `request-id`, as Graph `sendMail` answers.
    pub async fn start(self: &Arc<Self>) -> SocketAddr {
        serve(
            Router::new()
                .fallback(post(sink_handler))
                .with_state(self.clone()),
        )
        .await
    }
}

/// The send time an event put into the pushed body: the Graph mail's
/// subject, or the HTTP push's `sent_ns`.
fn sent_ns(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let field = v.pointer("/message/subject").or_else(|| v.get("sent_ns"))?;
    match field {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

async fn sink_handler(
    State(sink): State<Arc<Sink>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let now = unix_ns();
    sink.count.fetch_add(1, Ordering::Relaxed);
    sink.first_ns.fetch_min(now, Ordering::Relaxed);
    sink.last_ns.fetch_max(now, Ordering::Relaxed);
    let expired = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !sink.expired_token.is_empty() && t == sink.expired_token);
    if expired {
        sink.expired_token_seen.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(sent) = sent_ns(&body) {
        let mut l = sink.latencies_ns.lock().unwrap();
        if l.len() < MAX_LATENCIES {
            l.push(now.saturating_sub(sent));
        }
    }
    (StatusCode::ACCEPTED, [("request-id", "sink")])
}

/// A token endpoint that answers every refresh-token grant after `delay`
/// (a real one takes 100–300 ms) with a new access and refresh token.
#[derive(Debug)]
pub struct TokenEndpoint {
    /// Requests received.
    pub requests: AtomicU64,
    delay: Duration,
}

impl TokenEndpoint {
    /// An endpoint answering after `delay`.
    pub fn new(delay: Duration) -> TokenEndpoint {
        TokenEndpoint {
            requests: AtomicU64::new(0),
            delay,
        }
    }

    /// Serves it on a free loopback port at `POST /token`.
    pub async fn start(self: &Arc<Self>) -> SocketAddr {
        serve(
            Router::new()
                .route("/token", post(token_handler))
                .with_state(self.clone()),
        )
        .await
    }
}

async fn token_handler(State(t): State<Arc<TokenEndpoint>>, body: Bytes) -> impl IntoResponse {
    let n = t.requests.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(t.delay).await;
    if !String::from_utf8_lossy(&body).contains("grant_type=refresh_token") {
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/json")],
            r#"{"error":"unsupported_grant_type"}"#.to_owned(),
        );
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        format!(
            r#"{{"token_type":"Bearer","scope":"offline_access bench","expires_in":3600,"ext_expires_in":3600,"access_token":"at-refreshed-{n}","refresh_token":"rt-rotated-{n}"}}"#
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sink_counts_measures_latency_and_spots_the_expired_token() {
        let sink = Arc::new(Sink::new("at-old"));
        let addr = sink.start().await;
        let client = crate::daemon::http_client().build().unwrap();
        let sent = unix_ns();
        let r = client
            .post(format!("http://{addr}/hook"))
            .bearer_auth("at-old")
            .body(format!(r#"{{"sent_ns":{sent}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(r.headers()["request-id"], "sink");
        assert_eq!(sink.count.load(Ordering::SeqCst), 1);
        assert_eq!(sink.expired_token_seen.load(Ordering::SeqCst), 1);
        assert_eq!(sink.latencies_ns.lock().unwrap().len(), 1);
        sink.reset();
        assert_eq!(sink.count.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_token_endpoint_answers_refresh_grants_only() {
        let t = Arc::new(TokenEndpoint::new(Duration::ZERO));
        let addr = t.start().await;
        let client = crate::daemon::http_client().build().unwrap();
        let url = format!("http://{addr}/token");
        let ok = client
            .post(&url)
            .body("grant_type=refresh_token&refresh_token=x")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let body: serde_json::Value = ok.json().await.unwrap();
        assert_eq!(body["access_token"], "at-refreshed-1");
        let bad = client
            .post(&url)
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(t.requests.load(Ordering::SeqCst), 2);
    }
}
