//! `relay-compare` and `nats-compare`: the same throughput workload, in one invocation,
//! against a peer (the `corechat-relay` floor, or a NATS server) and against corechat, with
//! corechat's figures reported as ratios of the peer's.
//!
//! The command starts and stops every process itself, one after the other (the peer first,
//! then corechat on a fresh temporary data directory), each on 127.0.0.1 with a random port,
//! so both runs see the same machine within a minute of each other and each process's CPU
//! time is measured from its pid. With `--external` corechat is the server already running
//! at `--addr` instead.
//!
//! What is compared: delivered messages per second (the throughput), and ack and delivery
//! latency percentiles. The acks do not mean the same thing: corechat acknowledges a message
//! once it is committed to disk (SQLite WAL, fsync), the relay as soon as it has written it
//! to the receiver's socket, NATS (PUB + PING/PONG) once it has routed it to the
//! subscriber's buffer. Delivery means the same for all three.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::error::BenchError;
use crate::procs::{self, Proc, ServerArgs, Target};
use crate::report::{self, ms};
use crate::stats::Metric;
use crate::svg::{percentile_plot, Series};
use crate::throughput::{self, ThroughputArgs, ThroughputReport};
use crate::wire::Protocol;

/// What corechat is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Relay,
    Nats,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Relay => "relay",
            Peer::Nats => "nats",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The workload, as for `throughput` (--addr and --server-pid only matter with
    /// --external; --protocol is set per target)
    #[command(flatten)]
    pub workload: ThroughputArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    /// The relay binary [default: `corechat-relay` next to this binary, else
    /// target/release/corechat-relay]
    #[arg(long, value_name = "PATH")]
    pub relay_bin: Option<PathBuf>,

    /// Relay threads [default: --shards, so both use as many threads for connections]
    #[arg(long, value_name = "N")]
    pub relay_threads: Option<usize>,

    /// The nats-server binary [default: nats-server on the PATH or in /usr/sbin; perf/nats.sh
    /// installs it]
    #[arg(long, value_name = "PATH")]
    pub nats_bin: Option<PathBuf>,

    /// Seconds to pause between the two runs
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub pause: f64,
}

/// One target's run.
#[derive(Debug, Clone)]
pub struct TargetRun {
    pub name: String,
    /// How the target was started.
    pub describe: String,
    pub report: ThroughputReport,
}

#[derive(Debug, Clone)]
pub struct CompareReport {
    pub peer: Peer,
    pub args: CompareArgs,
    pub started: String,
    /// The peer's run, then corechat's (fewer if a run could not be made).
    pub runs: Vec<TargetRun>,
    pub command: Option<String>,
}

fn peer_process(args: &CompareArgs, peer: Peer) -> Result<Proc, BenchError> {
    match peer {
        Peer::Relay => {
            let bin = args
                .relay_bin
                .clone()
                .unwrap_or_else(|| procs::default_bin("corechat-relay"));
            procs::start_relay(&bin, args.relay_threads.unwrap_or(args.server.shards))
        }
        Peer::Nats => {
            let bin = args
                .nats_bin
                .clone()
                .or_else(procs::find_nats)
                .ok_or_else(|| {
                    BenchError::Process(
                        "nats-server not found: run perf/nats.sh (installs it) or pass --nats-bin"
                            .into(),
                    )
                })?;
            procs::start_nats(&bin)
        }
    }
}

/// Runs the workload against `peer`, then against corechat.
pub fn run(
    args: &CompareArgs,
    peer: Peer,
    interrupt: Option<Arc<AtomicBool>>,
) -> Result<CompareReport, BenchError> {
    if args.workload.protocol != Protocol::Corechat {
        return Err(BenchError::Invalid(
            "--protocol is set per target by the comparison; leave it out".into(),
        ));
    }
    let started = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let mut runs = Vec::new();
    // A fixed base for both runs, so they create the same ids.
    let base = args
        .workload
        .common
        .base_for(2 * args.workload.pairs as u64)?;

    // The peer.
    let p = peer_process(args, peer)?;
    let mut a = args.workload.clone();
    a.common.addr = p.addr().to_string();
    a.common.server_pid = Some(p.pid());
    a.common.base = Some(base);
    a.protocol = match peer {
        Peer::Relay => Protocol::Corechat,
        Peer::Nats => Protocol::Nats,
    };
    let describe = format!(
        "{} started here (pid {}) on {}",
        p.name(),
        p.pid(),
        p.addr()
    );
    let r = throughput::run(&a, interrupt.clone())?;
    drop(p);
    let aborted = r.outcome.aborted.is_some();
    runs.push(TargetRun {
        name: peer.name().into(),
        describe,
        report: r,
    });
    if !aborted {
        std::thread::sleep(Duration::from_secs_f64(args.pause.clamp(0.0, 60.0)));
        // corechat.
        let t = Target::corechat(&args.server, &args.workload.common, &[])?;
        let mut a = args.workload.clone();
        a.common = t.common(&args.workload.common);
        a.common.base = Some(base);
        a.protocol = Protocol::Corechat;
        let r = throughput::run(&a, interrupt)?;
        runs.push(TargetRun {
            name: "corechat".into(),
            describe: t.describe(),
            report: r,
        });
    }
    Ok(CompareReport {
        peer,
        args: args.clone(),
        started,
        runs,
        command: None,
    })
}

/// The figures compared, for one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Delivered messages per second in the measured window.
    pub rate: f64,
    pub ack_p50: u64,
    pub ack_p99: u64,
    pub delivery_p50: u64,
    pub delivery_p99: u64,
    /// The target process's CPU microseconds per delivered message.
    pub cpu_us: Option<f64>,
}

impl Figures {
    pub fn of(r: &ThroughputReport) -> Figures {
        let s = &r.outcome.stats;
        let q = |m: Metric, x: f64| s.histogram(m).value_at_quantile(x);
        Figures {
            rate: r.delivery_rate(),
            ack_p50: q(Metric::Ack, 0.5),
            ack_p99: q(Metric::Ack, 0.99),
            delivery_p50: q(Metric::Delivery, 0.5),
            delivery_p99: q(Metric::Delivery, 0.99),
            cpu_us: r.server_cpu_us_per_message(),
        }
    }
}

/// corechat's figure divided by the peer's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    /// Delivered messages per second.
    pub throughput: f64,
    pub ack_p99: Option<f64>,
    pub delivery_p99: Option<f64>,
    /// CPU per delivered message.
    pub cpu: Option<f64>,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

fn show(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

impl CompareReport {
    fn run_of(&self, name: &str) -> Option<&ThroughputReport> {
        self.runs.iter().find(|r| r.name == name).map(|r| &r.report)
    }

    pub fn peer_report(&self) -> Option<&ThroughputReport> {
        self.run_of(self.peer.name())
    }

    pub fn corechat_report(&self) -> Option<&ThroughputReport> {
        self.run_of("corechat")
    }

    /// corechat's figures divided by the peer's.
    pub fn ratios(&self) -> Option<Ratios> {
        let c = Figures::of(self.corechat_report()?);
        let p = Figures::of(self.peer_report()?);
        Some(Ratios {
            throughput: ratio(c.rate, p.rate)?,
            ack_p99: ratio(c.ack_p99 as f64, p.ack_p99 as f64),
            delivery_p99: ratio(c.delivery_p99 as f64, p.delivery_p99 as f64),
            cpu: match (c.cpu_us, p.cpu_us) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => None,
            },
        })
    }

    /// Both runs made and clean.
    pub fn clean(&self) -> bool {
        self.runs.len() == 2 && self.runs.iter().all(|r| r.report.clean())
    }

    fn table(&self) -> String {
        let mut t = String::from(
            "| target | delivered/s | ack p50 (ms) | ack p99 | delivery p50 | delivery p99 | CPU µs/msg | sent | lost | verdict |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for run in &self.runs {
            let f = Figures::of(&run.report);
            let c = run.report.counts();
            let _ = writeln!(
                t,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.name,
                f.rate,
                ms(f.ack_p50),
                ms(f.ack_p99),
                ms(f.delivery_p50),
                ms(f.delivery_p99),
                f.cpu_us.map_or_else(|| "-".into(), |u| format!("{u:.2}")),
                c.sent,
                run.report.lost(),
                match (&run.report.outcome.aborted, run.report.clean()) {
                    (Some(r), _) => format!("aborted: {r}"),
                    (None, true) => "clean".into(),
                    (None, false) => "problems".into(),
                }
            );
        }
        t
    }

    /// The ratio lines (also printed on the terminal).
    pub fn brief(&self) -> String {
        let mut b = self.table();
        let peer = self.peer.name();
        match self.ratios() {
            Some(r) => {
                let _ = writeln!(
                    b,
                    "\ncorechat / {peer}: throughput {:.3}, ack p99 {}, delivery p99 {}, CPU per message {}",
                    r.throughput,
                    show(r.ack_p99),
                    show(r.delivery_p99),
                    show(r.cpu)
                );
            }
            None => {
                let _ = writeln!(b, "\nno ratio: a run is missing or delivered nothing");
            }
        }
        b
    }

    pub fn summary_markdown(&self) -> String {
        let a = &self.args.workload;
        let peer = self.peer.name();
        let mut m = String::new();
        let _ = writeln!(m, "# corechat-bench {peer}-compare\n");
        if let Some(cmd) = &self.command {
            let _ = writeln!(m, "`{cmd}`\n");
        }
        let mode = match a.rate {
            Some(r) => format!("open loop at {r} msg/s in total (window cap {})", a.window),
            None => format!("closed loop, window {} per sender", a.window),
        };
        let _ = writeln!(
            m,
            "Started {}. The same workload against each target, one after the other: {} pairs, \
             {mode}, {} s window, payload {} bytes, {} generator thread(s).\n",
            self.started, a.pairs, a.duration, a.payload, a.common.threads
        );
        for r in &self.runs {
            let _ = writeln!(m, "- **{}**: {}", r.name, r.describe);
        }
        let _ = writeln!(
            m,
            "\n{}",
            if self.clean() {
                "**Complete**: both runs clean (nothing lost or refused)."
            } else {
                "**Problems**: see the verdicts and each target's own summary."
            }
        );
        let _ = writeln!(m, "\n## Results\n\n{}", self.brief());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        for run in &self.runs {
            let cpu = &run.report.outcome.cpu;
            let secs = cpu.window.as_secs_f64().max(1e-9);
            let gen = cpu.generator.map_or(0.0, |d| d.as_secs_f64() / secs);
            let srv = cpu.server.map_or(0.0, |d| d.as_secs_f64() / secs);
            let threads = a.common.threads as f64;
            if gen > 0.85 * threads.min(cores) {
                let _ = writeln!(
                    m,
                    "- **{}**: the generator was saturated ({gen:.2} cores for {} thread(s)): \
                     its throughput is a lower bound of what {} can do.",
                    run.name, a.common.threads, run.name
                );
            } else if gen + srv > 0.85 * cores {
                let _ = writeln!(
                    m,
                    "- **{}**: target ({srv:.2} cores) and generator ({gen:.2}) together used \
                     most of the machine's {cores} cores.",
                    run.name
                );
            }
        }
        m.push('\n');
        let _ = writeln!(
            m,
            "Ratios are corechat's figure divided by {peer}'s: below 1 for throughput, above 1 \
             for latency and CPU, means corechat is behind. CPU µs/msg is the target process's \
             CPU time over the window and drain per delivered message.\n"
        );
        let _ = writeln!(
            m,
            "What an ack means differs: corechat acknowledges a message once it is committed \
             (SQLite WAL with fsync); {}. Delivery (send -> the receiver has it) means the same \
             for both.\n",
            match self.peer {
                Peer::Relay =>
                    "the relay as soon as it has written the message to the receiver's socket, \
                     and it parses no JSON, keeps no state and stores nothing",
                Peer::Nats =>
                    "NATS's ack is a PING/PONG after the PUB (its flush): the server has routed \
                     the message to the subscriber's buffer, nothing is stored",
            }
        );
        let _ = writeln!(
            m,
            "## Files\n\n`{peer}/` and `corechat/`: each run's own report (summary, .hgrm \
             files, plot). `latency.svg`: both runs' ack and delivery percentiles."
        );
        m
    }

    pub fn write(&self, dir: Option<&Path>) -> Result<PathBuf, BenchError> {
        let dir = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| report::default_dir(&format!("{}-compare", self.peer.name())));
        let mut series = Vec::new();
        for r in &self.runs {
            r.report.write(Some(&dir.join(&r.name)))?;
            let s = &r.report.outcome.stats;
            series.push(Series::from_histogram(
                &format!("{} delivery", r.name),
                s.histogram(Metric::Delivery),
            ));
            series.push(Series::from_histogram(
                &format!("{} ack", r.name),
                s.histogram(Metric::Ack),
            ));
        }
        let title = format!(
            "corechat vs {}: {} pairs, {}",
            self.peer.name(),
            self.args.workload.pairs,
            match self.args.workload.rate {
                Some(r) => format!("{r} msg/s open loop"),
                None => format!("window {}", self.args.workload.window),
            }
        );
        report::write_folder(
            &dir,
            &self.summary_markdown(),
            &[],
            &percentile_plot(&title, &series),
        )?;
        Ok(dir)
    }
}
