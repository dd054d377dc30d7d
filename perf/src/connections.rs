//! The `connections` scenario: as many logged-in idle connections as the machine allows,
//! what one costs the server in memory, and what happens at the ceiling.
//!
//! Every process has an open-file limit (here 20,000), and both ends of a loopback
//! connection hold a descriptor, so the generator cannot hold as many connections as the
//! server in one process and still push it past its ceiling. It therefore fills the server
//! from *helper processes* (`corechat-bench hold`, at most `--per-process` connections
//! each; they register and log their users in, report, and hold the connections idle until
//! told to stop) and keeps only the few connections of the ceiling checks itself.
//!
//! Steps:
//!
//! 1. Create the users of the checks (register only): `--extra` users for beyond the
//!    ceiling and `--recovery` users for after it. Set up a *probe* pair (two blocking
//!    clients, befriended).
//! 2. **Fill**: open `--connections` (default: the server's free descriptors, from
//!    /proc/PID/limits and /proc/PID/fd, less `--margin`), registered and logged in; the
//!    server's VmRSS before and after gives the memory per connection.
//! 3. **Ceiling**: open `--extra` more and wait `--ceiling-wait` s: how many connect, log in,
//!    fail, or wait (a server out of descriptors leaves them in the accept queue).
//! 4. **At the ceiling**: the probe pair exchanges a message (the server must keep serving
//!    what it has), and the server's CPU over `--idle` s of idleness is measured (it must
//!    not spin on a failing accept).
//! 5. **Recovery**: one helper process is stopped (closing its connections); then the waiting
//!    extra connections should be served, `--recovery` fresh logins must all succeed, and
//!    the probe pair must still work.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corechat_engine::client::{reply_status, Client};

use crate::common::{idle_plan, pairs, positive_secs, CommonArgs};
use crate::cpu;
use crate::driver::StartMode;
use crate::error::BenchError;
use crate::procs::{self, Proc, ServerArgs, Target};
use crate::report::{self, failures_table, latency_table, pct};
use crate::run::{execute, RunOutcome, Session};
use crate::stats::{Metric, Stats};
use crate::svg::{percentile_plot, Series};

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    /// Connections to fill the server with [default: its free descriptors less --margin]
    #[arg(long, value_name = "N")]
    pub connections: Option<u64>,

    /// Descriptors left free when filling by default
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub margin: u64,

    /// Connections tried beyond the fill, at the ceiling
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub extra: u64,

    /// Most connections per helper process
    #[arg(long, value_name = "N", default_value_t = 9_000)]
    pub per_process: u64,

    /// Users of one process in setup at once (the server caps connections that have not
    /// logged in per address, --max-anonymous-per-ip)
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connecting: usize,

    /// Seconds to wait for the extra connections, at the ceiling and after recovery
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub ceiling_wait: f64,

    /// Seconds over which the server's CPU is measured while idle at the ceiling
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub idle: f64,

    /// Fresh logins tried after connections are closed
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub recovery: u64,

    /// The corechat-bench binary the helper processes run [default: this executable]
    #[arg(long, value_name = "PATH", hide = true)]
    pub bench_bin: Option<PathBuf>,
}

/// `corechat-bench hold`: a helper process of `connections` (not for direct use).
#[derive(clap::Args, Debug, Clone)]
pub struct HoldArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Users (connections) to hold; ids BASE..BASE+COUNT-1
    #[arg(long, value_name = "N")]
    pub count: u64,

    /// Register the users before logging them in
    #[arg(long)]
    pub register: bool,

    /// Users in setup at once
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connecting: usize,
}

/// Server CPU (in cores) while idle at the ceiling above which it counts as spinning. An idle
/// server with timers and an accept retry every 50 ms uses a small fraction of this; one that
/// spins on a failing accept uses a whole core.
pub const SPINNING: f64 = 0.2;

/// The line a helper prints when its setup is done.
const SETUP_LINE: &str = "SETUP ";
/// The line a helper prints when it stops.
const DONE_LINE: &str = "DONE ";

/// Runs a helper: fills, prints `SETUP {json}`, holds until interrupted (SIGTERM), closes,
/// prints `DONE {json}`.
pub fn hold(args: &HoldArgs, interrupt: Arc<AtomicBool>) -> Result<(), BenchError> {
    let addr = args.common.socket_addr()?;
    let n = args.count.div_ceil(2) as usize;
    let base = args.common.base_for(2 * n as u64)?;
    let mut opts = args.common.run_options(
        "hold",
        Duration::from_secs(1),
        Duration::from_secs(1),
        Some(interrupt),
    )?;
    opts.progress = false;
    let plan = idle_plan(
        addr,
        &args.common.password,
        args.register,
        true,
        StartMode::Barrier,
        Some(args.max_connecting),
    );
    let mut s = Session::start(plan, pairs(base, n), &opts)?;
    s.wait_setup(opts.setup_timeout);
    let snap = s.snapshot();
    println!(
        "{SETUP_LINE}{}",
        serde_json::json!({
            "ready": snap.ready, "failed": snap.failed_users, "connected": snap.connected,
            "secs": s.elapsed().as_secs_f64(), "aborted": s.aborted(),
        })
    );
    if s.aborted().is_none() {
        // Hold (the window never ends by itself) until SIGTERM sets `interrupt`.
        s.window(Duration::from_secs(365 * 86_400), &mut |_| false);
    }
    let out = s.finish()?;
    println!(
        "{DONE_LINE}{}",
        serde_json::json!({"stats": out.stats.to_json(), "notes": out.notes})
    );
    Ok(())
}

/// A helper process and what it reported.
struct Helper {
    proc: Proc,
    count: u64,
    ready: u64,
    failed: u64,
    setup_secs: f64,
}

impl Helper {
    /// Stops it (it closes its connections) and returns what it measured.
    fn stop(mut self) -> Stats {
        self.proc.stop();
        // The output readers may take a moment to see the last line.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let out = self.proc.recent_output();
            if let Some(line) = out.lines().find_map(|l| l.strip_prefix(DONE_LINE)) {
                if let Some(s) = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| Stats::from_json(&v["stats"]).ok())
                {
                    return s;
                }
            }
            if Instant::now() >= deadline {
                let mut s = Stats::default();
                s.fail("a helper process reported nothing when stopped");
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn_helper(
    args: &ConnectionsArgs,
    bin: &Path,
    addr: &str,
    base: u64,
    count: u64,
) -> Result<Helper, BenchError> {
    let mut cmd = Command::new(bin);
    cmd.args(["hold", "--addr", addr])
        .args(["--base", &base.to_string()])
        .args(["--count", &count.to_string()])
        .args(["--password", &args.common.password])
        .args(["--max-connecting", &args.max_connecting.to_string()])
        .args(["--setup-timeout", &args.common.setup_timeout.to_string()])
        .args(["--stall-timeout", &args.common.stall_timeout.to_string()])
        .args(["--register", "--no-progress"]);
    let proc = Proc::spawn(
        "corechat-bench hold",
        cmd,
        |l| l.strip_prefix(SETUP_LINE).map(str::to_string),
        Duration::from_secs_f64(args.common.setup_timeout + 30.0),
        None,
    )?;
    let v: serde_json::Value = serde_json::from_str(proc.addr()).unwrap_or_default();
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok(Helper {
        count,
        ready: n("ready"),
        failed: n("failed"),
        setup_secs: v["secs"].as_f64().unwrap_or(0.0),
        proc,
    })
}

/// Two befriended users on blocking connections, to check the server still serves.
struct Probe {
    a: Client,
    b: Client,
    ida: String,
    idb: String,
    sent: u64,
}

impl Probe {
    fn setup(addr: SocketAddr, ida: &str, idb: &str, pw: &str) -> Result<Probe, String> {
        let step = |what: &str, r: std::io::Result<serde_json::Value>| match r {
            Ok(v) if reply_status(&v) == "success" => Ok(()),
            Ok(v) => Err(format!("probe {what}: {v}")),
            Err(e) => Err(format!("probe {what}: {e}")),
        };
        let mut a = Client::connect(addr).map_err(|e| format!("probe connect: {e}"))?;
        let mut b = Client::connect(addr).map_err(|e| format!("probe connect: {e}"))?;
        step("register", a.register(ida, "probe", pw))?;
        step("register", b.register(idb, "probe", pw))?;
        step("login", a.login(ida, pw))?;
        step("login", b.login(idb, pw))?;
        step("add_friend", a.pair("add_friend", ida, idb))?;
        step("accept_friend", b.pair("accept_friend", idb, ida))?;
        Ok(Probe {
            a,
            b,
            ida: ida.into(),
            idb: idb.into(),
            sent: 0,
        })
    }

    /// A sends B a message: the time until B has it, and whether A's ack came.
    fn message(&mut self) -> Result<(Duration, bool), String> {
        self.sent += 1;
        let body = format!("probe {}", self.sent);
        let t0 = Instant::now();
        self.a
            .send_text(&self.ida, &self.idb, &body)
            .map_err(|e| format!("probe send: {e}"))?;
        loop {
            let v = self
                .b
                .recv_type("receive_message")
                .map_err(|e| format!("probe delivery: {e}"))?;
            if v["message_body"] == body.as_str() {
                break;
            }
        }
        let took = t0.elapsed();
        let acked = self
            .a
            .recv_type("send_message")
            .map(|v| reply_status(&v) == "success")
            .unwrap_or(false);
        Ok((took, acked))
    }
}

/// What the probe pair saw.
#[derive(Debug, Clone)]
pub enum ProbeResult {
    Delivered { latency: Duration, acked: bool },
    Failed(String),
    NotRun,
}

impl ProbeResult {
    fn of(p: Option<&mut Probe>) -> ProbeResult {
        match p {
            None => ProbeResult::NotRun,
            Some(p) => match p.message() {
                Ok((latency, acked)) => ProbeResult::Delivered { latency, acked },
                Err(e) => ProbeResult::Failed(e),
            },
        }
    }

    pub fn ok(&self) -> bool {
        matches!(self, ProbeResult::Delivered { acked: true, .. })
    }

    fn show(&self) -> String {
        match self {
            ProbeResult::Delivered { latency, acked } => format!(
                "delivered in {:.3} ms, {}",
                latency.as_secs_f64() * 1e3,
                if *acked {
                    "acknowledged"
                } else {
                    "NOT acknowledged"
                }
            ),
            ProbeResult::Failed(e) => format!("FAILED: {e}"),
            ProbeResult::NotRun => "not run".into(),
        }
    }
}

/// The extra connections at the ceiling, at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtraState {
    pub tried: u64,
    pub connected: u64,
    pub logged_in: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ConnectionsReport {
    pub args: Option<ConnectionsArgs>,
    pub started: String,
    pub target: String,
    pub command: Option<String>,
    pub aborted: Option<String>,
    /// The server's open descriptors and soft limit before the fill.
    pub fds_before: Option<(u64, u64)>,
    pub fds_filled: Option<(u64, u64)>,
    pub fill_wanted: u64,
    pub processes: usize,
    pub fill_ready: u64,
    pub fill_failed: u64,
    pub fill_secs: f64,
    pub rss_before: Option<u64>,
    pub rss_filled: Option<u64>,
    pub rss_ceiling: Option<u64>,
    pub rss_after_close: Option<u64>,
    pub extra_at_ceiling: ExtraState,
    pub extra_after_close: ExtraState,
    pub probe_ceiling: Option<ProbeResult>,
    pub probe_after: Option<ProbeResult>,
    /// Server CPU while idle at the ceiling: (seconds of CPU, over seconds).
    pub idle_cpu: Option<(f64, f64)>,
    /// The same, filled but below the ceiling (the baseline of an idle server holding these
    /// connections).
    pub idle_cpu_filled: Option<(f64, f64)>,
    /// Helper processes' CPU over the same time.
    pub idle_helpers_cpu: Option<f64>,
    pub closed: u64,
    pub recovery: Option<RunOutcome>,
    pub fill_stats: Stats,
    pub extra_stats: Stats,
    pub notes: Vec<String>,
    /// The last lines the server started here wrote (its warnings).
    pub server_log: String,
}

fn rss(pid: Option<u32>) -> Option<u64> {
    pid.and_then(procs::rss_bytes)
}

/// CPU seconds process `pid` used over `idle` (sleeping meanwhile), and the seconds.
fn idle_cpu(pid: u32, idle: Duration) -> Option<(f64, f64)> {
    let c0 = cpu::process_cpu(pid).ok()?;
    let t0 = Instant::now();
    std::thread::sleep(idle);
    let c1 = cpu::process_cpu(pid).ok()?;
    Some((
        c1.saturating_sub(c0).as_secs_f64(),
        t0.elapsed().as_secs_f64(),
    ))
}

fn extra_state(s: &Session, tried: u64) -> ExtraState {
    let l = s.snapshot();
    ExtraState {
        tried,
        connected: l.connected,
        logged_in: l.logged_in,
        failed: l.failed_users,
    }
}

pub fn run(
    args: &ConnectionsArgs,
    interrupt: Option<Arc<AtomicBool>>,
) -> Result<ConnectionsReport, BenchError> {
    let extra = args.extra.div_ceil(2) * 2;
    let recovery = args.recovery.div_ceil(2) * 2;
    if args.per_process < 2 {
        return Err(BenchError::Invalid(
            "--per-process must be at least 2".into(),
        ));
    }
    let ceiling_wait = positive_secs(args.ceiling_wait, "--ceiling-wait")?;
    let idle = positive_secs(args.idle, "--idle")?;
    // The server: cheap password hashing by default, so that creating ~20,000 users takes
    // seconds (this scenario measures connections, not argon2).
    let target = Target::corechat(
        &args.server,
        &args.common,
        &[("--argon2-memory-kib", "64"), ("--argon2-passes", "1")],
    )?;
    let common = target.common(&args.common);
    let addr = common.socket_addr()?;
    let pid = target.pid;
    let bench_bin = match &args.bench_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| BenchError::Process(format!("cannot find this executable: {e}")))?,
    };
    let mut r = ConnectionsReport {
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
    // Id layout: probe pair, extra users, recovery users, then the fill.
    let base = common.base_for(2 + extra + recovery + 1_000_000)?;
    let extra_base = base + 2;
    let recovery_base = extra_base + extra;
    let fill_base = recovery_base + recovery;

    // 1. Users of the checks, and the probe pair.
    let opts = common.run_options(
        "users",
        Duration::ZERO,
        Duration::from_secs(1),
        interrupt.clone(),
    )?;
    let created = execute(
        idle_plan(
            addr,
            &common.password,
            true,
            false,
            StartMode::WhenReady,
            Some(args.max_connecting),
        ),
        pairs(extra_base, ((extra + recovery) / 2) as usize),
        &opts,
    )?;
    if created.stats.counts.registered < extra + recovery {
        r.aborted = Some(format!(
            "could not create the users of the checks: {} of {} registered ({:?})",
            created.stats.counts.registered,
            extra + recovery,
            created.stats.failures
        ));
        return Ok(r);
    }
    let mut probe = match Probe::setup(
        addr,
        &base.to_string(),
        &(base + 1).to_string(),
        &common.password,
    ) {
        Ok(p) => Some(p),
        Err(e) => {
            r.notes.push(format!("no probe pair: {e}"));
            None
        }
    };

    // 2. Fill.
    r.fds_before = pid.and_then(procs::fd_usage);
    let fill = match (args.connections, r.fds_before) {
        (Some(n), _) => n,
        (None, Some((open, soft))) => soft.saturating_sub(open + args.margin),
        (None, None) => {
            return Err(BenchError::Invalid(
                "cannot read the server's descriptors: pass --connections (or --server-pid)".into(),
            ))
        }
    } / 2
        * 2;
    r.fill_wanted = fill;
    r.rss_before = rss(pid);
    let chunks: Vec<(u64, u64)> = {
        let procs_n = fill.div_ceil(args.per_process).max(1);
        let per = fill.div_ceil(procs_n).div_ceil(2) * 2;
        let mut v = Vec::new();
        let mut at = 0;
        while at < fill {
            let n = per.min(fill - at);
            v.push((fill_base + at, n));
            at += n;
        }
        v
    };
    r.processes = chunks.len();
    let t_fill = Instant::now();
    let spawned: Vec<Result<Helper, BenchError>> = std::thread::scope(|sc| {
        let hs: Vec<_> = chunks
            .iter()
            .map(|&(b, n)| {
                let (bin, addr) = (&bench_bin, &target.addr);
                sc.spawn(move || spawn_helper(args, bin, addr, b, n))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BenchError::Process("a helper thread panicked".into())))
            })
            .collect()
    });
    r.fill_secs = t_fill.elapsed().as_secs_f64();
    let mut helpers = Vec::new();
    let mut first_err = None;
    for h in spawned {
        match h {
            Ok(h) => helpers.push(h),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let stop_all = |helpers: Vec<Helper>, into: &mut Stats| {
        for h in helpers {
            into.merge(&h.stop());
        }
    };
    if let Some(e) = first_err {
        stop_all(helpers, &mut r.fill_stats);
        return Err(e);
    }
    r.fill_ready = helpers.iter().map(|h| h.ready).sum();
    r.fill_failed = helpers.iter().map(|h| h.failed).sum();
    for (i, h) in helpers.iter().enumerate() {
        r.notes.push(format!(
            "helper process {i} (pid {}): {} of {} connections logged in, {} failed, in {:.1} s",
            h.proc.pid(),
            h.ready,
            h.count,
            h.failed,
            h.setup_secs
        ));
    }
    if interrupted() {
        r.aborted = Some("interrupted".into());
        stop_all(helpers, &mut r.fill_stats);
        return Ok(r);
    }
    std::thread::sleep(Duration::from_secs(1));
    r.rss_filled = rss(pid);
    r.fds_filled = pid.and_then(procs::fd_usage);
    if let Some((open, soft)) = r.fds_filled {
        if extra <= soft.saturating_sub(open) {
            r.notes.push(format!(
                "the {extra} extra connections did not reach the ceiling: {} descriptors were \
                 still free (raise --extra or lower --margin)",
                soft.saturating_sub(open)
            ));
        }
    }

    // The baseline: idle, filled, still below the ceiling.
    r.idle_cpu_filled = pid.and_then(|p| idle_cpu(p, idle));

    // 3. Beyond the ceiling.
    let mut xopts = common.run_options(
        "ceiling",
        Duration::ZERO,
        Duration::from_secs(1),
        interrupt.clone(),
    )?;
    xopts.progress = false;
    // Unanswered logins are what is being observed here, not a reason to abort.
    xopts.stall = Duration::from_secs(365 * 86_400);
    let mut xs = Session::start(
        idle_plan(
            addr,
            &common.password,
            false,
            true,
            StartMode::Barrier,
            None,
        ),
        pairs(extra_base, (extra / 2) as usize),
        &xopts,
    )?;
    xs.wait_setup(ceiling_wait);
    r.extra_at_ceiling = extra_state(&xs, extra);

    // 4. At the ceiling: still serving? spinning?
    r.probe_ceiling = Some(ProbeResult::of(probe.as_mut()));
    r.rss_ceiling = rss(pid);
    if let Some(pid) = pid {
        let helpers_cpu = || -> Option<Duration> {
            helpers
                .iter()
                .map(|h| cpu::process_cpu(h.proc.pid()).ok())
                .sum()
        };
        let h0 = helpers_cpu();
        r.idle_cpu = idle_cpu(pid, idle);
        if let (Some(a), Some(b)) = (h0, helpers_cpu()) {
            r.idle_helpers_cpu = Some(b.saturating_sub(a).as_secs_f64());
        }
    }

    // 5. Recovery: close one helper's connections.
    if interrupted() {
        r.aborted = Some("interrupted".into());
    }
    if let Some(h) = helpers.pop() {
        r.closed = h.ready;
        r.fill_stats.merge(&h.stop());
    }
    xs.wait_setup(ceiling_wait);
    r.extra_after_close = extra_state(&xs, extra);
    let mut ropts = common.run_options(
        "recovery",
        Duration::ZERO,
        Duration::from_secs(1),
        interrupt.clone(),
    )?;
    ropts.setup_timeout = Duration::from_secs(60);
    let rec = execute(
        idle_plan(
            addr,
            &common.password,
            false,
            true,
            StartMode::WhenReady,
            None,
        ),
        pairs(recovery_base, (recovery / 2) as usize),
        &ropts,
    )?;
    r.recovery = Some(rec);
    r.probe_after = Some(ProbeResult::of(probe.as_mut()));
    drop(probe);
    let xout = xs.finish()?;
    r.extra_stats = xout.stats;
    stop_all(helpers, &mut r.fill_stats);
    std::thread::sleep(Duration::from_millis(500));
    r.rss_after_close = rss(pid);
    if r.aborted.is_none() && interrupted() {
        r.aborted = Some("interrupted".into());
    }
    if let Some(p) = &target.proc {
        r.server_log = p.recent_output();
    }
    drop(target);
    Ok(r)
}

fn mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "-".into(),
        |b| format!("{:.1}", b as f64 / (1 << 20) as f64),
    )
}

impl ConnectionsReport {
    /// Bytes of server memory per filled connection.
    pub fn rss_per_connection(&self) -> Option<f64> {
        let (a, b) = (self.rss_before?, self.rss_filled?);
        (self.fill_ready > 0).then(|| (b as f64 - a as f64) / self.fill_ready as f64)
    }

    /// Server CPU while idle at the ceiling, in cores.
    pub fn idle_cores(&self) -> Option<f64> {
        self.idle_cpu.map(|(c, s)| c / s.max(1e-9))
    }

    pub fn recovery_logins(&self) -> (u64, u64) {
        match &self.recovery {
            Some(o) => (o.stats.counts.logged_in, o.stats.counts.users),
            None => (0, 0),
        }
    }

    /// Extra connections still unanswered after connections were closed and the wait.
    pub fn stuck_extras(&self) -> u64 {
        let y = &self.extra_after_close;
        y.tried.saturating_sub(y.logged_in + y.failed)
    }

    /// Everything that must hold did: full fill, probes delivered, no spinning, fresh logins
    /// after connections closed. (Extra connections left unanswered are reported apart, see
    /// [`ConnectionsReport::stuck_extras`].)
    pub fn clean(&self) -> bool {
        let (ok, of) = self.recovery_logins();
        self.aborted.is_none()
            && self.fill_ready == self.fill_wanted
            && self.fill_failed == 0
            && self.probe_ceiling.as_ref().is_some_and(ProbeResult::ok)
            && self.probe_after.as_ref().is_some_and(ProbeResult::ok)
            && self.idle_cores().is_none_or(|c| c < SPINNING)
            && of > 0
            && ok == of
    }

    pub fn brief(&self) -> String {
        let (ok, of) = self.recovery_logins();
        let mut b = format!(
            "{} of {} connections held ({} processes) | server RSS {} -> {} MiB, {} bytes/connection",
            self.fill_ready,
            self.fill_wanted,
            self.processes,
            mib(self.rss_before),
            mib(self.rss_filled),
            self.rss_per_connection()
                .map_or_else(|| "-".into(), |v| format!("{v:.0}"))
        );
        let x = &self.extra_at_ceiling;
        let y = &self.extra_after_close;
        let _ = write!(
            b,
            "\nceiling: {} extra tried, {} connected, {} logged in within the wait, {} failed; \
             after closing {}: {} logged in",
            x.tried, x.connected, x.logged_in, x.failed, self.closed, y.logged_in
        );
        let _ = write!(
            b,
            "\nprobe at the ceiling: {} | idle server CPU at the ceiling: {} (filled, below it: {}) | recovery logins {ok}/{of} | probe after: {}",
            self.probe_ceiling.as_ref().map_or_else(|| "-".into(), ProbeResult::show),
            self.idle_cores()
                .map_or_else(|| "-".into(), |c| format!("{:.2}% of a core", c * 100.0)),
            self.idle_cpu_filled.map_or_else(
                || "-".into(),
                |(c, s)| format!("{:.2}%", 100.0 * c / s.max(1e-9))
            ),
            self.probe_after.as_ref().map_or_else(|| "-".into(), ProbeResult::show),
        );
        if self.stuck_extras() > 0 {
            let _ = write!(
                b,
                "\nWARNING: {} connections opened at the ceiling were still not answered after {} \
                 connections closed",
                self.stuck_extras(),
                self.closed
            );
        }
        if let Some(a) = &self.aborted {
            let _ = write!(b, "\nABORTED: {a}");
        }
        b
    }

    pub fn summary_markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# corechat-bench connections\n");
        if let Some(cmd) = &self.command {
            let _ = writeln!(m, "`{cmd}`\n");
        }
        let _ = writeln!(m, "Started {}; {}.\n", self.started, self.target);
        let _ = writeln!(
            m,
            "{}\n",
            match (&self.aborted, self.clean()) {
                (Some(a), _) => format!("**ABORTED**: {a}"),
                (None, true) =>
                    "**Complete**: every connection held, the server kept serving at its ceiling \
                     without spinning, and recovered."
                        .into(),
                (None, false) => "**Complete with problems** (see below).".into(),
            }
        );
        let fds =
            |f: Option<(u64, u64)>| f.map_or_else(|| "-".into(), |(o, s)| format!("{o} of {s}"));
        let _ = writeln!(
            m,
            "## Fill\n\n\
             | connections wanted | held | failed | helper processes | took (s) | server fds before | server fds filled |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {} | {:.1} | {} | {} |\n",
            self.fill_wanted,
            self.fill_ready,
            self.fill_failed,
            self.processes,
            self.fill_secs,
            fds(self.fds_before),
            fds(self.fds_filled)
        );
        let _ = writeln!(
            m,
            "## Server memory (VmRSS)\n\n\
             | before the fill (MiB) | filled | at the ceiling | after closing all | per held connection (bytes) |\n\
             |---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} |\n",
            mib(self.rss_before),
            mib(self.rss_filled),
            mib(self.rss_ceiling),
            mib(self.rss_after_close),
            self.rss_per_connection()
                .map_or_else(|| "-".into(), |v| format!("{v:.0}"))
        );
        let x = &self.extra_at_ceiling;
        let y = &self.extra_after_close;
        let _ = writeln!(
            m,
            "## At the ceiling\n\n\
             {} more connections were opened once the server was full.\n\n\
             | when | tried | TCP connected | logged in | failed | still waiting |\n|---|---:|---:|---:|---:|---:|\n\
             | after {:.1} s at the ceiling | {} | {} | {} | {} | {} |\n\
             | after closing {} connections | {} | {} | {} | {} | {} |\n\n\
             A connection the server cannot accept (no descriptor left) stays in the kernel's \
             accept queue: the client sees it connected, and its login should be answered once \
             a descriptor is free.\n",
            x.tried,
            self.args.as_ref().map_or(0.0, |a| a.ceiling_wait),
            x.tried,
            x.connected,
            x.logged_in,
            x.failed,
            x.tried.saturating_sub(x.logged_in + x.failed),
            self.closed,
            y.tried,
            y.connected,
            y.logged_in,
            y.failed,
            y.tried.saturating_sub(y.logged_in + y.failed),
        );
        let idle_show = |v: Option<(f64, f64)>| match v {
            Some((c, s)) => format!(
                "{c:.3} s over {s:.1} s = {:.2}% of a core",
                100.0 * c / s.max(1e-9)
            ),
            None => "- (no server pid)".into(),
        };
        let _ = writeln!(
            m,
            "- Probe message between two held connections at the ceiling: {}\n\
             - Server CPU while idle, filled but below the ceiling: {}\n\
             - Server CPU while idle at the ceiling (accept failing): {}{}\n",
            self.probe_ceiling
                .as_ref()
                .map_or_else(|| "-".into(), ProbeResult::show),
            idle_show(self.idle_cpu_filled),
            idle_show(self.idle_cpu),
            self.idle_helpers_cpu
                .map_or_else(String::new, |c| format!(" (helper processes: {c:.3} s)"))
        );
        if self.stuck_extras() > 0 {
            let _ = writeln!(
                m,
                "**{} of the extra connections were never answered**, although {} connections \
                 had been closed and descriptors were free again. These are connections the \
                 server accepted with its last descriptors: a login there needs one more (the \
                 handoff to the user's shard `dup`s the socket), and a handoff that fails is \
                 neither answered nor retried (corechat logs `handoff of ... failed: Too many \
                 open files` at debug level only).\n",
                self.stuck_extras(),
                self.closed
            );
        }
        let (ok, of) = self.recovery_logins();
        let _ = writeln!(
            m,
            "## Recovery\n\nAfter {} connections were closed: fresh logins {ok} of {of} ({}); \
             probe message: {}.\n",
            self.closed,
            pct(ok, of),
            self.probe_after
                .as_ref()
                .map_or_else(|| "-".into(), ProbeResult::show)
        );
        let rec = self.recovery.as_ref().map(|o| &o.stats);
        let empty = crate::stats::new_histogram();
        let _ = writeln!(
            m,
            "## Latency\n\n{}",
            latency_table(&[
                ("fill: connect", self.fill_stats.histogram(Metric::Connect)),
                (
                    "fill: register",
                    self.fill_stats.histogram(Metric::Register)
                ),
                ("fill: login", self.fill_stats.histogram(Metric::Login)),
                ("ceiling: login", self.extra_stats.histogram(Metric::Login)),
                (
                    "recovery: login",
                    rec.map_or(&empty, |s| s.histogram(Metric::Login))
                ),
            ])
        );
        let mut failures = std::collections::BTreeMap::new();
        for (what, s) in [
            ("fill", Some(&self.fill_stats)),
            ("ceiling", Some(&self.extra_stats)),
            ("recovery", rec),
        ] {
            for (k, v) in s.map(|s| s.failures.iter()).into_iter().flatten() {
                *failures.entry(format!("{what}: {k}")).or_insert(0) += v;
            }
        }
        if !failures.is_empty() {
            let _ = writeln!(m, "## Failures\n\n{}", failures_table(&failures));
        }
        if !self.notes.is_empty() {
            let _ = writeln!(m, "## Notes\n");
            for n in &self.notes {
                let _ = writeln!(m, "- {n}");
            }
            m.push('\n');
        }
        if !self.server_log.trim().is_empty() {
            let _ = writeln!(
                m,
                "## Server log\n\nIts last lines (the server was started with `--log-level warn` \
                 unless --server-arg says otherwise):\n\n```text\n{}\n```\n",
                self.server_log.trim_end()
            );
        }
        let _ = writeln!(
            m,
            "## Files\n\n`fill-login.hgrm`, `ceiling-login.hgrm`, `recovery-login.hgrm`: login \
             latency distributions (ms). `latency.svg`: their plot."
        );
        m
    }

    pub fn write(&self, dir: Option<&Path>) -> Result<PathBuf, BenchError> {
        let dir = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| report::default_dir("connections"));
        let empty = crate::stats::new_histogram();
        let rec = self
            .recovery
            .as_ref()
            .map_or(&empty, |o| o.stats.histogram(Metric::Login));
        let hists = vec![
            (
                "fill-login".to_string(),
                self.fill_stats.histogram(Metric::Login),
            ),
            (
                "ceiling-login".to_string(),
                self.extra_stats.histogram(Metric::Login),
            ),
            ("recovery-login".to_string(), rec),
        ];
        let series: Vec<Series> = hists
            .iter()
            .map(|(n, h)| Series::from_histogram(n, h))
            .collect();
        report::write_folder(
            &dir,
            &self.summary_markdown(),
            &hists,
            &percentile_plot(
                &format!(
                    "corechat connections: login latency ({} held)",
                    self.fill_ready
                ),
                &series,
            ),
        )?;
        Ok(dir)
    }
}
