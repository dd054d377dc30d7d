//! `corechat-admin ack-bench`: the persistence thread alone, at a fixed rate, measuring what a
//! sender waits for: the time from a message entering the queue to its acknowledgement.
//!
//! It runs the server's own persistence thread ([`corechat_persist::spawn`]) on the server's
//! own queue, with the store opened exactly as the server opens it (`--writers` connections
//! for MySQL). A producer thread plays the shards: every millisecond it pushes the messages
//! due by then (one acknowledged `InsertMessage` each) and then one `UpsertChat` per
//! conversation row those messages changed, as a shard's 1 ms chat-row flush does. The
//! schedule is fixed in advance, so latency is measured from when a message was due, not
//! from when the producer got round to it (no coordinated omission): if persistence falls
//! behind, the figures say so.
//!
//! This is the figure for "persistence is never the bottleneck": the engine's own CPU, the
//! sockets and the load generator are left out, so the rate the store sustains and the ack
//! latency at that rate are seen alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use corechat_persist::model::{ChatRow, MessageRow, MessageStatus};
use corechat_persist::{Ack, BatchConfig, Envelope, PersistQueue, StoreConfig, WriteRecord};
use hdrhistogram::Histogram;

use crate::write_bench::{proc_cpu, stat_cpu, uid, user};

#[derive(clap::Args, Debug, Clone)]
pub struct AckBenchArgs {
    #[command(flatten)]
    store: crate::bench_store::BenchStore,
    /// Messages per second offered to the queue
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// How long to offer them
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    seconds: f64,
    /// Sender/receiver pairs the messages go round
    #[arg(long, default_value_t = 1000)]
    pairs: u64,
    /// MySQL connections writing each batch in parallel (the server's --db-writers)
    #[arg(long, value_name = "N", default_value_t = 2)]
    writers: usize,
    /// Most records per transaction (the server's --batch-size)
    #[arg(long, value_name = "N", default_value_t = 4096)]
    batch_size: usize,
    /// Queue capacity in records (the server's --queue-capacity)
    #[arg(long, value_name = "N", default_value_t = 1 << 18)]
    queue_capacity: usize,
}

/// Wakes the acknowledgement reader, which parks between drains.
struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
fn threads_cpu(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0.0;
    for task in dir.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        if let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() {
            total += stat_cpu(&format!("/proc/self/task/{tid}/stat")).unwrap_or(0.0);
        }
    }
    total
}

fn chat(owner: &str, peer: &str, body: &str, unread: i64) -> WriteRecord {
    WriteRecord::UpsertChat(ChatRow {
        user_id: owner.to_string(),
        comm_id: peer.to_string(),
        chat_type: "friend".into(),
        last_message: body.to_string(),
        last_message_type: Some("text".into()),
        last_time: "2026-01-01 12:00:00".into(),
        unread_count: unread,
        chat_status: "chatting".into(),
    })
}

/// Pushes `env`, waiting while the queue is full (the server would answer `server busy`;
/// here the wait shows up as latency, which is the honest account of falling behind).
fn push(queue: &PersistQueue, mut env: Envelope, full: &mut u64) {
    loop {
        match queue.push(env) {
            Ok(()) => return,
            Err(back) => {
                env = back;
                *full += 1;
                thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

pub fn run(a: &AckBenchArgs) -> Result<(), String> {
    if a.rate == 0 || a.pairs == 0 || a.writers == 0 || a.seconds <= 0.0 {
        return Err("--rate, --pairs, --writers and --seconds must be positive".into());
    }
    a.store.prepare()?;
    let store = match (&a.store.database, &a.store.data_dir) {
        (Some(url), _) => StoreConfig::Mysql {
            url: url.clone(),
            writers: a.writers,
        },
        (None, Some(dir)) => StoreConfig::Sqlite { dir: dir.clone() },
        (None, None) => return Err("give --database URL or --data-dir DIR".into()),
    };
    let db_pid = a.store.db_pid();
    let mut backend = corechat_persist::open(&store).map_err(|e| e.to_string())?;
    let summary = backend.load(&mut |_| {}).map_err(|e| e.to_string())?;
    let users: Vec<WriteRecord> = (0..a.pairs)
        .flat_map(|p| [user(uid(0, p, 0)), user(uid(0, p, 1))])
        .map(WriteRecord::InsertUser)
        .collect();
    for chunk in users.chunks(2048) {
        backend.write_batch(chunk).map_err(|e| e.to_string())?;
    }
    let what = backend.describe();

    let queue = PersistQueue::new(a.queue_capacity, 1);
    let persist = corechat_persist::spawn(
        backend,
        queue.clone(),
        BatchConfig {
            max_batch: a.batch_size,
            ..BatchConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;

    let total = (a.rate as f64 * a.seconds) as u64;
    let first_id = summary.max_message_id + 1;
    let t0 = Instant::now();
    let rate = a.rate;
    let due = move |i: u64| t0 + Duration::from_secs_f64(i as f64 / rate as f64);

    // The reader: every token is a message index; its latency runs from when it was due.
    let producer_done = Arc::new(AtomicBool::new(false));
    let reader = {
        let queue = queue.clone();
        let done = producer_done.clone();
        thread::spawn(move || {
            let waker = Waker::from(Arc::new(Unpark(thread::current())));
            let mut cx = Context::from_waker(&waker);
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
            let mut tokens = Vec::new();
            let mut acked = 0u64;
            let mut refused = 0u64;
            let mut last = Instant::now();
            while acked + refused < total {
                tokens.clear();
                if queue.acks(0).poll_drain(&mut cx, &mut tokens).is_pending() {
                    // Done producing and nothing for 60 s: something is stuck; say so.
                    if done.load(Ordering::Acquire) && last.elapsed() > Duration::from_secs(60) {
                        return Err(format!(
                            "only {acked} of {total} messages acknowledged after 60 s of silence"
                        ));
                    }
                    thread::park_timeout(Duration::from_millis(100));
                    continue;
                }
                let now = Instant::now();
                last = now;
                for &t in &tokens {
                    if t & corechat_persist::queue::REFUSED != 0 {
                        refused += 1;
                        continue;
                    }
                    let us = now.saturating_duration_since(due(t)).as_micros() as u64;
                    let _ = hist.record(us.max(1));
                    acked += 1;
                }
            }
            Ok::<_, String>((hist, acked, refused, Instant::now()))
        })
    };

    let persist_cpu0 = threads_cpu("corechat-pers") + threads_cpu("corechat-lane");
    let db_cpu0 = db_pid.and_then(proc_cpu);
    let mut full = 0u64;
    let mut next = 0u64;
    let mut rows: HashMap<u64, String> = HashMap::new();
    let ts = "2026-01-01 12:00:00";
    while next < total {
        let now = Instant::now();
        let upto = ((now - t0).as_secs_f64() * a.rate as f64) as u64;
        let upto = upto.min(total);
        rows.clear();
        while next < upto {
            let pair = next % a.pairs;
            let (s, t) = (uid(0, pair, 0), uid(0, pair, 1));
            let body = format!("ab:{pair}:{next}:1234567890");
            rows.insert(pair, body.clone());
            let m = WriteRecord::InsertMessage(MessageRow {
                message_id: first_id + next,
                sender_id: s,
                receiver_id: t,
                chat_type: "friend".into(),
                body,
                message_type: "text".into(),
                file_path: " ".into(),
                status: MessageStatus::Received,
                timestamp: ts.into(),
            });
            push(
                &queue,
                Envelope::acked(
                    m,
                    Ack {
                        shard: 0,
                        token: next,
                    },
                ),
                &mut full,
            );
            next += 1;
        }
        for (pair, body) in rows.drain() {
            let (s, t) = (uid(0, pair, 0), uid(0, pair, 1));
            push(&queue, Envelope::new(chat(&s, &t, &body, 0)), &mut full);
            push(&queue, Envelope::new(chat(&t, &s, &body, 1)), &mut full);
        }
        let tick = t0 + Duration::from_millis(((Instant::now() - t0).as_millis() + 1) as u64);
        thread::sleep(tick.saturating_duration_since(Instant::now()));
    }
    let offered = t0.elapsed().as_secs_f64();
    producer_done.store(true, Ordering::Release);
    let (hist, acked, refused, end) = reader
        .join()
        .map_err(|_| "the acknowledgement reader panicked".to_string())??;
    let wall = (end - t0).as_secs_f64();
    let persist_cpu = threads_cpu("corechat-pers") + threads_cpu("corechat-lane") - persist_cpu0;
    let db_cpu = db_cpu0.and_then(|c| Some(proc_cpu(db_pid?)? - c));
    let stats = queue.stats();
    let batches = stats.committed_batches.load(Ordering::Relaxed);
    let records = stats.committed_records.load(Ordering::Relaxed);
    queue.close();
    persist
        .join()
        .map_err(|_| "the persistence thread panicked".to_string())?;

    let q = |x: f64| hist.value_at_quantile(x) as f64 / 1000.0;
    println!(
        "{what}: offered {} msg/s for {offered:.1} s ({total} messages, {} pairs), batches of up to {}",
        a.rate, a.pairs, a.batch_size
    );
    println!(
        "acknowledged {acked} ({refused} refused) in {wall:.2} s: {:.0} msg/s; {batches} commits, {:.0} records per commit",
        acked as f64 / wall,
        records as f64 / batches.max(1) as f64
    );
    if full > 0 {
        println!("the queue was full {full} times (the server would have answered `server busy`)");
    }
    println!(
        "ack latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        hist.max() as f64 / 1000.0
    );
    let per = |c: f64| {
        format!(
            "{:.0}% of a core, {:.2} µs per message",
            100.0 * c / wall,
            1e6 * c / acked.max(1) as f64
        )
    };
    println!(
        "CPU: persistence threads {}; database server {}",
        per(persist_cpu),
        db_cpu.map_or("-".into(), per)
    );
    println!(
        "ack-bench: msgs_per_s={:.0} ack_p50_ms={:.2} ack_p99_ms={:.2} kept_up={}",
        acked as f64 / wall,
        q(0.5),
        q(0.99),
        acked == total && wall < offered + 1.0
    );
    Ok(())
}
