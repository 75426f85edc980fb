//! The `pushwerk` command line: parsing with clap, and one function per
//! command over the library. `main` only calls [`main_entry`].

pub mod client;
mod format;
mod remote;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::config::{Catalog, LoadOptions, Severity, Trigger};
use crate::engine::output::{self, Format};
use crate::engine::TokenValues;
use crate::event::Event;
use crate::oauth::seal::Sealer;
use crate::oauth::Resolver;
use crate::store::StoreChoice;
use crate::targets::{self, Endpoints, SecretMode};
use std::sync::Arc;

pub mod install;
pub mod store_cmd;

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
    /// The store in the data directory: `auto` (what it holds; redb for a
    /// new one), `sled` or `redb`. See BENCHMARKS.md for how they compare.
    #[arg(long, global = true, env = "PUSHWERK_STORE", default_value = "auto", value_parser = parse_store)]
    pub store: StoreChoice,
    /// With `--store postgres`: the database several nodes share
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
    /// for its lease. Other commands always use the default.
    #[arg(long, global = true, env = "PUSHWERK_NODE")]
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
    /// The data directory's store: migrate between sled and redb.
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

/// The status lines' tracing target (defined at the crate root, so that the
/// server and the daemon use it without depending on the CLI).
pub(crate) use crate::STATUS;

/// Runs the command line; errors are printed once, here.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = init_logging(&cli.log, cli.log_format) {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    let json = cli.log_format == LogFormat::Json;
    if cli.store == StoreChoice::Postgres && cli.database_url.is_none() {
        eprintln!("error: --store postgres needs --database-url (or PUSHWERK_DATABASE_URL)");
        return ExitCode::from(2);
    }
    // Also without `--store postgres`: `store migrate --to postgres`.
    if let Some(url) = cli.database_url.clone() {
        // Only `serve` takes the node's name: a command run beside it with
        // the same PUSHWERK_NODE must not pass for the node (nor give its
        // jobs up when it exits).
        let node = match cli.command {
            Command::Serve { .. } => cli.node_name.clone(),
            _ => None,
        };
        crate::store::postgres::configure(crate::store::postgres::PgSettings {
            url,
            node: node.unwrap_or_else(crate::store::postgres::default_node_name),
            lease: crate::store::postgres::DEFAULT_LEASE,
        });
    }
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if json {
                // Every stderr line is JSON in this format, the last one too.
                tracing::error!(target: STATUS, "{err:#}");
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(if err.is::<UsageError>() { 2 } else { 1 })
        }
    }
}

/// Logs go to stderr; never a token (secrets are wrapped, requests are not
/// logged). Colours only when stderr is a terminal. A filter that does not
/// parse is a usage error, not silently replaced.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), UsageError> {
    let parsed = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| {
        UsageError(format!(
            "invalid value '{}' for '--log <LOG>' (or PUSHWERK_LOG): {e}; expected error, warn, info, debug, trace or a tracing filter such as `pushwerk=debug`",
            filter.chars().take(100).collect::<String>()
        ))
    })?;
    // The daemon's status lines show at the default level too, unless the
    // filter names their target itself.
    let filter = if filter.contains(STATUS) {
        parsed
    } else {
        parsed.add_directive(format!("{STATUS}=info").parse().expect("a valid directive"))
    };
    // https://no-color.org: a set, non-empty NO_COLOR turns colours off too.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Opens the token store in `data` with the configured key (generated
/// into the key file if there is none yet).
pub fn open_resolver(
    data: &Path,
    store: StoreChoice,
    catalog: &Catalog,
) -> anyhow::Result<Resolver> {
    store_cmd::open_resolver_with(data, store, catalog, crate::oauth::KeyUse::Generate)
}

fn load(dir: &Path) -> anyhow::Result<Catalog> {
    Ok(Catalog::load(dir, &LoadOptions::default())?)
}

fn print_diagnostics(catalog: &Catalog) {
    let mut err = std::io::stderr().lock();
    for d in &catalog.diagnostics {
        let _ = writeln!(err, "{d}");
    }
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    store_cmd::set_key_file(cli.key_file.clone());
    match cli.command {
        Command::Store(store_cmd::StoreCommand::Migrate { from, to }) => {
            store_cmd::migrate(&cli.data, from, to)
        }
        Command::Check {
            folder,
            deny_warnings,
        } => {
            let dir = folder.unwrap_or(cli.dir);
            let catalog = if dir.is_file() {
                check_one_file(&dir)?
            } else {
                load(&dir)?
            };
            print_diagnostics(&catalog);
            let errors = catalog.error_count();
            let warnings = catalog.diagnostics.len() - errors;
            let failed = errors > 0 || (deny_warnings && warnings > 0);
            use crate::config::diagnostic::counted;
            let summary = format!(
                "{}: {}, {}, {}, {}, {}",
                dir.display(),
                counted(catalog.files.len(), "file", "files"),
                counted(catalog.pushes.len(), "push", "pushes"),
                counted(catalog.accounts.len(), "account", "accounts"),
                counted(errors, "error", "errors"),
                counted(warnings, "warning", "warnings"),
            );
            if failed {
                eprintln!("check failed: {summary}");
                Ok(ExitCode::from(1))
            } else {
                println!("ok: {summary}");
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::DryRun {
            push,
            event,
            format,
            show_secrets,
            now,
        } => dry_run(
            &cli.dir,
            (&cli.data, cli.store),
            &push,
            event.as_deref(),
            format,
            show_secrets,
            now,
        ),
        Command::Oauth(cmd) => oauth_command(&cli.dir, (&cli.data, cli.store), cmd),
        Command::Serve {
            listen,
            ingest_token,
            admin_token,
            public_url,
            concurrency,
            resident_jobs,
            event_window,
            grace,
            max_connections,
            header_timeout,
            body_timeout,
        } => serve(
            cli.dir,
            (cli.data, cli.store),
            listen,
            ingest_token,
            crate::server::ControlOptions {
                admin_token,
                public_url,
            },
            (
                usize::try_from(concurrency)?,
                usize::try_from(resident_jobs)?,
                event_window,
            ),
            crate::server::ServeOptions {
                max_connections: usize::try_from(max_connections)?,
                header_timeout,
                body_timeout,
                grace,
            },
        ),
        Command::Deliveries {
            failed,
            push,
            limit,
            server,
        } => deliveries(&cli.data, &server, failed, push, limit as usize),
        Command::Jobs {
            push,
            limit,
            server,
        } => jobs(&cli.data, &server, push, limit),
        Command::Replay {
            job_id,
            failed,
            push,
            server,
        } => replay(&cli.data, &server, job_id, failed, push),
        Command::Send {
            push,
            event,
            attempts,
        } => send(&cli.dir, (&cli.data, cli.store), &push, &event, attempts),
        Command::Params { event, format } => {
            let catalog = load(&cli.dir)?;
            print_diagnostics(&catalog);
            let event = event.map(|p| read_event(&p)).transpose()?;
            let params = crate::params::catalogue(&catalog, event.as_ref(), Utc::now());
            match format {
                ListFormat::Text => print!("{}", crate::params::table(&params)),
                ListFormat::Json => println!("{}", serde_json::to_string_pretty(&params)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { which, write } => {
            let schemas = crate::schema::all();
            if let Some(dir) = write {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                for (name, text) in &schemas {
                    let path = dir.join(name);
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!("wrote {}", path.display());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let which = which.unwrap_or_else(|| "push".into());
            let (_, text) = schemas
                .iter()
                .find(|(name, _)| name.starts_with(&format!("{which}.")))
                .expect("value_parser allows known names only");
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            install::completions(shell, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out_dir } => {
            install::man(out_dir.as_deref(), &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The most `--event`, `oauth import` and a key file are read of: the
/// ingest API's limit for an event, far above any token response.
const INPUT_LIMIT: u64 = 1024 * 1024;

/// Reads at most [`INPUT_LIMIT`] bytes of `from` as UTF-8; more is an
/// error naming `what`, not an unbounded read.
fn read_bounded(from: impl std::io::Read, what: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(from, INPUT_LIMIT + 1), &mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if bytes.len() as u64 > INPUT_LIMIT {
        bail!("{what} is larger than {} KiB", INPUT_LIMIT / 1024);
    }
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{what} is not UTF-8 text"))
}

fn read_event(path: &Path) -> anyhow::Result<Event> {
    let what = format!("event file {}", path.display());
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {what}"))?;
    let text = read_bounded(file, &what)?;
    Event::from_json(&text).with_context(|| format!("event file {}", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn dry_run(
    dir: &Path,
    (data, store): (&Path, StoreChoice),
    push_arg: &str,
    event_path: Option<&Path>,
    format: Format,
    show_secrets: bool,
    now: Option<DateTime<Utc>>,
) -> anyhow::Result<ExitCode> {
    let (catalog, index) = select_push(dir, push_arg)?;
    let push = &catalog.pushes[index];
    let now = now.unwrap_or_else(Utc::now);
    let event = match (event_path, &push.trigger) {
        (Some(p), _) => read_event(p)?,
        (None, Trigger::Schedule(_)) => Event::schedule_tick(push.name(), now),
        (None, Trigger::Event(on)) => {
            return Err(UsageError(format!(
                "push `{}` fires on `{on}` events: give one with --event FILE",
                push.name()
            ))
            .into())
        }
    };
    let mut notes = vec![format!(
        "push {} ({}:{})",
        push.name(),
        push.file.display(),
        push.position.line
    )];
    if let Trigger::Schedule(s) = &push.trigger {
        let next: Vec<String> = s.upcoming(&now, 3).iter().map(|t| t.to_rfc3339()).collect();
        notes.push(format!(
            "schedule `{}`, next: {}",
            s.source(),
            next.join(", ")
        ));
    }
    let mut tokens = TokenValues::new();
    if show_secrets && !push.compiled.accounts.is_empty() {
        // Stored tokens only: a dry-run makes no network request (and
        // creates no key file).
        let resolver = store_cmd::open_resolver_with(
            data,
            store,
            &catalog,
            crate::oauth::KeyUse::ExistingOnly,
        )?;
        for account in &push.compiled.accounts {
            let token = resolver.stored_token(account)?;
            tokens.insert(account.clone(), token.expose().to_owned());
        }
    }
    let endpoints = Endpoints::from_env(&crate::config::secret::process_env);
    let input = crate::pipeline::Input {
        catalog: &catalog,
        push,
        event: &event,
        attempt: 1,
        now,
        tokens: &tokens,
        secrets: if show_secrets {
            SecretMode::Shown
        } else {
            SecretMode::Masked
        },
        endpoints: &endpoints,
    };
    let prepared = match crate::pipeline::run(input)? {
        crate::pipeline::Outcome::Skipped(reason) => {
            println!("skipped: {reason}");
            return Ok(ExitCode::SUCCESS);
        }
        crate::pipeline::Outcome::Prepared(p) => p.request,
    };
    let text = output::format(&prepared, format);
    let mut out = std::io::stdout().lock();
    if format == Format::Text {
        for n in &notes {
            writeln!(out, "# {n}")?;
        }
    } else {
        for n in &notes {
            eprintln!("# {n}");
        }
    }
    if format == Format::Curl && matches!(prepared, targets::Prepared::Smtp(_)) {
        eprintln!("# curl cannot send this SMTP mail; showing the SMTP dialogue instead");
    }
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `check FILE`: the file loaded with the other files of its folder (so the
/// accounts it uses are known), reported alone.
fn check_one_file(file: &Path) -> anyhow::Result<Catalog> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let same = |f: &Path| f.canonicalize().ok() == file.canonicalize().ok();
    let mut files: Vec<PathBuf> = load(dir)?.files;
    files.retain(|f| !same(f));
    files.push(file.to_path_buf());
    let mut catalog = Catalog::load_files(dir, files, &LoadOptions::default());
    catalog.files.retain(|f| same(f));
    catalog.pushes.retain(|p| same(&p.file));
    catalog.accounts.retain(|_, a| same(&a.file));
    catalog.diagnostics.retain(|d| same(&d.file));
    Ok(catalog)
}

/// Loads the folder and finds PUSH: a push name, or a YAML file holding one
/// push (loaded with the folder, so its accounts are known).
fn select_push(dir: &Path, push_arg: &str) -> anyhow::Result<(Catalog, usize)> {
    let as_file = Path::new(push_arg);
    let is_file = as_file.is_file();
    let catalog = if is_file && !as_file.starts_with(dir) {
        // A file outside the folder: load it with the folder's files, so its
        // accounts are known.
        let mut files = Vec::new();
        let folder = load(dir)?;
        files.extend(folder.files.iter().cloned());
        files.push(as_file.to_path_buf());
        Catalog::load_files(dir, files, &LoadOptions::default())
    } else {
        load(dir)?
    };
    let index = if is_file {
        let canonical = as_file.canonicalize().ok();
        let in_file: Vec<usize> = (0..catalog.pushes.len())
            .filter(|i| catalog.pushes[*i].file.canonicalize().ok() == canonical)
            .collect();
        match in_file.as_slice() {
            [one] => *one,
            [] => {
                print_file_diagnostics(&catalog, as_file);
                bail!("{push_arg} holds no valid push");
            }
            many => bail!(
                "{push_arg} holds {} pushes ({}): name one",
                many.len(),
                many.iter()
                    .map(|i| catalog.pushes[*i].name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    } else {
        match catalog.pushes.iter().position(|p| p.name() == push_arg) {
            Some(i) => i,
            None => {
                // Only the error: the folder's warnings are `check`'s business.
                let hint = crate::config::did_you_mean(
                    push_arg,
                    catalog.pushes.iter().map(|p| p.name().to_owned()),
                );
                let errors = catalog.error_count();
                let broken = if errors > 0 {
                    format!(
                        " ({} in the folder: `pushwerk check` lists {})",
                        crate::config::diagnostic::counted(errors, "error", "errors"),
                        if errors == 1 { "it" } else { "them" }
                    )
                } else {
                    String::new()
                };
                bail!(
                    "no valid push named `{push_arg}` in {}{hint}{broken}",
                    dir.display()
                );
            }
        }
    };
    Ok((catalog, index))
}

fn print_file_diagnostics(catalog: &Catalog, file: &Path) {
    for d in catalog
        .diagnostics
        .iter()
        .filter(|d| d.file == file && d.severity == Severity::Error)
    {
        eprintln!("{d}");
    }
}

fn send(
    dir: &Path,
    (data, store): (&Path, StoreChoice),
    push_arg: &str,
    event_paths: &[PathBuf],
    attempts: u32,
) -> anyhow::Result<ExitCode> {
    // A daemon holds the store: it sends.
    if let Some(info) = client::running_daemon(data, store)? {
        return remote::send(data, &info, push_arg, event_paths, attempts);
    }
    let (catalog, index) = select_push(dir, push_arg)?;
    let push = &catalog.pushes[index];
    let events = match (event_paths, &push.trigger) {
        ([], Trigger::Schedule(_)) => vec![Event::schedule_tick(push.name(), Utc::now())],
        ([], Trigger::Event(on)) => {
            return Err(UsageError(format!(
                "push `{}` fires on `{on}` events: give one with --event FILE",
                push.name()
            ))
            .into())
        }
        (paths, _) => paths
            .iter()
            .map(|p| read_event(p))
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    let resolver = Arc::new(open_resolver(data, store, &catalog)?);
    let deliverer = crate::engine::Deliverer::new(
        resolver,
        crate::engine::Sender::new(std::time::Duration::from_secs(30)),
        Endpoints::from_env(&crate::config::secret::process_env),
        std::time::Duration::from_secs(600),
    );
    let name = push.name().to_owned();
    let several = events.len() > 1;
    let on_attempt = |i: usize, n: u32, a: &crate::engine::Attempt| {
        let target = a
            .target
            .as_ref()
            .map(|t| format!(" → {t}"))
            .unwrap_or_default();
        let event = if several {
            format!(" event {}", events[i].id)
        } else {
            String::new()
        };
        println!(
            "{name}{event} attempt {n}{target}: {} ({} ms)",
            a.outcome.summary(),
            a.duration.as_millis()
        );
    };
    let deliveries = runtime()?.block_on(deliverer.deliver_all_with_retries(
        &catalog,
        push,
        &events,
        attempts.max(1),
        push.spec.retry.max_age.0,
        &crate::backoff::Backoff::default(),
        &on_attempt,
    ));
    // The worst outcome decides: failed (1) over to be retried (75) over delivered.
    let mut code = 0;
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let this = match delivery {
            crate::engine::Delivery::Skipped(reason) => {
                let event = if several {
                    format!("event {}: ", events[i].id)
                } else {
                    String::new()
                };
                println!("{event}skipped: {reason}");
                0
            }
            crate::engine::Delivery::Attempted(a) => match a.outcome {
                crate::targets::Outcome::Delivered { .. } => 0,
                crate::targets::Outcome::Retry { .. } => 75,
                _ => 1,
            },
        };
        code = match (code, this) {
            (1, _) | (_, 1) => 1,
            (75, _) | (_, 75) => 75,
            _ => 0,
        };
    }
    Ok(ExitCode::from(code))
}

fn serve(
    dir: PathBuf,
    (data, store): (PathBuf, StoreChoice),
    listen: std::net::SocketAddr,
    ingest_token: Option<String>,
    mut control: crate::server::ControlOptions,
    (concurrency, resident_jobs, event_window): (usize, usize, std::time::Duration),
    options: crate::server::ServeOptions,
) -> anyhow::Result<ExitCode> {
    let grace = options.grace;
    use crate::daemon::{Daemon, DaemonConfig};
    let rt = runtime()?;
    rt.block_on(async move {
        let mut config = DaemonConfig::new(dir, data);
        config.store = store;
        config.listen = listen;
        config.ingest_token = ingest_token;
        config.concurrency = concurrency;
        config.resident_jobs = resident_jobs;
        config.event_window =
            chrono::Duration::from_std(event_window).context("--event-window is too long")?;
        config.grace = grace;
        config.endpoints = Endpoints::from_env(&crate::config::secret::process_env);
        config.key_file = store_cmd::key_file();
        let (daemon, token_path) = Daemon::open(config)?;
        if let Some(path) = token_path {
            tracing::info!(
                target: STATUS,
                "ingest token: {} (send it as `Authorization: Bearer <token>`)",
                path.display()
            );
        }
        let (admin, admin_path) =
            crate::server::auth::admin_token(&daemon.config.data, control.admin_token.take())?;
        if let Some(path) = admin_path {
            tracing::info!(
                target: STATUS,
                "admin token: {} (for the account endpoints and `pushwerk oauth …` while serving)",
                path.display()
            );
        }
        control.admin_token = Some(admin);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let bound = listener.local_addr()?;
        let control = Arc::new(crate::server::Control::new(&daemon.token, bound, &control)?);
        // Commands on this data directory use the API while the daemon
        // holds the store (an unspecified address is reached on loopback).
        let reach = match bound.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => {
                std::net::SocketAddr::from(([127, 0, 0, 1], bound.port()))
            }
            ip if ip.is_unspecified() => {
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, bound.port()))
            }
            _ => bound,
        };
        let _announcement = client::announce(&daemon.config.data, &format!("http://{reach}"))?;
        let catalog = daemon.catalog();
        let local = listener.local_addr()?;
        tracing::info!(
            target: STATUS,
            "pushwerk serving {} and {} from {} on http://{local}",
            crate::config::diagnostic::counted(catalog.pushes.len(), "push", "pushes"),
            crate::config::diagnostic::counted(catalog.accounts.len(), "account", "accounts"),
            daemon.config.dir.display(),
        );
        // Serves until SIGTERM/SIGINT, then shuts the daemon down within --grace.
        let app = crate::server::router_control(daemon.clone(), options, control);
        let server =
            crate::server::serve_router(listener, app, daemon.clone(), options, shutdown_signal());
        daemon.run(server).await?;
        tracing::info!(target: STATUS, "stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Calls the running daemon's API: `GET path` without a body, `POST path`
/// with one; the token is the first of PUSHWERK_INGEST_TOKEN,
/// PUSHWERK_ADMIN_TOKEN, DATA/admin-token, DATA/ingest-token.
fn call_api<T: serde::de::DeserializeOwned>(
    data: &Path,
    server: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<T> {
    let (server, token) = client::api_target(data, server)?;
    let base = server.trim_end_matches('/');
    let client = crate::net::http_client()
        .build()
        .context("building the HTTP client")?;
    let request = match body {
        Some(b) => client.post(format!("{base}{path}")).json(&b),
        None => client.get(format!("{base}{path}")),
    };
    runtime()?.block_on(async {
        let r = request
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {base}"))?;
        let status = r.status();
        let text = r.text().await.context("cannot read the daemon's answer")?;
        if !status.is_success() {
            let reason = serde_json::from_str::<crate::api::ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| text.chars().take(200).collect());
            bail!("the daemon answered {status}: {reason}");
        }
        serde_json::from_str(&text).context("the daemon's answer is not what this pushwerk expects")
    })
}

fn deliveries(
    data: &Path,
    server: &str,
    failed: bool,
    push: Option<String>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    // Not delivered: failed attempts (retried later or not) and dead letters.
    let statuses: &[Option<&str>] = if failed {
        &[Some("failed"), Some("retry"), Some("dead")]
    } else {
        &[None]
    };
    let mut entries: Vec<crate::delivery::LogEntry> = Vec::new();
    let local = client::local_queue(data)?;
    for status in statuses {
        if let Some(queue) = &local {
            entries.extend(queue.log(push.as_deref(), *status, limit)?);
            continue;
        }
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", &limit.to_string());
        if let Some(p) = &push {
            query.append_pair("push", p);
        }
        if let Some(s) = status {
            query.append_pair("status", s);
        }
        let body: crate::api::Deliveries = call_api(
            data,
            server,
            &format!("/v1/deliveries?{}", query.finish()),
            None,
        )?;
        entries.extend(body.deliveries);
    }
    // Newest first across the statuses, as the log itself is.
    entries.sort_by_key(|e| std::cmp::Reverse(e.at));
    entries.truncate(limit);
    for e in &entries {
        println!(
            "{}  {:<8} {}  event {}  attempt {}  job {}{}{}{}",
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            e.status,
            e.push,
            e.event_id,
            e.attempt,
            e.job_id,
            e.code.map(|c| format!("  ({c})")).unwrap_or_default(),
            e.reference
                .as_deref()
                .map(|r| format!("  [{r}]"))
                .unwrap_or_default(),
            e.error
                .as_deref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `pushwerk jobs`: `GET /v1/jobs`, one line per job.
fn jobs(data: &Path, server: &str, push: Option<String>, limit: usize) -> anyhow::Result<ExitCode> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &limit.to_string());
    if let Some(p) = &push {
        query.append_pair("push", p);
    }
    let body = match client::local_queue(data)? {
        // No daemon: what the store holds, next due first.
        Some(queue) => {
            let mut jobs = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            let more = 'scan: loop {
                let page = queue.jobs_page(after.as_deref(), 1000)?;
                after = page.last_key;
                for job in page.jobs {
                    if push.as_deref().is_some_and(|p| p != job.push) {
                        continue;
                    }
                    if jobs.len() == limit {
                        break 'scan true;
                    }
                    jobs.push(crate::api::Job {
                        state: crate::api::JobState::of_attempt(job.attempt),
                        id: job.id,
                        push: job.push,
                        event_id: job.event_id,
                        due: job.due_at,
                        attempt: job.attempt,
                        accepted_at: job.accepted_at,
                        last_error: None,
                    });
                }
                if !page.more {
                    break false;
                }
            };
            crate::api::Jobs { jobs, more }
        }
        None => call_api(data, server, &format!("/v1/jobs?{}", query.finish()), None)?,
    };
    for j in &body.jobs {
        println!(
            "{}  {:<8} {}  event {}  attempt {}  job {}{}",
            j.due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            j.state.as_str(),
            j.push,
            j.event_id,
            j.attempt,
            j.id,
            j.last_error
                .as_deref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default(),
        );
    }
    if body.more {
        println!("… more queued (raise --limit)");
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(
    data: &Path,
    server: &str,
    job_id: Option<u64>,
    failed: bool,
    push: Option<String>,
) -> anyhow::Result<ExitCode> {
    if job_id.is_none() && !failed {
        return Err(UsageError(
            "name a dead letter's job id, or use --failed (with --push NAME for one push)".into(),
        )
        .into());
    }
    let replayed = if let Some(queue) = client::local_queue(data)? {
        // No daemon: the jobs go back into the store, due now, and are
        // delivered when the daemon next starts.
        let jobs = queue.replay(job_id, push.as_deref(), Utc::now())?;
        queue.store().flush()?;
        jobs.len()
    } else {
        let request = crate::api::ReplayRequest { job_id, push };
        let answer: crate::api::Replayed = call_api(
            data,
            server,
            "/v1/replay",
            Some(serde_json::to_value(&request)?),
        )?;
        answer.replayed
    };
    if let (Some(id), 0) = (job_id, replayed) {
        bail!("no dead letter with job id {id} (the dead letters: `pushwerk deliveries --failed`)");
    }
    println!(
        "replayed {}",
        crate::config::diagnostic::counted(replayed, "dead letter", "dead letters")
    );
    Ok(ExitCode::SUCCESS)
}

fn read_secret_input(file: Option<&Path>) -> anyhow::Result<String> {
    let text = match file {
        Some(f) => read_bounded(
            std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?,
            &f.display().to_string(),
        )?,
        None => read_bounded(std::io::stdin(), "stdin")?,
    };
    Ok(text)
}

/// Parses what `oauth import` reads: a token response as JSON, or a bare refresh token.
pub fn parse_import(text: &str) -> anyhow::Result<crate::oauth::ImportedTokens> {
    Ok(crate::oauth::ImportedTokens::parse(text)?)
}

fn oauth_command(
    dir: &Path,
    (data, store): (&Path, StoreChoice),
    cmd: OauthCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        OauthCommand::Keygen { write: true } => return store_cmd::keygen_write(),
        OauthCommand::Keygen { write: false } => {
            println!("{}", Sealer::generate_key());
            return Ok(ExitCode::SUCCESS);
        }
        OauthCommand::Rekey { new_key_file } => {
            return store_cmd::rekey(data, store, new_key_file.as_deref())
        }
        _ => {}
    }
    // A daemon holds the store: it answers instead.
    if let Some(info) = client::running_daemon(data, store)? {
        return remote::oauth(data, &info, cmd);
    }
    let catalog = load(dir)?;
    let account_of = |name: &str| {
        catalog.accounts.get(name).cloned().ok_or_else(|| {
            let hint = crate::config::did_you_mean(name, catalog.accounts.keys().cloned());
            anyhow::anyhow!("no OAuth account named `{name}` in {}{hint}", dir.display())
        })
    };
    let rt = runtime()?;
    match cmd {
        OauthCommand::Keygen { .. } | OauthCommand::Rekey { .. } => unreachable!("handled above"),
        OauthCommand::Import { name, file } => {
            account_of(&name)?;
            let tokens = parse_import(&read_secret_input(file.as_deref())?)?;
            let resolver = open_resolver(data, store, &catalog)?;
            rt.block_on(resolver.import(&name, tokens))?;
            println!(
                "stored tokens of `{name}` in {}{}",
                data.display(),
                if resolver.is_encrypted() {
                    " (encrypted)"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        OauthCommand::Login {
            name,
            port,
            no_browser,
        } => {
            let account = account_of(&name)?;
            crate::oauth::login::preflight(&account)?;
            let resolver = open_resolver(data, store, &catalog)?;
            rt.block_on(crate::oauth::login::run(
                &resolver, &account, port, no_browser,
            ))?;
            println!("signed in: stored tokens of `{name}` in {}", data.display());
            Ok(ExitCode::SUCCESS)
        }
        OauthCommand::Status { name, format } => {
            let resolver = open_resolver(data, store, &catalog)?;
            let mut status = resolver.status(Utc::now().date_naive())?;
            if let Some(n) = &name {
                status.retain(|s| &s.account == n);
                if status.is_empty() {
                    account_of(n)?;
                }
            }
            for s in &status {
                for w in &s.warnings {
                    tracing::warn!(account = %s.account, "{w}");
                }
            }
            match format {
                ListFormat::Json => {
                    let mut v = serde_json::json!({ "encrypted_at_rest": resolver.is_encrypted(), "key": store_cmd::key_spec().ok().map(|k| k.describe()), "accounts": status });
                    timestamps_to_seconds(&mut v);
                    println!("{}", serde_json::to_string_pretty(&v)?)
                }
                ListFormat::Text => print!("{}", status_text(&status, resolver.is_encrypted())),
            }
            let bad = status.iter().any(|s| s.state != "ok");
            Ok(if bad {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        OauthCommand::Refresh { name } => {
            account_of(&name)?;
            let resolver = open_resolver(data, store, &catalog)?;
            rt.block_on(resolver.refresh_now(&name))?;
            println!("refreshed `{name}`");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status_text(status: &[crate::oauth::AccountStatus], encrypted: bool) -> String {
    let when = |t: &Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".into())
    };
    let mut out = format!("token state: {}\n", store_cmd::encryption_line(encrypted));
    for s in status {
        out.push_str(&format!("\n{}: {}\n", s.account, s.state));
        if let Some(r) = &s.reason {
            out.push_str(&format!("  reason:         {r}\n"));
        }
        out.push_str(&format!(
            "  access token:   expires {}\n",
            when(&s.access_token_expires)
        ));
        out.push_str(&format!(
            "  refresh token:  {}\n",
            if s.has_refresh_token {
                "stored"
            } else {
                "none"
            }
        ));
        out.push_str(&format!("  last refresh:   {}\n", when(&s.last_refresh)));
        out.push_str(&format!("  last use:       {}\n", when(&s.last_use)));
        out.push_str(&format!(
            "  last error:     {}\n",
            s.last_error.as_deref().unwrap_or("-")
        ));
        out.push_str(&format!(
            "  secret expires: {}\n",
            s.client_secret_expires
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into())
        ));
        for w in &s.warnings {
            out.push_str(&format!("  warning:        {w}\n"));
        }
    }
    out
}

fn parse_store(s: &str) -> Result<StoreChoice, String> {
    s.parse()
}

/// A command line that parsed but cannot be carried out as written (a
/// value only checked after parsing): exit code 2, like clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A duration flag's value within `min..=max`; the message names the range
/// (clap adds the flag and the value).
fn duration_within(
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
fn parse_event_window(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(3650 * 86_400),
        "1m to 3650d (10 years), e.g. 7d",
    )
}

/// `--grace`: 0 to 1 hour.
fn parse_grace(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        std::time::Duration::ZERO,
        std::time::Duration::from_secs(3600),
        "0s to 1h, e.g. 10s",
    )
}

/// `--header-timeout`: 1 second to 10 minutes.
fn parse_header_timeout(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(600),
        "1s to 10m, e.g. 10s",
    )
}

/// `--body-timeout`: 1 second to 1 hour.
fn parse_body_timeout(text: &str) -> Result<std::time::Duration, String> {
    duration_within(
        text,
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
        "1s to 1h, e.g. 30s",
    )
}

/// `--server`: an http(s) URL, checked before any request is made.
fn parse_server(text: &str) -> Result<String, String> {
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

/// Rewrites every RFC 3339 timestamp in `v` to whole seconds in UTC
/// (`2026-11-25T14:03:12Z`): CLI output gives times to the second, not
/// the nanoseconds the records keep.
fn timestamps_to_seconds(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                *s = t
                    .with_timezone(&Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(timestamps_to_seconds),
        serde_json::Value::Object(map) => map.values_mut().for_each(timestamps_to_seconds),
        _ => {}
    }
}
