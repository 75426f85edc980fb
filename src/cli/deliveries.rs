//! The commands that read a running daemon through its API: `deliveries`,
//! `jobs` and `replay` (and the one helper that calls the API for them).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};

use super::{client, runtime, UsageError};

/// Calls the running daemon's API: `GET path` without a body, `POST path`
/// with one; the token is the first of PUSHWERK_INGEST_TOKEN,
/// PUSHWERK_ADMIN_TOKEN, DATA/admin-token, DATA/ingest-token.
pub(super) fn call_api<T: serde::de::DeserializeOwned>(
    data: &Path,
    server: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<T> {
    let (server, token) = client::api_target(data, server)?;
    let base = server.trim_end_matches('/');
    let client = crate::net::http_client()
        .build()
        .context("building the HTTP client")?;
    let request = match body {
        Some(b) => client.post(format!("{base}{path}")).json(&b),
        None => client.get(format!("{base}{path}")),
    };
    runtime()?.block_on(async {
        let r = request
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {base}"))?;
        let status = r.status();
        let text = r.text().await.context("cannot read the daemon's answer")?;
        if !status.is_success() {
            let reason = serde_json::from_str::<crate::api::ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| text.chars().take(200).collect());
            bail!("the daemon answered {status}: {reason}");
        }
        serde_json::from_str(&text).context("the daemon's answer is not what this pushwerk expects")
    })
}

pub(super) fn deliveries(
    data: &Path,
    server: &str,
    failed: bool,
    push: Option<String>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    // Not delivered: failed attempts (retried later or not) and dead letters.
    let statuses: &[Option<&str>] = if failed {
        &[Some("failed"), Some("retry"), Some("dead")]
    } else {
        &[None]
    };
    let mut entries: Vec<crate::delivery::LogEntry> = Vec::new();
    let local = client::local_queue(data)?;
    for status in statuses {
        if let Some(queue) = &local {
            entries.extend(queue.log(push.as_deref(), *status, limit)?);
            continue;
        }
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", &limit.to_string());
        if let Some(p) = &push {
            query.append_pair("push", p);
        }
        if let Some(s) = status {
            query.append_pair("status", s);
        }
        let body: crate::api::Deliveries = call_api(
            data,
            server,
            &format!("/v1/deliveries?{}", query.finish()),
            None,
        )?;
        entries.extend(body.deliveries);
    }
    // Newest first across the statuses, as the log itself is.
    entries.sort_by_key(|e| std::cmp::Reverse(e.at));
    entries.truncate(limit);
    for e in &entries {
        println!(
            "{}  {:<8} {}  event {}  attempt {}  job {}{}{}{}",
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            e.status,
            e.push,
            e.event_id,
            e.attempt,
            e.job_id,
            e.code.map(|c| format!("  ({c})")).unwrap_or_default(),
            e.reference
                .as_deref()
                .map(|r| format!("  [{r}]"))
                .unwrap_or_default(),
            e.error
                .as_deref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `pushwerk jobs`: `GET /v1/jobs`, one line per job.
pub(super) fn jobs(
    data: &Path,
    server: &str,
    push: Option<String>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &limit.to_string());
    if let Some(p) = &push {
        query.append_pair("push", p);
    }
    let body = match client::local_queue(data)? {
        // No daemon: what the store holds, next due first.
        Some(queue) => {
            let mut jobs = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            let more = 'scan: loop {
                let page = queue.jobs_page(after.as_deref(), 1000)?;
                after = page.last_key;
                for job in page.jobs {
                    if push.as_deref().is_some_and(|p| p != job.push) {
                        continue;
                    }
                    if jobs.len() == limit {
                        break 'scan true;
                    }
                    jobs.push(crate::api::Job {
                        state: crate::api::JobState::of_attempt(job.attempt),
                        id: job.id,
                        push: job.push,
                        event_id: job.event_id,
                        due: job.due_at,
                        attempt: job.attempt,
                        accepted_at: job.accepted_at,
                        last_error: None,
                    });
                }
                if !page.more {
                    break false;
                }
            };
            crate::api::Jobs { jobs, more }
        }
        None => call_api(data, server, &format!("/v1/jobs?{}", query.finish()), None)?,
    };
    for j in &body.jobs {
        println!(
            "{}  {:<8} {}  event {}  attempt {}  job {}{}",
            j.due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            j.state.as_str(),
            j.push,
            j.event_id,
            j.attempt,
            j.id,
            j.last_error
                .as_deref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default(),
        );
    }
    if body.more {
        println!("… more queued (raise --limit)");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn replay(
    data: &Path,
    server: &str,
    job_id: Option<u64>,
    failed: bool,
    push: Option<String>,
) -> anyhow::Result<ExitCode> {
    if job_id.is_none() && !failed {
        return Err(UsageError(
            "name a dead letter's job id, or use --failed (with --push NAME for one push)".into(),
        )
        .into());
    }
    let replayed = if let Some(queue) = client::local_queue(data)? {
        // No daemon: the jobs go back into the store, due now, and are
        // delivered when the daemon next starts.
        let jobs = queue.replay(job_id, push.as_deref(), Utc::now())?;
        queue.store().flush()?;
        jobs.len()
    } else {
        let request = crate::api::ReplayRequest { job_id, push };
        let answer: crate::api::Replayed = call_api(
            data,
            server,
            "/v1/replay",
            Some(serde_json::to_value(&request)?),
        )?;
        answer.replayed
    };
    if let (Some(id), 0) = (job_id, replayed) {
        bail!("no dead letter with job id {id} (the dead letters: `pushwerk deliveries --failed`)");
    }
    println!(
        "replayed {}",
        crate::config::diagnostic::counted(replayed, "dead letter", "dead letters")
    );
    Ok(ExitCode::SUCCESS)
}

/// Rewrites every RFC 3339 timestamp in `v` to whole seconds in UTC
/// (`2026-11-25T14:03:12Z`): CLI output gives times to the second, not
/// the nanoseconds the records keep.
pub(super) fn timestamps_to_seconds(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                *s = t
                    .with_timezone(&Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(timestamps_to_seconds),
        serde_json::Value::Object(map) => map.values_mut().for_each(timestamps_to_seconds),
        _ => {}
    }
}
