//! Latency histograms of one shard.
//!
//! Recording is a few arithmetic operations into a preallocated HdrHistogram owned by the
//! shard: no locks, no allocation per sample. Reports merge the shards' histograms.

use std::cell::RefCell;
use std::time::Duration;

use hdrhistogram::Histogram;

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

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 hour at 3 significant digits. These bounds are valid, so
    // construction cannot fail; fall back to an auto-resizing histogram if it ever did.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .or_else(|_| Histogram::new(3))
        .unwrap_or_else(|_| unreachable_histogram())
}

#[cold]
fn unreachable_histogram() -> Histogram<u64> {
    // `Histogram::new(3)` only fails for a precision above 5.
    Histogram::new_with_max(u64::MAX / 2, 2).unwrap_or_else(|_| std::process::abort())
}

pub struct Metrics {
    service: Vec<RefCell<Histogram<u64>>>,
    delivery: RefCell<Histogram<u64>>,
    hop: RefCell<Histogram<u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            service: KINDS.iter().map(|_| RefCell::new(histogram())).collect(),
            delivery: RefCell::new(histogram()),
            hop: RefCell::new(histogram()),
        }
    }

    fn micros(d: Duration) -> u64 {
        (d.as_micros() as u64).max(1)
    }

    /// Service time of one request: frame decoded -> reply queued.
    pub fn record_service(&self, kind: &str, d: Duration) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            let _ = self.service[i].borrow_mut().record(Self::micros(d));
        }
    }

    /// End to end: the sender's frame decoded -> `receive_message` queued to the receiver.
    pub fn record_delivery(&self, d: Duration) {
        let _ = self.delivery.borrow_mut().record(Self::micros(d));
    }

    /// One crossing of the mesh.
    pub fn record_hop(&self, d: Duration) {
        let _ = self.hop.borrow_mut().record(Self::micros(d));
    }

    /// Copies of the histograms, named, for a report.
    pub fn snapshot(&self) -> Vec<(String, Histogram<u64>)> {
        let mut v: Vec<(String, Histogram<u64>)> = KINDS
            .iter()
            .zip(&self.service)
            .map(|(k, h)| (format!("service_{k}"), h.borrow().clone()))
            .collect();
        v.push(("delivery".into(), self.delivery.borrow().clone()));
        v.push(("mesh_hop".into(), self.hop.borrow().clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_kind() {
        let m = Metrics::new();
        m.record_service("login", Duration::from_millis(3));
        m.record_service("nonsense", Duration::from_millis(3));
        m.record_delivery(Duration::from_micros(10));
        let s = m.snapshot();
        let login = &s.iter().find(|(n, _)| n == "service_login").unwrap().1;
        assert_eq!(login.len(), 1);
        assert!(login.value_at_quantile(0.5) >= 2990);
        assert_eq!(s.iter().find(|(n, _)| n == "delivery").unwrap().1.len(), 1);
    }
}
