//! `corechat-bench`: see `corechat-bench --help` and perf/README.md.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use corechat_perf::cli::{Cli, Command};
use corechat_perf::compare::{self, Peer};
use corechat_perf::{backlog, connections, seed, storm, throughput, BenchError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C (or SIGTERM) aborts the run, which is then reported like any other.
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, interrupt.clone()) {
            eprintln!("corechat-bench: cannot handle signal {sig}: {e}");
        }
    }
    match run(cli, interrupt.clone()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("corechat-bench: {e}");
            if interrupt.load(Ordering::Relaxed) {
                ExitCode::from(130)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// Runs the command and writes its report; true if the run was clean.
fn run(cli: Cli, interrupt: Arc<AtomicBool>) -> Result<bool, BenchError> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    // The result goes to stdout; a closed pipe (`| head`) is not worth a panic.
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Throughput(a) => {
            let mut r = throughput::run(&a, Some(interrupt))?;
            r.command = Some(command);
            let dir = r.write(a.common.out.as_deref())?;
            let _ = writeln!(out, "{}\nreport: {}", r.brief(), dir.display());
            Ok(r.clean())
        }
        Command::SeedTable(a) => {
            let mut r = seed::run(&a, Some(interrupt))?;
            r.command = Some(command);
            let dir = r.write(a.common.out.as_deref())?;
            let _ = write!(out, "{}", r.table());
            if let Some(why) = &r.aborted {
                let _ = writeln!(out, "ABORTED: {why}");
            }
            let _ = writeln!(out, "report: {}", dir.display());
            Ok(r.clean())
        }
        Command::RelayCompare(a) => compare_run(a, Peer::Relay, command, interrupt, &mut out),
        Command::NatsCompare(a) => compare_run(a, Peer::Nats, command, interrupt, &mut out),
        Command::Connections(a) => {
            let mut r = connections::run(&a, Some(interrupt))?;
            r.command = Some(command);
            let dir = r.write(a.common.out.as_deref())?;
            let _ = writeln!(out, "{}\nreport: {}", r.brief(), dir.display());
            Ok(r.clean())
        }
        Command::LoginStorm(a) => {
            let mut r = storm::run(&a, Some(interrupt))?;
            r.command = Some(command);
            let dir = r.write(a.common.out.as_deref())?;
            let _ = writeln!(out, "{}\nreport: {}", r.brief(), dir.display());
            Ok(r.clean())
        }
        Command::Backlog(a) => {
            let mut r = backlog::run(&a, Some(interrupt))?;
            r.command = Some(command);
            let dir = r.write(a.common.out.as_deref())?;
            let _ = writeln!(out, "{}\nreport: {}", r.brief(), dir.display());
            Ok(r.clean())
        }
        Command::Hold(a) => {
            connections::hold(&a, interrupt)?;
            Ok(true)
        }
    }
}

fn compare_run(
    a: compare::CompareArgs,
    peer: Peer,
    command: String,
    interrupt: Arc<AtomicBool>,
    out: &mut impl Write,
) -> Result<bool, BenchError> {
    let mut r = compare::run(&a, peer, Some(interrupt))?;
    r.command = Some(command);
    let dir = r.write(a.workload.common.out.as_deref())?;
    let _ = writeln!(out, "{}report: {}", r.brief(), dir.display());
    Ok(r.clean())
}
