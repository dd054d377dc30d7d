//! The `login-storm` scenario: while P pairs chat at a fixed rate (open loop), N users log
//! in at once, twice: *cold* (their first login since the server started, so each one pays
//! for an argon2id verification) and *warm* (the same users again, within the credential
//! cache's time-to-live, so each one costs a keyed BLAKE3 digest). The question is whether
//! the storm slows chat, and how fast logins go.
//!
//! The N users are registered in a setup phase and never logged in before the cold storm
//! (registration does not fill the credential cache). The chat runs throughout; its ack and
//! delivery latencies are recorded per *segment*: before the storms, during the cold storm,
//! between, during the warm storm, after. A storm's users connect at once, log in, and fetch
//! their unread messages as the Qt client does; its logins per second count from the first
//! connect to the last login reply.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{idle_plan, pairs, positive_secs, CommonArgs};
use crate::driver::StartMode;
use crate::error::BenchError;
use crate::procs::{ServerArgs, Target};
use crate::report::{self, failures_table, latency_table, ms, pct};
use crate::run::{execute, RunOutcome, Session};
use crate::stats::Metric;
use crate::svg::{percentile_plot, Series};
use crate::throughput::{self, ThroughputArgs, ThroughputReport};
use crate::wire::Protocol;

#[derive(clap::Args, Debug, Clone)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    /// Pairs chatting throughout
    #[arg(long, value_name = "P", default_value_t = 50)]
    pub pairs: usize,

    /// Their total rate, messages per second (open loop)
    #[arg(long, value_name = "MSGS_PER_SEC", default_value_t = 5000.0)]
    pub rate: f64,

    /// Most unacknowledged messages per sender
    #[arg(long, value_name = "K", default_value_t = 64)]
    pub window: usize,

    /// Users that log in at once in each storm
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub logins: usize,

    /// Seconds of chat before the cold storm
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub before: f64,

    /// Seconds of chat between the storms, and after the warm one
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub between: f64,

    /// Longest a storm may take, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub storm_timeout: f64,

    /// Longest wait after the chat for outstanding acks and deliveries, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub drain: f64,
}

/// Segments of the chat (see the module documentation).
pub const SEGMENTS: [&str; 5] = ["before", "cold storm", "between", "warm storm", "after"];

#[derive(Debug, Clone)]
pub struct StormReport {
    pub args: StormArgs,
    pub started: String,
    pub target: String,
    pub command: Option<String>,
    pub aborted: Option<String>,
    /// Registering the storm users (setup).
    pub registration: Option<RunOutcome>,
    pub chat: Option<ThroughputReport>,
    pub cold: Option<RunOutcome>,
    pub warm: Option<RunOutcome>,
}

pub fn run(
    args: &StormArgs,
    interrupt: Option<Arc<AtomicBool>>,
) -> Result<StormReport, BenchError> {
    if args.logins < 2 {
        return Err(BenchError::Invalid("--logins must be at least 2".into()));
    }
    let before = positive_secs(args.before, "--before")?;
    let between = positive_secs(args.between, "--between")?;
    let storm_timeout = positive_secs(args.storm_timeout, "--storm-timeout")?;
    let target = Target::corechat(&args.server, &args.common, &[])?;
    let common = target.common(&args.common);
    let addr = common.socket_addr()?;
    let storm_pairs = args.logins.div_ceil(2);
    let base = common.base_for(2 * (args.pairs + storm_pairs) as u64)?;
    let storm_base = base + 2 * args.pairs as u64;
    let mut r = StormReport {
        args: args.clone(),
        started: chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        target: target.describe(),
        command: None,
        aborted: None,
        registration: None,
        chat: None,
        cold: None,
        warm: None,
    };

    // Setup: the storm's users, registered only.
    let opts = common.run_options(
        "register",
        Duration::ZERO,
        Duration::from_secs(1),
        interrupt.clone(),
    )?;
    let reg = execute(
        idle_plan(
            addr,
            &common.password,
            true,
            false,
            StartMode::WhenReady,
            Some(512),
        ),
        pairs(storm_base, storm_pairs),
        &opts,
    )?;
    let registered = reg.stats.counts.registered;
    r.registration = Some(reg);
    if registered < 2 * storm_pairs as u64 {
        r.aborted = Some(format!(
            "only {registered} of {} storm users could be registered",
            2 * storm_pairs
        ));
        return Ok(r);
    }

    // The chat: a throughput workload whose window ends when the storms are over.
    let chat_args = ThroughputArgs {
        common: CommonArgs {
            base: Some(base),
            ..common.clone()
        },
        pairs: args.pairs,
        window: args.window,
        duration: 0.0,
        rate: Some(args.rate),
        payload: 0,
        drain: args.drain,
        protocol: Protocol::Corechat,
    };
    let copts = common.run_options(
        "chat",
        Duration::from_secs(1),
        positive_secs(args.drain, "--drain")?,
        interrupt.clone(),
    )?;
    let mut chat = Session::start(
        throughput::chat_plan(&chat_args)?,
        pairs(base, args.pairs),
        &copts,
    )?;
    if !chat.setup() {
        let out = chat.finish()?;
        r.aborted = Some(format!(
            "the chat's setup failed: {}",
            out.aborted.clone().unwrap_or_default()
        ));
        r.chat = Some(chat_report(&chat_args, out, &r.started));
        return Ok(r);
    }
    chat.quiet();
    let ctl = chat.control();
    let stop = Arc::new(AtomicBool::new(false));
    let chat_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            chat.window(Duration::from_secs(365 * 86_400), &mut |_| {
                stop.load(Ordering::Relaxed)
            });
            chat.drain();
            chat.finish()
        })
    };
    let storm = |label: &str| -> Result<RunOutcome, BenchError> {
        let mut o = common.run_options(
            label,
            Duration::ZERO,
            Duration::from_secs(1),
            interrupt.clone(),
        )?;
        o.setup_timeout = storm_timeout;
        execute(
            idle_plan(
                addr,
                &common.password,
                false,
                true,
                StartMode::WhenReady,
                None,
            ),
            pairs(storm_base, storm_pairs),
            &o,
        )
    };
    let stopped = || {
        interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    };
    let mut run_storms = || -> Result<(), BenchError> {
        std::thread::sleep(before);
        if stopped() {
            return Ok(());
        }
        ctl.segment.store(1, Ordering::Relaxed);
        r.cold = Some(storm("cold storm")?);
        ctl.segment.store(2, Ordering::Relaxed);
        std::thread::sleep(between);
        if stopped() {
            return Ok(());
        }
        ctl.segment.store(3, Ordering::Relaxed);
        r.warm = Some(storm("warm storm")?);
        ctl.segment.store(4, Ordering::Relaxed);
        std::thread::sleep(between);
        Ok(())
    };
    let storms = run_storms();
    stop.store(true, Ordering::Relaxed);
    let out = chat_thread
        .join()
        .map_err(|_| BenchError::WorkerPanicked)??;
    storms?;
    let mut chat_args = chat_args;
    chat_args.duration = out.run_time.as_secs_f64();
    r.chat = Some(chat_report(&chat_args, out, &r.started));
    if stopped() {
        r.aborted = Some("interrupted".into());
    }
    drop(target);
    Ok(r)
}

fn chat_report(args: &ThroughputArgs, outcome: RunOutcome, started: &str) -> ThroughputReport {
    ThroughputReport {
        args: args.clone(),
        base: args.common.base.unwrap_or(0),
        started: started.to_string(),
        outcome,
        command: None,
    }
}

/// A storm's figures.
#[derive(Debug, Clone, Copy)]
pub struct StormFigures {
    pub users: u64,
    pub logged_in: u64,
    pub secs: f64,
    pub per_sec: f64,
}

impl StormFigures {
    pub fn of(o: &RunOutcome) -> StormFigures {
        let c = &o.stats.counts;
        let secs = o.at_run_end.last_login_ns as f64 / 1e9;
        StormFigures {
            users: c.users,
            logged_in: c.logged_in,
            secs,
            per_sec: if secs > 0.0 {
                c.logged_in as f64 / secs
            } else {
                0.0
            },
        }
    }
}

impl StormReport {
    fn storms(&self) -> Vec<(&'static str, &RunOutcome)> {
        let mut v = Vec::new();
        if let Some(c) = &self.cold {
            v.push(("cold", c));
        }
        if let Some(w) = &self.warm {
            v.push(("warm", w));
        }
        v
    }

    /// Delivery latency p99 (ns) of a chat segment.
    pub fn delivery_p99(&self, seg: usize) -> Option<u64> {
        let h = self
            .chat
            .as_ref()?
            .outcome
            .stats
            .segment(seg, Metric::Delivery);
        (!h.is_empty()).then(|| h.value_at_quantile(0.99))
    }

    /// Every storm login succeeded, the chat lost nothing and nobody failed.
    pub fn clean(&self) -> bool {
        self.aborted.is_none()
            && self.chat.as_ref().is_some_and(ThroughputReport::clean)
            && self.cold.is_some()
            && self.warm.is_some()
            && self.storms().iter().all(|(_, o)| {
                o.aborted.is_none()
                    && o.stats.counts.failed_users == 0
                    && o.stats.counts.logged_in == o.stats.counts.users
            })
    }

    fn segment_table(&self) -> String {
        let mut t = String::from(
            "| chat segment | deliveries | delivery p50 (ms) | p99 | p99.9 | max | ack p99 |\n|---|---:|---:|---:|---:|---:|---:|\n",
        );
        let Some(chat) = &self.chat else {
            return t;
        };
        for (i, name) in SEGMENTS.iter().enumerate() {
            let d = chat.outcome.stats.segment(i, Metric::Delivery);
            let a = chat.outcome.stats.segment(i, Metric::Ack);
            let q = |h: &hdrhistogram::Histogram<u64>, x: f64| {
                if h.is_empty() {
                    "-".into()
                } else {
                    ms(h.value_at_quantile(x))
                }
            };
            let _ = writeln!(
                t,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                d.len(),
                q(&d, 0.5),
                q(&d, 0.99),
                q(&d, 0.999),
                if d.is_empty() {
                    "-".into()
                } else {
                    ms(d.max())
                },
                q(&a, 0.99)
            );
        }
        t
    }

    fn storm_table(&self) -> String {
        let mut t = String::from(
            "| storm | users | logged in | took (s) | logins/s | login p50 (ms) | login p99 | login max |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (name, o) in self.storms() {
            let f = StormFigures::of(o);
            let h = o.stats.histogram(Metric::Login);
            let q = |x: f64| {
                if h.is_empty() {
                    "-".into()
                } else {
                    ms(h.value_at_quantile(x))
                }
            };
            let _ = writeln!(
                t,
                "| {name} | {} | {} ({}) | {:.2} | {:.0} | {} | {} | {} |",
                f.users,
                f.logged_in,
                pct(f.logged_in, f.users),
                f.secs,
                f.per_sec,
                q(0.5),
                q(0.99),
                if h.is_empty() {
                    "-".into()
                } else {
                    ms(h.max())
                }
            );
        }
        t
    }

    pub fn brief(&self) -> String {
        let mut b = self.storm_table();
        b.push('\n');
        b.push_str(&self.segment_table());
        if let Some(c) = &self.chat {
            let _ = write!(b, "\nchat: {}", c.brief());
        }
        if let Some(a) = &self.aborted {
            let _ = write!(b, "\nABORTED: {a}");
        }
        b
    }

    pub fn summary_markdown(&self) -> String {
        let a = &self.args;
        let mut m = String::new();
        let _ = writeln!(m, "# corechat-bench login-storm\n");
        if let Some(cmd) = &self.command {
            let _ = writeln!(m, "`{cmd}`\n");
        }
        let _ = writeln!(
            m,
            "Started {}; {}. {} pairs chat at {} msg/s in total (open loop, window cap {}); \
             after {} s, {} users log in at once (cold: first login since the server started, \
             argon2id), then after {} s the same users again (warm: credential cache), then \
             {} s more chat.\n",
            self.started,
            self.target,
            a.pairs,
            a.rate,
            a.window,
            a.before,
            2 * a.logins.div_ceil(2),
            a.between,
            a.between
        );
        let _ = writeln!(
            m,
            "{}\n",
            match (&self.aborted, self.clean()) {
                (Some(x), _) => format!("**ABORTED**: {x}"),
                (None, true) =>
                    "**Complete**: every storm login succeeded; the chat lost nothing.".into(),
                (None, false) => "**Complete with problems** (see below).".into(),
            }
        );
        let _ = writeln!(m, "## Storms\n\n{}", self.storm_table());
        let _ = writeln!(
            m,
            "took = from the storm's first connect to its last login reply; logins/s = logged \
             in / that time. The chat segment \"cold storm\" or \"warm storm\" lasts until the \
             storm's last user has also fetched its unread messages.\n"
        );
        for (name, o) in self.storms() {
            let s = &o.stats;
            let _ = writeln!(
                m,
                "### {name}\n\n{}",
                latency_table(&[
                    ("connect", s.histogram(Metric::Connect)),
                    ("login", s.histogram(Metric::Login)),
                    ("get_unread", s.histogram(Metric::Unread)),
                ])
            );
            if !s.failures.is_empty() {
                let _ = writeln!(m, "{}", failures_table(&s.failures));
            }
            for n in &o.notes {
                let _ = writeln!(m, "- {n}");
            }
        }
        let _ = writeln!(
            m,
            "## Chat during the storms\n\nLatencies by when they were measured (open loop: from \
             each message's intended send time).\n\n{}",
            self.segment_table()
        );
        if let (Some(b), Some(c), Some(w)) = (
            self.delivery_p99(0),
            self.delivery_p99(1),
            self.delivery_p99(3),
        ) {
            let _ = writeln!(
                m,
                "Delivery p99 during the cold storm is {:.2}x, during the warm storm {:.2}x the \
                 p99 before the storms.\n",
                c as f64 / b.max(1) as f64,
                w as f64 / b.max(1) as f64
            );
        }
        if let Some(c) = &self.chat {
            let _ = writeln!(m, "Whole chat: {}\n", c.brief());
            let _ = writeln!(m, "The chat's own report is in `chat/`.\n");
        }
        if let Some(reg) = &self.registration {
            let _ = writeln!(
                m,
                "## Setup\n\n{} storm users registered in {:.1} s (not measured).\n",
                reg.stats.counts.registered,
                reg.run_time.as_secs_f64()
            );
        }
        let _ = writeln!(
            m,
            "## Files\n\n`cold-login.hgrm`, `warm-login.hgrm`, `delivery-<segment>.hgrm`: \
             distributions (ms). `latency.svg`: login latencies and delivery by segment. `chat/`: \
             the chat as a throughput report."
        );
        m
    }

    pub fn write(&self, dir: Option<&Path>) -> Result<PathBuf, BenchError> {
        let dir = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| report::default_dir("login-storm"));
        if let Some(c) = &self.chat {
            c.write(Some(&dir.join("chat")))?;
        }
        let mut owned = Vec::new();
        if let Some(c) = &self.chat {
            for (i, name) in SEGMENTS.iter().enumerate() {
                owned.push((
                    format!("delivery-{}", name.replace(' ', "-")),
                    c.outcome.stats.segment(i, Metric::Delivery),
                ));
            }
        }
        let mut hists: Vec<(String, &hdrhistogram::Histogram<u64>)> = self
            .storms()
            .into_iter()
            .map(|(n, o)| (format!("{n}-login"), o.stats.histogram(Metric::Login)))
            .collect();
        hists.extend(owned.iter().map(|(n, h)| (n.clone(), h)));
        let series: Vec<Series> = hists
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(n, h)| Series::from_histogram(n, h))
            .collect();
        report::write_folder(
            &dir,
            &self.summary_markdown(),
            &hists,
            &percentile_plot(
                &format!(
                    "corechat login storm: {} logins during {} msg/s of chat",
                    2 * self.args.logins.div_ceil(2),
                    self.args.rate
                ),
                &series,
            ),
        )?;
        Ok(dir)
    }
}
