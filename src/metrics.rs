//! The daemon's metrics in Prometheus text format: counters and gauges with
//! labels, and two latency histograms. A small registry of our own: a
//! handful of series, rendered on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histograms.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

type Labels = Vec<(&'static str, String)>;

/// One histogram's buckets (non-cumulative counts are summed on render).
#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let count = self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
    latency: Histogram,
    due_latency: Histogram,
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const HELP: [(&str, &str, &str); 11] = [
    (
        "pushwerk_events_accepted_total",
        "counter",
        "Events accepted by ingest (durable).",
    ),
    (
        "pushwerk_events_duplicate_total",
        "counter",
        "Events refused as already seen (same id).",
    ),
    (
        "pushwerk_jobs_queued",
        "gauge",
        "Jobs waiting in the queue.",
    ),
    (
        "pushwerk_jobs_in_flight",
        "gauge",
        "Jobs being delivered now.",
    ),
    (
        "pushwerk_deliveries_total",
        "counter",
        "Delivery attempts by push and outcome.",
    ),
    (
        "pushwerk_token_refreshes_total",
        "counter",
        "Token requests made.",
    ),
    (
        "pushwerk_accounts_needing_reauth",
        "gauge",
        "OAuth accounts waiting for a new login.",
    ),
    (
        "pushwerk_client_secret_expiring",
        "gauge",
        "OAuth accounts whose client secret expires within 30 days.",
    ),
    (
        "pushwerk_dead_letters",
        "gauge",
        "Jobs given up, waiting for replay.",
    ),
    (
        "pushwerk_events_skipped_total",
        "counter",
        "Events a push did not deliver because its `when:` condition was false, by push.",
    ),
    (
        "pushwerk_reloads_total",
        "counter",
        "Times the folder was loaded again after start (a content change, or SIGHUP).",
    ),
];

impl Metrics {
    /// Adds `by` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], by: u64) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .counters
            .entry((name, labels))
            .or_default() += by;
    }

    /// Sets a counter kept elsewhere (e.g. the resolver's) to its value.
    pub fn set_counter(&self, name: &'static str, labels: &[(&'static str, &str)], value: u64) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.inner
            .lock()
            .expect("metrics lock")
            .counters
            .insert((name, labels), value);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.inner
            .lock()
            .expect("metrics lock")
            .gauges
            .insert((name, labels), value);
    }

    /// Moves a gauge by `delta` (a change the caller saw happen, such as a
    /// job dead-lettered or replayed), so it is current without a recount.
    pub fn adjust(&self, name: &'static str, labels: &[(&'static str, &str)], delta: f64) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let mut inner = self.inner.lock().expect("metrics lock");
        let gauge = inner.gauges.entry((name, labels)).or_default();
        *gauge = (*gauge + delta).max(0.0);
    }

    /// A gauge's current value (for tests and status output).
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Option<f64> {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.inner
            .lock()
            .expect("metrics lock")
            .gauges
            .get(&(name, labels))
            .copied()
    }

    /// Records one ingest→delivery latency (the push's `delay:` included).
    pub fn observe_latency(&self, seconds: f64) {
        self.inner
            .lock()
            .expect("metrics lock")
            .latency
            .observe(seconds);
    }

    /// Records one due→delivery latency: from when the job was first due
    /// (accepted plus the push's `delay:`) to its delivery, retries
    /// included — the engine's own lag, without the configured wait.
    pub fn observe_due_latency(&self, seconds: f64) {
        self.inner
            .lock()
            .expect("metrics lock")
            .due_latency
            .observe(seconds);
    }

    /// A counter's current value (for tests and status output).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.inner
            .lock()
            .expect("metrics lock")
            .counters
            .get(&(name, labels))
            .copied()
            .unwrap_or(0)
    }

    /// Everything in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        let fmt_labels = |labels: &Labels| {
            if labels.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}=\"{}\"",
                            v.replace('\\', "\\\\")
                                .replace('"', "\\\"")
                                .replace('\n', "\\n")
                        )
                    })
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
        };
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let mut any = false;
            for ((n, labels), v) in &inner.counters {
                if *n == name {
                    let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels));
                    any = true;
                }
            }
            for ((n, labels), v) in &inner.gauges {
                if *n == name {
                    let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels));
                    any = true;
                }
            }
            if !any && kind == "counter" {
                let _ = writeln!(out, "{name} 0");
            }
        }
        inner.latency.render(
            &mut out,
            "pushwerk_ingest_to_delivery_seconds",
            "Time from accepting an event to its delivery (the push's delay: included).",
        );
        inner.due_latency.render(
            &mut out,
            "pushwerk_due_to_delivery_seconds",
            "Time from when a job was first due (accepted plus the push's delay:) to its delivery, retries included.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.add(
            "pushwerk_deliveries_total",
            &[("push", "lead-mail"), ("outcome", "delivered")],
            2,
        );
        m.set("pushwerk_jobs_queued", &[], 3.0);
        m.observe_latency(0.004);
        let text = m.render();
        assert!(
            text.contains(
                "pushwerk_deliveries_total{push=\"lead-mail\",outcome=\"delivered\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("pushwerk_jobs_queued 3\n"));
        assert!(text.contains("pushwerk_ingest_to_delivery_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("pushwerk_ingest_to_delivery_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("pushwerk_events_accepted_total 0\n"));
        assert!(text.contains("pushwerk_due_to_delivery_seconds_count 0\n"));
    }

    #[test]
    fn due_latency_is_its_own_histogram_and_gauges_adjust() {
        let m = Metrics::default();
        m.observe_latency(3.5);
        m.observe_due_latency(0.02);
        m.adjust("pushwerk_dead_letters", &[], 2.0);
        m.adjust("pushwerk_dead_letters", &[], -1.0);
        m.adjust("pushwerk_dead_letters", &[], -5.0);
        let text = m.render();
        assert!(
            text.contains("pushwerk_ingest_to_delivery_seconds_bucket{le=\"1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("pushwerk_due_to_delivery_seconds_bucket{le=\"0.025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pushwerk_due_to_delivery_seconds_sum 0.02\n"),
            "{text}"
        );
        assert_eq!(m.gauge("pushwerk_dead_letters", &[]), Some(0.0));
    }
}
