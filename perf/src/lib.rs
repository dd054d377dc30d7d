//! corechat's load generator (see perf/README.md for how to run it).
//!
//! Why it is built this way:
//!
//! - **Cheap**: a few threads each drive many non-blocking connections with one `mio` event
//!   loop ([`driver`], [`net`]), so the generator does not steal the CPU it is measuring
//!   and can hold thousands of clients. Its own CPU time is reported next to the server's.
//! - **Honest latencies**: in open loop every latency counts from the message's intended
//!   send time (no coordinated omission); histograms are HdrHistograms ([`stats`]) written
//!   in HdrHistogram's own text format ([`hgrm`]) and plotted ([`svg`]).
//! - **No silent loss**: each message carries its pair, sequence number and send time
//!   ([`wire::Tag`]), so the receiver counts deliveries, duplicates and reordering, and a
//!   run ends with a drain that waits for every message sent.
//! - **Bounded**: every phase has a deadline and a stalled or dead server aborts the run
//!   with a report ([`run`]).
//!
//! Scenarios: [`throughput`] and [`seed`] (the old server's seed table).

pub mod backlog;
pub mod cli;
pub mod common;
pub mod compare;
pub mod connections;
pub mod cpu;
pub mod driver;
pub mod error;
pub mod hgrm;
pub mod nats;
pub mod net;
pub mod procs;
pub mod progress;
pub mod relay;
pub mod report;
pub mod run;
pub mod seed;
pub mod stats;
pub mod storm;
pub mod svg;
pub mod throughput;
pub mod wire;

pub use error::BenchError;
