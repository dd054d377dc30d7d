//! The command line of `corechat-bench` (kept in the library so tests parse it too).

use clap::{Parser, Subcommand};

use crate::backlog::BacklogArgs;
use crate::compare::CompareArgs;
use crate::connections::{ConnectionsArgs, HoldArgs};
use crate::seed::SeedArgs;
use crate::storm::StormArgs;
use crate::throughput::ThroughputArgs;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "corechat-bench",
    version,
    about = "Load generator for corechat: throughput/latency runs, comparisons with a relay and \
             NATS, connection limits, login storms, big mailboxes and the seed table",
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
    /// The throughput workload against the corechat-relay floor, then corechat; corechat as
    /// ratios of the relay (starts both itself)
    RelayCompare(CompareArgs),
    /// The throughput workload through a NATS server, then corechat; corechat as ratios of
    /// NATS (starts both itself; perf/nats.sh installs nats-server)
    NatsCompare(CompareArgs),
    /// Fill the server with logged-in idle connections: memory per connection, and what
    /// happens at the ceiling (starts the server itself unless --external)
    Connections(ConnectionsArgs),
    /// N users log in at once (cold, then warm) while pairs chat at a fixed rate
    LoginStorm(StormArgs),
    /// A user with a big mailbox logs in: time until every message has arrived
    Backlog(BacklogArgs),
    /// Helper process of `connections`: holds logged-in connections until SIGTERM
    #[command(hide = true)]
    Hold(HoldArgs),
}
