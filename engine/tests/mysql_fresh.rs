//! The real server on an empty MariaDB/MySQL database: the schema it creates, the batched write
//! path under concurrent load, and a start against a database that cannot be reached. Needs
//! `CORECHAT_TEST_MYSQL_URL` (see `mysql_common`).

mod common;
mod mysql_common;

use std::collections::HashSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use mysql_common::*;

const SHARDS: usize = 3;

/// The tables a fresh database must have after the first start.
const TABLES: [&str; 8] = [
    "corechat_schema_version",
    "m_chatlist",
    "m_friends_message",
    "m_friends_relation",
    "m_groups",
    "m_groups_relation",
    "m_media_file",
    "m_user",
];

fn tables(c: &mut Conn) -> Vec<String> {
    c.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() \
         ORDER BY table_name",
    )
    .expect("tables")
}

#[test]
fn an_empty_database_gets_the_whole_schema_once() {
    let db = TestDb::new("fresh_schema");
    let mut c = db.conn();
    assert!(tables(&mut c).is_empty());

    let mut server = db.start(SHARDS, &[]);
    assert_eq!(tables(&mut c), TABLES);
    let v = versions(&mut c);
    assert_eq!(v.iter().map(|x| x.0).collect::<Vec<_>>(), all_versions());
    let names: Vec<&str> = corechat_sql::MYSQL.iter().map(|m| m.name).collect();
    assert_eq!(v.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), names);

    // It works: a user registers (stored hashed), and is there after a restart.
    let (p, _clients) = two_friends(&server, 15100000000);
    assert_eq!(server.stop(), Some(0));
    let stored: Vec<(String, String, String)> = c
        .query("SELECT user_id, user_password, user_email FROM m_user ORDER BY user_id")
        .expect("users");
    assert_eq!(stored.len(), 2, "{stored:?}");
    for (id, pw, email) in &stored {
        assert!(pw.starts_with("$argon2id$"), "{id}: {pw}");
        assert_eq!(email, &format!("{id}@an.com"));
    }

    let mut server = db.start(SHARDS, &[]);
    assert_eq!(versions(&mut c), v, "nothing re-applied");
    let (mut a, unread) = login_unread(&server, &p[0], "pa");
    assert_eq!(
        reply_status(&unread),
        "null",
        "the greeting was delivered live: {unread}"
    );
    let rows = elements(&a.simple("chatting", &p[0]).unwrap());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(s(&rows[0], "comm_id"), p[1]);
    assert_eq!(s(&rows[0], "last_message"), GREETING);
    assert_eq!(s(&rows[0], "unread_count"), "1");
    assert_eq!(server.stop(), Some(0));
}

/// What one user's thread saw.
#[derive(Debug, Default)]
struct Seen {
    acked: usize,
    errors: Vec<String>,
    /// Tagged bodies received from the partner.
    received: Vec<String>,
}

fn body(from: &str, k: usize) -> String {
    format!("fresh|{from}|{k}|héllo 你好 '; --")
}

#[test]
fn concurrent_sends_are_stored_exactly_once_with_their_statuses_and_unread_counts() {
    const USERS: usize = 40;
    const PER_USER: usize = 100;
    const WINDOW: usize = 8;
    let db = TestDb::new("fresh_load");
    let mut server = db.start(SHARDS, &[]);
    let phones = phones_on_distinct_shards(15200000000, USERS, SHARDS);
    // Partners i and 39 - i: on the same shard for i % 3 == 0, on two shards otherwise.
    let partner = |i: usize| USERS - 1 - i;
    let mut clients: Vec<Option<Client>> = phones
        .iter()
        .map(|p| Some(user(&server, p, "pw")))
        .collect();
    for i in 0..USERS / 2 {
        let (lo, hi) = clients.split_at_mut(partner(i));
        let (a, b) = (lo[i].as_mut().unwrap(), hi[0].as_mut().unwrap());
        befriend(a, &phones[i], b, &phones[partner(i)]);
    }

    // Everyone sends to their partner at once, WINDOW requests in flight per connection, and
    // reads what the partner sends on the same connection.
    let done: Arc<Vec<AtomicBool>> = Arc::new((0..USERS).map(|_| AtomicBool::new(false)).collect());
    let acked: Arc<Vec<AtomicUsize>> = Arc::new((0..USERS).map(|_| AtomicUsize::new(0)).collect());
    let started = Instant::now();
    let threads: Vec<_> = (0..USERS)
        .map(|i| {
            let mut c = clients[i].take().unwrap();
            let me = phones[i].clone();
            let peer = phones[partner(i)].clone();
            let (done, acked) = (done.clone(), acked.clone());
            let pi = partner(i);
            thread::spawn(move || {
                let mut seen = Seen::default();
                let prefix = format!("fresh|{peer}|");
                let take = |v: &Value, seen: &mut Seen| match reply_type(v) {
                    "send_message" => {
                        if v["status"] == "success" {
                            seen.acked += 1;
                        } else {
                            seen.errors.push(v.to_string());
                        }
                    }
                    "receive_message" => {
                        let b = s(v, "message_body");
                        if b.starts_with(&prefix) {
                            seen.received.push(b.to_string());
                        }
                    }
                    _ => {}
                };
                c.timeout = Duration::from_secs(30);
                let mut sent = 0;
                while seen.acked + seen.errors.len() < PER_USER {
                    while sent < PER_USER && sent - seen.acked - seen.errors.len() < WINDOW {
                        c.send_text(&me, &peer, &body(&me, sent)).expect("send");
                        sent += 1;
                    }
                    let v = c.recv().unwrap_or_else(|e| panic!("{me}: no reply: {e}"));
                    take(&v, &mut seen);
                }
                acked[i].store(seen.acked, Ordering::Release);
                done[i].store(true, Ordering::Release);
                // Then what the partner sent and had acknowledged (its receive_message frames
                // were written before its acknowledgements).
                c.timeout = Duration::from_millis(200);
                let deadline = Instant::now() + Duration::from_secs(40);
                loop {
                    let partner_done = done[pi].load(Ordering::Acquire);
                    if partner_done && seen.received.len() >= acked[pi].load(Ordering::Acquire) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{me}: {} of {} messages from {peer} received",
                        seen.received.len(),
                        acked[pi].load(Ordering::Acquire)
                    );
                    match c.recv() {
                        Ok(v) => take(&v, &mut seen),
                        Err(e) if is_timeout(&e) => {}
                        Err(e) => panic!("{me}: {e}"),
                    }
                }
                (c, seen)
            })
        })
        .collect();
    let results: Vec<(Client, Seen)> = threads
        .into_iter()
        .map(|t| t.join().expect("user thread"))
        .collect();
    let elapsed = started.elapsed();
    eprintln!(
        "mysql fresh: {} messages from {USERS} users on {SHARDS} shards in {:.0} ms",
        USERS * PER_USER,
        elapsed.as_secs_f64() * 1e3
    );

    for (i, (_, seen)) in results.iter().enumerate() {
        assert!(
            seen.errors.is_empty(),
            "{}: {} errors (the queue is far from full here): {:?}",
            phones[i],
            seen.errors.len(),
            &seen.errors[..seen.errors.len().min(3)]
        );
        assert_eq!(seen.acked, PER_USER);
        let from = &phones[partner(i)];
        let mut got = seen.received.clone();
        got.sort();
        let mut want: Vec<String> = (0..PER_USER).map(|k| body(from, k)).collect();
        want.sort();
        assert_eq!(
            got, want,
            "{} received each message of {from} once",
            phones[i]
        );
    }

    assert_eq!(server.stop(), Some(0), "SIGTERM stops with exit 0");
    drop(results);

    let mut c = db.conn();
    let stored = messages(&mut c);
    let by_body = rows_by_body(&stored);
    let mut tagged = 0;
    for i in 0..USERS {
        let (from, to) = (&phones[i], &phones[partner(i)]);
        for k in 0..PER_USER {
            let m = stored_once(&by_body, &body(from, k));
            assert_eq!((&m.sender, &m.receiver), (from, to), "{m:?}");
            assert_eq!(m.status, "received", "the receiver was online: {m:?}");
            assert_eq!(m.kind, "text");
            assert_eq!(m.timestamp, "2026-11-28 12:00:00");
            tagged += 1;
        }
    }
    let greetings: Vec<&&Msg> = by_body
        .get(GREETING)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    assert_eq!(greetings.len(), USERS / 2, "one greeting per pair");
    assert!(
        greetings.iter().all(|m| m.status == "received"),
        "{greetings:?}"
    );
    assert_eq!(stored.len(), tagged + USERS / 2, "nothing else stored");
    let ids: HashSet<u64> = stored.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), stored.len());

    let rows = chat_rows(&mut c);
    assert_eq!(rows.len(), USERS, "{rows:?}");
    for i in 0..USERS {
        let (me, peer) = (&phones[i], &phones[partner(i)]);
        let row = rows
            .get(&(me.clone(), peer.clone()))
            .unwrap_or_else(|| panic!("no chat row ({me}, {peer})"));
        // The requester (the lower index) also has the acceptor's greeting unread.
        let want = PER_USER as i64 + i64::from(i < USERS / 2);
        assert_eq!(row.unread_count, want, "({me}, {peer}): {row:?}");
        assert_eq!(row.chat_status, "chatting");
        let lasts = [body(me, PER_USER - 1), body(peer, PER_USER - 1)];
        assert!(
            lasts.contains(&row.last_message),
            "({me}, {peer}) shows one of the last two messages: {row:?}"
        );
        assert_eq!(row.last_message_type.as_deref(), Some("text"));
    }
}

#[test]
fn an_unreachable_database_fails_the_start_with_the_password_masked() {
    let dir = tempfile::tempdir().unwrap();
    let port = Opts::from_url(&base_url())
        .expect("base URL")
        .get_tcp_port();
    for (url, masked, cause) in [
        (
            "mysql://corechat:secret@127.0.0.1:1/corechat_x".to_string(),
            "mysql://corechat:***@127.0.0.1:1/corechat_x".to_string(),
            "refused",
        ),
        // A server that answers, but not to this password.
        (
            format!("mysql://corechat:secret@127.0.0.1:{port}/corechat_x"),
            format!("mysql://corechat:***@127.0.0.1:{port}/corechat_x"),
            "denied",
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corechat"))
            .args(["--listen", "127.0.0.1:0", "--no-pin", "--shards", "2"])
            .args(["--admin", "off"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--database", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start corechat");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("corechat still running 30 s after start against {masked}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "{status:?}\n{out}\n{err}");
        assert!(status.code().is_some_and(|c| c != 0), "{status:?}");
        assert!(!out.contains("ready"), "never ready: {out}");
        assert!(
            !out.contains("secret") && !err.contains("secret"),
            "the password leaked:\n{out}\n{err}"
        );
        assert!(err.contains(&masked), "stderr names {masked}:\n{err}");
        assert!(
            err.to_lowercase().contains(cause),
            "stderr names the cause ({cause}):\n{err}"
        );
    }
}
