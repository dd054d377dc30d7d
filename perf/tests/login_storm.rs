//! `login-storm` end to end, small: 5 pairs chat at 500 msg/s while 60 users log in at once,
//! cold (argon2, made cheap here) and then warm (credential cache).

mod common;

use std::time::{Duration, Instant};

use common::with_server;
use corechat_perf::cli::Command as BenchCommand;
use corechat_perf::stats::Metric;
use corechat_perf::storm::{self, StormFigures};

#[test]
fn login_storm_during_chat() {
    let t0 = Instant::now();
    let BenchCommand::LoginStorm(a) = with_server(&[
        "login-storm",
        "--pairs",
        "5",
        "--rate",
        "500",
        "--logins",
        "60",
        "--before",
        "1",
        "--between",
        "0.5",
        "--setup-timeout",
        "30",
        "--no-progress",
    ]) else {
        panic!("not login-storm");
    };
    let r = storm::run(&a, None).expect("login-storm run");
    let summary = r.summary_markdown();
    assert_eq!(r.aborted, None, "{summary}");
    for o in [r.cold.as_ref(), r.warm.as_ref()] {
        let o = o.expect("both storms ran");
        let f = StormFigures::of(o);
        assert_eq!((f.users, f.logged_in), (60, 60), "{summary}");
        assert!(f.per_sec > 0.0, "{summary}");
        assert_eq!(o.stats.histogram(Metric::Login).len(), 60);
    }
    let chat = r.chat.as_ref().expect("chat");
    assert!(chat.clean(), "{}", chat.summary_markdown());
    assert_eq!(chat.lost(), 0);
    assert!(chat.counts().delivered > 500, "{summary}");
    assert!(
        r.delivery_p99(0).is_some(),
        "deliveries before the storm: {summary}"
    );
    assert!(r.clean(), "{summary}");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = r.write(Some(dir.path())).expect("write the report");
    for f in [
        "summary.md",
        "cold-login.hgrm",
        "warm-login.hgrm",
        "delivery-before.hgrm",
        "chat/summary.md",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}
