//! Two limits of the control plane, closed, through the real binary:
//!
//! - A browser sign-in through the daemon completes only in the browser
//!   that opened its begin link (a cookie bound to the sign-in): a callback
//!   URL alone, or with another sign-in's cookie, is refused, stores
//!   nothing and leaves the sign-in waiting for its own browser (login CSRF
//!   and account injection, RFC 6749 §10.12, RFC 9700 §4.7).
//! - `/metrics` (push and account names, counts) needs the metrics token or
//!   the admin token, unless `--metrics-public` says otherwise.

use pushwerk_testkit::daemon::{http_client, metric, Served, World};
use pushwerk_testkit::identity::{IdentityMock, MockConfig};

const INGEST: &str = "harden-test-ingest-token-0123";
const ADMIN: &str = "harden-test-admin-token-01234";
const MAIL_SCOPE: &str = "offline_access https://graph.microsoft.com/Mail.Send";

/// What a browser does with a sign-in's begin link (`http://localhost:PORT/
/// oauth/begin?id=…`): opens it (on 127.0.0.1, the same daemon), gets the
/// page with the "Continue" form (no cookie yet), posts it, expects 303 to
/// the provider with a cookie, and returns the provider's authorize URL
/// and the cookie as a `Cookie` header value (`name=value`).
pub(crate) async fn open_begin_link(http: &reqwest::Client, link: &str) -> (url::Url, String) {
    let (authorize, set_cookie) = open_begin_link_raw(http, link).await;
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    (authorize, cookie)
}

/// The begin page at `link`: its status, its `Set-Cookie` (if any) and
/// the `id` its "Continue" form posts.
async fn begin_page(http: &reqwest::Client, link: &str) -> (u16, Option<String>, String) {
    assert!(link.contains("/oauth/begin?id="), "{link}");
    let r = http
        .get(link.replacen("//localhost:", "//127.0.0.1:", 1))
        .send()
        .await
        .expect("the begin link answers");
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    let page = r.text().await.unwrap();
    let field = "name=\"id\" value=\"";
    let id = page
        .find(field)
        .map(|at| {
            let rest = &page[at + field.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .unwrap_or(page);
    (status, cookie, id)
}

/// Posts the begin page's form (`id`) to the daemon at `link`'s origin: the
/// answer.
async fn continue_begin(http: &reqwest::Client, link: &str, id: &str) -> reqwest::Response {
    let base = link.replacen("//localhost:", "//127.0.0.1:", 1);
    let action = &base[..base.find('?').unwrap()];
    http.post(action)
        .form(&[("id", id)])
        .send()
        .await
        .expect("the begin form answers")
}

/// [`open_begin_link`], returning the whole `Set-Cookie` value.
async fn open_begin_link_raw(http: &reqwest::Client, link: &str) -> (url::Url, String) {
    let (status, cookie, id) = begin_page(http, link).await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(cookie, None, "the page alone binds nothing");
    let r = continue_begin(http, link, &id).await;
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    (
        url::Url::parse(&location).expect("an authorize URL"),
        set_cookie,
    )
}

fn account_yaml(identity: &IdentityMock) -> String {
    format!(
        "kind: oauth_account\nname: ms_mail\ntoken_url: {}\nclient_id: {}\nclient_secret: mock-secret\nscope: {MAIL_SCOPE}\n",
        identity.token_url(),
        MockConfig::default().client_id
    )
}

fn world(files: &[(&str, &str)]) -> World {
    World::new(crate::util::kit(), files)
}

async fn start(world: &World, extra: &[&str]) -> Served {
    world
        .serve()
        .token(INGEST)
        .args(&["--admin-token", ADMIN])
        .args(extra)
        .client(http_client().redirect(reqwest::redirect::Policy::none()))
        .start()
        .await
}

/// `GET path` with `cookie` (if any): status, `Set-Cookie` values, body.
async fn get(
    served: &Served,
    path_or_url: &str,
    cookie: Option<&str>,
) -> (u16, Vec<String>, String) {
    let url = if path_or_url.starts_with('/') {
        served.url(path_or_url)
    } else {
        path_or_url.replacen("//localhost:", "//127.0.0.1:", 1)
    };
    let mut r = served.http().get(url);
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    let r = r.send().await.expect("an answer");
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (r.status().as_u16(), cookies, r.text().await.unwrap())
}

/// Starts a sign-in of `ms_mail` through the API: its begin link.
async fn start_sign_in(served: &Served) -> String {
    let r = served
        .http()
        .get(served.url("/oauth/ms_mail/start"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let start: serde_json::Value = r.json().await.unwrap();
    start["authorize_url"].as_str().unwrap().to_owned()
}

/// The account's status through the API (`no_tokens`, `ok`, …).
async fn account_status(served: &Served) -> String {
    let r = served
        .http()
        .get(served.url("/v1/accounts/ms_mail"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let account: serde_json::Value = r.json().await.unwrap();
    account["status"].as_str().unwrap().to_owned()
}

/// The provider's redirect back to the daemon for `authorize` (the mock
/// signs in at once): the callback URL.
async fn provider_redirect(served: &Served, authorize: &url::Url) -> String {
    let r = served.http().get(authorize.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 302);
    r.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_completes_only_in_the_browser_that_opened_its_link() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let world = world(&[("accounts.yaml", &account_yaml(&identity))]);
    let served = start(&world, &[]).await;

    // Two sign-ins, each opened in its own browser.
    let link_a = start_sign_in(&served).await;
    let link_b = start_sign_in(&served).await;
    assert!(
        link_a.starts_with(&format!(
            "http://localhost:{}/oauth/begin?id=",
            served.port()
        )),
        "the link is on the callback's origin: {link_a}"
    );
    // A link previewer (a chat client unfurling the link, a mail scanner)
    // fetches link A first: it gets the page, no cookie, and uses up
    // nothing.
    for _ in 0..2 {
        let (status, cookie, id) = begin_page(served.http(), &link_a).await;
        assert_eq!(status, 200, "{id}");
        assert_eq!(cookie, None);
    }
    let (authorize_a, set_cookie_a) = open_begin_link_raw(served.http(), &link_a).await;
    let (_, set_cookie_b) = open_begin_link_raw(served.http(), &link_b).await;
    let cookie_a = set_cookie_a.split(';').next().unwrap().to_owned();
    let cookie_b = set_cookie_b.split(';').next().unwrap().to_owned();

    // The cookie: HttpOnly, SameSite=Lax (the provider's redirect is a
    // cross-site top-level GET), sent to the callback only, for the
    // sign-in's ten minutes; not `Secure` on plain http.
    let attributes: Vec<&str> = set_cookie_a.split("; ").skip(1).collect();
    assert_eq!(
        attributes,
        [
            "Path=/oauth/callback",
            "Max-Age=600",
            "HttpOnly",
            "SameSite=Lax"
        ],
        "{set_cookie_a}"
    );
    let (name_a, value_a) = cookie_a.split_once('=').unwrap();
    let (name_b, value_b) = cookie_b.split_once('=').unwrap();
    assert!(name_a.starts_with("pushwerk_signin_"), "{cookie_a}");
    assert_ne!(name_a, name_b, "two sign-ins, two cookies");
    assert!(value_a.len() >= 32, "{cookie_a}");
    let q: std::collections::HashMap<String, String> =
        authorize_a.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256", "PKCE S256");

    // A begin link is continued once: a second browser opening or
    // continuing it is refused.
    let (status, cookies, page) = get(&served, &link_b, None).await;
    assert_eq!(status, 409, "{page}");
    assert!(cookies.is_empty(), "{cookies:?}");
    assert!(page.contains("already continued"), "{page}");
    let id_b = &link_b[link_b.find("id=").unwrap() + 3..];
    let r = continue_begin(served.http(), &link_b, id_b).await;
    assert_eq!(r.status(), 409);
    assert!(r.headers().get("set-cookie").is_none());
    // A post without an id, or with an unknown one, binds nothing.
    for body in [vec![], vec![("id", "f".repeat(64))]] {
        let r = served
            .http()
            .post(served.url("/oauth/begin"))
            .form(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.headers().get("set-cookie").is_none());
    }
    // The form is one id: a large body is refused before it is read.
    let r = served
        .http()
        .post(served.url("/oauth/begin"))
        .form(&[("id", "f".repeat(8192))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // The provider sends browser A's sign-in back: the callback URL.
    let callback = provider_redirect(&served, &authorize_a).await;

    // Without the cookie (another browser holding the URL): refused,
    // nothing exchanged or stored.
    let (status, _, page) = get(&served, &callback, None).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("not started in this browser"), "{page}");
    // With the other sign-in's cookie, as it is or under this sign-in's name.
    let (status, _, _) = get(&served, &callback, Some(&cookie_b)).await;
    assert_eq!(status, 403);
    let swapped = format!("{name_a}={value_b}");
    let (status, _, _) = get(&served, &callback, Some(&swapped)).await;
    assert_eq!(status, 403);
    assert_eq!(identity.requests().len(), 0, "no code was exchanged");
    assert_eq!(account_status(&served).await, "no_tokens");

    // The right browser: the refusals did not use the sign-in up.
    let (status, cookies, page) = get(&served, &callback, Some(&cookie_a)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("stored new tokens of `ms_mail`"), "{page}");
    assert_eq!(identity.requests().len(), 1);
    assert_eq!(account_status(&served).await, "ok");
    // Its cookie is cleared, on the same path.
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("{name_a}=; Path=/oauth/callback; Max-Age=0"))),
        "{cookies:?}"
    );
    // And the sign-in is used: the same callback again is refused.
    let (status, _, _) = get(&served, &callback, Some(&cookie_a)).await;
    assert_eq!(status, 400);
    assert_eq!(identity.requests().len(), 1, "no second exchange");

    // Neither the binding values nor the begin links are logged.
    let log = served.log_text();
    for secret in [value_a, value_b] {
        assert!(!log.contains(secret), "{log}");
    }
    assert!(!log.contains(link_a.split("id=").nth(1).unwrap()), "{log}");
}

/// Account injection: the attacker gets a code for their own account with
/// the admin's `state` (e.g. from a shared authorize URL) and completes the
/// callback from their own browser: refused, the admin's browser still
/// completes its own sign-in afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn an_attackers_browser_cannot_complete_a_sign_in_with_the_admins_state() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let world = world(&[("accounts.yaml", &account_yaml(&identity))]);
    let served = start(&world, &[]).await;
    let link = start_sign_in(&served).await;
    let (authorize, admin_cookie) = open_begin_link(served.http(), &link).await;
    // The attacker signs in at the provider with the URL they saw, and
    // loads the callback in their browser (no cookie of this daemon's).
    let attackers = provider_redirect(&served, &authorize).await;
    let (status, _, _) = get(&served, &attackers, None).await;
    assert_eq!(status, 403);
    assert_eq!(identity.requests().len(), 0);
    // A stale cookie of an earlier sign-in under this sign-in's name.
    let name = admin_cookie.split('=').next().unwrap();
    let stale = format!("{name}={}", "0".repeat(64));
    let (status, _, _) = get(&served, &attackers, Some(&stale)).await;
    assert_eq!(status, 403);
    assert_eq!(account_status(&served).await, "no_tokens");
    // The admin's browser finishes the sign-in it opened.
    let admins = provider_redirect(&served, &authorize).await;
    let (status, _, page) = get(&served, &admins, Some(&admin_cookie)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(account_status(&served).await, "ok");
}

/// The console's "Sign in" is a form post with the session's CSRF token,
/// not a link: a page that could make the admin's browser GET a URL (a page
/// on another port of this host is "same site", so the session cookie's
/// `SameSite=Strict` goes along) must not start a sign-in, which would
/// store whatever identity that browser is signed in to at the provider.
#[tokio::test(flavor = "multi_thread")]
async fn the_consoles_sign_in_needs_a_form_post_with_the_sessions_csrf_token() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let world = world(&[("accounts.yaml", &account_yaml(&identity))]);
    let served = start(&world, &[]).await;
    let origin = served.url("");
    let origin = origin.trim_end_matches('/');
    let login = served
        .http()
        .post(served.url("/login"))
        .header("origin", origin)
        .form(&[("token", ADMIN)])
        .send()
        .await
        .expect("console login");
    assert_eq!(login.status(), 303);
    let session = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (status, _, page) = get(&served, "/accounts", Some(&session)).await;
    assert_eq!(status, 200, "{page}");
    let field = "name=\"csrf\" value=\"";
    let at = page.find(field).expect("a csrf field") + field.len();
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    assert!(
        page.contains("<form method=\"post\" action=\"/accounts/ms_mail/signin\">"),
        "{page}"
    );
    let post = |form: Vec<(&'static str, String)>, origin: &str| {
        served
            .http()
            .post(served.url("/accounts/ms_mail/signin"))
            .header("cookie", &session)
            .header("origin", origin)
            .form(&form)
            .send()
    };
    // A GET (a link, an <img>, a redirect) starts nothing.
    let (status, _, _) = get(&served, "/accounts/ms_mail/signin", Some(&session)).await;
    assert_eq!(status, 405);
    // A post without the token, or from another origin, is refused.
    let r = post(vec![], origin).await.expect("post");
    assert_eq!(r.status(), 403);
    let r = post(vec![("csrf", csrf.to_owned())], "http://127.0.0.1:1")
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    assert_eq!(identity.requests().len(), 0, "nothing was exchanged");
    // The console's own form starts it: a page that goes on to the begin
    // link by itself (a redirect would be stopped by the console's CSP
    // `form-action 'self'`: the link is on another origin).
    let r = post(vec![("csrf", csrf.to_owned())], origin)
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let page = r.text().await.expect("page");
    let href = "id=\"signin-link\" href=\"";
    let at = page.find(href).expect("the begin link") + href.len();
    let escaped = &page[at..at + page[at..].find('"').unwrap()];
    // minijinja escapes `/` in attributes; a browser reads it back.
    let link = escaped.replace("&#x2f;", "/").replace("&amp;", "&");
    assert!(link.contains("/oauth/begin?id="), "{page}");
    assert!(
        page.contains(&format!(
            "<meta http-equiv=\"refresh\" content=\"0; url={escaped}\">"
        )),
        "{page}"
    );
    let (authorize, _) = open_begin_link(served.http(), &link).await;
    assert!(
        authorize.as_str().starts_with(&identity.authorize_url()),
        "{authorize}"
    );
}

/// Behind a TLS proxy (`--public-url https://…/base`): the begin link is on
/// the public origin, and the cookie is `Secure` with the public path.
#[tokio::test(flavor = "multi_thread")]
async fn the_sign_in_cookie_is_secure_behind_https() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let world = world(&[("accounts.yaml", &account_yaml(&identity))]);
    let served = start(&world, &["--public-url", "https://push.example.com/base/"]).await;
    let link = start_sign_in(&served).await;
    let prefix = "https://push.example.com/base/oauth/begin?id=";
    assert!(link.starts_with(prefix), "{link}");
    // The proxy strips /base: the daemon serves /oauth/begin.
    let local = served.url(&format!("/oauth/begin?id={}", &link[prefix.len()..]));
    let (_, set_cookie) = open_begin_link_raw(served.http(), &local).await;
    assert!(
        set_cookie
            .ends_with("; Path=/base/oauth/callback; Max-Age=600; HttpOnly; SameSite=Lax; Secure"),
        "{set_cookie}"
    );
}

// ---------------------------------------------------------------------------
// /metrics

/// `GET /metrics` with `token` (if any): status and body.
async fn scrape(served: &Served, token: Option<&str>) -> (u16, String) {
    let mut r = served.http().get(served.url("/metrics"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("an answer");
    let status = r.status().as_u16();
    if status == 401 {
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer realm=\"pushwerk metrics\""
        );
    }
    (status, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_the_metrics_or_the_admin_token_by_default() {
    let world = world(&[]);
    let served = start(&world, &[]).await;
    let file = world.data().join("metrics-token");
    let token = std::fs::read_to_string(&file)
        .expect("a metrics token generated into DATA/metrics-token")
        .trim()
        .to_owned();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    for refused in [None, Some("wrong-token-0123456789"), Some(INGEST)] {
        let (status, body) = scrape(&served, refused).await;
        assert_eq!(status, 401, "{refused:?}: {body}");
        assert!(!body.contains("pushwerk_"), "{body}");
    }
    let (status, body) = scrape(&served, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        metric(&body, "pushwerk_events_accepted_total").is_some(),
        "{body}"
    );
    let (status, _) = scrape(&served, Some(ADMIN)).await;
    assert_eq!(status, 200);
    // The metrics token opens nothing else.
    let r = served
        .http()
        .get(served.url("/v1/pushes"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(!served.log_text().contains(&token));
    // The kit scrapes with the generated token.
    assert_eq!(served.metric("pushwerk_events_accepted_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_given_metrics_token_is_used_and_not_written() {
    let world = world(&[]);
    let given = "a-scraper-token-of-my-own-42";
    let served = world
        .serve()
        .token(INGEST)
        .env("PUSHWERK_METRICS_TOKEN", given)
        .start()
        .await;
    assert!(!world.data().join("metrics-token").exists());
    assert_eq!(scrape(&served, Some(given)).await.0, 200);
    assert_eq!(scrape(&served, None).await.0, 401);
    assert!(!served.log_text().contains(given));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_public_serves_them_without_a_token() {
    let world = world(&[]);
    let served = start(&world, &["--metrics-public"]).await;
    assert!(!world.data().join("metrics-token").exists());
    let (status, body) = scrape(&served, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pushwerk_events_accepted_total"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_metrics_settings_stop_the_start_with_a_reason() {
    let world = world(&[]);
    for (args, says) in [
        (
            vec![
                "--metrics-public",
                "--metrics-token",
                "a-scraper-token-of-my-own-42",
            ],
            "leave one out",
        ),
        (vec!["--metrics-token", INGEST], "is the ingest token"),
        (vec!["--metrics-token", "short"], "5 characters long"),
    ] {
        let mut full = vec!["serve", "--listen", "127.0.0.1:0"];
        full.extend(args.iter().copied());
        let out = world
            .pushwerk(&full, &[("PUSHWERK_INGEST_TOKEN", INGEST)])
            .await;
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(text.contains(says), "{args:?}: {text}");
    }
}

// ---------------------------------------------------------------------------
// HTML bodies: parameters inside <style> and <script>

/// `check` warns about a parameter inside a `<style>` or `<script>` element
/// of an HTML body (HTML escaping does not protect CSS or script), names
/// the element and the parameter, and still passes the folder; fixed CSS
/// beside a parameter in the text is not reported.
#[test]
fn check_warns_about_parameters_inside_style_and_script_elements() {
    let push = |html: &str| {
        format!(
            "name: page\non: call.ended\ngraph_mail:\n  account: ms_mail\n  to: [sales@example.com]\n  subject: s\n  html: '{}'\n",
            html.replace('\'', "''")
        )
    };
    let account = "kind: oauth_account\nname: ms_mail\ntoken_url: https://login.microsoftonline.com/common/oauth2/v2.0/token\nclient_id: c\nscope: https://graph.microsoft.com/Mail.Send\n";
    let check = |html: &str| {
        let dir = crate::util::folder(&[
            ("pushes/page.yaml", &push(html)),
            ("pushes/accounts.yaml", account),
        ]);
        let out = crate::util::pushwerk_in(dir.path(), &["check"], &[]);
        let text = crate::util::stdout(&out) + &crate::util::stderr(&out);
        assert!(out.status.success(), "{html}: {text}");
        text
    };
    let text = check("<style>p { color: << event.color >>; }</style><p>hi</p>");
    assert_eq!(text.matches("warning:").count(), 1, "{text}");
    assert!(
        text.contains("a parameter inside a `<style>` element (`<< event.color >>`)"),
        "{text}"
    );
    let text = check("<p>hi</p><SCRIPT>track(<< event.id >>)</SCRIPT>");
    assert_eq!(text.matches("warning:").count(), 1, "{text}");
    assert!(
        text.contains("a parameter inside a `<script>` element (`<< event.id >>`)"),
        "{text}"
    );
    let text = check("<style>p { color: red }</style><p><< event.text >></p>");
    assert!(!text.contains("warning:"), "{text}");
}
