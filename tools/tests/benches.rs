//! The persistence benchmarks of `corechat-admin` run end to end on a small load and report
//! what they measured (embedded store, so no database server is needed).

use std::process::Command;

fn admin(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_corechat-admin"))
        .args(args)
        .output()
        .expect("run corechat-admin");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "corechat-admin {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("corechat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn ack_bench_acknowledges_every_message_it_offers() {
    let dir = scratch("ack-bench");
    let d = dir.to_string_lossy();
    let out = admin(&[
        "ack-bench",
        "--data-dir",
        &d,
        "--rate",
        "2000",
        "--seconds",
        "1",
        "--pairs",
        "10",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.contains("acknowledged 2000 (0 refused)"), "{out}");
    assert!(out.contains("ack latency ms: p50"), "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("ack-bench: msgs_per_s="), "{out}");
}

#[test]
fn write_bench_reports_a_rate() {
    let dir = scratch("write-bench");
    let d = dir.to_string_lossy();
    let out = admin(&[
        "write-bench",
        "--data-dir",
        &d,
        "--seconds",
        "0.5",
        "--pairs",
        "10",
        "--messages-per-batch",
        "50",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let last = out.lines().last().unwrap_or_default();
    let rate: f64 = last
        .strip_prefix("write-bench: msgs_per_s=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in: {out}"));
    assert!(rate > 0.0, "{out}");
}

#[test]
fn a_bench_without_a_store_is_refused_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_corechat-admin"))
        .args(["ack-bench", "--rate", "10"])
        .output()
        .expect("run corechat-admin");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--database") || err.contains("--data-dir"),
        "{err}"
    );
}
