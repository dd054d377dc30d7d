//! What the perf tests share: the server binary (built first if missing) and the flags of a
//! small, fast test server.
//!
//! The server belongs to another package, so `CARGO_BIN_EXE_corechat` is not available; its
//! path is built from the target directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use corechat_perf::cli::{Cli, Command as BenchCommand};
use corechat_perf::procs::ServerArgs;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `target/debug/corechat`, built first if it is missing.
pub fn server_binary() -> PathBuf {
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

/// The command-line flags that make a scenario start the test server: the debug binary,
/// 2 unpinned shards, cheap password hashing (tests measure messages, not argon2).
pub fn server_flags() -> Vec<String> {
    vec![
        "--server-bin".into(),
        server_binary().to_string_lossy().into_owned(),
        "--shards".into(),
        "2".into(),
        "--server-arg=--no-pin".into(),
        "--server-arg=--argon2-memory-kib=64".into(),
        "--server-arg=--argon2-passes=1".into(),
    ]
}

/// The same as [`ServerArgs`].
pub fn server_args() -> ServerArgs {
    match parse_owned(&[&["backlog".to_string()][..], &server_flags()].concat()) {
        BenchCommand::Backlog(a) => a.server,
        _ => unreachable!(),
    }
}

pub fn parse(args: &[&str]) -> BenchCommand {
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    parse_owned(&owned)
}

pub fn parse_owned(args: &[String]) -> BenchCommand {
    let mut all = vec!["corechat-bench".to_string()];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).expect("valid arguments").command
}

/// `args` followed by the test server's flags.
pub fn with_server(args: &[&str]) -> BenchCommand {
    let mut owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    owned.extend(server_flags());
    parse_owned(&owned)
}
