//! One batch written over several MySQL connections at once ("lanes").
//!
//! Why: with one connection the database works on one statement at a time while the batch
//! waits on round trips, parsing and row locks, and its group commit has only one transaction
//! to flush per fsync. Measured on the 2-core reference machine (`corechat-admin write-bench`,
//! see `docs/benchmarks.md`), two connections wrote 1.4x the messages per second of one.
//!
//! How it stays correct:
//! * A batch is split by [`WriteRecord::lane_key`]: a message and its status changes go with
//!   its receiver, a chat row with its owner. Records of one key keep their order within one
//!   lane, records of different keys touch different rows, so the lanes commute.
//! * A batch with any record that spans users (an account, a friendship, a deleted
//!   conversation) is written whole on the first lane, as with a single connection. Those are
//!   rare next to messages, and this keeps every cross-user ordering rule of the batch.
//! * Each lane commits its own transaction, so a failure can leave some lanes committed and
//!   others not. The persistence thread then retries the whole batch, which is safe because
//!   every statement is idempotent (see `mysql.rs`), and nothing is acknowledged until every
//!   lane has committed. A crash in between leaves committed rows nobody was told about, which
//!   is also what a crash between a commit and its acknowledgement leaves.
//! * Lanes must not lock each other out. Their connections run READ COMMITTED (see
//!   `read_committed` in `mysql.rs`), which takes no gap locks; and the retry after any
//!   failure goes whole to one connection, so even a deadlock that would repeat itself
//!   (the same statements, in parallel, again) cannot stall the writer.
//! * Small batches (under [`PARALLEL_MIN`] records) take one lane: at low load a thread
//!   hand-off would cost more latency than it saves.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::backend::mysql::{ConnectionIdWatch, MysqlBackend};
use crate::backend::{Backend, LoadSummary, Loaded};
use crate::record::WriteRecord;
use crate::PersistError;

/// Batches smaller than this are written on one connection.
pub const PARALLEL_MIN: usize = 64;

/// Several connections to one MySQL database, used together as one [`Backend`].
pub struct MysqlLanes {
    lanes: Vec<MysqlBackend>,
    /// The last write failed: the next one (the persistence thread's retry of the same batch)
    /// goes whole to one connection, which cannot deadlock with itself, so a retry always
    /// makes progress even if the lanes' statements happen to lock each other out.
    retrying: bool,
}

/// The lane of a key. `DefaultHasher::new()` has fixed keys, so a key maps to the same lane
/// for the life of the process, which is all the ordering argument needs.
fn lane_of(key: &str, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

impl MysqlLanes {
    /// Opens `writers` connections (at least one); the first open runs the migrations.
    pub fn open(url: &str, writers: usize) -> Result<Self, PersistError> {
        let n = writers.max(1);
        let mut lanes = Vec::with_capacity(n);
        for _ in 0..n {
            lanes.push(MysqlBackend::open(url)?);
        }
        Ok(MysqlLanes {
            lanes,
            retrying: false,
        })
    }

    /// How many connections write.
    pub fn writers(&self) -> usize {
        self.lanes.len()
    }

    /// Handles that follow each lane's server-side connection id across reconnections (for
    /// tests that kill connections, and for operators matching the process list).
    pub fn connection_id_watches(&self) -> Vec<ConnectionIdWatch> {
        self.lanes
            .iter()
            .map(MysqlBackend::connection_id_watch)
            .collect()
    }

    /// Writes `batch` spread over the lanes, each lane its own transaction, all at once.
    fn write_split(&mut self, batch: &[WriteRecord]) -> Result<(), PersistError> {
        let n = self.lanes.len();
        let mut parts: Vec<Vec<&WriteRecord>> = vec![Vec::with_capacity(batch.len() / n + 8); n];
        for r in batch {
            if let Some(key) = r.lane_key() {
                parts[lane_of(key, n)].push(r);
            }
        }
        let results: Vec<Result<(), PersistError>> = std::thread::scope(|scope| {
            let mut jobs = self.lanes.iter_mut().zip(&parts);
            let first = jobs.next();
            let mut spawned = Vec::new();
            let mut results = Vec::with_capacity(n);
            for (lane, part) in jobs.filter(|(_, p)| !p.is_empty()) {
                let work = move || lane.write_records(part.iter().copied());
                match std::thread::Builder::new()
                    .name("corechat-lane".into())
                    .spawn_scoped(scope, work)
                {
                    Ok(handle) => spawned.push(handle),
                    // No thread to be had (a limit reached): the records are still written,
                    // one lane after the other, by the next attempt of the whole batch.
                    Err(e) => results.push(Err(PersistError::Io(e))),
                }
            }
            if let Some((lane, part)) = first {
                results.push(lane.write_records(part.iter().copied()));
            }
            for handle in spawned {
                results.push(handle.join().unwrap_or_else(|_| {
                    Err(PersistError::Io(std::io::Error::other(
                        "a MySQL lane thread panicked",
                    )))
                }));
            }
            results
        });
        // A transient error first: the batch is then retried as is, and a lane that refuses
        // its data for good gets its turn at the next attempt, where it is isolated.
        let mut permanent = None;
        for r in results {
            match r {
                Ok(()) => {}
                Err(e) if e.is_permanent() => permanent = permanent.or(Some(e)),
                Err(e) => return Err(e),
            }
        }
        permanent.map_or(Ok(()), Err)
    }

    /// Whether `batch` can be spread over the lanes.
    fn splittable(&self, batch: &[WriteRecord]) -> bool {
        self.lanes.len() > 1
            && batch.len() >= PARALLEL_MIN
            && batch
                .iter()
                .all(|r| r.lane_key().is_some() || matches!(r, WriteRecord::Barrier))
    }
}

impl Backend for MysqlLanes {
    fn load(&mut self, sink: &mut dyn FnMut(Loaded)) -> Result<LoadSummary, PersistError> {
        self.lanes[0].load(sink)
    }

    fn write_batch(&mut self, batch: &[WriteRecord]) -> Result<(), PersistError> {
        let result = if self.retrying || !self.splittable(batch) {
            self.lanes[0].write_records(batch)
        } else {
            self.write_split(batch)
        };
        self.retrying = result.is_err();
        result
    }

    fn reset(&mut self) -> Result<(), PersistError> {
        let mut first = Ok(());
        for lane in &mut self.lanes {
            if let Err(e) = lane.reset() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    fn describe(&self) -> String {
        match self.lanes.len() {
            1 => self.lanes[0].describe(),
            n => format!("{} ({n} connections)", self.lanes[0].describe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_takes_the_same_lane_and_keys_spread() {
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            let key = format!("{}", 10_000 + i);
            let lane = lane_of(&key, 4);
            assert_eq!(lane, lane_of(&key, 4));
            seen[lane] += 1;
        }
        assert!(seen.iter().all(|&c| c > 150), "{seen:?}");
    }
}
