//! `pushwerk oauth …` on the local token store: import, status, revoke and
//! the rest; the remote variant (through a daemon's API) is in `remote`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::oauth::seal::Sealer;
use crate::store::StoreChoice;

use super::deliveries::timestamps_to_seconds;
use super::dry_run::read_bounded;
use super::{client, load, open_resolver, remote, runtime, store_cmd, ListFormat, OauthCommand};

pub(super) fn read_secret_input(file: Option<&Path>) -> anyhow::Result<String> {
    let text = match file {
        Some(f) => read_bounded(
            std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?,
            &f.display().to_string(),
        )?,
        None => read_bounded(std::io::stdin(), "stdin")?,
    };
    Ok(text)
}

/// Parses what `oauth import` reads: a token response as JSON, or a bare refresh token.
pub fn parse_import(text: &str) -> anyhow::Result<crate::oauth::ImportedTokens> {
    Ok(crate::oauth::ImportedTokens::parse(text)?)
}

pub(super) fn oauth_command(
    dir: &Path,
    (data, store): (&Path, StoreChoice),
    cmd: OauthCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        OauthCommand::Keygen { write: true } => return store_cmd::keygen_write(),
        OauthCommand::Keygen { write: false } => {
            println!("{}", Sealer::generate_key());
            return Ok(ExitCode::SUCCESS);
        }
        OauthCommand::Rekey { new_key_file } => {
            return store_cmd::rekey(data, store, new_key_file.as_deref())
        }
        _ => {}
    }
    // A daemon holds the store: it answers instead.
    if let Some(info) = client::running_daemon(data, store)? {
        return remote::oauth(data, &info, cmd);
    }
    let catalog = load(dir)?;
    let account_of = |name: &str| {
        catalog.accounts.get(name).cloned().ok_or_else(|| {
            let hint = crate::config::did_you_mean(name, catalog.accounts.keys().cloned());
            anyhow::anyhow!("no OAuth account named `{name}` in {}{hint}", dir.display())
        })
    };
    let rt = runtime()?;
    match cmd {
        OauthCommand::Keygen { .. } | OauthCommand::Rekey { .. } => unreachable!("handled above"),
        OauthCommand::Import { name, file } => {
            account_of(&name)?;
            let tokens = parse_import(&read_secret_input(file.as_deref())?)?;
            let resolver = open_resolver(data, store, &catalog)?;
            rt.block_on(resolver.import(&name, tokens))?;
            println!(
                "stored tokens of `{name}` in {}{}",
                data.display(),
                if resolver.is_encrypted() {
                    " (encrypted)"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        OauthCommand::Login {
            name,
            port,
            no_browser,
        } => {
            let account = account_of(&name)?;
            crate::oauth::login::preflight(&account)?;
            let resolver = open_resolver(data, store, &catalog)?;
            rt.block_on(crate::oauth::login::run(
                &resolver, &account, port, no_browser,
            ))?;
            println!("signed in: stored tokens of `{name}` in {}", data.display());
            Ok(ExitCode::SUCCESS)
        }
        OauthCommand::Status { name, format } => {
            let resolver = open_resolver(data, store, &catalog)?;
            let mut status = resolver.status(Utc::now().date_naive())?;
            if let Some(n) = &name {
                status.retain(|s| &s.account == n);
                if status.is_empty() {
                    account_of(n)?;
                }
            }
            for s in &status {
                for w in &s.warnings {
                    tracing::warn!(account = %s.account, "{w}");
                }
            }
            match format {
                ListFormat::Json => {
                    let mut v = serde_json::json!({ "encrypted_at_rest": resolver.is_encrypted(), "key": store_cmd::key_spec().ok().map(|k| k.describe()), "accounts": status });
                    timestamps_to_seconds(&mut v);
                    println!("{}", serde_json::to_string_pretty(&v)?)
                }
                ListFormat::Text => print!("{}", status_text(&status, resolver.is_encrypted())),
            }
            let bad = status.iter().any(|s| s.state != "ok");
            Ok(if bad {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        OauthCommand::Refresh { name } => {
            account_of(&name)?;
            let resolver = open_resolver(data, store, &catalog)?;
            rt.block_on(resolver.refresh_now(&name))?;
            println!("refreshed `{name}`");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) fn status_text(status: &[crate::oauth::AccountStatus], encrypted: bool) -> String {
    let when = |t: &Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".into())
    };
    let mut out = format!("token state: {}\n", store_cmd::encryption_line(encrypted));
    for s in status {
        out.push_str(&format!("\n{}: {}\n", s.account, s.state));
        if let Some(r) = &s.reason {
            out.push_str(&format!("  reason:         {r}\n"));
        }
        out.push_str(&format!(
            "  access token:   expires {}\n",
            when(&s.access_token_expires)
        ));
        out.push_str(&format!(
            "  refresh token:  {}\n",
            if s.has_refresh_token {
                "stored"
            } else {
                "none"
            }
        ));
        out.push_str(&format!("  last refresh:   {}\n", when(&s.last_refresh)));
        out.push_str(&format!("  last use:       {}\n", when(&s.last_use)));
        out.push_str(&format!(
            "  last error:     {}\n",
            s.last_error.as_deref().unwrap_or("-")
        ));
        out.push_str(&format!(
            "  secret expires: {}\n",
            s.client_secret_expires
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into())
        ));
        for w in &s.warnings {
            out.push_str(&format!("  warning:        {w}\n"));
        }
    }
    out
}
