//! The `pushwerk` command line: parsing with clap, and one function per
//! command over the library. `main` only calls [`main_entry`].
//!
//! This file is the dispatcher ([`run`]) and the shared setup (logging, the
//! runtime, the catalog and the token store). The clap types are in `args`;
//! each command family has its own file: `dry_run` (dry-run and send),
//! `serve`, `deliveries` (deliveries, jobs, replay against a daemon),
//! `oauth_cmd` (local tokens) and `remote` (tokens through a daemon),
//! `store_cmd`, `install`.

mod args;
pub mod client;
mod deliveries;
mod dry_run;
mod format;
mod oauth_cmd;
mod remote;
mod serve;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;
use clap::Parser;

use crate::config::{Catalog, LoadOptions};
use crate::oauth::Resolver;
use crate::store::StoreChoice;

pub mod install;
pub mod store_cmd;

pub use args::{Cli, Command, ListFormat, LogFormat, OauthCommand, UsageError};
use deliveries::{deliveries, jobs, replay};
use dry_run::{check_one_file, dry_run, read_event, send};
use oauth_cmd::oauth_command;
pub use oauth_cmd::parse_import;
use serve::serve;

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
        let (node, lease) = match cli.command {
            Command::Serve { lease, .. } => (cli.node_name.clone(), lease),
            _ => (None, crate::store::postgres::DEFAULT_LEASE),
        };
        crate::store::postgres::configure(crate::store::postgres::PgSettings {
            url,
            node: node.unwrap_or_else(crate::store::postgres::default_node_name),
            lease,
        });
    }
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if json {
                // Every stderr line is JSON in this format, the last one too.
                tracing::error!(target: STATUS, "{}", error_text(&err));
            } else {
                eprintln!("error: {}", error_text(&err));
            }
            ExitCode::from(if err.is::<UsageError>() { 2 } else { 1 })
        }
    }
}

/// The error and its causes on one line, `a: b: c`, each cause shown once:
/// many of our errors already name their source in their own message (so
/// that a log line that prints only the top is complete), and anyhow's
/// `{:#}` would print it a second time (`cannot read push folder P: No
/// such file or directory (os error 2): No such file or directory (os
/// error 2)`).
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
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
            metrics_token,
            metrics_public,
            public_url,
            concurrency,
            resident_jobs,
            event_window,
            grace,
            retry_backoff,
            max_connections,
            header_timeout,
            body_timeout,
            // Read where the store is configured, before any command runs.
            lease: _,
        } => serve(
            cli.dir,
            (cli.data, cli.store),
            listen,
            ingest_token,
            crate::server::ControlOptions {
                admin_token,
                public_url,
                metrics_token,
                metrics_public,
            },
            (
                usize::try_from(concurrency)?,
                usize::try_from(resident_jobs)?,
                event_window,
                retry_backoff,
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
