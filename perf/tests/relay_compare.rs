//! `relay-compare` end to end: the command starts the relay (this package's binary) and the
//! real server, runs the same small closed-loop workload against each, and reports corechat
//! as ratios of the relay.

mod common;

use std::time::{Duration, Instant};

use common::with_server;
use corechat_perf::cli::Command as BenchCommand;
use corechat_perf::compare::{self, Peer};

#[test]
fn relay_compare_runs_both_targets_cleanly() {
    let t0 = Instant::now();
    let BenchCommand::RelayCompare(a) = with_server(&[
        "relay-compare",
        "--relay-bin",
        env!("CARGO_BIN_EXE_corechat-relay"),
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
        panic!("not relay-compare");
    };
    let r = compare::run(&a, Peer::Relay, None).expect("relay-compare");
    assert_eq!(r.runs.len(), 2, "{}", r.summary_markdown());
    for run in &r.runs {
        let c = run.report.counts();
        assert!(run.report.clean(), "{}", run.report.summary_markdown());
        assert_eq!(c.ready, 20, "{}", run.name);
        assert!(c.sent > 50, "{}: only {} sent", run.name, c.sent);
        assert_eq!(run.report.lost(), 0, "{}", run.name);
        assert_eq!(
            (c.refused, c.duplicates, c.acked),
            (0, 0, c.sent),
            "{}",
            run.name
        );
        assert!(
            run.report.server_cpu_us_per_message().is_some(),
            "{}",
            run.name
        );
    }
    assert_eq!(r.runs[0].name, "relay");
    assert!(r.clean());
    let q = r.ratios().expect("ratios");
    assert!(q.throughput > 0.0 && q.ack_p99.is_some() && q.delivery_p99.is_some());
    assert!(q.cpu.is_some());
    assert!(r.brief().contains("corechat / relay: throughput"));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = r.write(Some(dir.path())).expect("write the report");
    for f in [
        "summary.md",
        "latency.svg",
        "relay/delivery.hgrm",
        "corechat/ack.hgrm",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}
