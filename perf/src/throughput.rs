//! The `throughput` scenario: P pairs of friends, each sender streaming `send_message` to
//! its receiver for a fixed time, closed loop (window K) or open loop (`--rate`).
//!
//! Setup creates 2P fresh users through the protocol (register, login, get_unread_messages,
//! add_friend, accept_friend), then all pairs start together. The measured window is
//! followed by a drain: senders stop, and the run waits until every message sent has been
//! acknowledged and delivered (or the drain times out). Loss is `sent - delivered` after
//! the drain and must be zero.
//!
//! Two latencies are measured per message: *ack* (send -> the sender's `send_message`
//! success reply, which the server sends once the message is durable) and *delivery*
//! (send -> the receiver's `receive_message`). In open loop both count from the intended
//! send time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::common::{pairs, positive_secs, CommonArgs};
use crate::driver::{Plan, StartMode};
use crate::error::BenchError;
use crate::report::{self, cpu_table, failures_table, latency_table, pct};
use crate::run::{execute, RunOutcome};
use crate::stats::{Counts, Metric};
use crate::svg::{percentile_plot, Series};
use crate::wire::Protocol;

#[derive(clap::Args, Debug, Clone)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Sender/receiver pairs (2 x PAIRS users, one connection each)
    #[arg(long, value_name = "P", default_value_t = 100)]
    pub pairs: usize,

    /// Most unacknowledged messages per sender
    #[arg(long, value_name = "K", default_value_t = 16)]
    pub window: usize,

    /// Length of the measured window, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,

    /// Open loop: total messages per second over all senders, on a fixed schedule; latency
    /// counts from each message's intended send time. Without it: closed loop.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,

    /// Minimum message_body size in bytes (padded)
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub payload: usize,

    /// Longest wait, after the window, for outstanding acks and deliveries, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub drain: f64,

    /// What --addr speaks: corechat's protocol (corechat, or the corechat-relay baseline) or
    /// NATS (users subscribe to their own subject; no register, unread or friends steps)
    #[arg(long, value_enum, default_value_t = Protocol::Corechat)]
    pub protocol: Protocol,
}

/// A finished (or aborted) throughput run.
#[derive(Debug, Clone)]
pub struct ThroughputReport {
    pub args: ThroughputArgs,
    pub base: u64,
    pub started: String,
    pub outcome: RunOutcome,
    /// The command line, when run from `corechat-bench` (shown in the summary).
    pub command: Option<String>,
}

/// The plan of the throughput workload: users created through the protocol (for corechat),
/// pairs that start together, closed or open loop.
pub fn chat_plan(args: &ThroughputArgs) -> Result<Plan, BenchError> {
    if args.pairs == 0 || args.pairs > u32::MAX as usize {
        return Err(BenchError::Invalid("--pairs must be at least 1".into()));
    }
    if args.window == 0 {
        return Err(BenchError::Invalid("--window must be at least 1".into()));
    }
    let interval_ns = match args.rate {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 => {
            Some(((args.pairs as f64 / r) * 1e9).max(1.0) as u64)
        }
        Some(_) => return Err(BenchError::Invalid("--rate must be positive".into())),
    };
    let corechat = args.protocol == Protocol::Corechat;
    Ok(Plan {
        addr: args.common.socket_addr()?,
        protocol: args.protocol,
        password: args.common.password.clone(),
        register: corechat,
        login: true,
        max_connecting: None,
        unread: corechat,
        befriend: corechat,
        both_ways: false,
        limit: None,
        window: args.window,
        interval_ns,
        start: StartMode::Barrier,
        payload: args.payload,
        total_pairs: args.pairs as u64,
    })
}

/// Runs the scenario. `interrupt`, when set, aborts the run (it is still reported).
pub fn run(
    args: &ThroughputArgs,
    interrupt: Option<Arc<AtomicBool>>,
) -> Result<ThroughputReport, BenchError> {
    let plan = chat_plan(args)?;
    let base = args.common.base_for(2 * args.pairs as u64)?;
    let duration = positive_secs(args.duration, "--duration")?;
    let drain = positive_secs(args.drain, "--drain")?;
    let opts = args
        .common
        .run_options("throughput", duration, drain, interrupt)?;
    let started = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let outcome = execute(plan, pairs(base, args.pairs), &opts)?;
    Ok(ThroughputReport {
        args: args.clone(),
        base,
        started,
        outcome,
        command: None,
    })
}

impl ThroughputReport {
    pub fn counts(&self) -> &Counts {
        &self.outcome.stats.counts
    }

    /// Sent but never delivered.
    pub fn lost(&self) -> u64 {
        self.counts().lost()
    }

    /// Messages delivered per second in the measured window.
    pub fn delivery_rate(&self) -> f64 {
        let secs = self.outcome.run_time.as_secs_f64();
        if secs > 0.0 {
            self.outcome.at_run_end.delivered as f64 / secs
        } else {
            0.0
        }
    }

    /// Server CPU microseconds per delivered message, if the server's pid was given.
    pub fn server_cpu_us_per_message(&self) -> Option<f64> {
        let d = self.outcome.cpu.server?;
        let n = self.counts().delivered;
        (n > 0).then(|| d.as_secs_f64() * 1e6 / n as f64)
    }

    /// Whether the run completed with every message delivered and nothing refused.
    pub fn clean(&self) -> bool {
        let c = self.counts();
        self.outcome.aborted.is_none()
            && c.failed_users == 0
            && c.sent > 0
            && self.lost() == 0
            && c.refused == 0
    }

    fn latencies(&self) -> Vec<(&'static str, Metric)> {
        let mut v = vec![("ack", Metric::Ack), ("delivery", Metric::Delivery)];
        if self.args.rate.is_some() {
            v.push(("send lag (generator)", Metric::SendLag));
        }
        v
    }

    pub fn summary_markdown(&self) -> String {
        let a = &self.args;
        let o = &self.outcome;
        let c = self.counts();
        let s = &o.stats;
        let mut m = String::new();
        let _ = writeln!(m, "# corechat-bench throughput\n");
        if let Some(cmd) = &self.command {
            let _ = writeln!(m, "`{cmd}`\n");
        }
        let mode = match a.rate {
            Some(r) => format!(
                "open loop at {r} msg/s in total (window cap {}), latency from the intended send time",
                a.window
            ),
            None => format!("closed loop, window {} per sender", a.window),
        };
        let _ = writeln!(
            m,
            "Started {}; server {} ({} protocol); {} pairs ({} users, ids {}..{}); {mode}; \
             {} s window; payload {} bytes; {} generator thread(s).\n",
            self.started,
            a.common.addr,
            a.protocol.name(),
            a.pairs,
            2 * a.pairs,
            self.base,
            self.base + 2 * a.pairs as u64 - 1,
            a.duration,
            a.payload,
            a.common.threads
        );
        let verdict = match (&o.aborted, self.clean()) {
            (Some(r), _) => format!("**ABORTED**: {r}"),
            (None, true) => "**Complete**: every message delivered, none refused.".into(),
            (None, false) => format!(
                "**Complete with problems**: {} lost, {} refused, {} users failed.",
                self.lost(),
                c.refused,
                c.failed_users
            ),
        };
        let _ = writeln!(m, "{verdict}\n");
        let _ = writeln!(m, "## Latency\n");
        let rows: Vec<(&str, &hdrhistogram::Histogram<u64>)> = self
            .latencies()
            .into_iter()
            .map(|(n, k)| (n, s.histogram(k)))
            .collect();
        let _ = writeln!(m, "{}", latency_table(&rows));
        let _ = writeln!(m, "## Messages\n");
        let _ = writeln!(
            m,
            "| sent | acked | refused | delivered | lost | duplicates | reordered | unsent backlog |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.sent,
            c.acked,
            c.refused,
            c.delivered,
            self.lost(),
            c.duplicates,
            c.reordered,
            c.unsent_backlog
        );
        let _ = writeln!(m, "## Rates\n");
        let secs = o.run_time.as_secs_f64().max(1e-9);
        let e = &o.at_run_end;
        let _ = writeln!(
            m,
            "Counted within the measured window ({:.2} s); the drain after it took {:.2} s.\n\n\
             | sent/s | acked/s | delivered/s |\n|---:|---:|---:|\n| {:.0} | {:.0} | {:.0} |\n",
            secs,
            o.drain_time.as_secs_f64(),
            e.sent as f64 / secs,
            e.acked as f64 / secs,
            e.delivered as f64 / secs
        );
        let _ = writeln!(m, "## CPU\n");
        let _ = writeln!(m, "{}", cpu_table(&o.cpu, a.common.server_pid, c.delivered));
        let _ = writeln!(m, "## Setup\n");
        let _ = writeln!(
            m,
            "Took {:.2} s.\n\n| users | connected | registered | logged in | ready | failed |\n\
             |---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} |\n",
            o.setup_time.as_secs_f64(),
            c.users,
            c.connected,
            c.registered,
            c.logged_in,
            c.ready,
            c.failed_users
        );
        let setup_rows: Vec<(&str, &hdrhistogram::Histogram<u64>)> = [
            Metric::Connect,
            Metric::Register,
            Metric::Login,
            Metric::Unread,
            Metric::AddFriend,
            Metric::AcceptFriend,
        ]
        .iter()
        .map(|k| (k.name(), s.histogram(*k)))
        .collect();
        let _ = writeln!(m, "{}", latency_table(&setup_rows));
        let _ = writeln!(
            m,
            "Other frames: {} foreign receive_message (e.g. the friend greeting), {} unexpected, \
             {} malformed; {} connections lost; {} of {} pairs failed ({}).\n",
            c.foreign,
            c.unexpected,
            c.malformed,
            c.disconnects,
            c.failed_pairs,
            c.pairs,
            pct(c.failed_pairs, c.pairs)
        );
        if !s.failures.is_empty() {
            let _ = writeln!(m, "## Failures\n\n{}", failures_table(&s.failures));
            if s.failures.keys().any(|k| k.contains("already exists")) {
                let _ = writeln!(
                    m,
                    "Ids already taken: pass a fresh `--base` (or a fresh `--data-dir` to the server).\n"
                );
            }
        }
        if !o.notes.is_empty() {
            let _ = writeln!(m, "## Notes\n");
            for n in &o.notes {
                let _ = writeln!(m, "- {n}");
            }
            m.push('\n');
        }
        let _ = writeln!(
            m,
            "## Files\n\n`ack.hgrm`, `delivery.hgrm`{}: HdrHistogram percentile distributions \
             (milliseconds). `latency.svg`: their percentile plot.",
            if a.rate.is_some() {
                ", `send_lag.hgrm`"
            } else {
                ""
            }
        );
        m
    }

    /// Writes the report folder; returns the folder.
    pub fn write(&self, dir: Option<&Path>) -> Result<PathBuf, BenchError> {
        let dir = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| report::default_dir("throughput"));
        let s = &self.outcome.stats;
        let mut hists: Vec<(String, &hdrhistogram::Histogram<u64>)> = self
            .latencies()
            .into_iter()
            .map(|(_, k)| (k.name().to_string(), s.histogram(k)))
            .collect();
        for k in [Metric::Register, Metric::Login] {
            hists.push((k.name().to_string(), s.histogram(k)));
        }
        let series: Vec<Series> = self
            .latencies()
            .into_iter()
            .map(|(n, k)| Series::from_histogram(n, s.histogram(k)))
            .collect();
        let title = format!(
            "corechat throughput: {} pairs, {}, {} s",
            self.args.pairs,
            match self.args.rate {
                Some(r) => format!("{r} msg/s open loop"),
                None => format!("window {}", self.args.window),
            },
            self.args.duration
        );
        report::write_folder(
            &dir,
            &self.summary_markdown(),
            &hists,
            &percentile_plot(&title, &series),
        )?;
        Ok(dir)
    }

    /// A few lines for the terminal.
    pub fn brief(&self) -> String {
        let c = self.counts();
        let s = &self.outcome.stats;
        let q = |k: Metric, x: f64| report::ms(s.histogram(k).value_at_quantile(x));
        let mut b = format!(
            "{:.0} msg/s delivered | ack p50 {} p99 {} ms | delivery p50 {} p99 {} ms | sent {} delivered {} lost {} refused {}",
            self.delivery_rate(),
            q(Metric::Ack, 0.5),
            q(Metric::Ack, 0.99),
            q(Metric::Delivery, 0.5),
            q(Metric::Delivery, 0.99),
            c.sent,
            c.delivered,
            self.lost(),
            c.refused
        );
        if let Some(us) = self.server_cpu_us_per_message() {
            let _ = write!(b, " | server {us:.2} CPU µs/msg");
        }
        if let Some(r) = &self.outcome.aborted {
            let _ = write!(b, " | ABORTED: {r}");
        }
        b
    }
}
