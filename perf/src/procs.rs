//! Processes a scenario starts and stops itself: the corechat server (on a fresh temporary
//! data directory), the relay baseline, a NATS server, and the generator's own helper
//! processes.
//!
//! Each is started with a loopback address and a random port, and is ready when it prints
//! its ready line (corechat: `corechat ready on ADDR ...`, the relay: `corechat-relay ready
//! on ADDR ...`, nats-server: `Listening for client connections on ADDR`). Their output is
//! read to the end (so they never block on a full pipe) and the last lines are kept for
//! error messages. Dropping a [`Proc`] stops it: SIGTERM, then SIGKILL after 10 s.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::CommonArgs;
use crate::error::BenchError;

/// Lines of a process's output kept for error messages.
const KEEP_LINES: usize = 40;

/// A child process this generator started.
pub struct Proc {
    name: String,
    child: Child,
    addr: String,
    output: Arc<Mutex<VecDeque<String>>>,
    _data: Option<tempfile::TempDir>,
}

impl Proc {
    /// Starts `cmd` (stdout and stderr captured) and waits up to `timeout` for a line that
    /// `ready` maps to the address it listens on.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        ready: fn(&str) -> Option<String>,
        timeout: Duration,
        data: Option<tempfile::TempDir>,
    ) -> Result<Proc, BenchError> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                BenchError::Process(format!(
                    "cannot start {name} ({}): {e}",
                    cmd.get_program().to_string_lossy()
                ))
            })?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let streams: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        for stream in streams {
            let (tx, output) = (tx.clone(), output.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addr) = ready(&line) {
                        let _ = tx.send(addr);
                    }
                    let mut o = output.lock().unwrap_or_else(|e| e.into_inner());
                    if o.len() >= KEEP_LINES {
                        o.pop_front();
                    }
                    o.push_back(line);
                }
            });
        }
        let mut p = Proc {
            name: name.to_string(),
            child,
            addr: String::new(),
            output,
            _data: data,
        };
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    p.addr = addr;
                    return Ok(p);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both streams closed without the ready line: the process is exiting.
                    std::thread::sleep(Duration::from_millis(200));
                    return Err(p.failed("exited before it was ready"));
                }
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(p.failed(&format!("exited ({st}) before it was ready")));
            }
            if Instant::now() >= deadline {
                return Err(p.failed(&format!(
                    "was not ready within {:.0} s",
                    timeout.as_secs_f64()
                )));
            }
        }
    }

    fn failed(&self, what: &str) -> BenchError {
        BenchError::Process(format!(
            "{} {what}; its last output:\n{}",
            self.name,
            self.recent_output()
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its last lines of output.
    pub fn recent_output(&self) -> String {
        let o = self.output.lock().unwrap_or_else(|e| e.into_inner());
        o.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited after 10 s.
    pub fn stop(&mut self) {
        if !self.running() {
            return;
        }
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `name` next to this executable (target/release/corechat-bench -> target/release/NAME) if
/// it exists there, else `target/release/NAME`.
pub fn default_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let c = dir.join(name);
        if c.exists() {
            return c;
        }
    }
    PathBuf::from("target/release").join(name)
}

/// `nats-server` on the PATH or in the usual system directories (Debian puts it in /usr/sbin).
pub fn find_nats() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// Caps the open-file limit (soft and hard) of a command's process.
fn cap_fd_limit(cmd: &mut Command, limit: u64) {
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How a scenario gets its corechat server: started here (the default) or already running.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Use the server already running at --addr (pass --server-pid for its CPU time and
    /// memory) instead of starting one
    #[arg(long)]
    pub external: bool,

    /// The corechat binary to start [default: `corechat` next to this binary, else
    /// target/release/corechat]
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// Shards of the server started here
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub shards: usize,

    /// One more flag for the server started here (repeatable), e.g.
    /// --server-arg=--no-pin --server-arg=--batch-size=1024. A flag given here replaces the
    /// scenario's own default for it.
    #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,

    /// Cap the open-file limit (soft and hard) of the server started here
    #[arg(long, value_name = "N")]
    pub server_fd_limit: Option<u64>,
}

impl ServerArgs {
    /// Whether the user gave `flag` (e.g. "--argon2-passes") with --server-arg.
    fn overrides(&self, flag: &str) -> bool {
        self.server_args
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    }
}

/// Where a scenario sends its load: the address, the server's pid when known, and the
/// process when this generator started it.
pub struct Target {
    pub addr: String,
    pub pid: Option<u32>,
    pub proc: Option<Proc>,
}

impl Target {
    /// Starts corechat (unless `--external`) with `defaults` (flag, value) for the flags the
    /// user did not give with --server-arg. The started server listens on 127.0.0.1 with a
    /// random port, keeps its data in a temporary directory (removed afterwards), has no
    /// admin listener and logs warnings only.
    pub fn corechat(
        server: &ServerArgs,
        common: &CommonArgs,
        defaults: &[(&str, &str)],
    ) -> Result<Target, BenchError> {
        if server.external {
            return Ok(Target {
                addr: common.addr.clone(),
                pid: common.server_pid,
                proc: None,
            });
        }
        let p = start_corechat(server, defaults)?;
        Ok(Target {
            addr: p.addr().to_string(),
            pid: Some(p.pid()),
            proc: Some(p),
        })
    }

    /// `common` pointed at this target.
    pub fn common(&self, common: &CommonArgs) -> CommonArgs {
        let mut c = common.clone();
        c.addr = self.addr.clone();
        c.server_pid = self.pid;
        c
    }

    /// How the target was obtained, for reports.
    pub fn describe(&self) -> String {
        match &self.proc {
            Some(p) => format!(
                "{} started here (pid {}) on {}",
                p.name(),
                p.pid(),
                self.addr
            ),
            None => format!("running server at {}", self.addr),
        }
    }
}

/// Starts a corechat server as [`Target::corechat`] describes.
pub fn start_corechat(server: &ServerArgs, defaults: &[(&str, &str)]) -> Result<Proc, BenchError> {
    let bin = server
        .server_bin
        .clone()
        .unwrap_or_else(|| default_bin("corechat"));
    let data = tempfile::Builder::new()
        .prefix("corechat-bench-")
        .tempdir()
        .map_err(|e| BenchError::Process(format!("cannot create a data directory: {e}")))?;
    let mut cmd = Command::new(&bin);
    let shards = server.shards.max(1).to_string();
    let data_dir = data.path().to_string_lossy().into_owned();
    let base: [(&str, &str); 5] = [
        ("--listen", "127.0.0.1:0"),
        ("--shards", &shards),
        ("--data-dir", &data_dir),
        ("--admin", "off"),
        ("--log-level", "warn"),
    ];
    for (flag, value) in base.iter().chain(defaults) {
        if !server.overrides(flag) {
            cmd.arg(flag).arg(value);
        }
    }
    cmd.args(&server.server_args);
    if let Some(n) = server.server_fd_limit {
        cap_fd_limit(&mut cmd, n);
    }
    Proc::spawn(
        "corechat",
        cmd,
        |l| {
            l.strip_prefix("corechat ready on ")
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string)
        },
        Duration::from_secs(120),
        Some(data),
    )
}

/// Starts the relay baseline with `threads` threads on a random loopback port.
pub fn start_relay(bin: &Path, threads: usize) -> Result<Proc, BenchError> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--threads",
        &threads.max(1).to_string(),
    ]);
    Proc::spawn(
        "corechat-relay",
        cmd,
        |l| {
            l.strip_prefix("corechat-relay ready on ")
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string)
        },
        Duration::from_secs(30),
        None,
    )
}

/// Starts `nats-server` on 127.0.0.1 with a random port.
pub fn start_nats(bin: &Path) -> Result<Proc, BenchError> {
    let mut cmd = Command::new(bin);
    cmd.args(["-a", "127.0.0.1", "-p", "-1"]);
    Proc::spawn(
        "nats-server",
        cmd,
        |l| {
            l.split("Listening for client connections on ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string)
        },
        Duration::from_secs(30),
        None,
    )
}

/// Open descriptors and the soft open-file limit of process `pid`.
pub fn fd_usage(pid: u32) -> Option<(u64, u64)> {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some((open, soft))
}

/// Resident memory of process `pid` in bytes (`VmRSS` of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&s)
}

/// The `VmRSS` line of a /proc/PID/status text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let l = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut it = l.split_whitespace().skip(1);
    let n: u64 = it.next()?.parse().ok()?;
    let unit = it.next().unwrap_or("kB");
    Some(match unit {
        "kB" => n * 1024,
        "mB" | "MB" => n * 1024 * 1024,
        _ => n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss() {
        let s = "Name:\tcorechat\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t5\n";
        assert_eq!(parse_vm_rss(s), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("nothing"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        let (open, soft) = fd_usage(std::process::id()).unwrap();
        assert!(open >= 3 && soft >= open);
    }
}
