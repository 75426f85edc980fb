//! The store and key commands: `store migrate`, `oauth rekey`,
//! `oauth keygen --write`, and where the key of token state comes from
//! (`--key-file` and the environment, see [`KeySpec`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::{bail, Context as _};

use crate::config::Catalog;
use crate::oauth::seal::{key_sibling, write_new_key_file, KeySpec, Sealer};
use crate::oauth::{KeyUse, Resolver, ResolverSettings, TokenStore};
use crate::store::StoreChoice;

/// `pushwerk store …`
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the data directory's store into the other backend (tokens as
    /// sealed, queued and retrying jobs, dead letters, the delivery log,
    /// accepted event ids, cron marks, the job id counter). The old store
    /// is kept beside it as `sled.migrated-<time>` or
    /// `pushwerk.redb.migrated-<time>`. `--to postgres` (with
    /// `--database-url`) copies it into an empty PostgreSQL database for
    /// several nodes and leaves it in place; `--from postgres --to
    /// redb|sled` copies such a database back into a data directory that
    /// holds no store, and leaves the database as it was. Stop the daemon
    /// (every node) first, and keep the same key file: the tokens stay
    /// sealed with it.
    Migrate {
        /// The store to copy from: `sled` or `redb` (the data directory's),
        /// or `postgres` (the database of --database-url).
        #[arg(long, value_parser = parse_backend)]
        from: StoreChoice,
        /// The store to copy into: `redb` or `sled` (in the data directory,
        /// which must hold no such store yet), or `postgres` (an empty
        /// database).
        #[arg(long, value_parser = parse_backend)]
        to: StoreChoice,
    },
}

fn parse_backend(s: &str) -> Result<StoreChoice, String> {
    match s {
        "sled" => Ok(StoreChoice::Sled),
        "redb" => Ok(StoreChoice::Redb),
        "postgres" => Ok(StoreChoice::Postgres),
        other => Err(format!(
            "unknown store `{other}`: expected sled, redb or postgres"
        )),
    }
}

/// `--key-file`, set once by [`crate::cli::run`].
static KEY_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Records `--key-file` for every command of this process.
pub(crate) fn set_key_file(flag: Option<PathBuf>) {
    let _ = KEY_FILE.set(flag);
}

/// `--key-file`, if given.
pub(crate) fn key_file() -> Option<PathBuf> {
    KEY_FILE.get().cloned().flatten()
}

/// Where the key of token state is (see [`KeySpec::resolve`]).
pub(crate) fn key_spec() -> anyhow::Result<KeySpec> {
    Ok(KeySpec::resolve(
        key_file().as_deref(),
        &crate::config::secret::process_env,
    )?)
}

/// Opens the token store of `data` with the configured key; `use_` says
/// whether a missing key file may be generated.
pub(crate) fn open_resolver_with(
    data: &Path,
    store: StoreChoice,
    catalog: &Catalog,
    use_: KeyUse,
) -> anyhow::Result<Resolver> {
    let tokens = TokenStore::open_keyed(data, store, &key_spec()?, use_)?;
    Ok(Resolver::new(
        tokens,
        catalog.accounts.clone(),
        ResolverSettings::default(),
    ))
}

/// The first line of `oauth status`: whether and where token state is
/// encrypted, loudly when it is not.
pub(crate) fn encryption_line(encrypted: bool) -> String {
    let spec = key_spec().ok();
    match (encrypted, spec) {
        (_, Some(KeySpec::Disabled)) => "NOT encrypted at rest: encryption is turned off (PUSHWERK_KEY=none); anyone who can read the data directory can use the refresh tokens. Unset PUSHWERK_KEY to encrypt them".into(),
        (true, Some(spec)) => format!("encrypted at rest (ChaCha20-Poly1305), key: {}", spec.describe()),
        (true, None) => "encrypted at rest (ChaCha20-Poly1305)".into(),
        (false, _) => "NOT encrypted at rest (some records are plain)".into(),
    }
}

/// What a migration's summary says of the key: the copied tokens stay
/// sealed, so the processes that use the copy need the key of `whose`.
fn same_key(whose: &str) -> String {
    match key_spec() {
        Ok(spec) => match spec.path() {
            Some(path) => format!("the same key file as {whose} ({})", path.display()),
            None => format!("the same key as {whose} ({})", spec.describe()),
        },
        Err(_) => format!("the same key file as {whose}"),
    }
}

/// `store migrate --from --to`.
pub(crate) fn migrate(data: &Path, from: StoreChoice, to: StoreChoice) -> anyhow::Result<ExitCode> {
    if to == StoreChoice::Postgres && from != StoreChoice::Postgres {
        // #15: one node's store into the database several nodes share.
        let pg = crate::store::PgStore::open_configured()?;
        let trees = crate::store::migrate::copy_to_postgres(data, from, &pg)?;
        let total: usize = trees.iter().map(|(_, n)| n).sum();
        println!(
            "copied {} into PostgreSQL: {total} records ({}); the {} store in {} is left as it was (delete it once the nodes serve). The tokens stay sealed: run every node with {}",
            if from == StoreChoice::Sled { "sled" } else { "redb" },
            trees.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", "),
            if from == StoreChoice::Sled { "sled" } else { "redb" },
            data.display(),
            same_key("this one")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if from == StoreChoice::Postgres && to != StoreChoice::Postgres {
        // #15, the way back: the shared database into one data directory.
        if crate::store::postgres::settings().is_none_or(|s| s.url.trim().is_empty()) {
            bail!("store migrate --from postgres needs --database-url (or PUSHWERK_DATABASE_URL)");
        }
        let pg = crate::store::PgStore::open_configured()?;
        let trees = crate::store::migrate::copy_from_postgres(&pg, data, to)?;
        drop(pg);
        let total: usize = trees.iter().map(|(_, n)| n).sum();
        println!(
            "copied PostgreSQL into {}: {total} records ({}) in {}; the database is left as it was (start no node on it any more, or events and cron ticks are delivered twice). The tokens stay sealed: run with {}",
            if to == StoreChoice::Sled { "sled" } else { "redb" },
            trees.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", "),
            data.display(),
            same_key("the nodes")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if from == StoreChoice::Postgres || to == StoreChoice::Postgres {
        bail!("store migrate needs two different stores: --from postgres --to redb|sled, or --from redb|sled --to postgres");
    }
    let done = crate::store::migrate::migrate(data, from, to)?;
    let total: usize = done.trees.iter().map(|(_, n)| n).sum();
    println!(
        "migrated {} to {}: {total} records ({}); the old store is kept as {} (delete it once the new one serves)",
        if from == StoreChoice::Sled { "sled" } else { "redb" },
        if to == StoreChoice::Sled { "sled" } else { "redb" },
        done.trees
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        done.old_store.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `oauth keygen --write`: a new key into the key file, which must not
/// exist yet (`oauth rekey` replaces one).
pub(crate) fn keygen_write() -> anyhow::Result<ExitCode> {
    let spec = key_spec()?;
    let Some(path) = spec.path() else {
        bail!(
            "the key comes from {}, not from a key file: there is nothing to write",
            spec.describe()
        );
    };
    if std::fs::symlink_metadata(path).is_ok() {
        bail!(
            "the key file {} exists already: `pushwerk oauth rekey` replaces a key (and re-seals the tokens)",
            path.display()
        );
    }
    write_new_key_file(path, &Sealer::generate_key())?;
    println!(
        "wrote a new key to {} (mode 0600); back it up together with the data directory",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `oauth rekey`: every token record re-sealed with a new key (generated,
/// or read from `new_key_file`), the store rewritten so that no record
/// sealed with the old key stays in its files, and the key file replaced;
/// the old key is kept as `KEY.old` until the rewrite is durable.
pub(crate) fn rekey(
    data: &Path,
    store: StoreChoice,
    new_key_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let spec = key_spec()?;
    if spec == KeySpec::Disabled {
        bail!("encryption is turned off (PUSHWERK_KEY=none): unset PUSHWERK_KEY, and the next start seals the tokens with a new key");
    }
    let Some(old) = spec.load()? else {
        bail!(
            "there is no key yet ({} does not exist): nothing to re-key; a key is generated when tokens are first stored",
            spec.describe()
        );
    };
    if !data.exists() {
        bail!(
            "there is no data directory {}: nothing to re-key",
            data.display()
        );
    }
    if spec.path().is_none() && new_key_file.is_none() {
        bail!("the key comes from PUSHWERK_KEY, so there is no key file to replace: give the new key with --new-key-file FILE (e.g. made by `pushwerk --key-file FILE oauth keygen --write`), then set PUSHWERK_KEY to it");
    }
    let new_text = match new_key_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the new key file {}", p.display()))?;
            Sealer::from_key_text(&text)?;
            text.trim().to_owned()
        }
        None => Sealer::generate_key(),
    };
    let new = Sealer::from_key_text(&new_text)?;
    // The key file to replace; with PUSHWERK_KEY there is none.
    let target = spec.path().map(Path::to_path_buf);
    let staged = target.as_ref().map(|t| key_sibling(t, "new"));
    if let Some(staged) = &staged {
        let _ = std::fs::remove_file(staged);
        write_new_key_file(staged, &new_text)?;
    }
    let mut switched = false;
    let result = crate::store::open_prepared(data, store, |s| {
        crate::oauth::token_store_seal_plain(s, &old)?;
        let n = crate::oauth::token_store_reseal(s, &old, &new).map_err(|e| match e {
            crate::oauth::OAuthError::Store(e) => e,
            other => crate::store::StoreError::Refused(other.to_string()),
        })?;
        // Re-sealed and flushed: the new key is the one that opens the
        // store now. The old one stays as KEY.old until the store is
        // rewritten (open_prepared compacts next).
        if let (Some(target), Some(staged)) = (&target, &staged) {
            let io = |e: std::io::Error| {
                crate::store::StoreError::Refused(format!(
                    "the tokens are re-sealed with the new key in {}, but it could not be put in place ({e}): move it to {} by hand",
                    staged.display(),
                    target.display()
                ))
            };
            let old_copy = key_sibling(target, "old");
            let _ = std::fs::remove_file(&old_copy);
            std::fs::hard_link(target, &old_copy).map_err(io)?;
            std::fs::rename(staged, target).map_err(io)?;
            if let Some(dir) = target.parent() {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            switched = true;
        }
        println!("re-sealed the token state of {n} account(s) with the new key");
        Ok(())
    });
    match result {
        Ok(opened) => drop(opened),
        Err(e) => {
            if !switched {
                if let Some(staged) = &staged {
                    let _ = std::fs::remove_file(staged);
                }
            }
            return Err(e.into());
        }
    }
    match &target {
        Some(target) => {
            // The store is rewritten: no record sealed with the old key is
            // left, and the old key is of no more use.
            let _ = std::fs::remove_file(key_sibling(target, "old"));
            println!(
                "the key in {} is new; the store was rewritten, so no record sealed with the old key remains. Back up the new key file together with the data directory",
                target.display()
            );
        }
        None => println!(
            "the store was rewritten with the key from {}: set PUSHWERK_KEY to it (or PUSHWERK_KEY_FILE to that file) before the next start",
            new_key_file.map(|p| p.display().to_string()).unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
