//! What only the `mysql_*` integration tests need on top of `tests/common`: a throwaway
//! MariaDB/MySQL database per test, the legacy fixture, the real `corechat` binary started on
//! that database, and queries of the rows the server wrote.
//!
//! Needs `CORECHAT_TEST_MYSQL_URL` (e.g. `mysql://corechat:corechat@127.0.0.1:3306`), naming a
//! user that may create databases `corechat_*`:
//! `export CORECHAT_TEST_MYSQL_URL=$(scripts/mariadb.sh --url | tail -n1)`.
//! Without it these tests FAIL with that hint; they never pass silently.
//!
//! A test file uses it with `mod common; mod mysql_common; use common::*; use mysql_common::*;`
//! (it builds on `crate::common`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

pub use mysql::prelude::Queryable;
pub use mysql::{Conn, Opts};

use crate::common::{TestServer, FAST_AUTH};

/// The server's URL without a database, from `CORECHAT_TEST_MYSQL_URL`.
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
/// ends, also when it fails.
pub struct TestDb {
    pub name: String,
    pub url: String,
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
        TestDb { name, url }
    }

    pub fn conn(&self) -> Conn {
        Conn::new(Opts::from_url(&self.url).expect("test URL parses")).expect("test connection")
    }

    /// Starts the real server on this database with `shards` shards, [`FAST_AUTH`] and `extra`
    /// flags (its data directory, a fresh one, goes unused with `--database`).
    pub fn start(&self, shards: usize, extra: &[&str]) -> TestServer {
        let mut flags: Vec<&str> = vec!["--database", &self.url];
        flags.extend_from_slice(FAST_AUTH);
        flags.extend_from_slice(extra);
        TestServer::start_with(shards, &flags)
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

/// Stored messages by body.
pub fn rows_by_body(stored: &[Msg]) -> HashMap<&str, Vec<&Msg>> {
    let mut by: HashMap<&str, Vec<&Msg>> = HashMap::new();
    for m in stored {
        by.entry(m.body.as_str()).or_default().push(m);
    }
    by
}

/// The one message stored with `body` (in [`rows_by_body`]), asserting there is exactly one.
#[track_caller]
pub fn stored_once<'a>(by: &HashMap<&str, Vec<&'a Msg>>, body: &str) -> &'a Msg {
    let rows = by.get(body).map(Vec::as_slice).unwrap_or(&[]);
    assert_eq!(
        rows.len(),
        1,
        "acknowledged message {body:?} stored {} times",
        rows.len()
    );
    rows[0]
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
