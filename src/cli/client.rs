//! The command line's client of a running daemon: while `pushwerk serve`
//! holds a data directory's store, commands on that directory (`oauth …`,
//! `deliveries`, `replay`) go through its API instead, so that nobody has
//! to stop the daemon to mend an account.
//!
//! The daemon announces itself in `DATA/daemon.json` (mode 0600, removed
//! when it exits); the CLI uses it only when the store is in fact locked,
//! so a file left behind by a killed daemon changes nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;

use crate::api::{DaemonInfo, ErrorBody};
use crate::store::{StoreChoice, StoreError};

/// Where a running daemon announces its API.
pub fn daemon_file(data: &Path) -> PathBuf {
    data.join("daemon.json")
}

/// `DATA/daemon.json` while the daemon runs; removed when dropped.
#[derive(Debug)]
pub struct Announcement {
    path: PathBuf,
}

impl Drop for Announcement {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `DATA/daemon.json` (0600) naming the API at `url`.
pub fn announce(data: &Path, url: &str) -> anyhow::Result<Announcement> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = daemon_file(data);
    let info = DaemonInfo {
        url: url.to_owned(),
        pid: std::process::id(),
    };
    // Written beside and renamed, so that a reader never sees half a file.
    let tmp = data.join(".daemon.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(serde_json::to_string(&info)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Announcement { path })
}

/// The running daemon that holds the store of `data`, if one does: its
/// announcement exists and the store is locked.
pub fn running_daemon(data: &Path, store: StoreChoice) -> anyhow::Result<Option<DaemonInfo>> {
    let path = daemon_file(data);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // No store, no daemon serving it (and no store made just to find out),
    // but for a node on PostgreSQL: it keeps no store in its data
    // directory, so no lock tells whether it runs; its announcement counts
    // while its process lives.
    if !crate::store::holds_store(data) {
        if crate::store::postgres::settings().is_none() {
            return Ok(None);
        }
        let info: DaemonInfo = serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged", path.display()))?;
        return Ok((alive(info.pid) && runs_this_program(info.pid)).then_some(info));
    }
    match crate::store::open(data, store) {
        // Nobody holds the store: the announcement is left from a daemon
        // that was killed.
        Ok(_) => Ok(None),
        Err(StoreError::Locked(_)) => {
            let info: DaemonInfo = serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged", path.display()))?;
            Ok(Some(info))
        }
        Err(e) => Err(e.into()),
    }
}

/// The default of `--server`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8787";

/// The API to ask for `--server` `given`: when it is the default, the
/// daemon announced in `DATA/daemon.json` (if its process is alive), so
/// that `deliveries`, `replay` and `jobs` find the daemon of `--data`
/// whatever address it listens on; else `given`.
pub fn server_url(data: &Path, given: &str) -> String {
    if given.trim_end_matches('/') != DEFAULT_SERVER {
        return given.to_owned();
    }
    std::fs::read_to_string(daemon_file(data))
        .ok()
        .and_then(|t| serde_json::from_str::<DaemonInfo>(&t).ok())
        .filter(|i| alive(i.pid))
        .map(|i| i.url)
        .unwrap_or_else(|| given.to_owned())
}

/// Whether process `pid` runs this very program (for a node on
/// PostgreSQL, where no store lock shows that the announced daemon is still
/// ours: a stale `daemon.json` whose pid was reused by another program
/// must not get the data directory's token). Another user's process cannot
/// be inspected, and counts as not ours.
fn runs_this_program(pid: u32) -> bool {
    let theirs = std::fs::read_link(format!("/proc/{pid}/exe"));
    matches!((theirs, std::env::current_exe()), (Ok(a), Ok(b)) if a == b)
}

/// Whether process `pid` exists (signal 0 checks without sending one).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A client of the daemon's API with a bearer token.
#[derive(Debug)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// Reads a token: the environment variable `env`, else `DATA/file`.
fn read_token(data: &Path, env: &str, file: &str) -> anyhow::Result<String> {
    if let Some(t) = std::env::var(env).ok().filter(|t| !t.trim().is_empty()) {
        return Ok(t.trim().to_owned());
    }
    let path = data.join(file);
    // The daemon's own reader: a FIFO, a huge file or a two-line token is
    // an error naming the file here too, not a hang or a bad header.
    match crate::secret::token_file::token_from_file(&path) {
        Ok(Some(token)) => Ok(token),
        Ok(None) => bail!("no {env} and {} is missing or blank", path.display()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("no {env} and cannot use its file"))),
    }
}

/// The queue of the data directory itself, for `deliveries`, `jobs` and
/// `replay` when no daemon serves it (issue #13: the user never has to
/// start or stop a daemon to look or mend): `None` when a daemon holds the
/// store (its API answers), when a token in the environment names another
/// daemon to ask, or when `data` holds no store.
pub fn local_queue(data: &Path) -> anyhow::Result<Option<crate::delivery::Queue>> {
    let token_given = ["PUSHWERK_INGEST_TOKEN", "PUSHWERK_ADMIN_TOKEN"]
        .iter()
        .any(|e| std::env::var(e).is_ok_and(|t| !t.trim().is_empty()));
    if token_given || !crate::store::holds_store(data) {
        return Ok(None);
    }
    match crate::store::open(data, StoreChoice::Auto) {
        Ok(store) => Ok(Some(crate::delivery::Queue::new(store))),
        Err(StoreError::Locked(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Where `deliveries`, `jobs` and `replay` send their request, and with
/// which token: `PUSHWERK_INGEST_TOKEN` or `PUSHWERK_ADMIN_TOKEN` (the
/// first set) to the `--server` asked for (the default is the daemon
/// announced in `DATA/daemon.json`); else a token read from the data
/// directory (`ingest-token`, the least privilege that does, else
/// `admin-token`), but only to the daemon that holds this data directory
/// now. A token from DATA never goes to whatever happens to listen on the
/// default port (a stopped daemon's port taken by another local user).
pub fn api_target(data: &Path, given: &str) -> anyhow::Result<(String, String)> {
    for env in ["PUSHWERK_INGEST_TOKEN", "PUSHWERK_ADMIN_TOKEN"] {
        if let Some(t) = std::env::var(env).ok().filter(|t| !t.trim().is_empty()) {
            return Ok((server_url(data, given), t.trim().to_owned()));
        }
    }
    let Some(info) = running_daemon(data, StoreChoice::Auto)? else {
        bail!(
            "no daemon is serving {}: start `pushwerk serve`, or ask another daemon with --server URL and its token in PUSHWERK_INGEST_TOKEN",
            data.display()
        );
    };
    let given = given.trim_end_matches('/');
    if given != DEFAULT_SERVER && given != info.url.trim_end_matches('/') {
        bail!(
            "the tokens in {} belong to the daemon at {}, not {given}: set PUSHWERK_INGEST_TOKEN to ask that one",
            data.display(),
            info.url
        );
    }
    for file in ["ingest-token", "admin-token"] {
        if let Some(t) = crate::secret::token_file::token_from_file(&data.join(file))? {
            return Ok((info.url, t));
        }
    }
    bail!(
        "no token for the daemon's API: set PUSHWERK_INGEST_TOKEN or PUSHWERK_ADMIN_TOKEN, or run where {} is readable",
        data.join("ingest-token").display()
    )
}

impl ApiClient {
    /// A client of the API at `base` with the admin token
    /// (`PUSHWERK_ADMIN_TOKEN` or `DATA/admin-token`).
    pub fn admin(data: &Path, base: &str) -> anyhow::Result<ApiClient> {
        ApiClient::new(
            base,
            read_token(data, "PUSHWERK_ADMIN_TOKEN", "admin-token")?,
        )
    }

    /// A client of the API at `base` with the ingest token
    /// (`PUSHWERK_INGEST_TOKEN` or `DATA/ingest-token`).
    pub fn ingest(data: &Path, base: &str) -> anyhow::Result<ApiClient> {
        ApiClient::new(
            base,
            read_token(data, "PUSHWERK_INGEST_TOKEN", "ingest-token")?,
        )
    }

    fn new(base: &str, token: String) -> anyhow::Result<ApiClient> {
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: crate::net::http_client()
                // `send` may wait between attempts as the target asks.
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(15 * 60))
                .build()?,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with an optional body (JSON, or text for token
    /// imports); the answer read as `T`, or the daemon's error as an error.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Body>,
    ) -> anyhow::Result<T> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        request = match body {
            Some(Body::Json(v)) => request.json(&v),
            Some(Body::Text(t)) => request.header("content-type", "text/plain").body(t),
            None => request,
        };
        self.rt.block_on(async {
            let r = request
                .send()
                .await
                .with_context(|| format!("cannot reach the daemon at {}", self.base))?;
            let status = r.status();
            let bytes = r.bytes().await?;
            if !status.is_success() {
                let reason = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| {
                        String::from_utf8_lossy(&bytes).chars().take(300).collect()
                    });
                bail!("the daemon answered {status}: {reason}");
            }
            serde_json::from_slice(&bytes).with_context(|| {
                format!("the daemon's answer to {method} {path} is not what this pushwerk expects")
            })
        })
    }
}

/// A request body.
pub enum Body {
    /// JSON.
    Json(serde_json::Value),
    /// Text (a token response or refresh token; never logged).
    Text(String),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Json(_) => f.write_str("Body::Json(…)"),
            Body::Text(_) => f.write_str("Body::Text(…)"),
        }
    }
}
