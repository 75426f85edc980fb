//! Reload: the folder read, each file's last good version kept in force
//! while it is broken or emptied, and the folder watched for changes and
//! SIGHUP.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Daemon, DaemonError};
use crate::config::{Catalog, Diagnostic, LoadOptions, Severity};

/// The folder's files as read: each with its text, or why it could not be read.
pub(super) type Sources = Vec<(PathBuf, Result<String, String>)>;

/// A file's state in `GET /v1/pushes`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileState {
    /// The file.
    pub file: PathBuf,
    /// Its problems at the last load (errors mean an older version may be in force).
    pub diagnostics: Vec<String>,
    /// Whether the last good version is in force because the current one is broken.
    pub stale: bool,
}

impl Daemon {
    /// Re-reads the folder and loads it, changed or not (at start, and on
    /// SIGHUP: `${file:…}` secrets outside the folder are read again too).
    /// A file that no longer loads, or is empty (truncated, about to be
    /// rewritten), keeps its last good version in force; its problems are
    /// reported. Only deleting a file removes its definitions. Only an
    /// unreadable folder is an error.
    pub fn reload(&self) -> Result<(), DaemonError> {
        self.load_folder(true).map(|_| ())
    }

    /// Re-reads the folder and loads it only if a file was added, removed
    /// or changed since the last load (a change notice may be for a read,
    /// an attribute, or a write of the same bytes). True if it loaded.
    pub fn reload_if_changed(&self) -> Result<bool, DaemonError> {
        self.load_folder(false)
    }

    fn load_folder(&self, force: bool) -> Result<bool, DaemonError> {
        let _one_at_a_time = self.reload_lock.lock().expect("reload lock");
        let mut files = Vec::new();
        crate::config::collect_files(&self.config.dir, &mut files)?;
        files.sort();
        let texts: Sources = files
            .iter()
            .map(|f| (f.clone(), crate::config::read_source(f)))
            .collect();
        {
            let mut last_read = self.last_read.lock().expect("last_read lock");
            if !force && last_read.as_ref() == Some(&texts) {
                tracing::debug!("folder notice without a content change: not reloaded");
                return Ok(false);
            }
            *last_read = Some(texts.clone());
        }
        let options = LoadOptions::default();
        let first = Catalog::from_sources(&self.config.dir, texts.clone(), &options);
        let broken: HashSet<PathBuf> = first
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.file.clone())
            .collect();
        let mut last_good = self.last_good.lock().expect("last_good lock");
        let mut stale = HashSet::new();
        // An emptied file (`: > f.yaml` before its new content is written)
        // is not a removal: its last good version stays in force.
        let emptied: HashSet<PathBuf> = texts
            .iter()
            .filter(|(f, t)| {
                matches!(t, Ok(text) if crate::config::is_blank(text))
                    && last_good
                        .get(f)
                        .is_some_and(|good| !crate::config::is_blank(good))
            })
            .map(|(f, _)| f.clone())
            .collect();
        let sources: Vec<(PathBuf, Result<String, String>)> = texts
            .into_iter()
            .map(|(f, t)| {
                if broken.contains(&f) || emptied.contains(&f) {
                    if let Some(good) = last_good.get(&f) {
                        stale.insert(f.clone());
                        return (f, Ok(good.clone()));
                    }
                } else if let Ok(text) = &t {
                    last_good.insert(f.clone(), text.clone());
                }
                (f, t)
            })
            .collect();
        last_good.retain(|f, _| files.contains(f));
        drop(last_good);
        let emptied_notes: Vec<Diagnostic> = emptied
            .iter()
            .map(|f| {
                Diagnostic::warning(
                    f,
                    crate::config::Position { line: 1, column: 1 },
                    "the file is empty: its last good version stays in force until it has content again or is deleted",
                )
            })
            .collect();
        let mut by_file: BTreeMap<PathBuf, Vec<&Diagnostic>> = BTreeMap::new();
        for d in first.diagnostics.iter().chain(&emptied_notes) {
            by_file.entry(d.file.clone()).or_default().push(d);
            match d.severity {
                Severity::Error => {
                    tracing::error!(file = %d.file.display(), line = d.line, column = d.column, "{}", d.message)
                }
                Severity::Warning => {
                    tracing::warn!(file = %d.file.display(), line = d.line, column = d.column, "{}", d.message)
                }
            }
        }
        let states = files
            .iter()
            .map(|f| FileState {
                file: f.clone(),
                diagnostics: by_file
                    .get(f)
                    .map(|ds| ds.iter().map(|d| d.to_string()).collect())
                    .unwrap_or_default(),
                stale: stale.contains(f),
            })
            .collect();
        // The first load is in force unless a broken file needed its last
        // good version.
        let catalog = if stale.is_empty() {
            first
        } else {
            Catalog::from_sources(&self.config.dir, sources, &options)
        };
        tracing::info!(
            pushes = catalog.pushes.len(),
            accounts = catalog.accounts.len(),
            "definitions loaded"
        );
        self.resolver().set_accounts(catalog.accounts.clone());
        let targets = catalog
            .pushes
            .iter()
            .map(|p| (p.name().to_owned(), self.target_slot(p)))
            .collect();
        *self.targets.write().expect("targets lock") = Arc::new(targets);
        *self.catalog.write().expect("catalog lock") = Arc::new(catalog);
        *self.files.write().expect("files lock") = states;
        // Counted once the new definitions are in force, so that whoever
        // sees the count sees them too.
        if self.ready.load(Ordering::SeqCst) {
            self.metrics.add("pushwerk_reloads_total", &[], 1);
        }
        self.wake.notify_one();
        Ok(true)
    }
}

/// How long the folder must be quiet after a change notice before it is
/// read again (an editor's save is several notices)…
const SETTLE: Duration = Duration::from_millis(150);
/// … but a folder that never stays quiet is read at least this often.
const SETTLE_AT_MOST: Duration = Duration::from_secs(1);

/// Whether a change notice can mean new content. Reads (opening, closing
/// a file not written, access times) cannot: reacting to them would make
/// every reload's own reads the cause of the next one.
fn may_change_content(event: &notify::Event) -> bool {
    use notify::event::{EventKind, MetadataKind, ModifyKind};
    !matches!(
        event.kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
    )
}

/// Watches the folder: a change notice (writes, creations, removals,
/// renames; never reads) is followed, once the folder has been quiet for
/// a moment, by [`Daemon::reload_if_changed`], which loads only if some
/// file's content differs. Also reloads on SIGHUP (logged), unconditionally.
/// The watcher lives as long as the returned value.
pub(super) fn watch(daemon: Arc<Daemon>) -> Result<notify::RecommendedWatcher, DaemonError> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (e.g. a lost notice) may hide a change: look.
        if event.as_ref().map_or(true, may_change_content) {
            let _ = tx.send(());
        }
    })
    .map_err(|source| DaemonError::Watch {
        dir: daemon.config.dir.clone(),
        source,
    })?;
    notify::Watcher::watch(
        &mut watcher,
        &daemon.config.dir,
        notify::RecursiveMode::Recursive,
    )
    .map_err(|source| DaemonError::Watch {
        dir: daemon.config.dir.clone(),
        source,
    })?;
    reload_on_hangup(daemon.clone())?;
    std::thread::Builder::new()
        .name("pushwerk-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                let deadline = std::time::Instant::now() + SETTLE_AT_MOST;
                while std::time::Instant::now() < deadline && rx.recv_timeout(SETTLE).is_ok() {}
                match daemon.reload_if_changed() {
                    Ok(true) => tracing::info!("folder changed: reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; the previous definitions stay in force")
                    }
                }
            }
        })
        .map_err(|e| DaemonError::io("cannot start the folder watcher", e))?;
    Ok(watcher)
}

/// SIGHUP reloads the folder (the convention of daemons such as Vector and
/// nginx) instead of ending the process. Needs a Tokio runtime.
fn reload_on_hangup(daemon: Arc<Daemon>) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup =
        signal(SignalKind::hangup()).map_err(|e| DaemonError::io("cannot handle SIGHUP", e))?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the folder");
            let d = daemon.clone();
            match tokio::task::spawn_blocking(move || d.reload()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reload failed; the previous definitions stay in force")
                }
                Err(e) => tracing::error!(error = %e, "reload failed"),
            }
        }
    });
    Ok(())
}
