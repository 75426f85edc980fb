//! `oauth login`: the authorization-code flow with PKCE (S256) and a random
//! `state`, on a loopback redirect URI (`http://localhost:PORT/callback`,
//! which Microsoft allows for native apps). It replaces the hand-made steps
//! (authorize URL in a browser, code exchanged with Postman).

use std::collections::BTreeMap;

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::client::{TokenClient, TokenFailure, TokenResponse};
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
    #[error("the token endpoint returned no refresh token for account `{0}`: add `offline_access` to its scope")]
    NoRefreshToken(String),
    /// The loopback listener failed.
    #[error("cannot listen for the redirect: {0}")]
    Listen(String),
    /// The account's client secret is unavailable.
    #[error("client secret: {0}")]
    Secret(String),
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

/// Starts a login: a fresh PKCE verifier and state, and the authorize URL.
pub fn begin(account: &OAuthAccount, redirect_uri: &str) -> LoginRequest {
    let verifier = random_urlsafe(48);
    let state = random_urlsafe(24);
    let mut url =
        url::Url::parse(&authorize_endpoint(account)).expect("authorize URLs are checked at load");
    url.query_pairs_mut()
        .append_pair("client_id", &account.spec.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_mode", "query")
        .append_pair("scope", &login_scope(account))
        .append_pair("state", &state)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    LoginRequest {
        authorize_url: url.to_string(),
        redirect_uri: redirect_uri.to_owned(),
        state,
        verifier,
    }
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

/// A loopback listener for the redirect.
pub struct RedirectListener {
    listener: TcpListener,
    /// `http://localhost:PORT/callback`.
    pub redirect_uri: String,
}

impl RedirectListener {
    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub async fn bind(port: u16) -> Result<RedirectListener, LoginError> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| LoginError::Listen(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| LoginError::Listen(e.to_string()))?
            .port();
        Ok(RedirectListener {
            listener,
            redirect_uri: format!("http://localhost:{port}/callback"),
        })
    }

    /// Serves requests until one reaches `/callback`; answers the browser
    /// with a short page and returns that request's code (checked).
    pub async fn wait(&self, login: &LoginRequest) -> Result<String, LoginError> {
        loop {
            let (mut socket, _) = self
                .listener
                .accept()
                .await
                .map_err(|e| LoginError::Listen(e.to_string()))?;
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0;
            // Read the request head (the redirect is a GET without a body).
            while len < buf.len() {
                let n = socket.read(&mut buf[len..]).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let target = head
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("/")
                .to_owned();
            if !target.starts_with("/callback") {
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                continue;
            }
            let result = login.code_from_redirect(&format!("http://localhost{target}"));
            let page = match &result {
                Ok(_) => "<h1>pushwerk: signed in</h1><p>You can close this window.</p>".to_owned(),
                Err(e) => format!(
                    "<h1>pushwerk: login failed</h1><p>{}</p>",
                    html_escape(&e.to_string())
                ),
            };
            let status = if result.is_ok() {
                "200 OK"
            } else {
                "400 Bad Request"
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            return result;
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_unpadded_base64url_of_sha256() {
        // Expected value computed independently:
        // printf %s VERIFIER | openssl dgst -sha256 -binary | base64, then
        // made URL-safe without padding.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW-gFwTxXk-c"),
            "wLdixbQ6MGfCE9oosLNDxwoyNgF-IogBo7mvOOoFhUI"
        );
    }

    fn account() -> OAuthAccount {
        let spec: crate::config::OAuthAccountSpec = serde_yaml::from_str(
            "kind: oauth_account\nname: ms_mail\ntoken_url: https://login.microsoftonline.com/common/oauth2/v2.0/token\nclient_id: cid\nscope: https://graph.microsoft.com/Mail.Send\n",
        )
        .unwrap();
        OAuthAccount {
            spec,
            file: "a.yaml".into(),
            position: Default::default(),
            client_secret: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn authorize_url_has_pkce_state_and_offline_access() {
        let login = begin(&account(), "http://localhost:8400/callback");
        let url = url::Url::parse(&login.authorize_url).unwrap();
        assert_eq!(url.path(), "/common/oauth2/v2.0/authorize");
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(
            q["scope"],
            "https://graph.microsoft.com/Mail.Send offline_access"
        );
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], pkce_challenge(&login.verifier));
        assert_eq!(q["state"], login.state);
        assert_eq!(q["redirect_uri"], "http://localhost:8400/callback");
        assert_ne!(
            begin(&account(), "x").state,
            login.state,
            "a fresh state per login"
        );
    }

    #[test]
    fn pasted_redirects_are_checked() {
        let login = begin(&account(), "http://localhost:8400/callback");
        let ok = format!(
            "http://localhost:8400/callback?code=abc&state={}",
            login.state
        );
        assert_eq!(login.code_from_redirect(&ok).unwrap(), "abc");
        assert_eq!(
            login
                .code_from_redirect(&format!("?code=abc&state={}", login.state))
                .unwrap(),
            "abc"
        );
        assert!(matches!(
            login.code_from_redirect("http://localhost:8400/callback?code=abc&state=forged"),
            Err(LoginError::StateMismatch)
        ));
        let denied = format!("http://localhost:8400/callback?error=access_denied&error_description=the+user+canceled&state={}", login.state);
        let err = login.code_from_redirect(&denied).unwrap_err().to_string();
        assert_eq!(
            err,
            "authorization failed: access_denied: the user canceled"
        );
        assert!(matches!(
            login.code_from_redirect(&format!("http://localhost/?state={}", login.state)),
            Err(LoginError::NoCode)
        ));
        assert!(matches!(
            login.code_from_redirect("not a url"),
            Err(LoginError::BadRedirect(_))
        ));
    }
}
