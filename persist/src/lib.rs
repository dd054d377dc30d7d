//! Persistence for corechat: one thread, one bounded queue, batched transactions.
//!
//! Shards never talk to the database. They push [`record::WriteRecord`]s into the
//! [`queue::PersistQueue`]; the persistence thread ([`thread`]) drains it in batches, writes
//! each batch in one transaction through a [`Backend`], and only then acknowledges the records
//! that asked for it (group commit). At start, [`Backend::load`] streams the stored state so
//! the engine can hand each user to its shard.
//!
//! Where a row is written: `backend/sqlite.rs` (the embedded default) and `backend/mysql.rs`.

pub mod backend;
pub mod model;
pub mod queue;
pub mod record;
pub mod thread;

pub use backend::{open, Backend, LoadSummary, Loaded, StoreConfig};
pub use queue::{AckSink, PersistQueue};
pub use record::{Ack, Envelope, WriteRecord};
pub use thread::{spawn, BatchConfig};

/// What can go wrong between the engine and its database.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot open the embedded store at {path}: {source}")]
    OpenSqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("embedded store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot connect to {url}: {cause}")]
    ConnectMysql { url: String, cause: String },
    #[error("mysql: {0}")]
    Mysql(#[from] mysql::Error),
    #[error("database URL {url}: {cause}")]
    BadUrl { url: String, cause: String },
    #[error("migration {version} ({name}) failed: {cause}")]
    Migration {
        version: u32,
        name: String,
        cause: String,
    },
    #[error("the database holds data the engine cannot read: {0}")]
    BadData(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl PersistError {
    /// Would writing the same records fail again, whatever the state of the connection? True
    /// for data the database refuses (a value out of range, too long, a broken constraint),
    /// false for lost connections, lock waits, deadlocks and the like, which a retry cures.
    pub fn is_permanent(&self) -> bool {
        match self {
            PersistError::Mysql(mysql::Error::MySqlError(e)) => matches!(
                e.code,
                // bad null, duplicate key, out of range, truncated, bad datetime, bad string,
                // too long, foreign key, check constraint, value out of range
                1048 | 1062 | 1264 | 1265 | 1292 | 1366 | 1406 | 1451 | 1452 | 3819 | 4025 | 1690
            ),
            PersistError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
            ),
            PersistError::BadData(_) => true,
            _ => false,
        }
    }
}
