//! The `seed-table` scenario: the old server's headline table, reproduced.
//!
//! The old C++ server was judged by one experiment: N clients connect at once, log in and
//! send one message to an online friend; it reported login success rates (97.2% at 2000
//! clients, 70.3% at 5000) and latencies. This scenario runs the same experiment against
//! corechat, for one or more values of N, and prints the same kind of table.
//!
//! Clients are paired (0 with 1, 2 with 3, ...). Without `--register`, a setup phase first
//! registers every user and makes each pair friends, and the measured phase is: connect ->
//! login -> get_unread_messages -> send one message to the partner (once the partner is
//! online too) -> wait for the partner's message. With `--register`, the measured phase
//! starts with registration and befriends the pair after login (there is nobody to
//! befriend before). Note that the setup phase's logins warm the server's credential
//! cache; start the server with `--credential-cache-ttl 0` to measure cold logins.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{pairs, positive_secs, CommonArgs};
use crate::driver::{Plan, StartMode};
use crate::error::BenchError;
use crate::report::{self, failures_table, latency_table, ms, pct};
use crate::run::{execute, RunOutcome};
use crate::stats::Metric;
use crate::svg::{percentile_plot, Series};

#[derive(clap::Args, Debug, Clone)]
pub struct SeedArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Clients that connect at once (an even number); several, comma-separated, run one
    /// round each: --clients 1000,2000,5000
    #[arg(long, value_name = "N", value_delimiter = ',', required = true)]
    pub clients: Vec<usize>,

    /// Register in the measured phase (instead of in a setup phase before it)
    #[arg(long)]
    pub register: bool,

    /// Seconds to pause between rounds
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub pause: f64,
}

/// One value of N.
#[derive(Debug, Clone)]
pub struct SeedRound {
    pub clients: usize,
    pub base: u64,
    /// The setup phase (absent with `--register`).
    pub setup: Option<RunOutcome>,
    pub measured: RunOutcome,
}

impl SeedRound {
    fn counts(&self) -> &crate::stats::Counts {
        &self.measured.stats.counts
    }

    /// Clients whose login succeeded, in percent.
    pub fn login_success(&self) -> f64 {
        100.0 * self.counts().logged_in as f64 / self.clients.max(1) as f64
    }

    /// Clients whose message reached their partner, in percent.
    pub fn message_success(&self) -> f64 {
        100.0 * self.counts().delivered as f64 / self.clients.max(1) as f64
    }
}

#[derive(Debug, Clone)]
pub struct SeedReport {
    pub args: SeedArgs,
    pub started: String,
    pub rounds: Vec<SeedRound>,
    /// Why the rounds stopped early, if they did.
    pub aborted: Option<String>,
    /// The command line, when run from `corechat-bench` (shown in the summary).
    pub command: Option<String>,
}

pub fn run(args: &SeedArgs, interrupt: Option<Arc<AtomicBool>>) -> Result<SeedReport, BenchError> {
    if args.clients.is_empty() || args.clients.iter().any(|n| *n < 2 || n % 2 == 1) {
        return Err(BenchError::Invalid(
            "--clients must be even numbers of at least 2".into(),
        ));
    }
    let addr = args.common.socket_addr()?;
    let total: u64 = args.clients.iter().map(|n| *n as u64).sum();
    let mut base = args.common.base_for(total)?;
    let pause = Duration::from_secs_f64(args.pause.max(0.0));
    let drain = positive_secs(1.0, "drain")?;
    let started = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let mut rounds = Vec::new();
    let mut aborted = None;
    for (i, &n) in args.clients.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        if interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            aborted = Some("interrupted".into());
            break;
        }
        let plan = |register, befriend, limit| Plan {
            addr,
            protocol: Default::default(),
            password: args.common.password.clone(),
            register,
            login: true,
            max_connecting: None,
            unread: limit > 0,
            befriend,
            both_ways: true,
            limit: Some(limit),
            window: 1,
            interval_ns: None,
            start: StartMode::WhenReady,
            payload: 0,
            total_pairs: n as u64 / 2,
        };
        let setup = if args.register {
            None
        } else {
            let opts = args.common.run_options(
                &format!("seed {n} setup"),
                Duration::ZERO,
                drain,
                interrupt.clone(),
            )?;
            let out = execute(plan(true, true, 0), pairs(base, n / 2), &opts)?;
            if let Some(r) = &out.aborted {
                aborted = Some(format!("setup of {n} clients: {r}"));
            }
            Some(out)
        };
        if aborted.is_some() {
            break;
        }
        let opts = args.common.run_options(
            &format!("seed {n}"),
            Duration::ZERO,
            drain,
            interrupt.clone(),
        )?;
        let measured = execute(
            plan(args.register, args.register, 1),
            pairs(base, n / 2),
            &opts,
        )?;
        if let Some(r) = &measured.aborted {
            aborted = Some(format!("{n} clients: {r}"));
        }
        rounds.push(SeedRound {
            clients: n,
            base,
            setup,
            measured,
        });
        base += n as u64;
        if aborted.is_some() {
            break;
        }
    }
    Ok(SeedReport {
        args: args.clone(),
        started,
        rounds,
        aborted,
        command: None,
    })
}

impl SeedReport {
    /// Every client of every round logged in and got its partner's message.
    pub fn clean(&self) -> bool {
        self.aborted.is_none()
            && self.rounds.len() == self.args.clients.len()
            && self.rounds.iter().all(|r| {
                let c = r.counts();
                c.logged_in == r.clients as u64
                    && c.delivered == r.clients as u64
                    && c.acked == r.clients as u64
            })
    }

    /// The headline table, as the old server's.
    pub fn table(&self) -> String {
        let mut t = String::from(
            "| clients | login success | login mean (ms) | login p50 | login p99 | message success | message mean (ms) | message p50 | message p99 |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rounds {
            let c = r.counts();
            let s = &r.measured.stats;
            let (l, d) = (s.histogram(Metric::Login), s.histogram(Metric::Delivery));
            let q = |h: &hdrhistogram::Histogram<u64>, x: f64| {
                if h.is_empty() {
                    "-".into()
                } else {
                    ms(h.value_at_quantile(x))
                }
            };
            let mean = |h: &hdrhistogram::Histogram<u64>| {
                if h.is_empty() {
                    "-".into()
                } else {
                    format!("{:.3}", h.mean() / 1e6)
                }
            };
            let n = r.clients as u64;
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.clients,
                pct(c.logged_in, n),
                mean(l),
                q(l, 0.5),
                q(l, 0.99),
                pct(c.delivered, n),
                mean(d),
                q(d, 0.5),
                q(d, 0.99)
            );
        }
        t
    }

    pub fn summary_markdown(&self) -> String {
        let a = &self.args;
        let mut m = String::new();
        let _ = writeln!(m, "# corechat-bench seed-table\n");
        if let Some(cmd) = &self.command {
            let _ = writeln!(m, "`{cmd}`\n");
        }
        let _ = writeln!(
            m,
            "Started {}; server {}; clients {:?}; {}; {} generator thread(s). Each client \
             connects, {}logs in, fetches its unread messages and sends one message to its \
             partner; \"message\" latency is send -> the partner's `receive_message`.\n",
            self.started,
            a.common.addr,
            a.clients,
            if a.register {
                "registration in the measured phase"
            } else {
                "users registered and befriended in a setup phase"
            },
            a.common.threads,
            if a.register {
                "registers, befriends its partner, "
            } else {
                ""
            }
        );
        let verdict = match (&self.aborted, self.clean()) {
            (Some(r), _) => format!("**ABORTED**: {r}"),
            (None, true) => "**Complete**: every client logged in and got its message.".into(),
            (None, false) => "**Complete with failures** (see below).".into(),
        };
        let _ = writeln!(m, "{verdict}\n\n{}", self.table());
        for r in &self.rounds {
            let c = r.counts();
            let s = &r.measured.stats;
            let n = r.clients as u64;
            let _ = writeln!(m, "## {} clients\n", r.clients);
            if let Some(su) = &r.setup {
                let sc = &su.stats.counts;
                let _ = writeln!(
                    m,
                    "Setup: {} users registered and {} ready in {:.2} s ({} failed).\n",
                    sc.registered,
                    sc.ready,
                    su.run_time.as_secs_f64(),
                    sc.failed_users
                );
            }
            let _ = writeln!(
                m,
                "Measured phase: {:.2} s, ids {}..{}.\n\n\
                 | connected | registered | logged in | acked | delivered | failed clients |\n\
                 |---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} |\n",
                r.measured.run_time.as_secs_f64(),
                r.base,
                r.base + n - 1,
                pct(c.connected, n),
                if a.register {
                    pct(c.registered, n)
                } else {
                    "(setup)".into()
                },
                pct(c.logged_in, n),
                pct(c.acked, n),
                pct(c.delivered, n),
                c.failed_users
            );
            let mut rows = vec![("connect", s.histogram(Metric::Connect))];
            if a.register {
                rows.push(("register", s.histogram(Metric::Register)));
            }
            rows.push(("login", s.histogram(Metric::Login)));
            rows.push(("get_unread", s.histogram(Metric::Unread)));
            if a.register {
                rows.push(("add_friend", s.histogram(Metric::AddFriend)));
                rows.push(("accept_friend", s.histogram(Metric::AcceptFriend)));
            }
            rows.push(("message ack", s.histogram(Metric::Ack)));
            rows.push(("message delivery", s.histogram(Metric::Delivery)));
            let _ = writeln!(m, "{}", latency_table(&rows));
            let cpu = &r.measured.cpu;
            if let Some(d) = cpu.server {
                let _ = writeln!(
                    m,
                    "Server CPU over the measured phase: {:.3} s ({:.2} cores).\n",
                    d.as_secs_f64(),
                    d.as_secs_f64() / cpu.window.as_secs_f64().max(1e-9)
                );
            }
            let mut failures = s.failures.clone();
            if let Some(su) = &r.setup {
                for (k, v) in &su.stats.failures {
                    *failures.entry(format!("setup: {k}")).or_insert(0) += v;
                }
            }
            if !failures.is_empty() {
                let _ = writeln!(m, "Failures:\n\n{}", failures_table(&failures));
            }
            let notes: Vec<&String> = r
                .setup
                .iter()
                .flat_map(|s| s.notes.iter())
                .chain(r.measured.notes.iter())
                .collect();
            for n in notes {
                let _ = writeln!(m, "- {n}");
            }
        }
        let _ = writeln!(
            m,
            "\n## Files\n\n`seed-<N>-<latency>.hgrm`: HdrHistogram percentile distributions \
             (milliseconds). `latency.svg`: login and message latency per round."
        );
        m
    }

    pub fn write(&self, dir: Option<&Path>) -> Result<PathBuf, BenchError> {
        let dir = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| report::default_dir("seed-table"));
        let mut hists = Vec::new();
        let mut series = Vec::new();
        for r in &self.rounds {
            let s = &r.measured.stats;
            let mut ks = vec![
                Metric::Connect,
                Metric::Login,
                Metric::Ack,
                Metric::Delivery,
            ];
            if self.args.register {
                ks.insert(1, Metric::Register);
            }
            for k in ks {
                hists.push((format!("seed-{}-{}", r.clients, k.name()), s.histogram(k)));
            }
            series.push(Series::from_histogram(
                &format!("login, {} clients", r.clients),
                s.histogram(Metric::Login),
            ));
            series.push(Series::from_histogram(
                &format!("message, {} clients", r.clients),
                s.histogram(Metric::Delivery),
            ));
        }
        report::write_folder(
            &dir,
            &self.summary_markdown(),
            &hists,
            &percentile_plot("corechat seed table: login and message latency", &series),
        )?;
        Ok(dir)
    }
}
