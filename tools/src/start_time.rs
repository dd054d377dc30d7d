//! `corechat-admin time-start -- SERVER COMMAND...`: starts a server, times how long it takes
//! to load its store and become ready, reads its memory once loaded, then stops it.
//!
//! Three figures:
//! * the load time the server reports itself (its info-level log line
//!   `loaded N users, ... in <duration>`, which covers streaming the store into the shards);
//! * the wall time from `exec` to the `corechat ready on` line on its stdout (also opening the
//!   store, migrations, starting the threads);
//! * its resident memory (`VmRSS`) a moment after it is ready, and the peak (`VmHWM`), which
//!   includes what the load needed only temporarily.
//!
//! The server must log at info level or below (`--log-level info`, the default) and to stderr
//! (no `--log-file`) for the first figure.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct TimeStartArgs {
    /// Give up if the server is not ready after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 1800.0)]
    timeout: f64,
    /// Wait this long after "ready" before reading the memory
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    settle: f64,
    /// Print every line the server writes to stderr (otherwise only warnings and errors)
    #[arg(long)]
    verbose: bool,
    /// The server command and its arguments (after --)
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

enum Event {
    Stdout(String),
    Stderr(String),
    Closed,
}

pub fn run(a: &TimeStartArgs) -> Result<bool, String> {
    let started = Instant::now();
    let mut child = Command::new(&a.command[0])
        .args(&a.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", a.command[0]))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<Event>();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(Event::Stdout(line));
            }
            let _ = tx.send(Event::Closed);
        });
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(Event::Stderr(line));
            }
        });
    }
    drop(tx);

    let deadline = started + Duration::from_secs_f64(a.timeout);
    let mut loaded: Option<String> = None;
    let mut ready: Option<Duration> = None;
    let show = |line: &str, verbose: bool| {
        if verbose || line.contains("WARN") || line.contains("ERROR") {
            eprintln!("server: {line}");
        }
    };
    // Until ready (and the load line, which the asynchronous logger may print a little later).
    loop {
        let now = Instant::now();
        let wait_until = match ready {
            Some(r) => (started + r + Duration::from_secs(5)).min(deadline),
            None => deadline,
        };
        if now >= wait_until || (ready.is_some() && loaded.is_some()) {
            break;
        }
        match rx.recv_timeout(wait_until - now) {
            Ok(Event::Stdout(line)) => {
                if line.contains("corechat ready on") && ready.is_none() {
                    ready = Some(started.elapsed());
                }
                show(&line, a.verbose);
            }
            Ok(Event::Stderr(line)) => {
                if line.contains("loaded ") && line.contains(" users") {
                    loaded = Some(line.clone());
                }
                show(&line, a.verbose);
            }
            Ok(Event::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(|e| e.to_string())?;
                return Err(format!("the server exited before it was ready ({status})"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let Some(ready) = ready else {
        stop(&mut child, pid);
        return Err(format!("the server was not ready within {} s", a.timeout));
    };
    let rest = Duration::from_secs_f64(a.settle).saturating_sub(started.elapsed() - ready);
    std::thread::sleep(rest);
    let (rss, hwm) = memory(pid);

    let load_secs = loaded.as_deref().and_then(load_duration);
    println!("command: {}", a.command.join(" "));
    match &loaded {
        Some(l) => println!("server: {}", l.trim()),
        None => println!("server: no `loaded ...` line (log level above info, or a log file?)"),
    }
    println!(
        "ready {:.2} s after start (wall clock, exec to \"corechat ready on\")",
        ready.as_secs_f64()
    );
    println!(
        "memory {:.1} s after ready: VmRSS {:.1} MiB, peak VmHWM {:.1} MiB",
        a.settle,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let t = Instant::now();
    let status = stop(&mut child, pid);
    println!(
        "stopped with SIGTERM in {:.2} s ({})",
        t.elapsed().as_secs_f64(),
        status
    );
    // One line for scripts.
    println!(
        "time-start: load_s={} ready_s={:.3} rss_mib={:.1} hwm_mib={:.1}",
        load_secs.map_or("-".to_string(), |s| format!("{s:.3}")),
        ready.as_secs_f64(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    // Drain whatever the server printed while stopping.
    while let Ok(ev) = rx.recv_timeout(Duration::from_millis(100)) {
        if let Event::Stderr(line) | Event::Stdout(line) = ev {
            show(&line, a.verbose);
        }
    }
    Ok(status.contains("exit status: 0"))
}

/// SIGTERM, then wait (SIGKILL after 60 s); the exit status as text.
fn stop(child: &mut std::process::Child, pid: u32) -> String {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.to_string(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                return child
                    .wait()
                    .map(|s| format!("killed after 60 s: {s}"))
                    .unwrap_or_else(|e| e.to_string());
            }
            Err(e) => return e.to_string(),
        }
    }
}

/// (VmRSS, VmHWM) in KiB from /proc/PID/status.
fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The `{:?}` of a `Duration` at the end of the load line (`12.3456s`, `850.2ms`, `91µs`), in
/// seconds.
fn load_duration(line: &str) -> Option<f64> {
    let tail = line.rsplit(" in ").next()?.trim();
    let num_end = tail
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(tail.len());
    let (num, unit) = tail.split_at(num_end);
    let v: f64 = num.parse().ok()?;
    let unit = unit.trim();
    Some(match unit {
        u if u.starts_with("ms") => v / 1e3,
        u if u.starts_with("µs") || u.starts_with("us") => v / 1e6,
        u if u.starts_with("ns") => v / 1e9,
        u if u.starts_with('s') => v,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::load_duration;

    #[test]
    fn parses_debug_durations() {
        let l = "2025-01-01 INFO loaded 3 users, 0 relations, 0 chat rows, 0 undelivered messages from sqlite:x in 12.5s";
        assert_eq!(load_duration(l), Some(12.5));
        assert_eq!(load_duration("... in 850ms"), Some(0.85));
        assert_eq!(load_duration("... in 91µs"), Some(0.000091));
        assert_eq!(load_duration("no duration"), None);
    }
}
