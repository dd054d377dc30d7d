//! The bounded queue between the shards and the persistence thread, and the way
//! acknowledgements come back.
//!
//! Shards push [`Envelope`]s into one lock-free `ArrayQueue` shared by all of them (one queue,
//! not one per shard, so that records keep the order in which cross-shard causes happened).
//! The persistence thread drains it. Once a batch has committed, the thread hands each
//! acknowledged token back to the shard that asked for it through that shard's [`AckSink`],
//! a lock-free queue plus an `AtomicWaker`, so that a glommio executor can await
//! acknowledgements without any lock or polling.
//!
//! Memory stays bounded: a request that would create records is *admitted* only while the
//! queue has room to spare ([`PersistQueue::admit`]); the records it then causes (possibly on
//! other shards) use a reserve kept free for them. Records are never dropped: if even the
//! reserve is exhausted the shard keeps them in a small local overflow and retries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::Thread;

use atomic_waker::AtomicWaker;
use crossbeam_queue::{ArrayQueue, SegQueue};

use crate::record::Envelope;

/// Set in a token handed back for a record the database refused for good (its data, not its
/// connection): the shard answers that request with an error instead of success.
pub const REFUSED: u64 = 1 << 63;

/// Where acknowledgements for one shard arrive.
#[derive(Debug, Default)]
pub struct AckSink {
    tokens: SegQueue<u64>,
    waker: AtomicWaker,
}

impl AckSink {
    /// Called by the persistence thread after a commit.
    pub fn push(&self, token: u64) {
        self.tokens.push(token);
    }

    /// Wakes the shard once after a run of [`AckSink::push`]es.
    pub fn notify(&self) {
        self.waker.wake();
    }

    /// Takes every token that has arrived, or registers the waker and returns `Pending`.
    pub fn poll_drain(&self, cx: &mut Context<'_>, out: &mut Vec<u64>) -> Poll<()> {
        self.drain_into(out);
        if !out.is_empty() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A token pushed between the drain and the registration would be missed otherwise.
        self.drain_into(out);
        if out.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn drain_into(&self, out: &mut Vec<u64>) {
        while let Some(t) = self.tokens.pop() {
            out.push(t);
        }
    }
}

/// Histograms of the persistence thread.
#[derive(Debug, Clone)]
pub struct PersistHistograms {
    /// Time to write and commit one batch, retries included, in microseconds.
    pub commit_us: hdrhistogram::Histogram<u64>,
    /// Records per committed batch.
    pub batch_size: hdrhistogram::Histogram<u64>,
    /// Records waiting in the queue when a batch was taken (the batch included).
    pub queue_depth: hdrhistogram::Histogram<u64>,
}

impl Default for PersistHistograms {
    fn default() -> Self {
        PersistHistograms {
            commit_us: new_histogram(3_600_000_000),
            batch_size: new_histogram(1 << 24),
            queue_depth: new_histogram(1 << 26),
        }
    }
}

impl PersistHistograms {
    /// Adds `other` into `self` (same bounds, so this cannot fail in practice).
    pub fn add(&mut self, other: &PersistHistograms) {
        let _ = self.commit_us.add(&other.commit_us);
        let _ = self.batch_size.add(&other.batch_size);
        let _ = self.queue_depth.add(&other.queue_depth);
    }

    pub fn reset(&mut self) {
        self.commit_us.reset();
        self.batch_size.reset();
        self.queue_depth.reset();
    }
}

/// A histogram of values from 1 to `max` at 3 significant digits; auto-resizing if those
/// bounds were ever refused (they are valid, so that does not happen).
fn new_histogram(max: u64) -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, max, 3).unwrap_or_else(|_| {
        let mut h = hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable_histogram());
        h.auto(true);
        h
    })
}

#[cold]
fn unreachable_histogram() -> hdrhistogram::Histogram<u64> {
    // `Histogram::new` fails only for more than 5 significant digits.
    std::process::abort()
}

/// Counters the persistence thread keeps up to date, for reports.
#[derive(Debug, Default)]
pub struct PersistStats {
    /// Merged into by the persistence thread about once a second, read by the admin
    /// listener. A lock, but on no shard's path: shards never take it.
    pub histograms: std::sync::Mutex<PersistHistograms>,
    pub committed_batches: AtomicU64,
    pub committed_records: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// True while the backend is failing and the thread is retrying.
    pub degraded: AtomicBool,
}

/// The shards' handle on the persistence queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PersistQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: ArrayQueue<Envelope>,
    /// `admit` says no once the queue holds this many records.
    soft_limit: usize,
    acks: Vec<AckSink>,
    consumer: std::sync::OnceLock<Thread>,
    closing: AtomicBool,
    stats: PersistStats,
}

impl PersistQueue {
    /// A queue of `capacity` records for `shards` shards. A quarter of the capacity (at least
    /// 64 records) is the reserve for records caused by already admitted requests.
    pub fn new(capacity: usize, shards: usize) -> Self {
        let capacity = capacity.max(128);
        let reserve = (capacity / 4).max(64);
        PersistQueue {
            inner: Arc::new(Inner {
                queue: ArrayQueue::new(capacity),
                soft_limit: capacity - reserve,
                acks: (0..shards).map(|_| AckSink::default()).collect(),
                consumer: std::sync::OnceLock::new(),
                closing: AtomicBool::new(false),
                stats: PersistStats::default(),
            }),
        }
    }

    /// May a new request that will write records be accepted now?
    pub fn admit(&self) -> bool {
        self.inner.queue.len() < self.inner.soft_limit
    }

    /// Pushes a record; gives it back if the queue is full (the caller keeps it and retries).
    // Handing the record back by value is the point: boxing it would cost an allocation per
    // record on the hot path to make the rare error case smaller.
    #[allow(clippy::result_large_err)]
    pub fn push(&self, env: Envelope) -> Result<(), Envelope> {
        let r = self.inner.queue.push(env);
        if r.is_ok() {
            if let Some(t) = self.inner.consumer.get() {
                t.unpark();
            }
        }
        r
    }

    pub fn len(&self) -> usize {
        self.inner.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.queue.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.inner.queue.capacity()
    }

    /// The acknowledgement sink of shard `shard`.
    pub fn acks(&self, shard: usize) -> &AckSink {
        &self.inner.acks[shard]
    }

    pub fn shards(&self) -> usize {
        self.inner.acks.len()
    }

    pub fn stats(&self) -> &PersistStats {
        &self.inner.stats
    }

    /// Tells the persistence thread to finish: it drains what is queued, commits, and exits.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::Release);
        if let Some(t) = self.inner.consumer.get() {
            t.unpark();
        }
    }

    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
    }

    /// Used by the persistence thread: pop one record.
    pub fn pop(&self) -> Option<Envelope> {
        self.inner.queue.pop()
    }

    /// Used by the persistence thread once, so that pushes can wake it.
    pub fn register_consumer(&self, t: Thread) {
        let _ = self.inner.consumer.set(t);
    }
}
