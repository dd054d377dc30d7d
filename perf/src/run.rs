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
//!
//! [`execute`] runs a whole plan. Scenarios that interleave runs (a login storm during a
//! chat, connections held while others are opened) drive a [`Session`] step by step:
//! `start`, `setup` (or `wait_setup`, repeatedly), `window`, `drain`, `finish`.

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
struct Watch {
    interrupt: Option<Arc<AtomicBool>>,
    server_pid: Option<u32>,
    stall: Duration,
    last_frames: u64,
    last_change: Instant,
}

impl Watch {
    fn check(&mut self, s: &LiveSnapshot) -> Option<String> {
        if self
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            return Some("interrupted".into());
        }
        if let Some(pid) = self.server_pid {
            if !cpu::process_alive(pid) {
                return Some(format!("the server process {pid} exited"));
            }
        }
        if s.frames != self.last_frames {
            self.last_frames = s.frames;
            self.last_change = Instant::now();
        } else if s.outstanding > 0 && self.last_change.elapsed() >= self.stall {
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

const TICK: Duration = Duration::from_millis(50);

/// How a wait for setup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupWait {
    /// Every user is ready or failed.
    Done,
    TimedOut,
    Aborted,
}

/// One run in progress: worker threads driving `plan` for every pair.
pub struct Session {
    opts: RunOptions,
    mode: StartMode,
    ctl: Arc<Control>,
    workers: Option<Workers>,
    progress: Progress,
    watch: Watch,
    t0: Instant,
    users: u64,
    npairs: u64,
    out: RunOutcome,
    aborted: Option<String>,
    notes: Vec<String>,
    cpu0: Option<(Option<Duration>, Option<Duration>)>,
    run_t0: Option<Instant>,
}

impl Session {
    /// Starts the workers; they connect at once (within `plan.max_connecting`).
    pub fn start(
        plan: Plan,
        pairs: Vec<PairSpec>,
        opts: &RunOptions,
    ) -> Result<Session, BenchError> {
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
        Ok(Session {
            opts: opts.clone(),
            mode,
            ctl,
            workers: Some(workers),
            progress: Progress::new(opts.progress, &opts.label),
            watch: Watch {
                interrupt: opts.interrupt.clone(),
                server_pid: opts.server_pid,
                stall: opts.stall,
                last_frames: 0,
                last_change: Instant::now(),
            },
            t0: Instant::now(),
            users,
            npairs,
            out: RunOutcome {
                stats: Stats::default(),
                setup_time: Duration::ZERO,
                run_time: Duration::ZERO,
                drain_time: Duration::ZERO,
                at_run_end: LiveSnapshot::default(),
                cpu: Cpu::default(),
                aborted: None,
                notes: Vec::new(),
            },
            aborted: None,
            notes,
            cpu0: None,
            run_t0: None,
        })
    }

    /// The workers' shared state (e.g. to set the latency segment while the run goes on).
    pub fn control(&self) -> Arc<Control> {
        self.ctl.clone()
    }

    pub fn snapshot(&self) -> LiveSnapshot {
        self.ctl.live.snapshot()
    }

    /// Why the run was aborted, if it was.
    pub fn aborted(&self) -> Option<&str> {
        self.aborted.as_deref()
    }

    /// No more progress output (e.g. while other runs show theirs).
    pub fn quiet(&mut self) {
        self.progress.finish();
        self.progress = Progress::new(false, &self.opts.label);
    }

    /// Adds a note to the outcome.
    pub fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    /// Since the session started.
    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Waits until every user is ready or failed, for at most `timeout` (may be called again
    /// to wait longer). Records the setup time when done.
    pub fn wait_setup(&mut self, timeout: Duration) -> SetupWait {
        if self.aborted.is_some() {
            return SetupWait::Aborted;
        }
        let users = self.users;
        self.progress.phase("setup", users);
        let t = Instant::now();
        loop {
            std::thread::sleep(TICK);
            let s = self.ctl.live.snapshot();
            self.progress.update(
                s.ready + s.failed_users,
                format!("ready {} failed {}", s.ready, s.failed_users),
            );
            if s.ready + s.failed_users >= users {
                self.out.setup_time = self.t0.elapsed();
                return SetupWait::Done;
            }
            if let Some(r) = self.watch.check(&s) {
                self.aborted = Some(r);
                self.out.setup_time = self.t0.elapsed();
                return SetupWait::Aborted;
            }
            if t.elapsed() >= timeout {
                self.out.setup_time = self.t0.elapsed();
                return SetupWait::TimedOut;
            }
        }
    }

    /// Barrier mode: waits for the setup within `--setup-timeout`; true if the run can go on
    /// (not aborted, at least one user ready).
    pub fn setup(&mut self) -> bool {
        let timeout = self.opts.setup_timeout;
        let w = self.wait_setup(timeout);
        let s = self.ctl.live.snapshot();
        if w == SetupWait::TimedOut {
            self.notes.push(format!(
                "setup timed out after {:.0} s: {} of {} users not ready; the run went on without them",
                timeout.as_secs_f64(),
                self.users - s.ready - s.failed_users,
                self.users
            ));
        }
        if self.aborted.is_none() && s.ready == 0 {
            self.aborted = Some("no pair finished its setup (see the failures)".into());
        }
        if self.aborted.is_some() {
            return false;
        }
        self.progress.note(&format!(
            "setup done in {:.1} s: {} users ready, {} failed",
            self.out.setup_time.as_secs_f64(),
            s.ready,
            s.failed_users
        ));
        true
    }

    /// Barrier mode: the measured window. It lasts `duration`, or less if `stop` (asked
    /// every 100 ms) says so; then the senders stop where they are.
    pub fn window(&mut self, duration: Duration, stop: &mut dyn FnMut(&LiveSnapshot) -> bool) {
        let Some(workers) = &self.workers else {
            return;
        };
        self.cpu0 = Some(cpu_now(self.opts.server_pid));
        let start_ns = self.ctl.now_ns();
        let dur_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX / 2);
        self.ctl.run_start_ns.store(start_ns, Ordering::Release);
        self.ctl
            .run_end_ns
            .store(start_ns.saturating_add(dur_ns), Ordering::Release);
        let run_t0 = Instant::now();
        self.run_t0 = Some(run_t0);
        workers.set_phase(phase::RUN);
        self.progress
            .phase("run", duration.as_millis().min(u128::from(u64::MAX)) as u64);
        let mut rate_mark = (Instant::now(), 0u64);
        let mut rate = 0.0;
        loop {
            let left = duration.saturating_sub(run_t0.elapsed());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
            let s = self.ctl.live.snapshot();
            let since = rate_mark.0.elapsed();
            if since >= Duration::from_secs(1) {
                rate = (s.delivered - rate_mark.1) as f64 / since.as_secs_f64();
                rate_mark = (Instant::now(), s.delivered);
            }
            self.progress.update(
                run_t0.elapsed().as_millis() as u64,
                format!(
                    "sent {} acked {} delivered {} refused {} | {:.0} msg/s",
                    s.sent, s.acked, s.delivered, s.refused, rate
                ),
            );
            if let Some(r) = self.watch.check(&s) {
                self.aborted = Some(r);
                break;
            }
            if stop(&s) {
                // Senders scheduled beyond now must not go on in the drain.
                let now = self.ctl.now_ns();
                if now < start_ns.saturating_add(dur_ns) {
                    self.ctl.run_end_ns.store(now, Ordering::Release);
                }
                break;
            }
        }
        self.out.at_run_end = self.ctl.live.snapshot();
        self.out.run_time = run_t0.elapsed();
    }

    /// After the window: senders stop; waits (within `--drain`) until every message sent is
    /// acknowledged and delivered.
    pub fn drain(&mut self) {
        let Some(workers) = &self.workers else {
            return;
        };
        workers.set_phase(phase::DRAIN);
        let drain_t0 = Instant::now();
        if self.aborted.is_none() {
            self.progress.phase("drain", self.npairs);
            loop {
                std::thread::sleep(TICK);
                let s = self.ctl.live.snapshot();
                self.progress.update(
                    s.settled_pairs,
                    format!(
                        "waiting for {} deliveries",
                        s.sent.saturating_sub(s.delivered + s.refused)
                    ),
                );
                if s.settled_pairs >= self.npairs {
                    break;
                }
                if let Some(r) = self.watch.check(&s) {
                    self.aborted = Some(r);
                    break;
                }
                if drain_t0.elapsed() >= self.opts.drain {
                    self.notes.push(format!(
                        "drain timed out after {:.0} s with {} messages undelivered",
                        self.opts.drain.as_secs_f64(),
                        s.sent.saturating_sub(s.delivered)
                    ));
                    break;
                }
            }
        }
        self.out.drain_time = drain_t0.elapsed();
        self.close_cpu();
    }

    fn close_cpu(&mut self) {
        if let (Some(cpu0), Some(run_t0)) = (self.cpu0.take(), self.run_t0) {
            let cpu1 = cpu_now(self.opts.server_pid);
            self.out.cpu = Cpu {
                window: run_t0.elapsed(),
                generator: delta(cpu0.0, cpu1.0),
                server: delta(cpu0.1, cpu1.1),
            };
        }
    }

    /// When-ready mode: waits until every pair has finished (within `--setup-timeout`).
    pub fn until_settled(&mut self) {
        let npairs = self.npairs;
        self.cpu0 = Some(cpu_now(self.opts.server_pid));
        self.run_t0 = Some(self.t0);
        self.progress.phase("running", npairs);
        loop {
            std::thread::sleep(TICK);
            let s = self.ctl.live.snapshot();
            self.progress.update(
                s.settled_pairs,
                format!(
                    "logged in {} failed {} | sent {} acked {} delivered {}",
                    s.logged_in, s.failed_users, s.sent, s.acked, s.delivered
                ),
            );
            if s.settled_pairs >= npairs {
                break;
            }
            if let Some(r) = self.watch.check(&s) {
                self.aborted = Some(r);
                break;
            }
            if self.t0.elapsed() >= self.opts.setup_timeout {
                self.notes.push(format!(
                    "timed out after {:.0} s with {} of {npairs} pairs unfinished",
                    self.opts.setup_timeout.as_secs_f64(),
                    npairs - s.settled_pairs
                ));
                break;
            }
        }
        self.out.run_time = self.t0.elapsed();
        self.out.at_run_end = self.ctl.live.snapshot();
        self.close_cpu();
    }

    /// Stops the workers (closing every connection) and returns what was measured.
    pub fn finish(mut self) -> Result<RunOutcome, BenchError> {
        self.close_cpu();
        self.progress.finish();
        if let Some(pid) = self.opts.server_pid {
            if self.out.cpu.server.is_none() && self.aborted.is_none() && self.run_t0.is_some() {
                self.notes
                    .push(format!("could not read the CPU time of process {pid}"));
            }
        }
        if let Some(w) = self.workers.take() {
            self.out.stats = w.stop()?;
        }
        self.out.aborted = self.aborted.take();
        self.out.notes = std::mem::take(&mut self.notes);
        Ok(self.out.clone())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(w) = self.workers.take() {
            let _ = w.stop();
        }
    }
}

/// Carries out one run: `plan` for every pair of `pairs`.
pub fn execute(
    plan: Plan,
    pairs: Vec<PairSpec>,
    opts: &RunOptions,
) -> Result<RunOutcome, BenchError> {
    let mut s = Session::start(plan, pairs, opts)?;
    match s.mode {
        StartMode::WhenReady => s.until_settled(),
        StartMode::Barrier => {
            if s.setup() {
                s.window(opts.duration, &mut |_| false);
                s.drain();
            }
        }
    }
    s.finish()
}
