//! The `backlog` scenario: a user with a big mailbox logs in. How long until every message
//! that arrived while it was offline has reached it?
//!
//! Setup: a sender and a receiver are registered and befriended; the receiver disconnects;
//! the sender sends `--messages` messages, each acknowledged (so stored) by the server.
//!
//! Measured, as the Qt client does it: the receiver connects and logs in; once the login
//! reply arrives it sends `get_unread_messages` and, right behind it, `friends` as a fence
//! (a connection's requests are answered in order, so the `friends` reply comes after the
//! last part of the mailbox, which arrives as several `get_unread_messages` frames). The
//! time to the fence is the time until everything is received. Every message carries its
//! sequence number, so loss, duplicates and order are checked. A second login then checks
//! that the mailbox was emptied (`get_unread_messages` answers `null`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corechat_engine::client::{reply_status, reply_type, Client};

use crate::common::CommonArgs;
use crate::cpu;
use crate::error::BenchError;
use crate::procs::{ServerArgs, Target};
use crate::report::{self, latency_table, ms};
use crate::stats::new_histogram;
use crate::svg::{percentile_plot, Series};
use crate::wire::{self, MessageTemplate, Tag};

#[derive(clap::Args, Debug, Clone)]
pub struct BacklogArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    /// Messages waiting in the mailbox
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub messages: u64,

    /// Minimum message_body size in bytes (padded)
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub payload: usize,

    /// Longest wait for any one frame, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
}

#[derive(Debug, Clone, Default)]
pub struct BacklogReport {
    pub args: Option<BacklogArgs>,
    pub started: String,
    pub target: String,
    pub command: Option<String>,
    pub aborted: Option<String>,
    /// Filling the mailbox (setup): seconds, and acks that were not `success`.
    pub fill_secs: f64,
    pub fill_refused: u64,
    pub login: Option<Duration>,
    /// From the `get_unread_messages` request to its first frame.
    pub first_frame: Option<Duration>,
    /// From the `get_unread_messages` request to the last message.
    pub last_message: Option<Duration>,
    /// From the `get_unread_messages` request to the fence's reply.
    pub fence: Option<Duration>,
    /// From the login request to the fence's reply.
    pub total: Option<Duration>,
    pub frames: u64,
    pub bytes: u64,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Frames other than the mailbox's before the fence.
    pub other_frames: u64,
    /// The second login found the mailbox empty.
    pub emptied: Option<bool>,
    /// Server CPU over the measured part.
    pub server_cpu: Option<Duration>,
    /// Per message: time from the `get_unread_messages` request to its arrival (ns).
    pub arrival: Option<hdrhistogram::Histogram<u64>>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn ok(what: &str, r: std::io::Result<serde_json::Value>) -> Result<(), String> {
    match r {
        Ok(v) if reply_status(&v) == "success" => Ok(()),
        Ok(v) => Err(format!("{what}: {v}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn client(addr: SocketAddr, timeout: Duration) -> Result<Client, String> {
    let mut c = Client::connect(addr).map_err(io("connect"))?;
    c.timeout = timeout;
    Ok(c)
}

pub fn run(
    args: &BacklogArgs,
    interrupt: Option<Arc<AtomicBool>>,
) -> Result<BacklogReport, BenchError> {
    if args.messages == 0 {
        return Err(BenchError::Invalid("--messages must be at least 1".into()));
    }
    let timeout = crate::common::positive_secs(args.timeout, "--timeout")?;
    let target = Target::corechat(&args.server, &args.common, &[])?;
    let common = target.common(&args.common);
    let addr = common.socket_addr()?;
    let base = common.base_for(2)?;
    let mut r = BacklogReport {
        args: Some(args.clone()),
        started: chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        target: target.describe(),
        ..Default::default()
    };
    let interrupted = || {
        interrupt
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    };
    if let Err(e) = measure(
        &mut r,
        args,
        addr,
        base,
        &common.password,
        timeout,
        target.pid,
    ) {
        r.aborted = Some(e);
    }
    if r.aborted.is_none() && interrupted() {
        r.aborted = Some("interrupted".into());
    }
    drop(target);
    Ok(r)
}

fn measure(
    r: &mut BacklogReport,
    args: &BacklogArgs,
    addr: SocketAddr,
    base: u64,
    pw: &str,
    timeout: Duration,
    pid: Option<u32>,
) -> Result<(), String> {
    let (sid, rid) = (base.to_string(), (base + 1).to_string());
    // Setup: befriend, then the receiver goes offline.
    let mut s = client(addr, timeout)?;
    {
        let mut rc = client(addr, timeout)?;
        ok("register", s.register(&sid, "backlog sender", pw))?;
        ok("register", rc.register(&rid, "backlog receiver", pw))?;
        ok("login", s.login(&sid, pw))?;
        ok("login", rc.login(&rid, pw))?;
        ok("add_friend", s.pair("add_friend", &sid, &rid))?;
        ok("accept_friend", rc.pair("accept_friend", &rid, &sid))?;
    }
    // Let the server see the receiver's connection close before anything is sent to it.
    std::thread::sleep(Duration::from_millis(500));

    // Fill the mailbox, a few hundred messages in flight at a time.
    let t = MessageTemplate::new(&sid, &rid);
    let mut body = String::new();
    let mut frames = Vec::new();
    let t0 = Instant::now();
    let mut seq = 0;
    while seq < args.messages {
        let n = (args.messages - seq).min(256);
        frames.clear();
        for i in 0..n {
            Tag {
                pair: 0,
                seq: seq + i,
                sent_ns: 0,
            }
            .write_body(args.payload, &mut body);
            t.write(&body, &mut frames);
        }
        s.send_raw(&frames).map_err(io("send"))?;
        for _ in 0..n {
            let v = s
                .recv_type("send_message")
                .map_err(io("send_message reply"))?;
            if reply_status(&v) != "success" {
                r.fill_refused += 1;
            }
        }
        seq += n;
    }
    r.fill_secs = t0.elapsed().as_secs_f64();
    drop(s);

    // Measured: the receiver logs in and takes its mailbox.
    let cpu0 = pid.and_then(|p| cpu::process_cpu(p).ok());
    let mut rc = client(addr, timeout)?;
    let t_login = Instant::now();
    ok("login", rc.login(&rid, pw))?;
    r.login = Some(t_login.elapsed());
    let mut req = wire::get_unread(&rid);
    req.extend_from_slice(&wire::friends(&rid));
    let t_req = Instant::now();
    rc.send_raw(&req).map_err(io("get_unread_messages"))?;
    let mut arrival = new_histogram();
    let mut seen = vec![false; args.messages as usize];
    let mut next = 0u64;
    loop {
        let f = rc.recv_bytes().map_err(io("waiting for the mailbox"))?;
        let now = t_req.elapsed();
        r.frames += 1;
        r.bytes += f.len() as u64 + 4;
        if let Some(tags) = wire::unread_tags(&f) {
            r.first_frame.get_or_insert(now);
            for tag in tags {
                let i = tag.seq as usize;
                if i >= seen.len() || seen[i] {
                    r.duplicates += 1;
                    continue;
                }
                seen[i] = true;
                if tag.seq != next {
                    r.out_of_order += 1;
                }
                next = tag.seq + 1;
                r.received += 1;
                r.last_message = Some(now);
                arrival.saturating_record(now.as_nanos() as u64);
            }
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&f).unwrap_or_default();
        if reply_type(&v) == "friends" {
            r.fence = Some(now);
            r.total = Some(t_login.elapsed());
            break;
        }
        r.other_frames += 1;
    }
    let cpu1 = pid.and_then(|p| cpu::process_cpu(p).ok());
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        r.server_cpu = Some(b.saturating_sub(a));
    }
    r.arrival = Some(arrival);
    drop(rc);
    std::thread::sleep(Duration::from_millis(200));

    // The mailbox must now be empty.
    let mut again = client(addr, timeout)?;
    ok("second login", again.login(&rid, pw))?;
    let v = again
        .simple("get_unread_messages", &rid)
        .map_err(io("second get_unread_messages"))?;
    r.emptied = Some(reply_status(&v) == "null");
    Ok(())
}

fn show(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| ms(d.as_nanos() as u64))
}

impl BacklogReport {
    fn messages(&self) -> u64 {
        self.args.as_ref().map_or(0, |a| a.messages)
    }

    /// Messages per second, from the request to the fence.
    pub fn rate(&self) -> Option<f64> {
        let f = self.fence?.as_secs_f64();
        (f > 0.0).then(|| self.received as f64 / f)
    }

    /// Every message arrived once, in order, and the mailbox was emptied.
    pub fn clean(&self) -> bool {
        self.aborted.is_none()
            && self.fill_refused == 0
            && self.received == self.messages()
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.emptied == Some(true)
    }

    pub fn brief(&self) -> String {
        let mut b = format!(
            "{} of {} messages in {} frames ({:.1} MiB) | login {} ms | first frame {} ms | all (fence) {} ms after get_unread_messages, {} ms after login | {} msg/s",
            self.received,
            self.messages(),
            self.frames,
            self.bytes as f64 / (1 << 20) as f64,
            show(self.login),
            show(self.first_frame),
            show(self.fence),
            show(self.total),
            self.rate().map_or_else(|| "-".into(), |r| format!("{r:.0}")),
        );
        let _ = write!(
            b,
            " | duplicates {} out of order {} | mailbox emptied: {}",
            self.duplicates,
            self.out_of_order,
            match self.emptied {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        );
        if let Some(a) = &self.aborted {
            let _ = write!(b, " | ABORTED: {a}");
        }
        b
    }

    pub fn summary_markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# corechat-bench backlog\n");
        if let Some(cmd) = &self.command {
            let _ = writeln!(m, "`{cmd}`\n");
        }
        let _ = writeln!(
            m,
            "Started {}; {}. A receiver with {} undelivered messages (payload {} bytes) logs in, \
             sends `get_unread_messages` once the login reply arrives, and `friends` right behind \
             it as a fence.\n",
            self.started,
            self.target,
            self.messages(),
            self.args.as_ref().map_or(0, |a| a.payload)
        );
        let _ = writeln!(
            m,
            "{}\n",
            match (&self.aborted, self.clean()) {
                (Some(a), _) => format!("**ABORTED**: {a}"),
                (None, true) =>
                    "**Complete**: every message arrived once and in order; the mailbox was emptied."
                        .into(),
                (None, false) => "**Complete with problems** (see below).".into(),
            }
        );
        let _ = writeln!(
            m,
            "| login (ms) | first frame | last message | fence | login -> fence | frames | MiB | msg/s | server CPU (s) |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |\n",
            show(self.login),
            show(self.first_frame),
            show(self.last_message),
            show(self.fence),
            show(self.total),
            self.frames,
            self.bytes as f64 / (1 << 20) as f64,
            self.rate().map_or_else(|| "-".into(), |r| format!("{r:.0}")),
            self.server_cpu
                .map_or_else(|| "-".into(), |d| format!("{:.3}", d.as_secs_f64()))
        );
        let _ = writeln!(
            m,
            "Times after `get_unread_messages` was sent, except login (its own round trip) and \
             login -> fence.\n\n\
             | received | of | duplicates | out of order | other frames | mailbox emptied |\n\
             |---:|---:|---:|---:|---:|---|\n| {} | {} | {} | {} | {} | {} |\n",
            self.received,
            self.messages(),
            self.duplicates,
            self.out_of_order,
            self.other_frames,
            match self.emptied {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
        );
        if let Some(h) = &self.arrival {
            let _ = writeln!(
                m,
                "Arrival of each message after the request:\n\n{}",
                latency_table(&[("arrival", h)])
            );
        }
        let _ = writeln!(
            m,
            "Setup: the mailbox was filled in {:.2} s ({} refused).\n\n## Files\n\n\
             `arrival.hgrm`: per-message arrival times (ms). `latency.svg`: their plot.",
            self.fill_secs, self.fill_refused
        );
        m
    }

    pub fn write(&self, dir: Option<&Path>) -> Result<PathBuf, BenchError> {
        let dir = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| report::default_dir("backlog"));
        let empty = new_histogram();
        let h = self.arrival.as_ref().unwrap_or(&empty);
        report::write_folder(
            &dir,
            &self.summary_markdown(),
            &[("arrival".to_string(), h)],
            &percentile_plot(
                &format!("corechat backlog: {} messages at login", self.messages()),
                &[Series::from_histogram(
                    "arrival after get_unread_messages",
                    h,
                )],
            ),
        )?;
        Ok(dir)
    }
}
