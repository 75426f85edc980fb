//! OAuth against hostile or merely different token endpoints and browsers
//! (issues #10 and #11): redirects, absurd numbers, endless bodies,
//! short-lived tokens, providers that grant fewer scopes, and a loopback
//! listener that meets idle clients and bad requests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use pushwerk::config::{Catalog, LoadOptions};
use pushwerk::oauth::seal::Sealer;
use pushwerk::oauth::{ImportedTokens, OAuthError, Resolver, ResolverSettings, TokenStore};
use pushwerk::store::SledStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::{folder, pushwerk_in, stderr, stdout};
use pushwerk_testkit::daemon::free_port;
use pushwerk_testkit::identity::{IdentityMock, MockConfig};

const SECRET: &str = "mock-secret";

fn account(token_url: &str, scope: &str) -> String {
    format!(
        "kind: oauth_account\nname: acct\ntoken_url: {token_url}\nclient_id: {}\nclient_secret: ${{env:ACCT_SECRET}}\nscope: {scope}\n",
        MockConfig::default().client_id
    )
}

fn catalog(dir: &Path) -> Catalog {
    let env = |n: &str| (n == "ACCT_SECRET").then(|| SECRET.to_owned());
    let c = Catalog::load(dir, &LoadOptions { env: &env }).unwrap();
    assert_eq!(c.error_count(), 0, "{:?}", c.diagnostics);
    c
}

fn resolver(data: &Path, catalog: &Catalog) -> Resolver {
    let store = SledStore::open(data).unwrap();
    Resolver::new(
        TokenStore::new(Arc::new(store), Sealer::plain()),
        catalog.accounts.clone(),
        ResolverSettings::default(),
    )
}

fn refresh_only(refresh: &str) -> ImportedTokens {
    serde_json::from_value(serde_json::json!({ "refresh_token": refresh })).unwrap()
}

/// A folder with one account `acct` at `token_url` and its resolver.
fn setup(token_url: &str, scope: &str) -> (tempfile::TempDir, Catalog, Resolver) {
    let dir = folder(&[("pushes/acct.yaml", &account(token_url, scope))]);
    let catalog = catalog(&dir.path().join("pushes"));
    let r = resolver(&dir.path().join("data"), &catalog);
    (dir, catalog, r)
}

/// The form fields of a token request.
type Form = BTreeMap<String, String>;

/// What a [`Scripted`] endpoint answers to a form.
type Answer = Arc<dyn Fn(&Form) -> Response + Send + Sync>;

/// A token endpoint answering every POST with `answer(form)`, recording the forms.
#[derive(Clone)]
struct Scripted {
    forms: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    answer: Answer,
}

async fn scripted_token(State(s): State<Scripted>, body: Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let response = (s.answer)(&form);
    s.forms.lock().unwrap().push(form);
    response
}

/// Starts a [`Scripted`] endpoint; returns its `/token` URL and the recorded forms.
async fn scripted(
    answer: impl Fn(&BTreeMap<String, String>) -> Response + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<BTreeMap<String, String>>>>) {
    let forms = Arc::new(Mutex::new(Vec::new()));
    let state = Scripted {
        forms: forms.clone(),
        answer: Arc::new(answer),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/token", post(scripted_token))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/token"), forms)
}

fn json(status: u16, body: serde_json::Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// #10.2: redirects

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_token_endpoint_gets_no_second_request_and_the_account_a_clear_error() {
    // The second listener: counts every connection it receives.
    let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    {
        let received = received.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = elsewhere.accept().await {
                received.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n{\"access_token\":\"stolen\",\"expires_in\":3600,\"x\":\"y\"}")
                    .await;
            }
        });
    }
    let location = format!("http://{elsewhere_addr}/token");
    let (token_url, forms) = scripted(move |_| {
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location.clone())],
        )
            .into_response()
    })
    .await;
    let (_dir, _catalog, r) = setup(&token_url, "api");
    r.import("acct", refresh_only("rt-secret-refresh"))
        .await
        .unwrap();
    let err = r.access_token("acct").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, OAuthError::NeedsReauth { .. }), "{text}");
    assert!(
        text.contains("307") && text.contains("never follow redirects"),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://{elsewhere_addr}")),
        "names where it pointed: {text}"
    );
    assert_eq!(
        forms.lock().unwrap().len(),
        1,
        "the configured endpoint was asked once"
    );
    assert_eq!(
        received.load(Ordering::SeqCst),
        0,
        "the other host received nothing (no secret, no refresh token)"
    );
    let status = r.status(chrono::Utc::now().date_naive()).unwrap();
    assert_eq!(status[0].state, "needs_reauth");
    assert!(!text.contains("rt-secret-refresh") && !text.contains(SECRET));
}

// ---------------------------------------------------------------------------
// #10.5: numbers from outside

#[test]
fn oauth_import_with_absurd_lifetimes_exits_cleanly_and_stores_a_bounded_expiry() {
    let dir = folder(&[(
        "pushes/acct.yaml",
        &account("https://id.example/token", "api"),
    )]);
    let now = chrono::Utc::now();
    for (expires_in, ext) in [
        ("100000000000000", "100000000000000"),
        ("18446744073709551615", "18446744073709551615"),
        ("1e300", "-5"),
        ("\"99999999999999999999999\"", "3.5"),
    ] {
        let input = format!(
            r#"{{"access_token":"at","refresh_token":"rt","expires_in":{expires_in},"ext_expires_in":{ext}}}"#
        );
        let file = dir.path().join("tokens.json");
        std::fs::write(&file, &input).unwrap();
        let out = pushwerk_in(
            dir.path(),
            &["oauth", "import", "acct", "--file", file.to_str().unwrap()],
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{expires_in}: {}", stderr(&out));
        let status = pushwerk_in(dir.path(), &["oauth", "status", "--format", "json"], &[]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
        let expires: chrono::DateTime<chrono::Utc> = v["accounts"][0]["access_token_expires"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            expires > now + chrono::Duration::days(300),
            "{expires_in}: not wrapped into the past: {expires}"
        );
        assert!(
            expires < now + chrono::Duration::days(400),
            "{expires_in}: clamped to a year: {expires}"
        );
    }
    // An expiry far in the future is clamped the same way.
    std::fs::write(
        dir.path().join("far.json"),
        r#"{"access_token":"at","refresh_token":"rt","expires_at":"9999-12-31T23:59:59Z"}"#,
    )
    .unwrap();
    let out = pushwerk_in(
        dir.path(),
        &["oauth", "import", "acct", "--file", "far.json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = pushwerk_in(dir.path(), &["oauth", "status", "--format", "json"], &[]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let expires: chrono::DateTime<chrono::Utc> = v["accounts"][0]["access_token_expires"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expires < now + chrono::Duration::days(400), "{expires}");
    // A negative lifetime is an expired token, not an error.
    std::fs::write(
        dir.path().join("neg.json"),
        r#"{"access_token":"at","refresh_token":"rt","expires_in":-1}"#,
    )
    .unwrap();
    let out = pushwerk_in(
        dir.path(),
        &["oauth", "import", "acct", "--file", "neg.json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_expires_in_from_the_token_endpoint_is_clamped_not_a_panic_nor_a_refresh_per_use() {
    for expires_in in [
        serde_json::json!(100_000_000_000_000u64),
        serde_json::json!(u64::MAX),
        serde_json::json!(1e300),
        serde_json::json!("18446744073709551615"),
    ] {
        let count = Arc::new(AtomicU64::new(0));
        let served = count.clone();
        let lifetime = expires_in.clone();
        let (token_url, _forms) = scripted(move |_| {
            let n = served.fetch_add(1, Ordering::SeqCst);
            json(
                200,
                serde_json::json!({
                    "access_token": format!("at-{n}"),
                    "refresh_token": format!("rt-{n}"),
                    "expires_in": lifetime,
                    "ext_expires_in": lifetime,
                    "token_type": "Bearer",
                }),
            )
        })
        .await;
        let (_dir, _catalog, r) = setup(&token_url, "api");
        r.import("acct", refresh_only("rt-seed")).await.unwrap();
        let first = r.access_token("acct").await.expect("no panic, a token");
        for _ in 0..5 {
            let again = r.access_token("acct").await.unwrap();
            assert_eq!(again.expose(), first.expose(), "{expires_in}");
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "{expires_in}: one token request, the token is not taken as expired"
        );
        let status = r.status(chrono::Utc::now().date_naive()).unwrap();
        let expires = status[0].access_token_expires.unwrap();
        assert!(expires < chrono::Utc::now() + chrono::Duration::days(400));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_is_capped() {
    let (token_url, _forms) = scripted(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "18446744073709551615")],
            "busy",
        )
            .into_response()
    })
    .await;
    let (_dir, _catalog, r) = setup(&token_url, "api");
    r.import("acct", refresh_only("rt-seed")).await.unwrap();
    match r.access_token("acct").await {
        Err(OAuthError::Unavailable { retry_in, .. }) => {
            assert!(retry_in <= Duration::from_secs(600), "{retry_in:?}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

// ---------------------------------------------------------------------------
// #10.12: endless bodies

/// A raw HTTP server answering every request with `status` and a body that
/// never ends (up to 2 GiB), without Content-Length. Returns its URL, the
/// bytes written so far, and whether the writer has stopped.
async fn endless_body(status: u16) -> (String, Arc<AtomicU64>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let (w, s) = (written.clone(), stopped.clone());
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let _ = socket.read(&mut buf).await;
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{{\"access_token\":\""
        );
        if socket.write_all(head.as_bytes()).await.is_ok() {
            let chunk = vec![b'a'; 64 * 1024];
            while w.load(Ordering::SeqCst) < 2 << 30 {
                if socket.write_all(&chunk).await.is_err() {
                    break;
                }
                w.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
        s.store(true, Ordering::SeqCst);
    });
    (format!("http://{addr}/token"), written, stopped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_token_response_is_cut_at_64_kib_and_the_connection_dropped() {
    for status in [200, 500] {
        let (token_url, written, stopped) = endless_body(status).await;
        let (_dir, _catalog, r) = setup(&token_url, "api");
        r.import("acct", refresh_only("rt-seed")).await.unwrap();
        let err = r.access_token("acct").await.unwrap_err().to_string();
        assert!(
            err.contains("token response over 64 KiB"),
            "{status}: {err}"
        );
        // The client hung up: the writer fails soon (poll, with a deadline).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !stopped.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "{status}: the server is still writing ({} bytes)",
                written.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total = written.load(Ordering::SeqCst);
        eprintln!("status {status}: {total} body bytes written before the client hung up");
        assert!(
            total < 64 << 20,
            "{status}: {total} bytes written before the client stopped reading"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_huge_content_length_is_refused_unread() {
    let (token_url, _forms) = scripted(|_| {
        json(
            200,
            serde_json::json!({ "access_token": "a".repeat(70 * 1024), "expires_in": 3600 }),
        )
    })
    .await;
    let (_dir, _catalog, r) = setup(&token_url, "api");
    r.import("acct", refresh_only("rt-seed")).await.unwrap();
    let err = r.access_token("acct").await.unwrap_err().to_string();
    assert!(err.contains("token response over 64 KiB"), "{err}");
}

// ---------------------------------------------------------------------------
// #11.1: single-flight with short-lived tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_request_per_storm_of_200_for_3600_300_120_and_30_second_tokens() {
    for lifetime in [3600u64, 300, 120, 30] {
        let mock = IdentityMock::start(MockConfig {
            expires_in: lifetime,
            ..MockConfig::default()
        })
        .await;
        let scope = "offline_access https://graph.microsoft.com/Mail.Send";
        mock.seed_refresh_token("rt-seed", scope);
        let (_dir, _catalog, r) = setup(&mock.token_url(), scope);
        let r = Arc::new(r);
        r.import("acct", refresh_only("rt-seed")).await.unwrap();
        let accounts: std::collections::BTreeSet<String> = ["acct".to_owned()].into();
        for storm in 1..=2 {
            let mut tasks = Vec::new();
            for _ in 0..200 {
                let r = r.clone();
                let accounts = accounts.clone();
                tasks.push(tokio::spawn(async move {
                    r.tokens_for(&accounts).await.unwrap()["acct"].clone()
                }));
            }
            let mut tokens = Vec::new();
            for t in tasks {
                tokens.push(t.await.unwrap());
            }
            assert_eq!(
                mock.token_request_count(),
                1,
                "{lifetime} s tokens, storm {storm}: one token request"
            );
            let issued = mock.issued_access_tokens();
            assert!(tokens.iter().all(|t| *t == issued[0]), "{lifetime} s");
        }
    }
}

// ---------------------------------------------------------------------------
// #11.2: refresh with the granted scope

/// A standards provider: the refresh grant refuses any scope beyond what
/// the refresh token was granted (`invalid_scope`, as node's oidc-provider
/// words it); without `scope` it grants the original.
fn standards_provider(granted: &'static str) -> impl Fn(&BTreeMap<String, String>) -> Response {
    move |form| {
        if let Some(asked) = form.get("scope") {
            let granted: Vec<&str> = granted.split_whitespace().collect();
            if asked.split_whitespace().any(|s| !granted.contains(&s)) {
                return json(
                    400,
                    serde_json::json!({"error":"invalid_scope","error_description":"refresh token missing requested scope"}),
                );
            }
        }
        json(
            200,
            serde_json::json!({
                "access_token": "at-new", "refresh_token": "rt-new", "expires_in": 300,
                "scope": form.get("scope").map(String::as_str).unwrap_or(granted),
                "token_type": "Bearer",
            }),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_asks_only_for_the_scopes_the_login_was_granted() {
    // Asked for four, granted two (no offline_access, no api:write).
    let granted = "openid api:read";
    let (token_url, forms) = scripted(standards_provider(granted)).await;
    let (_dir, _catalog, r) = setup(&token_url, "openid offline_access api:read api:write");
    let login: pushwerk::oauth::client::TokenResponse = serde_json::from_value(
        serde_json::json!({"access_token":"at-0","refresh_token":"rt-0","expires_in":300,"scope":granted}),
    )
    .unwrap();
    r.store_login("acct", login, "openid offline_access api:read api:write")
        .await
        .unwrap();
    r.refresh_now("acct")
        .await
        .expect("the refresh is accepted");
    r.refresh_now("acct").await.expect("and the next one");
    let forms = forms.lock().unwrap();
    assert_eq!(forms.len(), 2);
    assert!(
        forms.iter().all(|f| f["scope"] == "openid api:read"),
        "{forms:?}"
    );
    let status = r.status(chrono::Utc::now().date_naive()).unwrap();
    assert_eq!(status[0].state, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_answer_without_scope_granted_what_was_asked() {
    let (token_url, forms) = scripted(standards_provider("openid offline_access api:read")).await;
    let (_dir, _catalog, r) = setup(&token_url, "openid api:read");
    let login: pushwerk::oauth::client::TokenResponse = serde_json::from_value(
        serde_json::json!({"access_token":"at-0","refresh_token":"rt-0","expires_in":300}),
    )
    .unwrap();
    r.store_login("acct", login, "openid api:read offline_access")
        .await
        .unwrap();
    r.refresh_now("acct").await.unwrap();
    assert_eq!(forms.lock().unwrap()[0]["scope"], "openid api:read");
}

// ---------------------------------------------------------------------------
// #11.3 and #11.4: `oauth login` through the binary

fn login_folder(mock: &IdentityMock, extra: &str) -> tempfile::TempDir {
    folder(&[(
        "pushes/acct.yaml",
        &format!(
            "{}{extra}",
            account(
                &mock.token_url(),
                "offline_access https://graph.microsoft.com/Mail.Send"
            )
        ),
    )])
}

/// A running `oauth login`, killed if a test fails before it exits.
struct LoginProcess(std::process::Child);

impl Drop for LoginProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_login(dir: &Path, secret: Option<&str>) -> LoginProcess {
    let mut cmd = crate::util::pushwerk_command();
    cmd.current_dir(dir)
        .args(["oauth", "login", "acct"])
        .env_remove("ACCT_SECRET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(s) = secret {
        cmd.env("ACCT_SECRET", s);
    }
    LoginProcess(cmd.spawn().unwrap())
}

/// Reads stderr lines until one starts with `http`; the reader is returned
/// so that the rest of stderr can be read later.
fn authorize_url(
    child: &mut LoginProcess,
) -> (String, std::io::BufReader<std::process::ChildStderr>) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "login exited before printing the URL"
        );
        if line.trim_start().starts_with("http") {
            return (line.trim().to_owned(), reader);
        }
    }
}

fn no_redirects() -> reqwest::Client {
    pushwerk::net::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Follows the authorize URL at the mock; returns the redirect back (on 127.0.0.1).
async fn redirect_back(authorize: &str) -> String {
    let answer = no_redirects().get(authorize).send().await.unwrap();
    assert_eq!(answer.status(), 302, "the mock redirects back");
    answer.headers()["location"]
        .to_str()
        .unwrap()
        .replace("localhost", "127.0.0.1")
}

async fn finish(
    mut child: LoginProcess,
    rest: std::io::BufReader<std::process::ChildStderr>,
) -> (std::process::ExitStatus, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut err = String::new();
        let mut rest = rest;
        rest.read_to_string(&mut err).unwrap();
        (child.0.wait().unwrap(), err)
    })
    .await
    .unwrap()
}

#[test]
fn login_without_the_client_secret_fails_before_showing_a_url() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(IdentityMock::start(MockConfig::default()));
    let dir = login_folder(&mock, "");
    let out = crate::util::pushwerk_command()
        .current_dir(dir.path())
        .args(["oauth", "login", "acct"])
        .env_remove("ACCT_SECRET")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot sign in") && err.contains("ACCT_SECRET"),
        "{err}"
    );
    assert!(!err.contains("http"), "no URL is shown: {err}");
    // A parameter pushwerk sets itself cannot be replaced.
    let dir = login_folder(&mock, "authorize_params:\n  state: fixed\n");
    let out = pushwerk_in(
        dir.path(),
        &["oauth", "login", "acct"],
        &[("ACCT_SECRET", SECRET)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("authorize_params.state"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_is_told_of_a_failed_code_exchange_not_signed_in() {
    let mock = IdentityMock::start(MockConfig::default()).await;
    let dir = login_folder(&mock, "");
    let wrong = "wrong-secret-<b>value</b>";
    let mut child = spawn_login(dir.path(), Some(wrong));
    let (authorize, rest) = authorize_url(&mut child);
    let back = redirect_back(&authorize).await;
    let page = no_redirects().get(&back).send().await.unwrap();
    let status = page.status().as_u16();
    let body = page.text().await.unwrap();
    let (exit, err) = finish(child, rest).await;
    assert_eq!(exit.code(), Some(1), "{err}");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("login failed"), "{body}");
    assert!(body.contains("invalid_client"), "says why: {body}");
    assert!(!body.contains("signed in"), "{body}");
    assert!(!body.contains("wrong-secret") && !err.contains("wrong-secret"));
    let code = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    assert!(
        !body.contains(&code) && !err.contains(&code),
        "no code shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loopback_listener_outlasts_idle_clients_and_bad_requests() {
    let mock = IdentityMock::start(MockConfig::default()).await;
    let dir = login_folder(&mock, "authorize_params:\n  login_hint: me@example.com\n");
    let mut child = spawn_login(dir.path(), Some(SECRET));
    let (authorize, rest) = authorize_url(&mut child);
    let q: BTreeMap<String, String> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(
        q["login_hint"], "me@example.com",
        "authorize_params are sent"
    );
    assert_eq!(
        q["prompt"], "consent",
        "offline_access asked outside Microsoft"
    );
    let back = redirect_back(&authorize).await;
    let base = {
        let u = url::Url::parse(&back).unwrap();
        format!("127.0.0.1:{}", u.port().unwrap())
    };
    // A client that connects and sends nothing, kept open throughout.
    let _idle = tokio::net::TcpStream::connect(&base).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&base).await.unwrap();
    half.write_all(b"GET /callback?code=x").await.unwrap();
    // Garbage.
    let mut garbage = tokio::net::TcpStream::connect(&base).await.unwrap();
    garbage
        .write_all(b"\x00\x01\x02 hello\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), garbage.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let http = no_redirects();
    for (path, expected) in [
        ("/favicon.ico", 404),
        ("/callback", 400),
        ("/callback?code=abc", 400),
        ("/callback?code=abc&state=forged", 400),
        ("/callback?%ff%fe=%00", 400),
    ] {
        let r = http
            .get(format!("http://{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), expected, "{path}");
    }
    let page = http.get(&back).send().await.unwrap();
    let status = page.status().as_u16();
    let body = page.text().await.unwrap();
    let (exit, err) = finish(child, rest).await;
    assert!(exit.success(), "{err}");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("signed in"), "{body}");
    let exchanges = mock
        .requests()
        .into_iter()
        .filter(|r| r.form["grant_type"] == "authorization_code")
        .count();
    assert_eq!(exchanges, 1, "only the real code was exchanged");
    let status = pushwerk_in(
        dir.path(),
        &["oauth", "status", "--format", "json"],
        &[("ACCT_SECRET", SECRET)],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(v["accounts"][0]["state"], "ok");
}

// ---------------------------------------------------------------------------
// #11.2 and #11.3 against a real provider: node's oidc-provider

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tests/oidc/provider.mjs` on `port`; fails clearly when node or
/// the package is missing (`.ci/run` installs them).
fn start_oidc_provider(port: u16, client_id: &str, redirect_uri: &str, consent: &str) -> Killed {
    use std::io::BufRead;
    let dir = crate::util::root().join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider/package.json").exists(),
        "the test provider is not installed: run `npm ci --prefix tests/oidc` (as .ci/run does)"
    );
    let mut child = std::process::Command::new("node")
        .arg(dir.join("provider.mjs"))
        .env("OIDC_PORT", port.to_string())
        .env("OIDC_CLIENT_ID", client_id)
        .env("OIDC_CLIENT_SECRET", SECRET)
        .env("OIDC_REDIRECT_URI", redirect_uri)
        .env("OIDC_CONSENT", consent)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("`node` runs (install Debian's nodejs, as .ci/run does)");
    let stdout = child.stdout.take().unwrap();
    let provider = Killed(child);
    // The first line says it listens; the rest is drained (node dies of
    // EPIPE when writing to a closed pipe). Ends when node exits.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = rx.recv().unwrap_or_default();
    assert!(
        line.starts_with("listening"),
        "provider did not start: {line:?}"
    );
    provider
}

/// Follows redirects by hand (keeping cookies, as a browser would) from
/// `url` until one points at `stop_prefix`; returns that URL.
async fn browse_until(url: &str, stop_prefix: &str) -> String {
    let http = no_redirects();
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    let mut url = url::Url::parse(url).unwrap();
    for _ in 0..12 {
        let cookie = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let r = http
            .get(url.clone())
            .header("Cookie", cookie)
            .send()
            .await
            .unwrap();
        for c in r.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() {
                    cookies.remove(k.trim());
                } else {
                    cookies.insert(k.trim().to_owned(), v.to_owned());
                }
            }
        }
        let status = r.status().as_u16();
        let Some(location) = r.headers().get("location") else {
            panic!(
                "{status} without a redirect at {url}: {}",
                r.text().await.unwrap()
            );
        };
        let next = url.join(location.to_str().unwrap()).unwrap();
        if next.as_str().starts_with(stop_prefix) {
            return next.to_string();
        }
        url = next;
    }
    panic!("more than 12 redirects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_oidc_provider_login_asks_consent_and_refreshes_with_the_granted_scope() {
    let (provider_port, loopback_port) = (free_port(), free_port());
    let client_id = "pushwerk-test";
    let redirect_uri = format!("http://localhost:{loopback_port}/callback");
    // Asked: openid offline_access profile email; the user declines email.
    let _provider = start_oidc_provider(
        provider_port,
        client_id,
        &redirect_uri,
        "openid offline_access profile",
    );
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let dir = folder(&[(
        "pushes/acct.yaml",
        &format!(
            "kind: oauth_account\nname: acct\ntoken_url: {issuer}/token\nauthorize_url: {issuer}/auth\nclient_id: {client_id}\nclient_secret: ${{env:ACCT_SECRET}}\nscope: openid offline_access profile email\n"
        ),
    )]);
    let mut cmd = crate::util::pushwerk_command();
    cmd.current_dir(dir.path())
        .args([
            "oauth",
            "login",
            "acct",
            "--port",
            &loopback_port.to_string(),
        ])
        .env("ACCT_SECRET", SECRET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = LoginProcess(cmd.spawn().unwrap());
    let (authorize, rest) = authorize_url(&mut child);
    assert!(authorize.contains("prompt=consent"), "{authorize}");
    let back = browse_until(&authorize, &format!("http://localhost:{loopback_port}/")).await;
    assert!(back.contains("code="), "{back}");
    let page = no_redirects()
        .get(back.replace("localhost", "127.0.0.1"))
        .send()
        .await
        .unwrap();
    let status = page.status().as_u16();
    let body = page.text().await.unwrap();
    let (exit, err) = finish(child, rest).await;
    assert!(exit.success(), "login failed: {err}\npage: {body}");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("signed in"), "{body}");
    // Two refreshes in a row (the provider rotates refresh tokens).
    for _ in 0..2 {
        let out = pushwerk_in(
            dir.path(),
            &["oauth", "refresh", "acct"],
            &[("ACCT_SECRET", SECRET)],
        );
        assert!(out.status.success(), "refresh: {}", stderr(&out));
    }
    let status = pushwerk_in(
        dir.path(),
        &["oauth", "status", "--format", "json"],
        &[("ACCT_SECRET", SECRET)],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(v["accounts"][0]["state"], "ok", "{v}");
    assert_eq!(v["accounts"][0]["has_refresh_token"], true, "{v}");
}
