//! The real server on the database the old C++ server left (`shared/fixtures/legacy-animalchat.sql`),
//! migrated in place at its first start, used with the users' old credentials, stopped and
//! started again. Needs `CORECHAT_TEST_MYSQL_URL` (see `mysql_common`).

mod common;
mod mysql_common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use mysql_common::*;

const ALICE: &str = "13800000001";
const BOB: &str = "13800000002";
const CAROL: &str = "13800000003";
const DAVE: &str = "13800000004";
const SHARDS: usize = 3;

/// Every repeat login really runs argon2 against the stored hash.
const NO_CACHE: [&str; 2] = ["--credential-cache-ttl", "0"];

fn password_of(c: &mut Conn, user: &str) -> String {
    c.exec_first(
        "SELECT user_password FROM m_user WHERE user_id = ?",
        (user,),
    )
    .expect("select password")
    .unwrap_or_else(|| panic!("user {user} is gone"))
}

fn find<'a>(list: &'a [Value], key: &str, id: &str) -> &'a Value {
    list.iter()
        .find(|v| s(v, key) == id)
        .unwrap_or_else(|| panic!("no element with {key} = {id} in {list:?}"))
}

/// Asserts that each of `pairs` (user, friend) is an accepted relation in `rel`.
#[track_caller]
fn assert_accepted(rel: &HashMap<(String, String), String>, pairs: &[(&str, &str)]) {
    for pair in pairs {
        let key = (pair.0.to_string(), pair.1.to_string());
        assert_eq!(
            rel.get(&key).map(String::as_str),
            Some("accepted"),
            "{pair:?}: {rel:?}"
        );
    }
}

/// The one message of `m` from `from` to `to` with `body`, checking there is exactly one.
fn the_message<'a>(m: &'a [Msg], from: &str, to: &str, body: &str) -> &'a Msg {
    let found: Vec<&Msg> = m
        .iter()
        .filter(|x| x.sender == from && x.receiver == to && x.body == body)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "message {from} -> {to} {body:?} should be stored exactly once: {m:#?}"
    );
    found[0]
}

#[test]
fn the_legacy_database_serves_the_whole_story_and_survives_a_restart() {
    let db = TestDb::new("legacy");
    load_fixture(&db);
    let legacy = messages(&mut db.conn());
    assert_eq!(legacy.len(), 3, "the fixture's messages");

    // ----- first start: migrates in place -----
    let mut server = db.start(SHARDS, &NO_CACHE);
    let mut c = db.conn();
    let migrated = versions(&mut c);
    assert_eq!(
        migrated.iter().map(|v| v.0).collect::<Vec<_>>(),
        all_versions(),
        "every migration recorded at the first start"
    );
    assert_eq!(
        messages(&mut c),
        legacy,
        "the migrations keep the old messages as they were"
    );

    // Alice logs in with her old plaintext password.
    let mut alice = server.client();
    let r = alice.login(ALICE, "alice-pw").unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    let me = &elements(&r)[0];
    assert_eq!(s(me, "user_id"), ALICE);
    assert_eq!(s(me, "user_name"), "小红");
    assert_eq!(s(me, "user_avatar"), "/images/avatar/3.png");
    assert!(me.get("user_password").is_none(), "password leaked: {r}");

    // What waited for her: only the image stored as 'send' (the 'read' greeting and the
    // 'received' text were handed over by the old server already).
    let unread = alice.simple("get_unread_messages", ALICE).unwrap();
    let unread = elements(&unread);
    assert_eq!(unread.len(), 1, "only the 'send' message: {unread:?}");
    let m = &unread[0];
    assert_eq!(s(m, "status"), "success", "{m}");
    assert_eq!(s(m, "send_id"), BOB);
    assert_eq!(s(m, "receiver_id"), ALICE);
    assert_eq!(s(m, "message_type"), "image");
    assert_eq!(s(m, "file_path"), "/files/menu.png");
    assert_eq!(s(m, "message_body"), "");
    assert_eq!(s(m, "message_timestamp"), "2025-03-04 20:01:00");

    let friends = elements(&alice.simple("friends", ALICE).unwrap());
    assert_eq!(friends.len(), 2, "{friends:?}");
    assert_eq!(s(friends.last().unwrap(), "status"), "success");
    let bob_rel = find(&friends, "user_id", BOB);
    assert_eq!(s(bob_rel, "friend_relation"), "accepted", "{bob_rel}");
    assert_eq!(s(bob_rel, "user_name"), "Bob");
    assert_eq!(s(bob_rel, "created_relation"), "2025-03-01 11:00:00");
    let carol_rel = find(&friends, "user_id", CAROL);
    assert_eq!(s(carol_rel, "friend_relation"), "pending", "{carol_rel}");
    assert_eq!(s(carol_rel, "user_name"), "Carol");

    let chats = elements(&alice.simple("chatting", ALICE).unwrap());
    assert_eq!(chats.len(), 1, "{chats:?}");
    let row = &chats[0];
    assert_eq!(s(row, "status"), "success", "{row}");
    assert_eq!(s(row, "comm_id"), BOB);
    assert_eq!(
        s(row, "unread_count"),
        "2",
        "a string holding the count: {row}"
    );
    assert_eq!(s(row, "last_message"), "[图片]");
    assert_eq!(s(row, "last_message_type"), "image");
    assert_eq!(s(row, "last_time"), "2025-03-04 20:01:00");
    assert_eq!(s(row, "chat_status"), "chatting");
    assert_eq!(s(row, "user_name"), "Bob");

    // The first successful login replaced the plaintext by an argon2id PHC string.
    let hash = wait_for(Duration::from_secs(10), "Alice's password rehash", || {
        let p = password_of(&mut c, ALICE);
        p.starts_with("$argon2id$").then_some(p)
    });
    assert!(!hash.contains("alice-pw"), "{hash}");
    // She logs in again with the same password (checked against the hash), a wrong one fails.
    let (mut alice2, again) = login_unread(&server, ALICE, "alice-pw");
    assert_eq!(
        reply_status(&again),
        "null",
        "the image is not handed over twice: {again}"
    );
    for wrong in ["alice-PW", "", &hash] {
        let mut x = server.client();
        let r = x.login(ALICE, wrong).unwrap();
        assert_eq!(reply_status(&r), "error", "login with {wrong:?}: {r}");
    }
    assert_eq!(
        password_of(&mut c, DAVE),
        "dave-pw",
        "untouched until Dave logs in"
    );

    // Carol's legacy request has no direction: Alice accepts it (Carol stays offline).
    let r = alice.pair("accept_friend", ALICE, CAROL).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["user_id"], ALICE);
    assert_eq!(r["friend_id"], CAROL);
    let friends = elements(&alice.simple("friends", ALICE).unwrap());
    assert_eq!(friends.len(), 2, "{friends:?}");
    assert!(
        friends
            .iter()
            .all(|f| s(f, "friend_relation") == "accepted"),
        "{friends:?}"
    );

    // Bob, on another connection, chats with Alice live.
    let (mut bob, bob_unread) = login_unread(&server, BOB, "bob-pw");
    assert_eq!(reply_status(&bob_unread), "null", "{bob_unread}");

    let r = alice
        .request(text(ALICE, BOB, "hello bob, corechat here"))
        .unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let got = bob.recv_type("receive_message").unwrap();
    assert_eq!(s(&got, "send_id"), ALICE);
    assert_eq!(s(&got, "message_body"), "hello bob, corechat here");

    let r = bob.request(text(BOB, ALICE, "hi alice 👋")).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let got = alice.recv_type("receive_message").unwrap();
    assert_eq!(s(&got, "send_id"), BOB);
    assert_eq!(s(&got, "message_body"), "hi alice 👋");
    let got = alice2.recv_type("receive_message").unwrap();
    assert_eq!(
        s(&got, "message_body"),
        "hi alice 👋",
        "every session gets it"
    );

    // The longest message allowed (64 KiB, more than the old TEXT column's 65,535 bytes): it
    // fits only because the migration widened the body and the chat preview.
    let long = format!("{}x", "長".repeat(65_535 / 3));
    assert_eq!(long.len(), 64 * 1024);
    let r = bob.request(text(BOB, ALICE, &long)).unwrap();
    assert_eq!(r["status"], "success", "{}", r["message"]);
    let got = alice.recv_type("receive_message").unwrap();
    assert!(
        s(&got, "message_body") == long,
        "the long message arrives intact"
    );
    alice2.recv_type("receive_message").unwrap();

    // A video: its chat preview '[视频]' must be writable in the migrated m_chatlist (the old
    // ENUM only knew 'vedio'), or the commit, and so this reply, would never come.
    let r = alice
        .request(message(
            ALICE,
            BOB,
            "video",
            "clip.mp4",
            "2026-11-28 12:00:00",
        ))
        .unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let got = bob.recv_type("receive_message").unwrap();
    assert_eq!(s(&got, "message_type"), "video", "{got}");
    assert_eq!(s(&got, "file_path"), "/files/clip.mp4");
    assert_eq!(s(&got, "message_body"), "clip.mp4");
    let bob_chats = elements(&bob.simple("chatting", BOB).unwrap());
    let row = find(&bob_chats, "comm_id", ALICE);
    assert_eq!(s(row, "last_message"), "[视频]", "{row}");
    assert_eq!(s(row, "last_message_type"), "video");
    assert_eq!(s(row, "unread_count"), "2");
    assert_eq!(s(row, "user_name"), "小红");

    // Carol is offline: this one waits for her as 'send'.
    let r = alice.request(text(ALICE, CAROL, "hi carol")).unwrap();
    assert_eq!(r["status"], "success", "{r}");

    let alice_chats = elements(&alice.simple("chatting", ALICE).unwrap());
    assert_eq!(alice_chats.len(), 2, "{alice_chats:?}");
    let row = find(&alice_chats, "comm_id", BOB);
    assert_eq!(s(row, "last_message"), "[视频]", "{row}");
    assert_eq!(s(row, "unread_count"), "4", "2 legacy + Bob's two: {row}");
    let row = find(&alice_chats, "comm_id", CAROL);
    assert_eq!(s(row, "last_message"), "hi carol", "{row}");
    assert_eq!(s(row, "unread_count"), "0", "{row}");

    // ----- clean stop -----
    assert_eq!(server.stop(), Some(0), "SIGTERM stops with exit 0");
    drop((alice, alice2, bob));

    let stored = messages(&mut c);
    assert_eq!(stored.len(), 9, "3 legacy + greeting + 5 sent");
    assert_eq!(
        &stored[..2],
        &legacy[..2],
        "the old 'read' and 'received' rows"
    );
    assert_eq!(stored[2].id, legacy[2].id);
    assert_eq!(
        stored[2].status, "received",
        "the image was handed over: {:?}",
        stored[2]
    );
    let greeting = the_message(&stored, ALICE, CAROL, GREETING);
    assert_eq!(greeting.status, "send", "Carol was offline: {greeting:?}");
    assert_eq!(greeting.kind, "text");
    for (from, to, body) in [
        (ALICE, BOB, "hello bob, corechat here"),
        (BOB, ALICE, "hi alice 👋"),
        (BOB, ALICE, long.as_str()),
        (ALICE, BOB, "clip.mp4"),
    ] {
        let m = the_message(&stored, from, to, body);
        assert_eq!(m.status, "received", "delivered live: {m:?}");
        assert!(m.id > legacy[2].id, "new ids above the old ones: {m:?}");
    }
    let video = the_message(&stored, ALICE, BOB, "clip.mp4");
    assert_eq!(
        (video.kind.as_str(), video.file_path.as_str()),
        ("video", "/files/clip.mp4")
    );
    assert_eq!(video.timestamp, "2026-11-28 12:00:00");
    assert_eq!(
        the_message(&stored, ALICE, CAROL, "hi carol").status,
        "send"
    );

    let rel = relations(&mut c);
    assert_eq!(rel.len(), 4, "{rel:?}");
    assert_accepted(
        &rel,
        &[(ALICE, BOB), (BOB, ALICE), (ALICE, CAROL), (CAROL, ALICE)],
    );

    let rows = chat_rows(&mut c);
    let chat = |u: &str, p: &str| {
        rows.get(&(u.to_string(), p.to_string()))
            .unwrap_or_else(|| panic!("no chat row ({u}, {p}): {rows:?}"))
            .clone()
    };
    let want = |last: &str, kind: &str, unread: i64| Chat {
        last_message: last.into(),
        last_message_type: Some(kind.into()),
        unread_count: unread,
        chat_status: "chatting".into(),
    };
    assert_eq!(chat(ALICE, BOB), want("[视频]", "video", 4));
    assert_eq!(chat(BOB, ALICE), want("[视频]", "video", 2));
    assert_eq!(chat(ALICE, CAROL), want("hi carol", "text", 0));
    assert_eq!(
        chat(CAROL, ALICE),
        want("hi carol", "text", 2),
        "greeting + message"
    );
    assert_eq!(rows.len(), 4, "{rows:?}");

    assert!(password_of(&mut c, ALICE).starts_with("$argon2id$"));
    assert!(password_of(&mut c, BOB).starts_with("$argon2id$"));
    assert_eq!(password_of(&mut c, CAROL), "carol-pw");
    assert_eq!(password_of(&mut c, DAVE), "dave-pw");

    // ----- second start on the same database -----
    let mut server = db.start(SHARDS, &NO_CACHE);
    assert_eq!(
        versions(&mut c),
        migrated,
        "no migration re-applied (same versions, same applied_at)"
    );

    let (mut alice, again) = login_unread(&server, ALICE, "alice-pw");
    assert_eq!(reply_status(&again), "null", "{again}");
    let friends = elements(&alice.simple("friends", ALICE).unwrap());
    assert_eq!(friends.len(), 2, "{friends:?}");
    assert!(friends
        .iter()
        .all(|f| s(f, "friend_relation") == "accepted"));
    let alice_chats = elements(&alice.simple("chatting", ALICE).unwrap());
    let row = find(&alice_chats, "comm_id", BOB);
    assert_eq!(
        (
            s(row, "last_message"),
            s(row, "last_message_type"),
            s(row, "unread_count")
        ),
        ("[视频]", "video", "4"),
        "{row}"
    );
    let r = server.client().login(ALICE, "nope").unwrap();
    assert_eq!(reply_status(&r), "error", "{r}");

    let (_bob, bob_unread) = login_unread(&server, BOB, "bob-pw");
    assert_eq!(
        reply_status(&bob_unread),
        "null",
        "messages delivered live are not handed over again: {bob_unread}"
    );

    // Carol, still with her old password, gets what waited for her, oldest first.
    let (mut carol, carol_unread) = login_unread(&server, CAROL, "carol-pw");
    let carol_unread = elements(&carol_unread);
    let bodies: Vec<&str> = carol_unread.iter().map(|m| s(m, "message_body")).collect();
    assert_eq!(bodies, vec![GREETING, "hi carol"], "{carol_unread:?}");
    assert!(carol_unread.iter().all(|m| s(m, "send_id") == ALICE));
    let carol_chats = elements(&carol.simple("chatting", CAROL).unwrap());
    let row = find(&carol_chats, "comm_id", ALICE);
    assert_eq!(s(row, "unread_count"), "2", "{row}");
    assert_eq!(s(row, "user_name"), "小红");

    // Alice to Carol, now live.
    let r = alice.request(text(ALICE, CAROL, "you're online!")).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let got = carol.recv_type("receive_message").unwrap();
    assert_eq!(s(&got, "message_body"), "you're online!");

    assert_eq!(server.stop(), Some(0));
    let stored = messages(&mut c);
    assert_eq!(stored.len(), 10, "9 + 1 sent after the restart");
    for body in [GREETING, "hi carol", "you're online!"] {
        assert_eq!(
            the_message(&stored, ALICE, CAROL, body).status,
            "received",
            "{body}"
        );
    }
    assert!(password_of(&mut c, CAROL).starts_with("$argon2id$"));
    assert_eq!(versions(&mut c), migrated);
}

#[test]
fn either_side_may_accept_a_legacy_request() {
    let db = TestDb::new("legacy_accept");
    load_fixture(&db);
    let server = db.start(SHARDS, &[]);

    // Carol asked Alice, but the old rows do not say so: Carol's acceptance is as good.
    let (mut alice, _) = login_unread(&server, ALICE, "alice-pw");
    let (mut carol, carol_unread) = login_unread(&server, CAROL, "carol-pw");
    assert_eq!(reply_status(&carol_unread), "null", "{carol_unread}");
    let friends = elements(&carol.simple("friends", CAROL).unwrap());
    assert_eq!(friends.len(), 1, "{friends:?}");
    assert_eq!(s(&friends[0], "user_id"), ALICE);
    assert_eq!(s(&friends[0], "friend_relation"), "pending");

    let r = carol.pair("accept_friend", CAROL, ALICE).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let got = alice.recv_type("receive_message").unwrap();
    assert_eq!(s(&got, "send_id"), CAROL);
    assert_eq!(s(&got, "message_body"), GREETING);
    let r = alice.pair("accept_friend", ALICE, CAROL).unwrap();
    assert_eq!(r["status"], "error", "accepted once only: {r}");

    let r = alice.request(text(ALICE, CAROL, "thanks carol")).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let got = carol.recv_type("receive_message").unwrap();
    assert_eq!(s(&got, "message_body"), "thanks carol");

    let mut c = db.conn();
    let rel = relations(&mut c);
    assert_accepted(&rel, &[(ALICE, CAROL), (CAROL, ALICE)]);
    let stored = messages(&mut c);
    assert_eq!(
        the_message(&stored, CAROL, ALICE, GREETING).status,
        "received"
    );
    assert_eq!(
        the_message(&stored, ALICE, CAROL, "thanks carol").status,
        "received"
    );
    drop(server);
}
