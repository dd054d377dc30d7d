//! The `corechat` server binary.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::Parser;
use corechat_engine::{logging, Options, Server};

fn main() -> ExitCode {
    let cfg = match Options::parse().with_file().and_then(Options::resolve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corechat: {e}");
            return ExitCode::from(2);
        }
    };
    let _log = match logging::init(&cfg) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("corechat: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::start(cfg.clone()) {
        Ok(s) => s,
        Err(e) => {
            ftlog::error!("corechat: {e}");
            log_flush();
            eprintln!("corechat: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = server.stop_flag();
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("corechat: cannot install signal handlers: {e}");
            let _ = server.shutdown();
            return ExitCode::from(1);
        }
    };
    std::thread::spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            if seen == 1 {
                ftlog::info!("signal {sig}: stopping after the queue is written");
                stop.store(true, Ordering::Release);
            } else {
                eprintln!("corechat: second signal, exiting without waiting");
                std::process::exit(130);
            }
        }
    });
    let store = match &cfg.database {
        Some(_) => "mysql".to_string(),
        None => format!("embedded store in {}", cfg.data_dir.display()),
    };
    let admin = match server.admin_addr {
        Some(a) => format!("; admin on http://{a}"),
        None => String::new(),
    };
    println!(
        "corechat ready on {} ({} shards, {store}{admin})",
        server.addr, cfg.shards
    );
    let _ = std::io::stdout().flush();
    match server.wait() {
        Ok(()) => {
            println!("corechat stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corechat: {e}");
            ExitCode::from(1)
        }
    }
}

fn log_flush() {
    log::logger().flush();
}
