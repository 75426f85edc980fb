//! The clap definition of the command line: every command, flag and help
//! text, and the parsers of flag values. Kept apart from the code that runs
//! the commands so that the interface reads as one piece (and `install`
//! renders the man page and completions from it).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::engine::output::Format;
use crate::store::StoreChoice;

use super::{install, store_cmd};

/// pushwerk: push configurations, executed in the open.
#[derive(Debug, Parser)]
#[command(name = "pushwerk", version = install::LONG_VERSION, about)]
pub struct Cli {
    /// The folder of push and account definitions.
    #[arg(long, global = true, env = "PUSHWERK_DIR", default_value = "pushes")]
    pub dir: PathBuf,
    /// The data directory (token state; created 0700).
    #[arg(long, global = true, env = "PUSHWERK_DATA", default_value = "data")]
    pub data: PathBuf,
    /// The store: in the data directory `auto` (what it holds; redb for a
    /// new one), `sled` or `redb`; or `postgres`, a PostgreSQL database
    /// several nodes share, which needs --database-url (or
    /// PUSHWERK_DATABASE_URL). See BENCHMARKS.md for how they compare.
    #[arg(long, global = true, env = "PUSHWERK_STORE", default_value = "auto", value_parser = parse_store)]
    pub store: StoreChoice,
    /// With `--store postgres` (and `store migrate` to or from
    /// `postgres`): the database several nodes share
    /// (`postgres://user:password@host:port/db`; no TLS).
    #[arg(
        long,
        global = true,
        env = "PUSHWERK_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// With `--store postgres`, for `serve`: this node's name, unique among
    /// the nodes (default: host name and process id). A node restarted
    /// under the same name takes its queued jobs back at once; others wait
    /// for its lease. A second process under the name of a running node
    /// is refused; after a crash the restarted node first waits out the
    /// old lease (`serve --lease`, 10 s). Other commands always use the
    /// default.
    #[arg(long, global = true, env = "PUSHWERK_NODE", value_parser = parse_node_name)]
    pub node_name: Option<String>,
    /// The key file that encrypts token state (generated 0600 if missing).
    /// Without it: PUSHWERK_KEY, PUSHWERK_KEY_FILE, else
    /// $XDG_CONFIG_HOME/pushwerk/key (~/.config/pushwerk/key).
    #[arg(long, global = true)]
    pub key_file: Option<PathBuf>,
    /// Log verbosity (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter).
    #[arg(long, global = true, env = "PUSHWERK_LOG", default_value = "warn")]
    pub log: String,
    /// Log line format: every line on stderr, the daemon's included.
    #[arg(long, global = true, env = "PUSHWERK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and check every file in the folder; report all problems as file:line:col.
    Check {
        /// The folder (default: --dir), or one file (checked with its folder's accounts).
        folder: Option<PathBuf>,
        /// Fail on warnings too (a missing `${env:…}` secret, a literal secret).
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Render a push for an event and print the exact request, without sending it.
    DryRun {
        /// A push name in the folder, or a YAML file holding one push.
        push: String,
        /// The event, a JSON file (`{"id","type","time","data"}`); optional for `schedule:` pushes.
        #[arg(long)]
        event: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Print tokens and `${env:…}` / `${file:…}` values instead of placeholders.
        #[arg(long)]
        show_secrets: bool,
        /// Render as if it were this time (RFC 3339), for reproducible output.
        #[arg(long)]
        now: Option<DateTime<Utc>>,
    },
    /// Send one push now, through the same path the daemon uses, and print the outcome.
    /// Exit status: 0 delivered (or skipped), 1 failed, 75 to be retried later.
    Send {
        /// A push name in the folder, or a YAML file holding one push.
        push: String,
        /// The event, a JSON file; optional for `schedule:` pushes. Repeat
        /// it to send several events together (Bing conversions share requests).
        #[arg(long)]
        event: Vec<PathBuf>,
        /// Attempts at most (1 to 100), waiting between them as the target asks (Retry-After) or with backoff.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
        attempts: u32,
    },
    /// List every parameter a push can use, with type, source and a sample value.
    Params {
        /// Take `event.*` fields and samples from this event (JSON file).
        #[arg(long)]
        event: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Run the daemon: watch the folder, ingest events over HTTP, fire cron
    /// pushes, deliver with retries, keep the delivery log.
    Serve {
        /// Address of the HTTP API (ingest, status, health, metrics).
        #[arg(long, env = "PUSHWERK_LISTEN", default_value = "127.0.0.1:8787")]
        listen: std::net::SocketAddr,
        /// Bearer token for the API (default: generated into DATA/ingest-token).
        #[arg(long, env = "PUSHWERK_INGEST_TOKEN", hide_env_values = true)]
        ingest_token: Option<String>,
        /// Bearer token for the account endpoints and sign-in (default:
        /// generated into DATA/admin-token); also accepted wherever the ingest token is.
        #[arg(long, env = "PUSHWERK_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Bearer token for /metrics, for a scraper (default: generated into
        /// DATA/metrics-token); the admin token is accepted there too.
        #[arg(long, env = "PUSHWERK_METRICS_TOKEN", hide_env_values = true)]
        metrics_token: Option<String>,
        /// Serve /metrics without a token (push and account names, counts):
        /// only for a listener that scrapers alone can reach.
        #[arg(long)]
        metrics_public: bool,
        /// The daemon's URL as browsers reach it (behind a proxy): browser
        /// sign-ins return to PUBLIC_URL/oauth/callback (default: the listen address).
        #[arg(long, env = "PUSHWERK_PUBLIC_URL")]
        public_url: Option<String>,
        /// Deliveries in flight at most.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        concurrency: u64,
        /// Queued jobs held in memory at most; beyond, they wait in the store
        /// and are read back as the backlog drains (bounds memory).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        resident_jobs: u64,
        /// How long accepted event ids are remembered: an id resent within
        /// this window is a duplicate, after it a new event.
        /// From 1 minute to 10 years.
        #[arg(long, default_value = "7d", value_parser = parse_event_window)]
        event_window: std::time::Duration,
        /// How long in-flight deliveries may finish after SIGTERM (0s to 1h).
        #[arg(long, default_value = "10s", value_parser = parse_grace)]
        grace: std::time::Duration,
        /// The first retry wait when a target does not say when to retry
        /// (no `Retry-After`); each further wait doubles, up to 5 minutes,
        /// drawn from the upper half of its step. 100ms to 5m.
        #[arg(long, env = "PUSHWERK_RETRY_BACKOFF", default_value = "1s", value_parser = parse_retry_backoff)]
        retry_backoff: std::time::Duration,
        /// With `--store postgres`: how long this node's jobs stay its own
        /// after its last heartbeat (one a second) before other nodes take
        /// them over — the fail-over time after a crash, and how long a
        /// restart under a crashed node's name waits. Each node's lease is
        /// kept beside its heartbeat, and the others judge it by its own,
        /// so nodes may differ. 3s to 10m.
        #[arg(long, env = "PUSHWERK_LEASE", default_value = "10s", value_parser = parse_lease)]
        lease: std::time::Duration,
        /// HTTP connections open at most; more wait until one closes.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_connections: u64,
        /// How long a client may take to send a request head (and an idle
        /// connection stays open). 1s to 10m.
        #[arg(long, default_value = "10s", value_parser = parse_header_timeout)]
        header_timeout: std::time::Duration,
        /// How long a client may take to send a request body (1s to 1h).
        #[arg(long, default_value = "30s", value_parser = parse_body_timeout)]
        body_timeout: std::time::Duration,
    },
    /// The delivery log of a running daemon (newest first).
    Deliveries {
        /// Only dead letters and failed attempts.
        #[arg(long)]
        failed: bool,
        /// Only this push.
        #[arg(long)]
        push: Option<String>,
        /// At most this many (1 to 10,000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// The daemon's API.
        #[arg(long, env = "PUSHWERK_SERVER", default_value = "http://127.0.0.1:8787", value_parser = parse_server)]
        server: String,
    },
    /// The queued and retrying jobs of a running daemon (next due first):
    /// work waiting for its `delay:` or its next attempt.
    Jobs {
        /// Only this push.
        #[arg(long)]
        push: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The daemon's API.
        #[arg(long, env = "PUSHWERK_SERVER", default_value = "http://127.0.0.1:8787")]
        server: String,
    },
    /// Re-queue dead letters of a running daemon: one by job id, or all (of a push).
    Replay {
        /// The job id of one dead letter.
        #[arg(required_unless_present = "failed", conflicts_with_all = ["failed", "push"])]
        job_id: Option<u64>,
        /// All dead letters (of --push, if given).
        #[arg(long)]
        failed: bool,
        /// Only this push (with --failed).
        #[arg(long, requires = "failed")]
        push: Option<String>,
        /// The daemon's API.
        #[arg(long, env = "PUSHWERK_SERVER", default_value = "http://127.0.0.1:8787", value_parser = parse_server)]
        server: String,
    },
    /// OAuth accounts: tokens in, status out.
    #[command(subcommand)]
    Oauth(OauthCommand),
    /// The data directory's store: migrate between sled, redb and PostgreSQL.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
    /// Print the JSON Schema of a format, or write all of them into a folder.
    Schema {
        /// `push`, `oauth_account` or `event`.
        #[arg(value_parser = ["push", "oauth_account", "event"])]
        which: Option<String>,
        /// Write every schema file into this folder.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Print the shell completion script (e.g. `pushwerk completions bash >
    /// /etc/bash_completion.d/pushwerk`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page pushwerk(1), or write one page per command into a folder.
    Man {
        /// Write `pushwerk.1`, `pushwerk-serve.1`, … into this folder.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

/// `pushwerk oauth …`
#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// Store tokens by hand: a token response (JSON with `refresh_token`, and
    /// optionally `access_token`, `expires_in`), or a bare refresh token,
    /// from stdin or a file — never from the command line, which every user
    /// can read.
    Import {
        /// The account's name.
        name: String,
        /// Read from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Sign in with the authorization-code flow (PKCE) and store the tokens.
    Login {
        /// The account's name.
        name: String,
        /// Port of the loopback redirect URI `http://localhost:PORT/callback` (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Do not listen: paste the URL the browser was redirected to (for a browser on another machine).
        #[arg(long)]
        no_browser: bool,
    },
    /// State, expiry, last refresh, last use, last error and secret expiry of the accounts (never a token).
    Status {
        /// Only this account.
        name: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Refresh an account's access token now.
    Refresh {
        /// The account's name.
        name: String,
    },
    /// Print a new random key for encrypting token state (for PUSHWERK_KEY or a key file).
    Keygen {
        /// Write it into the key file instead (--key-file, PUSHWERK_KEY_FILE
        /// or the default one), which must not exist yet.
        #[arg(long)]
        write: bool,
    },
    /// Replace the key of token state: every record re-sealed with a new
    /// key, the store rewritten so that nothing sealed with the old one
    /// remains, the key file replaced. Stop the daemon first.
    Rekey {
        /// Use the key in this file instead of generating one.
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Formats of listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// An aligned table.
    Text,
    /// JSON.
    Json,
}

pub(super) fn parse_store(s: &str) -> Result<StoreChoice, String> {
    s.parse()
}

/// A node name (`--node-name`, `PUSHWERK_NODE`): not blank (a template
/// whose variable was unset would name every node alike) and without
/// control characters (it is written into log lines).
pub(super) fn parse_node_name(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("a node name cannot be empty or blank (leave --node-name / PUSHWERK_NODE out for the default: host name and process id)".into());
    }
    if s.chars().any(char::is_control) {
        return Err("a node name cannot hold control characters (line breaks, tabs)".into());
    }
    Ok(s.to_owned())
}

/// A command line that parsed but cannot be carried out as written (a
/// value only checked after parsing): exit code 2, like clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A duration flag's value within `min..=max`; the message names the range
/// (clap adds the flag and the value).
pub(super) fn duration_within(
    text: &str,
    min: std::time::Duration,
    max: std::time::Duration,
    range: &str,
) -> Result<std::time::Duration, String> {
    // Bounded before parsing: humantime accepts any number of digits.
    if text.len() > 64 {
        return Err(format!("too long; allowed: {range}"));
    }
    let d = humantime::parse_duration(text).map_err(|e| format!("{e}; allowed: {range}"))?;
    if d < min || d > max {
        return Err(format!("out of range; allowed: {range}"));
    }
    Ok(d)
}

/// `--event-window`: 1 minute to 10 years (retention subtracts it from
/// the current time, which a far larger value overflows).
pub(super) fn parse_event_window(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(3650 * 86_400),
        "1m to 3650d (10 years), e.g. 7d",
    )
}

/// `--grace`: 0 to 1 hour.
pub(super) fn parse_grace(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        std::time::Duration::ZERO,
        std::time::Duration::from_secs(3600),
        "0s to 1h, e.g. 10s",
    )
}

/// `--retry-backoff`: 100 milliseconds to 5 minutes (the longest step, so
/// that steps still double up to it).
pub(super) fn parse_retry_backoff(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        std::time::Duration::from_millis(100),
        crate::backoff::Backoff::default().max,
        "100ms to 5m, e.g. 1s",
    )
}

/// `--lease`: 3 seconds (three heartbeats: one late beat must not cost a
/// node its jobs) to 10 minutes.
pub(super) fn parse_lease(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        crate::store::postgres::HEARTBEAT * 3,
        std::time::Duration::from_secs(600),
        "3s to 10m, e.g. 10s",
    )
}

/// `--header-timeout`: 1 second to 10 minutes.
pub(super) fn parse_header_timeout(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(600),
        "1s to 10m, e.g. 10s",
    )
}

/// `--body-timeout`: 1 second to 1 hour.
pub(super) fn parse_body_timeout(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
        "1s to 1h, e.g. 30s",
    )
}

/// `--server`: an http(s) URL, checked before any request is made.
pub(super) fn parse_server(text: &str) -> Result<String, String> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(text.to_owned())
        }
        Ok(_) => Err("expected an http:// or https:// URL, e.g. http://127.0.0.1:8787".into()),
        Err(e) => Err(format!(
            "{e}: expected an http:// or https:// URL, e.g. http://127.0.0.1:8787"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> Result<Command, clap::Error> {
        let cli = Cli::try_parse_from(["pushwerk", "serve"].iter().chain(args))?;
        Ok(cli.command)
    }

    #[test]
    fn lease_defaults_to_the_postgres_default_and_is_range_checked() {
        if std::env::var_os("PUSHWERK_LEASE").is_some() {
            return;
        }
        let lease_of = |args: &[&str]| match serve_args(args) {
            Ok(Command::Serve { lease, .. }) => Ok(lease),
            Ok(_) => panic!("serve parsed as another command"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(lease_of(&[]), Ok(crate::store::postgres::DEFAULT_LEASE));
        assert_eq!(
            lease_of(&["--lease", "30s"]),
            Ok(std::time::Duration::from_secs(30))
        );
        for refused in ["2s", "11m", "soon"] {
            let e = lease_of(&["--lease", refused]).unwrap_err();
            assert!(e.contains("3s to 10m"), "{refused}: {e}");
        }
    }

    #[test]
    fn retry_backoff_defaults_to_the_backoff_default_and_is_range_checked() {
        // The env variable must not leak in from the environment of the test run.
        if std::env::var_os("PUSHWERK_RETRY_BACKOFF").is_some() {
            return;
        }
        let Command::Serve { retry_backoff, .. } = serve_args(&[]).unwrap() else {
            panic!("serve parsed as another command");
        };
        assert_eq!(retry_backoff, crate::backoff::Backoff::default().base);
        assert_eq!(retry_backoff, std::time::Duration::from_secs(1));
        let Command::Serve { retry_backoff, .. } =
            serve_args(&["--retry-backoff", "150ms"]).unwrap()
        else {
            panic!("serve parsed as another command");
        };
        assert_eq!(retry_backoff, std::time::Duration::from_millis(150));
        for bad in ["50ms", "6m", "soon"] {
            let e = serve_args(&["--retry-backoff", bad]).unwrap_err();
            assert!(e.to_string().contains("100ms to 5m"), "{bad}: {e}");
        }
    }
}
