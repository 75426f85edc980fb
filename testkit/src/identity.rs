//! A local mock of the Microsoft identity platform v2.0: the OAuth 2.0
//! `/{tenant}/oauth2/v2.0/authorize` and `/{tenant}/oauth2/v2.0/token`
//! endpoints, behaving as `../shared/reference/microsoft-apis.md` §1 describes
//! (authorization-code grant with PKCE, refresh-token grant with rotation,
//! the one-resource-per-token rule, the §1.9 error shape and headers, and
//! the §1.10 error codes), plus test switches for failures, throttling,
//! outages and slow answers.
//!
//! Access tokens encode their audience: `mock-at.<resource-host>.<n>.<random>`
//! (see [`access_token_host`]), so other mocks can reject a token minted for
//! another resource.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// How long an authorization code stays redeemable (§1.3: about 10 minutes).
const CODE_TTL: Duration = Duration::from_secs(600);

/// The resource a scope without a resource prefix belongs to (§1.8).
const GRAPH: &str = "https://graph.microsoft.com";

/// Scopes that belong to no resource (§1.8).
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The registered application the mock knows, and its token behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockConfig {
    /// The application (client) id; any other `client_id` is rejected.
    pub client_id: String,
    /// The client secret of a confidential client; `None` = public client,
    /// and then a request carrying a secret is rejected (400 `invalid_request`).
    pub client_secret: Option<String>,
    /// `expires_in` (and `ext_expires_in`) of issued access tokens, in seconds.
    pub expires_in: u64,
    /// `true`: a refresh token is single-use, reusing one gives 400
    /// `invalid_grant` AADSTS70008. Real Microsoft keeps the old one valid;
    /// strict mode exists to prove a client never reuses one.
    pub strict_rotation: bool,
}

impl Default for MockConfig {
    /// Client `11112222-bbbb-3333-cccc-4444dddd5555`, secret `mock-secret`,
    /// 3599 s tokens, Microsoft's (lenient) rotation.
    fn default() -> Self {
        MockConfig {
            client_id: "11112222-bbbb-3333-cccc-4444dddd5555".to_string(),
            client_secret: Some("mock-secret".to_string()),
            expires_in: 3599,
            strict_rotation: false,
        }
    }
}

/// What the token endpoint does with the next request (authorize is unaffected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Process the request as Microsoft would.
    Normal,
    /// Every token request fails with this error body (§1.9 shape): status,
    /// `error`, AADSTS number, description (prefixed with `AADSTSnnnn: `
    /// unless it already starts with `AADSTS`) and optional `suberror`.
    Fail {
        /// HTTP status of the answer.
        status: u16,
        /// The `error` field, e.g. `invalid_grant`.
        error: String,
        /// The AADSTS number, put in `error_codes` and the description.
        aadsts: u32,
        /// Human text of `error_description`.
        description: String,
        /// The `suberror` field, e.g. `basic_action`.
        suberror: Option<String>,
    },
    /// 503 with a JSON `temporarily_unavailable` body and optional Retry-After seconds.
    Unavailable {
        /// Value of the `Retry-After` header, if any.
        retry_after: Option<u64>,
    },
    /// 429, plain text body "Too Many Requests", Retry-After.
    Throttled {
        /// Value of the `Retry-After` header.
        retry_after: u64,
    },
    /// Process (and record) the request at once, but answer only after this
    /// delay, as when the answer is slow in transit.
    Slow(Duration),
}

/// One request the token endpoint received, recorded before it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The form fields of the body (empty when the body was not
    /// `application/x-www-form-urlencoded`).
    pub form: BTreeMap<String, String>,
    /// Client id and secret from an HTTP Basic `Authorization` header.
    pub basic_auth: Option<(String, String)>,
    /// When the request arrived.
    pub at: Instant,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// A running identity mock on `127.0.0.1`; the server stops when this is dropped.
pub struct IdentityMock {
    shared: Arc<Shared>,
    base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl IdentityMock {
    /// Binds `127.0.0.1:0` and serves in a tokio task until dropped.
    pub async fn start(config: MockConfig) -> IdentityMock {
        let (received, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            config,
            inner: Mutex::new(Inner {
                mode: Mode::Normal,
                next: None,
                redirect_uris: Vec::new(),
                allow_loopback: true,
                deny: false,
                codes: HashMap::new(),
                refresh_tokens: Vec::new(),
                used: Vec::new(),
                requests: Vec::new(),
                access_tokens: Vec::new(),
                counter: 0,
            }),
            received,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        IdentityMock {
            shared,
            base_url: format!("http://{addr}"),
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The token endpoint of the `common` tenant (any tenant is served).
    pub fn token_url(&self) -> String {
        format!("{}/common/oauth2/v2.0/token", self.base_url)
    }

    /// The authorize endpoint of the `common` tenant (any tenant is served).
    pub fn authorize_url(&self) -> String {
        format!("{}/common/oauth2/v2.0/authorize", self.base_url)
    }

    /// Registers a refresh token as valid for the configured client with these
    /// scopes (space-separated), as if issued by an earlier login.
    pub fn seed_refresh_token(&self, refresh_token: &str, scope: &str) {
        let mut inner = self.lock();
        inner.refresh_tokens.retain(|rt| rt.token != refresh_token);
        inner.refresh_tokens.push(RefreshToken {
            token: refresh_token.to_string(),
            scope: split_scope(scope),
            used: false,
        });
    }

    /// Sets what the token endpoint does from now on (and cancels a pending
    /// [`fail_next`](Self::fail_next)).
    pub fn set_mode(&self, mode: Mode) {
        let mut inner = self.lock();
        inner.mode = mode;
        inner.next = None;
    }

    /// Makes the next `count` token requests answer with `mode`; after them
    /// the mode set by [`set_mode`](Self::set_mode) (by default `Normal`)
    /// applies again.
    pub fn fail_next(&self, count: usize, mode: Mode) {
        self.lock().next = (count > 0).then_some((count, mode));
    }

    /// Registers an allowed redirect URI (exact match).
    pub fn allow_redirect_uri(&self, uri: &str) {
        self.lock().redirect_uris.push(uri.to_string());
    }

    /// Whether any `http://localhost:{port}/…` or `http://127.0.0.1:{port}/…`
    /// redirect URI is allowed, as Microsoft allows for native apps (default `true`).
    pub fn allow_loopback_redirects(&self, allow: bool) {
        self.lock().allow_loopback = allow;
    }

    /// Switch: the authorize endpoint answers with `error=access_denied`
    /// (redirect with `error`, `error_description` and `state`).
    pub fn deny_authorization(&self, deny: bool) {
        self.lock().deny = deny;
    }

    /// Makes every authorization code issued so far expired (AADSTS70008 on redemption).
    pub fn expire_codes(&self) {
        let now = Instant::now();
        for code in self.lock().codes.values_mut() {
            code.expires = now;
        }
    }

    /// Every token request, in order (failed ones too).
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.lock().requests.clone()
    }

    /// How many token requests were received.
    pub fn token_request_count(&self) -> usize {
        self.lock().requests.len()
    }

    /// Waits until at least `n` token requests were received or `timeout`
    /// passed; returns whether `n` was reached.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.received.subscribe();
        let reached = async { rx.wait_for(|count| *count >= n).await.is_ok() };
        tokio::time::timeout(timeout, reached)
            .await
            .unwrap_or(false)
    }

    /// The refresh tokens that were redeemed at least once, in order of first use.
    pub fn used_refresh_tokens(&self) -> Vec<String> {
        self.lock().used.clone()
    }

    /// Every refresh token the mock has issued or seeded (in order), and
    /// whether each was already used.
    pub fn refresh_tokens(&self) -> Vec<(String, bool)> {
        self.lock()
            .refresh_tokens
            .iter()
            .map(|rt| (rt.token.clone(), rt.used))
            .collect()
    }

    /// Access tokens issued so far (in order), to check what a client received.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.lock().access_tokens.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }
}

impl Drop for IdentityMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The resource host an access token of this mock was issued for
/// (`mock-at.graph.microsoft.com.3.xyz` → `graph.microsoft.com`), or `None`
/// for a token the mock did not mint.
pub fn access_token_host(access_token: &str) -> Option<&str> {
    let rest = access_token.strip_prefix("mock-at.")?;
    let mut parts = rest.rsplitn(3, '.');
    let _random = parts.next()?;
    let counter = parts.next()?;
    let host = parts.next()?;
    (counter.parse::<u64>().is_ok() && !host.is_empty()).then_some(host)
}

// ---------------------------------------------------------------------------
// State

struct Shared {
    config: MockConfig,
    inner: Mutex<Inner>,
    /// Number of token requests received so far.
    received: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    mode: Mode,
    /// `fail_next`: remaining count and its mode.
    next: Option<(usize, Mode)>,
    redirect_uris: Vec<String>,
    allow_loopback: bool,
    deny: bool,
    codes: HashMap<String, AuthCode>,
    refresh_tokens: Vec<RefreshToken>,
    used: Vec<String>,
    requests: Vec<TokenRequest>,
    access_tokens: Vec<String>,
    counter: u64,
}

struct AuthCode {
    client_id: String,
    redirect_uri: String,
    scope: Vec<String>,
    /// PKCE challenge and method (`S256` or `plain`).
    challenge: Option<(String, String)>,
    expires: Instant,
    used: bool,
}

struct RefreshToken {
    token: String,
    /// The consented scopes (may span several resources).
    scope: Vec<String>,
    used: bool,
}

/// A token-endpoint error before rendering (§1.9).
#[derive(Debug)]
struct OAuthError {
    status: u16,
    error: String,
    code: u32,
    description: String,
    suberror: Option<String>,
}

fn err(status: u16, error: &str, code: u32, description: impl Into<String>) -> OAuthError {
    OAuthError {
        status,
        error: error.to_string(),
        code,
        description: description.into(),
        suberror: None,
    }
}

fn missing(name: &str) -> OAuthError {
    err(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

fn malformed(detail: &str) -> OAuthError {
    err(
        400,
        "invalid_request",
        9002313,
        format!("Invalid request. Request is malformed or invalid. {detail}"),
    )
}

fn expired_grant() -> OAuthError {
    err(
        400,
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. \
         Send a new interactive authorization request for this user and resource.",
    )
}

impl Inner {
    /// The mode for the request now arriving (consumes one `fail_next`).
    fn take_mode(&mut self) -> Mode {
        if let Some((count, mode)) = self.next.take() {
            if count > 1 {
                self.next = Some((count - 1, mode.clone()));
            }
            return mode;
        }
        self.mode.clone()
    }

    fn redirect_allowed(&self, uri: &str) -> bool {
        if self.redirect_uris.iter().any(|u| u == uri) {
            return true;
        }
        if !self.allow_loopback {
            return false;
        }
        match url::Url::parse(uri) {
            Ok(u) => {
                u.scheme() == "http"
                    && matches!(u.host_str(), Some("localhost") | Some("127.0.0.1"))
            }
            Err(_) => false,
        }
    }

    fn process(
        &mut self,
        config: &MockConfig,
        form_ok: bool,
        form: &BTreeMap<String, String>,
        duplicate: Option<&str>,
        basic: &Result<Option<(String, String)>, ()>,
    ) -> Result<Value, OAuthError> {
        if !form_ok {
            return Err(missing("grant_type"));
        }
        if let Some(name) = duplicate {
            return Err(malformed(&format!("Parameter '{name}' is duplicated.")));
        }
        let basic = basic
            .as_ref()
            .map_err(|_| malformed("The Authorization header is not valid HTTP Basic."))?;
        self.authenticate_client(config, form, basic.as_ref())?;
        let grant_type = non_empty(form, "grant_type").ok_or_else(|| missing("grant_type"))?;
        let requested = non_empty(form, "scope").map(split_scope);
        match grant_type {
            "authorization_code" => self.redeem_code(config, form, requested),
            "refresh_token" => self.redeem_refresh_token(config, form, requested),
            other => Err(err(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            )),
        }
    }

    fn authenticate_client(
        &self,
        config: &MockConfig,
        form: &BTreeMap<String, String>,
        basic: Option<&(String, String)>,
    ) -> Result<(), OAuthError> {
        let body_id = non_empty(form, "client_id");
        let basic_id = basic.map(|(id, _)| id.as_str()).filter(|s| !s.is_empty());
        let client_id = body_id.or(basic_id).ok_or_else(|| missing("client_id"))?;
        if let (Some(a), Some(b)) = (body_id, basic_id) {
            if a != b {
                return Err(malformed(
                    "The client_id in the body and in the Authorization header differ.",
                ));
            }
        }
        if client_id != config.client_id {
            return Err(err(
                400,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory \
                     'mock'. This can happen if the application has not been installed by the \
                     administrator of the tenant or consented to by any user in the tenant."
                ),
            ));
        }
        let secrets: Vec<&str> = non_empty(form, "client_secret")
            .into_iter()
            .chain(basic.map(|(_, s)| s.as_str()).filter(|s| !s.is_empty()))
            .collect();
        match &config.client_secret {
            None if !secrets.is_empty() => Err(err(
                400,
                "invalid_request",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be \
                 presented.",
            )),
            None => Ok(()),
            Some(_) if secrets.is_empty() => Err(err(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or \
                 'client_secret'.",
            )),
            Some(expected) if secrets.iter().any(|s| s != expected) => Err(err(
                401,
                "invalid_client",
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request \
                     is the client secret value, not the client secret ID, for a secret added to \
                     app '{client_id}'."
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    fn redeem_code(
        &mut self,
        config: &MockConfig,
        form: &BTreeMap<String, String>,
        requested: Option<Vec<String>>,
    ) -> Result<Value, OAuthError> {
        let code_value = non_empty(form, "code").ok_or_else(|| missing("code"))?;
        let code = self.codes.get(code_value).ok_or_else(expired_grant)?;
        if code.used {
            return Err(err(
                400,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid \
                 code or use an existing refresh token.",
            ));
        }
        if Instant::now() >= code.expires {
            return Err(expired_grant());
        }
        if code.client_id != config.client_id {
            return Err(err(
                400,
                "invalid_grant",
                70000,
                "Provided grant is invalid or malformed.",
            ));
        }
        let redirect_uri =
            non_empty(form, "redirect_uri").ok_or_else(|| missing("redirect_uri"))?;
        if redirect_uri != code.redirect_uri {
            return Err(err(
                400,
                "invalid_grant",
                50011,
                format!(
                    "The redirect URI '{redirect_uri}' specified in the request does not match \
                     the redirect URI '{}' provided when requesting the authorization code.",
                    code.redirect_uri
                ),
            ));
        }
        if let Some((challenge, method)) = &code.challenge {
            let verifier = non_empty(form, "code_verifier").unwrap_or("");
            let computed = if method == "S256" {
                URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
            } else {
                verifier.to_string()
            };
            if verifier.is_empty() || computed != *challenge {
                return Err(err(
                    400,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the \
                     authorization request.",
                ));
            }
        }
        let granted = code.scope.clone();
        let grant = resolve_scopes(config, requested, &granted)?;
        if let Some(code) = self.codes.get_mut(code_value) {
            code.used = true;
        }
        Ok(self.issue(config, grant, granted))
    }

    fn redeem_refresh_token(
        &mut self,
        config: &MockConfig,
        form: &BTreeMap<String, String>,
        requested: Option<Vec<String>>,
    ) -> Result<Value, OAuthError> {
        let value = non_empty(form, "refresh_token").ok_or_else(|| missing("refresh_token"))?;
        let index = self
            .refresh_tokens
            .iter()
            .position(|rt| rt.token == value)
            .ok_or_else(expired_grant)?;
        if config.strict_rotation && self.refresh_tokens[index].used {
            return Err(expired_grant());
        }
        let granted = self.refresh_tokens[index].scope.clone();
        let grant = resolve_scopes(config, requested, &granted)?;
        if !self.refresh_tokens[index].used {
            self.refresh_tokens[index].used = true;
            self.used.push(value.to_string());
        }
        Ok(self.issue(config, grant, granted))
    }

    /// Mints the tokens and builds the §1.6 success body.
    fn issue(&mut self, config: &MockConfig, grant: Grant, granted: Vec<String>) -> Value {
        self.counter += 1;
        let access_token = format!("mock-at.{}.{}.{}", grant.host, self.counter, random(24));
        self.access_tokens.push(access_token.clone());
        let with_refresh = has_scope(&granted, "offline_access");
        let mut scope = grant.scopes;
        if with_refresh && !has_scope(&scope, "offline_access") {
            scope.push("offline_access".to_string());
        }
        let mut body = json!({
            "token_type": "Bearer",
            "scope": scope.join(" "),
            "expires_in": config.expires_in,
            "ext_expires_in": config.expires_in,
            "access_token": access_token,
        });
        if with_refresh {
            let token = format!("mock-rt.{}.{}", self.counter, random(32));
            self.refresh_tokens.push(RefreshToken {
                token: token.clone(),
                scope: granted,
                used: false,
            });
            body["refresh_token"] = Value::String(token);
        }
        if has_scope(&scope, "openid") {
            body["id_token"] = Value::String(id_token(config));
        }
        body
    }
}

/// What a token request is granted: the scopes reported back and the host
/// of the resource the access token is for.
struct Grant {
    scopes: Vec<String>,
    host: String,
}

/// Applies §1.8: one resource per token; an explicit scope must be covered
/// by the consented ones; without a scope the first consented resource wins.
fn resolve_scopes(
    config: &MockConfig,
    requested: Option<Vec<String>>,
    granted: &[String],
) -> Result<Grant, OAuthError> {
    let explicit = requested.is_some();
    let effective = requested.unwrap_or_else(|| granted.to_vec());
    let mut resources: Vec<String> = Vec::new();
    for scope in effective.iter().filter(|s| !is_oidc(s)) {
        let (resource, _) = split_resource(scope);
        if !resources.iter().any(|r| r.eq_ignore_ascii_case(&resource)) {
            resources.push(resource);
        }
    }
    if explicit && resources.len() > 1 {
        return Err(err(
            400,
            "invalid_scope",
            700022,
            format!(
                "The provided value for the input parameter scope is not valid because it \
                 contains more than one resource. Scope {} is not valid.",
                effective.join(" ")
            ),
        ));
    }
    let resource = resources
        .first()
        .cloned()
        .unwrap_or_else(|| GRAPH.to_string());
    let mut scopes = Vec::new();
    for scope in &effective {
        if is_oidc(scope) {
            scopes.push(scope.to_ascii_lowercase());
            continue;
        }
        let (res, permission) = split_resource(scope);
        if !res.eq_ignore_ascii_case(&resource) {
            continue;
        }
        if explicit && !consented(granted, &res, &permission) {
            return Err(err(
                400,
                "invalid_grant",
                65001,
                format!(
                    "The user or administrator has not consented to use the application with \
                     ID '{}' for scope '{scope}'. Send an interactive authorization request for \
                     this user and resource.",
                    config.client_id
                ),
            ));
        }
        scopes.push(format!("{res}/{permission}"));
    }
    let host = url::Url::parse(&resource)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| {
            resource
                .split_once("://")
                .map_or(resource.as_str(), |(_, h)| h)
                .to_string()
        });
    Ok(Grant { scopes, host })
}

fn consented(granted: &[String], resource: &str, permission: &str) -> bool {
    granted.iter().filter(|g| !is_oidc(g)).any(|g| {
        let (res, perm) = split_resource(g);
        res.eq_ignore_ascii_case(resource)
            && (perm.eq_ignore_ascii_case(permission)
                || perm == ".default"
                || permission == ".default")
    })
}

fn is_oidc(scope: &str) -> bool {
    OIDC_SCOPES.iter().any(|o| o.eq_ignore_ascii_case(scope))
}

fn has_scope(scopes: &[String], name: &str) -> bool {
    scopes.iter().any(|s| s.eq_ignore_ascii_case(name))
}

fn split_scope(scope: &str) -> Vec<String> {
    scope.split_whitespace().map(str::to_string).collect()
}

/// `https://ads.microsoft.com/msads.manage` → (`https://ads.microsoft.com`,
/// `msads.manage`); `Mail.Send` → (Graph, `Mail.Send`).
fn split_resource(scope: &str) -> (String, String) {
    match scope.find("://") {
        Some(i) => match scope[i + 3..].find('/') {
            Some(j) => (
                scope[..i + 3 + j].to_string(),
                scope[i + 3 + j + 1..].to_string(),
            ),
            None => (scope.to_string(), String::new()),
        },
        None => (GRAPH.to_string(), scope.to_string()),
    }
}

fn non_empty<'a>(form: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    form.get(name).map(String::as_str).filter(|s| !s.is_empty())
}

fn random(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn guid() -> String {
    let v: u128 = rand::rng().random();
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn timestamp() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// A dummy unsigned JWT (`alg: none`) for the configured client.
fn id_token(config: &MockConfig) -> String {
    let now = chrono::Utc::now().timestamp();
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"none"}"#);
    let claims = json!({
        "aud": config.client_id,
        "iss": "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "name": "Mock User",
        "preferred_username": "mock.user@example.com",
        "oid": "00000000-0000-0000-66f3-3332eca7ea81",
        "sub": "mock-subject",
        "tid": "9188040d-6c67-4c5b-b112-36a304b66dad",
        "ver": "2.0",
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.bW9jaw")
}

/// Percent-decoding of `application/x-www-form-urlencoded` text (`+` = space).
fn form_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Ok(None)`: no Basic header; `Err`: a malformed one. Per RFC 6749
/// §2.3.1 id and secret are form-urlencoded before base64.
fn parse_basic(headers: &HeaderMap) -> Result<Option<(String, String)>, ()> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| ())?;
    let text = String::from_utf8(decoded).map_err(|_| ())?;
    let (id, secret) = text.split_once(':').ok_or(())?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

// ---------------------------------------------------------------------------
// Rendering

/// Headers every token answer carries (§1.9).
fn token_headers(response: &mut Response, request_id: &str) {
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-ms-request-id", v);
    }
    h.insert(
        "x-ms-ests-server",
        HeaderValue::from_static("mock-identity"),
    );
}

fn json_response(status: u16, body: &Value, request_id: &str) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        body.to_string(),
    )
        .into_response();
    token_headers(&mut response, request_id);
    response
}

/// The §1.9 error body.
fn error_response(e: &OAuthError, trace_id: &str, correlation_id: &str) -> Response {
    let ts = timestamp();
    let text = if e.description.starts_with("AADSTS") {
        e.description.clone()
    } else {
        format!("AADSTS{}: {}", e.code, e.description)
    };
    let mut body = json!({
        "error": e.error,
        "error_description": format!(
            "{text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {ts}"
        ),
        "error_codes": [e.code],
        "timestamp": ts,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={}", e.code),
    });
    if let Some(sub) = &e.suberror {
        body["suberror"] = Value::String(sub.clone());
    }
    json_response(e.status, &body, trace_id)
}

fn with_retry_after(mut response: Response, seconds: Option<u64>) -> Response {
    if let Some(s) = seconds {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    response
}

// ---------------------------------------------------------------------------
// Handlers

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let trace_id = guid();
    // Microsoft echoes the client's `client-request-id` as correlation id.
    let correlation_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(guid);
    let form_ok = is_form(&headers);
    let mut form = BTreeMap::new();
    let mut duplicate = None;
    if form_ok {
        for (k, v) in url::form_urlencoded::parse(&body) {
            if form.insert(k.to_string(), v.to_string()).is_some() && duplicate.is_none() {
                duplicate = Some(k.to_string());
            }
        }
    }
    let basic = parse_basic(&headers);

    let (response, count, delay) = {
        let mut inner = shared.lock();
        let mut delay = None;
        let response = match inner.take_mode() {
            Mode::Fail {
                status,
                error,
                aadsts,
                description,
                suberror,
            } => error_response(
                &OAuthError {
                    status,
                    error,
                    code: aadsts,
                    description,
                    suberror,
                },
                &trace_id,
                &correlation_id,
            ),
            Mode::Unavailable { retry_after } => with_retry_after(
                error_response(
                    &err(
                        503,
                        "temporarily_unavailable",
                        90033,
                        "A transient error has occurred. Please try again.",
                    ),
                    &trace_id,
                    &correlation_id,
                ),
                retry_after,
            ),
            Mode::Throttled { retry_after } => {
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
                    "Too Many Requests",
                )
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&trace_id) {
                    r.headers_mut().insert("x-ms-request-id", v);
                }
                with_retry_after(r, Some(retry_after))
            }
            mode => {
                if let Mode::Slow(d) = mode {
                    delay = Some(d);
                }
                match inner.process(&shared.config, form_ok, &form, duplicate.as_deref(), &basic) {
                    Ok(body) => json_response(200, &body, &trace_id),
                    Err(e) => error_response(&e, &trace_id, &correlation_id),
                }
            }
        };
        inner.requests.push(TokenRequest {
            form,
            basic_auth: basic.ok().flatten(),
            at,
            status: response.status().as_u16(),
        });
        (response, inner.requests.len(), delay)
    };
    shared.received.send_replace(count);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    response
}

fn text_page(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        message,
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Sends `params` to the redirect URI according to `response_mode` (§1.3).
fn redirect_with(redirect_uri: &url::Url, mode: &str, params: &[(&str, &str)]) -> Response {
    match mode {
        "form_post" => {
            let inputs: String = params
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<input type=\"hidden\" name=\"{}\" value=\"{}\" />",
                        html_escape(k),
                        html_escape(v)
                    )
                })
                .collect();
            let page = format!(
                "<html><head><title>Working...</title></head><body>\
                 <form method=\"POST\" name=\"hiddenform\" action=\"{}\">{inputs}\
                 <noscript><p>Script is disabled. Click Submit to continue.</p>\
                 <input type=\"submit\" value=\"Submit\" /></noscript></form>\
                 <script language=\"javascript\">document.forms[0].submit();</script>\
                 </body></html>",
                html_escape(redirect_uri.as_str())
            );
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                )],
                page,
            )
                .into_response()
        }
        _ => {
            let mut target = redirect_uri.clone();
            if mode == "fragment" {
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in params {
                    ser.append_pair(k, v);
                }
                target.set_fragment(Some(&ser.finish()));
            } else {
                let mut pairs = target.query_pairs_mut();
                for (k, v) in params {
                    pairs.append_pair(k, v);
                }
            }
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(target.as_str()) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
    }
}

async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let get = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    let config = &shared.config;
    let mut inner = shared.lock();

    let client_id = get("client_id");
    if client_id.is_empty() {
        return text_page(
            "AADSTS900144: The request body must contain the following parameter: 'client_id'."
                .to_string(),
        );
    }
    if client_id != config.client_id {
        return text_page(format!(
            "unauthorized_client: AADSTS700016: Application with identifier '{client_id}' was \
             not found in the directory 'mock'."
        ));
    }
    let redirect_raw = get("redirect_uri");
    let redirect_uri = match url::Url::parse(redirect_raw) {
        Ok(u) if inner.redirect_allowed(redirect_raw) => u,
        _ => {
            return text_page(format!(
                "invalid_request: The provided value for the input parameter 'redirect_uri' is \
                 not valid. The expected value is a URI which matches a redirect URI registered \
                 for this client application. AADSTS50011: The redirect URI '{redirect_raw}' \
                 specified in the request does not match the redirect URIs configured for the \
                 application '{client_id}'."
            ))
        }
    };
    let state = params.get("state").map(String::as_str);
    let mode = match get("response_mode") {
        "" => "query",
        m @ ("query" | "fragment" | "form_post") => m,
        other => {
            let description =
                format!("AADSTS900147: The response_mode '{other}' is not supported.");
            return error_redirect(
                &redirect_uri,
                "query",
                "invalid_request",
                &description,
                state,
            );
        }
    };
    let fail = |error: &str, description: &str| {
        error_redirect(&redirect_uri, mode, error, description, state)
    };
    if !get("response_type").split_whitespace().any(|t| t == "code") {
        return fail(
            "unsupported_response_type",
            "AADSTS700054: response_type 'code' is required for the authorization code flow.",
        );
    }
    let scope = split_scope(get("scope"));
    if scope.is_empty() {
        return fail(
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'scope'.",
        );
    }
    let challenge = get("code_challenge");
    let method = get("code_challenge_method");
    let challenge = match (challenge, method) {
        ("", "") => None,
        ("", _) => {
            return fail(
                "invalid_request",
                "AADSTS900144: The request body must contain the following parameter: \
                 'code_challenge'.",
            )
        }
        (c, "") | (c, "plain") => Some((c.to_string(), "plain".to_string())),
        (c, "S256") => Some((c.to_string(), "S256".to_string())),
        (_, other) => {
            return fail(
                "invalid_request",
                &format!("AADSTS501491: Invalid code_challenge_method '{other}'."),
            )
        }
    };
    if inner.deny {
        return fail(
            "access_denied",
            "AADSTS65004: User declined to consent to access the app.",
        );
    }
    let code = format!("mock-code.{}", random(40));
    inner.codes.insert(
        code.clone(),
        AuthCode {
            client_id: client_id.to_string(),
            redirect_uri: redirect_raw.to_string(),
            scope,
            challenge,
            expires: Instant::now() + CODE_TTL,
            used: false,
        },
    );
    let mut out = vec![("code", code.as_str())];
    if let Some(s) = state {
        out.push(("state", s));
    }
    redirect_with(&redirect_uri, mode, &out)
}

fn error_redirect(
    redirect_uri: &url::Url,
    mode: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> Response {
    let mut out = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        out.push(("state", s));
    }
    redirect_with(redirect_uri, mode, &out)
}

// ---------------------------------------------------------------------------
// Tests of the mock itself

#[cfg(test)]
mod tests {
    use super::*;

    const GRAPH_SCOPE: &str = "https://graph.microsoft.com/Mail.Send offline_access";

    fn client() -> reqwest::Client {
        crate::daemon::http_client()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    async fn post(mock: &IdentityMock, form: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
        let r = client()
            .post(mock.token_url())
            .form(form)
            .send()
            .await
            .expect("token request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    async fn refresh(mock: &IdentityMock, rt: &str) -> (u16, HeaderMap, Value) {
        post(
            mock,
            &[
                ("client_id", "11112222-bbbb-3333-cccc-4444dddd5555"),
                ("client_secret", "mock-secret"),
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await
    }

    fn assert_error(status: u16, headers: &HeaderMap, body: &Value, want: (u16, &str, u32)) {
        assert_eq!(status, want.0, "{body}");
        assert_eq!(body["error"], want.1, "{body}");
        assert_eq!(body["error_codes"], json!([want.2]), "{body}");
        let description = body["error_description"].as_str().expect("description");
        assert!(description.starts_with(&format!("AADSTS{}: ", want.2)));
        let trace = body["trace_id"].as_str().expect("trace_id");
        let correlation = body["correlation_id"].as_str().expect("correlation_id");
        let ts = body["timestamp"].as_str().expect("timestamp");
        assert!(description.ends_with(&format!(
            "\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {ts}"
        )));
        assert!(chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%SZ").is_ok());
        assert_eq!(trace.len(), 36);
        assert_eq!(
            body["error_uri"],
            format!("https://login.microsoftonline.com/error?code={}", want.2)
        );
        assert_eq!(headers["cache-control"], "no-store, no-cache");
        assert_eq!(headers["pragma"], "no-cache");
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        assert!(headers.contains_key("x-ms-request-id"));
    }

    #[tokio::test]
    async fn refresh_rotates_and_old_token_stays_valid() {
        let mock = IdentityMock::start(MockConfig::default()).await;
        mock.seed_refresh_token("rt-seed", "Mail.Send offline_access openid");
        let (status, headers, body) = refresh(&mock, "rt-seed").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["cache-control"], "no-store, no-cache");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["ext_expires_in"], 3599);
        assert_eq!(
            body["scope"],
            "https://graph.microsoft.com/Mail.Send offline_access"
        );
        assert!(body.get("id_token").is_none(), "openid was not requested");
        let at = body["access_token"].as_str().unwrap();
        assert_eq!(access_token_host(at), Some("graph.microsoft.com"));
        let new_rt = body["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(new_rt, "rt-seed");

        // Old one still valid (Microsoft does not revoke on use), new one too.
        let (status, _, again) = refresh(&mock, "rt-seed").await;
        assert_eq!(status, 200, "{again}");
        let (status, _, _) = refresh(&mock, &new_rt).await;
        assert_eq!(status, 200);

        // Secret via HTTP Basic; openid asked for: an id_token comes back.
        let r = client()
            .post(mock.token_url())
            .basic_auth("11112222-bbbb-3333-cccc-4444dddd5555", Some("mock-secret"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", new_rt.as_str()),
                ("scope", "Mail.Send openid"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert!(body["id_token"].as_str().unwrap().split('.').count() == 3);
        assert!(body["refresh_token"].is_string());

        assert_eq!(mock.token_request_count(), 4);
        let requests = mock.requests();
        assert_eq!(
            requests[3].basic_auth,
            Some((
                "11112222-bbbb-3333-cccc-4444dddd5555".to_string(),
                "mock-secret".to_string()
            ))
        );
        assert_eq!(requests[0].form["refresh_token"], "rt-seed");
        assert!(requests.iter().all(|r| r.status == 200));
        assert_eq!(
            mock.used_refresh_tokens(),
            vec!["rt-seed".to_string(), new_rt]
        );
        assert_eq!(mock.issued_access_tokens().len(), 4);
        assert_eq!(mock.refresh_tokens().len(), 5);
    }

    #[tokio::test]
    async fn strict_rotation_rejects_a_reused_refresh_token() {
        let mock = IdentityMock::start(MockConfig {
            strict_rotation: true,
            ..MockConfig::default()
        })
        .await;
        mock.seed_refresh_token("rt-seed", GRAPH_SCOPE);
        let (status, _, body) = refresh(&mock, "rt-seed").await;
        assert_eq!(status, 200);
        let new_rt = body["refresh_token"].as_str().unwrap().to_string();
        let (status, headers, body) = refresh(&mock, "rt-seed").await;
        assert_error(status, &headers, &body, (400, "invalid_grant", 70008));
        let (status, _, _) = refresh(&mock, &new_rt).await;
        assert_eq!(status, 200);
        assert_eq!(
            mock.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
            [200, 400, 200]
        );
    }

    #[tokio::test]
    async fn errors_have_the_documented_shape() {
        let mock = IdentityMock::start(MockConfig::default()).await;
        mock.seed_refresh_token("rt-seed", GRAPH_SCOPE);
        let id = "11112222-bbbb-3333-cccc-4444dddd5555";
        let base = |secret: &'static str, rt: &'static str, scope: &'static str| {
            let mut v = vec![
                ("client_id", id),
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("scope", scope),
            ];
            if !secret.is_empty() {
                v.push(("client_secret", secret));
            }
            v
        };

        let (s, h, b) = post(&mock, &base("wrong", "rt-seed", GRAPH_SCOPE)).await;
        assert_error(s, &h, &b, (401, "invalid_client", 7000215));
        let (s, h, b) = post(&mock, &base("", "rt-seed", GRAPH_SCOPE)).await;
        assert_error(s, &h, &b, (401, "invalid_client", 7000218));
        let (s, h, b) = post(&mock, &base("mock-secret", "nope", GRAPH_SCOPE)).await;
        assert_error(s, &h, &b, (400, "invalid_grant", 70008));
        let mixed = "https://graph.microsoft.com/Mail.Send https://ads.microsoft.com/msads.manage";
        let (s, h, b) = post(&mock, &base("mock-secret", "rt-seed", mixed)).await;
        assert_error(s, &h, &b, (400, "invalid_scope", 700022));
        let ads = "https://ads.microsoft.com/msads.manage offline_access";
        let (s, h, b) = post(&mock, &base("mock-secret", "rt-seed", ads)).await;
        assert_error(s, &h, &b, (400, "invalid_grant", 65001));

        // Not form-encoded.
        let r = client()
            .post(mock.token_url())
            .json(&json!({"client_id": id, "grant_type": "refresh_token"}))
            .header("client-request-id", "aaaa0000-bb11-2222-33cc-444444dddddd")
            .send()
            .await
            .unwrap();
        let (s, h) = (r.status().as_u16(), r.headers().clone());
        let b: Value = r.json().await.unwrap();
        assert_error(s, &h, &b, (400, "invalid_request", 900144));
        assert_eq!(b["correlation_id"], "aaaa0000-bb11-2222-33cc-444444dddddd");

        // Public client sending a secret.
        let public = IdentityMock::start(MockConfig {
            client_secret: None,
            ..MockConfig::default()
        })
        .await;
        public.seed_refresh_token("rt-seed", GRAPH_SCOPE);
        let (s, h, b) = post(&public, &base("mock-secret", "rt-seed", GRAPH_SCOPE)).await;
        assert_error(s, &h, &b, (400, "invalid_request", 700025));
        let (s, _, b) = post(&public, &base("", "rt-seed", GRAPH_SCOPE)).await;
        assert_eq!(s, 200, "{b}");

        // Mode::Fail with a suberror, through a different tenant.
        mock.set_mode(Mode::Fail {
            status: 400,
            error: "invalid_grant".into(),
            aadsts: 50076,
            description: "Due to a configuration change made by your administrator, you must \
                          use multi-factor authentication."
                .into(),
            suberror: Some("basic_action".into()),
        });
        let r = client()
            .post(format!(
                "{}/organizations/oauth2/v2.0/token",
                mock.base_url()
            ))
            .form(&base("mock-secret", "rt-seed", GRAPH_SCOPE))
            .send()
            .await
            .unwrap();
        let (s, h) = (r.status().as_u16(), r.headers().clone());
        let b: Value = r.json().await.unwrap();
        assert_error(s, &h, &b, (400, "invalid_grant", 50076));
        assert_eq!(b["suberror"], "basic_action");
        assert_eq!(
            mock.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
            [401, 401, 400, 400, 400, 400, 400]
        );
    }

    /// Runs `/authorize` and returns the `Location` header.
    async fn authorize_location(mock: &IdentityMock, params: &[(&str, &str)]) -> url::Url {
        let mut url = url::Url::parse(&mock.authorize_url()).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        let r = client().get(url).send().await.unwrap();
        assert_eq!(r.status(), 302);
        url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap()
    }

    fn query_param(url: &url::Url, name: &str) -> Option<String> {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    #[tokio::test]
    async fn authorization_code_flow_with_pkce() {
        let mock = IdentityMock::start(MockConfig::default()).await;
        let redirect = "https://app.example/oauth/callback";
        mock.allow_redirect_uri(redirect);
        let verifier = "ThisIsntRandomButItNeedsToBe43CharactersLong";
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let scope = "openid profile https://ads.microsoft.com/msads.manage offline_access";
        let params = [
            ("client_id", "11112222-bbbb-3333-cccc-4444dddd5555"),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("response_mode", "query"),
            ("scope", scope),
            ("state", "2f1c"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let location = authorize_location(&mock, &params).await;
        assert!(location.as_str().starts_with(redirect));
        assert_eq!(query_param(&location, "state").as_deref(), Some("2f1c"));
        let code = query_param(&location, "code").expect("code");

        let exchange = |code: String, verifier: &'static str, redirect: &'static str| {
            let form = vec![
                (
                    "client_id",
                    "11112222-bbbb-3333-cccc-4444dddd5555".to_string(),
                ),
                ("client_secret", "mock-secret".to_string()),
                ("grant_type", "authorization_code".to_string()),
                ("code", code),
                ("redirect_uri", redirect.to_string()),
                ("code_verifier", verifier.to_string()),
                (
                    "scope",
                    "https://ads.microsoft.com/msads.manage offline_access openid".to_string(),
                ),
            ];
            let url = mock.token_url();
            async move {
                let r = client().post(url).form(&form).send().await.unwrap();
                let (s, h) = (r.status().as_u16(), r.headers().clone());
                (s, h, r.json::<Value>().await.unwrap())
            }
        };
        let wrong = "ThisIsntTheRightVerifierButItIs43CharsLong!";
        let (s, h, b) = exchange(code.clone(), wrong, redirect).await;
        assert_error(s, &h, &b, (400, "invalid_grant", 501481));
        let (s, h, b) = exchange(code.clone(), verifier, "http://localhost:1/cb").await;
        assert_error(s, &h, &b, (400, "invalid_grant", 50011));
        let (s, _, b) = exchange(code.clone(), verifier, redirect).await;
        assert_eq!(s, 200, "{b}");
        let at = b["access_token"].as_str().unwrap();
        assert_eq!(access_token_host(at), Some("ads.microsoft.com"));
        assert!(b["refresh_token"].is_string());
        assert!(b["id_token"].is_string());
        let (s, h, b) = exchange(code.clone(), verifier, redirect).await;
        assert_error(s, &h, &b, (400, "invalid_grant", 54005));

        // The refresh token from the code reaches the other consented resource.
        let rt = mock.refresh_tokens()[0].0.clone();
        let (s, _, b) = refresh(&mock, &rt).await;
        assert_eq!(s, 400, "Graph was not consented: {b}");
        let (s, _, b) = post(
            &mock,
            &[
                ("client_id", "11112222-bbbb-3333-cccc-4444dddd5555"),
                ("client_secret", "mock-secret"),
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
            ],
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b["scope"],
            "openid profile https://ads.microsoft.com/msads.manage offline_access"
        );

        // Expired code.
        let location = authorize_location(&mock, &params).await;
        mock.expire_codes();
        let code = query_param(&location, "code").unwrap();
        let (s, h, b) = exchange(code, verifier, redirect).await;
        assert_error(s, &h, &b, (400, "invalid_grant", 70008));
    }

    #[tokio::test]
    async fn authorize_validates_redirects_and_denies_on_request() {
        let mock = IdentityMock::start(MockConfig::default()).await;
        let base = |redirect: &'static str| {
            vec![
                ("client_id", "11112222-bbbb-3333-cccc-4444dddd5555"),
                ("response_type", "code"),
                ("redirect_uri", redirect),
                ("scope", "Mail.Send offline_access"),
                ("state", "xyz"),
            ]
        };
        // Unregistered redirect: a 400 page, no redirect.
        let mut url = url::Url::parse(&mock.authorize_url()).unwrap();
        url.query_pairs_mut()
            .extend_pairs(base("https://evil.example/cb"));
        let r = client().get(url).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(!r.headers().contains_key("location"));
        assert!(r.text().await.unwrap().contains("redirect_uri"));

        // Loopback is allowed on any port (without a PKCE challenge the
        // verifier is not checked).
        let location = authorize_location(&mock, &base("http://127.0.0.1:53682/cb")).await;
        assert_eq!(location.port(), Some(53682));
        let code = query_param(&location, "code").unwrap();
        let (s, _, b) = post(
            &mock,
            &[
                ("client_id", "11112222-bbbb-3333-cccc-4444dddd5555"),
                ("client_secret", "mock-secret"),
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:53682/cb"),
            ],
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            access_token_host(b["access_token"].as_str().unwrap()),
            Some("graph.microsoft.com")
        );

        // Fragment mode.
        let mut params = base("http://localhost:8400/");
        params.push(("response_mode", "fragment"));
        let location = authorize_location(&mock, &params).await;
        let fragment = location.fragment().unwrap();
        assert!(fragment.contains("code=mock-code.") && fragment.contains("state=xyz"));

        // form_post mode: a 200 page that posts code and state.
        let mut params = base("http://localhost:8400/cb");
        params.push(("response_mode", "form_post"));
        let mut url = url::Url::parse(&mock.authorize_url()).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        let r = client().get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        assert!(page.contains("action=\"http://localhost:8400/cb\""));
        assert!(page.contains("name=\"code\" value=\"mock-code."));
        assert!(page.contains("name=\"state\" value=\"xyz\""));

        // Denied.
        mock.deny_authorization(true);
        let location = authorize_location(&mock, &base("http://localhost:8400/cb")).await;
        assert_eq!(
            query_param(&location, "error").as_deref(),
            Some("access_denied")
        );
        assert!(query_param(&location, "error_description").is_some());
        assert_eq!(query_param(&location, "state").as_deref(), Some("xyz"));
        assert_eq!(query_param(&location, "code"), None);
        assert_eq!(mock.token_request_count(), 1);
    }

    #[tokio::test]
    async fn unavailable_and_throttled() {
        let mock = IdentityMock::start(MockConfig::default()).await;
        mock.seed_refresh_token("rt-seed", GRAPH_SCOPE);
        mock.set_mode(Mode::Unavailable {
            retry_after: Some(7),
        });
        let (s, h, b) = refresh(&mock, "rt-seed").await;
        assert_eq!(s, 503);
        assert_eq!(b["error"], "temporarily_unavailable");
        assert_eq!(h["retry-after"], "7");
        assert_eq!(h["content-type"], "application/json; charset=utf-8");

        mock.set_mode(Mode::Unavailable { retry_after: None });
        let (s, h, _) = refresh(&mock, "rt-seed").await;
        assert_eq!(s, 503);
        assert!(!h.contains_key("retry-after"));

        mock.set_mode(Mode::Throttled { retry_after: 60 });
        let (s, h, b) = refresh(&mock, "rt-seed").await;
        assert_eq!(s, 429);
        assert_eq!(b, Value::String("Too Many Requests".into()));
        assert_eq!(h["retry-after"], "60");
        assert!(h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));

        mock.set_mode(Mode::Normal);
        let (s, _, _) = refresh(&mock, "rt-seed").await;
        assert_eq!(s, 200);
        assert_eq!(
            mock.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
            [503, 503, 429, 200]
        );
        assert_eq!(mock.used_refresh_tokens(), ["rt-seed"]);
    }

    #[tokio::test]
    async fn fail_next_fails_exactly_that_many() {
        let mock = IdentityMock::start(MockConfig::default()).await;
        mock.seed_refresh_token("rt-seed", GRAPH_SCOPE);
        mock.fail_next(
            2,
            Mode::Fail {
                status: 400,
                error: "invalid_grant".into(),
                aadsts: 700082,
                description: "The refresh token has expired due to inactivity.".into(),
                suberror: None,
            },
        );
        for _ in 0..2 {
            let (s, h, b) = refresh(&mock, "rt-seed").await;
            assert_error(s, &h, &b, (400, "invalid_grant", 700082));
        }
        let (s, _, _) = refresh(&mock, "rt-seed").await;
        assert_eq!(s, 200);
        let (s, _, _) = refresh(&mock, "rt-seed").await;
        assert_eq!(s, 200);
        assert_eq!(
            mock.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
            [400, 400, 200, 200]
        );
    }

    #[tokio::test]
    async fn wait_for_requests_sees_a_request_before_its_slow_answer() {
        let mock = IdentityMock::start(MockConfig::default()).await;
        mock.seed_refresh_token("rt-seed", GRAPH_SCOPE);
        assert!(!mock.wait_for_requests(1, Duration::from_millis(20)).await);
        assert!(mock.wait_for_requests(0, Duration::ZERO).await);

        let delay = Duration::from_millis(300);
        mock.set_mode(Mode::Slow(delay));
        let url = mock.token_url();
        let started = Instant::now();
        let pending = tokio::spawn(async move {
            client()
                .post(url)
                .form(&[
                    ("client_id", "11112222-bbbb-3333-cccc-4444dddd5555"),
                    ("client_secret", "mock-secret"),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "rt-seed"),
                ])
                .send()
                .await
                .unwrap()
                .status()
        });
        assert!(mock.wait_for_requests(1, Duration::from_secs(5)).await);
        assert!(started.elapsed() < delay, "recorded before the answer");
        assert!(!pending.is_finished());
        assert_eq!(pending.await.unwrap(), 200);
        assert!(started.elapsed() >= delay);
        assert_eq!(mock.requests()[0].status, 200);
        assert!(!mock.wait_for_requests(2, Duration::from_millis(20)).await);
    }

    #[test]
    fn access_token_host_parses_what_the_mock_mints() {
        assert_eq!(
            access_token_host("mock-at.si.ads.microsoft.com.12.abcXYZ"),
            Some("si.ads.microsoft.com")
        );
        assert_eq!(access_token_host("eyJ0eXAi.x.y"), None);
        assert_eq!(access_token_host("mock-at.graph.microsoft.com.x.y"), None);
        assert_eq!(form_decode("a%3Ab+c%"), "a:b c%");
    }
}
