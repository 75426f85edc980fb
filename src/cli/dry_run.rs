//! Local work on one push without a daemon: `dry-run` (render without
//! sending) and `send` (render and send once), plus the bounded readers of
//! event and input files they share with the other commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};

use crate::config::{Catalog, LoadOptions, Severity, Trigger};
use crate::engine::output::{self, Format};
use crate::engine::TokenValues;
use crate::event::Event;
use crate::store::StoreChoice;
use crate::targets::{self, Endpoints, SecretMode};
use std::sync::Arc;

use super::{client, load, open_resolver, remote, runtime, store_cmd, UsageError};

/// The most `--event`, `oauth import` and a key file are read of: the
/// ingest API's limit for an event, far above any token response.
pub(super) const INPUT_LIMIT: u64 = 1024 * 1024;

/// Reads at most [`INPUT_LIMIT`] bytes of `from` as UTF-8; more is an
/// error naming `what`, not an unbounded read.
pub(super) fn read_bounded(from: impl std::io::Read, what: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(from, INPUT_LIMIT + 1), &mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if bytes.len() as u64 > INPUT_LIMIT {
        bail!("{what} is larger than {} KiB", INPUT_LIMIT / 1024);
    }
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{what} is not UTF-8 text"))
}

pub(super) fn read_event(path: &Path) -> anyhow::Result<Event> {
    let what = format!("event file {}", path.display());
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {what}"))?;
    let text = read_bounded(file, &what)?;
    Event::from_json(&text).with_context(|| format!("event file {}", path.display()))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn dry_run(
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
pub(super) fn check_one_file(file: &Path) -> anyhow::Result<Catalog> {
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
pub(super) fn select_push(dir: &Path, push_arg: &str) -> anyhow::Result<(Catalog, usize)> {
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

pub(super) fn print_file_diagnostics(catalog: &Catalog, file: &Path) {
    for d in catalog
        .diagnostics
        .iter()
        .filter(|d| d.file == file && d.severity == Severity::Error)
    {
        eprintln!("{d}");
    }
}

pub(super) fn send(
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
