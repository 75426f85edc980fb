//! The overview page: accounts at a glance, queue and delivery figures,
//! and the events-per-minute rate sampled from the accepted-events counter.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use minijinja::{context, Value};
use serde::Serialize;

use super::{iso, signed_in, Console, RATE_WINDOW, SAMPLE_EVERY};
use crate::daemon::Daemon;
use crate::delivery::LogStatus;

#[derive(Serialize)]
pub(super) struct AccountRow {
    name: String,
    state: String,
    reason: Option<String>,
    access_token_expires: Option<String>,
    has_refresh_token: bool,
    last_refresh: Option<String>,
    last_use: Option<String>,
    last_error: Option<String>,
    client_secret_expires: Option<String>,
    warnings: Vec<String>,
    configured: bool,
}

pub(super) fn account_rows(daemon: &Daemon) -> Result<Vec<AccountRow>, String> {
    let statuses = daemon
        .resolver()
        .status(Utc::now().date_naive())
        .map_err(|e| e.to_string())?;
    Ok(statuses
        .into_iter()
        .map(|s| AccountRow {
            name: s.account,
            state: s.state,
            reason: s.reason,
            access_token_expires: s.access_token_expires.map(iso),
            has_refresh_token: s.has_refresh_token,
            last_refresh: s.last_refresh.map(iso),
            last_use: s.last_use.map(iso),
            last_error: s.last_error,
            client_secret_expires: s.client_secret_expires.map(|d| d.to_string()),
            warnings: s.warnings,
            configured: s.configured,
        })
        .collect())
}

impl Console {
    /// Records the accepted-events counter now; keeps a minute of samples.
    pub(super) fn sample(&self, total: u64) {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((now, total));
        while samples.len() > 2 && now.duration_since(samples[1].0) >= RATE_WINDOW {
            samples.pop_front();
        }
    }

    /// Events accepted per minute over the last minute (`None` until the
    /// samples span a few seconds).
    pub(super) fn events_per_minute(&self, total: u64) -> Option<f64> {
        self.sample(total);
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (t0, n0) = *samples.front()?;
        let (t1, _) = *samples.back()?;
        let secs = t1.duration_since(t0).as_secs_f64();
        (secs >= SAMPLE_EVERY.as_secs_f64()).then(|| total.saturating_sub(n0) as f64 * 60.0 / secs)
    }
}

pub(super) async fn overview(
    State(daemon): State<Arc<Daemon>>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let signed = match signed_in(&console, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = Utc::now();
    let events_total = daemon
        .metrics
        .counter("pushwerk_events_accepted_total", &[]);
    let events_per_minute = console
        .events_per_minute(events_total)
        .map(|r| format!("{r:.1}"));
    let d = daemon.clone();
    let figures = tokio::task::spawn_blocking(move || {
        let log = d.queue.log(None, None, 10_000).unwrap_or_default();
        let minute_ago = now - chrono::Duration::seconds(60);
        let hour_ago = now - chrono::Duration::hours(1);
        let last_minute = log.iter().filter(|e| e.at >= minute_ago).count();
        let last_hour: Vec<_> = log.iter().filter(|e| e.at >= hour_ago).collect();
        let delivered = last_hour
            .iter()
            .filter(|e| e.status == LogStatus::Delivered)
            .count();
        let failed = last_hour
            .iter()
            .filter(|e| matches!(e.status, LogStatus::Failed | LogStatus::Dead))
            .count();
        let pending = d.queue.pending().ok();
        let dead = d.queue.dead_letter_count().ok();
        (
            last_minute,
            last_hour.len(),
            delivered,
            failed,
            pending,
            dead,
        )
    })
    .await
    .unwrap_or((0, 0, 0, 0, None, None));
    let (last_minute, last_hour, delivered, failed, pending, dead) = figures;
    let accounts = account_rows(&daemon).unwrap_or_default();
    let attention: Vec<&AccountRow> = accounts
        .iter()
        .filter(|a| a.configured && a.state != "ok")
        .collect();
    let expiring: Vec<&AccountRow> = accounts.iter().filter(|a| !a.warnings.is_empty()).collect();
    let files = daemon.files();
    let broken = files
        .iter()
        .filter(|f| {
            !f.diagnostics.is_empty() && f.diagnostics.iter().any(|d| d.contains(": error: "))
        })
        .count();
    console.page(
        "overview.html",
        context! {
            title => "Overview", page => "overview", csrf => signed.csrf, flash => signed.flash,
            ready => daemon.is_ready(),
            events_total => events_total,
            events_per_minute => events_per_minute,
            deliveries_last_minute => last_minute,
            deliveries_last_hour => last_hour,
            delivered_last_hour => delivered,
            failed_last_hour => failed,
            queue_depth => pending,
            dead_letters => dead,
            pushes => daemon.catalog().pushes.len(),
            broken_files => broken,
            attention => Value::from(minijinja::value::Serde(&attention)),
            expiring => Value::from(minijinja::value::Serde(&expiring)),
            now => iso(now),
        },
    )
}
