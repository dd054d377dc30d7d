//! What the `mysql_*` integration tests share: a throwaway MariaDB/MySQL database per test,
//! the legacy fixture, and the real `corechat` binary started on that database.
//!
//! Needs `CORECHAT_TEST_MYSQL_URL` (e.g. `mysql://corechat:corechat@127.0.0.1:3306`), naming a
//! user that may create databases `corechat_*`:
//! `export CORECHAT_TEST_MYSQL_URL=$(scripts/mariadb.sh --url | tail -n1)`.
//! Without it these tests FAIL with that hint; they never pass silently.
//!
//! A test file uses it with `mod mysql_common; use mysql_common::*;`. It is self-contained (a
//! copy of the few harness pieces of `tests/common` these tests need), so that work on the
//! other integration tests' harness cannot break these.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use corechat_engine::client::{reply_status, reply_type, Client};
pub use mysql::prelude::Queryable;
pub use mysql::{Conn, Opts};
pub use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// A `corechat` process on an ephemeral port, killed (SIGKILL) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub child: Option<Child>,
}

impl TestServer {
    /// Starts the binary with `shards` shards, `data` as its data directory and `extra` flags;
    /// returns once it printed its ready line (at most 60 s).
    pub fn start_on(data: &Path, shards: usize, extra: &[&str]) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_corechat"));
        cmd.args(["--listen", "127.0.0.1:0", "--no-pin", "--log-level", "warn"])
            .args(["--admin", "off"])
            .args(["--shards", &shards.to_string()])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start corechat");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the ready line, then keeps draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("corechat ready on ") {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                    break;
                }
            }
            for _ in lines {}
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("ready line names an address"),
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                panic!("corechat did not get ready (exit status {status:?}; its stderr is above)");
            }
        };
        TestServer {
            addr,
            child: Some(child),
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr).expect("connect to corechat")
    }

    /// SIGTERM, then wait (at most 60 s); returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: signals our own child process, which has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("corechat did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `count` phone numbers from `base` on, one on each of `shards` shards in turn, as the server
/// places users.
pub fn phones_on_distinct_shards(base: u64, count: usize, shards: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut n = base;
    while out.len() < count {
        let p = n.to_string();
        if corechat_shards::shard_of(&p, shards) == out.len() % shards {
            out.push(p);
        }
        n += 1;
    }
    out
}

/// Registers and logs in a user (and asks for unread messages, as the client does).
pub fn user(server: &TestServer, phone: &str, password: &str) -> Client {
    let mut c = server.client();
    let r = c
        .register(phone, &format!("user {phone}"), password)
        .expect("register reply");
    assert_eq!(r["status"], "success", "{r}");
    let r = c.login(phone, password).expect("login reply");
    assert_eq!(reply_status(&r), "success", "{r}");
    let r = c
        .simple("get_unread_messages", phone)
        .expect("get_unread_messages reply");
    assert_eq!(reply_type(&r), "get_unread_messages");
    c
}

/// Makes `a` and `b` friends (a asks, b accepts).
pub fn befriend(a: &mut Client, a_id: &str, b: &mut Client, b_id: &str) {
    let r = a.pair("add_friend", a_id, b_id).expect("add_friend reply");
    assert_eq!(r["status"], "success", "{r}");
    let r = b
        .pair("accept_friend", b_id, a_id)
        .expect("accept_friend reply");
    assert_eq!(r["status"], "success", "{r}");
}

/// A text `send_message` as the client writes it.
pub fn text(from: &str, to: &str, body: &str) -> Value {
    message(from, to, "text", body, " ")
}

// ---------------------------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------------------------

/// Flags every server in these tests gets on top of `--database`: a cheap argon2 (the tests
/// are about the database, and a debug build pays dearly for the default 19 MiB).
pub const FAST_AUTH: [&str; 4] = ["--argon2-memory-kib", "256", "--argon2-passes", "1"];

pub fn base_url() -> String {
    match std::env::var("CORECHAT_TEST_MYSQL_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ => panic!(
            "CORECHAT_TEST_MYSQL_URL is not set. These tests run the corechat binary against a \
             real MariaDB/MySQL: run `scripts/mariadb.sh` (installs and starts MariaDB on \
             127.0.0.1:3306 with the `corechat` test user), then \
             `export CORECHAT_TEST_MYSQL_URL=$(scripts/mariadb.sh --url | tail -n1)`"
        ),
    }
}

/// `base` (no database) with `db` as its database, keeping any `?options`.
pub fn with_db(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let mut url = format!("{}/{db}", head.trim_end_matches('/'));
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// A connection to the server without a database (to create and drop databases, and to kill
/// other sessions).
pub fn admin_conn() -> Conn {
    let base = base_url();
    let opts = Opts::from_url(&base)
        .unwrap_or_else(|e| panic!("CORECHAT_TEST_MYSQL_URL does not parse: {e}"));
    Conn::new(opts).unwrap_or_else(|e| {
        panic!(
            "cannot connect to {}: {e}; run scripts/mariadb.sh",
            corechat_persist::backend::mysql::mask_url(&base)
        )
    })
}

/// A database of its own for one test (`corechat_test_<tag>_<random>`), dropped when the test
/// ends, also when it fails. It also holds the (unused with `--database`) data directory the
/// servers of the test are given.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub fn new(tag: &str) -> TestDb {
        let name = format!("corechat_test_{tag}_{:016x}", rand::random::<u64>());
        assert!(name.len() <= 64, "{name} is too long for a database name");
        admin_conn()
            .query_drop(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
            ))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let url = with_db(&base_url(), &name);
        TestDb {
            name,
            url,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::new(Opts::from_url(&self.url).expect("test URL parses")).expect("test connection")
    }

    /// Starts the real server on this database with `shards` shards (and [`FAST_AUTH`]).
    pub fn start(&self, shards: usize, extra: &[&str]) -> TestServer {
        let mut flags: Vec<&str> = vec!["--database", &self.url];
        flags.extend_from_slice(&FAST_AUTH);
        flags.extend_from_slice(extra);
        TestServer::start_on(&self.dir.path().join("data"), shards, &flags)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Conn::new(Opts::from_url(&base_url()).expect("base URL parses")) {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}

pub fn fixture_path() -> PathBuf {
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/legacy-animalchat.sql");
    if beside.exists() {
        return beside;
    }
    match std::env::var("CORECHAT_SHARED_DIR") {
        Ok(dir) => PathBuf::from(dir).join("fixtures/legacy-animalchat.sql"),
        Err(_) => panic!(
            "legacy fixture not found at {} and CORECHAT_SHARED_DIR is not set",
            beside.display()
        ),
    }
}

/// Loads the database the old server left, statement by statement.
pub fn load_fixture(db: &TestDb) {
    let path = fixture_path();
    let sql = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut c = db.conn();
    for stmt in corechat_sql::statements(&sql) {
        c.query_drop(&stmt)
            .unwrap_or_else(|e| panic!("fixture statement failed: {e}\n{stmt}"));
    }
}

/// The recorded migrations: (version, name, applied_at).
pub fn versions(c: &mut Conn) -> Vec<(u32, String, String)> {
    c.query_map(
        "SELECT version, name, DATE_FORMAT(applied_at, '%Y-%m-%d %H:%i:%s') \
         FROM corechat_schema_version ORDER BY version",
        |(v, n, a): (u32, String, String)| (v, n, a),
    )
    .expect("corechat_schema_version")
}

/// The versions this build knows.
pub fn all_versions() -> Vec<u32> {
    corechat_sql::MYSQL.iter().map(|m| m.version).collect()
}

pub fn count(c: &mut Conn, sql: &str) -> u64 {
    c.query_first::<u64, _>(sql).expect("count").unwrap_or(0)
}

/// One row of `m_friends_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub id: u64,
    pub sender: String,
    pub receiver: String,
    pub body: String,
    pub kind: String,
    pub file_path: String,
    pub status: String,
    pub timestamp: String,
}

pub fn messages(c: &mut Conn) -> Vec<Msg> {
    let rows: Vec<mysql::Row> = c
        .query(
            "SELECT message_id, sender_id, receiver_id, IFNULL(message_body, ''), message_type, \
             IFNULL(file_path, ''), message_status, \
             DATE_FORMAT(message_timestamp, '%Y-%m-%d %H:%i:%s') \
             FROM m_friends_message ORDER BY message_id",
        )
        .expect("select messages");
    rows.into_iter()
        .map(|r| {
            let (id, sender, receiver, body, kind, file_path, status, timestamp) =
                mysql::from_row(r);
            Msg {
                id,
                sender,
                receiver,
                body,
                kind,
                file_path,
                status,
                timestamp,
            }
        })
        .collect()
}

/// One row of `m_chatlist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub last_message: String,
    pub last_message_type: Option<String>,
    pub unread_count: i64,
    pub chat_status: String,
}

/// `m_chatlist` by (user_id, comm_id).
pub fn chat_rows(c: &mut Conn) -> HashMap<(String, String), Chat> {
    let rows: Vec<mysql::Row> = c
        .query(
            "SELECT user_id, comm_id, IFNULL(last_message, ''), last_message_type, \
             unread_count, chat_status FROM m_chatlist",
        )
        .expect("select chats");
    rows.into_iter()
        .map(|r| {
            let (user, comm, last_message, last_message_type, unread_count, chat_status) =
                mysql::from_row(r);
            (
                (user, comm),
                Chat {
                    last_message,
                    last_message_type,
                    unread_count,
                    chat_status,
                },
            )
        })
        .collect()
}

/// `m_friends_relation` by (user_id, friend_id): the relation.
pub fn relations(c: &mut Conn) -> HashMap<(String, String), String> {
    c.query_map(
        "SELECT user_id, friend_id, friend_relation FROM m_friends_relation",
        |(u, f, r): (String, String, String)| ((u, f), r),
    )
    .expect("select relations")
    .into_iter()
    .collect()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`; panics with `what`
/// otherwise.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Logs `phone` in on a new connection and answers the client's `get_unread_messages`; returns
/// the client and that reply.
pub fn login(server: &TestServer, phone: &str, password: &str) -> (Client, Value) {
    let mut c = server.client();
    let r = c.login(phone, password).expect("login reply");
    assert_eq!(reply_status(&r), "success", "login of {phone}: {r}");
    let unread = c
        .simple("get_unread_messages", phone)
        .expect("get_unread_messages reply");
    (c, unread)
}

/// A `send_message` of any type, as the client writes it.
pub fn message(from: &str, to: &str, kind: &str, body: &str, file_path: &str) -> Value {
    json!({
        "type": "send_message", "send_id": from, "receiver_id": to, "chat_type": "friend",
        "message_body": body, "message_type": kind, "file_path": file_path,
        "message_timestamp": "2026-11-28 12:00:00"
    })
}

/// The elements of an array reply (an object reads as one element).
pub fn elements(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

/// `v[key]` as a string ("" when missing or not a string).
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The ids of the server's own sessions on `db` (its persistence connection): sessions of the
/// test user (`corechat`) on that database, except `admin`'s own.
pub fn server_sessions(admin: &mut Conn, db: &str) -> Vec<u64> {
    let opts = Opts::from_url(&base_url()).expect("base URL parses");
    let user = opts.get_user().unwrap_or("corechat").to_string();
    admin
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST \
             WHERE DB = ? AND USER = ? AND ID <> CONNECTION_ID()",
            (db, user),
        )
        .expect("processlist")
}
