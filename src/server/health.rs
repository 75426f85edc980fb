//! Whether the store can take writes, as the API sees it: a failed (or
//! unanswered) ingest commit marks it failing, with the reason; while it
//! is failing `/readyz` says so and probes the store with a tiny durable
//! write (one at a time, bounded by a deadline), and the first probe or
//! ingest that succeeds marks it well again. So a full disk turns into 503
//! answers and a not-ready daemon, and back, without a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::daemon::Daemon;
use crate::store::trees;

/// The key of the probe record (a prefix no queue scan reads).
const PROBE_KEY: &[u8] = b"p:readyz-probe";

/// How long a probe write may take before the store counts as not answering.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// The store's health as last seen by the API.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    failing: Mutex<Option<String>>,
    probing: Arc<AtomicBool>,
}

impl StoreHealth {
    /// Why writes fail, if they do.
    pub(crate) fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notes a failed write (logged once per failing period).
    pub(crate) fn fail(&self, reason: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing.is_none() {
            tracing::error!(
                reason,
                "the store cannot take writes: answering 503 and not ready until it can"
            );
        }
        *failing = Some(reason.to_owned());
    }

    /// Notes a successful write.
    pub(crate) fn ok(&self) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing.take().is_some() {
            tracing::info!("the store takes writes again: ready");
        }
    }

    /// Whether the store takes writes: if it was failing, a probe write
    /// (made durable) decides. At most one probe runs; a caller arriving
    /// while one runs hears "failing".
    pub(crate) async fn check(&self, daemon: &Daemon) -> Result<(), String> {
        let Some(reason) = self.failing() else {
            return Ok(());
        };
        if self.probing.swap(true, Ordering::AcqRel) {
            return Err(reason);
        }
        let store = daemon.queue.store().clone();
        let probing = self.probing.clone();
        // The probe runs on a blocking thread of its own and clears the
        // flag when it ends, even if that is after the deadline (a store
        // that hangs is then probed again only once it answered).
        let probe = tokio::task::spawn_blocking(move || {
            let stamp = chrono::Utc::now().timestamp_millis().to_be_bytes();
            let result = store
                .put(trees::DELIVERY, PROBE_KEY, &stamp)
                .and_then(|()| store.flush());
            probing.store(false, Ordering::Release);
            result
        });
        match tokio::time::timeout(PROBE_DEADLINE, probe).await {
            Ok(Ok(Ok(()))) => {
                self.ok();
                Ok(())
            }
            Ok(Ok(Err(e))) => {
                self.fail(&e.to_string());
                Err(e.to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the store did not answer a write within {}",
                humantime::format_duration(PROBE_DEADLINE)
            )),
        }
    }
}
