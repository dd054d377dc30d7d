//! Built-in latency histograms and counters, and how they are reported.
//!
//! Each shard records into its own preallocated HdrHistograms (a few arithmetic operations:
//! no locks, no allocation per sample). About once a second it adds what it recorded into its
//! slot of the shared [`Registry`] and starts afresh; reports (the admin listener's `/metrics`
//! and `/latency`, the periodic log report) merge the slots. The slot's lock is taken once a
//! second by its shard and when a report is read, never per request.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use corechat_persist::PersistQueue;

/// Request types, in a fixed order, for per-type histograms.
pub const KINDS: &[&str] = &[
    "register",
    "login",
    "get_unread_messages",
    "chatting",
    "friends",
    "search_user",
    "add_friend",
    "accept_friend",
    "delete_friend",
    "send_message",
    "update_chat",
];

/// Index of the end-to-end delivery histogram (after the per-kind ones).
const DELIVERY: usize = KINDS.len();
/// Index of the mesh hop histogram.
const HOP: usize = KINDS.len() + 1;
const HISTOGRAMS: usize = KINDS.len() + 2;

/// Microseconds from 1 µs to 1 hour at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        // The bounds above are valid; an auto-resizing histogram if they were ever refused.
        let mut h = Histogram::new(3).unwrap_or_else(|_| std::process::abort());
        h.auto(true);
        h
    })
}

/// The name of histogram `i` in reports.
fn name(i: usize) -> String {
    match i {
        DELIVERY => "delivery".to_string(),
        HOP => "mesh_hop".to_string(),
        i => format!("service_{}", KINDS[i]),
    }
}

/// Event counters of one shard.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: Cell<u64>,
    pub logins: Cell<u64>,
    pub login_failures: Cell<u64>,
    pub handoffs: Cell<u64>,
    pub messages: Cell<u64>,
    pub delivered_live: Cell<u64>,
    pub stored_offline: Cell<u64>,
    pub busy: Cell<u64>,
    pub bad_requests: Cell<u64>,
}

impl Counters {
    pub fn inc(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }

    fn values(&self) -> [(&'static str, u64); 9] {
        [
            ("connections_accepted_total", self.accepted.get()),
            ("logins_total", self.logins.get()),
            ("login_failures_total", self.login_failures.get()),
            ("handoffs_total", self.handoffs.get()),
            ("messages_total", self.messages.get()),
            ("messages_delivered_live_total", self.delivered_live.get()),
            ("messages_stored_offline_total", self.stored_offline.get()),
            ("busy_replies_total", self.busy.get()),
            ("bad_requests_total", self.bad_requests.get()),
        ]
    }
}

/// Point-in-time values a shard reports with its histograms.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub connections: u64,
    pub anonymous: u64,
    pub users: u64,
    pub pending_acks: u64,
    pub overflow: u64,
    pub mesh_backlog: u64,
    pub mesh_sent: u64,
    pub mesh_received: u64,
}

/// What one shard records.
pub struct Metrics {
    hists: Vec<RefCell<Histogram<u64>>>,
    pub counters: Counters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            hists: (0..HISTOGRAMS).map(|_| RefCell::new(histogram())).collect(),
            counters: Counters::default(),
        }
    }

    fn record(&self, i: usize, d: Duration) {
        let us = (d.as_micros() as u64).max(1);
        let _ = self.hists[i].borrow_mut().record(us);
    }

    /// Service time of one request: frame decoded -> reply queued for writing.
    pub fn record_service(&self, kind: &str, d: Duration) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.record(i, d);
        }
    }

    /// End to end: the sender's frame decoded -> `receive_message` queued to the receiver.
    pub fn record_delivery(&self, d: Duration) {
        self.record(DELIVERY, d);
    }

    /// One crossing of the mesh.
    pub fn record_hop(&self, d: Duration) {
        self.record(HOP, d);
    }

    /// Adds what was recorded since the last call into `slot`, and starts afresh.
    pub fn publish(&self, slot: &Mutex<Published>, gauges: Gauges) {
        let Ok(mut p) = slot.lock() else { return };
        for (dst, src) in p.hists.iter_mut().zip(&self.hists) {
            let mut src = src.borrow_mut();
            if !src.is_empty() {
                let _ = dst.add(&*src);
                src.reset();
            }
        }
        p.counters = self.counters.values().iter().map(|(_, v)| *v).collect();
        p.gauges = gauges;
    }
}

/// One shard's published figures (cumulative since start).
#[derive(Debug, Clone)]
pub struct Published {
    hists: Vec<Histogram<u64>>,
    counters: Vec<u64>,
    gauges: Gauges,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            hists: (0..HISTOGRAMS).map(|_| histogram()).collect(),
            counters: vec![0; Counters::default().values().len()],
            gauges: Gauges::default(),
        }
    }
}

/// Every shard's published figures, and the persistence thread's.
pub struct Registry {
    /// One slot per shard. A lock, but off the request path: its shard takes it once a second
    /// to add what it recorded, and a report (admin listener, log) takes it when it reads.
    slots: Vec<Mutex<Published>>,
    persist: PersistQueue,
    started: Instant,
}

impl Registry {
    pub fn new(shards: usize, persist: PersistQueue) -> Self {
        Registry {
            slots: (0..shards)
                .map(|_| Mutex::new(Published::default()))
                .collect(),
            persist,
            started: Instant::now(),
        }
    }

    pub fn slot(&self, shard: usize) -> &Mutex<Published> {
        &self.slots[shard.min(self.slots.len().saturating_sub(1))]
    }

    /// All shards merged.
    pub fn merged(&self) -> Published {
        let mut total = Published::default();
        for s in &self.slots {
            let Ok(p) = s.lock() else { continue };
            for (dst, src) in total.hists.iter_mut().zip(&p.hists) {
                let _ = dst.add(src);
            }
            for (dst, src) in total.counters.iter_mut().zip(&p.counters) {
                *dst += src;
            }
            let (g, t) = (&p.gauges, &mut total.gauges);
            t.connections += g.connections;
            t.anonymous += g.anonymous;
            t.users += g.users;
            t.pending_acks += g.pending_acks;
            t.overflow += g.overflow;
            t.mesh_backlog += g.mesh_backlog;
            t.mesh_sent += g.mesh_sent;
            t.mesh_received += g.mesh_received;
        }
        total
    }

    /// Named latency histograms (microseconds) and size histograms, merged over the shards.
    pub fn histograms(&self) -> Vec<(String, Histogram<u64>, Unit)> {
        let merged = self.merged();
        let mut v: Vec<(String, Histogram<u64>, Unit)> = merged
            .hists
            .into_iter()
            .enumerate()
            .map(|(i, h)| (name(i), h, Unit::Micros))
            .collect();
        if let Ok(p) = self.persist.stats().histograms.lock() {
            v.push(("persist_commit".into(), p.commit_us.clone(), Unit::Micros));
            v.push((
                "persist_batch_size".into(),
                p.batch_size.clone(),
                Unit::Count,
            ));
            v.push((
                "persist_queue_depth".into(),
                p.queue_depth.clone(),
                Unit::Count,
            ));
        }
        v
    }

    /// The Prometheus text exposition of everything.
    pub fn prometheus(&self) -> String {
        let merged = self.merged();
        let mut out = String::with_capacity(16 * 1024);
        let g = merged.gauges;
        let stats = self.persist.stats();
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP corechat_{name} {help}");
            let _ = writeln!(out, "# TYPE corechat_{name} gauge");
            let _ = writeln!(out, "corechat_{name} {v}");
        };
        gauge(
            &mut out,
            "uptime_seconds",
            "Seconds since start.",
            self.started.elapsed().as_secs(),
        );
        gauge(
            &mut out,
            "connections",
            "Open client connections.",
            g.connections,
        );
        gauge(
            &mut out,
            "anonymous_connections",
            "Connections not logged in.",
            g.anonymous,
        );
        gauge(&mut out, "users", "Registered users.", g.users);
        gauge(
            &mut out,
            "pending_acks",
            "Replies waiting for a commit.",
            g.pending_acks,
        );
        gauge(
            &mut out,
            "overflow_records",
            "Records held back by shards (queue full).",
            g.overflow,
        );
        gauge(
            &mut out,
            "mesh_backlog",
            "Messages waiting for a mesh channel.",
            g.mesh_backlog,
        );
        gauge(
            &mut out,
            "persist_queue_depth",
            "Records in the persistence queue.",
            self.persist.len() as u64,
        );
        gauge(
            &mut out,
            "persist_degraded",
            "1 while the database is failing and writes are retried.",
            u64::from(stats.degraded.load(std::sync::atomic::Ordering::Relaxed)),
        );
        let counter = |out: &mut String, name: &str, v: u64| {
            let _ = writeln!(out, "# TYPE corechat_{name} counter");
            let _ = writeln!(out, "corechat_{name} {v}");
        };
        for ((name, _), v) in Counters::default().values().iter().zip(&merged.counters) {
            counter(&mut out, name, *v);
        }
        counter(&mut out, "mesh_sent_total", g.mesh_sent);
        counter(&mut out, "mesh_received_total", g.mesh_received);
        let rel = std::sync::atomic::Ordering::Relaxed;
        counter(
            &mut out,
            "persist_batches_total",
            stats.committed_batches.load(rel),
        );
        counter(
            &mut out,
            "persist_records_total",
            stats.committed_records.load(rel),
        );
        counter(
            &mut out,
            "persist_failed_attempts_total",
            stats.failed_attempts.load(rel),
        );

        let _ = writeln!(
            out,
            "# HELP corechat_latency_seconds Latency quantiles since start."
        );
        let _ = writeln!(out, "# TYPE corechat_latency_seconds summary");
        for (name, h, unit) in self.histograms() {
            let (metric, scale) = match unit {
                Unit::Micros => ("latency_seconds", 1e-6),
                Unit::Count => ("size", 1.0),
            };
            if unit == Unit::Count {
                let _ = writeln!(out, "# TYPE corechat_{name} summary");
            }
            let label = |q: Option<f64>| match (unit, q) {
                (Unit::Micros, Some(q)) => format!("{{name=\"{name}\",quantile=\"{q}\"}}"),
                (Unit::Micros, None) => format!("{{name=\"{name}\"}}"),
                (Unit::Count, Some(q)) => format!("{{quantile=\"{q}\"}}"),
                (Unit::Count, None) => String::new(),
            };
            let base = match unit {
                Unit::Micros => format!("corechat_{metric}"),
                Unit::Count => format!("corechat_{name}"),
            };
            for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
                let v = if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(q)
                };
                let _ = writeln!(out, "{base}{} {}", label(Some(q)), v as f64 * scale);
            }
            let sum = h.mean() * h.len() as f64 * scale;
            let _ = writeln!(out, "{base}_sum{} {sum}", label(None));
            let _ = writeln!(out, "{base}_count{} {}", label(None), h.len());
        }
        out
    }

    /// Every histogram as the standard `.hgrm` percentile distribution, one after another,
    /// each introduced by a `# name` line. Latencies are in milliseconds.
    pub fn latency_report(&self) -> String {
        let mut out = String::new();
        for (name, h, unit) in self.histograms() {
            let _ = writeln!(out, "# {name} ({})", unit.label());
            out.push_str(&hgrm(&h, unit.scale()));
            out.push('\n');
        }
        out
    }

    /// A few lines for the periodic log report.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (name, h, unit) in self.histograms() {
            if h.is_empty() {
                continue;
            }
            let s = unit.scale();
            let _ = write!(
                out,
                "{name}: n={} p50={:.3} p99={:.3} p99.9={:.3} max={:.3} {}; ",
                h.len(),
                h.value_at_quantile(0.5) as f64 / s,
                h.value_at_quantile(0.99) as f64 / s,
                h.value_at_quantile(0.999) as f64 / s,
                h.max() as f64 / s,
                unit.label()
            );
        }
        out
    }
}

/// What a histogram counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds, reported in milliseconds.
    Micros,
    /// A plain count (records, depth).
    Count,
}

impl Unit {
    fn scale(self) -> f64 {
        match self {
            Unit::Micros => 1000.0,
            Unit::Count => 1.0,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Unit::Micros => "ms",
            Unit::Count => "count",
        }
    }
}

/// The HdrHistogram percentile distribution text (`.hgrm`), values divided by `scale` (1000
/// turns microseconds into milliseconds), as HdrHistogram's `outputPercentileDistribution`
/// writes it and its plotter reads it.
pub fn hgrm(h: &Histogram<u64>, scale: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / scale;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.3} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.3} {q:>2.12} {total:>10}");
            }
        }
    }
    let mean = if h.is_empty() { 0.0 } else { h.mean() / scale };
    let stdev = if h.is_empty() { 0.0 } else { h.stdev() / scale };
    let max = if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / scale
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.3}, StdDeviation   = {stdev:>12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.3}, Total count    = {:>12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_kind_and_publishes() {
        let m = Metrics::new();
        m.record_service("login", Duration::from_millis(3));
        m.record_service("nonsense", Duration::from_millis(3));
        m.record_delivery(Duration::from_micros(10));
        Counters::inc(&m.counters.logins);
        let reg = Registry::new(2, PersistQueue::new(128, 2));
        m.publish(
            reg.slot(1),
            Gauges {
                connections: 5,
                ..Gauges::default()
            },
        );
        m.publish(
            reg.slot(1),
            Gauges {
                connections: 5,
                ..Gauges::default()
            },
        );
        let hs = reg.histograms();
        let login = &hs.iter().find(|(n, _, _)| n == "service_login").unwrap().1;
        assert_eq!(login.len(), 1, "published twice, recorded once");
        assert!(login.value_at_quantile(0.5) >= 2990);
        let text = reg.prometheus();
        assert!(text.contains("corechat_connections 5"));
        assert!(text.contains("corechat_logins_total 1"));
        assert!(
            text.contains("corechat_latency_seconds{name=\"service_login\",quantile=\"0.5\"} 0.00")
        );
        assert!(text.contains("corechat_latency_seconds_count{name=\"delivery\"} 1"));
    }

    #[test]
    fn hgrm_shape() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let t = hgrm(&h, 1000.0);
        let mut lines = t.lines();
        assert!(lines.next().unwrap().contains("Value"));
        assert_eq!(lines.next(), Some(""));
        let first: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(first.len(), 4);
        assert!((first[0].parse::<f64>().unwrap() - 1.0).abs() < 0.01);
        assert!(t.contains("#[Max     =     1000."));
        assert!(t.contains("Total count    =         1000]"));
        let last_row = t
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        assert!(last_row.contains("1.000000000000"));
    }
}
