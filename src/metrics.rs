//! The daemon's metrics in Prometheus text format: counters and gauges with
//! labels, and one latency histogram. A small registry of our own: a
//! handful of series, rendered on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the ingest→delivery latency histogram.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
    latency: Vec<u64>,
    latency_sum: f64,
    latency_count: u64,
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

const HELP: [(&str, &str, &str); 9] = [
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

    /// Records one ingest→delivery latency.
    pub fn observe_latency(&self, seconds: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        if inner.latency.is_empty() {
            inner.latency = vec![0; LATENCY_BUCKETS.len()];
        }
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                inner.latency[i] += 1;
            }
        }
        inner.latency_sum += seconds;
        inner.latency_count += 1;
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
        let name = "pushwerk_ingest_to_delivery_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from accepting an event to its delivery.\n# TYPE {name} histogram"
        );
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let count = inner.latency.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", inner.latency_count);
        let _ = writeln!(out, "{name}_sum {}", inner.latency_sum);
        let _ = writeln!(out, "{name}_count {}", inner.latency_count);
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
    }
}
