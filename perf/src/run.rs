//! The controller: starts the worker threads, moves them through the phases of a run,
//! enforces the run's time bounds, and collects what they measured.
//!
//! Every run is bounded: setup by `setup_timeout`, the measured window by `duration`, the
//! drain by `drain`. Besides, a run is *aborted* (and still reported) when the server stops
//! answering (no frame for `stall` while requests are outstanding), when the server process
//! given by `--server-pid` exits, or on Ctrl-C. Aborting is a result, not an error: the
//! report says why and shows everything measured up to then.
//!
//! CPU time (the generator's and the server's) is sampled at the start and end of the
//! measured window only, so setup work (argon2 password hashing, above all) does not
//! inflate the cost per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};

use crate::cpu;
use crate::driver::{phase, Control, LiveSnapshot, PairSpec, Plan, StartMode, Worker, WAKE};
use crate::error::BenchError;
use crate::progress::Progress;
use crate::stats::Stats;

/// How a run is carried out (the plan says what each client does).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads (each one event loop).
    pub threads: usize,
    /// Longest setup (barrier mode), or longest whole run (when-ready mode).
    pub setup_timeout: Duration,
    /// Barrier mode: length of the measured window.
    pub duration: Duration,
    /// Barrier mode: longest wait for outstanding acks and deliveries after the window.
    pub drain: Duration,
    /// Abort when no frame arrives for this long while requests are outstanding.
    pub stall: Duration,
    pub server_pid: Option<u32>,
    pub progress: bool,
    /// Name shown in the progress line.
    pub label: String,
    /// Set (e.g. by a Ctrl-C handler) to abort the run.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// CPU time over the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub window: Duration,
    pub generator: Option<Duration>,
    pub server: Option<Duration>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub stats: Stats,
    pub setup_time: Duration,
    /// The measured window (barrier mode), or the whole run (when-ready mode).
    pub run_time: Duration,
    pub drain_time: Duration,
    /// Counters when the measured window closed (for rates).
    pub at_run_end: LiveSnapshot,
    pub cpu: Cpu,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
    /// Things a reader of the report should know (timeouts, limits).
    pub notes: Vec<String>,
}

struct Workers {
    ctl: Arc<Control>,
    wakers: Vec<Waker>,
    handles: Vec<JoinHandle<std::io::Result<Stats>>>,
}

impl Workers {
    fn set_phase(&self, ph: u8) {
        self.ctl.phase.store(ph, Ordering::Release);
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    fn stop(self) -> Result<Stats, BenchError> {
        self.set_phase(phase::STOP);
        let mut all = Stats::default();
        let mut first_err = None;
        for h in self.handles {
            match h.join() {
                Ok(Ok(s)) => all.merge(&s),
                Ok(Err(e)) => {
                    first_err.get_or_insert(BenchError::Worker(e));
                }
                Err(_) => {
                    first_err.get_or_insert(BenchError::WorkerPanicked);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(all),
        }
    }
}

fn spawn(
    plan: Plan,
    pairs: Vec<PairSpec>,
    threads: usize,
    ctl: &Arc<Control>,
) -> Result<Workers, BenchError> {
    let plan = Arc::new(plan);
    let threads = threads.clamp(1, pairs.len().max(1));
    let mut chunks: Vec<Vec<PairSpec>> = vec![Vec::new(); threads];
    for (i, p) in pairs.into_iter().enumerate() {
        chunks[i % threads].push(p);
    }
    let mut w = Workers {
        ctl: ctl.clone(),
        wakers: Vec::new(),
        handles: Vec::new(),
    };
    for (i, chunk) in chunks.into_iter().enumerate() {
        let started = (|| {
            let poll = Poll::new().map_err(BenchError::Poll)?;
            let waker = Waker::new(poll.registry(), WAKE).map_err(BenchError::Poll)?;
            let worker = Worker::new(plan.clone(), ctl.clone(), poll, &chunk);
            let h = std::thread::Builder::new()
                .name(format!("bench-{i}"))
                .spawn(move || worker.run())
                .map_err(BenchError::Spawn)?;
            Ok((waker, h))
        })();
        match started {
            Ok((waker, h)) => {
                w.wakers.push(waker);
                w.handles.push(h);
            }
            Err(e) => {
                let _ = w.stop();
                return Err(e);
            }
        }
    }
    Ok(w)
}

/// Watches for the reasons to abort a run.
struct Watch<'a> {
    opts: &'a RunOptions,
    last_frames: u64,
    last_change: Instant,
}

impl Watch<'_> {
    fn check(&mut self, s: &LiveSnapshot) -> Option<String> {
        if self
            .opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            return Some("interrupted".into());
        }
        if let Some(pid) = self.opts.server_pid {
            if !cpu::process_alive(pid) {
                return Some(format!("the server process {pid} exited"));
            }
        }
        if s.frames != self.last_frames {
            self.last_frames = s.frames;
            self.last_change = Instant::now();
        } else if s.outstanding > 0 && self.last_change.elapsed() >= self.opts.stall {
            return Some(format!(
                "the server stopped answering: no reply for {:.1} s with {} requests outstanding",
                self.last_change.elapsed().as_secs_f64(),
                s.outstanding
            ));
        }
        None
    }
}

fn cpu_now(pid: Option<u32>) -> (Option<Duration>, Option<Duration>) {
    (
        cpu::self_cpu().ok(),
        pid.and_then(|p| cpu::process_cpu(p).ok()),
    )
}

fn delta(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(b?.saturating_sub(a?))
}

/// Carries out one run: `plan` for every pair of `pairs`.
pub fn execute(
    plan: Plan,
    pairs: Vec<PairSpec>,
    opts: &RunOptions,
) -> Result<RunOutcome, BenchError> {
    let mut notes = Vec::new();
    let users = pairs.len() as u64 * 2;
    let npairs = pairs.len() as u64;
    let fd_limit = cpu::raise_fd_limit();
    if fd_limit > 0 && fd_limit < users + 64 {
        notes.push(format!(
            "the open-file limit ({fd_limit}) is below the {users} connections wanted; raise it with `ulimit -n`"
        ));
    }
    let mode = plan.start;
    let ctl = Arc::new(Control::new());
    let workers = spawn(plan, pairs, opts.threads, &ctl)?;
    let mut progress = Progress::new(opts.progress, &opts.label);
    let mut watch = Watch {
        opts,
        last_frames: 0,
        last_change: Instant::now(),
    };
    let mut aborted = None;
    let t0 = Instant::now();
    let tick = Duration::from_millis(50);
    let mut out = RunOutcome {
        stats: Stats::default(),
        setup_time: Duration::ZERO,
        run_time: Duration::ZERO,
        drain_time: Duration::ZERO,
        at_run_end: LiveSnapshot::default(),
        cpu: Cpu::default(),
        aborted: None,
        notes: Vec::new(),
    };

    match mode {
        StartMode::WhenReady => {
            let cpu0 = cpu_now(opts.server_pid);
            progress.phase("running", npairs);
            loop {
                std::thread::sleep(tick);
                let s = ctl.live.snapshot();
                progress.update(
                    s.settled_pairs,
                    format!(
                        "logged in {} failed {} | sent {} acked {} delivered {}",
                        s.logged_in, s.failed_users, s.sent, s.acked, s.delivered
                    ),
                );
                if s.settled_pairs >= npairs {
                    break;
                }
                if let Some(r) = watch.check(&s) {
                    aborted = Some(r);
                    break;
                }
                if t0.elapsed() >= opts.setup_timeout {
                    notes.push(format!(
                        "timed out after {:.0} s with {} of {npairs} pairs unfinished",
                        opts.setup_timeout.as_secs_f64(),
                        npairs - s.settled_pairs
                    ));
                    break;
                }
            }
            let cpu1 = cpu_now(opts.server_pid);
            out.run_time = t0.elapsed();
            out.at_run_end = ctl.live.snapshot();
            out.cpu = Cpu {
                window: out.run_time,
                generator: delta(cpu0.0, cpu1.0),
                server: delta(cpu0.1, cpu1.1),
            };
        }
        StartMode::Barrier => {
            progress.phase("setup", users);
            let mut s;
            loop {
                std::thread::sleep(tick);
                s = ctl.live.snapshot();
                progress.update(
                    s.ready + s.failed_users,
                    format!("ready {} failed {}", s.ready, s.failed_users),
                );
                if s.ready + s.failed_users >= users {
                    break;
                }
                if let Some(r) = watch.check(&s) {
                    aborted = Some(r);
                    break;
                }
                if t0.elapsed() >= opts.setup_timeout {
                    notes.push(format!(
                        "setup timed out after {:.0} s: {} of {users} users not ready; the run went on without them",
                        opts.setup_timeout.as_secs_f64(),
                        users - s.ready - s.failed_users
                    ));
                    break;
                }
            }
            out.setup_time = t0.elapsed();
            if aborted.is_none() && s.ready == 0 {
                aborted = Some("no pair finished its setup (see the failures)".into());
            }
            if aborted.is_none() {
                progress.note(&format!(
                    "setup done in {:.1} s: {} users ready, {} failed",
                    out.setup_time.as_secs_f64(),
                    s.ready,
                    s.failed_users
                ));
                let cpu0 = cpu_now(opts.server_pid);
                let start_ns = ctl.now_ns();
                let dur_ns = opts.duration.as_nanos() as u64;
                ctl.run_start_ns.store(start_ns, Ordering::Release);
                ctl.run_end_ns.store(start_ns + dur_ns, Ordering::Release);
                let run_t0 = Instant::now();
                workers.set_phase(phase::RUN);
                progress.phase("run", opts.duration.as_millis() as u64);
                let mut rate_mark = (Instant::now(), 0u64);
                let mut rate = 0.0;
                loop {
                    let left = opts.duration.saturating_sub(run_t0.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                    let s = ctl.live.snapshot();
                    let since = rate_mark.0.elapsed();
                    if since >= Duration::from_secs(1) {
                        rate = (s.delivered - rate_mark.1) as f64 / since.as_secs_f64();
                        rate_mark = (Instant::now(), s.delivered);
                    }
                    progress.update(
                        run_t0.elapsed().as_millis() as u64,
                        format!(
                            "sent {} acked {} delivered {} refused {} | {:.0} msg/s",
                            s.sent, s.acked, s.delivered, s.refused, rate
                        ),
                    );
                    if let Some(r) = watch.check(&s) {
                        aborted = Some(r);
                        break;
                    }
                }
                out.at_run_end = ctl.live.snapshot();
                out.run_time = run_t0.elapsed();
                workers.set_phase(phase::DRAIN);
                let drain_t0 = Instant::now();
                if aborted.is_none() {
                    progress.phase("drain", npairs);
                    loop {
                        std::thread::sleep(tick);
                        let s = ctl.live.snapshot();
                        progress.update(
                            s.settled_pairs,
                            format!(
                                "waiting for {} deliveries",
                                s.sent.saturating_sub(s.delivered + s.refused)
                            ),
                        );
                        if s.settled_pairs >= npairs {
                            break;
                        }
                        if let Some(r) = watch.check(&s) {
                            aborted = Some(r);
                            break;
                        }
                        if drain_t0.elapsed() >= opts.drain {
                            notes.push(format!(
                                "drain timed out after {:.0} s with {} messages undelivered",
                                opts.drain.as_secs_f64(),
                                s.sent.saturating_sub(s.delivered)
                            ));
                            break;
                        }
                    }
                }
                out.drain_time = drain_t0.elapsed();
                let cpu1 = cpu_now(opts.server_pid);
                out.cpu = Cpu {
                    window: run_t0.elapsed(),
                    generator: delta(cpu0.0, cpu1.0),
                    server: delta(cpu0.1, cpu1.1),
                };
            }
        }
    }
    progress.finish();
    if let Some(pid) = opts.server_pid {
        if out.cpu.server.is_none() && aborted.is_none() {
            notes.push(format!("could not read the CPU time of process {pid}"));
        }
    }
    out.stats = workers.stop()?;
    out.aborted = aborted;
    out.notes = notes;
    Ok(out)
}
