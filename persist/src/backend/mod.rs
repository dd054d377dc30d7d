//! Storage backends: where a row is written and where the state is loaded from.
//!
//! Both backends hold the same tables (the schema lives in `sql/`) and are driven only by the
//! persistence thread, so neither needs to be shareable between threads, only movable.

pub mod mysql;
pub mod mysql_lanes;
pub mod sqlite;

use std::path::PathBuf;

use crate::model::{ChatRow, MessageRow, RelationRow, UserRow};
use crate::record::WriteRecord;
use crate::PersistError;

/// Which store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded store: a SQLite database in this directory.
    Sqlite { dir: PathBuf },
    /// A MySQL 8 / MariaDB 10.6+ database, `mysql://user:pass@host:port/db`, written over
    /// `writers` connections at once (see [`mysql_lanes`]).
    Mysql { url: String, writers: usize },
}

/// One item of the stored state, streamed by [`Backend::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    User(UserRow),
    Relation(RelationRow),
    Chat(ChatRow),
    /// A message stored while its receiver was offline (status `send`), oldest first.
    Undelivered(MessageRow),
}

/// What [`Backend::load`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSummary {
    pub users: u64,
    pub relations: u64,
    pub chats: u64,
    pub undelivered: u64,
    /// The largest message id ever stored (0 if none): new ids start above it.
    pub max_message_id: u64,
}

/// A database the persistence thread can write to.
pub trait Backend: Send {
    /// Streams the whole stored state into `sink`: users, then relations, chat rows and
    /// undelivered messages (oldest first).
    fn load(&mut self, sink: &mut dyn FnMut(Loaded)) -> Result<LoadSummary, PersistError>;

    /// Writes `batch` in one transaction: either every record is committed or none is.
    fn write_batch(&mut self, batch: &[WriteRecord]) -> Result<(), PersistError>;

    /// Gets ready to try again after a failed [`Backend::write_batch`] (for example by
    /// reconnecting). The default does nothing.
    fn reset(&mut self) -> Result<(), PersistError> {
        Ok(())
    }

    /// A human description for logs, with any password masked.
    fn describe(&self) -> String;
}

/// Opens (creating and migrating as needed) the configured store.
pub fn open(config: &StoreConfig) -> Result<Box<dyn Backend>, PersistError> {
    match config {
        StoreConfig::Sqlite { dir } => Ok(Box::new(sqlite::SqliteBackend::open(dir)?)),
        StoreConfig::Mysql { url, writers } => {
            Ok(Box::new(mysql_lanes::MysqlLanes::open(url, *writers)?))
        }
    }
}
