//! Starts the real `corechat` server binary and drives it through the load generator's
//! library API: a tiny throughput run and a tiny seed table, both of which must finish with
//! nothing lost and every client successful.
//!
//! The server is started through the generator's own process management
//! (`corechat_perf::procs`), from `target/debug/corechat` (built first if it is missing).

mod common;

use std::time::{Duration, Instant};

use common::parse;
use corechat_perf::cli::Command as BenchCommand;
use corechat_perf::procs;
use corechat_perf::stats::Metric;
use corechat_perf::{seed, throughput};

#[test]
fn throughput_and_seed_table_against_the_real_server() {
    let t0 = Instant::now();
    let server = procs::start_corechat(&common::server_args(), &[]).expect("start the server");
    let pid = server.pid().to_string();
    let addr = server.addr().to_string();
    let reports = tempfile::tempdir().expect("temp dir");

    // --- throughput: 20 pairs, 2 seconds, closed loop ---
    let out = reports.path().join("throughput");
    let BenchCommand::Throughput(a) = parse(&[
        "throughput",
        "--addr",
        &addr,
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
        &addr,
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
