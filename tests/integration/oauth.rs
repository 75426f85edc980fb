//! OAuth accounts against the identity-platform mock: single-flight refresh,
//! rotation across restarts, re-auth on refused grants, backoff through an
//! outage, login end to end, and no token in any output.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pushwerk::config::{Catalog, LoadOptions};
use pushwerk::oauth::seal::Sealer;
use pushwerk::oauth::{ImportedTokens, OAuthError, Resolver, ResolverSettings, TokenStore};
use pushwerk::store::SledStore;

use crate::util::{folder, pushwerk_in, stderr, stdout};
use pushwerk_testkit::identity::{IdentityMock, MockConfig, Mode};

const SECRET: &str = "mock-secret";

fn account_yaml(mock: &IdentityMock) -> String {
    format!(
        "kind: oauth_account\nname: ms_mail\ntoken_url: {}\nclient_id: {}\nclient_secret: ${{env:MS_MAIL_CLIENT_SECRET}}\nscope: offline_access https://graph.microsoft.com/Mail.Send\n",
        mock.token_url(),
        MockConfig::default().client_id
    )
}

const MAIL_PUSH: &str = "name: mail\non: call.ended\ngraph_mail:\n  account: ms_mail\n  to: [a@example.com]\n  subject: hi << event.n >>\n  text: t\n";

fn catalog(dir: &Path, secret: &str) -> Catalog {
    let secret = secret.to_owned();
    let env = move |n: &str| (n == "MS_MAIL_CLIENT_SECRET").then(|| secret.clone());
    let c = Catalog::load(dir, &LoadOptions { env: &env }).unwrap();
    assert_eq!(c.error_count(), 0, "{:?}", c.diagnostics);
    c
}

fn resolver(data: &Path, catalog: &Catalog, settings: ResolverSettings) -> Resolver {
    let store = SledStore::open(data).unwrap();
    Resolver::new(
        TokenStore::new(Arc::new(store), Sealer::plain()),
        catalog.accounts.clone(),
        settings,
    )
}

fn imported(access: Option<&str>, refresh: &str, expires_in: Option<u64>) -> ImportedTokens {
    let mut v = serde_json::json!({ "refresh_token": refresh });
    if let Some(a) = access {
        v["access_token"] = a.into();
        v["expires_in"] = expires_in.unwrap_or(0).into();
    }
    serde_json::from_value(v).unwrap()
}

struct Setup {
    mock: Arc<IdentityMock>,
    dir: tempfile::TempDir,
    catalog: Catalog,
}

async fn setup(config: MockConfig) -> Setup {
    let mock = Arc::new(IdentityMock::start(config).await);
    let dir = folder(&[
        ("pushes/accounts.yaml", &account_yaml(&mock)),
        ("pushes/mail.yaml", MAIL_PUSH),
        (
            "event.json",
            r#"{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{"n":1}}"#,
        ),
    ]);
    let catalog = catalog(&dir.path().join("pushes"), SECRET);
    Setup { mock, dir, catalog }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_renders_with_an_expired_token_make_one_token_request() {
    let s = setup(MockConfig::default()).await;
    s.mock.seed_refresh_token(
        "rt-seed",
        "offline_access https://graph.microsoft.com/Mail.Send",
    );
    let resolver = Arc::new(resolver(
        &s.dir.path().join("data"),
        &s.catalog,
        ResolverSettings::default(),
    ));
    // An access token that expired: the first use must refresh.
    resolver
        .import("ms_mail", imported(Some("expired-at"), "rt-seed", Some(0)))
        .await
        .unwrap();
    let catalog = Arc::new(s.catalog);
    let event = pushwerk::event::Event::from_json(
        r#"{"id":"e","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{"n":1}}"#,
    )
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let resolver = resolver.clone();
        let catalog = catalog.clone();
        let event = event.clone();
        tasks.push(tokio::spawn(async move {
            let push = catalog.push("mail").unwrap();
            let tokens = resolver.tokens_for(&push.compiled.accounts).await.unwrap();
            let input = pushwerk::engine::RenderInput {
                event: &event,
                attempt: 1,
                now: chrono::Utc::now(),
                tokens: &tokens,
                secrets: pushwerk::targets::SecretMode::Real,
            };
            let pushwerk::engine::Rendered::Ready(rendered) =
                pushwerk::engine::render(&catalog, push, &input).unwrap()
            else {
                panic!("skipped")
            };
            let prepared =
                pushwerk::targets::prepare(&rendered, &pushwerk::targets::Endpoints::default())
                    .unwrap();
            let pushwerk::targets::Prepared::Http(request) = prepared else {
                panic!("http")
            };
            request.header("Authorization").unwrap().to_owned()
        }));
    }
    let mut headers = Vec::new();
    for t in tasks {
        headers.push(t.await.unwrap());
    }
    assert_eq!(
        s.mock.token_request_count(),
        1,
        "one token request for 200 renders"
    );
    let issued = s.mock.issued_access_tokens();
    assert_eq!(issued.len(), 1);
    let expected = format!("Bearer {}", issued[0]);
    assert!(
        headers.iter().all(|h| *h == expected),
        "every render got the new token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_rotation_fifty_refreshes_across_five_restarts_never_reuse_a_refresh_token() {
    let s = setup(MockConfig {
        strict_rotation: true,
        ..MockConfig::default()
    })
    .await;
    s.mock.seed_refresh_token(
        "rt-0",
        "offline_access https://graph.microsoft.com/Mail.Send",
    );
    let data = s.dir.path().join("data");
    {
        let r = resolver(&data, &s.catalog, ResolverSettings::default());
        r.import("ms_mail", imported(None, "rt-0", None))
            .await
            .unwrap();
    }
    for _restart in 0..5 {
        // A new process: the store is opened anew, nothing in memory survives.
        let r = resolver(&data, &s.catalog, ResolverSettings::default());
        for _ in 0..10 {
            r.refresh_now("ms_mail")
                .await
                .expect("strict mode accepts every refresh");
        }
    }
    let requests = s.mock.requests();
    assert_eq!(requests.len(), 50);
    assert!(
        requests.iter().all(|r| r.status == 200),
        "no refresh token was reused"
    );
    let sent: Vec<&String> = requests.iter().map(|r| &r.form["refresh_token"]).collect();
    let mut unique = sent.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 50, "50 different refresh tokens sent");
    assert!(requests
        .iter()
        .all(|r| r.form["grant_type"] == "refresh_token"
            && r.form.get("client_secret").map(String::as_str) == Some(SECRET)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_grant_needs_reauth_with_the_aadsts_code_and_stops_token_requests() {
    let s = setup(MockConfig::default()).await;
    s.mock.seed_refresh_token(
        "rt-seed",
        "offline_access https://graph.microsoft.com/Mail.Send",
    );
    let r = resolver(
        &s.dir.path().join("data"),
        &s.catalog,
        ResolverSettings::default(),
    );
    r.import("ms_mail", imported(None, "rt-seed", None))
        .await
        .unwrap();
    s.mock.set_mode(Mode::Fail {
        status: 400,
        error: "invalid_grant".into(),
        aadsts: 700082,
        description: "The refresh token has expired due to inactivity.".into(),
        suberror: None,
    });
    let err = r.access_token("ms_mail").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, OAuthError::NeedsReauth { .. }), "{text}");
    assert!(
        text.contains(
            "invalid_grant AADSTS700082: The refresh token has expired due to inactivity."
        ),
        "{text}"
    );
    assert!(
        text.contains("oauth login ms_mail"),
        "says what to do: {text}"
    );
    let status = r.status(chrono::Utc::now().date_naive()).unwrap();
    assert_eq!(status[0].state, "needs_reauth");
    assert!(status[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("AADSTS700082"));
    // No further token requests, however often the push is tried.
    s.mock.set_mode(Mode::Normal);
    for _ in 0..5 {
        assert!(matches!(
            r.access_token("ms_mail").await,
            Err(OAuthError::NeedsReauth { .. })
        ));
        assert!(matches!(
            r.refresh_now("ms_mail").await,
            Err(OAuthError::NeedsReauth { .. })
        ));
    }
    assert_eq!(s.mock.token_request_count(), 1);
    // After a new import the account works again.
    s.mock.seed_refresh_token(
        "rt-new",
        "offline_access https://graph.microsoft.com/Mail.Send",
    );
    r.import("ms_mail", imported(None, "rt-new", None))
        .await
        .unwrap();
    assert!(r.access_token("ms_mail").await.is_ok());
    assert_eq!(s.mock.token_request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_client_secret_is_reported_as_needing_action() {
    let s = setup(MockConfig::default()).await;
    s.mock.seed_refresh_token(
        "rt-seed",
        "offline_access https://graph.microsoft.com/Mail.Send",
    );
    let r = resolver(
        &s.dir.path().join("data"),
        &s.catalog,
        ResolverSettings::default(),
    );
    r.import("ms_mail", imported(None, "rt-seed", None))
        .await
        .unwrap();
    s.mock.set_mode(Mode::Fail {
        status: 401,
        error: "invalid_client".into(),
        aadsts: 7000222,
        description: "The provided client secret keys for app are expired.".into(),
        suberror: None,
    });
    let err = r.access_token("ms_mail").await.unwrap_err().to_string();
    assert!(err.contains("invalid_client AADSTS7000222"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_waited_out_with_backoff_and_one_request_per_step() {
    let s = setup(MockConfig::default()).await;
    s.mock.seed_refresh_token(
        "rt-seed",
        "offline_access https://graph.microsoft.com/Mail.Send",
    );
    // The backoff is a setting (default 1 s doubling to 5 min); the scenario
    // is the default's shape at a fifth of the scale: steps of 0.2, 0.4,
    // 0.8, 1.6, 1.6 … s through a 4 s outage.
    let unit = Duration::from_millis(200);
    let settings = ResolverSettings {
        backoff_base: unit,
        backoff_max: unit * 8,
        ..ResolverSettings::default()
    };
    let r = Arc::new(resolver(&s.dir.path().join("data"), &s.catalog, settings));
    r.import("ms_mail", imported(None, "rt-seed", None))
        .await
        .unwrap();
    s.mock.set_mode(Mode::Unavailable { retry_after: None });
    let outage = unit * 20;
    let start = std::time::Instant::now();
    // The mock's outage lasts 4 s: that is the scenario, not a wait for a result.
    let mock_mode = {
        let mock = s.mock.clone();
        tokio::spawn(async move {
            tokio::time::sleep(outage).await;
            mock.set_mode(Mode::Normal);
        })
    };
    // Ten pushes wait for the same account.
    let mut waiters = Vec::new();
    for _ in 0..10 {
        let r = r.clone();
        waiters.push(tokio::spawn(async move {
            r.access_token_waiting("ms_mail", Duration::from_secs(90))
                .await
        }));
    }
    for w in waiters {
        w.await.unwrap().expect("the push succeeds after recovery");
    }
    mock_mode.await.unwrap();
    let requests = s.mock.requests();
    let failed: Vec<_> = requests.iter().filter(|q| q.status == 503).collect();
    let ok: Vec<_> = requests.iter().filter(|q| q.status == 200).collect();
    assert_eq!(ok.len(), 1, "one successful refresh serves all ten");
    assert!(start.elapsed() >= outage);
    // Backoff 1, 2, 4, 8, 8 … units with jitter in the upper half of each
    // step: between 5 and 8 requests fit into 20 units, never one per waiter.
    assert!(
        (4..=8).contains(&failed.len()),
        "{} requests during the outage",
        failed.len()
    );
    for (i, pair) in requests.windows(2).enumerate() {
        let step = unit * (1u32 << i.min(3));
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= step / 2,
            "request {} came {gap:?} after the previous one; the backoff step was {step:?}",
            i + 1
        );
    }
}

/// Reads stderr lines of a running child until one starts with `http`.
fn read_authorize_url(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stderr = child.stderr.as_mut().unwrap();
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "login exited before printing the URL"
        );
        if line.trim_start().starts_with("http") {
            return line.trim().to_owned();
        }
    }
}

async fn login_via_cli(s: &Setup, tamper_state: bool) -> (std::process::Output, String) {
    let mut child = crate::util::pushwerk_command()
        .current_dir(s.dir.path())
        .args(["oauth", "login", "ms_mail"])
        .env("MS_MAIL_CLIENT_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let authorize = read_authorize_url(&mut child);
    let http = pushwerk::net::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = http.get(&authorize).send().await.unwrap();
    assert_eq!(answer.status(), 302, "the mock redirects back");
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://localhost:"), "{location}");
    let mut forged_page = String::new();
    if tamper_state {
        let mut url = url::Url::parse(&location).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .map(|(k, v)| {
                if k == "state" {
                    (k, "forged".to_owned())
                } else {
                    (k, v)
                }
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let forged = http
            .get(url.to_string().replace("localhost", "127.0.0.1"))
            .send()
            .await
            .unwrap();
        forged_page = format!(
            "{} {}",
            forged.status().as_u16(),
            forged.text().await.unwrap()
        );
        assert!(
            s.mock
                .requests()
                .iter()
                .all(|r| r.form["grant_type"] != "authorization_code"),
            "no code exchange after a forged state"
        );
    }
    let page = http
        .get(location.replace("localhost", "127.0.0.1"))
        .send()
        .await
        .unwrap();
    let page_status = page.status().as_u16();
    let body = page.text().await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    (out, format!("{forged_page}{page_status} {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_end_to_end_stores_tokens_and_the_mock_checks_pkce() {
    let s = setup(MockConfig::default()).await;
    let (out, page) = login_via_cli(&s, false).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        page.starts_with("200 ") && page.contains("signed in"),
        "{page}"
    );
    let exchange = s
        .mock
        .requests()
        .into_iter()
        .find(|r| r.form["grant_type"] == "authorization_code")
        .expect("code exchanged");
    assert_eq!(exchange.status, 200, "PKCE verifier accepted by the mock");
    assert!(exchange.form.contains_key("code_verifier"));
    let status = pushwerk_in(
        s.dir.path(),
        &["oauth", "status", "--format", "json"],
        &[("MS_MAIL_CLIENT_SECRET", SECRET)],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(v["accounts"][0]["state"], "ok");
    assert_eq!(v["accounts"][0]["has_refresh_token"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_a_forged_state_is_refused_and_the_real_redirect_still_signs_in() {
    let s = setup(MockConfig::default()).await;
    // The forged redirect comes first: refused with 400, nothing exchanged
    // (checked in `login_via_cli`); the login goes on and the real one works.
    let (out, pages) = login_via_cli(&s, true).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pages.starts_with("400 "), "{pages}");
    assert!(pages.contains("`state` does not match"), "{pages}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not send"),
        "the forged redirect is logged: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exchanges: Vec<_> = s
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.form["grant_type"] == "authorization_code")
        .collect();
    assert_eq!(exchanges.len(), 1, "only the real redirect's code");
    assert_eq!(exchanges[0].status, 200);
    assert!(pages.contains("200 <h1>pushwerk: signed in"), "{pages}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_authorization_is_reported_clearly() {
    let s = setup(MockConfig::default()).await;
    s.mock.deny_authorization(true);
    let (out, _) = login_via_cli(&s, false).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authorization failed: access_denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_tokens_and_secret_appear_in_no_log_status_error_or_sealed_store() {
    const AT: &str = "CANARY-ACCESS-4b1d";
    const RT: &str = "CANARY-REFRESH-9e7a";
    const CS: &str = "CANARY-SECRET-33f0";
    let s = setup(MockConfig {
        client_secret: Some(CS.to_owned()),
        ..MockConfig::default()
    })
    .await;
    s.mock
        .seed_refresh_token(RT, "offline_access https://graph.microsoft.com/Mail.Send");
    let key = Sealer::generate_key();
    let env = [
        ("MS_MAIL_CLIENT_SECRET", CS),
        ("PUSHWERK_KEY", key.as_str()),
        ("PUSHWERK_LOG", "trace"),
    ];
    let dir = s.dir.path();
    let mut all = String::new();
    let import = format!(r#"{{"access_token":"{AT}","refresh_token":"{RT}","expires_in":3599}}"#);
    let token_file = dir.join("token.json");
    std::fs::write(&token_file, &import).unwrap();
    let mut run = |args: &[&str]| {
        let out = pushwerk_in(dir, args, &env);
        all.push_str(&stdout(&out));
        all.push_str(&stderr(&out));
        out
    };
    assert!(run(&["oauth", "import", "ms_mail", "--file", "token.json"])
        .status
        .success());
    std::fs::remove_file(&token_file).unwrap();
    run(&["oauth", "status"]);
    run(&["oauth", "status", "--format", "json"]);
    assert!(
        run(&["oauth", "refresh", "ms_mail"]).status.success(),
        "{all}"
    );
    run(&["dry-run", "mail", "--event", "event.json"]);
    s.mock.set_mode(Mode::Fail {
        status: 400,
        error: "invalid_grant".into(),
        aadsts: 70008,
        description: "The refresh token has expired.".into(),
        suberror: None,
    });
    assert_eq!(run(&["oauth", "refresh", "ms_mail"]).status.code(), Some(1));
    run(&["oauth", "status"]);
    let mut secrets: Vec<String> = vec![AT.into(), RT.into(), CS.into()];
    secrets.extend(s.mock.issued_access_tokens());
    secrets.extend(s.mock.used_refresh_tokens());
    for secret in &secrets {
        assert!(!all.contains(secret.as_str()), "{secret} leaked:\n{all}");
    }
    assert!(all.contains("encrypted at rest"), "{all}");
    assert!(
        all.contains("needs_reauth") && all.contains("AADSTS70008"),
        "{all}"
    );
    // The sealed store holds none of them either.
    let mut bytes = Vec::new();
    collect_bytes(&dir.join("data"), &mut bytes);
    assert!(!bytes.is_empty());
    for secret in &secrets {
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "{secret} is readable in the data directory"
        );
    }
    // Control: with encryption turned off (PUSHWERK_KEY=none) the same scan
    // does find the refresh token, so the scan itself works.
    let plain_dir = folder(&[("pushes/accounts.yaml", &account_yaml(&s.mock))]);
    let mut child = crate::util::pushwerk_command()
        .current_dir(plain_dir.path())
        .env("PUSHWERK_KEY", "none")
        .args(["oauth", "import", "ms_mail"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), RT.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let mut plain = Vec::new();
    collect_bytes(&plain_dir.path().join("data"), &mut plain);
    assert!(
        contains(&plain, RT.as_bytes()),
        "the scan finds an unencrypted token"
    );
}

fn collect_bytes(dir: &Path, out: &mut Vec<u8>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            collect_bytes(&e.path(), out);
        } else {
            out.extend(std::fs::read(e.path()).unwrap());
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn import_reads_token_responses_and_bare_refresh_tokens_but_never_echoes_them() {
    let t = pushwerk::cli::parse_import(r#"{"token_type":"Bearer","scope":"x","expires_in":3599,"ext_expires_in":3599,"access_token":"a","refresh_token":"r"}"#).unwrap();
    assert_eq!(t.refresh_token, "r");
    assert_eq!(t.expires_in, Some(3599));
    assert_eq!(
        pushwerk::cli::parse_import("  rt-only\n")
            .unwrap()
            .refresh_token,
        "rt-only"
    );
    let err = pushwerk::cli::parse_import(r#"{"access_token":"CANARY-X"}"#)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("CANARY"), "{err}");
    assert!(pushwerk::cli::parse_import("").is_err());
    assert!(pushwerk::cli::parse_import("two words").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_refreshes_accounts_idle_past_the_period_only() {
    let s = setup(MockConfig::default()).await;
    s.mock.seed_refresh_token(
        "rt-seed",
        "offline_access https://graph.microsoft.com/Mail.Send",
    );
    let settings = ResolverSettings {
        keep_alive_after: Duration::from_secs(24 * 3600),
        ..ResolverSettings::default()
    };
    let r = resolver(&s.dir.path().join("data"), &s.catalog, settings);
    r.import("ms_mail", imported(Some("at"), "rt-seed", Some(3599)))
        .await
        .unwrap();
    let now = chrono::Utc::now();
    assert!(r.keep_alive_due(now).unwrap().is_empty(), "just refreshed");
    assert_eq!(
        r.keep_alive_due(now + chrono::Duration::hours(25)).unwrap(),
        ["ms_mail"]
    );
    // With a zero period every account is due, and keep_alive refreshes it.
    let eager = resolver_reopen_with(
        &s,
        ResolverSettings {
            keep_alive_after: Duration::ZERO,
            ..ResolverSettings::default()
        },
        r,
    );
    let outcomes = eager.keep_alive().await;
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].1.is_ok());
    assert_eq!(s.mock.token_request_count(), 1);
}

fn resolver_reopen_with(s: &Setup, settings: ResolverSettings, old: Resolver) -> Resolver {
    drop(old);
    resolver(&s.dir.path().join("data"), &s.catalog, settings)
}

#[test]
fn a_client_secret_expiring_soon_is_a_check_warning() {
    let soon = (chrono::Utc::now() + chrono::Duration::days(10)).date_naive();
    let account = format!(
        "kind: oauth_account\nname: ms_mail\ntoken_url: https://login.example.com/token\nclient_id: c\nclient_secret: ${{env:S}}\nscope: offline_access x\nclient_secret_expires: {soon}\n"
    );
    let dir = folder(&[("pushes/a.yaml", &account)]);
    let out = pushwerk_in(dir.path(), &["check"], &[("S", "x")]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("pushes/a.yaml:7:24: warning: the client secret of `ms_mail` expires on")
            && err.contains("in 10 days")
            || err.contains("in 9 days"),
        "{err}"
    );
}
