//! `corechat-relay`: the minimal forwarder corechat is compared with (see
//! `corechat_perf::relay` for its scheme, and perf/README.md). It prints
//! `corechat-relay ready on ADDR (N threads)` when it accepts connections, and stops on
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use corechat_perf::relay::Relay;

#[derive(Parser, Debug)]
#[command(
    name = "corechat-relay",
    version,
    about = "Minimal forwarder with corechat's framing: the baseline of `corechat-bench relay-compare`",
    long_about = "Minimal forwarder with corechat's framing (4-byte big-endian length + body), \
                  no JSON parsing, no state but user -> connection, no persistence. A `login` \
                  frame binds the connection to its \"user_id\"; a `send_message` frame is \
                  forwarded unchanged to the connection bound to its \"receiver_id\" and \
                  answered {\"type\":\"send_message\",\"status\":\"success\"}; any other frame \
                  is answered {\"type\":<its type>,\"status\":\"success\"}."
)]
struct Args {
    /// Address to listen on (port 0: a random port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:12346")]
    listen: SocketAddr,

    /// Threads, each with its own event loop and SO_REUSEPORT listener [default: the cores
    /// this process may use]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("corechat-relay: cannot handle signal {sig}: {e}");
        }
    }
    let relay = match Relay::start(args.listen, threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corechat-relay: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    println!(
        "corechat-relay ready on {} ({threads} threads)",
        relay.addr()
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    relay.stop();
    ExitCode::SUCCESS
}
