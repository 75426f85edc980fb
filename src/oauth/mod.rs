//! OAuth accounts: token state in the store, refresh at render time
//! (single-flight per account, with backoff), keep-alive, and the two ways
//! tokens get in: `oauth import` (the control panel's paste-the-tokens way)
//! and `oauth login` (authorization code with PKCE on a loopback redirect).

pub mod client;
pub mod login;
pub mod record;
mod resolver;
pub mod seal;
mod token_store;

use std::time::Duration;

pub use record::{AccountState, TokenError, TokenRecord};
pub use resolver::{AccountStatus, ImportError, ImportedTokens, Resolver, ResolverSettings};
pub(crate) use token_store::{
    reseal_records as token_store_reseal, seal_plain_records as token_store_seal_plain,
};
pub use token_store::{KeyUse, TokenStore};

use crate::config::SecretError;
use crate::store::StoreError;

/// Why an access token could not be had. Never contains a token or secret.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// No account of that name is configured.
    #[error("unknown OAuth account `{0}`")]
    UnknownAccount(String),
    /// The account has never been given tokens.
    #[error("OAuth account `{0}` has no tokens yet: run `pushwerk oauth login {0}` or `pushwerk oauth import {0}`")]
    NoTokens(String),
    /// The token endpoint refused the grant; a person must log in again.
    #[error("OAuth account `{account}` needs a new login ({reason}): run `pushwerk oauth login {account}` or `pushwerk oauth import {account}`")]
    NeedsReauth {
        /// The account.
        account: String,
        /// The OAuth error, AADSTS code and description.
        reason: String,
    },
    /// The token endpoint is unavailable; try again after `retry_in`.
    #[error("token endpoint of OAuth account `{account}` is unavailable ({reason}); next attempt in {}", humantime::format_duration(*retry_in))]
    Unavailable {
        /// The account.
        account: String,
        /// How long until the next token request is allowed.
        retry_in: Duration,
        /// What failed.
        reason: String,
    },
    /// The stored access token has expired and the caller makes no token requests.
    #[error("the stored access token of OAuth account `{0}` has expired and a dry-run makes no token request: run `pushwerk oauth refresh {0}` first")]
    StoredTokenExpired(String),
    /// The account's client secret is not available.
    #[error("client secret of OAuth account `{account}`: {source}")]
    Secret {
        /// The account.
        account: String,
        /// Why.
        source: SecretError,
    },
    /// The token store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record cannot be decrypted or decoded.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// Login failed.
    #[error(transparent)]
    Login(#[from] login::LoginError),
}
