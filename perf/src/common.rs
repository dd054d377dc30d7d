//! Options every scenario shares, and turning them into a run.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::driver::{PairSpec, Plan, StartMode};
use crate::error::BenchError;
use crate::run::RunOptions;

/// Largest user id the protocol accepts as a phone number: 12 digits.
const MAX_PHONE: u64 = 999_999_999_999;

#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Server address
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:12345")]
    pub addr: String,

    /// First phone number (= user id) of this run's users; they get BASE, BASE+1, ...
    /// [default: derived from the clock, so that consecutive runs do not collide]
    #[arg(long, value_name = "PHONE")]
    pub base: Option<u64>,

    /// Password of every user the run creates
    #[arg(long, default_value = "bench-password")]
    pub password: String,

    /// Worker threads; each drives many connections with one event loop
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// Longest setup (connect, register, login, befriend), in seconds
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub setup_timeout: f64,

    /// Abort when the server sends nothing for this many seconds while requests wait
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub stall_timeout: f64,

    /// The server's process id: its CPU time is measured from /proc/PID/stat
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Report folder [default: ./bench-reports/<scenario>-<timestamp>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// No progress line
    #[arg(long)]
    pub no_progress: bool,
}

impl CommonArgs {
    pub fn socket_addr(&self) -> Result<SocketAddr, BenchError> {
        self.addr
            .to_socket_addrs()
            .map_err(|source| BenchError::Resolve {
                addr: self.addr.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| BenchError::NoAddress(self.addr.clone()))
    }

    /// The base phone number, checked to leave room for `users` ids.
    pub fn base_for(&self, users: u64) -> Result<u64, BenchError> {
        let base = self.base.unwrap_or_else(clock_base);
        if base == 0 || base.saturating_add(users) > MAX_PHONE {
            return Err(BenchError::Invalid(format!(
                "--base {base} leaves no room for {users} users (ids have at most 12 digits)"
            )));
        }
        Ok(base)
    }

    pub fn run_options(
        &self,
        label: &str,
        duration: Duration,
        drain: Duration,
        interrupt: Option<Arc<AtomicBool>>,
    ) -> Result<RunOptions, BenchError> {
        if self.threads == 0 {
            return Err(BenchError::Invalid("--threads must be at least 1".into()));
        }
        Ok(RunOptions {
            threads: self.threads,
            setup_timeout: positive_secs(self.setup_timeout, "--setup-timeout")?,
            duration,
            drain,
            stall: positive_secs(self.stall_timeout, "--stall-timeout")?,
            server_pid: self.server_pid,
            progress: !self.no_progress,
            label: label.to_string(),
            interrupt,
        })
    }
}

/// A base that changes every second: 10^11 + (unix seconds mod 8*10^6) * 10^4. Two runs
/// started a second apart do not overlap unless the first used more than 10,000 ids per
/// second it ran; the cycle repeats after about three months.
fn clock_base() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    100_000_000_000 + (secs % 8_000_000) * 10_000
}

/// A plan whose users connect, register (if `register`), log in and fetch their unread
/// messages (if `login`), and then send nothing: users created for later, or connections
/// held idle.
pub fn idle_plan(
    addr: SocketAddr,
    password: &str,
    register: bool,
    login: bool,
    start: StartMode,
    max_connecting: Option<usize>,
) -> Plan {
    Plan {
        addr,
        protocol: Default::default(),
        password: password.to_string(),
        register,
        login,
        max_connecting,
        unread: login,
        befriend: false,
        both_ways: false,
        limit: Some(0),
        window: 1,
        interval_ns: None,
        start,
        payload: 0,
        total_pairs: 1,
    }
}

/// `n` pairs of consecutive phone numbers from `base`.
pub fn pairs(base: u64, n: usize) -> Vec<PairSpec> {
    (0..n)
        .map(|i| PairSpec {
            id: i as u32,
            a: (base + 2 * i as u64).to_string(),
            b: (base + 2 * i as u64 + 1).to_string(),
        })
        .collect()
}

pub fn positive_secs(v: f64, name: &str) -> Result<Duration, BenchError> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(BenchError::Invalid(format!(
            "{name} must be a positive number of seconds"
        )))
    }
}
