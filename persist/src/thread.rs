//! The persistence thread: drains the [`PersistQueue`] in batches, writes each batch in one
//! transaction, and only then acknowledges the records that asked for it.
//!
//! Batching is what makes durability affordable: the fsync of a commit is paid once for up to
//! [`BatchConfig::max_batch`] records. Under load the queue fills while a commit runs, so the
//! next batch is naturally larger; when idle, a record is written as soon as it arrives (the
//! default [`BatchConfig::linger`] is zero), so latency stays low.
//!
//! The thread never drops a record. If the backend fails, it keeps retrying the same batch
//! with exponential backoff; meanwhile the queue fills up and the shards stop admitting new
//! writes ("server busy"), which is the intended back-pressure. Acknowledgements are sent only
//! after a successful commit, so a client is never told a message is stored when it is not.

use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::queue::{PersistHistograms, PersistQueue};
use crate::record::{Ack, WriteRecord};

/// The first pause after a failed write; doubled after each further failure.
const BACKOFF_START: Duration = Duration::from_millis(10);
/// The longest pause between two attempts: long enough not to hammer a database that is down,
/// short enough that writing resumes soon after it comes back.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How the persistence thread forms batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// The most records written in one transaction (at least 1 is used).
    pub max_batch: usize,
    /// How long to wait for more records before writing a batch that is not full. Zero (the
    /// default) writes at once: batches then grow only when records arrive during a commit.
    pub linger: Duration,
    /// How long to sleep when the queue is empty before looking again. A push wakes the
    /// thread earlier; this only bounds the cost of a missed wake-up.
    pub idle_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 4096,
            linger: Duration::ZERO,
            idle_wait: Duration::from_millis(50),
        }
    }
}

/// Starts the persistence thread, named `corechat-persist`. It runs until
/// [`PersistQueue::close`] has been called and everything queued has been committed.
pub fn spawn(
    backend: Box<dyn Backend>,
    queue: PersistQueue,
    config: BatchConfig,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("corechat-persist".into())
        .spawn(move || Writer::new(backend, queue, config).run())
}

/// Drops every chat-row upsert that a later record of the same batch overwrites (another
/// upsert or a delete of the same row): the batch commits as a whole, so the final state is
/// the same, and a busy conversation costs one row write per batch instead of one per message.
/// Returns where each record went (`None` for the dropped ones).
pub fn coalesce(records: &mut Vec<WriteRecord>) -> Vec<Option<usize>> {
    use std::collections::HashSet;
    let mut later: HashSet<(&str, &str)> = HashSet::new();
    let mut keep = vec![true; records.len()];
    for (i, r) in records.iter().enumerate().rev() {
        match r {
            WriteRecord::UpsertChat(c)
                if !later.insert((c.user_id.as_str(), c.comm_id.as_str())) =>
            {
                keep[i] = false;
            }
            WriteRecord::DeleteChat { user_id, comm_id } => {
                later.insert((user_id.as_str(), comm_id.as_str()));
            }
            _ => {}
        }
    }
    let mut next = 0;
    let moved: Vec<Option<usize>> = keep
        .iter()
        .map(|k| {
            k.then(|| {
                next += 1;
                next - 1
            })
        })
        .collect();
    if next < records.len() {
        let mut it = keep.into_iter();
        records.retain(|_| it.next().unwrap_or(true));
    }
    moved
}

/// The state of the persistence thread.
struct Writer {
    backend: Box<dyn Backend>,
    queue: PersistQueue,
    config: BatchConfig,
    /// The batch being written. Built once per batch and retried as is: a retry sends exactly
    /// the same records in the same order.
    records: Vec<WriteRecord>,
    /// The acknowledgements owed for `records`, delivered only after they commit, with the
    /// index of the record that carried each (`None` once coalescing dropped that record).
    acks: Vec<(Option<usize>, Ack)>,
    /// Acknowledgements told only if their record is refused (see [`crate::Envelope::watch`]),
    /// indexed like `acks`.
    watches: Vec<(Option<usize>, Ack)>,
    /// Records of the current batch the database refused for good (see `isolate`).
    refused: Vec<bool>,
    /// Which shards received tokens from the current batch, so each is woken once.
    touched: Vec<bool>,
    /// True while the backend is failing; used to log once per change of state.
    degraded: bool,
    /// Recorded per batch, merged into the shared copy about once a second.
    hist: PersistHistograms,
    published: Instant,
}

impl Writer {
    fn new(backend: Box<dyn Backend>, queue: PersistQueue, config: BatchConfig) -> Self {
        let config = BatchConfig {
            max_batch: config.max_batch.max(1),
            ..config
        };
        let shards = queue.shards();
        Writer {
            backend,
            queue,
            records: Vec::with_capacity(config.max_batch.min(65_536)),
            acks: Vec::new(),
            watches: Vec::new(),
            refused: Vec::new(),
            touched: vec![false; shards],
            config,
            degraded: false,
            hist: PersistHistograms::default(),
            published: Instant::now(),
        }
    }

    fn run(mut self) {
        self.queue.register_consumer(thread::current());
        ftlog::info!(
            "persistence: writing to {} (batches of up to {} records)",
            self.backend.describe(),
            self.config.max_batch
        );
        loop {
            self.records.clear();
            self.acks.clear();
            self.watches.clear();
            self.refused.clear();
            self.fill();
            if self.records.is_empty() {
                if self.queue.is_closing() && self.queue.is_empty() {
                    break;
                }
                if !self.hist.batch_size.is_empty()
                    && self.published.elapsed() >= Duration::from_secs(1)
                {
                    self.publish();
                }
                // A push or close() unparks us; an unpark that came before this call makes it
                // return at once, so no wake-up is lost.
                thread::park_timeout(self.config.idle_wait);
                continue;
            }
            self.linger();
            let depth = self.records.len() + self.queue.len();
            let moved = coalesce(&mut self.records);
            for (idx, _) in self.acks.iter_mut().chain(self.watches.iter_mut()) {
                *idx = idx.and_then(|i| moved.get(i).copied().flatten());
            }
            let t0 = Instant::now();
            self.write_until_committed();
            self.deliver_acks();
            let _ = self
                .hist
                .commit_us
                .record((t0.elapsed().as_micros() as u64).max(1));
            let _ = self.hist.batch_size.record(self.records.len() as u64);
            let _ = self.hist.queue_depth.record(depth as u64);
            if self.published.elapsed() >= Duration::from_secs(1) {
                self.publish();
            }
        }
        self.publish();
        ftlog::info!("persistence: queue closed and drained, thread exits");
    }

    /// Merges this thread's histograms into the shared copy read by reports.
    fn publish(&mut self) {
        if let Ok(mut shared) = self.queue.stats().histograms.lock() {
            shared.add(&self.hist);
            self.hist.reset();
        }
        self.published = Instant::now();
    }

    /// Pops records until the batch is full or the queue is empty.
    fn fill(&mut self) {
        while self.records.len() < self.config.max_batch {
            let Some(env) = self.queue.pop() else { break };
            if let Some(ack) = env.ack {
                self.acks.push((Some(self.records.len()), ack));
            }
            if let Some(ack) = env.watch {
                self.watches.push((Some(self.records.len()), ack));
            }
            self.records.push(env.record);
        }
    }

    /// With a non-zero linger, waits up to that long for a partial batch to fill, trading a
    /// little latency for fewer commits. Skipped when shutting down.
    fn linger(&mut self) {
        if self.config.linger.is_zero() {
            return;
        }
        let deadline = Instant::now() + self.config.linger;
        while self.records.len() < self.config.max_batch && !self.queue.is_closing() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            thread::park_timeout(deadline - now);
            self.fill();
        }
    }

    /// Writes the current batch, retrying with backoff until it commits.
    fn write_until_committed(&mut self) {
        let mut backoff = BACKOFF_START;
        let mut failures: u64 = 0;
        loop {
            match self.backend.write_batch(&self.records) {
                Ok(()) => break,
                // Refused twice for its data: find the culprit rather than stall every write.
                Err(err) if err.is_permanent() && failures >= 1 => {
                    ftlog::error!(
                        "persistence: {} refuses a batch of {} records ({err}); writing them one by one",
                        self.backend.describe(),
                        self.records.len()
                    );
                    self.isolate();
                    break;
                }
                Err(err) => {
                    failures += 1;
                    let stats = self.queue.stats();
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if !self.degraded {
                        self.degraded = true;
                        stats.degraded.store(true, Ordering::Release);
                        ftlog::error!(
                            "persistence: writing a batch of {} records to {} failed: {err}; retrying",
                            self.records.len(),
                            self.backend.describe()
                        );
                    }
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if let Err(err) = self.backend.reset() {
                        // Expected while the database is down; the next attempt will tell.
                        ftlog::debug!(
                            "persistence: reset of {} failed: {err}",
                            self.backend.describe()
                        );
                    }
                }
            }
        }
        let stats = self.queue.stats();
        if self.degraded {
            self.degraded = false;
            stats.degraded.store(false, Ordering::Release);
            ftlog::info!(
                "persistence: {} is writing again (batch committed after {failures} failed attempts)",
                self.backend.describe()
            );
        }
        stats.committed_batches.fetch_add(1, Ordering::Relaxed);
        stats
            .committed_records
            .fetch_add(self.records.len() as u64, Ordering::Relaxed);
    }

    /// Writes the batch one record per transaction. A record the database refuses for its
    /// data is logged in full (so an operator can repair and replay it) and left out; a
    /// transient failure is retried as usual. Only reached when a whole batch was refused twice.
    fn isolate(&mut self) {
        self.refused = vec![false; self.records.len()];
        for i in 0..self.records.len() {
            let mut backoff = BACKOFF_START;
            loop {
                match self
                    .backend
                    .write_batch(std::slice::from_ref(&self.records[i]))
                {
                    Ok(()) => break,
                    Err(err) if err.is_permanent() => {
                        ftlog::error!(
                            "persistence: record refused and NOT stored ({err}): {:?}",
                            self.records[i]
                        );
                        self.refused[i] = true;
                        break;
                    }
                    Err(err) => {
                        ftlog::debug!("persistence: retrying a record after: {err}");
                        thread::sleep(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        let _ = self.backend.reset();
                    }
                }
            }
        }
    }

    /// Hands each token of the committed batch to its shard, then wakes each such shard once.
    fn deliver_acks(&mut self) {
        if self.acks.is_empty() && self.watches.is_empty() {
            return;
        }
        let shards = self.touched.len();
        let mut stray = 0usize;
        // Refusals of watched records first: a shard must learn that a change was refused
        // before a later acknowledgement of the same request says it was stored.
        for (idx, ack) in &self.watches {
            let refused = idx.is_some_and(|i| self.refused.get(i).copied().unwrap_or(false));
            if !refused {
                continue;
            }
            if ack.shard < shards {
                self.queue
                    .acks(ack.shard)
                    .push(ack.token | crate::queue::REFUSED);
                self.touched[ack.shard] = true;
            } else {
                stray += 1;
            }
        }
        for (idx, ack) in &self.acks {
            let refused = idx.is_some_and(|i| self.refused.get(i).copied().unwrap_or(false));
            if ack.shard < shards {
                let token = if refused {
                    ack.token | crate::queue::REFUSED
                } else {
                    ack.token
                };
                self.queue.acks(ack.shard).push(token);
                self.touched[ack.shard] = true;
            } else {
                stray += 1;
            }
        }
        for (shard, touched) in self.touched.iter_mut().enumerate() {
            if std::mem::take(touched) {
                self.queue.acks(shard).notify();
            }
        }
        if stray > 0 {
            // A bug in a shard, not in the data: the records are committed all the same.
            ftlog::warn!(
                "persistence: {stray} acknowledgements named a shard >= {shards}; dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sqlite::SqliteBackend;
    use crate::backend::{LoadSummary, Loaded};
    use crate::model::{MessageRow, MessageStatus, UserRow};
    use crate::queue::AckSink;
    use crate::record::Envelope;
    use crate::PersistError;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Waker};

    fn user(id: &str) -> WriteRecord {
        WriteRecord::InsertUser(UserRow {
            user_id: id.into(),
            password: "pw".into(),
            phone: id.into(),
            name: id.into(),
            email: format!("{id}@an.com"),
            avatar: "/default.jpg".into(),
            status: "inactive".into(),
            created: "2024-01-02 03:04:05".into(),
        })
    }

    fn message(id: u64) -> WriteRecord {
        WriteRecord::InsertMessage(MessageRow {
            message_id: id,
            sender_id: "a".into(),
            receiver_id: "b".into(),
            chat_type: "friend".into(),
            body: format!("m{id}"),
            message_type: "text".into(),
            file_path: " ".into(),
            status: MessageStatus::Send,
            timestamp: "2024-01-02 03:04:05".into(),
        })
    }

    /// Collects `n` tokens from `sink`, failing the test after 10 s.
    fn wait_tokens(sink: &AckSink, n: usize) -> Vec<u64> {
        let mut cx = Context::from_waker(Waker::noop());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            let _ = sink.poll_drain(&mut cx, &mut out);
            assert!(
                Instant::now() < deadline,
                "only {} of {n} acks arrived",
                out.len()
            );
            thread::sleep(Duration::from_millis(1));
        }
        out
    }

    fn push(queue: &PersistQueue, env: Envelope) {
        queue.push(env).expect("queue has room");
    }

    #[test]
    fn default_config() {
        let c = BatchConfig::default();
        assert_eq!(c.max_batch, 4096);
        assert_eq!(c.linger, Duration::ZERO);
        assert_eq!(c.idle_wait, Duration::from_millis(50));
    }

    #[test]
    fn sqlite_writes_are_acknowledged_then_durable() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(dir.path()).unwrap();
        let queue = PersistQueue::new(1024, 2);
        let handle = spawn(
            Box::new(backend),
            queue.clone(),
            BatchConfig {
                max_batch: 7,
                linger: Duration::from_millis(2),
                idle_wait: Duration::from_millis(5),
            },
        )
        .unwrap();
        assert_eq!(
            handle.thread().name(),
            Some("corechat-persist"),
            "the thread is named for ps/top and logs"
        );

        push(
            &queue,
            Envelope::acked(user("a"), Ack { shard: 0, token: 1 }),
        );
        push(&queue, Envelope::new(user("b")));
        for id in 1..=50u64 {
            let ack = Ack {
                shard: (id % 2) as usize,
                token: 100 + id,
            };
            push(&queue, Envelope::acked(message(id), ack));
        }
        // An out-of-range shard must be skipped, not crash the thread.
        push(
            &queue,
            Envelope::acked(message(51), Ack { shard: 9, token: 9 }),
        );

        let mut shard0 = wait_tokens(queue.acks(0), 26);
        let mut shard1 = wait_tokens(queue.acks(1), 25);
        shard0.sort_unstable();
        shard1.sort_unstable();
        let mut expect0 = vec![1];
        expect0.extend((2..=50).step_by(2).map(|id| 100 + id));
        let expect1: Vec<u64> = (1..=49).step_by(2).map(|id| 100 + id).collect();
        assert_eq!(shard0, expect0);
        assert_eq!(shard1, expect1);

        queue.close();
        handle.join().unwrap();
        let stats = queue.stats();
        assert_eq!(stats.committed_records.load(Ordering::Relaxed), 53);
        assert!(stats.committed_batches.load(Ordering::Relaxed) >= 53 / 7);
        assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 0);
        assert!(!stats.degraded.load(Ordering::Relaxed));

        let mut backend = SqliteBackend::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        let summary = backend
            .load(&mut |l| {
                if let Loaded::Undelivered(m) = l {
                    ids.push(m.message_id);
                }
            })
            .unwrap();
        assert_eq!(summary.users, 2);
        assert_eq!(summary.max_message_id, 51);
        assert_eq!(ids, (1..=51).collect::<Vec<_>>());
    }

    /// What the fake backend saw.
    #[derive(Debug, Default)]
    struct FakeLog {
        attempts: u32,
        resets: u32,
        /// Every batch that "committed", in order.
        committed: Vec<Vec<WriteRecord>>,
        /// Sizes of all batches offered, failed ones included.
        offered: Vec<usize>,
        /// Tokens found in the ack sink while the batch was still failing.
        early_acks: usize,
        /// Whether the queue was flagged degraded during the second failing attempt.
        degraded_seen: bool,
    }

    /// Fails the first `fail_first` write attempts, then succeeds.
    struct FakeBackend {
        fail_first: u32,
        log: Arc<Mutex<FakeLog>>,
        queue: PersistQueue,
    }

    impl Backend for FakeBackend {
        fn load(&mut self, _sink: &mut dyn FnMut(Loaded)) -> Result<LoadSummary, PersistError> {
            Ok(LoadSummary::default())
        }

        fn write_batch(&mut self, batch: &[WriteRecord]) -> Result<(), PersistError> {
            let mut log = self.log.lock().unwrap();
            log.attempts += 1;
            log.offered.push(batch.len());
            if log.attempts <= self.fail_first {
                let mut early = Vec::new();
                let _ = self
                    .queue
                    .acks(0)
                    .poll_drain(&mut Context::from_waker(Waker::noop()), &mut early);
                log.early_acks += early.len();
                if log.attempts == 2 {
                    log.degraded_seen = self.queue.stats().degraded.load(Ordering::Acquire);
                }
                // A transient error (a lost connection, say): the whole batch is retried.
                return Err(PersistError::Io(std::io::Error::other("injected failure")));
            }
            log.committed.push(batch.to_vec());
            Ok(())
        }

        fn reset(&mut self) -> Result<(), PersistError> {
            self.log.lock().unwrap().resets += 1;
            Err(PersistError::BadData("reset fails too".into()))
        }

        fn describe(&self) -> String {
            "fake".into()
        }
    }

    /// Refuses, for its data, any batch holding the message with id `poison`.
    struct RefusingBackend {
        poison: u64,
        committed: Arc<Mutex<Vec<WriteRecord>>>,
    }

    impl Backend for RefusingBackend {
        fn load(&mut self, _sink: &mut dyn FnMut(Loaded)) -> Result<LoadSummary, PersistError> {
            Ok(LoadSummary::default())
        }

        fn write_batch(&mut self, batch: &[WriteRecord]) -> Result<(), PersistError> {
            let bad = batch
                .iter()
                .any(|r| matches!(r, WriteRecord::InsertMessage(m) if m.message_id == self.poison));
            if bad {
                return Err(PersistError::BadData("value out of range".into()));
            }
            self.committed.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }

        fn describe(&self) -> String {
            "refusing".into()
        }
    }

    #[test]
    fn a_record_the_database_refuses_does_not_stall_the_others() {
        let queue = PersistQueue::new(256, 1);
        for i in 1..=5u64 {
            push(
                &queue,
                Envelope::acked(message(i), Ack { shard: 0, token: i }),
            );
        }
        let committed = Arc::new(Mutex::new(Vec::new()));
        let backend = RefusingBackend {
            poison: 3,
            committed: committed.clone(),
        };
        let handle = spawn(Box::new(backend), queue.clone(), BatchConfig::default()).unwrap();
        let mut tokens = wait_tokens(queue.acks(0), 5);
        tokens.sort_unstable();
        assert_eq!(tokens, vec![1, 2, 4, 5, 3 | crate::queue::REFUSED]);
        // Later batches flow again.
        push(
            &queue,
            Envelope::acked(message(6), Ack { shard: 0, token: 6 }),
        );
        assert_eq!(wait_tokens(queue.acks(0), 1), vec![6]);
        queue.close();
        handle.join().unwrap();
        let ids: Vec<u64> = committed
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| match r {
                WriteRecord::InsertMessage(m) => Some(m.message_id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 4, 5, 6]);
    }

    /// A watched record says nothing when it commits and `REFUSED` when it is refused, before
    /// the barrier that acknowledges the same request: the shard hears the refusal first.
    #[test]
    fn a_watched_record_is_heard_of_only_when_refused() {
        let queue = PersistQueue::new(256, 1);
        for (id, token) in [(1u64, 10u64), (2, 20)] {
            let ack = Ack { shard: 0, token };
            push(
                &queue,
                Envelope {
                    record: message(id),
                    ack: None,
                    watch: Some(ack),
                },
            );
            push(&queue, Envelope::acked(WriteRecord::Barrier, ack));
        }
        let backend = RefusingBackend {
            poison: 2,
            committed: Arc::new(Mutex::new(Vec::new())),
        };
        let handle = spawn(Box::new(backend), queue.clone(), BatchConfig::default()).unwrap();
        let tokens = wait_tokens(queue.acks(0), 3);
        queue.close();
        handle.join().unwrap();
        let refused = tokens
            .iter()
            .position(|&t| t == 20 | crate::queue::REFUSED)
            .expect("the refusal arrives");
        let stored = tokens.iter().position(|&t| t == 20).expect("the barrier");
        assert!(refused < stored, "{tokens:?}");
        assert_eq!(tokens.iter().filter(|&&t| t == 10).count(), 1, "{tokens:?}");
        assert_eq!(tokens.len(), 3, "{tokens:?}");
    }

    #[test]
    fn a_failing_batch_is_retried_and_committed_exactly_once() {
        let queue = PersistQueue::new(256, 1);
        let log = Arc::new(Mutex::new(FakeLog::default()));
        let records: Vec<WriteRecord> = (1..=5).map(message).collect();
        // Queued before the thread starts, so that they form one batch.
        for (i, r) in records.iter().enumerate() {
            let ack = Ack {
                shard: 0,
                token: i as u64,
            };
            push(&queue, Envelope::acked(r.clone(), ack));
        }
        let backend = FakeBackend {
            fail_first: 2,
            log: log.clone(),
            queue: queue.clone(),
        };
        let handle = spawn(Box::new(backend), queue.clone(), BatchConfig::default()).unwrap();

        let mut tokens = wait_tokens(queue.acks(0), 5);
        tokens.sort_unstable();
        assert_eq!(tokens, vec![0, 1, 2, 3, 4]);
        queue.close();
        handle.join().unwrap();

        let log = log.lock().unwrap();
        assert_eq!(log.attempts, 3);
        assert_eq!(log.resets, 2, "reset after each failure, its error ignored");
        assert_eq!(log.offered, vec![5, 5, 5], "the same batch is retried");
        assert_eq!(log.committed, vec![records], "committed once, in order");
        assert_eq!(log.early_acks, 0, "no ack before the commit");
        assert!(log.degraded_seen);
        let stats = queue.stats();
        assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 2);
        assert_eq!(stats.committed_batches.load(Ordering::Relaxed), 1);
        assert_eq!(stats.committed_records.load(Ordering::Relaxed), 5);
        assert!(!stats.degraded.load(Ordering::Relaxed), "recovered");
    }

    #[test]
    fn close_drains_everything_in_batches_of_max_batch() {
        let queue = PersistQueue::new(256, 1);
        let log = Arc::new(Mutex::new(FakeLog::default()));
        let records: Vec<WriteRecord> = (1..=5).map(message).collect();
        for r in &records {
            push(&queue, Envelope::new(r.clone()));
        }
        queue.close();
        let backend = FakeBackend {
            fail_first: 0,
            log: log.clone(),
            queue: queue.clone(),
        };
        let config = BatchConfig {
            max_batch: 2,
            linger: Duration::from_secs(60),
            idle_wait: Duration::from_millis(5),
        };
        // Closed before it even started: it must still write everything, without lingering.
        let started = Instant::now();
        spawn(Box::new(backend), queue.clone(), config)
            .unwrap()
            .join()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(30));
        let log = log.lock().unwrap();
        assert_eq!(log.offered, vec![2, 2, 1]);
        assert_eq!(log.committed.concat(), records);
        assert!(queue.is_empty());
    }
}

#[cfg(test)]
mod coalesce_tests {
    use super::*;
    use crate::model::ChatRow;

    fn chat(user: &str, comm: &str, n: i64) -> WriteRecord {
        WriteRecord::UpsertChat(ChatRow {
            user_id: user.into(),
            comm_id: comm.into(),
            chat_type: "friend".into(),
            last_message: format!("m{n}"),
            last_message_type: Some("text".into()),
            last_time: "2026-01-01 00:00:00".into(),
            unread_count: n,
            chat_status: "chatting".into(),
        })
    }

    #[test]
    fn keeps_only_the_last_write_of_each_chat_row() {
        let del = WriteRecord::DeleteChat {
            user_id: "a".into(),
            comm_id: "c".into(),
        };
        let pw = WriteRecord::SetPassword {
            user_id: "a".into(),
            password: "p".into(),
        };
        let mut v = vec![
            chat("a", "b", 1),
            pw.clone(),
            chat("b", "a", 1),
            chat("a", "b", 2),
            chat("a", "c", 1),
            del.clone(),
            chat("a", "b", 3),
        ];
        coalesce(&mut v);
        assert_eq!(v, vec![pw, chat("b", "a", 1), del, chat("a", "b", 3)]);
        let mut one = vec![chat("a", "b", 1)];
        coalesce(&mut one);
        assert_eq!(one.len(), 1);
    }
}
