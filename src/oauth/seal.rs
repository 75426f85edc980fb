//! Encryption at rest of token records: ChaCha20-Poly1305 with a random
//! nonce per record and the account name as associated data (a record
//! cannot be moved to another account). The key comes from `--key-file`,
//! `PUSHWERK_KEY`, `PUSHWERK_KEY_FILE` or the default key file
//! (`$XDG_CONFIG_HOME/pushwerk/key`, else `~/.config/pushwerk/key`), which
//! is generated on first use — outside the data directory, so that a copy
//! of the data alone reveals no token. Only `PUSHWERK_KEY=none` stores
//! records as plain JSON, and `oauth status` says so.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

const PLAIN: u8 = 0;
const CHACHA: u8 = 1;

/// Why a key or a record could not be used. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The configured key is not 32 bytes of hex or base64.
    #[error("the encryption key must be 32 bytes written as 64 hex digits or base64 (generate one with `pushwerk oauth keygen`)")]
    BadKey,
    /// The key file cannot be read.
    #[error("cannot read key file {0}: {1}")]
    KeyFile(String, String),
    /// A record is encrypted but no key is configured.
    #[error("token state is encrypted at rest but encryption is turned off (PUSHWERK_KEY=none): give the key it was sealed with (--key-file, PUSHWERK_KEY or PUSHWERK_KEY_FILE)")]
    KeyNeeded,
    /// Decryption failed: another key, or a damaged record.
    #[error("cannot decrypt the token state of account `{0}`: it was sealed with another key (or is damaged): restore that key file, or sign the account in again with `pushwerk oauth import {0}` or `pushwerk oauth login {0}`")]
    Decrypt(String),
    /// The key file is missing while the store holds records sealed with
    /// a key: generating a new one would make them unreadable for good.
    #[error("the key file {path} does not exist, but the token state of {} is encrypted with a key: restore the key file (from the backup of {path}, or point --key-file / PUSHWERK_KEY_FILE at it); no new key was generated, so nothing is lost yet. If the key is lost for good, create a new one with `pushwerk oauth keygen --write` and sign the accounts in again with `pushwerk oauth import NAME` or `pushwerk oauth login NAME` ({})", .accounts.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", "), .accounts.join(", "))]
    KeyLost {
        /// The key file that is gone.
        path: String,
        /// The accounts whose records are sealed.
        accounts: Vec<String>,
    },
    /// No key is given and there is no place for the default key file.
    #[error("no key for token state: neither --key-file, PUSHWERK_KEY nor PUSHWERK_KEY_FILE is set, and neither XDG_CONFIG_HOME nor HOME names a directory for the default key file: give one of them (or PUSHWERK_KEY=none to store tokens unencrypted)")]
    NoKeyLocation,
    /// The key file cannot be created.
    #[error("cannot create the key file {0}: {1}")]
    KeyCreate(String, String),
    /// A record's format byte is unknown.
    #[error("token state of account `{0}` has an unknown format")]
    Format(String),
}

/// Seals and opens token records.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<ChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("encrypted", &self.is_encrypted())
            .finish()
    }
}

impl Sealer {
    /// No encryption.
    pub fn plain() -> Sealer {
        Sealer { cipher: None }
    }

    /// Encryption with a key written as 64 hex digits or base64 of 32 bytes.
    pub fn from_key_text(text: &str) -> Result<Sealer, SealError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SealError::BadKey)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| SealError::BadKey)?
        };
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        Ok(Sealer {
            cipher: Some(ChaCha20Poly1305::new(Key::from_slice(&bytes))),
        })
    }

    /// Reads a key file (at most 4 KiB: a key is 44 to 64 characters, and
    /// a wrong path — a log, a device — is not read on and on).
    pub fn from_key_file(path: &Path) -> Result<Sealer, SealError> {
        let shown = path.display().to_string();
        let mut text = String::new();
        let file = std::fs::File::open(path).map_err(|e| {
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file (a key file named by --key-file or PUSHWERK_KEY_FILE is never generated, so that a wrong path cannot start a second key: `(umask 077; pushwerk oauth keygen > FILE)` makes one)".to_owned(),
                kind => kind.to_string(),
            };
            SealError::KeyFile(shown.clone(), reason)
        })?;
        warn_if_readable_by_others(path, &file);
        std::io::Read::read_to_string(&mut std::io::Read::take(file, 4096), &mut text)
            .map_err(|e| SealError::KeyFile(shown, e.kind().to_string()))?;
        Sealer::from_key_text(&text)
    }

    /// A new random key, as 64 hex digits.
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether records are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Whether a stored record is plain (written without a key): such a
    /// record is sealed, and the store compacted, once a key is set.
    pub fn is_plain(sealed: &[u8]) -> bool {
        sealed.first() == Some(&PLAIN)
    }

    /// Seals `plaintext` of `account`.
    pub fn seal(&self, account: &str, plaintext: &[u8]) -> Vec<u8> {
        match &self.cipher {
            None => {
                let mut out = Vec::with_capacity(plaintext.len() + 1);
                out.push(PLAIN);
                out.extend_from_slice(plaintext);
                out
            }
            Some(cipher) => {
                let mut nonce = [0u8; 12];
                rand::rng().fill_bytes(&mut nonce);
                let sealed = cipher
                    .encrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: plaintext,
                            aad: account.as_bytes(),
                        },
                    )
                    .expect("ChaCha20-Poly1305 encryption of a record cannot fail");
                let mut out = Vec::with_capacity(1 + 12 + sealed.len());
                out.push(CHACHA);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                out
            }
        }
    }

    /// Opens a sealed record of `account`. A plain record is read with or
    /// without a key (it is encrypted on its next write).
    pub fn open(&self, account: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        match sealed.first() {
            Some(&PLAIN) => Ok(sealed[1..].to_vec()),
            Some(&CHACHA) => {
                let cipher = self.cipher.as_ref().ok_or(SealError::KeyNeeded)?;
                if sealed.len() < 13 {
                    return Err(SealError::Decrypt(account.to_owned()));
                }
                cipher
                    .decrypt(
                        Nonce::from_slice(&sealed[1..13]),
                        Payload {
                            msg: &sealed[13..],
                            aad: account.as_bytes(),
                        },
                    )
                    .map_err(|_| SealError::Decrypt(account.to_owned()))
            }
            _ => Err(SealError::Format(account.to_owned())),
        }
    }
}

/// Where the key of token state comes from, in order: `--key-file`,
/// `PUSHWERK_KEY` (`none` turns encryption off), `PUSHWERK_KEY_FILE`, the
/// default key file. A key file given by `--key-file` or the default one
/// may be generated (see [`KeySpec::create`]); one named by
/// `PUSHWERK_KEY_FILE` must exist.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// The key itself (`PUSHWERK_KEY`).
    Text(String),
    /// Encryption turned off (`PUSHWERK_KEY=none`).
    Disabled,
    /// A key file.
    File {
        /// Its path.
        path: PathBuf,
        /// Whether it is generated when missing.
        create: bool,
    },
}

impl std::fmt::Debug for KeySpec {
    /// Never the key itself: where it comes from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySpec({})", self.describe())
    }
}

/// Mode of a generated key file.
const KEY_MODE: u32 = 0o600;

impl KeySpec {
    /// The key setting of this process: `flag` is `--key-file`.
    pub fn resolve(
        flag: Option<&Path>,
        lookup: &crate::config::secret::EnvLookup,
    ) -> Result<KeySpec, SealError> {
        if let Some(path) = flag.filter(|p| !p.as_os_str().is_empty()) {
            return Ok(KeySpec::File {
                path: path.to_path_buf(),
                create: true,
            });
        }
        if let Some(key) = lookup("PUSHWERK_KEY").filter(|k| !k.trim().is_empty()) {
            if key.trim().eq_ignore_ascii_case("none") {
                return Ok(KeySpec::Disabled);
            }
            return Ok(KeySpec::Text(key));
        }
        if let Some(path) = lookup("PUSHWERK_KEY_FILE").filter(|k| !k.trim().is_empty()) {
            return Ok(KeySpec::File {
                path: path.into(),
                create: false,
            });
        }
        let config = lookup("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                lookup("HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .map(|h| h.join(".config"))
            })
            .ok_or(SealError::NoKeyLocation)?;
        Ok(KeySpec::File {
            path: config.join("pushwerk").join("key"),
            create: true,
        })
    }

    /// Where the key is, for messages and `oauth status` (never the key).
    pub fn describe(&self) -> String {
        match self {
            KeySpec::Text(_) => "PUSHWERK_KEY".into(),
            KeySpec::Disabled => "none (PUSHWERK_KEY=none)".into(),
            KeySpec::File { path, .. } => path.display().to_string(),
        }
    }

    /// The key file, if the key is in one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            KeySpec::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The sealer of an existing key; `None` if the key file is missing and
    /// may be generated (a missing `PUSHWERK_KEY_FILE` is an error).
    pub fn load(&self) -> Result<Option<Sealer>, SealError> {
        match self {
            KeySpec::Text(text) => Sealer::from_key_text(text).map(Some),
            KeySpec::Disabled => Ok(Some(Sealer::plain())),
            KeySpec::File { path, create } => match std::fs::symlink_metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && *create => Ok(None),
                _ => Sealer::from_key_file(path).map(Some),
            },
        }
    }

    /// Generates the key file (its directory `0700` if new, the file `0600`,
    /// created exclusively: of two processes racing, one writes it and the
    /// other reads it) and returns its sealer.
    pub fn create(&self) -> Result<Sealer, SealError> {
        let KeySpec::File { path, .. } = self else {
            return self.load()?.ok_or(SealError::NoKeyLocation);
        };
        write_new_key_file(path, &Sealer::generate_key())?;
        Sealer::from_key_file(path)
    }
}

/// Says so when a key file may be read by other users (group or other
/// permission bits set, e.g. copied from a backup with `cp`): whoever reads
/// it can decrypt the tokens of any copy of the data directory. A warning,
/// not a refusal, so that a running setup keeps working while it is fixed.
fn warn_if_readable_by_others(path: &Path, file: &std::fs::File) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            tracing::warn!(
                "the key file {} has mode {mode:03o}: other users may read it and decrypt the stored tokens; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

/// `PATH.suffix` beside a key file (`key` → `key.new`, `key.old`): where
/// `oauth rekey` stages the new key and keeps the old one.
pub fn key_sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes `key` into a new file at `path` (`0600`, exclusively, synced; the
/// directory created `0700` if missing). An existing file is left alone
/// and is not an error: it is read instead by the caller.
pub fn write_new_key_file(path: &Path, key: &str) -> Result<(), SealError> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |e: std::io::Error| SealError::KeyCreate(path.display().to_string(), e.to_string());
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(err)?;
    }
    // Written under a private temporary name, then linked into place:
    // whoever reads the key file sees all of a key or none.
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_MODE)
        .open(&tmp)
        .map_err(err)?;
    let written = file
        .write_all(format!("{key}\n").as_bytes())
        .and_then(|()| file.sync_all());
    drop(file);
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(err(e)),
    }
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_found_in_order_and_generated_private() {
        let tmp = tempfile::tempdir().unwrap();
        let xdg = tmp.path().join("xdg");
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let lookup = env(vec![
            ("XDG_CONFIG_HOME", xdg.display().to_string()),
            ("HOME", "/home/x".into()),
        ]);
        let spec = KeySpec::resolve(None, &lookup).unwrap();
        let path = xdg.join("pushwerk").join("key");
        assert_eq!(
            spec,
            KeySpec::File {
                path: path.clone(),
                create: true
            }
        );
        assert_eq!(spec.load().unwrap().map(|_| ()), None);
        let sealer = spec.create().unwrap();
        assert!(sealer.is_encrypted());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // A second create keeps the first key.
        let sealed = sealer.seal("a", b"x");
        assert_eq!(spec.create().unwrap().open("a", &sealed).unwrap(), b"x");
        // HOME without XDG; PUSHWERK_KEY=none; nothing at all.
        let home = env(vec![("HOME", "/home/x".into())]);
        assert_eq!(
            KeySpec::resolve(None, &home).unwrap().path(),
            Some(Path::new("/home/x/.config/pushwerk/key"))
        );
        let none = env(vec![("PUSHWERK_KEY", "none".into()), ("HOME", "/h".into())]);
        assert_eq!(KeySpec::resolve(None, &none).unwrap(), KeySpec::Disabled);
        assert_eq!(
            KeySpec::resolve(None, &env(vec![])).unwrap_err(),
            SealError::NoKeyLocation
        );
        // Debug output never shows a key.
        let text = KeySpec::Text("00".repeat(32));
        assert_eq!(format!("{text:?}"), "KeySpec(PUSHWERK_KEY)");
        // --key-file wins over everything.
        let flag = KeySpec::resolve(Some(Path::new("/k")), &none).unwrap();
        assert_eq!(flag.path(), Some(Path::new("/k")));
    }

    #[test]
    fn sealed_records_hide_the_plaintext_and_bind_the_account() {
        let s = Sealer::from_key_text(&Sealer::generate_key()).unwrap();
        let a = s.seal("ms_mail", b"CANARY-refresh-token");
        let b = s.seal("ms_mail", b"CANARY-refresh-token");
        assert_ne!(a, b, "a nonce per record");
        assert!(!a.windows(6).any(|w| w == b"CANARY"));
        assert_eq!(s.open("ms_mail", &a).unwrap(), b"CANARY-refresh-token");
        assert_eq!(s.open("crm", &a), Err(SealError::Decrypt("crm".into())));
        let other = Sealer::from_key_text(&Sealer::generate_key()).unwrap();
        assert!(other.open("ms_mail", &a).is_err());
        assert_eq!(
            Sealer::plain().open("ms_mail", &a),
            Err(SealError::KeyNeeded)
        );
    }

    #[test]
    fn keys_in_hex_or_base64_and_bad_keys_refused() {
        let hex = Sealer::generate_key();
        assert!(Sealer::from_key_text(&hex).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(Sealer::from_key_text(&b64).is_ok());
        assert_eq!(
            Sealer::from_key_text("short").unwrap_err(),
            SealError::BadKey
        );
        assert_eq!(
            Sealer::from_key_text(&"ab".repeat(16)).unwrap_err(),
            SealError::BadKey
        );
    }
}
