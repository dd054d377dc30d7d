//! `connections` end to end, at a small scale: the server started with an open-file limit of
//! 300 is filled by three helper processes, 40 more connections are tried beyond its
//! ceiling, and it must keep serving, not spin, and recover once connections close.

mod common;

use std::time::{Duration, Instant};

use common::with_server;
use corechat_perf::cli::Command as BenchCommand;
use corechat_perf::connections::{self, ProbeResult, SPINNING};

#[test]
fn connections_fill_the_ceiling_and_recover() {
    let t0 = Instant::now();
    let BenchCommand::Connections(a) = with_server(&[
        "connections",
        "--bench-bin",
        env!("CARGO_BIN_EXE_corechat-bench"),
        "--server-fd-limit",
        "300",
        "--margin",
        "16",
        "--extra",
        "40",
        "--per-process",
        "100",
        "--recovery",
        "20",
        "--ceiling-wait",
        "2",
        "--idle",
        "1",
        "--setup-timeout",
        "30",
        "--no-progress",
    ]) else {
        panic!("not connections");
    };
    let r = connections::run(&a, None).expect("connections run");
    let summary = r.summary_markdown();
    assert_eq!(r.aborted, None, "{summary}");
    assert!(r.fill_wanted > 200, "{summary}");
    assert_eq!(r.fill_ready, r.fill_wanted, "{summary}");
    assert_eq!(r.fill_failed, 0, "{summary}");
    assert_eq!(r.processes, 3, "{summary}");
    assert!(r.rss_per_connection().is_some(), "{summary}");
    // Beyond the ceiling: not all of the extra connections can be served at once...
    assert_eq!(r.extra_at_ceiling.tried, 40);
    assert!(r.extra_at_ceiling.logged_in < 40, "{summary}");
    // ...but the held ones are, the server does not spin, and it recovers.
    assert!(
        matches!(
            r.probe_ceiling,
            Some(ProbeResult::Delivered { acked: true, .. })
        ),
        "{summary}"
    );
    assert!(r.idle_cores().is_some_and(|c| c < SPINNING), "{summary}");
    // Every extra connection gets an answer: logged in, or (when the server had no descriptor
    // left to move it to its user's shard) `server busy`, which the client may retry. None is
    // left waiting once connections have closed. (`failed` counts failure events, a client
    // whose partner failed included, so it can exceed the clients it concerns.)
    let after = &r.extra_after_close;
    assert!(after.logged_in + after.failed >= after.tried, "{summary}");
    assert!(after.logged_in > 0, "{summary}");
    assert_eq!(r.recovery_logins(), (20, 20), "{summary}");
    assert!(
        r.probe_after.as_ref().is_some_and(ProbeResult::ok),
        "{summary}"
    );
    assert!(r.clean(), "{summary}");
    assert_eq!(
        r.fill_stats.counts.logged_in, r.fill_wanted,
        "helpers' stats came back"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let out = r.write(Some(dir.path())).expect("write the report");
    assert!(out.join("fill-login.hgrm").exists());
    assert!(
        t0.elapsed() < Duration::from_secs(40),
        "took {:?}",
        t0.elapsed()
    );
}
