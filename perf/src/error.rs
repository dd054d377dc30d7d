//! The generator's errors. Network trouble during a run is *measured* (failed users,
//! refused messages, an aborted run), never an error; an error means the run could not be
//! carried out or its report could not be written.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("invalid arguments: {0}")]
    Invalid(String),
    #[error("cannot set up an event loop: {0}")]
    Poll(#[source] io::Error),
    #[error("cannot start a worker thread: {0}")]
    Spawn(#[source] io::Error),
    #[error("a worker's event loop failed: {0}")]
    Worker(#[source] io::Error),
    #[error("a worker thread panicked")]
    WorkerPanicked,
    #[error("{0}")]
    Process(String),
    #[error("cannot write the report to {path}: {source}")]
    Report { path: PathBuf, source: io::Error },
}
