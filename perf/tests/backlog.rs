//! `backlog` end to end, small: 2,000 messages wait for a receiver that then logs in; every
//! one must arrive once and in order before the `friends` fence, and the mailbox must be
//! empty afterwards.

mod common;

use std::time::{Duration, Instant};

use common::with_server;
use corechat_perf::backlog;
use corechat_perf::cli::Command as BenchCommand;

#[test]
fn backlog_arrives_whole_and_in_order() {
    let t0 = Instant::now();
    let BenchCommand::Backlog(a) = with_server(&[
        "backlog",
        "--messages",
        "2000",
        "--payload",
        "100",
        "--no-progress",
    ]) else {
        panic!("not backlog");
    };
    let r = backlog::run(&a, None).expect("backlog run");
    let summary = r.summary_markdown();
    assert_eq!(r.aborted, None, "{summary}");
    assert_eq!(r.received, 2000, "{summary}");
    assert_eq!(
        (r.duplicates, r.out_of_order, r.fill_refused),
        (0, 0, 0),
        "{summary}"
    );
    assert!(
        r.frames >= 2,
        "a mailbox this big comes in several frames: {summary}"
    );
    assert!(r.fence.is_some() && r.first_frame <= r.fence, "{summary}");
    assert_eq!(r.emptied, Some(true), "{summary}");
    assert!(r.clean(), "{summary}");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = r.write(Some(dir.path())).expect("write the report");
    assert!(out.join("arrival.hgrm").exists());
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
}
