//! What a run measures: latency histograms and counters, kept per worker thread without
//! any sharing and merged once at the end.
//!
//! All latencies are recorded in nanoseconds in HdrHistograms with 3 significant digits, up
//! to an hour; anything longer saturates rather than being dropped, so a stalled server
//! shows up as a huge maximum, not as missing samples.

use std::collections::BTreeMap;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency tracked exactly: one hour, in nanoseconds.
const HIGHEST_NS: u64 = 3_600 * 1_000_000_000;

/// A latency that is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// TCP connect start -> established.
    Connect,
    /// `register` request -> reply.
    Register,
    /// `login` request -> reply.
    Login,
    /// `get_unread_messages` request -> reply.
    Unread,
    /// `add_friend` request -> reply.
    AddFriend,
    /// `accept_friend` request -> reply.
    AcceptFriend,
    /// `send_message` (intended) send -> its success reply.
    Ack,
    /// `send_message` (intended) send -> the receiver's `receive_message`.
    Delivery,
    /// Open loop only: intended send time -> actual write (the generator's own lag).
    SendLag,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::Connect,
        Metric::Register,
        Metric::Login,
        Metric::Unread,
        Metric::AddFriend,
        Metric::AcceptFriend,
        Metric::Ack,
        Metric::Delivery,
        Metric::SendLag,
    ];

    /// Short name, also the `.hgrm` file name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Connect => "connect",
            Metric::Register => "register",
            Metric::Login => "login",
            Metric::Unread => "get_unread",
            Metric::AddFriend => "add_friend",
            Metric::AcceptFriend => "accept_friend",
            Metric::Ack => "ack",
            Metric::Delivery => "delivery",
            Metric::SendLag => "send_lag",
        }
    }
}

/// A fresh latency histogram (nanoseconds).
pub fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 1 h at 3 significant digits is a valid configuration.
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// Event counts. Every field only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub users: u64,
    pub connected: u64,
    pub registered: u64,
    pub logged_in: u64,
    /// Users whose setup finished (pair friends, both logged in).
    pub ready: u64,
    /// Users whose connection or setup failed.
    pub failed_users: u64,
    pub pairs: u64,
    pub failed_pairs: u64,
    /// `send_message` requests written.
    pub sent: u64,
    /// `send_message` success replies.
    pub acked: u64,
    /// `send_message` error replies.
    pub refused: u64,
    /// Distinct benchmark messages received by their receiver.
    pub delivered: u64,
    pub duplicates: u64,
    /// Messages received with a lower sequence number than one already received.
    pub reordered: u64,
    /// `receive_message` frames that are not this run's (e.g. the friend greeting).
    pub foreign: u64,
    /// Frames that are not JSON objects/arrays of the expected shape.
    pub malformed: u64,
    /// Replies nobody waited for (e.g. a `send_message` reply with nothing in flight).
    pub unexpected: u64,
    /// Connections lost after they were established.
    pub disconnects: u64,
    /// Open loop: messages scheduled before the end but not written when the run stopped.
    pub unsent_backlog: u64,
    /// Frames received.
    pub frames: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.users += o.users;
        self.connected += o.connected;
        self.registered += o.registered;
        self.logged_in += o.logged_in;
        self.ready += o.ready;
        self.failed_users += o.failed_users;
        self.pairs += o.pairs;
        self.failed_pairs += o.failed_pairs;
        self.sent += o.sent;
        self.acked += o.acked;
        self.refused += o.refused;
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.foreign += o.foreign;
        self.malformed += o.malformed;
        self.unexpected += o.unexpected;
        self.disconnects += o.disconnects;
        self.unsent_backlog += o.unsent_backlog;
        self.frames += o.frames;
    }

    /// Messages sent but never delivered (refused ones included).
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.delivered)
    }
}

/// Everything one worker (or, merged, the whole run) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    hist: Vec<Histogram<u64>>,
    /// Ack and delivery latency per *segment* of the run: the segment is a number the
    /// controller sets while the run goes on (e.g. 0 before a login storm, 1 during it), and
    /// each latency is also recorded under the segment current when it was measured.
    segments: Vec<[Histogram<u64>; 2]>,
    pub counts: Counts,
    /// Failure reasons (e.g. "login: wrong user id or password") and how often each was seen.
    pub failures: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hist: Metric::ALL.iter().map(|_| new_histogram()).collect(),
            segments: Vec::new(),
            counts: Counts::default(),
            failures: BTreeMap::new(),
        }
    }
}

impl Stats {
    pub fn record(&mut self, m: Metric, nanos: u64) {
        self.hist[m as usize].saturating_record(nanos);
    }

    pub fn histogram(&self, m: Metric) -> &Histogram<u64> {
        &self.hist[m as usize]
    }

    /// Records an ack or delivery latency under segment `seg` too (other metrics: nothing).
    pub fn record_segment(&mut self, seg: usize, m: Metric, nanos: u64) {
        let i = match m {
            Metric::Ack => 0,
            Metric::Delivery => 1,
            _ => return,
        };
        while self.segments.len() <= seg {
            self.segments.push([new_histogram(), new_histogram()]);
        }
        self.segments[seg][i].saturating_record(nanos);
    }

    /// The ack or delivery latencies measured during segment `seg` (empty if none).
    pub fn segment(&self, seg: usize, m: Metric) -> Histogram<u64> {
        let i = match m {
            Metric::Ack => 0,
            Metric::Delivery => 1,
            _ => return new_histogram(),
        };
        self.segments
            .get(seg)
            .map(|s| s[i].clone())
            .unwrap_or_else(new_histogram)
    }

    /// The statistics as JSON (histograms in HdrHistogram's V2 encoding, hex), to pass
    /// them from one generator process to another. Segments are not included.
    pub fn to_json(&self) -> serde_json::Value {
        let hist: Vec<String> = self
            .hist
            .iter()
            .map(|h| {
                let mut buf = Vec::new();
                // Serialising into a Vec cannot fail for a valid histogram.
                let _ = V2Serializer::new().serialize(h, &mut buf);
                buf.iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect();
        serde_json::json!({"counts": self.counts, "failures": self.failures, "hist": hist})
    }

    /// The inverse of [`Stats::to_json`].
    pub fn from_json(v: &serde_json::Value) -> Result<Stats, String> {
        let mut s = Stats {
            counts: serde_json::from_value(v["counts"].clone()).map_err(|e| e.to_string())?,
            failures: serde_json::from_value(v["failures"].clone()).map_err(|e| e.to_string())?,
            ..Stats::default()
        };
        let hex = v["hist"].as_array().ok_or("no histograms")?;
        for (h, x) in s.hist.iter_mut().zip(hex) {
            let x = x.as_str().ok_or("histogram not a string")?;
            let bytes = (0..x.len() / 2)
                .map(|i| u8::from_str_radix(&x[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| e.to_string())?;
            let got: Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| format!("{e:?}"))?;
            h.add(&got).map_err(|e| format!("{e:?}"))?;
        }
        Ok(s)
    }

    pub fn fail(&mut self, reason: impl Into<String>) {
        *self.failures.entry(reason.into()).or_insert(0) += 1;
    }

    pub fn merge(&mut self, o: &Stats) {
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            // Same bounds on both sides, so adding cannot fail; saturate just in case.
            if a.add(b).is_err() {
                for v in b.iter_recorded() {
                    a.saturating_record_n(v.value_iterated_to(), v.count_at_value());
                }
            }
        }
        while self.segments.len() < o.segments.len() {
            self.segments.push([new_histogram(), new_histogram()]);
        }
        for (a, b) in self.segments.iter_mut().zip(&o.segments) {
            for i in 0..2 {
                let _ = a[i].add(&b[i]);
            }
        }
        self.counts.add(&o.counts);
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_insert(0) += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.record(Metric::Ack, 1_000);
        b.record(Metric::Ack, 2_000_000);
        b.record(Metric::Delivery, u64::MAX);
        b.counts.sent = 3;
        b.fail("x");
        a.merge(&b);
        assert_eq!(a.histogram(Metric::Ack).len(), 2);
        assert_eq!(a.histogram(Metric::Delivery).len(), 1);
        assert_eq!(a.counts.sent, 3);
        assert_eq!(a.failures["x"], 1);
    }

    #[test]
    fn segments_and_json() {
        let mut a = Stats::default();
        a.record(Metric::Login, 5_000_000);
        a.record(Metric::Login, 7_000_000);
        a.record_segment(2, Metric::Delivery, 3_000);
        a.record_segment(2, Metric::Connect, 3_000);
        a.counts.logged_in = 2;
        a.fail("y");
        assert_eq!(a.segment(2, Metric::Delivery).len(), 1);
        assert_eq!(a.segment(1, Metric::Delivery).len(), 0);
        assert_eq!(a.segment(9, Metric::Ack).len(), 0);
        let mut b = Stats::default();
        b.record_segment(0, Metric::Ack, 1);
        b.merge(&a);
        assert_eq!(b.segment(2, Metric::Delivery).len(), 1);
        assert_eq!(b.segment(0, Metric::Ack).len(), 1);
        let back = Stats::from_json(&a.to_json()).unwrap();
        assert_eq!(back.counts, a.counts);
        assert_eq!(back.failures, a.failures);
        assert_eq!(back.histogram(Metric::Login).len(), 2);
        assert_eq!(
            back.histogram(Metric::Login).max(),
            a.histogram(Metric::Login).max()
        );
    }
}
