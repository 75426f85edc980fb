//! Housekeeping: retention, gauges and keep-alive refreshes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Daemon;

impl Daemon {
    /// Retention, gauges and keep-alive refreshes, periodically.
    pub async fn run_housekeeping(self: Arc<Self>) {
        let clock = self.config.clock.clone();
        let mut last_keep_alive = clock.now();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            // Retention and the counts walk the store: off the async
            // workers, so that ingest and delivery go on meanwhile.
            let queue = self.queue.clone();
            let c = self.config.clone();
            let now = clock.now();
            let walked = tokio::task::spawn_blocking(move || {
                if let Err(e) = queue.retain(now, c.log_max_age, c.log_max_count, c.event_window) {
                    tracing::error!(error = %e, "retention failed");
                }
                queue.pending()
            })
            .await;
            // (`pushwerk_dead_letters` is kept current as jobs are
            // dead-lettered and replayed.)
            if let Ok(Ok(n)) = walked {
                self.metrics.set("pushwerk_jobs_queued", &[], n as f64);
            }
            // The accounts' states are read from the store too.
            let resolver = self.resolver().clone();
            let today = clock.now().date_naive();
            let status = tokio::task::spawn_blocking(move || resolver.status(today)).await;
            if let Ok(Ok(status)) = status {
                let reauth = status.iter().filter(|s| s.state == "needs_reauth").count();
                self.metrics
                    .set("pushwerk_accounts_needing_reauth", &[], reauth as f64);
                let expiring = status
                    .iter()
                    .filter(|s| s.warnings.iter().any(|w| w.contains("client secret")))
                    .count();
                self.metrics
                    .set("pushwerk_client_secret_expiring", &[], expiring as f64);
                for s in &status {
                    for w in &s.warnings {
                        tracing::warn!(account = %s.account, "{w}");
                    }
                }
            }
            for ((account, outcome), n) in self.resolver().token_request_outcomes() {
                self.metrics.set_counter(
                    "pushwerk_token_refreshes_total",
                    &[("account", &account), ("outcome", outcome)],
                    n,
                );
            }
            if clock.now() - last_keep_alive >= chrono::Duration::minutes(10) {
                last_keep_alive = clock.now();
                for (account, result) in self.resolver().keep_alive().await {
                    if let Err(e) = result {
                        tracing::warn!(account = %account, error = %e, "keep-alive refresh failed");
                    }
                }
            }
            clock.sleep(Duration::from_secs(30)).await;
        }
    }
}
