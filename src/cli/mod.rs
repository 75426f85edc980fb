//! The `pushwerk` command line: parsing with clap, and one function per
//! command over the library. `main` only calls [`main_entry`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::config::{Catalog, LoadOptions, Severity, Trigger};
use crate::dispatch::{self, Endpoints};
use crate::engine::output::{self, Format};
use crate::engine::{render, RenderInput, Rendered, TokenValues};
use crate::event::Event;
use crate::oauth::seal::Sealer;
use crate::oauth::{Resolver, ResolverSettings, TokenStore};
use crate::store::StoreChoice;
use std::sync::Arc;

pub mod install;

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
    /// The store in the data directory: `auto` (what it holds; sled for a
    /// new one), `sled` or `redb`. See BENCHMARKS.md for how they compare.
    #[arg(long, global = true, env = "PUSHWERK_STORE", default_value = "auto", value_parser = parse_store)]
    pub store: StoreChoice,
    /// Log verbosity (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter).
    #[arg(long, global = true, env = "PUSHWERK_LOG", default_value = "warn")]
    pub log: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
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
        /// Attempts at most, waiting between them as the target asks (Retry-After) or with backoff.
        #[arg(long, default_value_t = 1)]
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
        /// Deliveries in flight at most.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Queued jobs held in memory at most; beyond, they wait in the store
        /// and are read back as the backlog drains (bounds memory).
        #[arg(long, default_value_t = 10_000)]
        resident_jobs: usize,
        /// How long accepted event ids are remembered: an id resent within
        /// this window is a duplicate, after it a new event.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        event_window: std::time::Duration,
        /// How long in-flight deliveries may finish after SIGTERM.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        /// HTTP connections open at most; more wait until one closes.
        #[arg(long, default_value_t = 256)]
        max_connections: usize,
        /// How long a client may take to send a request head (and an idle
        /// connection stays open).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        header_timeout: std::time::Duration,
        /// How long a client may take to send a request body.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
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
        job_id: Option<u64>,
        /// All dead letters (of --push, if given).
        #[arg(long)]
        failed: bool,
        /// Only this push.
        #[arg(long)]
        push: Option<String>,
        /// The daemon's API.
        #[arg(long, env = "PUSHWERK_SERVER", default_value = "http://127.0.0.1:8787")]
        server: String,
    },
    /// OAuth accounts: tokens in, status out.
    #[command(subcommand)]
    Oauth(OauthCommand),
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
    Keygen,
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

/// Runs the command line; errors are printed once, here.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr; never a token (secrets are wrapped, requests are not logged).
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Opens the token store in `data` with the configured key.
pub fn open_resolver(
    data: &Path,
    store: StoreChoice,
    catalog: &Catalog,
) -> anyhow::Result<Resolver> {
    let sealer = Sealer::from_env(&crate::config::secret::process_env)?;
    let store = crate::store::open(data, store)?;
    let tokens = TokenStore::new(store, sealer);
    Ok(Resolver::new(
        tokens,
        catalog.accounts.clone(),
        ResolverSettings::default(),
    ))
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
    match cli.command {
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
            (concurrency, resident_jobs, event_window),
            crate::server::ServeOptions {
                max_connections,
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
        } => deliveries(&cli.data, &server, failed, push, limit),
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

fn read_event(path: &Path) -> anyhow::Result<Event> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read event file {}", path.display()))?;
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
        (None, Trigger::Event(on)) => bail!(
            "push `{}` fires on `{on}` events: give one with --event FILE",
            push.name()
        ),
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
        // Stored tokens only: a dry-run makes no network request.
        let resolver = open_resolver(data, store, &catalog)?;
        for account in &push.compiled.accounts {
            let token = resolver.stored_token(account)?;
            tokens.insert(account.clone(), token.expose().to_owned());
        }
    }
    let input = RenderInput {
        event: &event,
        attempt: 1,
        now,
        tokens: &tokens,
        show_secrets,
    };
    let rendered = match render(&catalog, push, &input)? {
        Rendered::Skipped(reason) => {
            println!("skipped: {reason}");
            return Ok(ExitCode::SUCCESS);
        }
        Rendered::Ready(r) => r,
    };
    let endpoints = Endpoints::from_env(&crate::config::secret::process_env);
    let prepared = dispatch::prepare(&rendered, &endpoints)?;
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
    if format == Format::Curl && matches!(prepared, dispatch::Prepared::Smtp(_)) {
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
    let (catalog, index) = select_push(dir, push_arg)?;
    let push = &catalog.pushes[index];
    let events = match (event_paths, &push.trigger) {
        ([], Trigger::Schedule(_)) => vec![Event::schedule_tick(push.name(), Utc::now())],
        ([], Trigger::Event(on)) => bail!(
            "push `{}` fires on `{on}` events: give one with --event FILE",
            push.name()
        ),
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
                crate::dispatch::Outcome::Delivered { .. } => 0,
                crate::dispatch::Outcome::Retry { .. } => 75,
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
    (concurrency, resident_jobs, event_window): (usize, usize, std::time::Duration),
    options: crate::server::ServeOptions,
) -> anyhow::Result<ExitCode> {
    let grace = options.grace;
    use crate::engine::daemon::{watch, Daemon, DaemonConfig};
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
        let (daemon, token_path) = Daemon::open(config)?;
        if let Some(path) = token_path {
            eprintln!(
                "ingest token: {} (send it as `Authorization: Bearer <token>`)",
                path.display()
            );
        }
        let _watcher = watch(daemon.clone())?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let catalog = daemon.catalog();
        eprintln!(
            "pushwerk serving {} and {} from {} on http://{}",
            crate::config::diagnostic::counted(catalog.pushes.len(), "push", "pushes"),
            crate::config::diagnostic::counted(catalog.accounts.len(), "account", "accounts"),
            daemon.config.dir.display(),
            listener.local_addr()?
        );
        tracing::info!(listen = %listen, "serving");
        let workers = tokio::spawn(daemon.clone().run_workers());
        tokio::spawn(daemon.clone().run_cron());
        tokio::spawn(daemon.clone().run_housekeeping());
        // Serves until SIGTERM/SIGINT, then shuts the daemon down within --grace.
        crate::server::serve(listener, daemon.clone(), options, shutdown_signal()).await;
        workers.abort();
        eprintln!("stopped");
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
/// with one; the token comes from PUSHWERK_INGEST_TOKEN or DATA/ingest-token.
fn call_api(
    data: &Path,
    server: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let token = match std::env::var("PUSHWERK_INGEST_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        Some(t) => t,
        None => std::fs::read_to_string(data.join("ingest-token"))
            .with_context(|| {
                format!(
                    "no PUSHWERK_INGEST_TOKEN and cannot read {}",
                    data.join("ingest-token").display()
                )
            })?
            .trim()
            .to_owned(),
    };
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
        let v: serde_json::Value = r.json().await?;
        if !status.is_success() {
            bail!(
                "the daemon answered {status}: {}",
                v["error"].as_str().unwrap_or_default()
            );
        }
        anyhow::Ok(v)
    })
}

fn deliveries(
    data: &Path,
    server: &str,
    failed: bool,
    push: Option<String>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &limit.to_string());
    if let Some(p) = &push {
        query.append_pair("push", p);
    }
    if failed {
        query.append_pair("status", "dead");
    }
    let body = call_api(
        data,
        server,
        &format!("/v1/deliveries?{}", query.finish()),
        None,
    )?;
    for e in body["deliveries"].as_array().into_iter().flatten() {
        println!(
            "{}  {:<8} {}  event {}  attempt {}  job {}{}{}{}",
            e["at"].as_str().unwrap_or_default(),
            e["status"].as_str().unwrap_or_default(),
            e["push"].as_str().unwrap_or_default(),
            e["event_id"].as_str().unwrap_or_default(),
            e["attempt"],
            e["job_id"],
            e["code"]
                .as_u64()
                .map(|c| format!("  ({c})"))
                .unwrap_or_default(),
            e["reference"]
                .as_str()
                .map(|r| format!("  [{r}]"))
                .unwrap_or_default(),
            e["error"]
                .as_str()
                .map(|r| format!("  {r}"))
                .unwrap_or_default(),
        );
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
        bail!("name a dead letter's job id, or use --failed (with --push NAME for one push)");
    }
    let answer = call_api(
        data,
        server,
        "/v1/replay",
        Some(serde_json::json!({ "job_id": job_id, "push": push })),
    )?;
    let replayed = answer["replayed"].as_u64().unwrap_or(0) as usize;
    println!(
        "replayed {}",
        crate::config::diagnostic::counted(replayed, "dead letter", "dead letters")
    );
    Ok(ExitCode::SUCCESS)
}

fn read_secret_input(file: Option<&Path>) -> anyhow::Result<String> {
    let text = match file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        None => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read stdin")?;
            text
        }
    };
    Ok(text)
}

/// Parses what `oauth import` reads: a token response as JSON, or a bare refresh token.
pub fn parse_import(text: &str) -> anyhow::Result<crate::oauth::ImportedTokens> {
    let text = text.trim();
    if text.is_empty() {
        bail!("nothing to import: give a token response as JSON (with `refresh_token`) or a refresh token on stdin");
    }
    if text.starts_with('{') {
        // serde's message could quote a value: keep only its position.
        return serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "not a token response at line {} column {}: expected JSON with `refresh_token` and optionally `access_token`, `expires_in` (seconds) or `expires_at` (RFC 3339), `scope`",
                e.line(),
                e.column()
            )
        });
    }
    if text.split_whitespace().count() != 1 {
        bail!("expected one refresh token or a JSON token response");
    }
    Ok(serde_json::from_value(
        serde_json::json!({ "refresh_token": text }),
    )?)
}

fn oauth_command(
    dir: &Path,
    (data, store): (&Path, StoreChoice),
    cmd: OauthCommand,
) -> anyhow::Result<ExitCode> {
    if let OauthCommand::Keygen = cmd {
        println!("{}", Sealer::generate_key());
        return Ok(ExitCode::SUCCESS);
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
        OauthCommand::Keygen => unreachable!("handled above"),
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
                ListFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "encrypted_at_rest": resolver.is_encrypted(), "accounts": status })
                    )?
                ),
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
    let mut out = format!(
        "token state: {}\n",
        if encrypted {
            "encrypted at rest (ChaCha20-Poly1305)"
        } else {
            "NOT encrypted at rest (set PUSHWERK_KEY or PUSHWERK_KEY_FILE)"
        }
    );
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
