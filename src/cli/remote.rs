//! `pushwerk oauth …` through a running daemon's API (see [`super::client`]):
//! the same commands and output as on the store, answered by the daemon
//! that holds it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use reqwest::Method;

use super::client::{ApiClient, Body};
use super::{ListFormat, OauthCommand};
use crate::api::{Account, AccountChanged, Accounts, DaemonInfo, LoginStart, SendRequest, Sent};

/// A path segment, percent-encoded.
fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The resolver's status shape of an API account, so that the text output
/// is the same whichever way it was asked.
fn as_status(a: &Account) -> crate::oauth::AccountStatus {
    crate::oauth::AccountStatus {
        account: a.name.clone(),
        configured: a.configured,
        // `expiring` is the API's word for `ok` with a warning.
        state: if a.status == "expiring" {
            "ok".to_owned()
        } else {
            a.status.clone()
        },
        reason: a
            .problem
            .as_ref()
            .map(|p| format!("{}: {}", p.code, p.message)),
        access_token_expires: a.access_token_expires,
        has_refresh_token: a.has_refresh_token,
        last_refresh: a.last_refresh,
        last_use: a.last_use,
        last_error: a.last_error.clone(),
        client_secret_expires: a.client_secret_expires,
        warnings: a.warnings.clone(),
    }
}

/// Runs an `oauth` command against the daemon `info` announced for `data`.
pub fn oauth(data: &Path, info: &DaemonInfo, cmd: OauthCommand) -> anyhow::Result<ExitCode> {
    let api = ApiClient::admin(data, &info.url)?;
    eprintln!(
        "# a daemon holds {}: asking it at {}",
        data.display(),
        api.base()
    );
    match cmd {
        OauthCommand::Keygen { .. } | OauthCommand::Rekey { .. } => unreachable!("handled before"),
        OauthCommand::Import { name, file } => {
            let text = super::oauth_cmd::read_secret_input(file.as_deref())?;
            // Refused here already with the same message the daemon gives.
            super::parse_import(&text)?;
            let changed: AccountChanged = api.call(
                Method::PUT,
                &format!("/v1/accounts/{}/tokens", segment(&name)),
                Some(Body::Text(text)),
            )?;
            println!(
                "stored tokens of `{name}` in the running daemon{}",
                if changed.account.encrypted {
                    " (encrypted)"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        OauthCommand::Refresh { name } => {
            let _: AccountChanged = api.call(
                Method::POST,
                &format!("/v1/accounts/{}/refresh", segment(&name)),
                None,
            )?;
            println!("refreshed `{name}`");
            Ok(ExitCode::SUCCESS)
        }
        OauthCommand::Status { name, format } => {
            let answer: Accounts = match &name {
                Some(n) => {
                    let one: Account =
                        api.call(Method::GET, &format!("/v1/accounts/{}", segment(n)), None)?;
                    Accounts {
                        encrypted_at_rest: one.encrypted,
                        accounts: vec![one],
                    }
                }
                None => api.call(Method::GET, "/v1/accounts", None)?,
            };
            let status: Vec<_> = answer.accounts.iter().map(as_status).collect();
            match format {
                // The same document as on the store.
                ListFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "encrypted_at_rest": answer.encrypted_at_rest,
                        "accounts": status,
                    }))?
                ),
                ListFormat::Text => {
                    print!(
                        "{}",
                        super::oauth_cmd::status_text(&status, answer.encrypted_at_rest)
                    )
                }
            }
            let bad = status.iter().any(|s| s.state != "ok");
            Ok(if bad {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        OauthCommand::Login { name, .. } => {
            let path = format!("/v1/accounts/{}", segment(&name));
            let before: Account = api.call(Method::GET, &path, None)?;
            let start: LoginStart = api.call(
                Method::GET,
                &format!("/oauth/{}/start", segment(&name)),
                None,
            )?;
            eprintln!(
                "Open this URL in a browser and sign in (the daemon receives the redirect at {}):\n\n{}\n\nwaiting for the daemon to store the tokens …",
                start.redirect_uri, start.authorize_url
            );
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now: Account = api.call(Method::GET, &path, None)?;
                if now.last_refresh != before.last_refresh && now.status != "needs_reauth" {
                    println!("signed in: stored tokens of `{name}` in the running daemon");
                    return Ok(ExitCode::SUCCESS);
                }
                if Instant::now() > deadline {
                    bail!("the sign-in was not completed within 10 minutes: start it again");
                }
            }
        }
    }
}

/// `pushwerk send` through the daemon announced for `data`: the push of its
/// folder, sent now with its token state, once per event file (none: a
/// `schedule:` push's tick); the same lines and exit status as on the
/// store (the worst outcome decides: failed 1, to be retried 75).
pub fn send(
    data: &Path,
    info: &DaemonInfo,
    push: &str,
    events: &[PathBuf],
    attempts: u32,
) -> anyhow::Result<ExitCode> {
    if Path::new(push).is_file() {
        bail!(
            "a daemon holds {}: it sends the pushes of its folder, so name one (a push file is sent only when no daemon runs)",
            data.display()
        );
    }
    let api = ApiClient::admin(data, &info.url)?;
    eprintln!(
        "# a daemon holds {}: asking it at {}",
        data.display(),
        api.base()
    );
    let events: Vec<Option<serde_json::Value>> = if events.is_empty() {
        vec![None]
    } else {
        events
            .iter()
            .map(|p| {
                super::dry_run::read_event(p)
                    .and_then(|e| Ok(serde_json::to_value(e)?))
                    .map(Some)
            })
            .collect::<anyhow::Result<_>>()?
    };
    let several = events.len() > 1;
    let mut code = 0u8;
    for event in events {
        let id = event
            .as_ref()
            .and_then(|e| e.get("id"))
            .and_then(|v| v.as_str())
            .map(|id| format!(" event {id}"))
            .filter(|_| several)
            .unwrap_or_default();
        let sent: Sent = api.call(
            Method::POST,
            &format!("/v1/pushes/{}/send", segment(push)),
            Some(Body::Json(serde_json::to_value(SendRequest {
                event,
                attempts: Some(attempts.max(1)),
            })?)),
        )?;
        if let Some(reason) = &sent.skipped {
            let at = id.trim_start().to_owned();
            let at = if at.is_empty() { at } else { format!("{at}: ") };
            println!("{at}skipped: {reason}");
            continue;
        }
        for a in &sent.attempts {
            let target = a
                .target
                .as_ref()
                .map(|t| format!(" → {t}"))
                .unwrap_or_default();
            println!(
                "{}{id} attempt {}{target}: {} ({} ms)",
                sent.push, a.attempt, a.summary, a.duration_ms
            );
        }
        let this = match sent.attempts.last().map(|a| a.outcome.as_str()) {
            Some("delivered") => 0,
            Some("retry") => 75,
            _ => 1,
        };
        code = match (code, this) {
            (1, _) | (_, 1) => 1,
            (75, _) | (_, 75) => 75,
            _ => 0,
        };
    }
    Ok(ExitCode::from(code))
}
