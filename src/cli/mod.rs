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

/// pushwerk: push configurations, executed in the open.
#[derive(Debug, Parser)]
#[command(name = "pushwerk", version, about)]
pub struct Cli {
    /// The folder of push and account definitions.
    #[arg(long, global = true, env = "PUSHWERK_DIR", default_value = "pushes")]
    pub dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and check every file in the folder; report all problems as file:line:col.
    Check {
        /// The folder (default: --dir).
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
    /// List every parameter a push can use, with type, source and a sample value.
    Params {
        /// Take `event.*` fields and samples from this event (JSON file).
        #[arg(long)]
        event: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Print the JSON Schema of a format, or write all of them into a folder.
    Schema {
        /// `push`, `oauth_account` or `event`.
        #[arg(value_parser = ["push", "oauth_account", "event"])]
        which: Option<String>,
        /// Write every schema file into this folder.
        #[arg(long)]
        write: Option<PathBuf>,
    },
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
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
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
            let catalog = load(&dir)?;
            print_diagnostics(&catalog);
            let errors = catalog.error_count();
            let warnings = catalog.diagnostics.len() - errors;
            let failed = errors > 0 || (deny_warnings && warnings > 0);
            let summary = format!(
                "{}: {} files, {} pushes, {} accounts, {} errors, {} warnings",
                dir.display(),
                catalog.files.len(),
                catalog.pushes.len(),
                catalog.accounts.len(),
                errors,
                warnings
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
        } => dry_run(&cli.dir, &push, event.as_deref(), format, show_secrets, now),
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
    }
}

fn read_event(path: &Path) -> anyhow::Result<Event> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read event file {}", path.display()))?;
    Event::from_json(&text).with_context(|| format!("event file {}", path.display()))
}

fn dry_run(
    dir: &Path,
    push_arg: &str,
    event_path: Option<&Path>,
    format: Format,
    show_secrets: bool,
    now: Option<DateTime<Utc>>,
) -> anyhow::Result<ExitCode> {
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
    let push = if is_file {
        let canonical = as_file.canonicalize().ok();
        let in_file: Vec<_> = catalog
            .pushes
            .iter()
            .filter(|p| p.file.canonicalize().ok() == canonical)
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
                many.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
            ),
        }
    } else {
        match catalog.push(push_arg) {
            Some(p) => p,
            None => {
                print_diagnostics(&catalog);
                let hint = crate::config::did_you_mean(
                    push_arg,
                    catalog.pushes.iter().map(|p| p.name().to_owned()),
                );
                bail!(
                    "no valid push named `{push_arg}` in {}{hint}",
                    dir.display()
                );
            }
        }
    };
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
    let tokens = TokenValues::new();
    if show_secrets && !push.compiled.accounts.is_empty() {
        bail!(
            "--show-secrets needs the access tokens of {}, and this build has no token store yet: run without --show-secrets to see placeholders",
            push.compiled.accounts.iter().cloned().collect::<Vec<_>>().join(", ")
        );
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

fn print_file_diagnostics(catalog: &Catalog, file: &Path) {
    for d in catalog
        .diagnostics
        .iter()
        .filter(|d| d.file == file && d.severity == Severity::Error)
    {
        eprintln!("{d}");
    }
}
