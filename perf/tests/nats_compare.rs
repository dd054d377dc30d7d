//! `nats-compare` end to end: perf/nats.sh installs nats-server if it is missing (CI runs
//! this as root with apt available), the command starts it on a random port, runs a small
//! closed-loop workload through it and through the real server, and reports the ratios.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::with_server;
use corechat_perf::cli::Command as BenchCommand;
use corechat_perf::compare::{self, Peer};

#[test]
fn nats_compare_runs_both_targets_cleanly() {
    let script = common::workspace_root().join("perf/nats.sh");
    let out = Command::new(&script).output().expect("run perf/nats.sh");
    assert!(
        out.status.success(),
        "perf/nats.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(
        std::path::Path::new(&bin).is_file(),
        "nats.sh printed {bin:?}"
    );

    let t0 = Instant::now();
    let BenchCommand::NatsCompare(a) = with_server(&[
        "nats-compare",
        "--nats-bin",
        &bin,
        "--pairs",
        "10",
        "--window",
        "8",
        "--duration",
        "1",
        "--drain",
        "5",
        "--pause",
        "0.2",
        "--setup-timeout",
        "30",
        "--no-progress",
    ]) else {
        panic!("not nats-compare");
    };
    let r = compare::run(&a, Peer::Nats, None).expect("nats-compare");
    assert_eq!(r.runs.len(), 2, "{}", r.summary_markdown());
    assert_eq!(r.runs[0].name, "nats");
    for run in &r.runs {
        let c = run.report.counts();
        assert!(run.report.clean(), "{}", run.report.summary_markdown());
        assert_eq!(c.ready, 20, "{}", run.name);
        assert!(c.sent > 50, "{}: only {} sent", run.name, c.sent);
        assert_eq!(run.report.lost(), 0, "{}", run.name);
        assert_eq!((c.duplicates, c.acked), (0, c.sent), "{}", run.name);
    }
    assert!(r.clean());
    let q = r.ratios().expect("ratios");
    assert!(q.throughput > 0.0 && q.ack_p99.is_some() && q.delivery_p99.is_some());
    let dir = tempfile::tempdir().expect("temp dir");
    let out = r.write(Some(dir.path())).expect("write the report");
    assert!(out.join("nats/summary.md").exists());
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}
