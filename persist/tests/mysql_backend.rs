//! The MySQL backend against a real MariaDB/MySQL server (never a mock: the point is to prove
//! the SQL, the migrations and the retry behaviour on the real thing).
//!
//! Needs `CORECHAT_TEST_MYSQL_URL`, e.g. `mysql://corechat:corechat@127.0.0.1:3306`, naming a
//! user that may create databases `corechat_test_*`. `scripts/mariadb.sh` installs, starts and
//! configures such a server: `export CORECHAT_TEST_MYSQL_URL=$(scripts/mariadb.sh --url)`.
//! Without it these tests fail (they do not silently pass). Each test works in its own
//! throwaway database, dropped at the end.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corechat_persist::backend::mysql::{self as my, MysqlBackend};
use corechat_persist::backend::mysql_lanes::MysqlLanes;
use corechat_persist::model::{ChatRow, MessageRow, MessageStatus, Relation, RelationRow, UserRow};
use corechat_persist::{
    Ack, Backend, BatchConfig, Envelope, LoadSummary, Loaded, PersistError, PersistQueue,
    WriteRecord,
};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn base_url() -> String {
    match std::env::var("CORECHAT_TEST_MYSQL_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ => panic!(
            "CORECHAT_TEST_MYSQL_URL is not set. The MySQL backend tests need a real server: \
             run `scripts/mariadb.sh` (installs and starts MariaDB on 127.0.0.1:3306 with the \
             `corechat` test user), then `export CORECHAT_TEST_MYSQL_URL=$(scripts/mariadb.sh --url)`"
        ),
    }
}

/// `base` (no database) with `db` as its database, keeping any `?options`.
fn with_db(base: &str, db: &str) -> String {
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

/// A database of its own for one test, dropped when the test ends (also when it fails).
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    fn new(tag: &str) -> TestDb {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("corechat_test_{tag}_{:x}{n:x}{nanos:x}", std::process::id());
        assert!(name.len() <= 64, "{name} is too long for a database name");
        let mut admin = admin_conn();
        admin
            .query_drop(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
            ))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let url = with_db(&base_url(), &name);
        TestDb { name, url }
    }

    fn conn(&self) -> Conn {
        Conn::new(Opts::from_url(&self.url).expect("test URL parses")).expect("test connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Conn::new(Opts::from_url(&base_url()).expect("base URL parses")) {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}

fn admin_conn() -> Conn {
    let base = base_url();
    let opts = Opts::from_url(&base).unwrap_or_else(|e| panic!("bad CORECHAT_TEST_MYSQL_URL: {e}"));
    Conn::new(opts).unwrap_or_else(|e| {
        panic!(
            "cannot connect to {}: {e}; run scripts/mariadb.sh",
            my::mask_url(&base)
        )
    })
}

/// The test server's URL with the right user and a wrong password.
fn wrong_password_url() -> String {
    let opts = Opts::from_url(&base_url()).expect("base URL parses");
    format!(
        "mysql://{}:topsecret@{}:{}/corechat_nothing",
        opts.get_user().unwrap_or("corechat"),
        opts.get_ip_or_hostname(),
        opts.get_tcp_port()
    )
}

fn fixture_path() -> PathBuf {
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

/// Loads the database the old server left, statement by statement, through the driver.
fn load_fixture(db: &TestDb) {
    let path = fixture_path();
    let sql = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut c = db.conn();
    for stmt in corechat_sql::statements(&sql) {
        c.query_drop(&stmt)
            .unwrap_or_else(|e| panic!("fixture statement failed: {e}\n{stmt}"));
    }
}

/// Everything `load` streams, sorted into kinds.
#[derive(Debug, Default, PartialEq)]
struct State {
    users: Vec<UserRow>,
    relations: Vec<RelationRow>,
    chats: Vec<ChatRow>,
    undelivered: Vec<MessageRow>,
    summary: LoadSummary,
}

fn load(backend: &mut dyn Backend) -> State {
    let mut st = State::default();
    let summary = backend
        .load(&mut |l| match l {
            Loaded::User(u) => st.users.push(u),
            Loaded::Relation(r) => st.relations.push(r),
            Loaded::Chat(c) => st.chats.push(c),
            Loaded::Undelivered(m) => st.undelivered.push(m),
        })
        .expect("load");
    st.summary = summary;
    st
}

fn user(id: &str) -> UserRow {
    UserRow {
        user_id: id.into(),
        password: format!("$argon2id$v=19$m=19456,t=2,p=1${id}"),
        phone: id.chars().take(12).collect(),
        name: format!("name {id}"),
        email: format!("{id}@an.com"),
        avatar: "/default.jpg".into(),
        status: "inactive".into(),
        created: "2025-04-01 08:00:00".into(),
    }
}

fn message(id: u64, from: &str, to: &str, body: &str, status: MessageStatus) -> MessageRow {
    MessageRow {
        message_id: id,
        sender_id: from.into(),
        receiver_id: to.into(),
        chat_type: "friend".into(),
        body: body.into(),
        message_type: "text".into(),
        file_path: " ".into(),
        status,
        timestamp: format!(
            "2025-04-02 {:02}:{:02}:{:02}",
            id / 3600 % 24,
            id / 60 % 60,
            id % 60
        ),
    }
}

fn chat(user_id: &str, comm_id: &str, last: &str, unread: i64) -> ChatRow {
    ChatRow {
        user_id: user_id.into(),
        comm_id: comm_id.into(),
        chat_type: "friend".into(),
        last_message: last.into(),
        last_message_type: Some("text".into()),
        last_time: "2025-04-02 10:00:00".into(),
        unread_count: unread,
        chat_status: "chatting".into(),
    }
}

/// Every message row, by id, read back with plain SQL (not through the backend).
fn all_messages(c: &mut Conn) -> Vec<MessageRow> {
    let rows: Vec<mysql::Row> = c
        .query(
            "SELECT message_id, sender_id, receiver_id, chat_type, message_body, message_type, \
             file_path, message_status, DATE_FORMAT(message_timestamp, '%Y-%m-%d %H:%i:%s') \
             FROM m_friends_message ORDER BY message_id",
        )
        .expect("select messages");
    rows.into_iter()
        .map(|r| {
            let (id, s, rc, ct, body, mt, fp, st, ts): (
                u64,
                String,
                String,
                String,
                Option<String>,
                String,
                Option<String>,
                String,
                String,
            ) = mysql::from_row(r);
            MessageRow {
                message_id: id,
                sender_id: s,
                receiver_id: rc,
                chat_type: ct,
                body: body.unwrap_or_default(),
                message_type: mt,
                file_path: fp.unwrap_or_default(),
                status: MessageStatus::parse(&st).expect("known status"),
                timestamp: ts,
            }
        })
        .collect()
}

fn count(c: &mut Conn, sql: &str) -> u64 {
    c.query_first::<u64, _>(sql).expect("count").unwrap_or(0)
}

/// The shape of the schema: columns (name, type, nullable, default) and indexes, per table.
fn schema_shape(c: &mut Conn) -> Vec<String> {
    let mut out: Vec<String> = c
        .query_map(
            "SELECT CONCAT_WS(' ', table_name, column_name, column_type, is_nullable, \
             IFNULL(column_default, '-')) FROM information_schema.columns \
             WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position",
            |s: String| s,
        )
        .expect("columns");
    out.extend(
        c.query_map(
            "SELECT CONCAT_WS(' ', table_name, 'index', index_name, seq_in_index, column_name, \
             non_unique) FROM information_schema.statistics WHERE table_schema = DATABASE() \
             ORDER BY table_name, index_name, seq_in_index",
            |s: String| s,
        )
        .expect("indexes"),
    );
    out
}

/// `assert_eq!` for long lists, printing only the first difference.
fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: first difference at {i}:\n got {:?}\nwant {:?}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
}

fn versions(c: &mut Conn) -> Vec<(u32, String, String)> {
    c.query_map(
        "SELECT version, name, DATE_FORMAT(applied_at, '%Y-%m-%d %H:%i:%s') \
         FROM corechat_schema_version ORDER BY version",
        |(v, n, a): (u32, String, String)| (v, n, a),
    )
    .expect("versions")
}

fn all_versions() -> Vec<u32> {
    corechat_sql::MYSQL.iter().map(|m| m.version).collect()
}

// ---------------------------------------------------------------------------------------------
// Schema and migrations
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_database_gets_the_whole_schema() {
    let db = TestDb::new("empty");
    let before = my::schema_report(&db.url).expect("report");
    assert_eq!(before.current_version(), 0);
    assert!(before.legacy_tables.is_empty());
    assert_eq!(before.pending.len(), corechat_sql::MYSQL.len());
    let mut c = db.conn();
    assert_eq!(
        count(
            &mut c,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()"
        ),
        0,
        "a report changes nothing"
    );

    let mut backend = MysqlBackend::open(&db.url).expect("open");
    let v = versions(&mut c);
    assert_eq!(v.iter().map(|x| x.0).collect::<Vec<_>>(), all_versions());
    assert_eq!(v[0].1, "schema");

    let shape = schema_shape(&mut c).join("\n");
    for want in [
        "m_chatlist last_message_type enum('text','emoticon','image','audio','vedio','file','video') YES NULL",
        "m_chatlist last_message mediumtext YES",
        "m_friends_relation requested_by varchar(20) YES NULL",
        "m_friends_message message_body mediumtext YES",
        "m_friends_message index conversation 1 receiver_id 1",
        "m_friends_message index conversation 2 sender_id 1",
        "m_friends_message index conversation 3 message_status 1",
        "m_user index user_email 1 user_email 0",
    ] {
        assert!(shape.contains(want), "missing `{want}` in\n{shape}");
    }
    // One secondary index on messages, no foreign key on the hot tables (version 6).
    for gone in [
        "m_friends_message index receiver_status",
        "m_friends_message index receiver_id",
        "m_friends_message index sender_id",
    ] {
        assert!(!shape.contains(gone), "`{gone}` still in\n{shape}");
    }
    assert_eq!(
        count(
            &mut c,
            "SELECT COUNT(*) FROM information_schema.table_constraints \
             WHERE constraint_schema = DATABASE() AND constraint_type = 'FOREIGN KEY' \
             AND table_name IN ('m_friends_message', 'm_chatlist')"
        ),
        0
    );
    for table in ["m_groups", "m_groups_relation", "m_media_file"] {
        assert!(shape.contains(&format!("{table} ")), "{table} exists");
    }

    let st = load(&mut backend);
    assert_eq!(st, State::default());
    let after = backend.schema_report().expect("report");
    assert!(after.is_up_to_date(), "{after}");
    assert_eq!(after.current_version(), after.target_version());
}

#[test]
fn the_legacy_database_is_migrated_in_place_and_loads() {
    let db = TestDb::new("legacy");
    load_fixture(&db);
    let mut c = db.conn();
    // Rows the old server could have left that the fixture lacks: a 'vedio' preview and a
    // NULL preview type.
    c.query_drop(
        "INSERT INTO m_chatlist VALUES \
         ('13800000003', '13800000004', 'friend', '[视频]', 'vedio', '2025-03-05 12:00:00', 1, 'chatting'), \
         ('13800000004', '13800000003', 'friend', NULL, NULL, '2025-03-05 12:00:00', 0, 'close')",
    )
    .expect("legacy rows");
    let legacy_messages = all_messages(&mut c);
    assert_eq!(legacy_messages.len(), 3);

    let report = my::schema_report(&db.url).expect("report");
    assert_eq!(report.current_version(), 0);
    assert_eq!(report.legacy_tables.len(), 7, "{report}");
    assert_eq!(report.pending.len(), corechat_sql::MYSQL.len());
    assert!(report
        .pending
        .iter()
        .flat_map(|p| &p.statements)
        .all(|s| s.skipped_because.is_none()));
    let text = report.to_string();
    assert!(text.contains("legacy database"), "{text}");
    assert!(
        report.url.contains(":***@"),
        "password masked: {}",
        report.url
    );

    let started = Instant::now();
    let mut backend = MysqlBackend::open(&db.url).expect("open legacy");
    eprintln!(
        "mysql legacy: connect + migrations 1..={} in {:.0} ms",
        corechat_sql::MYSQL.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(
        versions(&mut c).iter().map(|x| x.0).collect::<Vec<_>>(),
        all_versions()
    );
    // Nothing lost or rewritten.
    assert_eq!(all_messages(&mut c), legacy_messages);

    let st = load(&mut backend);
    let ids: Vec<(&str, &str)> = st
        .users
        .iter()
        .map(|u| (u.user_id.as_str(), u.password.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("13800000001", "alice-pw"),
            ("13800000002", "bob-pw"),
            ("13800000003", "carol-pw"),
            ("13800000004", "dave-pw"),
        ],
        "plaintext passwords are kept for the engine to rehash at first login"
    );
    assert_eq!(
        st.users[0],
        UserRow {
            user_id: "13800000001".into(),
            password: "alice-pw".into(),
            phone: "13800000001".into(),
            name: "小红".into(),
            email: "13800000001@an.com".into(),
            avatar: "/images/avatar/3.png".into(),
            status: "inactive".into(),
            created: "2025-03-01 10:00:00".into(),
        }
    );
    assert_eq!(st.relations.len(), 4);
    assert!(st.relations.iter().all(|r| r.requested_by.is_none()));
    let carol_alice = st
        .relations
        .iter()
        .find(|r| r.user_id == "13800000003" && r.friend_id == "13800000001")
        .expect("carol -> alice");
    assert_eq!(carol_alice.relation, Relation::Pending);
    assert_eq!(carol_alice.created, "2025-03-03 08:00:00");
    assert_eq!(
        st.relations
            .iter()
            .filter(|r| r.relation == Relation::Accepted)
            .count(),
        2
    );

    assert_eq!(st.chats.len(), 4);
    assert_eq!(
        st.chats[0],
        ChatRow {
            user_id: "13800000001".into(),
            comm_id: "13800000002".into(),
            chat_type: "friend".into(),
            last_message: "[图片]".into(),
            last_message_type: Some("image".into()),
            last_time: "2025-03-04 20:01:00".into(),
            unread_count: 2,
            chat_status: "chatting".into(),
        }
    );
    let vedio = st
        .chats
        .iter()
        .find(|c| c.user_id == "13800000003")
        .expect("vedio row");
    assert_eq!(vedio.last_message_type.as_deref(), Some("video"));
    let null = st
        .chats
        .iter()
        .find(|c| c.user_id == "13800000004")
        .expect("null row");
    assert_eq!(null.last_message_type, None);
    assert_eq!(null.last_message, "");

    // AUTO_INCREMENT=231132 in the fixture: its three rows are 231132..=231134.
    assert_eq!(st.undelivered.len(), 1);
    let m = &st.undelivered[0];
    assert_eq!(m.message_id, 231134);
    assert_eq!(
        (
            m.sender_id.as_str(),
            m.receiver_id.as_str(),
            m.body.as_str()
        ),
        ("13800000002", "13800000001", "")
    );
    assert_eq!(
        (m.message_type.as_str(), m.file_path.as_str()),
        ("image", "/files/menu.png")
    );
    assert_eq!(m.status, MessageStatus::Send);
    assert_eq!(m.timestamp, "2025-03-04 20:01:00");
    assert_eq!(
        st.summary,
        LoadSummary {
            users: 4,
            relations: 4,
            chats: 4,
            undelivered: 1,
            max_message_id: 231134,
        }
    );

    // What the migrations are for, in strict mode: a video preview, a 64 KiB CJK message (more
    // than TEXT's 65,535 bytes) and its preview, a request's direction.
    let long = "好".repeat(64 * 1024 / 3 + 1);
    let mut preview = chat("13800000001", "13800000002", &long, 0);
    preview.last_message_type = Some("video".into());
    backend
        .write_batch(&[
            WriteRecord::InsertMessage(message(
                231135,
                "13800000001",
                "13800000002",
                &long,
                MessageStatus::Send,
            )),
            WriteRecord::UpsertChat(preview.clone()),
            WriteRecord::UpsertRelation(RelationRow {
                user_id: "13800000004".into(),
                friend_id: "13800000001".into(),
                relation: Relation::Pending,
                created: "2025-04-01 00:00:00".into(),
                requested_by: Some("13800000004".into()),
            }),
        ])
        .expect("write after migration");
    let st = load(&mut backend);
    assert!(st.chats.contains(&preview));
    assert_eq!(
        st.undelivered.last().map(|m| m.body.len()),
        Some(long.len())
    );
    assert_eq!(st.summary.max_message_id, 231135);
    assert!(st
        .relations
        .iter()
        .any(|r| r.requested_by.as_deref() == Some("13800000004")));

    // A fresh database and the legacy one converge on the same schema.
    let fresh = TestDb::new("fresh");
    drop(MysqlBackend::open(&fresh.url).expect("open fresh"));
    assert_eq!(schema_shape(&mut c), schema_shape(&mut fresh.conn()));
}

#[test]
fn a_second_open_applies_nothing_and_changes_nothing() {
    let db = TestDb::new("reopen");
    load_fixture(&db);
    let mut first = MysqlBackend::open(&db.url).expect("first open");
    let mut c = db.conn();
    let v1 = versions(&mut c);
    let s1 = load(&mut first);
    let shape1 = schema_shape(&mut c);
    drop(first);
    // applied_at has a resolution of one second: make a reapplication visible.
    thread::sleep(Duration::from_millis(1100));

    let mut second = MysqlBackend::open(&db.url).expect("second open");
    assert_eq!(versions(&mut c), v1, "no migration reapplied");
    assert_eq!(load(&mut second), s1, "data unchanged");
    assert_eq!(schema_shape(&mut c), shape1);
    assert_eq!(my::migrate(&db.url).expect("migrate"), Vec::<u32>::new());
    let report = my::schema_report(&db.url).expect("report");
    assert!(report.is_up_to_date(), "{report}");
    assert!(report.to_string().contains("no pending migration"));
}

#[test]
fn a_migration_interrupted_after_its_ddl_runs_again() {
    let db = TestDb::new("interrupt");
    assert_eq!(my::migrate(&db.url).expect("migrate"), all_versions());
    let mut c = db.conn();
    // As if the process had died after the DDL of versions >= 3 but before recording them.
    c.query_drop("DELETE FROM corechat_schema_version WHERE version >= 3")
        .expect("forget");
    let report = my::schema_report(&db.url).expect("report");
    assert_eq!(
        report.pending.iter().map(|p| p.version).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    let skipped: Vec<u32> = report
        .pending
        .iter()
        .filter(|p| p.statements.iter().any(|s| s.skipped_because.is_some()))
        .map(|p| p.version)
        .collect();
    assert_eq!(
        skipped,
        // 3's column is there; 6's foreign keys are gone. 5's index was dropped by 6, so it
        // is built again, and dropped again by 6: wasteful but correct.
        vec![3, 6],
        "guarded statements are skipped:\n{report}"
    );
    assert!(report.to_string().contains("skip:"));
    assert_eq!(
        my::migrate(&db.url).expect("migrate again"),
        vec![3, 4, 5, 6]
    );
    assert!(my::schema_report(&db.url).expect("report").is_up_to_date());

    // A version from a newer build: refuse to write to a schema we do not know.
    c.query_drop("INSERT INTO corechat_schema_version VALUES (999, 'future', UTC_TIMESTAMP())")
        .expect("future");
    match MysqlBackend::open(&db.url) {
        Err(PersistError::Migration { version, cause, .. }) => {
            assert_eq!(version, 999);
            assert!(cause.contains("newer"), "{cause}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let report = my::schema_report(&db.url).expect("report");
    assert_eq!(report.unknown.len(), 1);
    assert!(!report.is_up_to_date());
}

#[test]
fn engines_started_together_migrate_once() {
    let db = TestDb::new("race");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            thread::spawn(move || MysqlBackend::open(&url).map(|b| b.connection_id()))
        })
        .collect();
    for o in opens {
        let id = o.join().expect("thread").expect("open");
        assert!(id.is_some());
    }
    let v = versions(&mut db.conn());
    assert_eq!(v.iter().map(|x| x.0).collect::<Vec<_>>(), all_versions());
}

#[test]
fn connection_errors_name_the_url_with_the_password_masked() {
    let started = Instant::now();
    for url in [
        "mysql://corechat:topsecret@127.0.0.1:1/corechat_nothing",
        &wrong_password_url(),
    ] {
        match MysqlBackend::open(url) {
            Err(e @ PersistError::ConnectMysql { .. }) => {
                let text = e.to_string();
                assert!(text.contains("***"), "{text}");
                assert!(!text.contains("topsecret"), "{text}");
            }
            Err(other) => panic!("{url}: expected ConnectMysql, got {other}"),
            Ok(_) => panic!("{url}: connected?"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        MysqlBackend::open("mysql://corechat:topsecret@127.0.0.1:3306"),
        Err(PersistError::BadUrl { url, .. }) if url.contains("***") && !url.contains("topsecret")
    ));

    let db = TestDb::new("describe");
    let backend = MysqlBackend::open(&db.url).expect("open");
    let d = backend.describe();
    assert!(
        d.contains(&db.name) && d.contains("***") && !d.contains(":corechat@"),
        "{d}"
    );
    assert!(backend.connection_id().is_some());
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

#[test]
fn every_record_kind_is_written_in_order_and_a_failed_batch_leaves_nothing() {
    let db = TestDb::new("kinds");
    let mut backend = MysqlBackend::open(&db.url).expect("open");
    let (a, b, c) = ("13900000001", "13900000002", "13900000003");
    let rel = |u: &str, f: &str, r: Relation| RelationRow {
        user_id: u.into(),
        friend_id: f.into(),
        relation: r,
        created: "2025-04-01 09:00:00".into(),
        requested_by: Some(a.into()),
    };
    let mut video = chat(b, a, "[视频]", 3);
    video.last_message_type = Some("video".into());
    let mut untyped = chat(c, a, "", 0);
    untyped.last_message_type = None;
    backend
        .write_batch(&[
            WriteRecord::InsertUser(user(a)),
            WriteRecord::InsertUser(user(a)), // a retry inside one batch is harmless
            WriteRecord::InsertUser(user(b)),
            WriteRecord::InsertUser(user(c)),
            WriteRecord::SetPassword {
                user_id: a.into(),
                password: "$argon2id$new".into(),
            },
            WriteRecord::UpsertRelation(rel(a, b, Relation::Pending)),
            WriteRecord::UpsertRelation(rel(b, a, Relation::Pending)),
            WriteRecord::UpsertRelation(rel(a, b, Relation::Accepted)),
            WriteRecord::UpsertRelation(rel(b, a, Relation::Accepted)),
            WriteRecord::UpsertRelation(rel(a, c, Relation::Pending)),
            WriteRecord::DeleteRelation {
                user_id: a.into(),
                friend_id: c.into(),
            },
            WriteRecord::UpsertChat(chat(a, b, "one", 1)),
            WriteRecord::DeleteChat {
                user_id: a.into(),
                comm_id: b.into(),
            },
            WriteRecord::UpsertChat(chat(a, b, "two", 2)),
            WriteRecord::UpsertChat(chat(a, c, "gone", 0)),
            WriteRecord::DeleteChat {
                user_id: a.into(),
                comm_id: c.into(),
            },
            WriteRecord::UpsertChat(video.clone()),
            WriteRecord::UpsertChat(untyped.clone()),
            WriteRecord::InsertMessage(message(1, a, b, "received", MessageStatus::Received)),
            WriteRecord::InsertMessage(message(2, a, b, "offline", MessageStatus::Send)),
            WriteRecord::InsertMessage(message(3, b, a, "other way", MessageStatus::Received)),
            WriteRecord::InsertMessage(message(4, a, c, "to carol", MessageStatus::Received)),
            WriteRecord::InsertMessage(message(5, c, a, "from carol", MessageStatus::Send)),
            WriteRecord::InsertMessage(message(6, b, c, "b to c", MessageStatus::Send)),
            WriteRecord::MarkConversationRead {
                receiver_id: b.into(),
                sender_id: a.into(),
            },
            WriteRecord::MarkConversationDeleted {
                a: a.into(),
                b: c.into(),
            },
            WriteRecord::SetMessageStatus {
                receiver_id: c.into(),
                ids: vec![6],
                status: MessageStatus::Received,
            },
            WriteRecord::SetMessageStatus {
                receiver_id: c.into(),
                ids: vec![6],
                status: MessageStatus::Read,
            },
        ])
        .expect("batch");

    let st = load(&mut backend);
    assert_eq!(st.users.len(), 3);
    assert_eq!(st.users[0].password, "$argon2id$new");
    assert_eq!(st.users[1], user(b));
    assert_eq!(
        st.relations,
        vec![rel(a, b, Relation::Accepted), rel(b, a, Relation::Accepted)]
    );
    assert_eq!(st.chats, vec![chat(a, b, "two", 2), video, untyped]);
    assert_eq!(
        st.undelivered
            .iter()
            .map(|m| m.message_id)
            .collect::<Vec<_>>(),
        vec![2],
        "5 was deleted with its conversation"
    );
    let statuses: Vec<(u64, MessageStatus)> = all_messages(&mut db.conn())
        .into_iter()
        .map(|m| (m.message_id, m.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (1, MessageStatus::Read),
            (2, MessageStatus::Send),
            (3, MessageStatus::Received),
            (4, MessageStatus::Delete),
            (5, MessageStatus::Delete),
            (6, MessageStatus::Read),
        ]
    );

    // A batch that fails half-way leaves nothing behind: a new user whose e-mail is taken (the
    // idempotent insert only forgives a retry of the same id, not a clash on another key).
    let mut clash = user("13900000009");
    clash.email = user(a).email;
    let err = backend
        .write_batch(&[
            WriteRecord::InsertMessage(message(
                7,
                a,
                b,
                "lost with its batch",
                MessageStatus::Send,
            )),
            WriteRecord::UpsertChat(chat(a, b, "lost too", 9)),
            WriteRecord::InsertUser(clash),
        ])
        .expect_err("duplicate e-mail");
    assert!(err.to_string().contains("Duplicate"), "{err}");
    // A value that does not fit is an error in strict mode, not a silent truncation. (No
    // reset in between: after a failure the backend reconnects by itself.)
    let mut bad = message(8, a, b, "x", MessageStatus::Send);
    bad.message_type = "hologram".into();
    assert!(backend
        .write_batch(&[WriteRecord::InsertMessage(bad)])
        .is_err());
    backend.reset().expect("reset");
    assert_eq!(
        load(&mut backend),
        st,
        "nothing of the failed batches was committed"
    );
}

/// The records a shard writes for one `send_message`: the message and both chat rows.
fn send(id: u64, from: &str, to: &str, body: &str) -> [WriteRecord; 3] {
    [
        WriteRecord::InsertMessage(message(id, from, to, body, MessageStatus::Send)),
        WriteRecord::UpsertChat(chat(from, to, body, 0)),
        WriteRecord::UpsertChat(chat(to, from, body, 1)),
    ]
}

fn uid(i: usize) -> String {
    format!("1370{i:07}")
}

#[test]
fn thousands_of_messages_from_many_users_are_stored_exactly() {
    bulk("bulk", 1);
}

/// The same batches spread over four connections (`--db-writers 4`) leave exactly the same rows.
#[test]
fn thousands_of_messages_over_four_connections_are_stored_exactly() {
    bulk("bulk4", 4);
}

fn bulk(name: &str, writers: usize) {
    const USERS: usize = 200;
    const MESSAGES: u64 = 12_000;
    let db = TestDb::new(name);
    let mut backend = MysqlLanes::open(&db.url, writers).expect("open");
    assert_eq!(backend.writers(), writers);
    let users: Vec<WriteRecord> = (0..USERS)
        .map(|i| WriteRecord::InsertUser(user(&uid(i))))
        .collect();
    backend.write_batch(&users).expect("users");

    let mut records = Vec::new();
    let mut expect: BTreeMap<u64, MessageRow> = BTreeMap::new();
    let mut chats: HashMap<(String, String), ChatRow> = HashMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    for id in 1..=MESSAGES {
        let from = rand(USERS);
        let to = (from + 1 + rand(USERS - 1)) % USERS;
        let (from, to) = (uid(from), uid(to));
        let body = match id % 1000 {
            0 => "長".repeat(64 * 1024 / 3 + 1), // over TEXT's 65,535 bytes
            7 => "x".repeat(64 * 1024),
            _ => format!("message {id} from {from}: héllo 你好 '; DROP TABLE m_user; --"),
        };
        for r in send(id, &from, &to, &body) {
            if let WriteRecord::UpsertChat(c) = &r {
                chats.insert((c.user_id.clone(), c.comm_id.clone()), c.clone());
            }
            records.push(r);
        }
        expect.insert(id, message(id, &from, &to, &body, MessageStatus::Send));
        // Now and then a receiver opens the conversation (ordered after the inserts and
        // status changes of the same receiver, whichever connection writes them)...
        if id % 70 == 0 {
            records.push(WriteRecord::MarkConversationRead {
                receiver_id: to.clone(),
                sender_id: from.clone(),
            });
            for m in expect.values_mut() {
                if m.receiver_id == to && m.sender_id == from && m.status == MessageStatus::Received
                {
                    m.status = MessageStatus::Read;
                }
            }
        }
        // ... and a new user registers (a record that spans users: its batch goes whole to
        // one connection).
        if id % 2500 == 0 {
            records.push(WriteRecord::InsertUser(user(&format!("1390000{id:04}"))));
        }
        // Now and then the receiver comes online and reads.
        if id % 50 == 0 {
            let ids: Vec<u64> = (id - 49..=id).filter(|i| i % 3 == 0).collect();
            for i in &ids {
                if let Some(m) = expect.get_mut(i) {
                    m.status = MessageStatus::Received;
                }
            }
            // One record per receiver, as a shard writes them.
            let mut by_receiver: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for i in ids {
                if let Some(m) = expect.get(&i) {
                    by_receiver
                        .entry(m.receiver_id.clone())
                        .or_default()
                        .push(i);
                }
            }
            for (receiver_id, ids) in by_receiver {
                records.push(WriteRecord::SetMessageStatus {
                    receiver_id,
                    ids,
                    status: MessageStatus::Received,
                });
            }
        }
    }

    // Batches as the persistence thread forms them by default (up to 4096 records).
    let started = Instant::now();
    let batches: Vec<&[WriteRecord]> = records.chunks(4096).collect();
    let mut retries = 0;
    for batch in &batches {
        // Retried after a transient error, as the persistence thread does (a deadlock
        // between connections writing side by side, say, though none is expected).
        loop {
            match backend.write_batch(batch) {
                Ok(()) => break,
                Err(e) if !e.is_permanent() && retries < 20 => {
                    eprintln!("mysql bulk: retrying a batch after: {e}");
                    retries += 1;
                    backend.reset().expect("reconnect");
                }
                Err(e) => panic!("batch: {e}"),
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "mysql bulk: {} records ({MESSAGES} messages) in {} batches: {:.0} ms ({:.0} records/s)",
        records.len(),
        batches.len(),
        elapsed.as_secs_f64() * 1e3,
        records.len() as f64 / elapsed.as_secs_f64()
    );

    let mut c = db.conn();
    let stored = all_messages(&mut c);
    let want: Vec<MessageRow> = expect.values().cloned().collect();
    assert_same(&stored, &want, "messages");

    // The persistence thread retries a batch whose COMMIT answer was lost right away, as is:
    // the retry changes nothing and fails nothing.
    let last = batches[batches.len() - 1];
    backend.write_batch(last).expect("retry");
    assert_same(&all_messages(&mut c), &stored, "messages after a retry");

    let st = load(&mut backend);
    assert_eq!(st.summary.users, USERS as u64 + MESSAGES / 2500);
    assert_eq!(st.summary.max_message_id, MESSAGES);
    let undelivered: Vec<u64> = expect
        .values()
        .filter(|m| m.status == MessageStatus::Send)
        .map(|m| m.message_id)
        .collect();
    assert_eq!(
        st.undelivered
            .iter()
            .map(|m| m.message_id)
            .collect::<Vec<_>>(),
        undelivered
    );
    let mut want_chats: Vec<ChatRow> = chats.into_values().collect();
    want_chats.sort_by(|x, y| (&x.user_id, &x.comm_id).cmp(&(&y.user_id, &y.comm_id)));
    assert_same(&st.chats, &want_chats, "chat rows");
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[test]
fn killed_connections_lose_nothing_and_duplicate_nothing() {
    killed_connections("kill", 1);
}

/// The same with two connections writing each batch (`--db-writers 2`), killed in turn: a
/// batch one of them committed and the other did not is written again whole, harmlessly.
#[test]
fn killed_connections_of_parallel_writers_lose_nothing_and_duplicate_nothing() {
    killed_connections("kill2", 2);
}

fn killed_connections(name: &str, writers: usize) {
    const USERS: usize = 20;
    const MESSAGES: u64 = 20_000;
    let db = TestDb::new(name);
    let mut backend = MysqlLanes::open(&db.url, writers).expect("open");
    let users: Vec<WriteRecord> = (0..USERS)
        .map(|i| WriteRecord::InsertUser(user(&uid(i))))
        .collect();
    backend.write_batch(&users).expect("users");
    let watches = backend.connection_id_watches();

    let queue = PersistQueue::new(4096, 1);
    let handle = corechat_persist::spawn(
        Box::new(backend),
        queue.clone(),
        BatchConfig {
            max_batch: 512,
            linger: Duration::from_millis(1),
            idle_wait: Duration::from_millis(5),
        },
    )
    .expect("spawn");

    // The writer: paced bursts, so that the kills land while batches are being written.
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let queue = queue.clone();
        let done = done.clone();
        thread::spawn(move || {
            let mut token = 0u64;
            for id in 1..=MESSAGES {
                let from = uid(id as usize % USERS);
                let to = uid((id as usize + 1) % USERS);
                let [m, c1, c2] = send(id, &from, &to, &format!("msg {id}"));
                let mut envs = vec![
                    Envelope::acked(
                        m,
                        Ack {
                            shard: 0,
                            token: id,
                        },
                    ),
                    Envelope::new(c1),
                    Envelope::new(c2),
                ];
                if id % 10 == 0 {
                    // One record per receiver, as a shard writes them.
                    for i in id - 9..=id {
                        envs.push(Envelope::new(WriteRecord::SetMessageStatus {
                            receiver_id: uid((i as usize + 1) % USERS),
                            ids: vec![i],
                            status: MessageStatus::Received,
                        }));
                    }
                }
                for mut env in envs {
                    loop {
                        match queue.push(env) {
                            Ok(()) => break,
                            Err(back) => {
                                env = back;
                                thread::sleep(Duration::from_micros(200));
                            }
                        }
                    }
                }
                token = id;
                if id % 400 == 0 {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            done.store(true, Ordering::Release);
            token
        })
    };

    // The killer: another connection kills the backend's, again and again.
    let mut admin = db.conn();
    let mut kills = 0;
    let mut killed_ids = Vec::new();
    while !done.load(Ordering::Acquire) || kills < 3 {
        thread::sleep(Duration::from_millis(120));
        if let Some(id) = watches[kills % watches.len()].get() {
            if !killed_ids.contains(&id)
                && admin.query_drop(format!("KILL CONNECTION {id}")).is_ok()
            {
                kills += 1;
                killed_ids.push(id);
            }
        }
        if kills >= 8 || (done.load(Ordering::Acquire) && queue.is_empty() && kills >= 3) {
            break;
        }
    }
    let last = writer.join().expect("writer");
    assert_eq!(last, MESSAGES);

    // Every acknowledgement arrives, once.
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut cx = Context::from_waker(Waker::noop());
    while (acked.len() as u64) < MESSAGES {
        let _ = queue.acks(0).poll_drain(&mut cx, &mut acked);
        assert!(Instant::now() < deadline, "only {} acks", acked.len());
        thread::sleep(Duration::from_millis(2));
    }
    queue.close();
    handle.join().expect("persistence thread");
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(acked, (1..=MESSAGES).collect::<Vec<_>>());

    let stats = queue.stats();
    eprintln!(
        "mysql kill: {kills} connections killed, {} failed attempts, {} batches committed",
        stats.failed_attempts.load(Ordering::Relaxed),
        stats.committed_batches.load(Ordering::Relaxed)
    );
    assert!(kills >= 3, "only {kills} kills");
    assert!(
        stats.failed_attempts.load(Ordering::Relaxed) >= 1,
        "the kills made at least one batch fail"
    );

    // Every acknowledged message is there exactly once, with its final status.
    let mut c = db.conn();
    let stored = all_messages(&mut c);
    assert_eq!(stored.len() as u64, MESSAGES);
    for (i, m) in stored.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(m.message_id, id);
        assert_eq!(m.body, format!("msg {id}"));
        let want = if id <= MESSAGES / 10 * 10 {
            MessageStatus::Received
        } else {
            MessageStatus::Send
        };
        assert_eq!(m.status, want, "message {id}");
    }
    assert_eq!(
        count(
            &mut c,
            "SELECT COUNT(DISTINCT message_body) FROM m_friends_message"
        ),
        MESSAGES
    );
    assert_eq!(
        count(&mut c, "SELECT COUNT(*) FROM m_chatlist"),
        USERS as u64 * 2
    );
}
