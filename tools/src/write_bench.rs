//! `corechat-admin write-bench`: the persistence path alone, without the server.
//!
//! Writes what the server writes for `send_message` (one `InsertMessage` and the two
//! `UpsertChat` rows of the conversation per message, coalesced per batch exactly as the
//! persistence thread does) through the persist crate's `Backend::write_batch`, in a tight
//! loop of batches of `--messages-per-batch` messages, for `--seconds`. It reports messages
//! and commits per second, commit latency, and the CPU used by this process and by the
//! database server (`--db-pid`, MariaDB's pid file by default).
//!
//! It gives the ceiling of the write path on a machine (no shards, no sockets, no client), and
//! with `--connections N` what N writers in parallel (each its own connection and its own
//! pairs of users, as a sharded writer would) would get from the same database.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use corechat_persist::backend::{mysql::MysqlBackend, sqlite::SqliteBackend};
use corechat_persist::model::{ChatRow, MessageRow, MessageStatus, UserRow};
use corechat_persist::thread::coalesce;
use corechat_persist::{Backend, WriteRecord};

#[derive(clap::Args, Debug, Clone)]
pub struct WriteBenchArgs {
    #[command(flatten)]
    store: crate::bench_store::BenchStore,
    /// Sender/receiver pairs (per connection)
    #[arg(long, default_value_t = 100)]
    pairs: u64,
    /// Messages per transaction
    #[arg(long, value_name = "N", default_value_t = 800)]
    messages_per_batch: usize,
    /// How long to write
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    seconds: f64,
    /// Writers in parallel, each with its own connection and its own pairs
    #[arg(long, value_name = "N", default_value_t = 1)]
    connections: usize,
}

fn open(a: &WriteBenchArgs) -> Result<Box<dyn Backend>, String> {
    match (&a.store.database, &a.store.data_dir) {
        (Some(url), _) => Ok(Box::new(
            MysqlBackend::open(url).map_err(|e| e.to_string())?,
        )),
        (None, Some(dir)) => Ok(Box::new(
            SqliteBackend::open(dir).map_err(|e| e.to_string())?,
        )),
        (None, None) => Err("give --database URL or --data-dir DIR".into()),
    }
}

/// User id of member `side` (0 or 1) of pair `p` of writer `w`.
pub(crate) fn uid(w: usize, p: u64, side: u64) -> String {
    (140_000_000_000u64 + (w as u64) * 10_000_000 + 2 * p + side).to_string()
}

pub(crate) fn user(id: String) -> UserRow {
    UserRow {
        password: "x".into(),
        phone: id.clone(),
        name: id.clone(),
        email: format!("{id}@wb"),
        avatar: "/default.jpg".into(),
        status: "inactive".into(),
        created: "2024-01-01 00:00:00".into(),
        user_id: id,
    }
}

struct WriterResult {
    /// Batches written again after a transient error (a deadlock, say), as the persistence
    /// thread would.
    retries: u64,
    messages: u64,
    records: u64,
    commits: Vec<u64>,
    elapsed: Duration,
}

fn writer(
    a: &WriteBenchArgs,
    w: usize,
    mut backend: Box<dyn Backend>,
    start: &Barrier,
) -> Result<WriterResult, String> {
    let users: Vec<WriteRecord> = (0..a.pairs)
        .flat_map(|p| [user(uid(w, p, 0)), user(uid(w, p, 1))])
        .map(WriteRecord::InsertUser)
        .collect();
    let mut retries = 0;
    let setup = write(backend.as_mut(), &users, &mut retries);
    start.wait();
    setup?;
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let t0 = Instant::now();
    let step = a.connections as u64;
    let mut id = w as u64 + 1;
    let mut pair = 0u64;
    let mut r = WriterResult {
        retries,
        messages: 0,
        records: 0,
        commits: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let mut batch = Vec::with_capacity(a.messages_per_batch * 3);
    while Instant::now() < deadline {
        batch.clear();
        for _ in 0..a.messages_per_batch {
            let (s, t) = (uid(w, pair, 0), uid(w, pair, 1));
            pair = (pair + 1) % a.pairs;
            let body = format!("cb:{pair}:{id}:1234567890");
            let ts = "2026-01-01 12:00:00".to_string();
            batch.push(WriteRecord::InsertMessage(MessageRow {
                message_id: id,
                sender_id: s.clone(),
                receiver_id: t.clone(),
                chat_type: "friend".into(),
                body: body.clone(),
                message_type: "text".into(),
                file_path: " ".into(),
                status: MessageStatus::Received,
                timestamp: ts.clone(),
            }));
            for (owner, peer, unread) in [(&s, &t, 0), (&t, &s, 1)] {
                batch.push(WriteRecord::UpsertChat(ChatRow {
                    user_id: owner.clone(),
                    comm_id: peer.clone(),
                    chat_type: "friend".into(),
                    last_message: body.clone(),
                    last_message_type: Some("text".into()),
                    last_time: ts.clone(),
                    unread_count: unread,
                    chat_status: "chatting".into(),
                }));
            }
            id += step;
        }
        coalesce(&mut batch);
        let c = Instant::now();
        write(backend.as_mut(), &batch, &mut r.retries)?;
        r.commits.push(c.elapsed().as_micros() as u64);
        r.messages += a.messages_per_batch as u64;
        r.records += batch.len() as u64;
    }
    r.elapsed = t0.elapsed();
    Ok(r)
}

/// `write_batch`, retried like the persistence thread does after a transient error (up to 20
/// times, without its backoff).
fn write(
    backend: &mut dyn Backend,
    batch: &[WriteRecord],
    retries: &mut u64,
) -> Result<(), String> {
    let mut attempts = 0;
    loop {
        match backend.write_batch(batch) {
            Ok(()) => return Ok(()),
            Err(e) if !e.is_permanent() && attempts < 20 => {
                attempts += 1;
                *retries += 1;
                let _ = backend.reset();
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// utime + stime of a process, in seconds.
pub(crate) fn proc_cpu(pid: u32) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// utime + stime, in seconds, from a `/proc/.../stat` file (a process's or a thread's).
pub(crate) fn stat_cpu(path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

pub fn run(a: &WriteBenchArgs) -> Result<(), String> {
    if a.pairs == 0 || a.messages_per_batch == 0 || a.connections == 0 {
        return Err("--pairs, --messages-per-batch and --connections must be positive".into());
    }
    a.store.prepare()?;
    let db_pid = a.store.db_pid();
    let mut backends = Vec::new();
    for _ in 0..a.connections {
        backends.push(open(a)?);
    }
    let what = backends[0].describe();
    let start = Arc::new(Barrier::new(a.connections + 1));
    let handles: Vec<_> = backends
        .into_iter()
        .enumerate()
        .map(|(w, b)| {
            let (a, start) = (a.clone(), start.clone());
            std::thread::spawn(move || writer(&a, w, b, &start))
        })
        .collect();
    start.wait();
    let self_cpu0 = proc_cpu(std::process::id());
    let db_cpu0 = db_pid.and_then(proc_cpu);
    let t0 = Instant::now();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.join().map_err(|_| "a writer panicked".to_string())??);
    }
    let wall = t0.elapsed().as_secs_f64();
    let self_cpu = self_cpu0.and_then(|c| Some(proc_cpu(std::process::id())? - c));
    let db_cpu = db_cpu0.and_then(|c| Some(proc_cpu(db_pid?)? - c));

    let messages: u64 = results.iter().map(|r| r.messages).sum();
    let records: u64 = results.iter().map(|r| r.records).sum();
    let mut commits: Vec<u64> = results.iter().flat_map(|r| r.commits.clone()).collect();
    commits.sort_unstable();
    let q = |x: f64| {
        commits
            .get(((commits.len() as f64 - 1.0) * x).round() as usize)
            .map_or(0.0, |&v| v as f64 / 1000.0)
    };
    println!(
        "{what}: {} writer(s), {} messages per batch, {} pairs each, {:.1} s",
        a.connections, a.messages_per_batch, a.pairs, wall
    );
    println!(
        "{:.0} messages/s, {:.0} records/s, {:.0} commits/s, {:.0} records per commit",
        messages as f64 / wall,
        records as f64 / wall,
        commits.len() as f64 / wall,
        records as f64 / commits.len().max(1) as f64
    );
    let retries: u64 = results.iter().map(|r| r.retries).sum();
    if retries > 0 {
        println!("{retries} batch(es) written again after a transient error (deadlock, ...)");
    }
    println!(
        "write_batch (statements + commit) ms: p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    let per = |cpu: Option<f64>| {
        cpu.map_or("-".to_string(), |c| {
            format!(
                "{:.0}% of a core, {:.1} µs per message",
                100.0 * c / wall,
                1e6 * c / messages.max(1) as f64
            )
        })
    };
    println!(
        "CPU: this process {}; database server {}",
        per(self_cpu),
        per(db_cpu)
    );
    println!(
        "write-bench: msgs_per_s={:.0} commit_p50_ms={:.2} commit_p99_ms={:.2}",
        messages as f64 / wall,
        q(0.5),
        q(0.99)
    );
    Ok(())
}
