//! The embedded store: one SQLite database file, written only by the persistence thread.
//!
//! Durability comes first: an acknowledged message must survive a power loss, so the database
//! runs in WAL mode with `synchronous=FULL` (every commit is fsynced). The cost of that fsync
//! is paid once per batch, not once per record, because the persistence thread groups records
//! into one transaction (group commit).
//!
//! Every value reaches SQLite as a bound parameter, through statements kept in rusqlite's
//! statement cache: nothing is ever spliced into SQL text (the legacy server's injection
//! holes are not repeated), and a statement is parsed once per connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corechat_sql::Migration;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::backend::{Backend, LoadSummary, Loaded};
use crate::model::{ChatRow, MessageRow, MessageStatus, Relation, RelationRow, UserRow};
use crate::record::WriteRecord;
use crate::PersistError;

/// The database file inside the configured directory.
const DB_FILE: &str = "corechat.db";

/// How long a statement waits for a lock held by another connection (an operator's `sqlite3`
/// shell, a backup tool) before failing; the persistence thread then retries the batch.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Room for every statement below and the load queries, with margin: an evicted statement
/// would be re-parsed on every batch.
const STATEMENT_CACHE: usize = 32;

/// The migrations bookkeeping table. Created by the backend rather than by a migration,
/// because it must exist before the first migration can be looked up in it.
const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS corechat_schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

/// `ON CONFLICT DO NOTHING`: a user already there is the effect of a retried batch whose first
/// commit did succeed. Failing on it would block the persistence thread forever.
const INSERT_USER: &str = "INSERT INTO m_user
    (user_id, user_password, user_phone, user_name, user_email, user_avatar, user_status,
     user_created)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (user_id) DO NOTHING";

const SET_PASSWORD: &str = "UPDATE m_user SET user_password = ?2 WHERE user_id = ?1";

const UPSERT_RELATION: &str = "INSERT INTO m_friends_relation
    (user_id, friend_id, friend_relation, created_relation, requested_by)
    VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (user_id, friend_id) DO UPDATE SET
        friend_relation = excluded.friend_relation,
        created_relation = excluded.created_relation,
        requested_by = excluded.requested_by";

const DELETE_RELATION: &str =
    "DELETE FROM m_friends_relation WHERE user_id = ?1 AND friend_id = ?2";

const UPSERT_CHAT: &str = "INSERT INTO m_chatlist
    (user_id, comm_id, chat_type, last_message, last_message_type, last_time, unread_count,
     chat_status)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (user_id, comm_id) DO UPDATE SET
        chat_type = excluded.chat_type,
        last_message = excluded.last_message,
        last_message_type = excluded.last_message_type,
        last_time = excluded.last_time,
        unread_count = excluded.unread_count,
        chat_status = excluded.chat_status";

const DELETE_CHAT: &str = "DELETE FROM m_chatlist WHERE user_id = ?1 AND comm_id = ?2";

/// Ids come from the engine, so a conflict can only be this very message written by a batch
/// whose commit succeeded although its result was lost: skipping it keeps retries idempotent.
const INSERT_MESSAGE: &str = "INSERT INTO m_friends_message
    (message_id, sender_id, receiver_id, chat_type, message_body, message_type, file_path,
     message_status, message_timestamp)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (message_id) DO NOTHING";

const SET_MESSAGE_STATUS: &str =
    "UPDATE m_friends_message SET message_status = ?2 WHERE message_id = ?1";

/// The unary `+` keeps SQLite off the sender index (every message the sender ever wrote,
/// an ever-growing range) and on (receiver_id, message_status), which holds only the
/// receiver's still-unread messages.
const MARK_CONVERSATION_READ: &str = "UPDATE m_friends_message SET message_status = 'read'
    WHERE receiver_id = ?1 AND +sender_id = ?2 AND message_status = 'received'";

/// Run once per direction: two equality lookups use the indexes, where an `OR` of both
/// directions might not.
const MARK_DIRECTION_DELETED: &str = "UPDATE m_friends_message SET message_status = 'delete'
    WHERE sender_id = ?1 AND receiver_id = ?2 AND message_status <> 'delete'";

const LOAD_USERS: &str = "SELECT user_id, user_password, user_phone, user_name, user_email,
    user_avatar, user_status, user_created FROM m_user";

const LOAD_RELATIONS: &str = "SELECT user_id, friend_id, friend_relation, created_relation,
    requested_by FROM m_friends_relation";

const LOAD_CHATS: &str = "SELECT user_id, comm_id, chat_type, last_message, last_message_type,
    last_time, unread_count, chat_status FROM m_chatlist";

/// The literal `'send'` (not a parameter) lets SQLite use the partial index
/// `idx_friends_message_undelivered` instead of scanning the whole history.
const LOAD_UNDELIVERED: &str = "SELECT message_id, sender_id, receiver_id, chat_type,
    message_body, message_type, file_path, message_timestamp
    FROM m_friends_message WHERE message_status = 'send' ORDER BY message_id";

const MAX_MESSAGE_ID: &str = "SELECT MAX(message_id) FROM m_friends_message";

/// The embedded store. Owned and driven by the persistence thread only.
#[derive(Debug)]
pub struct SqliteBackend {
    conn: Connection,
    path: PathBuf,
    /// Held only for its `Drop`, which stops the checkpoint thread with the backend.
    _checkpointer: Option<Checkpointer>,
}

/// Copies the write-ahead log back into the database file from a thread of its own.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses the threshold, so every
/// thousandth commit or so the persistence thread would stall for the time it takes to write
/// pages back and fsync the file, and every acknowledgement waiting on it with it. A PASSIVE
/// checkpoint on a second connection never blocks the writer.
#[derive(Debug)]
struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(200);

    fn start(path: &Path) -> Result<Checkpointer, PersistError> {
        let conn = connect(path)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("corechat-checkpoint".into())
            .spawn(move || {
                let mut last_error = false;
                while !flag.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::park_timeout(Self::EVERY);
                    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    match (r, last_error) {
                        (Err(e), false) => {
                            ftlog::warn!("persistence: checkpoint failed: {e}");
                            last_error = true;
                        }
                        (Ok(()), true) => last_error = false,
                        _ => {}
                    }
                }
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl SqliteBackend {
    /// Creates `dir` if needed, opens (or creates) `dir/corechat.db`, configures it for
    /// durability and applies the migrations it has not seen yet.
    pub fn open(dir: &Path) -> Result<Self, PersistError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let mut conn = connect(&path)?;
        migrate(&mut conn, corechat_sql::SQLITE)?;
        // The checkpoint thread does the log's write-back (see `Checkpointer`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Some(Checkpointer::start(&path)?);
        Ok(SqliteBackend {
            conn,
            path,
            _checkpointer: checkpointer,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the file and sets the connection up; shared by [`SqliteBackend::open`] and
/// [`Backend::reset`].
fn connect(path: &Path) -> Result<Connection, PersistError> {
    let wrap = |source| PersistError::OpenSqlite {
        path: path.display().to_string(),
        source,
    };
    // Only the persistence thread (or, at start, the main thread before it) uses the
    // connection, never two threads at once: SQLite's per-connection mutex is pure cost.
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_URI
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(wrap)?;
    // Before the pragmas: switching to WAL needs a lock another process may briefly hold.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(wrap)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(wrap)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems cannot hold the WAL's shared memory. A rollback journal with
        // synchronous=FULL is just as durable, only slower, so this is worth a warning only.
        ftlog::warn!(
            "persistence: {} stays in journal mode {mode}: WAL is not available",
            path.display()
        );
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(wrap)?;
    // Message inserts touch their indexes in user-id order, i.e. all over the file: a page
    // cache of 64 MiB (default 2 MiB) keeps their upper levels in memory.
    conn.pragma_update(None, "cache_size", -65_536)
        .map_err(wrap)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(wrap)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Applies each migration not yet recorded in `corechat_schema_version`, each in its own
/// transaction together with its record, so that a migration is either fully applied and
/// recorded or not at all (SQLite's DDL is transactional).
fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<(), PersistError> {
    conn.execute_batch(CREATE_VERSION_TABLE)
        .map_err(|e| PersistError::Migration {
            version: 0,
            name: "corechat_schema_version".into(),
            cause: e.to_string(),
        })?;
    for m in migrations {
        let applied = apply_migration(conn, m).map_err(|cause| PersistError::Migration {
            version: m.version,
            name: m.name.into(),
            cause,
        })?;
        if applied {
            ftlog::info!("persistence: applied migration {} ({})", m.version, m.name);
        }
    }
    Ok(())
}

/// Applies one migration unless it is recorded already; says whether it applied it.
fn apply_migration(conn: &mut Connection, m: &Migration) -> Result<bool, String> {
    let err = |e: rusqlite::Error| e.to_string();
    // IMMEDIATE: two processes opening the same fresh database cannot both decide to migrate.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let known = tx
        .query_row(
            "SELECT 1 FROM corechat_schema_version WHERE version = ?1",
            [m.version],
            |_| Ok(()),
        )
        .optional()
        .map_err(err)?;
    if known.is_some() {
        return Ok(false);
    }
    for stmt in corechat_sql::statements(m.sql) {
        tx.execute_batch(&stmt).map_err(|e| {
            let head = stmt.lines().next().unwrap_or_default();
            format!("{e} (in statement `{head}`)")
        })?;
    }
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    tx.execute(
        "INSERT INTO corechat_schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)",
        params![m.version, m.name, now],
    )
    .map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(true)
}

/// A nullable TEXT column as a string: the legacy schema allows NULL almost everywhere, and
/// the client reads a missing value as `""` anyway.
fn text(row: &Row<'_>, idx: usize) -> rusqlite::Result<String> {
    Ok(row.get::<_, Option<String>>(idx)?.unwrap_or_default())
}

/// A message id as stored (SQLite integers are signed) back to the engine's `u64`.
fn message_id(raw: i64) -> Result<u64, PersistError> {
    u64::try_from(raw).map_err(|_| PersistError::BadData(format!("negative message_id {raw}")))
}

/// The legacy chat list could only store the misspelt `vedio`; the engine and the client
/// speak `video`.
fn normalize_message_type(t: Option<String>) -> Option<String> {
    match t.as_deref() {
        Some("vedio") => Some("video".to_string()),
        _ => t,
    }
}

/// Writes one record inside the batch's transaction.
fn apply_record(tx: &Transaction<'_>, record: &WriteRecord) -> rusqlite::Result<()> {
    match record {
        WriteRecord::InsertUser(u) => {
            tx.prepare_cached(INSERT_USER)?.execute(params![
                u.user_id, u.password, u.phone, u.name, u.email, u.avatar, u.status, u.created
            ])?;
        }
        WriteRecord::SetPassword { user_id, password } => {
            tx.prepare_cached(SET_PASSWORD)?
                .execute(params![user_id, password])?;
        }
        WriteRecord::UpsertRelation(r) => {
            tx.prepare_cached(UPSERT_RELATION)?.execute(params![
                r.user_id,
                r.friend_id,
                r.relation.as_str(),
                r.created,
                r.requested_by
            ])?;
        }
        WriteRecord::DeleteRelation { user_id, friend_id } => {
            tx.prepare_cached(DELETE_RELATION)?
                .execute(params![user_id, friend_id])?;
        }
        WriteRecord::UpsertChat(c) => {
            tx.prepare_cached(UPSERT_CHAT)?.execute(params![
                c.user_id,
                c.comm_id,
                c.chat_type,
                c.last_message,
                c.last_message_type,
                c.last_time,
                c.unread_count,
                c.chat_status
            ])?;
        }
        WriteRecord::DeleteChat { user_id, comm_id } => {
            tx.prepare_cached(DELETE_CHAT)?
                .execute(params![user_id, comm_id])?;
        }
        WriteRecord::InsertMessage(m) => {
            tx.prepare_cached(INSERT_MESSAGE)?.execute(params![
                m.message_id,
                m.sender_id,
                m.receiver_id,
                m.chat_type,
                m.body,
                m.message_type,
                m.file_path,
                m.status.as_str(),
                m.timestamp
            ])?;
        }
        WriteRecord::SetMessageStatus { ids, status, .. } => {
            let mut stmt = tx.prepare_cached(SET_MESSAGE_STATUS)?;
            for id in ids {
                stmt.execute(params![id, status.as_str()])?;
            }
        }
        WriteRecord::MarkConversationRead {
            receiver_id,
            sender_id,
        } => {
            tx.prepare_cached(MARK_CONVERSATION_READ)?
                .execute(params![receiver_id, sender_id])?;
        }
        WriteRecord::MarkConversationDeleted { a, b } => {
            let mut stmt = tx.prepare_cached(MARK_DIRECTION_DELETED)?;
            stmt.execute(params![a, b])?;
            stmt.execute(params![b, a])?;
        }
        WriteRecord::Barrier => {}
    }
    Ok(())
}

impl Backend for SqliteBackend {
    fn load(&mut self, sink: &mut dyn FnMut(Loaded)) -> Result<LoadSummary, PersistError> {
        // One read transaction: every part of the state comes from the same snapshot.
        let tx = self.conn.transaction()?;
        let mut summary = LoadSummary::default();

        {
            let mut stmt = tx.prepare(LOAD_USERS)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                sink(Loaded::User(UserRow {
                    user_id: text(row, 0)?,
                    password: text(row, 1)?,
                    phone: text(row, 2)?,
                    name: text(row, 3)?,
                    email: text(row, 4)?,
                    avatar: text(row, 5)?,
                    status: text(row, 6)?,
                    created: text(row, 7)?,
                }));
                summary.users += 1;
            }
        }

        {
            let mut stmt = tx.prepare(LOAD_RELATIONS)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let user_id = text(row, 0)?;
                let friend_id = text(row, 1)?;
                // NULL is what the legacy column's default would have been: 'pending'.
                let raw: Option<String> = row.get(2)?;
                let relation = match raw.as_deref() {
                    None => Relation::Pending,
                    Some(s) => Relation::parse(s).ok_or_else(|| {
                        PersistError::BadData(format!(
                            "relation {user_id} -> {friend_id} has friend_relation {s:?}"
                        ))
                    })?,
                };
                sink(Loaded::Relation(RelationRow {
                    user_id,
                    friend_id,
                    relation,
                    created: text(row, 3)?,
                    requested_by: row.get(4)?,
                }));
                summary.relations += 1;
            }
        }

        {
            let mut stmt = tx.prepare(LOAD_CHATS)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                sink(Loaded::Chat(ChatRow {
                    user_id: text(row, 0)?,
                    comm_id: text(row, 1)?,
                    chat_type: text(row, 2)?,
                    last_message: text(row, 3)?,
                    last_message_type: normalize_message_type(row.get(4)?),
                    last_time: text(row, 5)?,
                    unread_count: row.get::<_, Option<i64>>(6)?.unwrap_or(0),
                    chat_status: text(row, 7)?,
                }));
                summary.chats += 1;
            }
        }

        {
            let mut stmt = tx.prepare(LOAD_UNDELIVERED)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                sink(Loaded::Undelivered(MessageRow {
                    message_id: message_id(row.get(0)?)?,
                    sender_id: text(row, 1)?,
                    receiver_id: text(row, 2)?,
                    chat_type: text(row, 3)?,
                    body: text(row, 4)?,
                    message_type: text(row, 5)?,
                    file_path: text(row, 6)?,
                    status: MessageStatus::Send,
                    timestamp: text(row, 7)?,
                }));
                summary.undelivered += 1;
            }
        }

        let max: Option<i64> = tx.query_row(MAX_MESSAGE_ID, [], |row| row.get(0))?;
        summary.max_message_id = match max {
            Some(raw) => message_id(raw)?,
            None => 0,
        };
        tx.commit()?;
        Ok(summary)
    }

    fn write_batch(&mut self, batch: &[WriteRecord]) -> Result<(), PersistError> {
        if batch.is_empty() {
            return Ok(());
        }
        // IMMEDIATE takes the write lock up front, so a competing connection makes the
        // batch wait (busy_timeout) at BEGIN instead of failing halfway through it.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for record in batch {
            apply_record(&tx, record)?;
        }
        // On any error above, dropping `tx` rolls the whole batch back.
        tx.commit()?;
        Ok(())
    }

    /// Reopens the connection: whatever state the failed attempt left it in (an unfinished
    /// transaction whose rollback failed, a stale file handle after the disk came back), the
    /// next attempt starts from a fresh one. On failure the old connection is kept.
    fn reset(&mut self) -> Result<(), PersistError> {
        let conn = connect(&self.path)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        self.conn = conn;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserRow {
        UserRow {
            user_id: id.into(),
            password: format!("pw-{id}"),
            phone: id.into(),
            name: format!("name {id}"),
            email: format!("{id}@an.com"),
            avatar: "/default.jpg".into(),
            status: "inactive".into(),
            created: "2024-01-02 03:04:05".into(),
        }
    }

    fn relation(a: &str, b: &str, rel: Relation, by: Option<&str>) -> RelationRow {
        RelationRow {
            user_id: a.into(),
            friend_id: b.into(),
            relation: rel,
            created: "2024-01-02 03:04:05".into(),
            requested_by: by.map(str::to_string),
        }
    }

    fn chat(a: &str, b: &str, kind: Option<&str>, unread: i64, status: &str) -> ChatRow {
        ChatRow {
            user_id: a.into(),
            comm_id: b.into(),
            chat_type: "friend".into(),
            last_message: format!("last {a}->{b}"),
            last_message_type: kind.map(str::to_string),
            last_time: "2024-01-02 03:04:06".into(),
            unread_count: unread,
            chat_status: status.into(),
        }
    }

    fn message(id: u64, from: &str, to: &str, status: MessageStatus) -> MessageRow {
        MessageRow {
            message_id: id,
            sender_id: from.into(),
            receiver_id: to.into(),
            chat_type: "friend".into(),
            body: format!("body {id}"),
            message_type: "text".into(),
            file_path: " ".into(),
            status,
            timestamp: "2024-01-02 03:04:07".into(),
        }
    }

    fn load_all(b: &mut SqliteBackend) -> (Vec<Loaded>, LoadSummary) {
        let mut items = Vec::new();
        let summary = b.load(&mut |l| items.push(l)).unwrap();
        (items, summary)
    }

    fn statuses(dir: &Path) -> Vec<(i64, String)> {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        let mut stmt = conn
            .prepare("SELECT message_id, message_status FROM m_friends_message ORDER BY 1")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    }

    #[test]
    fn round_trip_of_every_record_kind() {
        use MessageStatus::*;
        let dir = tempfile::tempdir().unwrap();
        let mut b = SqliteBackend::open(dir.path()).unwrap();
        assert_eq!(
            b.describe(),
            format!("sqlite:{}", dir.path().join(DB_FILE).display())
        );
        let (items, summary) = load_all(&mut b);
        assert!(items.is_empty());
        assert_eq!(summary, LoadSummary::default());

        let mut evil = user("u3");
        evil.name = "x'); DROP TABLE m_user; --".into();
        let batch = vec![
            WriteRecord::InsertUser(user("u1")),
            WriteRecord::InsertUser(user("u2")),
            WriteRecord::InsertUser(evil.clone()),
            WriteRecord::SetPassword {
                user_id: "u1".into(),
                password: "$argon2id$v=19$hash".into(),
            },
            WriteRecord::UpsertRelation(relation("u1", "u2", Relation::Pending, Some("u1"))),
            WriteRecord::UpsertRelation(relation("u2", "u1", Relation::Pending, Some("u1"))),
            WriteRecord::UpsertRelation(relation("u1", "u3", Relation::Pending, None)),
            WriteRecord::UpsertRelation(relation("u1", "u2", Relation::Accepted, Some("u1"))),
            WriteRecord::DeleteRelation {
                user_id: "u1".into(),
                friend_id: "u3".into(),
            },
            WriteRecord::UpsertChat(chat("u1", "u2", Some("text"), 0, "close")),
            WriteRecord::UpsertChat(chat("u1", "u2", Some("video"), 2, "chatting")),
            WriteRecord::UpsertChat(chat("u2", "u1", None, 0, "chatting")),
            WriteRecord::UpsertChat(chat("u1", "u3", Some("text"), 0, "chatting")),
            WriteRecord::DeleteChat {
                user_id: "u1".into(),
                comm_id: "u3".into(),
            },
            // Inserted out of id order: the load must still come back oldest first.
            WriteRecord::InsertMessage(message(5, "u1", "u2", Send)),
            WriteRecord::InsertMessage(message(3, "u2", "u1", Send)),
            WriteRecord::InsertMessage(message(9, "u1", "u2", Received)),
            WriteRecord::InsertMessage(message(7, "u2", "u1", Received)),
            WriteRecord::InsertMessage(message(11, "u1", "u3", Send)),
            WriteRecord::InsertMessage(message(12, "u3", "u1", Received)),
            WriteRecord::InsertMessage(message(20, "u2", "u3", Received)),
            WriteRecord::SetMessageStatus {
                receiver_id: "u1".into(),
                ids: vec![7],
                status: Received,
            },
            WriteRecord::SetMessageStatus {
                receiver_id: "u2".into(),
                ids: vec![5],
                status: Received,
            },
            WriteRecord::MarkConversationRead {
                receiver_id: "u2".into(),
                sender_id: "u1".into(),
            },
            WriteRecord::MarkConversationDeleted {
                a: "u3".into(),
                b: "u1".into(),
            },
        ];
        b.write_batch(&batch).unwrap();
        // The same batch again, as after a commit whose result was lost: must not fail.
        b.write_batch(&batch).unwrap();
        drop(b);

        // A row as the legacy server could leave it: misspelt 'vedio', NULL columns.
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute(
                "INSERT INTO m_chatlist (user_id, comm_id, chat_type, last_message_type)
                 VALUES ('u2', 'u3', 'friend', 'vedio')",
                [],
            )
            .unwrap();
        }

        let mut b = SqliteBackend::open(dir.path()).unwrap();
        let (items, summary) = load_all(&mut b);
        assert_eq!(
            summary,
            LoadSummary {
                users: 3,
                relations: 2,
                chats: 3,
                undelivered: 1,
                max_message_id: 20,
            }
        );

        // Streamed in order: users, relations, chats, undelivered.
        let rank = |l: &Loaded| match l {
            Loaded::User(_) => 0,
            Loaded::Relation(_) => 1,
            Loaded::Chat(_) => 2,
            Loaded::Undelivered(_) => 3,
        };
        assert!(items.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));

        let mut users: Vec<UserRow> = items
            .iter()
            .filter_map(|l| match l {
                Loaded::User(u) => Some(u.clone()),
                _ => None,
            })
            .collect();
        users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        let mut u1 = user("u1");
        u1.password = "$argon2id$v=19$hash".into();
        assert_eq!(users, vec![u1, user("u2"), evil]);

        let mut relations: Vec<RelationRow> = items
            .iter()
            .filter_map(|l| match l {
                Loaded::Relation(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        relations.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        assert_eq!(
            relations,
            vec![
                relation("u1", "u2", Relation::Accepted, Some("u1")),
                relation("u2", "u1", Relation::Pending, Some("u1")),
            ]
        );

        let mut chats: Vec<ChatRow> = items
            .iter()
            .filter_map(|l| match l {
                Loaded::Chat(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        chats.sort_by(|a, b| (&a.user_id, &a.comm_id).cmp(&(&b.user_id, &b.comm_id)));
        let legacy = ChatRow {
            user_id: "u2".into(),
            comm_id: "u3".into(),
            chat_type: "friend".into(),
            last_message: String::new(),
            last_message_type: Some("video".into()),
            last_time: String::new(),
            unread_count: 0,
            chat_status: String::new(),
        };
        assert_eq!(
            chats,
            vec![
                chat("u1", "u2", Some("video"), 2, "chatting"),
                chat("u2", "u1", None, 0, "chatting"),
                legacy,
            ]
        );

        let undelivered: Vec<MessageRow> = items
            .iter()
            .filter_map(|l| match l {
                Loaded::Undelivered(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(undelivered, vec![message(3, "u2", "u1", Send)]);

        assert_eq!(
            statuses(dir.path()),
            vec![
                (3, "send".to_string()),
                (5, "read".to_string()),
                (7, "received".to_string()),
                (9, "read".to_string()),
                (11, "delete".to_string()),
                (12, "delete".to_string()),
                (20, "received".to_string()),
            ]
        );
    }

    #[test]
    fn migrations_run_once_and_configure_durability() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            let b = SqliteBackend::open(dir.path()).unwrap();
            let mode: String = b
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode.to_lowercase(), "wal");
            let sync: i64 = b
                .conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(sync, 2, "synchronous must be FULL");
        }
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let versions: Vec<(u32, String)> = conn
            .prepare("SELECT version, name FROM corechat_schema_version ORDER BY version")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<(u32, String)> = corechat_sql::SQLITE
            .iter()
            .map(|m| (m.version, m.name.to_string()))
            .collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn a_failing_migration_is_reported_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let bad = [Migration {
            version: 7,
            name: "broken",
            sql: "CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;\n",
        }];
        match migrate(&mut conn, &bad) {
            Err(PersistError::Migration { version, name, .. }) => {
                assert_eq!((version, name.as_str()), (7, "broken"));
            }
            other => panic!("expected a migration error, got {other:?}"),
        }
        let leftovers: i64 = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM corechat_schema_version)
                      + (SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn a_failing_batch_commits_nothing_and_the_backend_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = SqliteBackend::open(dir.path()).unwrap();
        let batch = vec![
            WriteRecord::InsertUser(user("u1")),
            // Violates the CHECK on chat_status.
            WriteRecord::UpsertChat(chat("u1", "u2", None, 0, "bogus")),
        ];
        assert!(b.write_batch(&batch).is_err());
        b.reset().unwrap();
        b.write_batch(&[WriteRecord::InsertUser(user("u2"))])
            .unwrap();
        let (items, summary) = load_all(&mut b);
        assert_eq!(summary.users, 1);
        assert_eq!(items, vec![Loaded::User(user("u2"))]);
    }
}
