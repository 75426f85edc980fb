//! An OAuth account as loaded: shared by the loader and the push compiler
//! (which checks the accounts a push names), so that neither imports the other.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::locate::Position;
use super::model::OAuthAccountSpec;
use crate::secret::{Secret, SecretError};

/// An OAuth account as loaded: its form, with secrets resolved (or the reason
/// they could not be).
#[derive(Debug, Clone)]
pub struct OAuthAccount {
    /// The account as written (secret fields hold their `${…}` references).
    pub spec: OAuthAccountSpec,
    /// The file it was read from.
    pub file: PathBuf,
    /// Where its document starts.
    pub position: Position,
    /// The resolved client secret, if one is configured.
    pub client_secret: Option<Result<Secret, SecretError>>,
    /// The resolved extra post-body values.
    pub extra: BTreeMap<String, Result<Secret, SecretError>>,
}
