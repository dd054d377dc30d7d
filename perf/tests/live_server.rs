//! Starts the real `corechat` server binary and drives it through the load generator's
//! library API: a tiny throughput run and a tiny seed table, both of which must finish with
//! nothing lost and every client successful.
//!
//! The server belongs to another package, so `CARGO_BIN_EXE_corechat` is not available;
//! its path is built from the target directory, and it is built first if it is missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use corechat_perf::cli::{Cli, Command as BenchCommand};
use corechat_perf::stats::Metric;
use corechat_perf::{seed, throughput};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn server_binary() -> PathBuf {
    let root = workspace_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Some(t) => root.join(t),
        None => root.join("target"),
    };
    let bin = target.join("debug").join("corechat");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "corechat-engine", "--bin", "corechat"])
            .current_dir(&root)
            .status()
            .expect("run cargo build for the server");
        assert!(status.success(), "building the server failed");
    }
    assert!(bin.exists(), "no server binary at {}", bin.display());
    bin
}

/// The server process; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let bin = server_binary();
        let data = tempfile::tempdir().expect("temp dir");
        let help = Command::new(&bin)
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(&bin);
        cmd.args(["--listen", "127.0.0.1:0", "--no-pin", "--shards", "2"])
            .arg("--data-dir")
            .arg(data.path())
            .args(["--log-level", "warn"]);
        // Cheap password hashing: the test measures messages, not argon2.
        if help.contains("--argon2-memory-kib") {
            cmd.args(["--argon2-memory-kib", "64", "--argon2-passes", "1"]);
        }
        // Do not collide with another server's admin port.
        if help.contains("--admin") {
            cmd.args(["--admin", "off"]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().expect("server stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading to the end, so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("corechat ready on ") {
                        break rest.split_whitespace().next().unwrap_or("").to_string();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("the server did not print its ready line in time");
                }
            }
        };
        Server {
            child,
            addr,
            _data: data,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(args: &[&str]) -> BenchCommand {
    let mut all = vec!["corechat-bench"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).expect("valid arguments").command
}

#[test]
fn throughput_and_seed_table_against_the_real_server() {
    let t0 = Instant::now();
    let server = Server::start();
    let pid = server.child.id().to_string();
    let reports = tempfile::tempdir().expect("temp dir");

    // --- throughput: 20 pairs, 2 seconds, closed loop ---
    let out = reports.path().join("throughput");
    let BenchCommand::Throughput(a) = parse(&[
        "throughput",
        "--addr",
        &server.addr,
        "--pairs",
        "20",
        "--window",
        "8",
        "--duration",
        "2",
        "--drain",
        "5",
        "--setup-timeout",
        "30",
        "--base",
        "100000000000",
        "--server-pid",
        &pid,
        "--threads",
        "2",
        "--no-progress",
    ]) else {
        panic!("not a throughput command");
    };
    let r = throughput::run(&a, None).expect("throughput run");
    let c = *r.counts();
    assert_eq!(r.outcome.aborted, None, "{}", r.summary_markdown());
    assert_eq!(c.failed_users, 0, "{:?}", r.outcome.stats.failures);
    assert_eq!(c.ready, 40);
    assert!(c.sent > 100, "only {} messages sent", c.sent);
    assert_eq!(r.lost(), 0, "{}", r.summary_markdown());
    assert_eq!((c.refused, c.duplicates), (0, 0));
    assert_eq!(c.acked, c.sent);
    assert!(r.clean());
    let s = &r.outcome.stats;
    assert_eq!(s.histogram(Metric::Delivery).len(), c.delivered);
    assert_eq!(s.histogram(Metric::Ack).len(), c.acked);
    assert!(r.server_cpu_us_per_message().is_some());
    let dir = r.write(Some(&out)).expect("write the report");
    for f in ["summary.md", "ack.hgrm", "delivery.hgrm", "latency.svg"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let hgrm = std::fs::read_to_string(dir.join("delivery.hgrm")).expect("read hgrm");
    assert!(hgrm.contains(&format!("Total count    = {:12}]", c.delivered)));

    // --- seed table: 50 clients at once ---
    let BenchCommand::SeedTable(a) = parse(&[
        "seed-table",
        "--addr",
        &server.addr,
        "--clients",
        "50",
        "--setup-timeout",
        "30",
        "--base",
        "100000001000",
        "--server-pid",
        &pid,
        "--no-progress",
    ]) else {
        panic!("not a seed-table command");
    };
    let r = seed::run(&a, None).expect("seed-table run");
    assert_eq!(r.aborted, None, "{}", r.summary_markdown());
    assert_eq!(r.rounds.len(), 1);
    let round = &r.rounds[0];
    assert_eq!(round.login_success(), 100.0, "{}", r.summary_markdown());
    assert_eq!(round.message_success(), 100.0, "{}", r.summary_markdown());
    assert!(r.clean());
    assert!(r.table().contains("| 50 | 100.0% |"));
    let dir = r
        .write(Some(&reports.path().join("seed")))
        .expect("write the report");
    assert!(dir.join("seed-50-login.hgrm").exists());

    drop(server);
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
}
