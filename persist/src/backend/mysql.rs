//! The MySQL 8 / MariaDB 10.6+ backend: runs on a database the old C++ server left, or on a
//! fresh one, with the same tables (`sql/mysql/`).
//!
//! Only the persistence thread uses it, so it holds one plain connection (no pool). What it
//! does, and why:
//!
//! * **Migrations** ([`corechat_sql::MYSQL`]) run at [`MysqlBackend::open`] (or through
//!   [`migrate`]), each once, recorded in `corechat_schema_version`, serialised between
//!   processes by a named lock. MySQL 8 has neither `ADD COLUMN IF NOT EXISTS` nor
//!   `CREATE INDEX IF NOT EXISTS`, and DDL commits implicitly, so a run that stopped halfway
//!   must be able to run again: every statement is either naturally repeatable (`MODIFY` to a
//!   definition, `CREATE TABLE IF NOT EXISTS`) or preceded by a guard comment
//!   `-- corechat:skip-if column|index|foreign-key TABLE.NAME` (for an `ADD`) or
//!   `-- corechat:skip-unless ...` (for a `DROP`) that this runner checks against
//!   `information_schema`. We chose guards over "tolerate error 1060/1061" so that a skip is
//!   deliberate and visible in [`schema_report`], never a swallowed error.
//! * **Writes** ([`Backend::write_batch`]): one transaction per batch, with few round trips.
//!   The batch is walked in order and cut into segments at every record that is not an
//!   `InsertMessage`, `UpsertChat` or `SetMessageStatus`. Inside a segment those three commute
//!   (different tables, no foreign key between them, status updates last-wins per id), so each
//!   segment becomes at most one multi-row `INSERT` of messages, one multi-row upsert of chat
//!   rows (same key coalesced, last wins) and one `UPDATE ... IN (...)` per status. A status
//!   update that precedes the insert of its message in the batch closes the segment, so the
//!   result is always the one of writing the records one by one, in order.
//! * **Retries**: the persistence thread retries a failed batch as is, including a batch whose
//!   `COMMIT` reached the server but whose answer was lost. Every statement is therefore
//!   idempotent: messages use `ON DUPLICATE KEY UPDATE message_id = message_id` (the primary
//!   key is their only unique key, so this cannot hide any other conflict, unlike
//!   `INSERT IGNORE`, which would also hide data errors), users `INSERT ... WHERE NOT EXISTS`
//!   on their id (a clash on the unique e-mail still fails loudly), and everything else sets
//!   absolute values.
//! * **Statements** are prepared with placeholders (values are never spliced into SQL) and
//!   cached by the driver per connection; multi-row statements only use row counts from a
//!   fixed set (4096, 1024, 256, 64, 16, 4, 1), so few distinct statements exist, and chunks
//!   stay under the 65,535 placeholder limit and a parameter budget derived from the server's
//!   `max_allowed_packet`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corechat_sql::Migration;
use mysql::prelude::Queryable;
use mysql::{AccessMode, Conn, IsolationLevel, Opts, OptsBuilder, Row, TxOpts, Value};

use crate::backend::{Backend, LoadSummary, Loaded};
use crate::model::{ChatRow, MessageRow, MessageStatus, Relation, RelationRow, UserRow};
use crate::record::WriteRecord;
use crate::PersistError;

/// How long to wait for the TCP connection: a server that does not answer in 5 s is down for
/// all practical purposes, and the caller (start-up or the retry loop) should say so.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalive, instead of a read timeout: a long migration (a table copy on a big legacy
/// table) or a slow commit must not be cut short, but a peer that vanished must be noticed,
/// or the persistence thread would wait forever on a dead socket. With these settings a dead
/// peer is detected after about 10 + 3 x 5 s.
const KEEPALIVE_IDLE_MS: u32 = 10_000;
const KEEPALIVE_INTERVAL_SECS: u32 = 5;
const KEEPALIVE_PROBES: u32 = 3;
/// Unacknowledged writes are given up after this long (Linux `TCP_USER_TIMEOUT`), for the
/// same reason.
const TCP_USER_TIMEOUT_MS: u32 = 30_000;

/// The driver caches prepared statements per connection. Every distinct SQL text we send is
/// in this cache: 7 chunk sizes x 3 multi-row kinds plus about a dozen single statements.
const STATEMENT_CACHE: usize = 64;

/// Row counts of multi-row statements. A fixed set keeps the number of distinct prepared
/// statements small (each arity is a different statement on the server), while any count is
/// written in a handful of statements (at most 3 per size, largest first).
const CHUNK_ROWS: [usize; 7] = [4096, 1024, 256, 64, 16, 4, 1];

/// The protocol's limit on placeholders in one prepared statement.
const MAX_PLACEHOLDERS: usize = 65_535;

/// The most parameter bytes put in one statement: large enough that a batch of ordinary
/// messages is one statement, small enough to stay well under any sane `max_allowed_packet`.
/// Lowered at connect time to half of the server's `max_allowed_packet` if that is smaller.
const PARAM_BUDGET: usize = 4 << 20;

/// Session settings applied on every (re)connection. Strict mode turns a value that does not
/// fit (too long, bad enum, bad date) into an error instead of silently truncating a chat
/// message. `NO_AUTO_VALUE_ON_ZERO` makes an id 0 an id like any other: the engine assigns
/// message ids, and the auto-increment counter must never replace one. UTC for `NOW()` (only
/// used in `corechat_schema_version.applied_at`); DATETIME columns hold the client's local
/// time strings unchanged.
const SESSION_INIT: [&str; 3] = [
    "SET NAMES utf8mb4",
    "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO'",
    "SET SESSION time_zone = '+00:00'",
];

const SCHEMA_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS corechat_schema_version (
  version    INT          NOT NULL,
  name       VARCHAR(100) NOT NULL,
  applied_at DATETIME     NOT NULL,
  PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// The seven tables of the legacy schema, to tell an empty database from a legacy one.
const LEGACY_TABLES: [&str; 7] = [
    "m_user",
    "m_friends_relation",
    "m_chatlist",
    "m_friends_message",
    "m_groups",
    "m_groups_relation",
    "m_media_file",
];

/// How long [`migrate`] waits for another process that is migrating the same database.
const MIGRATION_LOCK_WAIT_SECS: u32 = 60;

// ---------------------------------------------------------------------------------------------
// URLs and connections
// ---------------------------------------------------------------------------------------------

/// `url` with the password, if any, replaced by `***`, for logs and error messages.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..rest_start],
        &userinfo[..colon],
        &url[rest_start + at..]
    )
}

/// Parses `url` and adds this backend's connection settings.
fn connection_opts(url: &str, masked: &str) -> Result<Opts, PersistError> {
    let parsed = Opts::from_url(url).map_err(|e| PersistError::BadUrl {
        url: masked.to_string(),
        cause: e.to_string(),
    })?;
    if parsed.get_db_name().is_none_or(str::is_empty) {
        return Err(PersistError::BadUrl {
            url: masked.to_string(),
            cause: "the URL names no database (expected mysql://user:pass@host:port/database)"
                .into(),
        });
    }
    Ok(OptsBuilder::from_opts(parsed)
        .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
        .tcp_keepalive_time_ms(Some(KEEPALIVE_IDLE_MS))
        .tcp_keepalive_probe_interval_secs(Some(KEEPALIVE_INTERVAL_SECS))
        .tcp_keepalive_probe_count(Some(KEEPALIVE_PROBES))
        .tcp_user_timeout_ms(Some(TCP_USER_TIMEOUT_MS))
        .stmt_cache_size(STATEMENT_CACHE)
        .init(SESSION_INIT.to_vec())
        .into())
}

/// Opens one connection, with an error that names the (masked) URL and the cause.
fn connect(opts: &Opts, masked: &str) -> Result<Conn, PersistError> {
    Conn::new(opts.clone()).map_err(|e| PersistError::ConnectMysql {
        url: masked.to_string(),
        cause: e.to_string(),
    })
}

/// Makes the connection's transactions READ COMMITTED where that is allowed.
///
/// Why: under REPEATABLE READ an `UPDATE ... WHERE message_id IN (...)` that the optimizer runs
/// as a scan locks every row and gap it passes, including rows another writer connection
/// (`--db-writers`) is inserting; two such connections then deadlock, and a retry of the same
/// batch deadlocks the same way. READ COMMITTED locks only the rows a statement changes and
/// takes no gap locks. Nothing in the write path reads to decide what to write, so nothing
/// depends on the stronger level; the start-up load asks for REPEATABLE READ explicitly.
/// A server that logs statements (`log_bin` on with `binlog_format=STATEMENT`) refuses writes
/// under READ COMMITTED, so there the default level is kept.
fn read_committed(conn: &mut Conn) -> Result<(), PersistError> {
    let row: Option<(i64, String)> = conn.query_first("SELECT @@log_bin, @@binlog_format")?;
    let statement_logging = row
        .is_some_and(|(log_bin, format)| log_bin != 0 && format.eq_ignore_ascii_case("STATEMENT"));
    if statement_logging {
        ftlog::warn!(
            "mysql: binlog_format=STATEMENT: writer connections stay REPEATABLE READ, so \
             parallel writers (--db-writers) may deadlock now and then (retried)"
        );
    } else {
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")?;
    }
    Ok(())
}

/// The parameter budget of one statement on this server: [`PARAM_BUDGET`], or half of
/// `max_allowed_packet` if that is smaller (the other half covers SQL text and framing).
fn param_budget(conn: &mut Conn) -> Result<usize, PersistError> {
    let max: Option<u64> = conn.query_first("SELECT @@max_allowed_packet")?;
    let half = max
        .map(|m| usize::try_from(m / 2).unwrap_or(usize::MAX))
        .unwrap_or(PARAM_BUDGET);
    Ok(PARAM_BUDGET.min(half).max(1))
}

// ---------------------------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------------------------

/// A schema object a guard comment looks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Object {
    Column { table: String, column: String },
    Index { table: String, index: String },
    ForeignKey { table: String, name: String },
}

impl Object {
    fn table(&self) -> &str {
        match self {
            Object::Column { table, .. }
            | Object::Index { table, .. }
            | Object::ForeignKey { table, .. } => table,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Column { table, column } => write!(f, "column {table}.{column}"),
            Object::Index { table, index } => write!(f, "index {table}.{index}"),
            Object::ForeignKey { table, name } => write!(f, "foreign-key {table}.{name}"),
        }
    }
}

/// What a guard comment checks before a statement: `skip-if` skips it when the object exists
/// already (an `ADD`), `skip-unless` when it does not exist (a `DROP`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Guard {
    object: Object,
    skip_if_exists: bool,
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.skip_if_exists {
            "skip-if"
        } else {
            "skip-unless"
        };
        write!(f, "{verb} {}", self.object)
    }
}

impl Guard {
    /// Why a statement is skipped, for logs and `check`.
    fn reason(&self) -> String {
        if self.skip_if_exists {
            format!("{} exists", self.object)
        } else {
            format!("{} does not exist", self.object)
        }
    }
}

/// One statement of a migration and its guard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    sql: String,
    guard: Option<Guard>,
}

const GUARD_PREFIX: &str = "-- corechat:";

/// Splits a migration like [`corechat_sql::statements`] does (a statement ends with `;` at the
/// end of a line, `--` lines are comments), keeping the guard comment that precedes a
/// statement.
fn steps(m: &Migration) -> Result<Vec<Step>, PersistError> {
    let bad = |cause: String| PersistError::Migration {
        version: m.version,
        name: m.name.to_string(),
        cause,
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut guard: Option<Guard> = None;
    for line in m.sql.lines() {
        let t = line.trim();
        if let Some(spec) = t.strip_prefix(GUARD_PREFIX) {
            if guard.is_some() || !cur.trim().is_empty() {
                return Err(bad(format!("misplaced guard: {t}")));
            }
            guard = Some(parse_guard(spec).ok_or_else(|| bad(format!("bad guard: {t}")))?);
            continue;
        }
        if t.starts_with("--") || t.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if t.ends_with(';') {
            let sql = cur.trim().trim_end_matches(';').trim().to_string();
            if !sql.is_empty() {
                out.push(Step {
                    sql,
                    guard: guard.take(),
                });
            }
            cur.clear();
        }
    }
    let sql = cur.trim().to_string();
    if !sql.is_empty() {
        out.push(Step {
            sql,
            guard: guard.take(),
        });
    }
    if let Some(g) = guard {
        return Err(bad(format!("guard `{g}` guards no statement")));
    }
    Ok(out)
}

fn parse_guard(spec: &str) -> Option<Guard> {
    let mut words = spec.split_whitespace();
    let skip_if_exists = match words.next()? {
        "skip-if" => true,
        "skip-unless" => false,
        _ => return None,
    };
    let kind = words.next()?;
    let (table, name) = words.next()?.split_once('.')?;
    if words.next().is_some() || table.is_empty() || name.is_empty() {
        return None;
    }
    let (table, name) = (table.to_string(), name.to_string());
    let object = match kind {
        "column" => Object::Column {
            table,
            column: name,
        },
        "index" => Object::Index { table, index: name },
        "foreign-key" => Object::ForeignKey { table, name },
        _ => return None,
    };
    Some(Guard {
        object,
        skip_if_exists,
    })
}

/// Does the guard say to skip its statement in the current database?
fn guard_skips(conn: &mut Conn, guard: &Guard) -> Result<bool, PersistError> {
    let n: Option<u64> = match &guard.object {
        Object::Column { table, column } => conn.exec_first(
            "SELECT COUNT(*) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?",
            (table, column),
        )?,
        Object::Index { table, index } => conn.exec_first(
            "SELECT COUNT(*) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?",
            (table, index),
        )?,
        Object::ForeignKey { table, name } => conn.exec_first(
            "SELECT COUNT(*) FROM information_schema.table_constraints \
             WHERE constraint_schema = DATABASE() AND table_name = ? \
             AND constraint_name = ? AND constraint_type = 'FOREIGN KEY'",
            (table, name),
        )?,
    };
    let exists = n.unwrap_or(0) > 0;
    Ok(exists == guard.skip_if_exists)
}

fn table_exists(conn: &mut Conn, table: &str) -> Result<bool, PersistError> {
    let n: Option<u64> = conn.exec_first(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = ?",
        (table,),
    )?;
    Ok(n.unwrap_or(0) > 0)
}

/// A migration recorded in `corechat_schema_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: u32,
    pub name: String,
    /// `yyyy-MM-dd HH:mm:ss`, UTC.
    pub applied_at: String,
}

/// A migration that [`migrate`] would apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMigration {
    pub version: u32,
    pub name: &'static str,
    pub statements: Vec<PlannedStatement>,
}

/// One statement of a pending migration, as the database stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStatement {
    pub sql: String,
    /// Why it would be skipped (its guard's object exists already), or `None` if it would run.
    pub skipped_because: Option<String>,
}

/// The schema state of a database, read without changing anything: what a `check` or
/// `migrate --dry-run` command prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReport {
    /// The database URL, password masked.
    pub url: String,
    /// `SELECT VERSION()`.
    pub server_version: String,
    /// Which of the seven legacy tables exist (all seven on a database the old server left,
    /// none on an empty one).
    pub legacy_tables: Vec<String>,
    /// The migrations recorded, oldest first.
    pub applied: Vec<AppliedMigration>,
    /// What [`migrate`] would apply, in order. Guards are evaluated against the database as it
    /// is now, before any pending migration has run.
    pub pending: Vec<PendingMigration>,
    /// Recorded versions this build does not know: a newer corechat migrated this database.
    /// [`MysqlBackend::open`] refuses to run on it.
    pub unknown: Vec<AppliedMigration>,
}

impl SchemaReport {
    /// The highest version recorded (0 for none).
    pub fn current_version(&self) -> u32 {
        self.applied
            .iter()
            .chain(&self.unknown)
            .map(|a| a.version)
            .max()
            .unwrap_or(0)
    }

    /// The highest version this build knows.
    pub fn target_version(&self) -> u32 {
        corechat_sql::MYSQL
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0)
    }

    /// Nothing to apply and nothing unknown.
    pub fn is_up_to_date(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty()
    }
}

impl fmt::Display for SchemaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "database: {} (server {})", self.url, self.server_version)?;
        writeln!(
            f,
            "schema version: {} (this build: {})",
            self.current_version(),
            self.target_version()
        )?;
        if self.applied.is_empty() && self.legacy_tables.len() == LEGACY_TABLES.len() {
            writeln!(
                f,
                "legacy database of the old server (no corechat migration yet)"
            )?;
        } else if self.legacy_tables.is_empty() {
            writeln!(f, "no corechat table yet")?;
        }
        for a in &self.applied {
            writeln!(
                f,
                "  applied {:04} {} at {} UTC",
                a.version, a.name, a.applied_at
            )?;
        }
        for u in &self.unknown {
            writeln!(
                f,
                "  UNKNOWN {:04} {} at {} UTC: applied by a newer corechat; this build refuses to run",
                u.version, u.name, u.applied_at
            )?;
        }
        if self.pending.is_empty() {
            writeln!(f, "no pending migration")?;
        }
        for p in &self.pending {
            writeln!(f, "  pending {:04} {}", p.version, p.name)?;
            for s in &p.statements {
                let first = s.sql.lines().next().unwrap_or_default();
                match &s.skipped_because {
                    None => writeln!(f, "      run:  {first}")?,
                    Some(why) => writeln!(f, "      skip: {first} ({why})")?,
                }
            }
        }
        Ok(())
    }
}

/// Reads the recorded migrations (none if the table does not exist yet).
fn read_applied(conn: &mut Conn) -> Result<Vec<AppliedMigration>, PersistError> {
    if !table_exists(conn, "corechat_schema_version")? {
        return Ok(Vec::new());
    }
    let rows: Vec<Row> = conn
        .query("SELECT version, name, applied_at FROM corechat_schema_version ORDER BY version")?;
    rows.into_iter()
        .map(|row| {
            let mut v = values(row).into_iter();
            let version = int(next(&mut v), "corechat_schema_version.version")?;
            let version = u32::try_from(version).map_err(|_| {
                PersistError::BadData(format!("corechat_schema_version.version {version}"))
            })?;
            Ok(AppliedMigration {
                version,
                name: text(next(&mut v), "corechat_schema_version.name")?.unwrap_or_default(),
                applied_at: datetime(next(&mut v), "corechat_schema_version.applied_at")?,
            })
        })
        .collect()
}

/// Compares the recorded migrations with this build's: (pending, unknown). A recorded version
/// whose name differs from ours means the two histories diverged: an error, not a guess.
fn compare(
    applied: &[AppliedMigration],
    known: &'static [Migration],
) -> Result<(Vec<&'static Migration>, Vec<AppliedMigration>), PersistError> {
    let mut unknown = Vec::new();
    for a in applied {
        match known.iter().find(|m| m.version == a.version) {
            Some(m) if m.name != a.name => {
                return Err(PersistError::Migration {
                    version: a.version,
                    name: m.name.to_string(),
                    cause: format!(
                        "the database records version {} as `{}`: its schema history differs \
                         from this build's",
                        a.version, a.name
                    ),
                });
            }
            Some(_) => {}
            None => unknown.push(a.clone()),
        }
    }
    let done: HashSet<u32> = applied.iter().map(|a| a.version).collect();
    let pending = known
        .iter()
        .filter(|m| !done.contains(&m.version))
        .collect();
    Ok((pending, unknown))
}

fn report_on(conn: &mut Conn, masked: &str) -> Result<SchemaReport, PersistError> {
    let server_version: Option<String> = conn.query_first("SELECT VERSION()")?;
    let mut legacy_tables = Vec::new();
    for t in LEGACY_TABLES {
        if table_exists(conn, t)? {
            legacy_tables.push(t.to_string());
        }
    }
    let applied_all = read_applied(conn)?;
    let (pending, unknown) = compare(&applied_all, corechat_sql::MYSQL)?;
    let applied = applied_all
        .into_iter()
        .filter(|a| !unknown.contains(a))
        .collect();
    // The plan is a simulation: a guard is judged against the database as the earlier
    // statements of the plan will have left it, not as it is now. A guarded statement that
    // runs creates (skip-if) or drops (skip-unless) its object; a guard on a table that does
    // not exist yet is left to be judged when applied (the table comes from version 1, in its
    // legacy shape), and reported as one that runs.
    let mut simulated: HashMap<Object, bool> = HashMap::new();
    let mut planned = Vec::new();
    for m in pending {
        let mut statements = Vec::new();
        for step in steps(m)? {
            let skipped_because = match &step.guard {
                Some(g) => {
                    let skip = match simulated.get(&g.object) {
                        Some(&exists) => exists == g.skip_if_exists,
                        None if !table_exists(conn, g.object.table())? => false,
                        None => guard_skips(conn, g)?,
                    };
                    if !skip {
                        simulated.insert(g.object.clone(), g.skip_if_exists);
                    }
                    skip.then(|| g.reason())
                }
                None => None,
            };
            statements.push(PlannedStatement {
                sql: step.sql,
                skipped_because,
            });
        }
        planned.push(PendingMigration {
            version: m.version,
            name: m.name,
            statements,
        });
    }
    Ok(SchemaReport {
        url: masked.to_string(),
        server_version: server_version.unwrap_or_default(),
        legacy_tables,
        applied,
        pending: planned,
        unknown,
    })
}

/// Reports the schema version of the database at `url` and the migrations this build would
/// apply, without changing anything (not even creating `corechat_schema_version`).
pub fn schema_report(url: &str) -> Result<SchemaReport, PersistError> {
    let masked = mask_url(url);
    let opts = connection_opts(url, &masked)?;
    let mut conn = connect(&opts, &masked)?;
    report_on(&mut conn, &masked)
}

/// Applies the pending migrations to the database at `url` and returns their versions (empty
/// if it was up to date). [`MysqlBackend::open`] does the same before anything else.
pub fn migrate(url: &str) -> Result<Vec<u32>, PersistError> {
    let masked = mask_url(url);
    let opts = connection_opts(url, &masked)?;
    let mut conn = connect(&opts, &masked)?;
    migrate_on(&mut conn)
}

/// Runs the pending migrations under a server-wide named lock, so that two engines started at
/// once against one database do not both run the same DDL.
fn migrate_on(conn: &mut Conn) -> Result<Vec<u32>, PersistError> {
    conn.query_drop(SCHEMA_VERSION_TABLE)?;
    // Lock names are limited to 64 characters: hash the database name.
    let got: Option<Option<i64>> = conn.exec_first(
        "SELECT GET_LOCK(CONCAT('corechat_migrate:', LEFT(SHA1(DATABASE()), 40)), ?)",
        (MIGRATION_LOCK_WAIT_SECS,),
    )?;
    if got.flatten() != Some(1) {
        return Err(PersistError::Migration {
            version: 0,
            name: "lock".into(),
            cause: format!(
                "another process has been migrating this database for {MIGRATION_LOCK_WAIT_SECS} s"
            ),
        });
    }
    let result = migrate_locked(conn);
    // Also released when the connection closes; an error here changes nothing.
    let _ =
        conn.query_drop("DO RELEASE_LOCK(CONCAT('corechat_migrate:', LEFT(SHA1(DATABASE()), 40)))");
    result
}

fn migrate_locked(conn: &mut Conn) -> Result<Vec<u32>, PersistError> {
    let applied = read_applied(conn)?;
    let (pending, unknown) = compare(&applied, corechat_sql::MYSQL)?;
    if let Some(newest) = unknown.iter().max_by_key(|a| a.version) {
        return Err(PersistError::Migration {
            version: newest.version,
            name: newest.name.clone(),
            cause: format!(
                "applied by a newer corechat (this build knows versions up to {}); refusing to \
                 write to a schema it does not know",
                corechat_sql::MYSQL
                    .iter()
                    .map(|m| m.version)
                    .max()
                    .unwrap_or(0)
            ),
        });
    }
    let mut done = Vec::new();
    for m in pending {
        let fail = |cause: String| PersistError::Migration {
            version: m.version,
            name: m.name.to_string(),
            cause,
        };
        for step in steps(m)? {
            if let Some(g) = &step.guard {
                if guard_skips(conn, g).map_err(|e| fail(e.to_string()))? {
                    ftlog::info!(
                        "mysql: migration {} {}: {}, skipped",
                        m.version,
                        m.name,
                        g.reason()
                    );
                    continue;
                }
            }
            conn.query_drop(&step.sql).map_err(|e| {
                let first = step.sql.lines().next().unwrap_or_default();
                fail(format!("{e} (in `{first}`)"))
            })?;
        }
        conn.exec_drop(
            "INSERT INTO corechat_schema_version (version, name, applied_at) \
             VALUES (?, ?, UTC_TIMESTAMP())",
            (m.version, m.name),
        )
        .map_err(|e| fail(format!("recording the version: {e}")))?;
        ftlog::info!("mysql: applied migration {} {}", m.version, m.name);
        done.push(m.version);
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// Reading values
// ---------------------------------------------------------------------------------------------

fn values(mut row: Row) -> Vec<Value> {
    (0..row.len())
        .map(|i| {
            row.take_opt::<Value, usize>(i)
                .and_then(Result::ok)
                .unwrap_or(Value::NULL)
        })
        .collect()
}

fn next(it: &mut std::vec::IntoIter<Value>) -> Value {
    it.next().unwrap_or(Value::NULL)
}

/// A column as text: `None` for NULL. Numbers and dates are rendered as text, so a legacy
/// database with slightly different column types still loads.
fn text(v: Value, what: &str) -> Result<Option<String>, PersistError> {
    match v {
        Value::NULL => Ok(None),
        Value::Bytes(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| PersistError::BadData(format!("{what} is not valid UTF-8"))),
        Value::Int(i) => Ok(Some(i.to_string())),
        Value::UInt(u) => Ok(Some(u.to_string())),
        Value::Float(x) => Ok(Some(x.to_string())),
        Value::Double(x) => Ok(Some(x.to_string())),
        d @ Value::Date(..) => datetime(d, what).map(Some),
        Value::Time(neg, days, h, m, s, _) => Ok(Some(format!(
            "{}{:02}:{m:02}:{s:02}",
            if neg { "-" } else { "" },
            u64::from(days) * 24 + u64::from(h)
        ))),
    }
}

/// A DATETIME as the wire format `yyyy-MM-dd HH:mm:ss`: the binary protocol gives
/// `Value::Date`, the text protocol the same text (with a fraction if the column has one,
/// which the wire format drops). NULL reads as "" like every missing value on the wire.
fn datetime(v: Value, what: &str) -> Result<String, PersistError> {
    match v {
        Value::Date(y, mo, d, h, mi, s, _micros) => {
            Ok(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
        }
        Value::NULL => Ok(String::new()),
        other => {
            let t = text(other, what)?.unwrap_or_default();
            Ok(match t.get(..19) {
                Some(head) if t.len() > 19 && t.as_bytes()[19] == b'.' => head.to_string(),
                _ => t,
            })
        }
    }
}

fn int(v: Value, what: &str) -> Result<i64, PersistError> {
    match v {
        Value::Int(i) => Ok(i),
        Value::UInt(u) => {
            i64::try_from(u).map_err(|_| PersistError::BadData(format!("{what} = {u} too large")))
        }
        Value::NULL => Ok(0),
        other => {
            let t = text(other, what)?.unwrap_or_default();
            t.trim()
                .parse()
                .map_err(|_| PersistError::BadData(format!("{what} = {t:?} is not a number")))
        }
    }
}

fn string(v: Value, what: &str) -> Result<String, PersistError> {
    Ok(text(v, what)?.unwrap_or_default())
}

fn user_from(row: Row) -> Result<UserRow, PersistError> {
    let mut v = values(row).into_iter();
    Ok(UserRow {
        user_id: string(next(&mut v), "m_user.user_id")?,
        password: string(next(&mut v), "m_user.user_password")?,
        phone: string(next(&mut v), "m_user.user_phone")?,
        name: string(next(&mut v), "m_user.user_name")?,
        email: string(next(&mut v), "m_user.user_email")?,
        avatar: string(next(&mut v), "m_user.user_avatar")?,
        status: string(next(&mut v), "m_user.user_status")?,
        created: datetime(next(&mut v), "m_user.user_created")?,
    })
}

fn relation_from(row: Row) -> Result<RelationRow, PersistError> {
    let mut v = values(row).into_iter();
    let user_id = string(next(&mut v), "m_friends_relation.user_id")?;
    let friend_id = string(next(&mut v), "m_friends_relation.friend_id")?;
    let raw = string(next(&mut v), "m_friends_relation.friend_relation")?;
    let relation = Relation::parse(&raw).ok_or_else(|| {
        PersistError::BadData(format!(
            "m_friends_relation ({user_id}, {friend_id}) has friend_relation {raw:?}"
        ))
    })?;
    Ok(RelationRow {
        user_id,
        friend_id,
        relation,
        created: datetime(next(&mut v), "m_friends_relation.created_relation")?,
        requested_by: text(next(&mut v), "m_friends_relation.requested_by")?,
    })
}

fn chat_from(row: Row) -> Result<ChatRow, PersistError> {
    let mut v = values(row).into_iter();
    Ok(ChatRow {
        user_id: string(next(&mut v), "m_chatlist.user_id")?,
        comm_id: string(next(&mut v), "m_chatlist.comm_id")?,
        chat_type: string(next(&mut v), "m_chatlist.chat_type")?,
        last_message: string(next(&mut v), "m_chatlist.last_message")?,
        // The old server's misspelling: the engine only knows 'video'.
        last_message_type: text(next(&mut v), "m_chatlist.last_message_type")?.map(|t| {
            if t == "vedio" {
                "video".to_string()
            } else {
                t
            }
        }),
        last_time: datetime(next(&mut v), "m_chatlist.last_time")?,
        unread_count: int(next(&mut v), "m_chatlist.unread_count")?,
        chat_status: string(next(&mut v), "m_chatlist.chat_status")?,
    })
}

fn message_from(row: Row) -> Result<MessageRow, PersistError> {
    let mut v = values(row).into_iter();
    let id = int(next(&mut v), "m_friends_message.message_id")?;
    let message_id = u64::try_from(id)
        .map_err(|_| PersistError::BadData(format!("m_friends_message.message_id {id}")))?;
    let sender_id = string(next(&mut v), "m_friends_message.sender_id")?;
    let receiver_id = string(next(&mut v), "m_friends_message.receiver_id")?;
    let chat_type = string(next(&mut v), "m_friends_message.chat_type")?;
    let body = string(next(&mut v), "m_friends_message.message_body")?;
    let message_type = string(next(&mut v), "m_friends_message.message_type")?;
    let file_path = string(next(&mut v), "m_friends_message.file_path")?;
    let raw = string(next(&mut v), "m_friends_message.message_status")?;
    let status = MessageStatus::parse(&raw).ok_or_else(|| {
        PersistError::BadData(format!(
            "m_friends_message {message_id} has message_status {raw:?}"
        ))
    })?;
    Ok(MessageRow {
        message_id,
        sender_id,
        receiver_id,
        chat_type,
        body,
        message_type,
        file_path,
        status,
        timestamp: datetime(next(&mut v), "m_friends_message.message_timestamp")?,
    })
}

const SELECT_USERS: &str = "SELECT user_id, user_password, user_phone, user_name, user_email, \
     user_avatar, user_status, user_created FROM m_user ORDER BY user_id";
const SELECT_RELATIONS: &str = "SELECT user_id, friend_id, friend_relation, created_relation, \
     requested_by FROM m_friends_relation ORDER BY user_id, friend_id";
const SELECT_CHATS: &str = "SELECT user_id, comm_id, chat_type, last_message, \
     last_message_type, last_time, unread_count, chat_status FROM m_chatlist \
     ORDER BY user_id, comm_id";
const SELECT_UNDELIVERED: &str = "SELECT message_id, sender_id, receiver_id, chat_type, \
     message_body, message_type, file_path, message_status, message_timestamp \
     FROM m_friends_message WHERE message_status = 'send' ORDER BY message_id";
const SELECT_MAX_ID: &str = "SELECT COALESCE(MAX(message_id), 0) FROM m_friends_message";

/// Streams one query's rows into `sink`, converted by `convert`; returns how many.
fn stream<Q: Queryable>(
    q: &mut Q,
    sql: &str,
    convert: fn(Row) -> Result<Loaded, PersistError>,
    sink: &mut dyn FnMut(Loaded),
) -> Result<u64, PersistError> {
    let mut n = 0;
    for row in q.query_iter(sql)? {
        sink(convert(row?)?);
        n += 1;
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// What one batch becomes: the statements to send, in order.
#[derive(Debug, PartialEq, Eq)]
enum Op<'a> {
    /// A multi-row insert (chunked when executed).
    Messages(Vec<&'a MessageRow>),
    /// A multi-row upsert, at most one row per (user_id, comm_id).
    Chats(Vec<&'a ChatRow>),
    /// `UPDATE ... SET message_status = status WHERE message_id IN (ids)`.
    Statuses(MessageStatus, Vec<u64>),
    /// Any other record: one statement (two for `MarkConversationDeleted`).
    Single(&'a WriteRecord),
}

/// The records of the current segment: inserts, upserts and status updates that commute.
#[derive(Default)]
struct Segment<'a> {
    messages: Vec<&'a MessageRow>,
    chats: Vec<&'a ChatRow>,
    chat_at: HashMap<(&'a str, &'a str), usize>,
    /// (id, final status) in order of first mention.
    statuses: Vec<(u64, MessageStatus)>,
    status_at: HashMap<u64, usize>,
}

impl<'a> Segment<'a> {
    fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.chats.is_empty() && self.statuses.is_empty()
    }

    /// Appends the segment's statements to `ops`: messages first (so that status updates of
    /// this segment find them), then chat rows, then one update per status.
    fn flush(&mut self, ops: &mut Vec<Op<'a>>) {
        if !self.messages.is_empty() {
            ops.push(Op::Messages(std::mem::take(&mut self.messages)));
        }
        if !self.chats.is_empty() {
            ops.push(Op::Chats(std::mem::take(&mut self.chats)));
        }
        self.chat_at.clear();
        if !self.statuses.is_empty() {
            let order = [
                MessageStatus::Send,
                MessageStatus::Received,
                MessageStatus::Read,
                MessageStatus::Delete,
            ];
            for status in order {
                let ids: Vec<u64> = self
                    .statuses
                    .iter()
                    .filter(|(_, s)| *s == status)
                    .map(|(id, _)| *id)
                    .collect();
                if !ids.is_empty() {
                    ops.push(Op::Statuses(status, ids));
                }
            }
            self.statuses.clear();
            self.status_at.clear();
        }
    }
}

/// Turns a batch into statements whose effect equals writing its records one by one in order.
fn plan<'a>(batch: impl IntoIterator<Item = &'a WriteRecord>) -> Vec<Op<'a>> {
    let mut ops = Vec::new();
    let mut seg = Segment::default();
    for record in batch {
        match record {
            WriteRecord::InsertMessage(m) => {
                // An update of this id earlier in the segment ran before the row existed; moving
                // the insert before it would change the result, so close the segment.
                if seg.status_at.contains_key(&m.message_id) {
                    seg.flush(&mut ops);
                }
                seg.messages.push(m);
            }
            WriteRecord::UpsertChat(c) => {
                let key = (c.user_id.as_str(), c.comm_id.as_str());
                match seg.chat_at.get(&key) {
                    Some(&i) => seg.chats[i] = c,
                    None => {
                        seg.chat_at.insert(key, seg.chats.len());
                        seg.chats.push(c);
                    }
                }
            }
            WriteRecord::SetMessageStatus { ids, status, .. } => {
                for &id in ids {
                    match seg.status_at.get(&id) {
                        Some(&i) => seg.statuses[i].1 = *status,
                        None => {
                            seg.status_at.insert(id, seg.statuses.len());
                            seg.statuses.push((id, *status));
                        }
                    }
                }
            }
            // Nothing to write, and nothing to reorder around.
            WriteRecord::Barrier => {}
            other => {
                if !seg.is_empty() {
                    seg.flush(&mut ops);
                }
                ops.push(Op::Single(other));
            }
        }
    }
    seg.flush(&mut ops);
    ops
}

/// Splits `costs.len()` rows into chunks: sizes from [`CHUNK_ROWS`], each chunk at most
/// `max_rows` rows and `budget` bytes (a single row over budget still goes alone: the server
/// is the judge of what fits in its packet).
fn chunks(costs: &[usize], max_rows: usize, budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut prefix = Vec::with_capacity(costs.len() + 1);
    prefix.push(0usize);
    for c in costs {
        prefix.push(prefix[prefix.len() - 1].saturating_add(*c));
    }
    let mut start = 0;
    while start < costs.len() {
        let left = costs.len() - start;
        let size = CHUNK_ROWS
            .iter()
            .copied()
            .find(|&n| {
                n <= left
                    && n <= max_rows
                    && (n == 1 || prefix[start + n] - prefix[start] <= budget)
            })
            .unwrap_or(1);
        out.push(start..start + size);
        start += size;
    }
    out
}

/// `(?,?,?),(?,?,?)` for `rows` rows of `arity` columns.
fn placeholders(arity: usize, rows: usize) -> String {
    let mut one = String::with_capacity(arity * 2 + 1);
    one.push('(');
    for i in 0..arity {
        if i > 0 {
            one.push(',');
        }
        one.push('?');
    }
    one.push(')');
    let mut out = String::with_capacity(rows * (one.len() + 1));
    for i in 0..rows {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&one);
    }
    out
}

/// Framing bytes counted per parameter on top of its data (length prefix and type).
const PARAM_OVERHEAD: usize = 12;

fn s(v: &str) -> Value {
    Value::Bytes(v.as_bytes().to_vec())
}

const MESSAGE_COLUMNS: usize = 9;
const INSERT_MESSAGES: &str = "INSERT INTO m_friends_message (message_id, sender_id, \
     receiver_id, chat_type, message_body, message_type, file_path, message_status, \
     message_timestamp) VALUES ";
/// A retried batch finds its messages already there: keep them. Only the primary key is
/// unique in this table, so nothing else can be hidden by this clause.
const INSERT_MESSAGES_TAIL: &str = " ON DUPLICATE KEY UPDATE message_id = message_id";

fn message_cost(m: &MessageRow) -> usize {
    8 + m.sender_id.len()
        + m.receiver_id.len()
        + m.chat_type.len()
        + m.body.len()
        + m.message_type.len()
        + m.file_path.len()
        + 8
        + m.timestamp.len()
        + MESSAGE_COLUMNS * PARAM_OVERHEAD
}

fn push_message(params: &mut Vec<Value>, m: &MessageRow) {
    params.push(Value::UInt(m.message_id));
    params.push(s(&m.sender_id));
    params.push(s(&m.receiver_id));
    params.push(s(&m.chat_type));
    params.push(s(&m.body));
    params.push(s(&m.message_type));
    params.push(s(&m.file_path));
    params.push(s(m.status.as_str()));
    params.push(s(&m.timestamp));
}

const CHAT_COLUMNS: usize = 8;
const UPSERT_CHATS: &str = "INSERT INTO m_chatlist (user_id, comm_id, chat_type, last_message, \
     last_message_type, last_time, unread_count, chat_status) VALUES ";
/// `VALUES(col)` rather than MySQL 8.0.20's row alias: MariaDB has no row alias, and MySQL 8
/// still accepts `VALUES()` (with a deprecation note).
const UPSERT_CHATS_TAIL: &str = " ON DUPLICATE KEY UPDATE chat_type = VALUES(chat_type), \
     last_message = VALUES(last_message), last_message_type = VALUES(last_message_type), \
     last_time = VALUES(last_time), unread_count = VALUES(unread_count), \
     chat_status = VALUES(chat_status)";

fn chat_cost(c: &ChatRow) -> usize {
    c.user_id.len()
        + c.comm_id.len()
        + c.chat_type.len()
        + c.last_message.len()
        + c.last_message_type.as_deref().map_or(0, str::len)
        + c.last_time.len()
        + 8
        + c.chat_status.len()
        + CHAT_COLUMNS * PARAM_OVERHEAD
}

fn push_chat(params: &mut Vec<Value>, c: &ChatRow) {
    params.push(s(&c.user_id));
    params.push(s(&c.comm_id));
    params.push(s(&c.chat_type));
    params.push(s(&c.last_message));
    params.push(c.last_message_type.as_deref().map_or(Value::NULL, s));
    params.push(s(&c.last_time));
    params.push(Value::Int(c.unread_count));
    params.push(s(&c.chat_status));
}

/// How the rows of one table are written by a multi-row statement.
struct MultiRow<T: 'static> {
    arity: usize,
    head: &'static str,
    tail: &'static str,
    /// Estimated parameter bytes of a row, for [`chunks`].
    cost: fn(&T) -> usize,
    push: fn(&mut Vec<Value>, &T),
}

const MESSAGES: MultiRow<MessageRow> = MultiRow {
    arity: MESSAGE_COLUMNS,
    head: INSERT_MESSAGES,
    tail: INSERT_MESSAGES_TAIL,
    cost: message_cost,
    push: push_message,
};

const CHATS: MultiRow<ChatRow> = MultiRow {
    arity: CHAT_COLUMNS,
    head: UPSERT_CHATS,
    tail: UPSERT_CHATS_TAIL,
    cost: chat_cost,
    push: push_chat,
};

impl<T> MultiRow<T> {
    /// Writes `rows` with as few statements as [`chunks`] allows.
    fn write<Q: Queryable>(
        &self,
        q: &mut Q,
        rows: &[&T],
        budget: usize,
    ) -> Result<(), PersistError> {
        let costs: Vec<usize> = rows.iter().map(|r| (self.cost)(r)).collect();
        for range in chunks(&costs, MAX_PLACEHOLDERS / self.arity, budget) {
            let n = range.len();
            let mut params = Vec::with_capacity(n * self.arity);
            for r in &rows[range] {
                (self.push)(&mut params, r);
            }
            let sql = format!("{}{}{}", self.head, placeholders(self.arity, n), self.tail);
            q.exec_drop(sql, params)?;
        }
        Ok(())
    }
}

fn write_statuses<Q: Queryable>(
    q: &mut Q,
    status: MessageStatus,
    ids: &[u64],
    budget: usize,
) -> Result<(), PersistError> {
    let costs = vec![8 + PARAM_OVERHEAD; ids.len()];
    for range in chunks(&costs, MAX_PLACEHOLDERS - 1, budget) {
        let n = range.len();
        let mut params = Vec::with_capacity(n + 1);
        params.push(s(status.as_str()));
        params.extend(ids[range].iter().map(|&id| Value::UInt(id)));
        let mut sql =
            String::from("UPDATE m_friends_message SET message_status = ? WHERE message_id IN (");
        for i in 0..n {
            sql.push_str(if i == 0 { "?" } else { ",?" });
        }
        sql.push(')');
        q.exec_drop(sql, params)?;
    }
    Ok(())
}

fn write_single<Q: Queryable>(q: &mut Q, record: &WriteRecord) -> Result<(), PersistError> {
    match record {
        WriteRecord::InsertUser(u) => {
            // Idempotent on the id only: a retried batch finds its user there and keeps it; a
            // different user with the same unique e-mail still fails, as it must.
            q.exec_drop(
                "INSERT INTO m_user (user_id, user_password, user_phone, user_name, user_email, \
                 user_avatar, user_status, user_created) \
                 SELECT ?, ?, ?, ?, ?, ?, ?, ? FROM DUAL \
                 WHERE NOT EXISTS (SELECT 1 FROM m_user WHERE user_id = ?)",
                vec![
                    s(&u.user_id),
                    s(&u.password),
                    s(&u.phone),
                    s(&u.name),
                    s(&u.email),
                    s(&u.avatar),
                    s(&u.status),
                    s(&u.created),
                    s(&u.user_id),
                ],
            )?;
        }
        WriteRecord::SetPassword { user_id, password } => {
            q.exec_drop(
                "UPDATE m_user SET user_password = ? WHERE user_id = ?",
                vec![s(password), s(user_id)],
            )?;
        }
        WriteRecord::UpsertRelation(r) => {
            q.exec_drop(
                "INSERT INTO m_friends_relation (user_id, friend_id, friend_relation, \
                 created_relation, requested_by) VALUES (?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE friend_relation = VALUES(friend_relation), \
                 created_relation = VALUES(created_relation), \
                 requested_by = VALUES(requested_by)",
                vec![
                    s(&r.user_id),
                    s(&r.friend_id),
                    s(r.relation.as_str()),
                    s(&r.created),
                    r.requested_by.as_deref().map_or(Value::NULL, s),
                ],
            )?;
        }
        WriteRecord::DeleteRelation { user_id, friend_id } => {
            q.exec_drop(
                "DELETE FROM m_friends_relation WHERE user_id = ? AND friend_id = ?",
                vec![s(user_id), s(friend_id)],
            )?;
        }
        WriteRecord::DeleteChat { user_id, comm_id } => {
            q.exec_drop(
                "DELETE FROM m_chatlist WHERE user_id = ? AND comm_id = ?",
                vec![s(user_id), s(comm_id)],
            )?;
        }
        WriteRecord::MarkConversationRead {
            receiver_id,
            sender_id,
        } => {
            q.exec_drop(
                "UPDATE m_friends_message SET message_status = 'read' \
                 WHERE receiver_id = ? AND sender_id = ? AND message_status = 'received'",
                vec![s(receiver_id), s(sender_id)],
            )?;
        }
        WriteRecord::Barrier => {}
        WriteRecord::MarkConversationDeleted { a, b } => {
            // Two statements rather than an OR, so each is one lookup in the conversation index.
            for (from, to) in [(a, b), (b, a)] {
                q.exec_drop(
                    "UPDATE m_friends_message SET message_status = 'delete' \
                     WHERE sender_id = ? AND receiver_id = ? AND message_status <> 'delete'",
                    vec![s(from), s(to)],
                )?;
            }
        }
        // Grouped by `plan`; written here one by one only if called directly.
        WriteRecord::InsertMessage(m) => MESSAGES.write(q, &[m], PARAM_BUDGET)?,
        WriteRecord::UpsertChat(c) => CHATS.write(q, &[c], PARAM_BUDGET)?,
        WriteRecord::SetMessageStatus { ids, status, .. } => {
            write_statuses(q, *status, ids, PARAM_BUDGET)?
        }
    }
    Ok(())
}

fn execute<Q: Queryable>(q: &mut Q, ops: &[Op<'_>], budget: usize) -> Result<(), PersistError> {
    for op in ops {
        match op {
            Op::Messages(rows) => MESSAGES.write(q, rows, budget)?,
            Op::Chats(rows) => CHATS.write(q, rows, budget)?,
            Op::Statuses(status, ids) => write_statuses(q, *status, ids, budget)?,
            Op::Single(record) => write_single(q, record)?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------------------

/// The server-side id (`CONNECTION_ID()`) of a backend's current connection, readable from
/// any thread, also after the backend has moved into the persistence thread: operators and
/// tests use it to find (and `KILL`) that connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionIdWatch(Arc<AtomicU32>);

impl ConnectionIdWatch {
    /// The current connection's id, or `None` while disconnected.
    pub fn get(&self) -> Option<u32> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    fn set(&self, id: Option<u32>) {
        self.0.store(id.unwrap_or(0), Ordering::Release);
    }
}

/// A [`Backend`] on a MySQL 8 / MariaDB 10.6+ database. See the module documentation.
pub struct MysqlBackend {
    opts: Opts,
    masked_url: String,
    /// `None` after a failed reconnection; the next call connects again.
    conn: Option<Conn>,
    /// Parameter bytes per multi-row statement, from the server's `max_allowed_packet`.
    param_budget: usize,
    connection_id: ConnectionIdWatch,
}

impl fmt::Debug for MysqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlBackend")
            .field("url", &self.masked_url)
            .field("connected", &self.conn.is_some())
            .field("param_budget", &self.param_budget)
            .field("connection_id", &self.connection_id.get())
            .finish()
    }
}

impl MysqlBackend {
    /// Connects to `url` (`mysql://user:pass@host:port/database`), applies the pending
    /// migrations and gets ready to load and write. Fails with
    /// [`PersistError::ConnectMysql`] (password masked) if the server cannot be reached within
    /// about 5 s, and refuses a database migrated by a newer corechat.
    pub fn open(url: &str) -> Result<Self, PersistError> {
        let masked_url = mask_url(url);
        let opts = connection_opts(url, &masked_url)?;
        let mut conn = connect(&opts, &masked_url)?;
        let applied = migrate_on(&mut conn)?;
        if !applied.is_empty() {
            ftlog::info!("mysql: {masked_url} migrated to version(s) {applied:?}");
        }
        let param_budget = param_budget(&mut conn)?;
        let connection_id = ConnectionIdWatch::default();
        connection_id.set(Some(conn.connection_id()));
        Ok(MysqlBackend {
            opts,
            masked_url,
            conn: Some(conn),
            param_budget,
            connection_id,
        })
    }

    /// The server-side id of the current connection (`None` while disconnected).
    pub fn connection_id(&self) -> Option<u32> {
        self.connection_id.get()
    }

    /// A handle that follows the connection id across reconnections.
    pub fn connection_id_watch(&self) -> ConnectionIdWatch {
        self.connection_id.clone()
    }

    /// The schema state of this backend's database (see [`schema_report`]).
    pub fn schema_report(&mut self) -> Result<SchemaReport, PersistError> {
        let masked = self.masked_url.clone();
        report_on(self.conn()?, &masked)
    }

    /// Writes `records` in one transaction on this connection (what
    /// [`Backend::write_batch`] does), from references, so that a caller spreading a batch
    /// over several connections need not copy it.
    pub fn write_records<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a WriteRecord>,
    ) -> Result<(), PersistError> {
        let ops = plan(records);
        if ops.is_empty() {
            return Ok(());
        }
        let budget = self.param_budget;
        let result = (|| {
            let conn = self.conn()?;
            let mut tx = conn.start_transaction(TxOpts::default())?;
            execute(&mut tx, &ops, budget)?;
            // If the answer to COMMIT is lost, the thread retries the whole batch: every
            // statement above is idempotent, so the retry neither fails nor duplicates.
            tx.commit()?;
            Ok(())
        })();
        if result.is_err() {
            // The transaction was rolled back when dropped (or died with its connection).
            // Whatever the cause, the connection's state cannot be trusted any more: the next
            // call opens a new one, even if the caller does not call `reset` first.
            self.conn = None;
            self.connection_id.set(None);
        }
        result
    }

    /// The open connection, reconnecting first if a previous reconnection failed.
    fn conn(&mut self) -> Result<&mut Conn, PersistError> {
        if self.conn.is_none() {
            self.reconnect()?;
        }
        self.conn
            .as_mut()
            .ok_or_else(|| PersistError::ConnectMysql {
                url: self.masked_url.clone(),
                cause: "not connected".into(),
            })
    }

    fn reconnect(&mut self) -> Result<(), PersistError> {
        // Dropping the old connection first: after a failure its state (an open transaction,
        // a half-read result) cannot be trusted, and its server thread may be gone anyway.
        self.conn = None;
        self.connection_id.set(None);
        let mut conn = connect(&self.opts, &self.masked_url)?;
        self.param_budget = param_budget(&mut conn)?;
        read_committed(&mut conn)?;
        self.connection_id.set(Some(conn.connection_id()));
        self.conn = Some(conn);
        Ok(())
    }
}

impl Backend for MysqlBackend {
    /// Streams the stored state in one consistent read-only snapshot, so that a writer still
    /// running elsewhere (say, the old server during a switch-over) cannot make the users,
    /// relations and messages disagree.
    fn load(&mut self, sink: &mut dyn FnMut(Loaded)) -> Result<LoadSummary, PersistError> {
        let conn = self.conn()?;
        let mut tx = conn.start_transaction(
            TxOpts::default()
                // The snapshot covers the whole load only under REPEATABLE READ (the
                // connection's own level is READ COMMITTED, see `read_committed`).
                .set_isolation_level(Some(IsolationLevel::RepeatableRead))
                .set_with_consistent_snapshot(true)
                .set_access_mode(Some(AccessMode::ReadOnly)),
        )?;
        let users = stream(
            &mut tx,
            SELECT_USERS,
            |r| user_from(r).map(Loaded::User),
            sink,
        )?;
        let relations = stream(
            &mut tx,
            SELECT_RELATIONS,
            |r| relation_from(r).map(Loaded::Relation),
            sink,
        )?;
        let chats = stream(
            &mut tx,
            SELECT_CHATS,
            |r| chat_from(r).map(Loaded::Chat),
            sink,
        )?;
        let undelivered = stream(
            &mut tx,
            SELECT_UNDELIVERED,
            |r| message_from(r).map(Loaded::Undelivered),
            sink,
        )?;
        let max: Option<Value> = tx.query_first(SELECT_MAX_ID)?;
        let max = int(max.unwrap_or(Value::NULL), "MAX(message_id)")?;
        tx.commit()?;
        Ok(LoadSummary {
            users,
            relations,
            chats,
            undelivered,
            max_message_id: u64::try_from(max).unwrap_or(0),
        })
    }

    fn write_batch(&mut self, batch: &[WriteRecord]) -> Result<(), PersistError> {
        self.write_records(batch)
    }

    /// Drops the connection and opens a new one: after a failed batch the old connection may
    /// be dead (server restarted, connection killed) or mid-transaction.
    fn reset(&mut self) -> Result<(), PersistError> {
        self.reconnect()
    }

    fn describe(&self) -> String {
        format!("MySQL {}", self.masked_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64) -> WriteRecord {
        WriteRecord::InsertMessage(MessageRow {
            message_id: id,
            sender_id: "a".into(),
            receiver_id: "b".into(),
            chat_type: "friend".into(),
            body: format!("m{id}"),
            message_type: "text".into(),
            file_path: " ".into(),
            status: MessageStatus::Send,
            timestamp: "2024-01-02 03:04:05".into(),
        })
    }

    fn chat(user: &str, comm: &str, last: &str) -> WriteRecord {
        WriteRecord::UpsertChat(ChatRow {
            user_id: user.into(),
            comm_id: comm.into(),
            chat_type: "friend".into(),
            last_message: last.into(),
            last_message_type: Some("text".into()),
            last_time: "2024-01-02 03:04:05".into(),
            unread_count: 0,
            chat_status: "chatting".into(),
        })
    }

    fn status(ids: &[u64], status: MessageStatus) -> WriteRecord {
        WriteRecord::SetMessageStatus {
            receiver_id: "r".into(),
            ids: ids.to_vec(),
            status,
        }
    }

    fn ids(op: &Op<'_>) -> Vec<u64> {
        match op {
            Op::Messages(m) => m.iter().map(|m| m.message_id).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn masks_the_password_only() {
        assert_eq!(
            mask_url("mysql://corechat:s3cr:et@127.0.0.1:3306/db?x=1"),
            "mysql://corechat:***@127.0.0.1:3306/db?x=1"
        );
        assert_eq!(
            mask_url("mysql://u:p@w@h/db"),
            "mysql://u:***@h/db",
            "the last @ of the authority ends the password"
        );
        assert_eq!(mask_url("mysql://u@h/db"), "mysql://u@h/db");
        assert_eq!(mask_url("mysql://h:3306/db"), "mysql://h:3306/db");
        assert_eq!(mask_url("not a url"), "not a url");
    }

    #[test]
    fn a_url_without_database_is_refused() {
        match connection_opts("mysql://u:pw@127.0.0.1:3306", "m") {
            Err(PersistError::BadUrl { url, cause }) => {
                assert_eq!(url, "m");
                assert!(cause.contains("no database"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            connection_opts("postgres://u:pw@h/db", "m"),
            Err(PersistError::BadUrl { .. })
        ));
    }

    #[test]
    fn interleaved_sends_become_one_insert_and_one_upsert() {
        // What a shard writes for each send_message: the message, then both chat rows.
        let mut batch = Vec::new();
        for id in 1..=100 {
            batch.push(msg(id));
            batch.push(chat("a", "b", &format!("m{id}")));
            batch.push(chat("b", "a", &format!("m{id}")));
        }
        let ops = plan(&batch);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert_eq!(ids(&ops[0]), (1..=100).collect::<Vec<_>>());
        match &ops[1] {
            Op::Chats(c) => {
                assert_eq!(c.len(), 2, "one row per key");
                assert!(c.iter().all(|c| c.last_message == "m100"), "last wins");
                assert_eq!((c[0].user_id.as_str(), c[1].user_id.as_str()), ("a", "b"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_records_are_barriers_in_order() {
        let del = WriteRecord::DeleteChat {
            user_id: "a".into(),
            comm_id: "b".into(),
        };
        let batch = vec![
            chat("a", "b", "1"),
            msg(1),
            del.clone(),
            chat("a", "b", "2"),
            msg(2),
        ];
        let ops = plan(&batch);
        assert_eq!(ops.len(), 5, "{ops:?}");
        assert_eq!(ids(&ops[0]), vec![1]);
        assert!(matches!(&ops[1], Op::Chats(c) if c[0].last_message == "1"));
        assert_eq!(ops[2], Op::Single(&del));
        assert_eq!(ids(&ops[3]), vec![2]);
        assert!(matches!(&ops[4], Op::Chats(c) if c[0].last_message == "2"));
    }

    #[test]
    fn statuses_are_last_wins_per_id_and_follow_their_inserts() {
        let batch = vec![
            msg(1),
            msg(2),
            status(&[1, 2], MessageStatus::Received),
            status(&[1], MessageStatus::Read),
            status(&[7], MessageStatus::Read),
            msg(3),
        ];
        let ops = plan(&batch);
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert_eq!(ids(&ops[0]), vec![1, 2, 3]);
        assert_eq!(ops[1], Op::Statuses(MessageStatus::Received, vec![2]));
        assert_eq!(ops[2], Op::Statuses(MessageStatus::Read, vec![1, 7]));
    }

    #[test]
    fn a_status_before_its_insert_closes_the_segment() {
        let batch = vec![msg(1), status(&[2], MessageStatus::Read), msg(2)];
        let ops = plan(&batch);
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert_eq!(ids(&ops[0]), vec![1]);
        assert_eq!(ops[1], Op::Statuses(MessageStatus::Read, vec![2]));
        assert_eq!(
            ids(&ops[2]),
            vec![2],
            "inserted after the update, as in the batch"
        );
    }

    #[test]
    fn chunks_use_fixed_sizes_and_respect_limits() {
        let sizes = |v: Vec<std::ops::Range<usize>>| v.iter().map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(sizes(chunks(&[1; 4096], 7281, 1 << 30)), vec![4096]);
        assert_eq!(sizes(chunks(&[1; 4097], 7281, 1 << 30)), vec![4096, 1]);
        assert_eq!(
            sizes(chunks(&[1; 300], 7281, 1 << 30)),
            vec![256, 16, 16, 4, 4, 4]
        );
        // Byte budget: 100-byte rows, 1000 bytes per chunk.
        assert_eq!(sizes(chunks(&[100; 20], 7281, 1000)), vec![4, 4, 4, 4, 4]);
        // Placeholder limit.
        assert_eq!(
            sizes(chunks(&[1; 100], 50, 1 << 30)),
            vec![16, 16, 16, 16, 16, 16, 4]
        );
        // A row over budget goes alone.
        assert_eq!(sizes(chunks(&[5000, 1, 1], 7281, 1000)), vec![1, 1, 1]);
        assert!(chunks(&[], 10, 10).is_empty());
        // Every chunk of messages and chat rows fits the placeholder limit.
        assert!(CHUNK_ROWS[0] * MESSAGE_COLUMNS <= MAX_PLACEHOLDERS);
    }

    #[test]
    fn placeholders_are_rows_of_question_marks() {
        assert_eq!(placeholders(3, 2), "(?,?,?),(?,?,?)");
        assert_eq!(placeholders(1, 1), "(?)");
    }

    #[test]
    fn datetimes_use_the_wire_format() {
        assert_eq!(
            datetime(Value::Date(2025, 3, 1, 9, 5, 7, 0), "t").ok(),
            Some("2025-03-01 09:05:07".to_string())
        );
        assert_eq!(
            datetime(Value::Bytes(b"2025-03-01 09:05:07.250000".to_vec()), "t").ok(),
            Some("2025-03-01 09:05:07".to_string())
        );
        assert_eq!(
            datetime(Value::Bytes(b"2025-03-01 09:05:07".to_vec()), "t").ok(),
            Some("2025-03-01 09:05:07".to_string())
        );
        assert_eq!(datetime(Value::NULL, "t").ok(), Some(String::new()));
        assert!(text(Value::Bytes(vec![0xff]), "t").is_err());
        assert_eq!(int(Value::Bytes(b"42".to_vec()), "t").ok(), Some(42));
    }

    #[test]
    fn guards_parse_and_attach_to_the_next_statement() {
        let m = Migration {
            version: 9,
            name: "t",
            sql: "-- c\n-- corechat:skip-if column t.c\nALTER TABLE t\n  ADD COLUMN c INT;\n\
                  ALTER TABLE t MODIFY d TEXT;\n-- corechat:skip-if index t.i\nCREATE INDEX i ON t (c);\n",
        };
        let s = steps(&m).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].sql, "ALTER TABLE t\n  ADD COLUMN c INT");
        assert_eq!(
            s[0].guard,
            Some(Guard {
                object: Object::Column {
                    table: "t".into(),
                    column: "c".into()
                },
                skip_if_exists: true
            })
        );
        assert_eq!(s[1].guard, None);
        assert_eq!(
            s[2].guard,
            Some(Guard {
                object: Object::Index {
                    table: "t".into(),
                    index: "i".into()
                },
                skip_if_exists: true
            })
        );
        let m = Migration {
            version: 9,
            name: "t",
            sql: "-- corechat:skip-unless foreign-key t.t_ibfk_1\nALTER TABLE t DROP FOREIGN KEY t_ibfk_1;\n",
        };
        let s = steps(&m).unwrap();
        assert_eq!(
            s[0].guard,
            Some(Guard {
                object: Object::ForeignKey {
                    table: "t".into(),
                    name: "t_ibfk_1".into()
                },
                skip_if_exists: false
            })
        );
        assert_eq!(
            s[0].guard.as_ref().map(Guard::reason).as_deref(),
            Some("foreign-key t.t_ibfk_1 does not exist")
        );
        for bad in [
            "-- corechat:skip-if table t\nSELECT 1;",
            "-- corechat:skip-when index t.i\nSELECT 1;",
            "-- corechat:skip-if column t.c\n",
            "-- corechat:skip-if column t.c\n-- corechat:skip-if column t.d\nSELECT 1;",
        ] {
            let m = Migration {
                version: 9,
                name: "t",
                sql: bad,
            };
            assert!(steps(&m).is_err(), "{bad}");
        }
    }

    #[test]
    fn our_splitting_matches_the_sql_crate() {
        for m in corechat_sql::MYSQL {
            let ours: Vec<String> = steps(m).unwrap().into_iter().map(|s| s.sql).collect();
            assert_eq!(ours, corechat_sql::statements(m.sql), "{}", m.name);
        }
    }

    #[test]
    fn histories_are_compared_by_version_and_name() {
        let a = |version: u32, name: &str| AppliedMigration {
            version,
            name: name.into(),
            applied_at: String::new(),
        };
        let (pending, unknown) = compare(&[a(1, "schema")], corechat_sql::MYSQL).unwrap();
        assert_eq!(pending.len(), corechat_sql::MYSQL.len() - 1);
        assert!(unknown.is_empty());
        let (_, unknown) =
            compare(&[a(1, "schema"), a(999, "future")], corechat_sql::MYSQL).unwrap();
        assert_eq!(unknown, vec![a(999, "future")]);
        assert!(compare(&[a(1, "other")], corechat_sql::MYSQL).is_err());
    }
}
