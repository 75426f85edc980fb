//! Encryption at rest of token records: ChaCha20-Poly1305 with a random
//! nonce per record and the account name as associated data (a record
//! cannot be moved to another account). Without a key, records are stored
//! as plain JSON and `oauth status` says so.

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
    #[error("token state is encrypted at rest: set PUSHWERK_KEY or PUSHWERK_KEY_FILE")]
    KeyNeeded,
    /// Decryption failed: another key, or a damaged record.
    #[error("cannot decrypt the token state of account `{0}`: wrong key or damaged record")]
    Decrypt(String),
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

    /// From `PUSHWERK_KEY` (the key) or `PUSHWERK_KEY_FILE` (a file holding it); plain if neither is set.
    pub fn from_env(lookup: &crate::config::secret::EnvLookup) -> Result<Sealer, SealError> {
        if let Some(key) = lookup("PUSHWERK_KEY").filter(|k| !k.trim().is_empty()) {
            return Sealer::from_key_text(&key);
        }
        if let Some(path) = lookup("PUSHWERK_KEY_FILE").filter(|k| !k.trim().is_empty()) {
            // A key is 44 to 64 characters: a few KiB is plenty, and a
            // wrong path (a log, a device) is not read on and on.
            let mut text = String::new();
            let file = std::fs::File::open(&path)
                .map_err(|e| SealError::KeyFile(path.clone(), e.kind().to_string()))?;
            std::io::Read::read_to_string(&mut std::io::Read::take(file, 4096), &mut text)
                .map_err(|e| SealError::KeyFile(path.clone(), e.kind().to_string()))?;
            return Sealer::from_key_text(&text);
        }
        Ok(Sealer::plain())
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

#[cfg(test)]
mod tests {
    use super::*;

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
