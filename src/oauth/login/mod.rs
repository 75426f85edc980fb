//! `oauth login`: the authorization-code flow with PKCE (S256) and a random
//! `state`, on a loopback redirect URI (`http://localhost:PORT/callback`,
//! which Microsoft allows for native apps). It replaces the hand-made steps
//! (authorize URL in a browser, code exchanged with Postman).
//!
//! Everything a login needs is checked before the URL is shown
//! ([`preflight`]); the browser is told "signed in" only once the tokens are
//! stored ([`run`]); the listener survives idle clients and bad requests
//! ([`RedirectListener::wait`]).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

mod listener;

pub use listener::{Callback, RedirectListener};

use super::client::{TokenClient, TokenFailure, TokenResponse};
use super::{ImportedTokens, OAuthError, Resolver};
use crate::config::OAuthAccount;

/// Why a login failed. Never contains a code, token or secret.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The redirect carried another `state` than the one sent: possibly forged.
    #[error("the redirect's `state` does not match the one pushwerk sent: the login was not started here, or was tampered with; start again")]
    StateMismatch,
    /// The authorization server redirected with an error.
    #[error("authorization failed: {error}{}", description.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        /// The `error` parameter (e.g. `access_denied`).
        error: String,
        /// The `error_description` parameter.
        description: Option<String>,
    },
    /// The redirect had neither `code` nor `error`.
    #[error("the redirect URL has no `code`: paste the whole URL the browser was sent to")]
    NoCode,
    /// The pasted text is not a URL or query.
    #[error("not a redirect URL: {0}")]
    BadRedirect(String),
    /// The code exchange failed.
    #[error("the code exchange failed: {0}")]
    Exchange(String),
    /// The token response had no refresh token (was `offline_access` granted?).
    #[error("the token endpoint returned no refresh token for account `{0}`: `offline_access` was not granted (a provider may grant it only with `prompt=consent`: see the account's `authorize_params`)")]
    NoRefreshToken(String),
    /// The loopback listener failed.
    #[error("cannot listen for the redirect: {0}")]
    Listen(String),
    /// The account's client secret is unavailable.
    #[error("client secret: {0}")]
    Secret(String),
    /// The account cannot be signed in as configured (found before any URL is shown).
    #[error("account `{account}` cannot sign in: {reason}")]
    NotReady {
        /// The account.
        account: String,
        /// What to fix.
        reason: String,
    },
    /// No usable redirect arrived in time.
    #[error("no redirect arrived within {} minutes; start the login again", LOGIN_TIMEOUT.as_secs() / 60)]
    Timeout,
}

/// How long `oauth login` waits for the redirect (Microsoft's codes live
/// about 10 minutes, so a later redirect could not be redeemed anyway).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long one connection to the loopback listener may take to send its
/// request head; a client that connects and sends nothing is dropped then,
/// without holding up the others.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes of a request head read from the loopback listener.
const MAX_HEAD: usize = 16 * 1024;

/// Connections read at once by the loopback listener; more wait in the backlog.
const MAX_CONNECTIONS: usize = 32;

/// Authorize parameters pushwerk sets itself; `authorize_params` cannot replace them.
const RESERVED: [&str; 8] = [
    "client_id",
    "response_type",
    "redirect_uri",
    "response_mode",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// Checks everything a login needs before a URL is shown: the client
/// secret (and `extra` values) resolve, the token and authorize URLs are
/// http(s) URLs, and `authorize_params` replaces nothing pushwerk sets.
pub fn preflight(account: &OAuthAccount) -> Result<(), LoginError> {
    let name = &account.spec.name;
    let not_ready = |reason: String| LoginError::NotReady {
        account: name.clone(),
        reason,
    };
    if let Some(Err(e)) = &account.client_secret {
        return Err(not_ready(format!("client secret: {e}")));
    }
    for (key, value) in &account.extra {
        if let Err(e) = value {
            return Err(not_ready(format!("`extra.{key}`: {e}")));
        }
    }
    for (field, value) in [
        ("token_url", account.spec.token_url.clone()),
        ("authorize_url", authorize_endpoint(account)),
    ] {
        match url::Url::parse(&value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(not_ready(format!("`{field}` is not an http(s) URL"))),
        }
    }
    for key in account.spec.authorize_params.keys() {
        if RESERVED.contains(&key.as_str()) {
            return Err(not_ready(format!(
                "`authorize_params.{key}` would replace a parameter pushwerk sets itself"
            )));
        }
    }
    Ok(())
}

fn random_urlsafe(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// The S256 challenge of a PKCE verifier: base64url(sha256(verifier)), no padding.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// One login in progress: what was sent, to check what comes back.
pub struct LoginRequest {
    /// The URL to open in a browser.
    pub authorize_url: String,
    /// Where the browser is sent back to.
    pub redirect_uri: String,
    state: String,
    verifier: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

/// The authorize endpoint of `account`: its `authorize_url`, or its
/// `token_url` with `/token` replaced by `/authorize` (Microsoft's layout).
pub fn authorize_endpoint(account: &OAuthAccount) -> String {
    match &account.spec.authorize_url {
        Some(u) => u.clone(),
        None => {
            let t = account.spec.token_url.trim_end_matches('/');
            match t.strip_suffix("/token") {
                Some(base) => format!("{base}/authorize"),
                None => format!("{t}/authorize"),
            }
        }
    }
}

/// The account's scopes with `offline_access` added (for a refresh token).
pub fn login_scope(account: &OAuthAccount) -> String {
    let mut scopes: Vec<&str> = account.spec.scope.split_whitespace().collect();
    if !scopes.contains(&"offline_access") {
        scopes.push("offline_access");
    }
    scopes.join(" ")
}

/// The extra authorize parameters: the account's `authorize_params`, and
/// outside Microsoft `prompt=consent` when `offline_access` is asked for
/// and the account sets no `prompt` (OpenID Connect Core §11: without it a
/// compliant provider grants no `offline_access`). Empty values are left out.
pub fn extra_authorize_params(account: &OAuthAccount) -> Vec<(String, String)> {
    let mut params = account.spec.authorize_params.clone();
    let microsoft = super::resolver::is_microsoft_identity(&account.spec.token_url);
    let offline = login_scope(account)
        .split_whitespace()
        .any(|s| s == "offline_access");
    if !microsoft && offline && !params.contains_key("prompt") {
        params.insert("prompt".to_owned(), "consent".to_owned());
    }
    params
        .into_iter()
        .filter(|(k, v)| !v.is_empty() && !RESERVED.contains(&k.as_str()))
        .collect()
}

/// Starts a login: a fresh PKCE verifier and state, and the authorize URL.
pub fn begin(account: &OAuthAccount, redirect_uri: &str) -> Result<LoginRequest, LoginError> {
    preflight(account)?;
    let verifier = random_urlsafe(48);
    let state = random_urlsafe(24);
    let mut url =
        url::Url::parse(&authorize_endpoint(account)).map_err(|_| LoginError::NotReady {
            account: account.spec.name.clone(),
            reason: "`authorize_url` is not an http(s) URL".to_owned(),
        })?;
    url.query_pairs_mut()
        .append_pair("client_id", &account.spec.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_mode", "query")
        .append_pair("scope", &login_scope(account))
        .append_pair("state", &state)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256")
        .extend_pairs(extra_authorize_params(account));
    Ok(LoginRequest {
        authorize_url: url.to_string(),
        redirect_uri: redirect_uri.to_owned(),
        state,
        verifier,
    })
}

impl LoginRequest {
    /// The `code` of a redirect (a full URL, or just its query), after
    /// checking `state` and `error`.
    pub fn code_from_redirect(&self, redirect: &str) -> Result<String, LoginError> {
        let redirect = redirect.trim();
        let query = match url::Url::parse(redirect) {
            Ok(u) => u.query().unwrap_or_default().to_owned(),
            Err(_) if redirect.contains('=') => redirect.trim_start_matches('?').to_owned(),
            Err(e) => return Err(LoginError::BadRedirect(e.to_string())),
        };
        let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        if let Some(error) = params.get("error") {
            // The state is checked for errors too when present: a forged
            // error page must not be shown as Microsoft's word.
            if params.get("state").is_some_and(|s| *s != self.state) {
                return Err(LoginError::StateMismatch);
            }
            return Err(LoginError::Denied {
                error: error.clone(),
                description: params
                    .get("error_description")
                    .map(|d| d.chars().take(300).collect()),
            });
        }
        if params.get("state") != Some(&self.state) {
            return Err(LoginError::StateMismatch);
        }
        params.get("code").cloned().ok_or(LoginError::NoCode)
    }

    /// Exchanges `code` at the token endpoint (authorization-code grant with the PKCE verifier).
    pub async fn exchange(
        &self,
        client: &TokenClient,
        account: &OAuthAccount,
        code: &str,
    ) -> Result<TokenResponse, LoginError> {
        let mut form = BTreeMap::new();
        form.insert("grant_type".to_owned(), "authorization_code".to_owned());
        form.insert("code".to_owned(), code.to_owned());
        form.insert("redirect_uri".to_owned(), self.redirect_uri.clone());
        form.insert("client_id".to_owned(), account.spec.client_id.clone());
        form.insert("code_verifier".to_owned(), self.verifier.clone());
        form.insert("scope".to_owned(), login_scope(account));
        if let Some(secret) = &account.client_secret {
            let secret = secret
                .as_ref()
                .map_err(|e| LoginError::Secret(e.to_string()))?;
            form.insert("client_secret".to_owned(), secret.expose().to_owned());
        }
        client
            .request(&account.spec.token_url, &form)
            .await
            .map_err(|f: TokenFailure| LoginError::Exchange(f.error().to_string()))
    }
}

/// `text` with every occurrence of each of `secrets` masked.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(*s, "‹secret›");
    }
    out
}

/// Exchanges `code` and stores the tokens; the error text is safe to show
/// (code, verifier and client secret masked).
async fn finish(
    resolver: &Resolver,
    account: &OAuthAccount,
    login: &LoginRequest,
    code: &str,
) -> Result<(), OAuthError> {
    let client = TokenClient::new(Duration::from_secs(30));
    let secret = account
        .client_secret
        .as_ref()
        .and_then(|s| s.as_ref().ok())
        .map(|s| s.expose().to_owned())
        .unwrap_or_default();
    let masked = |e: LoginError| match e {
        LoginError::Exchange(text) => {
            LoginError::Exchange(scrub(&text, &[code, &login.verifier, &secret]))
        }
        other => other,
    };
    let response = login
        .exchange(&client, account, code)
        .await
        .map_err(masked)?;
    resolver
        .store_login(&account.spec.name, response, &login_scope(account))
        .await
}

/// `oauth login` end to end: checks the account ([`preflight`]), prints
/// the authorize URL on stderr, takes the redirect (on a loopback listener
/// on `port`, or pasted on stdin with `paste`), exchanges the code, stores
/// the tokens, and only then tells the browser it worked.
pub async fn run(
    resolver: &Resolver,
    account: &OAuthAccount,
    port: u16,
    paste: bool,
) -> Result<(), OAuthError> {
    preflight(account)?;
    if paste {
        let port = if port == 0 { 8400 } else { port };
        let login = begin(account, &format!("http://localhost:{port}/callback"))?;
        eprintln!("Open this URL in a browser, sign in, then paste the URL the browser ends up at (it will not load):\n\n{}\n", login.authorize_url);
        eprint!("redirect URL: ");
        let mut line = Vec::new();
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).take(MAX_HEAD as u64);
        tokio::io::AsyncBufReadExt::read_until(&mut stdin, b'\n', &mut line)
            .await
            .map_err(|e| LoginError::BadRedirect(e.to_string()))?;
        let code = login.code_from_redirect(&String::from_utf8_lossy(&line))?;
        return finish(resolver, account, &login, &code).await;
    }
    let listener = RedirectListener::bind(port).await?;
    let login = begin(account, &listener.redirect_uri)?;
    eprintln!(
        "Open this URL in a browser and sign in:\n\n{}\n\nwaiting for the redirect to {} …",
        login.authorize_url, listener.redirect_uri
    );
    let callback = listener.wait(&login).await?;
    let code = callback.code.clone();
    let outcome = finish(resolver, account, &login, &code).await;
    callback
        .answer(outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()))
        .await;
    outcome
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Storing what a sign-in obtained: here, with the login flow, so that the
/// resolver knows nothing of logins (the flow depends on it, not back).
impl Resolver {
    /// Stores the answer of an authorization-code exchange that asked for
    /// `requested_scope`. A response without `scope` granted exactly what
    /// was asked (RFC 6749 §5.1).
    pub async fn store_login(
        &self,
        account: &str,
        response: TokenResponse,
        requested_scope: &str,
    ) -> Result<(), OAuthError> {
        let refresh_token = response
            .refresh_token
            .clone()
            .ok_or_else(|| OAuthError::Login(LoginError::NoRefreshToken(account.to_owned())))?;
        self.import(
            account,
            ImportedTokens {
                access_token: Some(response.access_token),
                refresh_token,
                expires_in: Some(response.expires_in.unwrap_or(3600)),
                expires_at: None,
                scope: Some(response.scope.unwrap_or_else(|| requested_scope.to_owned())),
                token_type: None,
                ext_expires_in: None,
                id_token: None,
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests;
