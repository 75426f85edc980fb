//! The real `pushwerk` binary as a child process: a folder and a data
//! directory ([`World`]), `pushwerk serve` on a free loopback port
//! ([`Served`], killed when dropped), and waiting on a condition
//! ([`poll`]) instead of sleeping.
//!
//! The kit does not link the `pushwerk` library: a test passes the binary
//! (`env!("CARGO_BIN_EXE_pushwerk")`, see [`Pushwerk::new`]) and the kit
//! runs it as a user would.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Environment variables that change what the binary does: removed from
/// every command the kit builds, so a developer's shell cannot change what a
/// test sees (a test sets what it needs afterwards).
pub const CLEARED_ENV: [&str; 25] = [
    "MS_MAIL_CLIENT_SECRET",
    "MS_ADS_CLIENT_SECRET",
    "CRM_CLIENT_SECRET",
    "BING_ADS_DEVELOPER_TOKEN",
    "BING_ADS_CUSTOMER_ID",
    "BING_ADS_ACCOUNT_ID",
    "PUSHWERK_DIR",
    "PUSHWERK_DATA",
    "PUSHWERK_STORE",
    "PUSHWERK_LISTEN",
    "PUSHWERK_INGEST_TOKEN",
    "PUSHWERK_ADMIN_TOKEN",
    "PUSHWERK_METRICS_TOKEN",
    "PUSHWERK_PUBLIC_URL",
    "PUSHWERK_SERVER",
    "PUSHWERK_KEY",
    "PUSHWERK_KEY_FILE",
    "PUSHWERK_LOG",
    "PUSHWERK_LOG_FORMAT",
    "PUSHWERK_GRAPH_URL",
    "PUSHWERK_BING_ADS_URL",
    "PUSHWERK_BING_BATCH_MAX",
    "PUSHWERK_BING_LINGER",
    "PUSHWERK_TEST_PANIC_PUSH",
    "RUST_LOG",
];

/// The ingest token a [`Served`] daemon gets unless the test chooses one.
pub const INGEST_TOKEN: &str = "testkit-ingest-token-0123456789";

/// The binary under test and the config directory (`XDG_CONFIG_HOME`) its
/// processes get, so the token key pushwerk generates on first use never
/// lands in the user's `~/.config`.
#[derive(Debug, Clone)]
pub struct Pushwerk {
    bin: PathBuf,
    config_home: PathBuf,
}

impl Pushwerk {
    /// The binary at `bin` (in a test: `env!("CARGO_BIN_EXE_pushwerk")`)
    /// with `config_home` as its `XDG_CONFIG_HOME` (not made here: pushwerk
    /// makes it when it first writes its key, which some tests check).
    pub fn new(bin: impl Into<PathBuf>, config_home: impl Into<PathBuf>) -> Pushwerk {
        Pushwerk {
            bin: bin.into(),
            config_home: config_home.into(),
        }
    }

    /// The binary's path.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The config directory its processes get.
    pub fn config_home(&self) -> &Path {
        &self.config_home
    }

    /// The binary as a command: [`CLEARED_ENV`] removed, the config home set
    /// (a later `.env("XDG_CONFIG_HOME", …)` replaces it).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        for name in CLEARED_ENV {
            cmd.env_remove(name);
        }
        cmd.env("XDG_CONFIG_HOME", &self.config_home);
        cmd
    }
}

/// A port nothing listens on at the moment (bound and released). Another
/// test may take it afterwards, so a daemon is never started on it
/// ([`ServeBuilder::start`] lets the system pick), and a test that needs a
/// port which stays closed (or that it opens later) reserves one with
/// [`ClosedPort`](crate::net::ClosedPort).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// The port the daemon with process id `pid` announced: `DATA/daemon.json`
/// when it names this pid (a killed predecessor's file names another), else
/// the `… on http://127.0.0.1:PORT` status line of its log `log`. `None`
/// until it has bound its port: the way a test that starts `pushwerk serve
/// --listen 127.0.0.1:0` itself learns where it listens.
pub fn announced_port(data: &Path, pid: u32, log: &Path) -> Option<u16> {
    let from_file = std::fs::read_to_string(data.join("daemon.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .filter(|v| v["pid"].as_u64() == Some(u64::from(pid)))
        .and_then(|v| v["url"].as_str().map(str::to_owned));
    let from_log = || {
        let log = std::fs::read_to_string(log).ok()?;
        let at = log.find(" on http://127.0.0.1:")? + " on http://127.0.0.1:".len();
        let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
        Some(format!("http://127.0.0.1:{digits}"))
    };
    let url = from_file.or_else(from_log)?;
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// Calls `check` every 50 ms until it gives `Some`, or panics after
/// `timeout` naming `what`: the way to wait for the daemon to have done
/// something, instead of sleeping and then looking.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP client for loopback (`http://`) with rustls' `ring` provider
/// installed first, as pushwerk does (reqwest is built without a default
/// provider in this workspace and would panic otherwise).
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// Standard output and error of a finished command, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The value of `series` in a Prometheus text exposition, if shown.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A folder (`pushes/`) and a data directory (`data/`) in a temporary
/// directory, and the daemons started on them.
#[derive(Debug)]
pub struct World {
    tmp: tempfile::TempDir,
    pushwerk: Pushwerk,
    starts: AtomicUsize,
    env: Vec<(String, String)>,
}

impl World {
    /// A new world with `files` (name, text) written into `pushes/`.
    pub fn new(pushwerk: &Pushwerk, files: &[(&str, &str)]) -> World {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(tmp.path().join("pushes")).expect("mkdir pushes");
        std::fs::create_dir_all(tmp.path().join("data")).expect("mkdir data");
        let world = World {
            tmp,
            pushwerk: pushwerk.clone(),
            starts: AtomicUsize::new(0),
            env: Vec::new(),
        };
        for (name, text) in files {
            world.write(name, text);
        }
        world
    }

    /// A world in `tmp` as the test made it (`pushes/` and `data/` inside
    /// it, or not yet: the daemon makes its data directory), its commands
    /// with `config/` there as their config directory.
    pub fn in_dir(pushwerk: &Pushwerk, tmp: tempfile::TempDir) -> World {
        let config = tmp.path().join("config");
        World {
            tmp,
            pushwerk: Pushwerk::new(pushwerk.bin(), config),
            starts: AtomicUsize::new(0),
            env: Vec::new(),
        }
    }

    /// A new world whose commands get their own config directory
    /// (`config/` beside `pushes/` and `data/`, made here): a token key of their own,
    /// for tests about the key.
    pub fn with_config_home(pushwerk: &Pushwerk, files: &[(&str, &str)]) -> World {
        let mut world = World::new(pushwerk, files);
        let config = world.root().join("config");
        std::fs::create_dir_all(&config).expect("mkdir config");
        world.pushwerk = Pushwerk::new(pushwerk.bin(), config);
        world
    }

    /// Sets an environment variable for every command of this world (e.g.
    /// `PUSHWERK_STORE`), the daemon's included.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// Keeps the temporary directory (pushes, data, daemon logs) instead of
    /// removing it, and returns its path.
    pub fn keep(self) -> PathBuf {
        self.tmp.keep()
    }

    /// The temporary directory holding `pushes/`, `data/` and the logs.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The push folder (`--dir`).
    pub fn pushes(&self) -> PathBuf {
        self.tmp.path().join("pushes")
    }

    /// The data directory (`--data`).
    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// Writes (or replaces) `name` in the push folder.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.pushes().join(name), text).expect("write push file");
    }

    /// `pushwerk --dir … --data …` as a command, environment cleared.
    pub fn command(&self) -> Command {
        let mut cmd = self.pushwerk.command();
        cmd.arg("--dir")
            .arg(self.pushes())
            .arg("--data")
            .arg(self.data());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `pushwerk --dir … --data … args…` with `env`, run off the async workers.
    pub async fn pushwerk(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command();
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        tokio::task::spawn_blocking(move || cmd.output().expect("pushwerk runs"))
            .await
            .expect("join")
    }

    /// `pushwerk --dir … --data … args…` with `input` on standard input
    /// (closed at once if `None`), run off the async workers.
    pub async fn pushwerk_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let input = input.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().expect("pushwerk runs");
            {
                use std::io::Write;
                let mut pipe = child.stdin.take().expect("stdin");
                if let Some(text) = input {
                    pipe.write_all(text.as_bytes()).expect("write stdin");
                }
            }
            child.wait_with_output().expect("output")
        })
        .await
        .expect("join")
    }

    /// `pushwerk oauth import ACCOUNT --file F` with `tokens`; panics if it fails.
    pub async fn import(&self, account: &str, tokens: &Value) {
        let file = self.tmp.path().join(format!("{account}-tokens.json"));
        std::fs::write(&file, tokens.to_string()).expect("write tokens");
        let out = self
            .pushwerk(
                &["oauth", "import", account, "--file", file.to_str().unwrap()],
                &[],
            )
            .await;
        assert!(out.status.success(), "oauth import: {}", text(&out));
    }

    /// A daemon to start on this world (see [`ServeBuilder`]).
    pub fn serve(&self) -> ServeBuilder<'_> {
        ServeBuilder {
            world: self,
            global: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            token: Some(INGEST_TOKEN.to_owned()),
            client: None,
            ready_within: Duration::from_secs(15),
        }
    }
}

/// How to start `pushwerk [global…] serve --listen 127.0.0.1:PORT args…`.
pub struct ServeBuilder<'w> {
    world: &'w World,
    global: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    token: Option<String>,
    client: Option<reqwest::ClientBuilder>,
    ready_within: Duration,
}

impl ServeBuilder<'_> {
    /// Options before `serve` (e.g. `--log info`).
    pub fn global(mut self, args: &[&str]) -> Self {
        self.global.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Options after `serve --listen …`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// An environment variable of the daemon.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The ingest token (`PUSHWERK_INGEST_TOKEN`; default [`INGEST_TOKEN`]).
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// No ingest token given: the daemon generates one into
    /// `DATA/ingest-token`, which [`Served::token`] then holds.
    pub fn generated_token(mut self) -> Self {
        self.token = None;
        self
    }

    /// The HTTP client the test talks to the daemon with (default: no
    /// redirects followed is not assumed; reqwest's defaults).
    pub fn client(mut self, client: reqwest::ClientBuilder) -> Self {
        self.client = Some(client);
        self
    }

    /// How long it may take to become ready (default 15 s).
    pub fn ready_within(mut self, limit: Duration) -> Self {
        self.ready_within = limit;
        self
    }

    /// Starts the daemon on a port the system picks (`--listen
    /// 127.0.0.1:0`), learns the port from the daemon's own announcement
    /// (`DATA/daemon.json` with this process's pid, else its status line)
    /// and waits until `/readyz` answers 200. Never a port chosen before
    /// the daemon binds it: another test could take it meanwhile, and this
    /// test would then talk to that test's server.
    pub async fn start(mut self) -> Served {
        let http = self
            .client
            .take()
            .unwrap_or_else(http_client)
            .build()
            .expect("HTTP client");
        let n = self.world.starts.fetch_add(1, Ordering::SeqCst);
        let log = self.world.root().join(format!("serve-{n}.log"));
        let mut cmd = self.world.command();
        cmd.args(&self.global)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(token) = &self.token {
            cmd.env("PUSHWERK_INGEST_TOKEN", token);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut served = Served {
            child: Some(cmd.spawn().expect("pushwerk serve starts")),
            // Learnt from the daemon's announcement in `wait_ready`.
            port: 0,
            log,
            http,
            token: self.token.clone().unwrap_or_default(),
            data: self.world.data(),
            metrics_token: self
                .args
                .iter()
                .position(|a| a == "--metrics-token")
                .and_then(|i| self.args.get(i + 1).cloned())
                .or_else(|| {
                    self.env
                        .iter()
                        .find(|(k, _)| k == "PUSHWERK_METRICS_TOKEN")
                        .map(|(_, v)| v.clone())
                }),
        };
        assert!(
            served.wait_ready(self.ready_within).await,
            "the daemon exited before it was ready:\n{}",
            served.log_text()
        );
        if self.token.is_none() {
            served.token = std::fs::read_to_string(served.data.join("ingest-token"))
                .expect("DATA/ingest-token")
                .trim()
                .to_owned();
        }
        served
    }
}

/// A running `pushwerk serve`; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Served {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    http: reqwest::Client,
    token: String,
    data: PathBuf,
    /// The metrics token it was given (else it is in `DATA/metrics-token`).
    metrics_token: Option<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Served {
    /// The process (panics once it was stopped).
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the daemon runs")
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// What the daemon wrote to standard error so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The client the test talks to it with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The ingest token it accepts.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The admin token it generated into the data directory (or was given).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin-token"))
            .map(|t| t.trim().to_owned())
            .expect("DATA/admin-token")
    }

    async fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child().try_wait() {
                self.child = None;
                return false;
            }
            if self.port == 0 {
                match self.announced_port() {
                    Some(port) => self.port = port,
                    None => {
                        tokio::time::sleep(Duration::from_millis(25)).await;
                        continue;
                    }
                }
            }
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the daemon was not ready within {limit:?}:\n{}",
            self.log_text()
        );
    }

    /// The port this process announced (see [`announced_port`]).
    fn announced_port(&self) -> Option<u16> {
        let pid = self.child.as_ref()?.id();
        announced_port(&self.data, pid, &self.log)
    }

    /// Sends `signal` to the process.
    pub fn signal(&mut self, signal: libc::c_int) {
        let pid = self.child().id() as libc::pid_t;
        // SAFETY: `pid` is our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({signal})");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    /// SIGTERM, then up to `within` for a clean exit: its status, or `None`
    /// when it had to be killed.
    pub async fn stop(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                let mut child = self.child.take().expect("the daemon runs");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes the process over (it is then no longer killed on drop).
    pub fn take_child(&mut self) -> Child {
        self.child.take().expect("the daemon runs")
    }

    /// `kill -9`, and reaps the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the daemon runs");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// SIGTERM, then waits (up to `within`) for the process to exit.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {within:?} of SIGTERM:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The status and body of an answer (JSON if it is, else a JSON string).
    pub async fn answer(r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// `POST /v1/events` with the ingest token.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/v1/events"))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("POST /v1/events");
        Self::answer(r).await
    }

    /// `POST /v1/events` with this body text and `Authorization` value.
    pub async fn post_raw(&self, body: String, authorization: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/v1/events"))
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /v1/events");
        Self::answer(r).await
    }

    /// Posts events (one or a JSON array) and expects 202; returns the answer.
    pub async fn ingest(&self, body: &Value) -> Value {
        let (status, answer) = self.post(body).await;
        assert_eq!(status, 202, "{answer}\n{}", self.log_text());
        answer
    }

    /// A GET with the ingest token: status and body.
    pub async fn get_raw(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Self::answer(r).await
    }

    /// A GET with the ingest token; expects 200.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.get_raw(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The delivery log (`/v1/deliveries?limit=10000&QUERY`), newest first.
    pub async fn deliveries(&self, query: &str) -> Vec<Value> {
        self.get(&format!("/v1/deliveries?limit=10000&{query}"))
            .await["deliveries"]
            .as_array()
            .expect("deliveries array")
            .clone()
    }

    /// The dead letters (`/v1/dead-letters?QUERY`).
    pub async fn dead_letters(&self, query: &str) -> Vec<Value> {
        self.get(&format!("/v1/dead-letters?{query}")).await["dead_letters"]
            .as_array()
            .expect("dead letters array")
            .clone()
    }

    /// The metrics token `/metrics` takes: the one it was given, else the
    /// one it generated into `DATA/metrics-token`; `None` when there is
    /// neither (`--metrics-public`).
    pub fn metrics_token(&self) -> Option<String> {
        self.metrics_token.clone().or_else(|| {
            std::fs::read_to_string(self.data.join("metrics-token"))
                .ok()
                .map(|t| t.trim().to_owned())
        })
    }

    /// `GET /metrics` (Prometheus text), with the metrics token if there is one.
    pub async fn metrics(&self) -> String {
        let mut request = self.http.get(self.url("/metrics"));
        if let Some(token) = self.metrics_token() {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.expect("GET /metrics");
        assert_eq!(r.status(), 200);
        r.text().await.expect("metrics text")
    }

    /// Signs in to the console with `admin`: the session cookie (expects
    /// `303`; needs a client that follows no redirects).
    pub async fn console_login(&self, admin: &str) -> String {
        let r = self
            .http
            .post(self.url("/login"))
            .form(&[("token", admin)])
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 303, "login refused");
        r.headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a session cookie")
            .split(';')
            .next()
            .expect("name=value")
            .to_owned()
    }

    /// A console page with the session `cookie`: status and body.
    pub async fn page(&self, cookie: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .expect("page");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// The value of one series of `/metrics` (e.g. `pushwerk_reloads_total`),
    /// 0 where the series is not shown yet (a counter never incremented).
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics().await, series).unwrap_or(0.0)
    }
}
