//! Requests that pass the protocol's validation but carry a value the MySQL/MariaDB schema
//! rejects in strict mode. The persistence thread retries a failed batch forever, so such a
//! value must never reach a batch: one client must not be able to stop every write of the
//! server. Needs `CORECHAT_TEST_MYSQL_URL` (see `mysql_common`).

mod common;
mod mysql_common;

use std::time::Duration;

use common::*;
use mysql_common::*;

const SHARDS: usize = 3;

/// Two pairs of friends: (a, b) and (c, d), each user logged in.
fn two_pairs(server: &TestServer, base: u64) -> ([String; 4], [Client; 4]) {
    let (p, mut cl) = users(server, base, ["pw"; 4]);
    for k in [0, 2] {
        let (lo, hi) = cl.split_at_mut(k + 1);
        befriend(&mut lo[k], &p[k], &mut hi[0], &p[k + 1]);
    }
    (p, cl)
}

/// Is persistence still moving? Another pair's message must be acknowledged (the reply to
/// `send_message` waits for its commit).
fn writes_still_commit(c: &mut Client, from: &str, to: &str) -> Result<(), String> {
    c.timeout = Duration::from_secs(10);
    match c.request(text(from, to, "are writes still committed?")) {
        Ok(v) if v["status"] == "success" => Ok(()),
        Ok(v) => Err(format!("refused: {v}")),
        Err(e) => Err(format!("no acknowledgement within 10 s ({e})")),
    }
}

#[test]
fn a_timestamp_the_database_rejects_does_not_stall_every_write() {
    let db = TestDb::new("poison_ts");
    let mut server = db.start(SHARDS, &[]);
    let (p, mut cl) = two_pairs(&server, 15600000000);

    // chrono accepts a leap second (and signed years such as "+10000-01-01 00:00:00"); a
    // DATETIME column does not: "Incorrect datetime value" (error 1292).
    let mut poison = text(&p[0], &p[1], "at a leap second");
    poison["message_timestamp"] = json!("2026-12-31 23:59:60");
    cl[0].send(&poison).unwrap();

    let still = writes_still_commit(&mut cl[3], &p[3], &p[2]);
    cl[0].timeout = Duration::from_secs(1);
    let answer = cl[0].recv_type("send_message");
    let stored = messages(&mut db.conn());
    assert!(
        still.is_ok(),
        "SERVER BUG: one send_message with message_timestamp \"2026-12-31 23:59:60\" stops \
         every write: the protocol accepts it (engine/src/protocol.rs `timestamp`, chrono \
         parses second 60), MariaDB rejects the DATETIME, and the persistence thread retries \
         that batch forever (persist/src/thread.rs), so no later change commits. Another \
         user's message: {}. The sender's own reply: {answer:?}. Rows stored: {}",
        still.unwrap_err(),
        stored.len()
    );
    assert!(
        answer.is_ok(),
        "the message is answered (refused or stored)"
    );
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn an_unread_count_past_the_int_column_does_not_stall_every_write() {
    let db = TestDb::new("poison_unread");
    let mut server = db.start(SHARDS, &[]);
    let (p, mut cl) = two_pairs(&server, 15700000000);

    // The largest count update_chat accepts (i32::MAX), then one more message arrives: the
    // chat row's unread_count becomes 2^31, out of range for m_chatlist.unread_count INT.
    let r = cl[0]
        .request(json!({
            "type": "update_chat", "user_id": p[0], "comm_id": p[1], "chat_type": "friend",
            "last_message": "x", "last_message_type": "text",
            "last_time": "2026-11-28 12:00:00", "unread_count": 2_147_483_647_i64,
            "chat_status": "chatting"
        }))
        .unwrap();
    assert_eq!(r["status"], "success", "{r}");
    cl[1].send(&text(&p[1], &p[0], "one more")).unwrap();

    let still = writes_still_commit(&mut cl[3], &p[3], &p[2]);
    cl[1].timeout = Duration::from_secs(1);
    let answer = cl[1].recv_type("send_message");
    assert!(
        still.is_ok(),
        "SERVER BUG: update_chat with unread_count 2147483647 (accepted: \
         engine/src/protocol.rs `integer` allows 0..=i32::MAX) followed by one incoming \
         message makes the chat row's count 2147483648 (shards/src/state.rs `touch_chat` adds \
         to an i64); m_chatlist.unread_count is INT, MariaDB rejects it in strict mode, and \
         the persistence thread retries that batch forever, so no later change commits. \
         Another user's message: {}. The sender's own reply: {answer:?}",
        still.unwrap_err()
    );
    assert!(answer.is_ok(), "the message is answered");
    assert_eq!(server.stop(), Some(0));
}
