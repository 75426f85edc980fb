//! Today's hardening attacked from outside, through the real binary: the
//! browser-bound sign-in, the metrics token, and the PostgreSQL node name.
//! Most tests are defects that were found and fixed (each says what went
//! wrong); two pin attacks that held and are cheap to keep (racing begin
//! links and callbacks; two processes started at once under one name).

use std::process::Stdio;
use std::time::Duration;

use crate::pg_server::PgServer;
use pushwerk_testkit::daemon::{announced_port, http_client, poll, Served, World};
use pushwerk_testkit::identity::{IdentityMock, MockConfig};
use pushwerk_testkit::microsoft::HttpReceiver;

const INGEST: &str = "attack-signin-ingest-token-0123";
const ADMIN: &str = "attack-signin-admin-token-01234";

fn world(files: &[(&str, &str)]) -> World {
    World::new(crate::util::kit(), files)
}

/// `pushwerk serve` with `args`, expected to refuse to start: its stderr.
async fn refused_start(world: &World, args: &[&str]) -> String {
    refused(world.command(), args).await
}

/// `cmd serve --listen 127.0.0.1:0 args…` (`cmd`: the binary with the
/// options before `serve`), expected to refuse to start: its stderr. A
/// daemon that starts instead is stopped and the test fails.
async fn refused(mut cmd: std::process::Command, args: &[&str]) -> String {
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("PUSHWERK_INGEST_TOKEN", INGEST);
    crate::util::fails_within_20s(cmd).await
}

// ---------------------------------------------------------------------------
// /metrics

/// A metrics token that is the admin token would put the admin token into
/// every scraper's configuration (a Prometheus `credentials_file`), while
/// the README promises that the metrics token "opens nothing else": the
/// start is refused, whether the token is given or is the content of
/// `DATA/metrics-token` (a copy of `admin-token`), and the refusal does not
/// echo the token.
#[tokio::test(flavor = "multi_thread")]
async fn a_metrics_token_that_is_the_admin_token_is_refused() {
    let world = world(&[]);
    let text = refused_start(&world, &["--admin-token", ADMIN, "--metrics-token", ADMIN]).await;
    assert!(
        text.contains("the metrics token is the admin token"),
        "{text}"
    );
    assert!(!text.contains(ADMIN), "{text}");
    // Padded with blanks, as a copied file or an env file may be.
    let padded = format!(" {ADMIN}\n");
    let text = refused_start(
        &world,
        &["--admin-token", ADMIN, "--metrics-token", &padded],
    )
    .await;
    assert!(
        text.contains("the metrics token is the admin token"),
        "{text}"
    );
    // Both generated, then `cp data/admin-token data/metrics-token`.
    let mut served = world.serve().token(INGEST).start().await;
    served.stop(Duration::from_secs(10)).await;
    let data = world.data();
    std::fs::copy(data.join("admin-token"), data.join("metrics-token")).unwrap();
    let text = refused_start(&world, &[]).await;
    assert!(
        text.contains("the metrics token is the admin token"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL node names

/// A node of `name` on `server`, in a data directory of its own, delivering
/// to `hook`.
async fn pg_node(
    server: &PgServer,
    hook: &str,
    name: &str,
    ready_within: Duration,
) -> (World, Served) {
    pg_node_leased(server, hook, name, ready_within, "10s").await
}

/// [`pg_node`] with `serve --lease`.
async fn pg_node_leased(
    server: &PgServer,
    hook: &str,
    name: &str,
    ready_within: Duration,
    lease: &str,
) -> (World, Served) {
    let push = format!(
        "name: hook\non: call.ended\nhttp:\n  url: {hook}\n  json:\n    id: \"<< push.event_id >>\"\n"
    );
    let world = world(&[("hook.yaml", &push)]);
    let served = world
        .serve()
        .token(INGEST)
        .global(&["--store", "postgres", "--node-name", name])
        .env("PUSHWERK_DATABASE_URL", &server.url())
        .env("PUSHWERK_LEASE", lease)
        .ready_within(ready_within)
        .start()
        .await;
    (world, served)
}

fn event(id: &str) -> serde_json::Value {
    serde_json::json!({ "id": id, "type": "call.ended", "time": "2026-01-01T00:00:00Z", "data": {} })
}

/// `GET /readyz`: the status and the body.
async fn readyz(served: &Served) -> (u16, String) {
    // A kept-alive connection may have been closed while the node was
    // stopped: a failed request is no answer (status 0).
    match served.http().get(served.url("/readyz")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// A node stopped (SIGSTOP: a VM stall, a debugger, a long GC-like pause)
/// for longer than its lease is taken for dead, and a restart under its
/// name takes the name over. When the stopped node resumes it must not run
/// beside its successor under the same name (each would deliver the
/// other's jobs, and its events would be accepted into the successor's
/// rows): it says it is not ready, naming why, and accepts nothing; the
/// successor goes on delivering.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_paused_past_its_lease_does_not_run_beside_its_successor() {
    let server = PgServer::start();
    let rx = HttpReceiver::start().await;
    let hook = rx.url("/hook");
    // A short lease (`--lease 3s`): its successor waits out 3 s, not 10.
    let (_wa, mut a) = pg_node_leased(&server, &hook, "a", Duration::from_secs(20), "3s").await;
    a.signal(libc::SIGSTOP);
    // The successor waits out the stopped node's lease (its own 3 s), then runs.
    let (_wb, b) = pg_node(&server, &hook, "a", Duration::from_secs(40)).await;
    a.signal(libc::SIGCONT);
    // Not ready for a moment after any pause (a late heartbeat); then,
    // for good, naming the reason.
    let wanted = "another process took this node's name `a`";
    poll(
        "the resumed node to say that its name was taken",
        Duration::from_secs(10),
        || async {
            let (status, body) = readyz(&a).await;
            (status == 503 && body.contains(wanted)).then_some(())
        },
    )
    .await;
    assert!(a.alive(), "the resumed node exited:\n{}", a.log_text());
    let (status, body) = a.post(&event("to-the-resumed-node")).await;
    assert_ne!(status, 202, "the resumed node accepted an event: {body}");
    assert_eq!(readyz(&b).await.0, 200, "the successor is untouched");
    b.ingest(&event("to-the-successor")).await;
    poll(
        "the successor's delivery",
        Duration::from_secs(20),
        || async {
            rx.requests()
                .iter()
                .any(|r| r.json()["id"] == "to-the-successor")
                .then_some(())
        },
    )
    .await;
    assert!(
        !rx.requests()
            .iter()
            .any(|r| r.json()["id"] == "to-the-resumed-node"),
        "an event refused by the resumed node was delivered"
    );
}

/// Node names are the operator's, but they name rows, show in logs and
/// in answers: quotes, a long name and non-ASCII letters work as any name;
/// an empty or blank name (`PUSHWERK_NODE=` from a template whose variable
/// was not set) or one with a control character (a line break in a log
/// line) is refused at start with the reason, instead of every node of a
/// cluster running as `` until the second is refused.
#[tokio::test(flavor = "multi_thread")]
async fn odd_node_names_work_and_empty_or_control_ones_are_refused() {
    let server = PgServer::start();
    let rx = HttpReceiver::start().await;
    let hook = rx.url("/hook");
    let long = "n".repeat(200);
    for name in ["it's \"quoted\"; --", long.as_str(), "nœud-ü-東京"] {
        let (_world, served) = pg_node(&server, &hook, name, Duration::from_secs(20)).await;
        let id = format!("via-{}", served.port());
        served.ingest(&event(&id)).await;
        poll("the node's delivery", Duration::from_secs(20), || async {
            rx.requests()
                .iter()
                .any(|r| r.json()["id"] == id.as_str())
                .then_some(())
        })
        .await;
    }
    let world = world(&[]);
    for name in ["", "   ", "two\nlines"] {
        let mut cmd = world.command();
        cmd.args(["--store", "postgres", "--node-name", name])
            .env("PUSHWERK_DATABASE_URL", server.url());
        let text = refused(cmd, &[]).await;
        assert!(text.contains("--node-name"), "{name:?}: {text}");
    }
    let mut cmd = world.command();
    cmd.args(["--store", "postgres"])
        .env("PUSHWERK_NODE", "")
        .env("PUSHWERK_DATABASE_URL", server.url());
    let text = refused(cmd, &[]).await;
    assert!(text.contains("--node-name"), "{text}");
}

// ---------------------------------------------------------------------------
// Token files

/// `DATA/admin-token`, `DATA/metrics-token` and `DATA/ingest-token` (one
/// reader for all three) written by hand or restored
/// with `cp` under umask 022 are readable by every local user (the data
/// directory may be 0755): the daemon says so at start, as it does for
/// the key file, naming the file and the fix — and not the token.
#[tokio::test(flavor = "multi_thread")]
async fn token_files_readable_by_other_users_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let world = world(&[]);
    let data = world.data();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let metrics = "a-metrics-token-restored-from-backup";
    let admin = "an-admin-token-restored-from-backup";
    let ingest = "an-ingest-token-restored-from-backup";
    for (file, token, mode) in [
        ("metrics-token", metrics, 0o644),
        ("admin-token", admin, 0o640),
        ("ingest-token", ingest, 0o604),
    ] {
        std::fs::write(data.join(file), format!("{token}\n")).unwrap();
        std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let served = world.serve().generated_token().start().await;
    assert_eq!(served.admin_token(), admin);
    assert_eq!(served.token(), ingest);
    let log = served.log_text();
    for (file, mode) in [
        ("metrics-token", "644"),
        ("admin-token", "640"),
        ("ingest-token", "604"),
    ] {
        let path = data.join(file);
        assert!(
            log.contains(&format!(
                "the token file {} has mode {mode}",
                path.display()
            )),
            "{log}"
        );
        assert!(
            log.contains(&format!("chmod 600 {}", path.display())),
            "{log}"
        );
    }
    assert!(
        !log.contains(metrics) && !log.contains(admin) && !log.contains(ingest),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// Browser sign-in

const MAIL_SCOPE: &str = "offline_access https://graph.microsoft.com/Mail.Send";

/// A daemon with the OAuth account `ms_mail` at `identity`, not following
/// redirects (each hop is looked at).
async fn signin_daemon(identity: &IdentityMock) -> (World, Served) {
    let account = format!(
        "kind: oauth_account\nname: ms_mail\ntoken_url: {}\nclient_id: {}\nclient_secret: mock-secret\nscope: {MAIL_SCOPE}\n",
        identity.token_url(),
        MockConfig::default().client_id
    );
    let world = world(&[("accounts.yaml", &account)]);
    let served = world
        .serve()
        .token(INGEST)
        .args(&["--admin-token", ADMIN])
        .client(http_client().redirect(reqwest::redirect::Policy::none()))
        .start()
        .await;
    (world, served)
}

/// Starts a sign-in of `ms_mail` with the admin token: its begin link.
async fn begin_link(served: &Served) -> String {
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

/// `GET url` (a `localhost` URL is reached on 127.0.0.1) with `cookie`.
async fn get(http: &reqwest::Client, url: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut r = http.get(url.replacen("//localhost:", "//127.0.0.1:", 1));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.send().await.expect("an answer")
}

/// `n` requests of `GET url` with `cookie`, sent at once.
async fn racing(
    http: &reqwest::Client,
    n: usize,
    url: &str,
    cookie: Option<&str>,
) -> Vec<reqwest::Response> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (http, url, cookie) = (http.clone(), url.to_owned(), cookie.map(str::to_owned));
        set.spawn(async move { get(&http, &url, cookie.as_deref()).await });
    }
    set.join_all().await
}

/// Many browsers racing to continue one begin link, then many tabs racing
/// to complete one callback: the link binds exactly one browser, the
/// callback exchanges the code exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn racing_begin_links_and_callbacks_bind_once_and_exchange_once() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let (_world, served) = signin_daemon(&identity).await;
    let link = begin_link(&served).await;
    // The begin page binds nothing: every browser gets it.
    let pages = racing(served.http(), 16, &link, None).await;
    assert!(pages.iter().all(|r| r.status() == 200));
    let id = link[link.find("id=").unwrap() + 3..].to_owned();
    let action = link[..link.find('?').unwrap()].replacen("//localhost:", "//127.0.0.1:", 1);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (http, action, id) = (served.http().clone(), action.clone(), id.clone());
        set.spawn(async move {
            http.post(&action)
                .form(&[("id", id)])
                .send()
                .await
                .expect("an answer")
        });
    }
    let answers = set.join_all().await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        15,
        "{statuses:?}"
    );
    let bound = answers.iter().find(|r| r.status() == 303).unwrap();
    let authorize = bound.headers()["location"].to_str().unwrap().to_owned();
    let cookie = bound.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // The provider sends the browser back with a code.
    let r = get(served.http(), &authorize, None).await;
    assert_eq!(r.status(), 302);
    let callback = r.headers()["location"].to_str().unwrap().to_owned();
    let answers = racing(served.http(), 16, &callback, Some(&cookie)).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(identity.requests().len(), 1, "one code exchange");
}

/// Was: once a browser had continued a begin link, the begin page and its
/// "Continue" refused *that same browser* too ("already continued …
/// start the sign-in again", 409): the back button from the provider's
/// page (wrong account picked), a reload or a second click on "Continue"
/// burned a sign-in link that the person it was sent to could not start
/// again. Now the browser holding the sign-in's cookie (also given for the
/// begin link's path) sees the page and continues to the same authorize
/// URL, keeping its binding; any other browser is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_browser_that_continued_may_come_back_to_the_begin_page() {
    let identity = IdentityMock::start(MockConfig::default()).await;
    let (_world, served) = signin_daemon(&identity).await;
    let link = begin_link(&served).await;
    let id = link[link.find("id=").unwrap() + 3..].to_owned();
    let action = link[..link.find('?').unwrap()].replacen("//localhost:", "//127.0.0.1:", 1);
    let post = |cookie: Option<String>| {
        let (http, action, id) = (served.http().clone(), action.clone(), id.clone());
        async move {
            let mut r = http.post(&action).form(&[("id", id)]);
            if let Some(c) = cookie {
                r = r.header("cookie", c);
            }
            r.send().await.expect("an answer")
        }
    };
    let first = post(None).await;
    assert_eq!(first.status(), 303);
    let authorize = first.headers()["location"].to_str().unwrap().to_owned();
    let set: Vec<String> = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let with_path = |path: &str| {
        set.iter()
            .find(|c| c.contains(&format!("; Path={path};")))
            .unwrap_or_else(|| panic!("a cookie for {path}: {set:?}"))
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    };
    let (callback_cookie, begin_cookie) = (with_path("/oauth/callback"), with_path("/oauth/begin"));
    assert_eq!(callback_cookie, begin_cookie, "one binding, two paths");

    // The same browser, back on the begin page: the page, then on again.
    let r = get(served.http(), &link, Some(&begin_cookie)).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("begin-continue"));
    let again = post(Some(begin_cookie.clone())).await;
    assert_eq!(again.status(), 303, "{:?}", again.text().await);
    assert_eq!(again.headers()["location"].to_str().unwrap(), authorize);
    assert!(
        again.headers().get("set-cookie").is_none(),
        "its binding is kept"
    );

    // Any other browser: refused, as before.
    let (name, _) = begin_cookie.split_once('=').unwrap();
    let forged = format!("{name}={}", "0".repeat(64));
    for cookie in [None, Some(forged.clone())] {
        let r = get(served.http(), &link, cookie.as_deref()).await;
        assert_eq!(r.status(), 409);
        let r = post(cookie).await;
        assert_eq!(r.status(), 409);
        assert!(r.headers().get("set-cookie").is_none());
    }

    // It completes in that browser, and both cookies are cleared.
    let r = get(served.http(), &authorize, None).await;
    assert_eq!(r.status(), 302);
    let callback = r.headers()["location"].to_str().unwrap().to_owned();
    let done = get(served.http(), &callback, Some(&callback_cookie)).await;
    assert_eq!(done.status(), 200);
    let cleared: Vec<String> = done
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    for path in ["/oauth/callback", "/oauth/begin"] {
        assert!(
            cleared
                .iter()
                .any(|c| c.starts_with(&format!("{name}=; Path={path}; Max-Age=0"))),
            "{cleared:?}"
        );
    }
    // Used: the link leads nowhere now, cookie or not.
    let r = get(served.http(), &link, Some(&begin_cookie)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(post(Some(begin_cookie)).await.status(), 400);
}

/// The path of `--public-url` becomes the `Path` attribute of the sign-in
/// cookie: a `;` in it would end the attribute and start another one
/// (`…/a;Domain=other.example` — the browser then drops the cookie, and
/// every sign-in is refused as "not started in this browser"). Such a URL
/// is refused at start, naming the flag; a `;` written percent-encoded is
/// no attribute separator and works.
#[tokio::test(flavor = "multi_thread")]
async fn a_public_url_whose_path_would_end_the_cookie_attribute_is_refused() {
    let world = world(&[]);
    let text = refused_start(
        &world,
        &[
            "--public-url",
            "https://push.example.com/a;Domain=other.example",
        ],
    )
    .await;
    assert!(text.contains("--public-url"), "{text}");
    let served = world
        .serve()
        .token(INGEST)
        .args(&["--public-url", "https://push.example.com/a%3Bb"])
        .start()
        .await;
    drop(served);
}

/// Two processes started at the same instant under one node name (a
/// doubled systemd unit, a script run twice): exactly one runs, the other
/// exits naming the node — the database's unique key on the name decides,
/// not the nodes' clocks.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_started_at_once_under_one_name_leave_one_running() {
    let server = PgServer::start();
    let worlds = [world(&[]), world(&[])];
    let mut children = Twins(
        worlds
            .iter()
            .map(|w| {
                let log = w.root().join("twin.log");
                let child = w
                    .command()
                    .args(["--store", "postgres", "--node-name", "twin"])
                    .args(["serve", "--listen", "127.0.0.1:0"])
                    .env("PUSHWERK_DATABASE_URL", server.url())
                    .env("PUSHWERK_INGEST_TOKEN", INGEST)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .unwrap();
                (child, w.data(), log)
            })
            .collect(),
    );
    let children = &mut children.0;
    let (loser, status) = poll("one of the twins to exit", Duration::from_secs(30), || {
        let exited = children
            .iter_mut()
            .enumerate()
            .find_map(|(n, (c, _, _))| c.try_wait().unwrap().map(|s| (n, s)));
        async move { exited }
    })
    .await;
    let log = std::fs::read_to_string(&children[loser].2).unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("another pushwerk node named `twin`"), "{log}");
    let (survivor, data, log) = &mut children[1 - loser];
    let pid = survivor.id();
    let port = poll("the survivor's port", Duration::from_secs(20), || async {
        announced_port(data, pid, log)
    })
    .await;
    let http = http_client().build().unwrap();
    poll(
        "the survivor to be ready",
        Duration::from_secs(20),
        || async {
            let r = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    assert!(
        survivor.try_wait().unwrap().is_none(),
        "the survivor exited"
    );
}

/// Processes started by a test with their data directory and log; killed
/// when dropped (a failed assertion included).
struct Twins(Vec<(std::process::Child, std::path::PathBuf, std::path::PathBuf)>);

impl Drop for Twins {
    fn drop(&mut self) {
        for (child, _, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
