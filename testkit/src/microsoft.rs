//! Local mocks of the Microsoft services pushwerk delivers to, for the
//! dispatcher tests, behaving as `../shared/reference/microsoft-apis.md`
//! describes:
//!
//! - [`GraphMock`]: Microsoft Graph `sendMail` (§2; error shape §2.4, errors
//!   §2.5, checklist §2.8) — strict JSON parsing, recipient and attachment
//!   checks, the 4 MB limit, 202 with `request-id` / `client-request-id` /
//!   `Date`, and switches for 403, 429, 503/504 and raw answers.
//! - [`BingMock`]: Microsoft Advertising REST v13 `ApplyOfflineConversions`
//!   (§3.1, §3.3, §3.5; SOAP is not mocked) — the four authentication headers,
//!   `AdApiFaultDetail` / `ApiFaultDetail` faults, per-item `BatchError`s in a
//!   200 `PartialErrors` answer, de-duplication, and switches for 117 and 500.
//! - [`HttpReceiver`]: a plain endpoint standing in for a CRM or webhook
//!   receiver, answering `200 {"ok":true}` unless told otherwise.
//!
//! Every mock binds `127.0.0.1:0`, serves in a tokio task that is aborted when
//! the mock is dropped, and records every request (with the status it got)
//! before answering it, so a client that has its answer always finds its
//! request in [`requests`](GraphMock::requests).
//!
//! Bearer tokens are opaque here: each mock accepts exactly the tokens the
//! test registered with `accept_token`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

/// The most a mock reads of a request body; a longer body is answered as too
/// large (Graph) or treated as empty (the others).
const READ_LIMIT: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Shared pieces

/// One request a mock received, and the status it answered with.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `GET`, …
    pub method: String,
    /// The request target: path plus `?query` when there is one.
    pub path: String,
    /// Every header as received; names are lower-case.
    pub headers: Vec<(String, String)>,
    /// The raw request body.
    pub body: Vec<u8>,
    /// When the request arrived.
    pub at: Instant,
    /// The HTTP status the mock answered with.
    pub status: u16,
}

impl Recorded {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics (naming the body) when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "recorded {} {} body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }
}

/// A scripted answer for the next request(s), overriding normal behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    /// A raw answer: this status, these headers and this body, as given
    /// ([`BingMock`] adds its `TrackingId` header when the script has none).
    Status {
        /// HTTP status (100–999).
        status: u16,
        /// Response headers (names and values must be valid HTTP).
        headers: Vec<(String, String)>,
        /// Response body.
        body: String,
    },
}

impl Scripted {
    /// Panics (in the test, not in the server) on an unusable status or header.
    fn check(&self) {
        let Scripted::Status {
            status, headers, ..
        } = self;
        assert!(
            StatusCode::from_u16(*status).is_ok(),
            "scripted status {status} is not an HTTP status"
        );
        for (name, value) in headers {
            assert!(
                HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "scripted header name {name:?} is not valid"
            );
            assert!(
                HeaderValue::from_str(value).is_ok(),
                "scripted header value {value:?} is not valid"
            );
        }
    }

    fn answer(self) -> Answer {
        let Scripted::Status {
            status,
            headers,
            body,
        } = self;
        Answer {
            status,
            headers,
            body: body.into_bytes(),
        }
    }
}

/// What a mock answers.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, mut headers: Vec<(String, String)>, body: &Value) -> Answer {
        headers.insert(0, h("Content-Type", "application/json; charset=utf-8"));
        Answer {
            status,
            headers,
            body: serde_json::to_vec(body).expect("JSON values serialise"),
        }
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

fn h(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// A FIFO of switches, each good for a number of requests.
struct Queue<T> {
    items: VecDeque<(usize, T)>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            items: VecDeque::new(),
        }
    }
}

impl<T: Clone> Queue<T> {
    /// Queues `item` for the `count` requests after those already queued.
    fn push(&mut self, count: usize, item: T) {
        if count > 0 {
            self.items.push_back((count, item));
        }
    }

    /// The switch for the current request, if any.
    fn pop(&mut self) -> Option<T> {
        let front = self.items.front_mut()?;
        front.0 -= 1;
        let item = front.1.clone();
        if front.0 == 0 {
            self.items.pop_front();
        }
        Some(item)
    }
}

/// A request as the mocks see it.
struct Incoming {
    method: String,
    /// The path without the query.
    path: String,
    /// The path with `?query`, as recorded.
    target: String,
    headers: HeaderMap,
    body: Bytes,
    /// The body was longer than [`READ_LIMIT`] (and `body` is empty).
    oversized: bool,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The token of an `Authorization: Bearer …` header.
    fn bearer(&self) -> Option<&str> {
        let (scheme, token) = self.header("authorization")?.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }

    /// The lower-case media type of `Content-Type`, without parameters.
    fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }
}

/// The requests a mock received, and a wake-up for waiters.
#[derive(Default)]
struct Recorder {
    list: Mutex<Vec<Recorded>>,
    notify: Notify,
}

impl Recorder {
    fn record(&self, req: &Incoming, at: Instant, status: u16) {
        let headers = req
            .headers
            .iter()
            .map(|(n, v)| {
                let value = v
                    .to_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|_| String::from_utf8_lossy(v.as_bytes()).into_owned());
                (n.as_str().to_string(), value)
            })
            .collect();
        lock(&self.list).push(Recorded {
            method: req.method.clone(),
            path: req.target.clone(),
            headers,
            body: req.body.to_vec(),
            at,
            status,
        });
        self.notify.notify_waiters();
    }

    fn all(&self) -> Vec<Recorded> {
        lock(&self.list).clone()
    }

    fn len(&self) -> usize {
        lock(&self.list).len()
    }

    async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let reached = async {
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                // Registered before the check, so no recording is missed.
                notified.as_mut().enable();
                if self.len() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, reached).await.is_ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What each mock does with a request.
trait Service: Send + Sync + 'static {
    fn answer(&self, req: &Incoming) -> Answer;
    fn recorder(&self) -> &Recorder;
}

/// A served mock: its address and the task serving it.
struct Running {
    base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S: Service>(service: Arc<S>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let app = Router::new().fallback(handle::<S>).with_state(service);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Running {
        base_url: format!("http://{addr}"),
        task,
    }
}

async fn handle<S: Service>(State(service): State<Arc<S>>, request: Request) -> Response {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let (body, oversized) = match axum::body::to_bytes(body, READ_LIMIT).await {
        Ok(bytes) => (bytes, false),
        Err(_) => (Bytes::new(), true),
    };
    let incoming = Incoming {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        headers: parts.headers,
        body,
        oversized,
    };
    let answer = service.answer(&incoming);
    service.recorder().record(&incoming, at, answer.status);
    answer.into_response()
}

/// A random GUID-looking id (version 4 layout), e.g. for `request-id`.
pub fn guid() -> String {
    let mut v: u128 = rand::rng().random();
    v = (v & !(0xF << 76)) | (0x4 << 76);
    v = (v & !(0x3 << 62)) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        v >> 96,
        (v >> 80) & 0xFFFF,
        (v >> 64) & 0xFFFF,
        (v >> 48) & 0xFFFF,
        v & 0xFFFF_FFFF_FFFF
    )
}

/// The HTTP `Date` value for now (RFC 7231 IMF-fixdate).
fn http_date() -> String {
    Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// A JSON value as it would appear in an OData "literal" message, shortened.
fn literal(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

// ---------------------------------------------------------------------------
// Microsoft Graph sendMail

/// Graph refuses `sendMail` requests over about 4 MB (§2.6).
pub const GRAPH_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

const MESSAGE_TYPE: &str = "microsoft.graph.message";
const TOP_PROPS: [&str; 2] = ["message", "saveToSentItems"];
const MESSAGE_PROPS: [&str; 9] = [
    "subject",
    "body",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "from",
    "internetMessageHeaders",
    "attachments",
];
const ATTACHMENT_PROPS: [&str; 9] = [
    "@odata.type",
    "name",
    "contentType",
    "contentBytes",
    "contentId",
    "contentLocation",
    "isInline",
    "size",
    "id",
];
const FILE_ATTACHMENT: &str = "#microsoft.graph.fileAttachment";

/// A running mock of Microsoft Graph `sendMail`; the server stops when this
/// is dropped.
///
/// Serves `POST /v1.0/me/sendMail` and `POST /v1.0/users/{id}/sendMail`
/// (segments case-insensitive). In order: a queued switch
/// ([`throttle_next`](Self::throttle_next),
/// [`unavailable_next`](Self::unavailable_next),
/// [`script_next`](Self::script_next)) answers any request; another path →
/// 404 `ResourceNotFound`; another method → 405; a body over 4 MB → 413
/// `RequestEntityTooLarge`; a missing or unaccepted bearer token → 401
/// `InvalidAuthenticationToken`; [`deny_mail_send`](Self::deny_mail_send) →
/// 403 `ErrorAccessDenied`; then the body is checked (below) and a good one
/// answered `202 Accepted` with an empty body.
///
/// `Content-Type: application/json` bodies are parsed strictly: unknown
/// properties (case-sensitive) → 400 `RequestBodyRead`; a wrong JSON type, a
/// `body.contentType` other than Text/HTML (any case), a non-boolean
/// `saveToSentItems`, an attachment that is not a
/// `#microsoft.graph.fileAttachment` or whose `contentBytes` is not base64 →
/// 400 `RequestBodyRead`; an attachment without `contentBytes` → 400
/// `ErrorInvalidAttachment`; no message → 400 `ErrorInvalidParameter`; no
/// To/Cc/Bcc recipient or an address without `@` → 400
/// `ErrorInvalidRecipients`; an `internetMessageHeaders` name not starting
/// with `x-` → 400 `InvalidInternetMessageHeader`. `text/plain` bodies (MIME
/// mode) must be base64, else 400 `ErrorMimeContentInvalidBase64String`; other
/// content types → 415 `UnsupportedMediaType`.
///
/// Every answer but a scripted one carries `request-id` (a fresh GUID),
/// `client-request-id` (the client's, else the `request-id`) and `Date`;
/// errors have the §2.4 JSON body (`application/json; charset=utf-8`) with
/// `innerError.date` (no zone), `request-id` and `client-request-id`.
pub struct GraphMock {
    shared: Arc<GraphShared>,
    running: Running,
}

struct GraphShared {
    recorder: Recorder,
    state: Mutex<GraphState>,
}

#[derive(Default)]
struct GraphState {
    tokens: HashSet<String>,
    token_prefixes: Vec<String>,
    deny: bool,
    next: Queue<GraphSwitch>,
    sent: Vec<Value>,
}

#[derive(Clone)]
enum GraphSwitch {
    Throttle(Option<u64>),
    Unavailable(u16, Option<u64>),
    Script(Scripted),
}

impl GraphMock {
    /// Binds `127.0.0.1:0` and serves in a tokio task until dropped.
    pub async fn start() -> GraphMock {
        let shared = Arc::new(GraphShared {
            recorder: Recorder::default(),
            state: Mutex::new(GraphState::default()),
        });
        let running = serve(Arc::clone(&shared)).await;
        GraphMock { shared, running }
    }

    /// `http://127.0.0.1:PORT` (pushwerk appends `/v1.0/me/sendMail`).
    pub fn base_url(&self) -> String {
        self.running.base_url.clone()
    }

    /// Accepts `Authorization: Bearer {token}` from now on.
    pub fn accept_token(&self, token: &str) {
        self.state().tokens.insert(token.to_string());
    }

    /// Accepts every bearer token starting with `prefix`: the identity
    /// mock's tokens for this resource (`mock-at.<resource-host>.`), so a
    /// token it issues during a test is accepted and one for another
    /// resource is not.
    pub fn accept_token_prefix(&self, prefix: &str) {
        self.state().token_prefixes.push(prefix.to_string());
    }

    /// Switch: every request with an accepted token gets 403
    /// `ErrorAccessDenied` (a token without `Mail.Send`).
    pub fn deny_mail_send(&self, deny: bool) {
        self.state().deny = deny;
    }

    /// The next `count` requests (after switches already queued) get 429
    /// `TooManyRequests` (§2.5 sample body), with `Retry-After: {secs}` when
    /// `retry_after` is `Some`.
    pub fn throttle_next(&self, count: usize, retry_after: Option<u64>) {
        self.state()
            .next
            .push(count, GraphSwitch::Throttle(retry_after));
    }

    /// The next `count` requests (after switches already queued) get `status`
    /// (503 → `serviceNotAvailable`, 504 → `timeout`, other →
    /// `generalException`), with `Retry-After` when `retry_after` is `Some`.
    pub fn unavailable_next(&self, count: usize, status: u16, retry_after: Option<u64>) {
        assert!(StatusCode::from_u16(status).is_ok(), "status {status}");
        self.state()
            .next
            .push(count, GraphSwitch::Unavailable(status, retry_after));
    }

    /// The next `count` requests (after switches already queued) get `answer`
    /// exactly as given.
    pub fn script_next(&self, count: usize, answer: Scripted) {
        answer.check();
        self.state().next.push(count, GraphSwitch::Script(answer));
    }

    /// Every request, in order, with the status it got.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorder.all()
    }

    /// The JSON bodies of the accepted (202) requests, in order (a MIME-mode
    /// request is recorded as `{"mime": "<decoded text>"}`).
    pub fn sent_messages(&self) -> Vec<Value> {
        self.state().sent.clone()
    }

    /// Waits until at least `n` requests were received (and answered), or
    /// `timeout` passed; returns whether `n` was reached.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.shared.recorder.wait_for(n, timeout).await
    }

    fn state(&self) -> MutexGuard<'_, GraphState> {
        lock(&self.shared.state)
    }
}

/// A Graph error before the ids and headers are added.
struct GraphError {
    status: u16,
    code: &'static str,
    message: String,
    headers: Vec<(String, String)>,
}

fn graph_error(status: u16, code: &'static str, message: impl Into<String>) -> GraphError {
    GraphError {
        status,
        code,
        message: message.into(),
        headers: Vec::new(),
    }
}

fn body_read(message: impl Into<String>) -> GraphError {
    graph_error(400, "RequestBodyRead", message)
}

fn unknown_property(name: &str, ty: &str) -> GraphError {
    body_read(format!(
        "The property '{name}' does not exist on type '{ty}'. Make sure to only use property names that are defined by the type or mark the type as open type."
    ))
}

fn cannot_convert(v: &Value, ty: &str) -> GraphError {
    body_read(format!(
        "Cannot convert the literal '{}' to the expected type '{ty}'.",
        literal(v)
    ))
}

fn invalid_recipients(detail: String) -> GraphError {
    graph_error(
        400,
        "ErrorInvalidRecipients",
        format!("At least one recipient isn't valid., {detail}"),
    )
}

/// The request's ids, shared by the headers and `innerError`.
struct GraphIds {
    request_id: String,
    client_request_id: String,
}

impl GraphIds {
    fn headers(&self) -> Vec<(String, String)> {
        vec![
            h("request-id", &self.request_id),
            h("client-request-id", &self.client_request_id),
            h("Date", http_date()),
        ]
    }

    fn error(&self, e: GraphError) -> Answer {
        let date = Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
        let inner = if e.status == 429 {
            json!({
                "code": "429",
                "date": date,
                "message": "Please retry after",
                "request-id": self.request_id,
                "client-request-id": self.client_request_id,
                "status": "429",
            })
        } else {
            json!({
                "date": date,
                "request-id": self.request_id,
                "client-request-id": self.client_request_id,
            })
        };
        let body = json!({
            "error": { "code": e.code, "message": e.message, "innerError": inner }
        });
        let mut headers = self.headers();
        headers.extend(e.headers);
        Answer::json(e.status, headers, &body)
    }
}

impl Service for GraphShared {
    fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    fn answer(&self, req: &Incoming) -> Answer {
        let request_id = guid();
        let client_request_id = req
            .header("client-request-id")
            .map(str::to_owned)
            .unwrap_or_else(|| request_id.clone());
        let ids = GraphIds {
            request_id,
            client_request_id,
        };
        let mut state = lock(&self.state);
        if let Some(switch) = state.next.pop() {
            return match switch {
                GraphSwitch::Script(s) => s.answer(),
                GraphSwitch::Throttle(retry_after) => {
                    let mut e = graph_error(429, "TooManyRequests", "Please retry again later.");
                    if let Some(secs) = retry_after {
                        e.headers.push(h("Retry-After", secs.to_string()));
                    }
                    ids.error(e)
                }
                GraphSwitch::Unavailable(status, retry_after) => {
                    let mut e = match status {
                        503 => graph_error(
                            503,
                            "serviceNotAvailable",
                            "The service is temporarily unavailable. Please retry later.",
                        ),
                        504 => graph_error(
                            504,
                            "timeout",
                            "The operation timed out before it could be completed.",
                        ),
                        other => graph_error(other, "generalException", "An error occurred."),
                    };
                    if let Some(secs) = retry_after {
                        e.headers.push(h("Retry-After", secs.to_string()));
                    }
                    ids.error(e)
                }
            };
        }
        match graph_process(&state, req) {
            Ok(message) => {
                state.sent.push(message);
                Answer {
                    status: 202,
                    headers: ids.headers(),
                    body: Vec::new(),
                }
            }
            Err(e) => ids.error(e),
        }
    }
}

/// Whether `path` is `/v1.0/me/sendMail` or `/v1.0/users/{id}/sendMail`.
fn is_send_mail(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", version, me, send] => {
            version.eq_ignore_ascii_case("v1.0")
                && me.eq_ignore_ascii_case("me")
                && send.eq_ignore_ascii_case("sendMail")
        }
        ["", version, users, id, send] => {
            version.eq_ignore_ascii_case("v1.0")
                && users.eq_ignore_ascii_case("users")
                && !id.is_empty()
                && send.eq_ignore_ascii_case("sendMail")
        }
        _ => false,
    }
}

/// Checks a request past the switches; `Ok` = the message to record.
fn graph_process(state: &GraphState, req: &Incoming) -> Result<Value, GraphError> {
    if !is_send_mail(&req.path) {
        let segment = req.path.rsplit('/').next().unwrap_or_default();
        return Err(graph_error(
            404,
            "ResourceNotFound",
            format!("Resource not found for the segment '{segment}'."),
        ));
    }
    if req.method != "POST" {
        let mut e = graph_error(
            405,
            "Request_BadRequest",
            format!(
                "The HTTP method '{}' is not allowed for sendMail.",
                req.method
            ),
        );
        e.headers.push(h("Allow", "POST"));
        return Err(e);
    }
    if req.oversized || req.body.len() > GRAPH_MAX_REQUEST_BYTES {
        return Err(graph_error(
            413,
            "RequestEntityTooLarge",
            format!(
                "The request body is larger than the maximum of {GRAPH_MAX_REQUEST_BYTES} bytes."
            ),
        ));
    }
    match req.bearer() {
        Some(token)
            if state.tokens.contains(token)
                || state
                    .token_prefixes
                    .iter()
                    .any(|p| token.starts_with(p.as_str())) => {}
        _ => {
            let mut e = graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            );
            e.headers.push(h(
                "WWW-Authenticate",
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
            ));
            return Err(e);
        }
    }
    if state.deny {
        return Err(graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ));
    }
    match req.media_type().as_deref() {
        Some("application/json") => {
            let value: Value = serde_json::from_slice(&req.body).map_err(|e| {
                if req.body.iter().all(u8::is_ascii_whitespace) {
                    body_read("Empty Payload. JSON content expected.")
                } else {
                    body_read(format!("Invalid JSON. {e}"))
                }
            })?;
            check_send_mail(&value)?;
            Ok(value)
        }
        Some("text/plain") => {
            let text = String::from_utf8_lossy(&req.body);
            let compact: String = text.split_whitespace().collect();
            match STANDARD.decode(compact.as_bytes()) {
                Ok(mime) if !mime.is_empty() => {
                    Ok(json!({ "mime": String::from_utf8_lossy(&mime) }))
                }
                _ => Err(graph_error(
                    400,
                    "ErrorMimeContentInvalidBase64String",
                    "Invalid base64 string for MIME content.",
                )),
            }
        }
        other => Err(graph_error(
            415,
            "UnsupportedMediaType",
            format!(
                "The content type '{}' is not supported; use application/json.",
                other.unwrap_or("")
            ),
        )),
    }
}

/// `v` unless it is absent or `null`.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn check_props(obj: &Map<String, Value>, allowed: &[&str], ty: &str) -> Result<(), GraphError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(unknown_property(unknown, ty)),
        None => Ok(()),
    }
}

fn object<'a>(v: &'a Value, ty: &str) -> Result<&'a Map<String, Value>, GraphError> {
    v.as_object().ok_or_else(|| cannot_convert(v, ty))
}

fn opt_string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, GraphError> {
    match present(obj.get(key)) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(cannot_convert(other, "Edm.String")),
    }
}

/// The address of one `recipient` object (empty when it has none).
fn recipient(v: &Value) -> Result<String, GraphError> {
    let r = object(v, "microsoft.graph.recipient")?;
    check_props(r, &["emailAddress"], "microsoft.graph.recipient")?;
    let Some(email) = present(r.get("emailAddress")) else {
        return Ok(String::new());
    };
    let email = object(email, "microsoft.graph.emailAddress")?;
    check_props(email, &["address", "name"], "microsoft.graph.emailAddress")?;
    opt_string(email, "name")?;
    Ok(opt_string(email, "address")?.unwrap_or("").to_string())
}

fn recipient_list(message: &Map<String, Value>, key: &str) -> Result<Vec<String>, GraphError> {
    match present(message.get(key)) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(recipient).collect(),
        Some(other) => Err(cannot_convert(
            other,
            "Collection(microsoft.graph.recipient)",
        )),
    }
}

fn array<'a>(
    message: &'a Map<String, Value>,
    key: &str,
    ty: &str,
) -> Result<&'a [Value], GraphError> {
    match present(message.get(key)) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(cannot_convert(other, ty)),
    }
}

/// The §2.2 / §2.8 checks of a JSON `sendMail` body.
fn check_send_mail(value: &Value) -> Result<(), GraphError> {
    let top = value
        .as_object()
        .ok_or_else(|| body_read("The request body must be a JSON object."))?;
    check_props(top, &TOP_PROPS, MESSAGE_TYPE)?;
    if let Some(save) = top.get("saveToSentItems") {
        if !save.is_boolean() {
            return Err(cannot_convert(save, "Edm.Boolean"));
        }
    }
    let Some(message) = present(top.get("message")) else {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "The value of the parameter 'Message' is empty.",
        ));
    };
    let message = object(message, MESSAGE_TYPE)?;
    check_props(message, &MESSAGE_PROPS, MESSAGE_TYPE)?;
    opt_string(message, "subject")?;
    if let Some(body) = present(message.get("body")) {
        let body = object(body, "microsoft.graph.itemBody")?;
        check_props(
            body,
            &["contentType", "content"],
            "microsoft.graph.itemBody",
        )?;
        if let Some(ct) = present(body.get("contentType")) {
            match ct.as_str() {
                Some(s) if s.eq_ignore_ascii_case("text") || s.eq_ignore_ascii_case("html") => {}
                _ => return Err(cannot_convert(ct, "microsoft.graph.bodyType")),
            }
        }
        opt_string(body, "content")?;
    }

    let mut addresses = Vec::new();
    for key in ["toRecipients", "ccRecipients", "bccRecipients"] {
        addresses.extend(recipient_list(message, key)?);
    }
    let recipients = addresses.len();
    addresses.extend(recipient_list(message, "replyTo")?);
    if let Some(from) = present(message.get("from")) {
        addresses.push(recipient(from)?);
    }
    if recipients == 0 {
        return Err(invalid_recipients(
            "A message can't be sent because it contains no recipients.".to_string(),
        ));
    }
    if let Some(bad) = addresses.iter().find(|a| !a.contains('@')) {
        return Err(invalid_recipients(format!(
            "Recipient \"{bad}\" isn't resolved. All recipients must be resolved before a message can be submitted."
        )));
    }

    let header_type = "microsoft.graph.internetMessageHeader";
    for header in array(
        message,
        "internetMessageHeaders",
        "Collection(microsoft.graph.internetMessageHeader)",
    )? {
        let header = object(header, header_type)?;
        check_props(header, &["name", "value"], header_type)?;
        opt_string(header, "value")?;
        let name = opt_string(header, "name")?.unwrap_or("");
        if !name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-")) {
            return Err(graph_error(
                400,
                "InvalidInternetMessageHeader",
                format!(
                    "The internet message header name '{name}' should start with 'x-' or 'X-'."
                ),
            ));
        }
    }

    for attachment in array(
        message,
        "attachments",
        "Collection(microsoft.graph.attachment)",
    )? {
        let a = object(attachment, "microsoft.graph.attachment")?;
        match a.get("@odata.type").and_then(Value::as_str) {
            Some(FILE_ATTACHMENT) => {}
            Some(other) => {
                return Err(body_read(format!(
                    "The type '{other}' is not supported here; an attachment must be a '{FILE_ATTACHMENT}'."
                )))
            }
            None => {
                return Err(body_read(
                    "Cannot create an abstract class: an attachment needs '@odata.type'.",
                ))
            }
        }
        check_props(a, &ATTACHMENT_PROPS, "microsoft.graph.fileAttachment")?;
        opt_string(a, "name")?;
        opt_string(a, "contentType")?;
        match present(a.get("contentBytes")) {
            None => {
                return Err(graph_error(
                    400,
                    "ErrorInvalidAttachment",
                    "The file attachment has no contentBytes.",
                ))
            }
            Some(bytes) => {
                let ok = bytes
                    .as_str()
                    .is_some_and(|s| STANDARD.decode(s.as_bytes()).is_ok());
                if !ok {
                    return Err(cannot_convert(bytes, "Edm.Binary"));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Microsoft Advertising ApplyOfflineConversions (REST)

/// The REST path of `ApplyOfflineConversions`.
pub const BING_APPLY_PATH: &str = "/CampaignManagement/v13/OfflineConversions/Apply";
/// At most this many conversions per request (§3.1).
pub const BING_MAX_CONVERSIONS: usize = 1000;
/// Conversions older than this are refused (§3.1).
const BING_WINDOW_DAYS: i64 = 90;

/// A running mock of Microsoft Advertising REST `ApplyOfflineConversions`;
/// the server stops when this is dropped.
///
/// Serves `POST /CampaignManagement/v13/OfflineConversions/Apply`. In order:
/// a queued switch ([`call_rate_exceeded_next`](Self::call_rate_exceeded_next),
/// [`internal_error_next`](Self::internal_error_next),
/// [`script_next`](Self::script_next)) answers any request; another path →
/// 404 (empty body); another method → 405; a missing or unaccepted bearer
/// token → 401 `AdApiFaultDetail` 105 `InvalidCredentials`, an expired one
/// ([`expire_token`](Self::expire_token)) → 401 109
/// `AuthenticationTokenExpired`; a missing or other `DeveloperToken` → 401
/// 105; a missing or other `CustomerId` / `CustomerAccountId` → 403 106
/// `UserIsNotAuthorized`.
///
/// The body must be a JSON object with an `OfflineConversions` array:
/// malformed JSON → 400 `ApiFaultDetail` operation error 0 `InternalError`;
/// missing/null/empty → 400 5600; more than 1000 → 400 5601. Each item is
/// checked in the §3.5 order — null 5602; no `MicrosoftClickId` and no hashed
/// email/phone 5603; `ConversionName` empty 5605 / not a known goal 5606;
/// `ConversionTime` missing 5608 / unparsable 5607 / in the future 5614 /
/// older than 90 days 5609; earlier than the registered click 5616;
/// `ConversionValue` not a non-negative number 5610; `ConversionCurrencyCode`
/// not three letters 5611 — and each failure becomes a `BatchError` with the
/// item's `Index` in a **200** `{"PartialErrors": […]}` answer (empty when
/// all are good). Good items are recorded, except repeats of an earlier
/// (`MicrosoftClickId`, `ConversionTime`), which are silently ignored.
///
/// Every answer carries a `TrackingId` header (a fresh GUID, also in fault
/// bodies); JSON answers are `application/json; charset=utf-8`.
pub struct BingMock {
    shared: Arc<BingShared>,
    running: Running,
}

struct BingShared {
    recorder: Recorder,
    state: Mutex<BingState>,
}

struct BingState {
    tokens: HashSet<String>,
    token_prefixes: Vec<String>,
    expired: HashSet<String>,
    developer_token: String,
    customer_id: String,
    customer_account_id: String,
    goals: Vec<String>,
    clicks: HashMap<String, DateTime<Utc>>,
    seen: HashSet<(String, DateTime<Utc>)>,
    next: Queue<BingSwitch>,
    accepted: Vec<Value>,
}

#[derive(Clone)]
enum BingSwitch {
    CallRate,
    Internal,
    Script(Scripted),
}

impl BingMock {
    /// Binds `127.0.0.1:0` and serves in a tokio task until dropped. Defaults:
    /// developer token `BBD37VB98`, customer `1234567`, account `7654321`,
    /// one goal `Phone Call`, no accepted token.
    pub async fn start() -> BingMock {
        let shared = Arc::new(BingShared {
            recorder: Recorder::default(),
            state: Mutex::new(BingState {
                tokens: HashSet::new(),
                token_prefixes: Vec::new(),
                expired: HashSet::new(),
                developer_token: "BBD37VB98".to_string(),
                customer_id: "1234567".to_string(),
                customer_account_id: "7654321".to_string(),
                goals: vec!["Phone Call".to_string()],
                clicks: HashMap::new(),
                seen: HashSet::new(),
                next: Queue::default(),
                accepted: Vec::new(),
            }),
        });
        let running = serve(Arc::clone(&shared)).await;
        BingMock { shared, running }
    }

    /// `http://127.0.0.1:PORT` (pushwerk appends
    /// `/CampaignManagement/v13/OfflineConversions/Apply`).
    pub fn base_url(&self) -> String {
        self.running.base_url.clone()
    }

    /// Accepts `Authorization: Bearer {token}` from now on.
    pub fn accept_token(&self, token: &str) {
        self.state().tokens.insert(token.to_string());
    }

    /// Accepts every bearer token starting with `prefix`: the identity
    /// mock's tokens for this resource (`mock-at.<resource-host>.`), so a
    /// token it issues during a test is accepted and one for another
    /// resource is not.
    pub fn accept_token_prefix(&self, prefix: &str) {
        self.state().token_prefixes.push(prefix.to_string());
    }

    /// `token` now gets 401 code 109 `AuthenticationTokenExpired` (accepted
    /// or not).
    pub fn expire_token(&self, token: &str) {
        self.state().expired.insert(token.to_string());
    }

    /// The one accepted `DeveloperToken` (default `BBD37VB98`); another → 401
    /// code 105.
    pub fn set_developer_token(&self, token: &str) {
        self.state().developer_token = token.to_string();
    }

    /// The one accepted `CustomerId` / `CustomerAccountId` pair (default
    /// `1234567` / `7654321`); another → 403 code 106.
    pub fn set_account(&self, customer_id: &str, customer_account_id: &str) {
        let mut state = self.state();
        state.customer_id = customer_id.to_string();
        state.customer_account_id = customer_account_id.to_string();
    }

    /// Adds a known offline conversion goal name (exact match; default
    /// `Phone Call`). Other names get 5606.
    pub fn add_goal(&self, name: &str) {
        let mut state = self.state();
        if !state.goals.iter().any(|g| g == name) {
            state.goals.push(name.to_string());
        }
    }

    /// Registers the click of `msclkid` at `clicked_at`: a conversion of that
    /// click at an earlier time gets 5616 `ConversionTimeEarlierThanClickTime`.
    pub fn register_click(&self, msclkid: &str, clicked_at: DateTime<Utc>) {
        self.state().clicks.insert(msclkid.to_string(), clicked_at);
    }

    /// The next `count` requests (after switches already queued) get HTTP 429
    /// with an `ApiFaultDetail` whose operation error is 117 `CallRateExceeded`.
    pub fn call_rate_exceeded_next(&self, count: usize) {
        self.state().next.push(count, BingSwitch::CallRate);
    }

    /// The next `count` requests (after switches already queued) get HTTP 500
    /// with an `AdApiFaultDetail` whose error is 0 `InternalError`.
    pub fn internal_error_next(&self, count: usize) {
        self.state().next.push(count, BingSwitch::Internal);
    }

    /// The next `count` requests (after switches already queued) get `answer`
    /// (plus a `TrackingId` header unless the script has one).
    pub fn script_next(&self, count: usize, answer: Scripted) {
        answer.check();
        self.state().next.push(count, BingSwitch::Script(answer));
    }

    /// Every request, in order, with the status it got.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorder.all()
    }

    /// The accepted conversions (the request items, verbatim), in order;
    /// refused items and repeats are not here.
    pub fn accepted_conversions(&self) -> Vec<Value> {
        self.state().accepted.clone()
    }

    /// Waits until at least `n` requests were received (and answered), or
    /// `timeout` passed; returns whether `n` was reached.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.shared.recorder.wait_for(n, timeout).await
    }

    fn state(&self) -> MutexGuard<'_, BingState> {
        lock(&self.shared.state)
    }
}

/// `ErrorCode` and `Message` of a Microsoft Advertising error code (§3.3).
fn bing_code(code: i64) -> (&'static str, &'static str) {
    match code {
        0 => ("InternalError", "An internal error has occurred."),
        105 => (
            "InvalidCredentials",
            "Authentication failed. Either supplied credentials are invalid or the account is inactive.",
        ),
        106 => (
            "UserIsNotAuthorized",
            "The user is not authorized to call this operation for the specified customer or account.",
        ),
        109 => (
            "AuthenticationTokenExpired",
            "Authentication token expired. Please renew it or obtain a new token.",
        ),
        117 => (
            "CallRateExceeded",
            "You have exceeded the number of calls that you are allowed to make in a given time period. Please wait and try again.",
        ),
        5600 => (
            "OfflineConversionsNullOrEmpty",
            "The list of offline conversions cannot be null or empty.",
        ),
        5601 => (
            "OfflineConversionsLimitExceeded",
            "The list of offline conversions exceeds the limit.",
        ),
        5602 => ("OfflineConversionIsNull", "The offline conversion cannot be null."),
        5603 => (
            "OfflineConversionMicrosoftClickIdNullOrEmpty",
            "The Microsoft click ID cannot be null or empty.",
        ),
        5605 => (
            "OfflineConversionNameNullOrEmpty",
            "The offline conversion name cannot be null or empty.",
        ),
        5606 => (
            "OfflineConversionNameInvalid",
            "The offline conversion name does not match an offline conversion goal.",
        ),
        5607 => ("OfflineConversionTimeInvalid", "The offline conversion time is invalid."),
        5608 => (
            "OfflineConversionTimeNullOrEmpty",
            "The offline conversion time cannot be null or empty.",
        ),
        5609 => (
            "OfflineConversionTimeOutOfWindow",
            "The offline conversion time is outside the conversion window.",
        ),
        5610 => ("OfflineConversionValueInvalid", "The offline conversion value is invalid."),
        5611 => (
            "OfflineConversionCurrencyCodeInvalid",
            "The offline conversion currency code is invalid.",
        ),
        5614 => (
            "FutureConversionTimeCannotBeSet",
            "The conversion time cannot be in the future.",
        ),
        5616 => (
            "ConversionTimeEarlierThanClickTime",
            "The conversion time must be later than the click time.",
        ),
        _ => ("InternalError", "An error has occurred."),
    }
}

fn tracking_headers(tracking_id: &str) -> Vec<(String, String)> {
    vec![h("TrackingId", tracking_id)]
}

/// HTTP `status` with an `AdApiFaultDetail` of one error.
fn ad_api_fault(status: u16, tracking_id: &str, code: i64) -> Answer {
    let (error_code, message) = bing_code(code);
    let body = json!({
        "TrackingId": tracking_id,
        "Type": "AdApiFaultDetail",
        "Errors": [
            { "Code": code, "Detail": null, "ErrorCode": error_code, "Message": message }
        ],
    });
    Answer::json(status, tracking_headers(tracking_id), &body)
}

/// HTTP `status` with an `ApiFaultDetail` of one operation error.
fn api_fault(status: u16, tracking_id: &str, code: i64, message: Option<String>) -> Answer {
    let (error_code, default_message) = bing_code(code);
    let body = json!({
        "TrackingId": tracking_id,
        "Type": "ApiFaultDetail",
        "BatchErrors": [],
        "OperationErrors": [
            {
                "Code": code,
                "Details": null,
                "ErrorCode": error_code,
                "Message": message.unwrap_or_else(|| default_message.to_string()),
            }
        ],
    });
    Answer::json(status, tracking_headers(tracking_id), &body)
}

fn batch_error(index: usize, code: i64) -> Value {
    let (error_code, message) = bing_code(code);
    json!({
        "Code": code,
        "Details": null,
        "ErrorCode": error_code,
        "FieldPath": null,
        "ForwardCompatibilityMap": null,
        "Index": index,
        "Message": message,
        "Type": "BatchError",
    })
}

impl Service for BingShared {
    fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    fn answer(&self, req: &Incoming) -> Answer {
        let tracking_id = guid();
        let mut state = lock(&self.state);
        if let Some(switch) = state.next.pop() {
            return match switch {
                BingSwitch::CallRate => api_fault(429, &tracking_id, 117, None),
                BingSwitch::Internal => ad_api_fault(500, &tracking_id, 0),
                BingSwitch::Script(s) => {
                    let mut answer = s.answer();
                    if !answer.has_header("TrackingId") {
                        answer.headers.push(h("TrackingId", &tracking_id));
                    }
                    answer
                }
            };
        }
        if !req.path.eq_ignore_ascii_case(BING_APPLY_PATH) {
            return Answer {
                status: 404,
                headers: tracking_headers(&tracking_id),
                body: Vec::new(),
            };
        }
        if req.method != "POST" {
            let mut headers = tracking_headers(&tracking_id);
            headers.push(h("Allow", "POST"));
            return Answer {
                status: 405,
                headers,
                body: Vec::new(),
            };
        }
        match req.bearer() {
            Some(token) if state.expired.contains(token) => {
                return ad_api_fault(401, &tracking_id, 109);
            }
            Some(token)
                if state.tokens.contains(token)
                    || state
                        .token_prefixes
                        .iter()
                        .any(|p| token.starts_with(p.as_str())) => {}
            _ => return ad_api_fault(401, &tracking_id, 105),
        }
        if req.header("developertoken").map(str::trim) != Some(state.developer_token.as_str()) {
            return ad_api_fault(401, &tracking_id, 105);
        }
        if req.header("customerid").map(str::trim) != Some(state.customer_id.as_str())
            || req.header("customeraccountid").map(str::trim)
                != Some(state.customer_account_id.as_str())
        {
            return ad_api_fault(403, &tracking_id, 106);
        }

        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                let message = format!("The request body could not be read: {e}");
                return api_fault(400, &tracking_id, 0, Some(message));
            }
        };
        let Some(top) = body.as_object() else {
            let message = "The request body must be a JSON object.".to_string();
            return api_fault(400, &tracking_id, 0, Some(message));
        };
        let items = match present(top.get("OfflineConversions")) {
            None => return api_fault(400, &tracking_id, 5600, None),
            Some(Value::Array(items)) if items.is_empty() => {
                return api_fault(400, &tracking_id, 5600, None)
            }
            Some(Value::Array(items)) => items,
            Some(_) => {
                let message = "OfflineConversions must be an array.".to_string();
                return api_fault(400, &tracking_id, 0, Some(message));
            }
        };
        if items.len() > BING_MAX_CONVERSIONS {
            return api_fault(400, &tracking_id, 5601, None);
        }

        let now = Utc::now();
        let mut partial_errors = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match check_conversion(&state, item, now) {
                Err(code) => partial_errors.push(batch_error(index, code)),
                Ok(key) => {
                    if let Some(key) = key {
                        if !state.seen.insert(key) {
                            continue;
                        }
                    }
                    state.accepted.push(item.clone());
                }
            }
        }
        let body = json!({ "PartialErrors": partial_errors });
        Answer::json(200, tracking_headers(&tracking_id), &body)
    }
}

/// A non-empty string field of a conversion.
fn text_field<'a>(item: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An ISO-8601 time with a zone, or without one (taken as UTC).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// The §3.5 checks of one item: `Err(code)`, or `Ok` with its
/// de-duplication key (none without a click id).
fn check_conversion(
    state: &BingState,
    item: &Value,
    now: DateTime<Utc>,
) -> Result<Option<(String, DateTime<Utc>)>, i64> {
    let Some(item) = item.as_object() else {
        return Err(5602);
    };
    let click = text_field(item, "MicrosoftClickId");
    if click.is_none()
        && text_field(item, "HashedEmailAddress").is_none()
        && text_field(item, "HashedPhoneNumber").is_none()
    {
        return Err(5603);
    }
    let Some(name) = text_field(item, "ConversionName") else {
        return Err(5605);
    };
    if !state.goals.iter().any(|g| g == name) {
        return Err(5606);
    }
    let time = match present(item.get("ConversionTime")) {
        None => return Err(5608),
        Some(Value::String(s)) if s.trim().is_empty() => return Err(5608),
        Some(Value::String(s)) => parse_time(s.trim()).ok_or(5607)?,
        Some(_) => return Err(5607),
    };
    if time > now {
        return Err(5614);
    }
    if time < now - chrono::Duration::days(BING_WINDOW_DAYS) {
        return Err(5609);
    }
    if let Some(clicked_at) = click.and_then(|c| state.clicks.get(c)) {
        if time < *clicked_at {
            return Err(5616);
        }
    }
    if let Some(value) = present(item.get("ConversionValue")) {
        if !value.as_f64().is_some_and(|v| v.is_finite() && v >= 0.0) {
            return Err(5610);
        }
    }
    if let Some(currency) = present(item.get("ConversionCurrencyCode")) {
        let ok = currency
            .as_str()
            .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()));
        if !ok {
            return Err(5611);
        }
    }
    Ok(click.map(|c| (c.to_string(), time)))
}

// ---------------------------------------------------------------------------
// Plain HTTP receiver

/// A running plain HTTP endpoint standing in for a CRM or webhook receiver;
/// the server stops when this is dropped.
///
/// Takes any method on any path; answers `200 {"ok":true}`
/// (`application/json`) unless [`respond_next`](Self::respond_next) queued
/// other answers.
pub struct HttpReceiver {
    shared: Arc<ReceiverShared>,
    running: Running,
}

struct ReceiverShared {
    recorder: Recorder,
    next: Mutex<Queue<Scripted>>,
}

impl HttpReceiver {
    /// Binds `127.0.0.1:0` and serves in a tokio task until dropped.
    pub async fn start() -> HttpReceiver {
        let shared = Arc::new(ReceiverShared {
            recorder: Recorder::default(),
            next: Mutex::new(Queue::default()),
        });
        let running = serve(Arc::clone(&shared)).await;
        HttpReceiver { shared, running }
    }

    /// `http://127.0.0.1:PORT` + `path` (give `path` with its leading `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base_url)
    }

    /// The next `count` requests (after answers already queued) get `status`
    /// with exactly these headers and this body.
    pub fn respond_next(
        &self,
        count: usize,
        status: u16,
        headers: Vec<(String, String)>,
        body: &str,
    ) {
        let answer = Scripted::Status {
            status,
            headers,
            body: body.to_string(),
        };
        answer.check();
        lock(&self.shared.next).push(count, answer);
    }

    /// Every request, in order, with the status it got; `path` includes the
    /// query.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorder.all()
    }

    /// Waits until at least `n` requests were received (and answered), or
    /// `timeout` passed; returns whether `n` was reached.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.shared.recorder.wait_for(n, timeout).await
    }
}

impl Service for ReceiverShared {
    fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    fn answer(&self, _req: &Incoming) -> Answer {
        match lock(&self.next).pop() {
            Some(scripted) => scripted.answer(),
            None => Answer {
                status: 200,
                headers: vec![h("Content-Type", "application/json")],
                body: br#"{"ok":true}"#.to_vec(),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Tests of the mocks themselves

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "mock-at.graph.microsoft.com.1.abc";
    const ADS_TOKEN: &str = "mock-at.ads.microsoft.com.1.xyz";
    const WAIT: Duration = Duration::from_secs(10);

    fn client() -> reqwest::Client {
        crate::daemon::http_client().build().unwrap()
    }

    /// Status, headers and body (JSON, or a JSON string of the text).
    async fn parts(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    fn is_guid(s: &str) -> bool {
        let groups: Vec<&str> = s.split('-').collect();
        groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && groups
                .iter()
                .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing: {headers:?}"))
            .to_str()
            .expect("text header")
    }

    // -- Graph --------------------------------------------------------------

    fn mail() -> Value {
        json!({
            "message": {
                "subject": "Meet for lunch?",
                "body": { "contentType": "Text", "content": "The new cafeteria is open." },
                "toRecipients": [ { "emailAddress": { "address": "frannis@contoso.com" } } ],
                "ccRecipients": [ { "emailAddress": { "address": "danas@contoso.com", "name": "Dana" } } ],
                "internetMessageHeaders": [ { "name": "x-push-id", "value": "p1" } ],
                "attachments": [ {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "name": "attachment.txt",
                    "contentType": "text/plain",
                    "contentBytes": "SGVsbG8gV29ybGQh"
                } ]
            },
            "saveToSentItems": false
        })
    }

    async fn graph_mock() -> GraphMock {
        let mock = GraphMock::start().await;
        mock.accept_token(TOKEN);
        mock
    }

    async fn send(mock: &GraphMock, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = client()
            .post(format!("{}/v1.0/me/sendMail", mock.base_url()))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .expect("sendMail");
        parts(r).await
    }

    /// Asserts a §2.4 error: status, code, message fragment, ids and headers.
    fn assert_graph_error(
        got: &(u16, reqwest::header::HeaderMap, Value),
        status: u16,
        code: &str,
        message: &str,
    ) {
        let (s, headers, body) = got;
        assert_eq!(*s, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let text = body["error"]["message"].as_str().expect("message");
        assert!(text.contains(message), "{text:?} lacks {message:?}");
        let inner = &body["error"]["innerError"];
        let date = inner["date"].as_str().expect("innerError.date");
        assert!(
            NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S").is_ok(),
            "{date}"
        );
        let request_id = inner["request-id"].as_str().expect("request-id");
        assert!(is_guid(request_id), "{request_id}");
        assert_eq!(header(headers, "request-id"), request_id);
        assert_eq!(
            inner["client-request-id"].as_str(),
            Some(header(headers, "client-request-id"))
        );
        assert_eq!(
            header(headers, "content-type"),
            "application/json; charset=utf-8"
        );
    }

    #[tokio::test]
    async fn graph_accepts_a_mail_with_202_and_ids() {
        let mock = graph_mock().await;
        let r = client()
            .post(format!("{}/v1.0/me/sendMail", mock.base_url()))
            .bearer_auth(TOKEN)
            .header("client-request-id", "my-client-id-1")
            .json(&mail())
            .send()
            .await
            .expect("sendMail");
        let (status, headers, body) = parts(r).await;
        assert_eq!(status, 202);
        assert_eq!(body, Value::String(String::new()), "empty body");
        assert!(is_guid(header(&headers, "request-id")));
        assert_eq!(header(&headers, "client-request-id"), "my-client-id-1");
        assert!(header(&headers, "date").ends_with(" GMT"));
        assert_eq!(mock.sent_messages(), vec![mail()]);

        // Without a client id, the request id is echoed; /users/{id} and any
        // case of `sendMail` are served.
        let r = client()
            .post(format!(
                "{}/v1.0/users/someone%40contoso.com/SENDMAIL",
                mock.base_url()
            ))
            .bearer_auth(TOKEN)
            .json(&mail())
            .send()
            .await
            .expect("sendMail");
        let (status, headers, _) = parts(r).await;
        assert_eq!(status, 202);
        assert_eq!(
            header(&headers, "client-request-id"),
            header(&headers, "request-id")
        );

        let requests = mock.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/v1.0/me/sendMail");
        assert_eq!(requests[0].status, 202);
        assert_eq!(
            requests[0].header("Authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(requests[0].json(), mail());
        assert_eq!(
            requests[1].path,
            "/v1.0/users/someone%40contoso.com/SENDMAIL"
        );
        assert_eq!(mock.sent_messages().len(), 2);
    }

    #[tokio::test]
    async fn graph_401_without_or_with_an_unknown_token() {
        let mock = graph_mock().await;
        let url = format!("{}/v1.0/me/sendMail", mock.base_url());
        let no_token = parts(client().post(&url).json(&mail()).send().await.unwrap()).await;
        assert_graph_error(
            &no_token,
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        );
        assert!(no_token.1.contains_key("www-authenticate"));

        let r = client()
            .post(&url)
            .bearer_auth("mock-at.graph.microsoft.com.9.unknown")
            .header("client-request-id", "cid-7")
            .json(&mail())
            .send()
            .await
            .unwrap();
        let unknown = parts(r).await;
        assert_graph_error(&unknown, 401, "InvalidAuthenticationToken", "expired");
        assert_eq!(
            unknown.2["error"]["innerError"]["client-request-id"],
            "cid-7"
        );
        let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [401, 401]);
        assert!(mock.sent_messages().is_empty());
    }

    #[tokio::test]
    async fn graph_request_body_read_for_unknown_or_mistyped_properties() {
        let mock = graph_mock().await;
        let mut top = mail();
        top["saveToSentitems"] = json!(false);
        assert_graph_error(
            &send(&mock, &top).await,
            400,
            "RequestBodyRead",
            "The property 'saveToSentitems' does not exist on type 'microsoft.graph.message'. Make sure to only use property names",
        );
        let mut inner = mail();
        inner["message"]["Subject"] = json!("capital S");
        assert_graph_error(
            &send(&mock, &inner).await,
            400,
            "RequestBodyRead",
            "The property 'Subject' does not exist on type 'microsoft.graph.message'.",
        );
        let mut save = mail();
        save["saveToSentItems"] = json!("false");
        assert_graph_error(
            &send(&mock, &save).await,
            400,
            "RequestBodyRead",
            "Edm.Boolean",
        );
        let mut kind = mail();
        kind["message"]["body"]["contentType"] = json!("Markdown");
        assert_graph_error(
            &send(&mock, &kind).await,
            400,
            "RequestBodyRead",
            "bodyType",
        );

        // Bad JSON.
        let r = client()
            .post(format!("{}/v1.0/me/sendMail", mock.base_url()))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body("{\"message\": ")
            .send()
            .await
            .unwrap();
        assert_graph_error(&parts(r).await, 400, "RequestBodyRead", "Invalid JSON");
        assert!(mock.sent_messages().is_empty());

        // contentType is case-insensitive.
        let mut html = mail();
        html["message"]["body"]["contentType"] = json!("html");
        assert_eq!(send(&mock, &html).await.0, 202);
    }

    #[tokio::test]
    async fn graph_invalid_recipients() {
        let mock = graph_mock().await;
        let mut none = mail();
        let message = none["message"].as_object_mut().unwrap();
        message.remove("toRecipients");
        message.remove("ccRecipients");
        assert_graph_error(
            &send(&mock, &none).await,
            400,
            "ErrorInvalidRecipients",
            "A message can't be sent because it contains no recipients.",
        );
        let mut bad = mail();
        bad["message"]["ccRecipients"][0]["emailAddress"]["address"] = json!("bad");
        assert_graph_error(
            &send(&mock, &bad).await,
            400,
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid., Recipient \"bad\" isn't resolved.",
        );
        let mut empty = mail();
        empty["message"]["toRecipients"] = json!([]);
        empty["message"]["ccRecipients"] = json!([]);
        assert_eq!(
            send(&mock, &empty).await.2["error"]["code"],
            "ErrorInvalidRecipients"
        );
        assert!(mock.sent_messages().is_empty());
    }

    #[tokio::test]
    async fn graph_attachment_header_size_type_and_permission_checks() {
        let mock = graph_mock().await;
        let mut odata = mail();
        odata["message"]["attachments"][0]["@odata.type"] =
            json!("#microsoft.graph.itemAttachment");
        assert_graph_error(
            &send(&mock, &odata).await,
            400,
            "RequestBodyRead",
            "fileAttachment",
        );
        let mut untyped = mail();
        untyped["message"]["attachments"][0]
            .as_object_mut()
            .unwrap()
            .remove("@odata.type");
        assert_eq!(send(&mock, &untyped).await.0, 400);
        let mut b64 = mail();
        b64["message"]["attachments"][0]["contentBytes"] = json!("not base64!");
        assert_graph_error(
            &send(&mock, &b64).await,
            400,
            "RequestBodyRead",
            "Edm.Binary",
        );
        let mut missing = mail();
        missing["message"]["attachments"][0]
            .as_object_mut()
            .unwrap()
            .remove("contentBytes");
        assert_graph_error(
            &send(&mock, &missing).await,
            400,
            "ErrorInvalidAttachment",
            "contentBytes",
        );
        let mut hdr = mail();
        hdr["message"]["internetMessageHeaders"][0]["name"] = json!("Push-Id");
        assert_graph_error(
            &send(&mock, &hdr).await,
            400,
            "InvalidInternetMessageHeader",
            "'Push-Id'",
        );

        let mut big = mail();
        big["message"]["body"]["content"] = json!("a".repeat(GRAPH_MAX_REQUEST_BYTES));
        assert_graph_error(
            &send(&mock, &big).await,
            413,
            "RequestEntityTooLarge",
            "larger",
        );

        let url = format!("{}/v1.0/me/sendMail", mock.base_url());
        let r = client()
            .post(&url)
            .bearer_auth(TOKEN)
            .header("Content-Type", "text/html")
            .body("<p>")
            .send()
            .await
            .unwrap();
        assert_graph_error(&parts(r).await, 415, "UnsupportedMediaType", "text/html");
        let r = client()
            .post(&url)
            .bearer_auth(TOKEN)
            .header("Content-Type", "text/plain")
            .body("%%%")
            .send()
            .await
            .unwrap();
        assert_graph_error(
            &parts(r).await,
            400,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        );
        let mime = STANDARD.encode("Subject: hi\r\nTo: a@b.c\r\n\r\nhello");
        let r = client()
            .post(&url)
            .bearer_auth(TOKEN)
            .header("Content-Type", "text/plain")
            .body(mime)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);

        let r = client().get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405);
        let r = client()
            .post(format!("{}/v1.0/me/sendMai", mock.base_url()))
            .bearer_auth(TOKEN)
            .json(&mail())
            .send()
            .await
            .unwrap();
        assert_graph_error(&parts(r).await, 404, "ResourceNotFound", "'sendMai'");

        mock.deny_mail_send(true);
        assert_graph_error(
            &send(&mock, &mail()).await,
            403,
            "ErrorAccessDenied",
            "Access is denied.",
        );
        mock.deny_mail_send(false);
        assert_eq!(send(&mock, &mail()).await.0, 202);
        assert_eq!(
            mock.sent_messages().len(),
            2,
            "the MIME mail and the last one"
        );
        assert_eq!(
            mock.sent_messages()[0]["mime"],
            "Subject: hi\r\nTo: a@b.c\r\n\r\nhello"
        );
    }

    #[tokio::test]
    async fn graph_429_with_and_without_retry_after() {
        let mock = graph_mock().await;
        mock.throttle_next(1, Some(7));
        mock.throttle_next(1, None);
        let first = send(&mock, &mail()).await;
        assert_graph_error(&first, 429, "TooManyRequests", "Please retry again later.");
        assert_eq!(header(&first.1, "retry-after"), "7");
        assert_eq!(first.2["error"]["innerError"]["status"], "429");
        let second = send(&mock, &mail()).await;
        assert_graph_error(&second, 429, "TooManyRequests", "Please retry");
        assert!(!second.1.contains_key("retry-after"));
        assert_eq!(send(&mock, &mail()).await.0, 202);
        let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 429, 202]);
        assert_eq!(mock.sent_messages().len(), 1);
    }

    #[tokio::test]
    async fn graph_unavailable_and_scripted_answers() {
        let mock = graph_mock().await;
        mock.unavailable_next(1, 503, Some(3));
        mock.unavailable_next(1, 504, None);
        mock.script_next(
            2,
            Scripted::Status {
                status: 500,
                headers: vec![("X-Scripted".into(), "yes".into())],
                body: "boom".into(),
            },
        );
        let a = send(&mock, &mail()).await;
        assert_graph_error(&a, 503, "serviceNotAvailable", "unavailable");
        assert_eq!(header(&a.1, "retry-after"), "3");
        let b = send(&mock, &mail()).await;
        assert_graph_error(&b, 504, "timeout", "timed out");
        assert!(!b.1.contains_key("retry-after"));
        for _ in 0..2 {
            let c = send(&mock, &mail()).await;
            assert_eq!(c.0, 500);
            assert_eq!(header(&c.1, "x-scripted"), "yes");
            assert_eq!(c.2, Value::String("boom".into()));
        }
        assert_eq!(send(&mock, &mail()).await.0, 202);
    }

    #[tokio::test]
    async fn graph_wait_for_requests() {
        let mock = graph_mock().await;
        assert!(!mock.wait_for_requests(1, Duration::from_millis(20)).await);
        let url = format!("{}/v1.0/me/sendMail", mock.base_url());
        let sender = tokio::spawn(async move {
            for _ in 0..2 {
                client()
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&mail())
                    .send()
                    .await
                    .unwrap();
            }
        });
        assert!(mock.wait_for_requests(2, WAIT).await);
        sender.await.unwrap();
        assert_eq!(mock.requests().len(), 2);
        assert!(!mock.wait_for_requests(3, Duration::from_millis(20)).await);
    }

    // -- Microsoft Advertising ---------------------------------------------

    async fn bing_mock() -> BingMock {
        let mock = BingMock::start().await;
        mock.accept_token(ADS_TOKEN);
        mock
    }

    fn iso(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn conversion(click: &str, hours_ago: i64) -> Value {
        json!({
            "ConversionCurrencyCode": "EUR",
            "ConversionName": "Phone Call",
            "ConversionTime": iso(Utc::now() - chrono::Duration::hours(hours_ago)),
            "ConversionValue": 120.5,
            "MicrosoftClickId": click,
        })
    }

    async fn apply_with(
        mock: &BingMock,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut rb = client()
            .post(format!("{}{BING_APPLY_PATH}", mock.base_url()))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            rb = rb.bearer_auth(token);
        }
        for (n, v) in headers {
            rb = rb.header(*n, *v);
        }
        parts(rb.send().await.expect("apply")).await
    }

    const ACCOUNT: [(&str, &str); 3] = [
        ("DeveloperToken", "BBD37VB98"),
        ("CustomerId", "1234567"),
        ("CustomerAccountId", "7654321"),
    ];

    async fn apply(mock: &BingMock, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        apply_with(mock, Some(ADS_TOKEN), &ACCOUNT, &body.to_string()).await
    }

    /// Asserts a fault whose body `TrackingId` is the header's.
    fn assert_fault(
        got: &(u16, reqwest::header::HeaderMap, Value),
        status: u16,
        kind: &str,
        code: i64,
        error_code: &str,
    ) {
        let (s, headers, body) = got;
        assert_eq!(*s, status, "{body}");
        assert_eq!(body["Type"], kind, "{body}");
        let tracking = header(headers, "trackingid");
        assert!(is_guid(tracking));
        assert_eq!(body["TrackingId"], tracking);
        let list = if kind == "AdApiFaultDetail" {
            "Errors"
        } else {
            "OperationErrors"
        };
        let error = &body[list][0];
        assert_eq!(error["Code"], code, "{body}");
        assert_eq!(error["ErrorCode"], error_code, "{body}");
        assert!(error["Message"].as_str().is_some_and(|m| !m.is_empty()));
        if kind == "AdApiFaultDetail" {
            assert_eq!(
                error.as_object().unwrap().keys().collect::<Vec<_>>(),
                ["Code", "Detail", "ErrorCode", "Message"]
            );
        } else {
            assert_eq!(body["BatchErrors"], json!([]));
            assert_eq!(error["Details"], Value::Null);
        }
    }

    #[tokio::test]
    async fn bing_200_with_one_partial_error_at_index_1() {
        let mock = bing_mock().await;
        let mut bad = conversion("click-2", 2);
        bad["ConversionName"] = json!("Unknown Goal");
        let body = json!({ "OfflineConversions": [conversion("click-1", 2), bad, conversion("click-3", 3)] });
        let (status, headers, answer) = apply(&mock, &body).await;
        assert_eq!(status, 200, "{answer}");
        assert!(is_guid(header(&headers, "trackingid")));
        assert_eq!(
            header(&headers, "content-type"),
            "application/json; charset=utf-8"
        );
        assert_eq!(
            answer,
            json!({ "PartialErrors": [ {
                "Code": 5606,
                "Details": null,
                "ErrorCode": "OfflineConversionNameInvalid",
                "FieldPath": null,
                "ForwardCompatibilityMap": null,
                "Index": 1,
                "Message": "The offline conversion name does not match an offline conversion goal.",
                "Type": "BatchError",
            } ] })
        );
        let accepted = mock.accepted_conversions();
        assert_eq!(
            accepted,
            vec![
                body["OfflineConversions"][0].clone(),
                body["OfflineConversions"][2].clone()
            ]
        );
        let requests = mock.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].status, 200);
        assert_eq!(requests[0].path, BING_APPLY_PATH);
        assert_eq!(requests[0].header("developertoken"), Some("BBD37VB98"));

        // All good: an empty list.
        mock.add_goal("Signup");
        let mut signup = conversion("click-4", 1);
        signup["ConversionName"] = json!("Signup");
        let (status, _, answer) = apply(&mock, &json!({ "OfflineConversions": [signup] })).await;
        assert_eq!((status, answer), (200, json!({ "PartialErrors": [] })));
        assert_eq!(mock.accepted_conversions().len(), 3);
    }

    #[tokio::test]
    async fn bing_auth_faults_105_109_106() {
        let mock = bing_mock().await;
        let body = json!({ "OfflineConversions": [conversion("c", 1)] }).to_string();
        let no_token = apply_with(&mock, None, &ACCOUNT, &body).await;
        assert_fault(
            &no_token,
            401,
            "AdApiFaultDetail",
            105,
            "InvalidCredentials",
        );
        let unknown = apply_with(
            &mock,
            Some("mock-at.graph.microsoft.com.1.x"),
            &ACCOUNT,
            &body,
        )
        .await;
        assert_fault(&unknown, 401, "AdApiFaultDetail", 105, "InvalidCredentials");
        let dev = [("DeveloperToken", "OTHER"), ACCOUNT[1], ACCOUNT[2]];
        assert_fault(
            &apply_with(&mock, Some(ADS_TOKEN), &dev, &body).await,
            401,
            "AdApiFaultDetail",
            105,
            "InvalidCredentials",
        );
        assert_fault(
            &apply_with(&mock, Some(ADS_TOKEN), &ACCOUNT[1..], &body).await,
            401,
            "AdApiFaultDetail",
            105,
            "InvalidCredentials",
        );
        let account = [ACCOUNT[0], ACCOUNT[1], ("CustomerAccountId", "999")];
        assert_fault(
            &apply_with(&mock, Some(ADS_TOKEN), &account, &body).await,
            403,
            "AdApiFaultDetail",
            106,
            "UserIsNotAuthorized",
        );
        assert_fault(
            &apply_with(&mock, Some(ADS_TOKEN), &ACCOUNT[..2], &body).await,
            403,
            "AdApiFaultDetail",
            106,
            "UserIsNotAuthorized",
        );

        mock.expire_token(ADS_TOKEN);
        let expired = apply_with(&mock, Some(ADS_TOKEN), &ACCOUNT, &body).await;
        assert_fault(
            &expired,
            401,
            "AdApiFaultDetail",
            109,
            "AuthenticationTokenExpired",
        );
        assert_eq!(
            expired.2["Errors"][0]["Message"],
            "Authentication token expired. Please renew it or obtain a new token."
        );

        // Other settings.
        mock.accept_token("fresh");
        mock.set_developer_token("DEV");
        mock.set_account("1", "2");
        let custom = [
            ("DeveloperToken", "DEV"),
            ("CustomerId", "1"),
            ("CustomerAccountId", "2"),
        ];
        assert_eq!(
            apply_with(&mock, Some("fresh"), &custom, &body).await.0,
            200
        );
        assert_eq!(
            apply_with(&mock, Some("fresh"), &ACCOUNT, &body).await.0,
            401
        );
        let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [401, 401, 401, 401, 403, 403, 401, 200, 401]);
        assert_eq!(mock.accepted_conversions().len(), 1);
    }

    #[tokio::test]
    async fn bing_117_500_and_scripted_answers() {
        let mock = bing_mock().await;
        let body = json!({ "OfflineConversions": [conversion("c", 1)] });
        mock.call_rate_exceeded_next(1);
        mock.internal_error_next(1);
        mock.script_next(
            1,
            Scripted::Status {
                status: 501,
                headers: vec![("Retry-After".into(), "60".into())],
                body: String::new(),
            },
        );
        assert_fault(
            &apply(&mock, &body).await,
            429,
            "ApiFaultDetail",
            117,
            "CallRateExceeded",
        );
        assert_fault(
            &apply(&mock, &body).await,
            500,
            "AdApiFaultDetail",
            0,
            "InternalError",
        );
        let scripted = apply(&mock, &body).await;
        assert_eq!(scripted.0, 501);
        assert_eq!(header(&scripted.1, "retry-after"), "60");
        assert!(is_guid(header(&scripted.1, "trackingid")));
        assert_eq!(apply(&mock, &body).await.0, 200);
        assert_eq!(mock.accepted_conversions().len(), 1);
    }

    #[tokio::test]
    async fn bing_operation_errors_5600_5601_and_malformed_json() {
        let mock = bing_mock().await;
        let missing = apply(&mock, &json!({})).await;
        assert_fault(
            &missing,
            400,
            "ApiFaultDetail",
            5600,
            "OfflineConversionsNullOrEmpty",
        );
        let empty = apply(&mock, &json!({ "OfflineConversions": [] })).await;
        assert_fault(
            &empty,
            400,
            "ApiFaultDetail",
            5600,
            "OfflineConversionsNullOrEmpty",
        );
        let many: Vec<Value> = (0..1001).map(|i| conversion(&format!("c{i}"), 1)).collect();
        let over = apply(&mock, &json!({ "OfflineConversions": many })).await;
        assert_fault(
            &over,
            400,
            "ApiFaultDetail",
            5601,
            "OfflineConversionsLimitExceeded",
        );
        let bad = apply_with(
            &mock,
            Some(ADS_TOKEN),
            &ACCOUNT,
            "{\"OfflineConversions\": [",
        )
        .await;
        assert_fault(&bad, 400, "ApiFaultDetail", 0, "InternalError");

        let r = client()
            .post(format!(
                "{}/CampaignManagement/v13/Nothing",
                mock.base_url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        assert!(is_guid(header(r.headers(), "trackingid")));
        assert!(mock.accepted_conversions().is_empty());
    }

    #[tokio::test]
    async fn bing_item_checks_in_order_and_dedupe() {
        let mock = bing_mock().await;
        let now = Utc::now();
        mock.register_click("late-click", now - chrono::Duration::hours(1));
        let with = |f: &dyn Fn(&mut Map<String, Value>)| {
            let mut c = conversion("click", 5);
            f(c.as_object_mut().unwrap());
            c
        };
        let good = conversion("good", 3);
        let mut same_time = good.clone();
        // Same instant written another way: a duplicate.
        same_time["ConversionTime"] = json!(DateTime::parse_from_rfc3339(
            good["ConversionTime"].as_str().unwrap()
        )
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339());
        let items = vec![
            Value::Null,
            with(&|c| {
                c.remove("MicrosoftClickId");
            }),
            with(&|c| {
                c.remove("MicrosoftClickId");
                c.insert(
                    "HashedEmailAddress".into(),
                    json!("5a607f6d0526ccbe720f7c38bf7afbabb0d9906c46ba78c7795da1eccdc2aa4f"),
                );
            }),
            with(&|c| {
                c.insert("ConversionName".into(), json!(""));
            }),
            with(&|c| {
                c.insert("ConversionName".into(), json!("Nope"));
            }),
            with(&|c| {
                c.remove("ConversionTime");
            }),
            with(&|c| {
                c.insert("ConversionTime".into(), json!("yesterday"));
            }),
            with(&|c| {
                c.insert(
                    "ConversionTime".into(),
                    json!(iso(now + chrono::Duration::hours(1))),
                );
            }),
            with(&|c| {
                c.insert(
                    "ConversionTime".into(),
                    json!(iso(now - chrono::Duration::days(91))),
                );
            }),
            with(&|c| {
                c.insert("MicrosoftClickId".into(), json!("late-click"));
                c.insert(
                    "ConversionTime".into(),
                    json!(iso(now - chrono::Duration::hours(2))),
                );
            }),
            with(&|c| {
                c.insert("ConversionValue".into(), json!("12"));
            }),
            with(&|c| {
                c.insert("ConversionCurrencyCode".into(), json!("EURO"));
            }),
            good.clone(),
            same_time,
            // Missing time and bad currency: the time is reported first.
            with(&|c| {
                c.remove("ConversionTime");
                c.insert("ConversionCurrencyCode".into(), json!("E"));
            }),
        ];
        let (status, _, answer) = apply(&mock, &json!({ "OfflineConversions": items })).await;
        assert_eq!(status, 200, "{answer}");
        let got: Vec<(u64, i64, String)> = answer["PartialErrors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["Type"], "BatchError");
                (
                    e["Index"].as_u64().unwrap(),
                    e["Code"].as_i64().unwrap(),
                    e["ErrorCode"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(u64, i64, &str)> = vec![
            (0, 5602, "OfflineConversionIsNull"),
            (1, 5603, "OfflineConversionMicrosoftClickIdNullOrEmpty"),
            (3, 5605, "OfflineConversionNameNullOrEmpty"),
            (4, 5606, "OfflineConversionNameInvalid"),
            (5, 5608, "OfflineConversionTimeNullOrEmpty"),
            (6, 5607, "OfflineConversionTimeInvalid"),
            (7, 5614, "FutureConversionTimeCannotBeSet"),
            (8, 5609, "OfflineConversionTimeOutOfWindow"),
            (9, 5616, "ConversionTimeEarlierThanClickTime"),
            (10, 5610, "OfflineConversionValueInvalid"),
            (11, 5611, "OfflineConversionCurrencyCodeInvalid"),
            (14, 5608, "OfflineConversionTimeNullOrEmpty"),
        ];
        let want: Vec<(u64, i64, String)> = want
            .into_iter()
            .map(|(i, c, e)| (i, c, e.to_string()))
            .collect();
        assert_eq!(got, want);
        // Index 2 (hashed email only) and 12 (good) were taken; 13 was a repeat.
        let accepted = mock.accepted_conversions();
        assert_eq!(accepted.len(), 2);
        assert_eq!(accepted[1], good);

        // A repeat in a later call is ignored silently too.
        let (status, _, answer) = apply(&mock, &json!({ "OfflineConversions": [good] })).await;
        assert_eq!((status, answer), (200, json!({ "PartialErrors": [] })));
        assert_eq!(mock.accepted_conversions().len(), 2);
        assert!(mock.wait_for_requests(2, WAIT).await);
    }

    // -- HTTP receiver -------------------------------------------------------

    #[tokio::test]
    async fn receiver_default_and_scripted_answers() {
        let rx = HttpReceiver::start().await;
        rx.respond_next(1, 503, vec![("Retry-After".into(), "2".into())], "busy");
        rx.respond_next(
            1,
            201,
            vec![("Content-Type".into(), "application/json".into())],
            "{\"id\":7}",
        );
        let url = rx.url("/hooks/lead?x=1&y=two");
        let a = parts(
            client()
                .post(&url)
                .json(&json!({ "lead": 1 }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.0, 503);
        assert_eq!(header(&a.1, "retry-after"), "2");
        assert_eq!(a.2, Value::String("busy".into()));
        let b = parts(client().put(&url).body("raw").send().await.unwrap()).await;
        assert_eq!((b.0, b.2), (201, json!({ "id": 7 })));
        let c = parts(client().get(rx.url("/")).send().await.unwrap()).await;
        assert_eq!((c.0, c.2), (200, json!({ "ok": true })));
        assert_eq!(header(&c.1, "content-type"), "application/json");

        assert!(rx.wait_for_requests(3, WAIT).await);
        let requests = rx.requests();
        let summary: Vec<(&str, &str, u16)> = requests
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.status))
            .collect();
        assert_eq!(
            summary,
            [
                ("POST", "/hooks/lead?x=1&y=two", 503),
                ("PUT", "/hooks/lead?x=1&y=two", 201),
                ("GET", "/", 200)
            ]
        );
        assert_eq!(requests[0].json(), json!({ "lead": 1 }));
        assert_eq!(requests[0].header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(requests[1].body, b"raw");
        assert!(requests[0].at <= requests[1].at);
        assert!(!rx.wait_for_requests(4, Duration::from_millis(20)).await);
    }
}
