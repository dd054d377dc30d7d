//! `corechat-admin seed`: fills an empty database with a synthetic but consistent population,
//! to measure how long the server takes to load it (and how much memory it then holds).
//!
//! What it writes, for `--users N --messages M --friends K --undelivered F`:
//!
//! * N users with ids `BASE..BASE+N` (11-digit phone numbers by default, so they cannot clash
//!   with `corechat-bench`'s 12-digit ids), all with the same password. The argon2id PHC
//!   string is computed ONCE (with the server's default cost) and reused for every row:
//!   hashing a million passwords would take hours, and every seeded user can still log in.
//! * N x K friendships, user i with i+1 .. i+K (mod N): 2 x N x K `accepted` relation rows,
//!   so each user has 2K friends.
//! * M messages spread evenly over the friendships. A fraction F of them, the most recent
//!   ones (highest ids), are `send`: undelivered, the receiver was offline; they are what
//!   the server keeps in memory at start. The others are `read` and alternate direction. The
//!   messages are written conversation after conversation (the delivered ones, then the
//!   undelivered ones), so that message ids, sender ids and receiver ids grow together: the
//!   indexes are appended to, not written at random (that matters for MariaDB with a small
//!   buffer pool).
//! * Both chat rows of every conversation that has messages, with its last message and the
//!   receiver's unread count.
//!
//! How: messages and chat rows always go through the persist crate's `Backend::write_batch`
//! (the path the server uses) in big batches; on SQLite users and relations do too. On
//! MySQL/MariaDB, `write_batch` writes a user or a relation with one statement per row (one
//! round trip each), so users and relations are written with multi-row `INSERT`s instead,
//! unless `--via-backend` is given (to compare).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use corechat_persist::backend::{mysql::MysqlBackend, sqlite::SqliteBackend};
use corechat_persist::model::{ChatRow, MessageRow, MessageStatus, Relation, RelationRow, UserRow};
use corechat_persist::{Backend, PersistError, WriteRecord};
use mysql::prelude::Queryable;

/// Users created at this time; messages are one second apart from the next day on.
const CREATED: &str = "2024-01-01 00:00:00";
const MESSAGES_FROM: i64 = 1_704_153_600; // 2024-01-02 00:00:00 UTC

#[derive(clap::Args, Debug)]
pub struct SeedArgs {
    /// MySQL/MariaDB database to fill: mysql://user:pass@host:port/db
    #[arg(
        long,
        required_unless_present = "data_dir",
        conflicts_with = "data_dir"
    )]
    database: Option<String>,
    /// Embedded store (SQLite) directory to fill; created if missing
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// MySQL: CREATE DATABASE IF NOT EXISTS first
    #[arg(long)]
    create: bool,
    /// Users
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Messages in total
    #[arg(long, default_value_t = 10_000_000)]
    messages: u64,
    /// Friendships each user starts (with the next K users): every user ends with 2K friends
    #[arg(long, value_name = "K", default_value_t = 1)]
    friends: u64,
    /// Fraction of the messages left undelivered (status 'send')
    #[arg(long, value_name = "FRACTION", default_value_t = 0.05)]
    undelivered: f64,
    /// Every user's password
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// First user id (phone number)
    #[arg(long, default_value_t = 13_000_000_000)]
    base: u64,
    /// Records per transaction (write_batch call)
    #[arg(long, default_value_t = 65_536)]
    batch: usize,
    /// argon2id memory cost of the one hash (the server's default)
    #[arg(long, value_name = "KIB", default_value_t = 19_456)]
    argon2_memory_kib: u32,
    /// argon2id passes of the one hash (the server's default)
    #[arg(long, value_name = "N", default_value_t = 2)]
    argon2_passes: u32,
    /// MySQL: write users and relations through write_batch too (one statement per row)
    #[arg(long)]
    via_backend: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{0}")]
    Persist(#[from] PersistError),
    #[error("mysql: {0}")]
    Mysql(#[from] mysql::Error),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Where the rows go.
enum Target {
    Sqlite {
        backend: SqliteBackend,
    },
    Mysql {
        backend: MysqlBackend,
        /// Our own connection for the multi-row inserts of users and relations.
        conn: mysql::Conn,
    },
}

impl Target {
    fn backend(&mut self) -> &mut dyn Backend {
        match self {
            Target::Sqlite { backend } => backend,
            Target::Mysql { backend, .. } => backend,
        }
    }
}

/// What was written, and how long each part took.
#[derive(Debug, Default)]
struct Tally {
    users: u64,
    relations: u64,
    chats: u64,
    messages: u64,
    undelivered: u64,
    hash_time: Duration,
    users_time: Duration,
    relations_time: Duration,
    messages_time: Duration,
}

pub fn run(a: &SeedArgs) -> Result<(), SeedError> {
    validate(a)?;
    let t0 = Instant::now();
    let mut tally = Tally::default();

    let th = Instant::now();
    let hash = hash_once(&a.password, a.argon2_memory_kib, a.argon2_passes)?;
    tally.hash_time = th.elapsed();

    let (mut target, what) = open(a)?;
    eprintln!(
        "seed: {what}: {} users, {} friendships each, {} messages ({}% undelivered)",
        a.users,
        a.friends,
        a.messages,
        a.undelivered * 100.0
    );

    let t = Instant::now();
    write_users(a, &hash, &mut target, &mut tally)?;
    tally.users_time = t.elapsed();
    progress("users", tally.users, tally.users_time);

    let t = Instant::now();
    write_relations(a, &mut target, &mut tally)?;
    tally.relations_time = t.elapsed();
    progress("relation rows", tally.relations, tally.relations_time);

    let t = Instant::now();
    write_messages(a, &mut target, &mut tally)?;
    tally.messages_time = t.elapsed();
    progress("messages", tally.messages, tally.messages_time);

    println!(
        "seeded {what}: {} users, {} relation rows, {} chat rows, {} messages ({} undelivered) \
         in {:.1} s (hash {:.2} s, users {:.1} s, relations {:.1} s, messages and chat rows {:.1} s)",
        tally.users,
        tally.relations,
        tally.chats,
        tally.messages,
        tally.undelivered,
        t0.elapsed().as_secs_f64(),
        tally.hash_time.as_secs_f64(),
        tally.users_time.as_secs_f64(),
        tally.relations_time.as_secs_f64(),
        tally.messages_time.as_secs_f64(),
    );
    Ok(())
}

fn validate(a: &SeedArgs) -> Result<(), SeedError> {
    let bad = |m: String| Err(SeedError::Invalid(m));
    if a.users < 2 {
        return bad("--users must be at least 2".into());
    }
    if a.friends == 0 || 2 * a.friends >= a.users {
        return bad(format!(
            "--friends must be between 1 and {} for {} users",
            (a.users - 1) / 2,
            a.users
        ));
    }
    if !(0.0..=1.0).contains(&a.undelivered) {
        return bad("--undelivered is a fraction between 0 and 1".into());
    }
    if a.base == 0 || (a.base + a.users - 1).to_string().len() > 12 {
        return bad("user ids are phone numbers of at most 12 digits: lower --base".into());
    }
    if a.batch == 0 {
        return bad("--batch must be at least 1".into());
    }
    Ok(())
}

/// The PHC string every seeded user gets: one argon2id hash, as the server would compute it.
fn hash_once(password: &str, memory_kib: u32, passes: u32) -> Result<String, SeedError> {
    let params = Params::new(memory_kib, passes, 1, None)
        .map_err(|e| SeedError::Invalid(format!("argon2 parameters: {e}")))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| SeedError::Invalid(e.to_string()))?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SeedError::Invalid(format!("argon2: {e}")))
}

/// Opens (creating and migrating) the target and checks it holds no user and no message.
fn open(a: &SeedArgs) -> Result<(Target, String), SeedError> {
    match (&a.database, &a.data_dir) {
        (Some(url), _) => {
            if a.create {
                create_database(url)?;
            }
            let backend = MysqlBackend::open(url)?;
            let opts = mysql::Opts::from_url(url).map_err(|e| SeedError::Invalid(e.to_string()))?;
            let mut conn = mysql::Conn::new(opts)?;
            for s in [
                "SET NAMES utf8mb4",
                "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,STRICT_ALL_TABLES,NO_ZERO_IN_DATE,\
                 NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO'",
                "SET SESSION time_zone = '+00:00'",
            ] {
                conn.query_drop(s)?;
            }
            let users: Option<u64> = conn.query_first("SELECT EXISTS (SELECT 1 FROM m_user)")?;
            let msgs: Option<u64> =
                conn.query_first("SELECT EXISTS (SELECT 1 FROM m_friends_message)")?;
            if users.unwrap_or(0) + msgs.unwrap_or(0) > 0 {
                return Err(SeedError::Invalid(format!(
                    "{} already holds users or messages: seed an empty database",
                    corechat_persist::backend::mysql::mask_url(url)
                )));
            }
            let what = backend.describe();
            Ok((Target::Mysql { backend, conn }, what))
        }
        (None, Some(dir)) => {
            let backend = SqliteBackend::open(dir)?;
            let check = rusqlite::Connection::open(backend.path())?;
            let n: i64 = check.query_row(
                "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM m_user LIMIT 1)) + \
                 (SELECT COUNT(*) FROM (SELECT 1 FROM m_friends_message LIMIT 1))",
                [],
                |r| r.get(0),
            )?;
            if n > 0 {
                return Err(SeedError::Invalid(format!(
                    "{} already holds users or messages: seed an empty store",
                    backend.path().display()
                )));
            }
            let what = backend.describe();
            Ok((Target::Sqlite { backend }, what))
        }
        (None, None) => Err(SeedError::Invalid(
            "give --database URL or --data-dir DIR".into(),
        )),
    }
}

/// `CREATE DATABASE IF NOT EXISTS` the database named in `url`.
pub(crate) fn create_database(url: &str) -> Result<(), SeedError> {
    let opts = mysql::Opts::from_url(url).map_err(|e| SeedError::Invalid(e.to_string()))?;
    let db = opts
        .get_db_name()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| SeedError::Invalid("the URL names no database".into()))?
        .to_string();
    if !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(SeedError::Invalid(format!(
            "database name {db:?}: use letters, digits and _"
        )));
    }
    let mut conn = mysql::Conn::new(mysql::OptsBuilder::from_opts(opts).db_name(None::<String>))?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS `{db}` DEFAULT CHARACTER SET utf8mb4"
    ))?;
    Ok(())
}

fn progress(what: &str, n: u64, d: Duration) {
    let secs = d.as_secs_f64().max(1e-9);
    eprintln!("seed: {n} {what} in {secs:.1} s ({:.0}/s)", n as f64 / secs);
}

fn user_id(a: &SeedArgs, i: u64) -> String {
    (a.base + i).to_string()
}

fn user_row(a: &SeedArgs, i: u64, hash: &str) -> UserRow {
    UserRow {
        user_id: user_id(a, i),
        password: hash.to_string(),
        phone: user_id(a, i),
        name: format!("seed user {i}"),
        email: format!("s{i}@seed.an"),
        avatar: "/default.jpg".into(),
        status: "inactive".into(),
        created: CREATED.into(),
    }
}

/// Friendship `f` (0 .. N x K): user i = f / K with user i + 1 + f % K (mod N); the first
/// one asked.
fn friendship(a: &SeedArgs, f: u64) -> (u64, u64) {
    let i = f / a.friends;
    (i, (i + 1 + f % a.friends) % a.users)
}

/// Hands `records` to `write_batch` once `batch` of them are waiting (or at the end).
struct Batcher {
    records: Vec<WriteRecord>,
    max: usize,
    batches: u64,
}

impl Batcher {
    fn new(max: usize) -> Self {
        Batcher {
            records: Vec::with_capacity(max.min(1 << 20)),
            max,
            batches: 0,
        }
    }

    fn push(&mut self, r: WriteRecord, backend: &mut dyn Backend) -> Result<(), SeedError> {
        self.records.push(r);
        if self.records.len() >= self.max {
            self.flush(backend)?;
        }
        Ok(())
    }

    fn flush(&mut self, backend: &mut dyn Backend) -> Result<(), SeedError> {
        if !self.records.is_empty() {
            backend.write_batch(&self.records)?;
            self.records.clear();
            self.batches += 1;
            if self.batches.is_multiple_of(50) {
                eprintln!("seed: {} batches written", self.batches);
            }
        }
        Ok(())
    }
}

/// Rows per multi-row INSERT, and rows per transaction, of the MySQL bulk path.
const BULK_ROWS: usize = 1000;
const BULK_TX_ROWS: usize = 50_000;

/// Writes `n` rows of `arity` columns with multi-row INSERTs, `row(i, params)` pushing the
/// parameters of row i; one transaction per [`BULK_TX_ROWS`] rows.
fn bulk_insert(
    conn: &mut mysql::Conn,
    head: &str,
    arity: usize,
    n: u64,
    row: &mut dyn FnMut(u64, &mut Vec<mysql::Value>),
) -> Result<(), SeedError> {
    let mut i = 0;
    while i < n {
        let mut tx = conn.start_transaction(mysql::TxOpts::default())?;
        let tx_end = (i + BULK_TX_ROWS as u64).min(n);
        while i < tx_end {
            let rows = ((tx_end - i) as usize).min(BULK_ROWS);
            let mut sql = String::with_capacity(head.len() + rows * (arity * 2 + 3));
            sql.push_str(head);
            for r in 0..rows {
                sql.push_str(if r == 0 { "(" } else { ",(" });
                for c in 0..arity {
                    sql.push_str(if c == 0 { "?" } else { ",?" });
                }
                sql.push(')');
            }
            let mut params = Vec::with_capacity(rows * arity);
            for k in 0..rows as u64 {
                row(i + k, &mut params);
            }
            tx.exec_drop(sql, params)?;
            i += rows as u64;
        }
        tx.commit()?;
    }
    Ok(())
}

fn bytes(s: &str) -> mysql::Value {
    mysql::Value::Bytes(s.as_bytes().to_vec())
}

fn write_users(
    a: &SeedArgs,
    hash: &str,
    target: &mut Target,
    tally: &mut Tally,
) -> Result<(), SeedError> {
    match target {
        Target::Mysql { conn, .. } if !a.via_backend => {
            bulk_insert(
                conn,
                "INSERT INTO m_user (user_id, user_password, user_phone, user_name, user_email, \
                 user_avatar, user_status, user_created) VALUES ",
                8,
                a.users,
                &mut |i, p| {
                    let u = user_row(a, i, hash);
                    p.extend([
                        bytes(&u.user_id),
                        bytes(&u.password),
                        bytes(&u.phone),
                        bytes(&u.name),
                        bytes(&u.email),
                        bytes(&u.avatar),
                        bytes(&u.status),
                        bytes(&u.created),
                    ]);
                },
            )?;
        }
        _ => {
            let backend = target.backend();
            let mut b = Batcher::new(a.batch);
            for i in 0..a.users {
                b.push(WriteRecord::InsertUser(user_row(a, i, hash)), backend)?;
            }
            b.flush(backend)?;
        }
    }
    tally.users = a.users;
    Ok(())
}

fn relation_rows(a: &SeedArgs, f: u64) -> [RelationRow; 2] {
    let (x, y) = friendship(a, f);
    let (x, y) = (user_id(a, x), user_id(a, y));
    let row = |u: &str, v: &str| RelationRow {
        user_id: u.to_string(),
        friend_id: v.to_string(),
        relation: Relation::Accepted,
        created: CREATED.into(),
        requested_by: Some(x.clone()),
    };
    [row(&x, &y), row(&y, &x)]
}

fn write_relations(a: &SeedArgs, target: &mut Target, tally: &mut Tally) -> Result<(), SeedError> {
    let friendships = a.users * a.friends;
    match target {
        Target::Mysql { conn, .. } if !a.via_backend => {
            bulk_insert(
                conn,
                "INSERT INTO m_friends_relation (user_id, friend_id, friend_relation, \
                 created_relation, requested_by) VALUES ",
                5,
                2 * friendships,
                &mut |i, p| {
                    let r = &relation_rows(a, i / 2)[(i % 2) as usize];
                    p.extend([
                        bytes(&r.user_id),
                        bytes(&r.friend_id),
                        bytes(r.relation.as_str()),
                        bytes(&r.created),
                        r.requested_by.as_deref().map_or(mysql::Value::NULL, bytes),
                    ]);
                },
            )?;
        }
        _ => {
            let backend = target.backend();
            let mut b = Batcher::new(a.batch);
            for f in 0..friendships {
                for r in relation_rows(a, f) {
                    b.push(WriteRecord::UpsertRelation(r), backend)?;
                }
            }
            b.flush(backend)?;
        }
    }
    tally.relations = 2 * friendships;
    Ok(())
}

/// `yyyy-MM-dd HH:mm:ss` of unix time `t`, the date part cached per day.
struct Clock {
    day: i64,
    date: String,
}

impl Clock {
    fn format(&mut self, t: i64) -> String {
        let day = t.div_euclid(86_400);
        if day != self.day || self.date.is_empty() {
            self.day = day;
            self.date = chrono::DateTime::from_timestamp(day * 86_400, 0)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_else(|| "2024-01-02".into());
        }
        let s = t.rem_euclid(86_400);
        let mut out = String::with_capacity(19);
        let _ = write!(
            out,
            "{} {:02}:{:02}:{:02}",
            self.date,
            s / 3600,
            s / 60 % 60,
            s % 60
        );
        out
    }
}

/// `floor(total * (f + 1) / parts) - floor(total * f / parts)`: spreads `total` over `parts`.
fn share(total: u64, parts: u64, f: u64) -> u64 {
    let at = |k: u64| (u128::from(total) * u128::from(k) / u128::from(parts)) as u64;
    at(f + 1) - at(f)
}

/// A message of conversation `x` - `y`.
fn message(id: u64, from: &str, to: &str, status: MessageStatus, clock: &mut Clock) -> MessageRow {
    MessageRow {
        message_id: id,
        sender_id: from.to_string(),
        receiver_id: to.to_string(),
        chat_type: "friend".into(),
        body: format!("seed message {id}"),
        message_type: "text".into(),
        file_path: " ".into(),
        status,
        timestamp: clock.format(MESSAGES_FROM + id as i64),
    }
}

/// Both chat rows of conversation `x` - `y` after its last message `last`; `y` has `unread`.
fn chat_rows(x: &str, y: &str, last: &MessageRow, unread: u64) -> [ChatRow; 2] {
    let row = |owner: &str, peer: &str, unread_count: i64| ChatRow {
        user_id: owner.to_string(),
        comm_id: peer.to_string(),
        chat_type: "friend".into(),
        last_message: last.body.clone(),
        last_message_type: Some("text".into()),
        last_time: last.timestamp.clone(),
        unread_count,
        chat_status: "chatting".into(),
    };
    [row(x, y, 0), row(y, x, unread as i64)]
}

/// Two passes over the conversations, so that the undelivered messages are the most recent
/// ones (the highest ids), as in a real history: first the delivered (`read`) messages of
/// each conversation, back and forth; then, for the conversations that have some, the
/// undelivered (`send`) ones, all from the first user to the second (who is offline). Each
/// pass writes conversation after conversation, so ids and user ids grow together.
fn write_messages(a: &SeedArgs, target: &mut Target, tally: &mut Tally) -> Result<(), SeedError> {
    let friendships = a.users * a.friends;
    let undelivered_total = ((a.messages as f64) * a.undelivered).round() as u64;
    let backend = target.backend();
    let mut b = Batcher::new(a.batch);
    let mut clock = Clock {
        day: 0,
        date: String::new(),
    };
    let counts = |f: u64| {
        let count = share(a.messages, friendships, f);
        (count, share(undelivered_total, friendships, f).min(count))
    };
    let mut id: u64 = 0;
    for pass in 0..2 {
        for f in 0..friendships {
            let (count, unread) = counts(f);
            let n = if pass == 0 { count - unread } else { unread };
            if n == 0 {
                continue;
            }
            let (x, y) = friendship(a, f);
            let (x, y) = (user_id(a, x), user_id(a, y));
            let mut last = None;
            for k in 0..n {
                id += 1;
                let m = if pass == 0 {
                    let (from, to) = if k % 2 == 0 { (&x, &y) } else { (&y, &x) };
                    message(id, from, to, MessageStatus::Read, &mut clock)
                } else {
                    message(id, &x, &y, MessageStatus::Send, &mut clock)
                };
                if k + 1 == n {
                    last = Some(m.clone());
                }
                b.push(WriteRecord::InsertMessage(m), backend)?;
            }
            tally.messages += n;
            if pass == 1 {
                tally.undelivered += n;
            }
            // The chat rows, once the conversation's last message is written.
            if let Some(last) = last.filter(|_| pass == 1 || unread == 0) {
                for c in chat_rows(&x, &y, &last, unread) {
                    b.push(WriteRecord::UpsertChat(c), backend)?;
                    tally.chats += 1;
                }
            }
        }
    }
    b.flush(backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, parts) in [(10, 3), (10_000_000, 1_000_000), (5, 7), (0, 4)] {
            let sum: u64 = (0..parts).map(|f| share(total, parts, f)).sum();
            assert_eq!(sum, total);
        }
    }

    #[test]
    fn clock_formats_like_the_wire() {
        let mut c = Clock {
            day: 0,
            date: String::new(),
        };
        assert_eq!(c.format(MESSAGES_FROM), "2024-01-02 00:00:00");
        assert_eq!(c.format(MESSAGES_FROM + 86_399), "2024-01-02 23:59:59");
        assert_eq!(
            c.format(MESSAGES_FROM + 86_400 + 3661),
            "2024-01-03 01:01:01"
        );
    }

    #[test]
    fn a_tiny_store_loads_consistently() {
        let dir = std::env::temp_dir().join(format!("corechat-seed-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = SeedArgs {
            database: None,
            data_dir: Some(dir.clone()),
            create: false,
            users: 10,
            messages: 95,
            friends: 2,
            undelivered: 0.1,
            password: "pw".into(),
            base: 13_000_000_000,
            batch: 7,
            argon2_memory_kib: 64,
            argon2_passes: 1,
            via_backend: false,
        };
        run(&a).unwrap();
        let mut backend = SqliteBackend::open(&dir).unwrap();
        let mut undelivered = Vec::new();
        let mut chats = 0;
        let mut unread = 0;
        let s = backend
            .load(&mut |l| match l {
                corechat_persist::Loaded::Undelivered(m) => undelivered.push(m),
                corechat_persist::Loaded::Chat(c) => {
                    chats += 1;
                    unread += c.unread_count;
                }
                _ => {}
            })
            .unwrap();
        assert_eq!(s.users, 10);
        assert_eq!(s.relations, 40);
        assert_eq!(s.chats, 40);
        assert_eq!(chats, 40);
        assert_eq!(s.undelivered, 10);
        assert_eq!(s.max_message_id, 95);
        assert!(undelivered.iter().all(|m| m.status == MessageStatus::Send));
        // The undelivered messages are the most recent ones, and the chat rows count them.
        let ids: Vec<u64> = undelivered.iter().map(|m| m.message_id).collect();
        assert_eq!(ids, (86..=95).collect::<Vec<_>>());
        assert_eq!(unread, 10);
        // A second seed into the same store is refused.
        assert!(matches!(run(&a), Err(SeedError::Invalid(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
