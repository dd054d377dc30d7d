//! The command line of `corechat-bench` (kept in the library so tests parse it too).

use clap::{Parser, Subcommand};

use crate::seed::SeedArgs;
use crate::throughput::ThroughputArgs;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "corechat-bench",
    version,
    about = "Load generator for corechat: throughput/latency runs and the seed table",
    long_about = "Load generator for corechat. It creates users through the Qt client's \
                  protocol, makes them friends and measures message latency (ack and \
                  delivery), loss and CPU cost; reports go to a folder (summary.md, .hgrm \
                  files, latency.svg). See perf/README.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// P pairs chat continuously for a fixed time (closed loop, or open loop with --rate)
    Throughput(ThroughputArgs),
    /// N clients connect at once, log in and send one message each (the old server's table)
    SeedTable(SeedArgs),
}
