//! The web console (`/`) in a real browser: headless Chromium driven over
//! WebDriver against the real `pushwerk serve` binary and the identity and
//! Graph mocks. A user signs in with the admin token, sees the pushes and a
//! broken file's diagnostic, finds a parameter and copies it, previews a
//! push for an event, sends a test event, mends an account and replays its
//! dead letter; a form posted from another site is refused.
//!
//! Screenshots of every page, at 1280×800 and at a phone's 390×844, are
//! saved under `target/console-screenshots/` (the README shows copies).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::webdriver::{Browser, Driver};
use pushwerk_testkit::daemon::{Served as KitServed, World};
use pushwerk_testkit::identity::{IdentityMock, MockConfig, Mode};
use pushwerk_testkit::microsoft::GraphMock;

const INGEST_TOKEN: &str = "console-test-ingest-token";
const GRAPH_PREFIX: &str = "mock-at.graph.microsoft.com.";
const MAIL_SCOPE: &str = "offline_access https://graph.microsoft.com/Mail.Send";

/// One browser test at a time: Chromium is heavy for a 2-core machine.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where screenshots go: `target/console-screenshots/`.
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

/// A temporary folder with `files` in `pushes/` and an empty `data/`.
fn world(files: &[(&str, &str)]) -> World {
    World::new(crate::util::kit(), files)
}

/// `pushwerk oauth import NAME` of `tokens` (before the daemon runs).
async fn import(world: &World, account: &str, tokens: &Value) {
    world.import(account, tokens).await;
    std::fs::remove_file(world.root().join(format!("{account}-tokens.json"))).unwrap();
}

/// A `pushwerk serve` on a world of its own (the kit's [`KitServed`]);
/// killed when dropped.
struct Served {
    kit: KitServed,
    world: World,
}

impl std::ops::Deref for Served {
    type Target = KitServed;
    fn deref(&self) -> &KitServed {
        &self.kit
    }
}

impl Served {
    /// Starts `serve` on a free port and waits until `/readyz` answers 200.
    async fn start(world: World) -> Served {
        let kit = world.serve().token(INGEST_TOKEN).start().await;
        Served { kit, world }
    }
}

/// Signs in through the login page: a wrong token is refused, the right one
/// opens the overview.
async fn sign_in(browser: &Browser, served: &Served) {
    browser.goto(&served.url("/")).await;
    assert!(
        browser.current_url().await.ends_with("/login"),
        "without a session the console asks for the admin token"
    );
    let field = browser.find("#token").await;
    browser.type_into(&field, "not-the-token").await;
    browser.click(&browser.find("#login").await).await;
    browser
        .wait_text("#error", Duration::from_secs(10), "the refusal", |t| {
            t.contains("not the admin token")
        })
        .await;
    let field = browser.find("#token").await;
    browser.type_into(&field, &served.admin_token()).await;
    browser.click(&browser.find("#login").await).await;
    browser
        .wait_text("#health", Duration::from_secs(10), "the overview", |t| {
            t == "ready"
        })
        .await;
}

/// Asserts that the page's HTML holds none of `secrets`.
async fn assert_no_secret(browser: &Browser, secrets: &[&str]) {
    let html = browser
        .execute("return document.documentElement.outerHTML;", vec![])
        .await;
    let html = html.as_str().unwrap_or_default();
    for s in secrets {
        assert!(
            !html.contains(s),
            "a secret is in the page {}",
            browser.current_url().await
        );
    }
}

/// Screenshots of the current page as `name-desktop.png` (1280×800) and
/// `name-phone.png` (390×844); at the phone's width the page must not
/// scroll sideways (wide tables scroll inside their own box).
async fn shoot(browser: &Browser, name: &str) {
    browser.resize(1280, 800).await;
    browser
        .screenshot(&screenshots().join(format!("{name}-desktop.png")))
        .await;
    browser.resize(390, 844).await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "page `{name}` scrolls sideways at a phone's width by {overflow} px"
    );
    browser
        .screenshot(&screenshots().join(format!("{name}-phone.png")))
        .await;
    browser.resize(1280, 800).await;
}

fn lead_mail(graph_base: &str) -> String {
    format!(
        "name: lead-mail\ndescription: Mail every answered call over 30 s to sales\non: call.ended\nwhen: event.answered and event.duration > 30\ngraph_mail:\n  account: ms_mail\n  base_url: {graph_base}\n  to: [\"Sales <sales@example.com>\"]\n  subject: \"Call from << event.caller_name >> (<< event.caller_number >>)\"\n  html: \"<p>Campaign: << event.campaign >></p>\"\n"
    )
}

fn account_yaml(identity: &IdentityMock) -> String {
    format!(
        "kind: oauth_account\nname: ms_mail\ntoken_url: {}\nauthorize_url: {}\nclient_id: {}\nclient_secret: mock-secret\nscope: {MAIL_SCOPE}\n",
        identity.token_url(),
        identity.authorize_url(),
        MockConfig::default().client_id
    )
}

const BROKEN: &str = "name: broken\non: call.ended\ngraph_mail:\n  account: ms_mail\n  subjct: Hello\n  to: [a@example.com]\n";

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_pushes_finds_a_parameter_and_previews_a_push() {
    let _one = ONE_BROWSER.lock().await;
    let identity = IdentityMock::start(MockConfig::default()).await;
    let tmp = world(&[
        ("accounts.yaml", &account_yaml(&identity)),
        ("lead-mail.yaml", &lead_mail("http://127.0.0.1:9")),
        ("broken.yaml", BROKEN),
    ]);
    let served = Served::start(tmp).await;
    let driver = Driver::start().await;
    let browser = driver.session(1280, 800).await;

    sign_in(&browser, &served).await;
    let secrets = [served.admin_token(), INGEST_TOKEN.to_owned()];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secret(&browser, &secrets).await;
    let overview = browser.body_text().await;
    assert!(overview.contains("1 broken file(s)"), "{overview}");
    assert!(overview.contains("ms_mail: no_tokens"), "{overview}");
    shoot(&browser, "overview").await;

    // Pushes: the one in force, and the broken file's diagnostic with its place.
    browser.goto(&served.url("/pushes")).await;
    let table = browser
        .wait_text("#pushes", Duration::from_secs(5), "the push table", |t| {
            t.contains("lead-mail")
        })
        .await;
    assert!(table.contains("on call.ended"), "{table}");
    assert!(table.contains("graph_mail"), "{table}");
    assert!(
        table.contains("event.answered and event.duration > 30"),
        "{table}"
    );
    let problems = browser.text(&browser.find("#problems").await).await;
    assert!(problems.contains("broken.yaml:5:3"), "{problems}");
    assert!(
        problems.contains("unknown field `subjct`; did you mean `subject`?"),
        "{problems}"
    );
    shoot(&browser, "pushes").await;

    // The parameter browser: search, then click to copy.
    browser.goto(&served.url("/parameters")).await;
    let search = browser.find("#param-search").await;
    browser.type_into(&search, "caller_num").await;
    let visible = browser
        .execute(
            "return Array.from(document.querySelectorAll('tr.param')).filter(r => !r.hidden).map(r => r.querySelector('button.copy').dataset.copy);",
            vec![],
        )
        .await;
    assert_eq!(visible, json!(["<< event.caller_number >>"]));
    let can_read = browser.set_permission("clipboard-read", "granted").await
        && browser.set_permission("clipboard-write", "granted").await;
    let button = browser
        .find("button.copy[data-copy='<< event.caller_number >>']")
        .await;
    browser.click(&button).await;
    let status = browser
        .wait_text("#copy-status", Duration::from_secs(5), "the copy", |t| {
            !t.is_empty()
        })
        .await;
    assert_eq!(status, "Copied << event.caller_number >>");
    // Where the driver lets the page read the clipboard, check what is really on it.
    if can_read {
        let pasted = browser
            .execute_async(
                "const done = arguments[arguments.length - 1]; navigator.clipboard.readText().then(done, e => done('ERR ' + e));",
                vec![],
            )
            .await;
        assert_eq!(pasted, json!("<< event.caller_number >>"), "the clipboard");
    } else {
        eprintln!("clipboard-read not grantable here: checked the copy status only");
    }
    // Samples from a pasted event: its fields, with their types and values.
    browser
        .click(&browser.find("details.card summary").await)
        .await;
    browser
        .type_into(
            &browser.find("#sample-event").await,
            r#"{"id": "s-1", "type": "call.ended", "time": "2026-11-25T14:03:11Z", "data": {"caller_number": "+49 30 1234567", "duration": 184}}"#,
        )
        .await;
    browser.click(&browser.find("#sample-button").await).await;
    let row = browser
        .wait_text(
            "tr.param:has(button[data-copy='<< event.duration >>'])",
            Duration::from_secs(10),
            "the event's parameters",
            |t| t.contains("184"),
        )
        .await;
    assert!(row.contains("number"), "{row}");
    let row = browser
        .text(
            &browser
                .find("tr.param:has(button[data-copy='<< event.caller_number >>'])")
                .await,
        )
        .await;
    assert!(row.contains("\"+49 30 1234567\""), "{row}");
    assert!(row.contains("string"), "{row}");
    shoot(&browser, "parameters").await;

    // A push's page: its YAML, and the request it would send for an event.
    browser.goto(&served.url("/pushes/lead-mail")).await;
    let yaml = browser.text(&browser.find("#yaml").await).await;
    assert!(
        yaml.contains("when: event.answered and event.duration > 30"),
        "{yaml}"
    );
    let event = json!({"id": "evt-0001", "type": "call.ended", "time": "2026-11-25T14:03:11Z",
        "data": {"caller_name": "Erika <Mustermann>", "caller_number": "+49 30 1234567",
                 "answered": true, "duration": 184, "campaign": "Herbst"}});
    browser
        .type_into(&browser.find("#event").await, &event.to_string())
        .await;
    browser.click(&browser.find("#preview-button").await).await;
    let preview = browser
        .wait_text("#preview", Duration::from_secs(10), "the preview", |t| {
            t.contains("Mustermann")
        })
        .await;
    assert!(
        preview.starts_with("POST http://127.0.0.1:9/v1.0/me/sendMail"),
        "{preview}"
    );
    assert!(
        preview.contains("Authorization: Bearer ‹oauth.ms_mail›"),
        "{preview}"
    );
    assert!(
        preview.contains(r#""subject":"Call from Erika <Mustermann> (+49 30 1234567)""#),
        "{preview}"
    );
    shoot(&browser, "push").await;
    // Typing changes the preview (live): a short call is skipped, and says why.
    let short = event.to_string().replace("184", "12");
    browser
        .type_into(&browser.find("#event").await, &short)
        .await;
    browser
        .wait_text(
            "#preview",
            Duration::from_secs(10),
            "the live preview",
            |t| t.starts_with("skipped: condition"),
        )
        .await;
    // A malformed event is a clear error, not a blank page.
    browser.type_into(&browser.find("#event").await, "{").await;
    let err = browser
        .wait_text("#preview", Duration::from_secs(10), "the error", |t| {
            !t.starts_with("skipped")
        })
        .await;
    assert!(
        err.contains("malformed JSON") || err.contains("JSON"),
        "{err}"
    );

    // Accounts: tokens can be imported by hand (a refresh token pasted).
    browser.goto(&served.url("/accounts")).await;
    assert_eq!(
        browser.text(&browser.find("#state-ms_mail").await).await,
        "no_tokens"
    );
    browser
        .click(&browser.find("#account-ms_mail details summary").await)
        .await;
    browser
        .type_into(&browser.find("#tokens-ms_mail").await, "rt-pasted-by-hand")
        .await;
    browser
        .click(&browser.find("#account-ms_mail details button").await)
        .await;
    browser
        .wait_text("#flash", Duration::from_secs(10), "the import", |t| {
            t.contains("tokens stored")
        })
        .await;
    assert_ne!(
        browser.text(&browser.find("#state-ms_mail").await).await,
        "no_tokens"
    );
    assert_no_secret(&browser, &["rt-pasted-by-hand"]).await;

    // Dates are shown in the browser's time zone (the ISO time stays in the title).
    browser.goto(&served.url("/")).await;
    let time = browser
        .execute(
            "const t = document.querySelector('time'); return [t.getAttribute('datetime'), t.textContent, t.title];",
            vec![],
        )
        .await;
    assert_eq!(time[0], time[2], "{time}");
    // The browser runs at UTC+5:30 (webdriver::BROWSER_TZ): the shown time
    // of day is the UTC one plus 5:30.
    let utc = chrono::DateTime::parse_from_rfc3339(time[0].as_str().unwrap()).unwrap();
    let local = (utc + chrono::Duration::minutes(330)).naive_utc();
    let shown = local.format("%-I:%M:%S").to_string();
    assert!(
        time[1].as_str().unwrap().contains(&shown),
        "{time}: expected the time of day {shown} (UTC+5:30)"
    );
    assert_ne!(
        time[0], time[1],
        "the time is converted for display: {time}"
    );

    // A broken edit of a loaded file: its last good version stays in force,
    // marked stale, with the new problem shown.
    let file = served.world.root().join("pushes/lead-mail.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    let tmp_file = served.world.root().join("pushes/.lead-mail.yaml.tmp");
    std::fs::write(&tmp_file, good.replace("  to:", "  tooo:")).unwrap();
    std::fs::rename(&tmp_file, &file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        browser.goto(&served.url("/pushes")).await;
        let table = browser.text(&browser.find("#pushes").await).await;
        if table.contains("stale") {
            assert!(table.contains("lead-mail"), "{table}");
            break;
        }
        assert!(Instant::now() < deadline, "no stale marker: {table}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let problems = browser.text(&browser.find("#problems").await).await;
    assert!(problems.contains("pushes/lead-mail.yaml"), "{problems}");
    assert!(problems.contains("unknown field `tooo`"), "{problems}");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_mends_an_account_and_replays_its_dead_letter() {
    let _one = ONE_BROWSER.lock().await;
    let identity = IdentityMock::start(MockConfig::default()).await;
    let graph = GraphMock::start().await;
    graph.accept_token_prefix(GRAPH_PREFIX);
    let tmp = world(&[
        ("accounts.yaml", &account_yaml(&identity)),
        ("lead-mail.yaml", &lead_mail(&graph.base_url())),
    ]);
    // A stored refresh token that Microsoft no longer takes.
    identity.seed_refresh_token("rt-old", MAIL_SCOPE);
    import(
        &tmp,
        "ms_mail",
        &json!({"access_token": "mock-at.graph.microsoft.com.seed", "refresh_token": "rt-old", "expires_in": 0}),
    )
    .await;
    identity.set_mode(Mode::Fail {
        status: 400,
        error: "invalid_grant".into(),
        aadsts: 70008,
        description: "The provided authorization code or refresh token has expired due to inactivity.".into(),
        suberror: None,
    });
    let served = Served::start(tmp).await;
    let driver = Driver::start().await;
    let browser = driver.session(1280, 800).await;
    sign_in(&browser, &served).await;

    // Send a test event from the form: it is ingested, and dies for want of a token.
    browser.goto(&served.url("/send")).await;
    browser
        .type_into(&browser.find("#type").await, "call.ended")
        .await;
    browser
        .type_into(&browser.find("#id").await, "mend-1")
        .await;
    browser
        .type_into(
            &browser.find("#data").await,
            r#"{"caller_name": "Erika", "caller_number": "+49 30 1", "answered": true, "duration": 90, "campaign": "Herbst"}"#,
        )
        .await;
    shoot(&browser, "send").await;
    browser.click(&browser.find("#send").await).await;
    browser
        .wait_text(
            "#flash",
            Duration::from_secs(10),
            "the ingest answer",
            |t| t.contains("1 accepted"),
        )
        .await;

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        browser.goto(&served.url("/dead-letters")).await;
        let rows = browser.find_all("tr.dead-letter").await;
        if let Some(row) = rows.first() {
            let text = browser.text(row).await;
            assert!(text.contains("mend-1"), "{text}");
            assert!(text.contains("AADSTS70008"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shoot(&browser, "dead-letters").await;
    assert!(graph.requests().is_empty(), "nothing sent without a token");
    // What would the push send for the dead letter's event? Its preview.
    browser
        .click(&browser.find("tr.dead-letter a[id^='preview-']").await)
        .await;
    let event = browser
        .execute("return document.getElementById('event').value;", vec![])
        .await;
    assert!(
        event.as_str().unwrap_or_default().contains("mend-1"),
        "the dead letter's event fills the preview: {event}"
    );
    browser.click(&browser.find("#preview-button").await).await;
    let preview = browser
        .wait_text("#preview", Duration::from_secs(10), "the preview", |t| {
            t.contains("Call from Erika (+49 30 1)")
        })
        .await;
    assert!(preview.starts_with("POST "), "{preview}");

    // Accounts: ms_mail needs a new login. "Sign in" runs the browser
    // sign-in: the identity mock's authorize endpoint (which checks the
    // PKCE challenge when the code is redeemed) sends the browser back to
    // the daemon's callback, which stores the new tokens.
    browser.goto(&served.url("/accounts")).await;
    let state = browser.text(&browser.find("#state-ms_mail").await).await;
    assert_eq!(state, "needs_reauth");
    identity.set_mode(Mode::Normal);
    browser.click(&browser.find("#signin-ms_mail").await).await;
    // The begin page names the account and the provider, and waits for
    // "Continue" (a link previewer's fetch must not use the link up).
    let asks = browser
        .wait_text("h1", Duration::from_secs(15), "the begin page", |t| {
            t.contains("sign in ms_mail")
        })
        .await;
    assert_eq!(asks, "pushwerk: sign in ms_mail");
    browser.click(&browser.find("#begin-continue").await).await;
    let done = browser
        .wait_text("h1", Duration::from_secs(15), "the callback page", |t| {
            t.contains("signed in") || t.contains("failed")
        })
        .await;
    assert!(
        done.contains("signed in"),
        "{done}: {}",
        browser.body_text().await
    );
    let token_requests = identity.requests();
    let code_request = token_requests
        .iter()
        .find(|r| r.form.get("grant_type").map(String::as_str) == Some("authorization_code"))
        .expect("the daemon redeemed the code");
    assert_eq!(
        code_request.status, 200,
        "the mock took the code and its PKCE verifier"
    );
    assert!(
        code_request.form.contains_key("code_verifier"),
        "PKCE: a code verifier was sent"
    );
    browser.goto(&served.url("/accounts")).await;
    let state = browser.text(&browser.find("#state-ms_mail").await).await;
    assert_eq!(state, "ok");
    let issued = identity.issued_access_tokens();
    let mut secrets: Vec<String> = issued.clone();
    secrets.extend([
        "rt-new".to_owned(),
        "rt-old".to_owned(),
        served.admin_token(),
    ]);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secret(&browser, &secrets).await;
    shoot(&browser, "accounts").await;

    // Replay the dead letter: it is delivered, and the delivery log shows it.
    browser.goto(&served.url("/dead-letters")).await;
    browser
        .click(&browser.find("tr.dead-letter button").await)
        .await;
    browser
        .wait_text("#flash", Duration::from_secs(10), "the replay", |t| {
            t.contains("re-queued 1")
        })
        .await;
    assert!(graph.wait_for_requests(1, Duration::from_secs(15)).await);
    assert_eq!(graph.requests()[0].status, 202);
    let deadline = Instant::now() + Duration::from_secs(15);
    let delivered = loop {
        browser
            .goto(&served.url("/deliveries?event=mend-1&status=delivered"))
            .await;
        if let Some(row) = browser.find_all("tr.delivery").await.first() {
            break browser.text(row).await;
        }
        assert!(Instant::now() < deadline, "no delivered attempt in the log");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(delivered.contains("lead-mail"), "{delivered}");
    assert!(delivered.contains("202"), "{delivered}");
    // The target's request id (Graph's `request-id`) is shown, as the API has it.
    let api: Value = pushwerk::net::http_client()
        .build()
        .expect("HTTP client")
        .get(served.url("/v1/deliveries?push=lead-mail&status=delivered"))
        .bearer_auth(INGEST_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reference = api["deliveries"][0]["reference"]
        .as_str()
        .expect("Graph's request-id is logged");
    assert!(delivered.contains(reference), "{delivered}");
    browser.goto(&served.url("/deliveries?event=mend-1")).await;
    let all = browser.text(&browser.find("#deliveries").await).await;
    assert!(
        all.contains("dead"),
        "the first attempt is in the log: {all}"
    );
    assert_no_secret(&browser, &secrets).await;
    shoot(&browser, "deliveries").await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_refuses_a_cross_site_form_post() {
    let _one = ONE_BROWSER.lock().await;
    let identity = IdentityMock::start(MockConfig::default()).await;
    let tmp = world(&[
        ("accounts.yaml", &account_yaml(&identity)),
        ("lead-mail.yaml", &lead_mail("http://127.0.0.1:9")),
    ]);
    let served = Served::start(tmp).await;
    let driver = Driver::start().await;
    let browser = driver.session(1280, 800).await;
    sign_in(&browser, &served).await;

    // Another origin (same host, other port: same site, so even the
    // SameSite=Strict cookie goes along) serves a form aimed at the console.
    let target = served.url("/send");
    let page = format!(
        "<!doctype html><html><body><form method=post action='{target}'>\
         <input name=type value=call.ended><input name=id value=csrf-1><input name=data value='{{}}'>\
         <button id=go type=submit>Win a prize</button></form></body></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    browser.goto(&evil).await;
    browser.click(&browser.find("#go").await).await;
    let refusal = browser
        .wait_text("#error", Duration::from_secs(10), "the refusal", |t| {
            !t.is_empty()
        })
        .await;
    assert!(refusal.contains("refused"), "{refusal}");
    let metrics = served.metrics().await;
    assert!(
        metrics.contains("pushwerk_events_accepted_total 0"),
        "the cross-site post ingested nothing:\n{metrics}"
    );
    shoot(&browser, "csrf-refused").await;
    browser.quit().await;

    // The same checks without a browser: the session cookie alone is not
    // enough (the form's CSRF token is needed), nor is a token from another origin.
    let http = pushwerk::net::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(served.url("/login"))
        .form(&[("token", served.admin_token())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = http
        .get(served.url("/send"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["content-security-policy"],
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    );
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the form carries a CSRF token")
        .to_owned();
    let post = |fields: Vec<(&'static str, String)>, origin: Option<&'static str>| {
        let mut r = http
            .post(served.url("/send"))
            .header("cookie", &cookie)
            .form(&fields);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let base = || {
        vec![
            ("type", "call.ended".to_owned()),
            ("id", "csrf-2".to_owned()),
            ("data", "{}".to_owned()),
        ]
    };
    let no_token = post(base(), None).await.unwrap();
    assert_eq!(no_token.status(), 403, "no CSRF token");
    let mut wrong = base();
    wrong.push(("csrf", "0".repeat(64)));
    assert_eq!(
        post(wrong, None).await.unwrap().status(),
        403,
        "a wrong CSRF token"
    );
    let mut right = base();
    right.push(("csrf", csrf.clone()));
    let other_origin = post(right.clone(), Some("http://evil.example"))
        .await
        .unwrap();
    assert_eq!(other_origin.status(), 403, "another origin");
    // Bad input is a clear error on the form, which keeps what was typed.
    let mut bad = right.clone();
    bad.retain(|(k, _)| *k != "data");
    bad.push(("data", "{\"caller\": ".to_owned()));
    let answer = post(bad, None).await.unwrap();
    assert_eq!(answer.status(), 400);
    let html = answer.text().await.unwrap();
    assert!(html.contains("the data is not JSON"), "{html}");
    assert!(html.contains("{&quot;caller&quot;: </textarea>"), "{html}");
    let ok = post(right, None).await.unwrap();
    assert_eq!(ok.status(), 303, "the console's own form is taken");
}
