//! The whole life of a friendship, as the Qt client lives it, for two and for three users on
//! different shards: register, login, lists, search, request, accept, messages of every type,
//! update_chat, delete.

mod common;
use common::*;

fn is_timestamp(s: &Value) -> bool {
    s.as_str()
        .is_some_and(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok())
}

/// Registers `phone` on a fresh connection and checks the reply shape.
fn register(s: &TestServer, phone: &str, name: &str, pw: &str) -> Client {
    let mut c = s.client();
    let r = c.register(phone, name, pw).unwrap();
    assert_strings(&r);
    assert!(r.is_object(), "register reply must be an object: {r}");
    assert_eq!(r["type"], "register", "{r}");
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["user_id"], phone, "{r}");
    c
}

/// Logs in and checks the profile in the reply, then the client's start-up requests.
fn login_checked(c: &mut Client, phone: &str, name: &str, pw: &str) {
    let r = c.login(phone, pw).unwrap();
    assert_strings(&r);
    let a = r.as_array().expect("login reply must be an array");
    assert_eq!(a.len(), 1, "{r}");
    let p = &a[0];
    assert_eq!(p["type"], "login", "{r}");
    assert_eq!(p["status"], "success", "{r}");
    assert_profile(p, phone, name);
    // What the client sends right after a login, on a fresh account.
    let r = c.simple("get_unread_messages", phone).unwrap();
    assert_null(&r, "get_unread_messages");
    assert!(
        elements(&r)[0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{r}"
    );
    assert_null(&c.simple("friends", phone).unwrap(), "friends");
    assert_null(&c.simple("chatting", phone).unwrap(), "chatting");
}

fn assert_profile(p: &Value, phone: &str, name: &str) {
    assert_eq!(p["user_id"], phone, "{p}");
    assert_eq!(p["user_phone"], phone, "{p}");
    assert_eq!(p["user_name"], name, "{p}");
    assert_eq!(p["user_email"], format!("{phone}@an.com"), "{p}");
    assert_eq!(p["user_avatar"], "/default.jpg", "{p}");
    assert!(
        p["user_status"].as_str().is_some_and(|s| !s.is_empty()),
        "{p}"
    );
    assert!(is_timestamp(&p["user_created"]), "{p}");
    assert!(p.get("user_password").is_none(), "password leaked: {p}");
}

/// Checks a `receive_message` frame.
#[track_caller]
fn assert_received(m: &Value, from: &str, to: &str, ty: &str, body: &str) {
    assert_strings(m);
    assert!(m.is_object(), "{m}");
    assert_eq!(m["type"], "receive_message", "{m}");
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["send_id"], from, "{m}");
    assert_eq!(m["receiver_id"], to, "{m}");
    assert_eq!(m["chat_type"], "friend", "{m}");
    assert_eq!(m["message_type"], ty, "{m}");
    assert_eq!(m["message_body"], body, "{m}");
    assert!(m["file_path"].is_string(), "{m}");
    assert!(is_timestamp(&m["message_timestamp"]), "{m}");
}

#[track_caller]
fn assert_chat(row: &Value, comm: &str, name: &str, last: &str, ty: &str, unread: &str) {
    assert_eq!(row["type"], "chatting", "{row}");
    assert_eq!(row["status"], "success", "{row}");
    assert_eq!(row["comm_id"], comm, "{row}");
    assert_eq!(row["chat_type"], "friend", "{row}");
    assert_eq!(row["last_message"], last, "{row}");
    assert_eq!(row["last_message_type"], ty, "{row}");
    assert!(is_timestamp(&row["last_time"]), "{row}");
    assert_eq!(row["unread_count"], unread, "{row}");
    assert_eq!(row["chat_status"], "chatting", "{row}");
    assert_eq!(row["user_name"], name, "{row}");
    assert_eq!(row["user_avatar"], "/default.jpg", "{row}");
}

#[test]
fn two_users_on_different_shards() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13800000000, 2, 3);
    let (a, b) = (&p[0], &p[1]);
    let (na, nb) = ("小红 Alice", "小明 Bob");
    let mut ca = register(&s, a, na, "pw-a");
    login_checked(&mut ca, a, na, "pw-a");
    let mut cb = register(&s, b, nb, "密码-b");
    login_checked(&mut cb, b, nb, "密码-b");

    // search_user: found (profile, no password) and not found.
    let r = ca.checked(json!({"type": "search_user", "user_id": a, "search_id": b}));
    let e = elements(&r);
    assert!(r.is_array() && e.len() == 1, "{r}");
    assert_eq!(e[0]["type"], "search_user");
    assert_eq!(e[0]["status"], "success");
    assert_profile(&e[0], b, nb);
    let r = ca.checked(json!({"type": "search_user", "user_id": a, "search_id": "19999999999"}));
    assert_null(&r, "search_user");

    // A asks B.
    let r = ca.checked(json!({"type": "add_friend", "user_id": a, "friend_id": b}));
    assert!(r.is_object(), "{r}");
    assert_eq!(r["type"], "add_friend", "{r}");
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["user_id"], *a, "{r}");
    assert_eq!(r["friend_id"], *b, "{r}");
    let rows = cb.rows("friends", b);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_profile(&rows[0], a, na);
    assert_eq!(rows[0]["friend_relation"], "pending");
    assert!(is_timestamp(&rows[0]["created_relation"]), "{rows:?}");
    let mine = ca.friend_row(a, b).expect("requester keeps its request");
    assert_ne!(mine["friend_relation"], "accepted", "{mine}");
    // Not friends yet: no chat rows on either side.
    assert_null(&ca.simple("chatting", a).unwrap(), "chatting");
    assert_null(&cb.simple("chatting", b).unwrap(), "chatting");

    // The requester cannot accept its own request.
    let r = ca.pair("accept_friend", a, b).unwrap();
    assert_error(&r, "accept_friend");
    assert_ne!(cb.friend_row(b, a).unwrap()["friend_relation"], "accepted");

    // B accepts.
    let r = cb.checked(json!({"type": "accept_friend", "user_id": b, "friend_id": a}));
    assert!(r.is_object(), "{r}");
    assert_eq!(r["type"], "accept_friend", "{r}");
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["user_id"], *b, "{r}");
    assert_eq!(r["friend_id"], *a, "{r}");
    // The greeting reaches the online requester.
    let g = ca.recv_type("receive_message").unwrap();
    assert_received(&g, b, a, "text", GREETING);
    // Accepting again is refused.
    assert_error(&cb.pair("accept_friend", b, a).unwrap(), "accept_friend");
    assert_error(&ca.pair("add_friend", a, b).unwrap(), "add_friend");

    for (c, me, other, name) in [(&mut ca, a, b, nb), (&mut cb, b, a, na)] {
        let rows = c.rows("friends", me);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_profile(&rows[0], other, name);
        assert_eq!(rows[0]["friend_relation"], "accepted", "{rows:?}");
    }
    let rows = ca.rows("chatting", a);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_chat(&rows[0], b, nb, GREETING, "text", "1");
    let rows = cb.rows("chatting", b);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_chat(&rows[0], a, na, GREETING, "text", "0");

    // A text message, A -> B.
    let ts = "2026-11-28 12:00:01";
    let r = ca.checked(message(
        a,
        b,
        "text",
        "你好，B！ \"quoted\" \\ \n new line",
        ts,
    ));
    assert!(r.is_object(), "{r}");
    assert_eq!(r["type"], "send_message", "{r}");
    assert_eq!(r["status"], "success", "{r}");
    let m = cb.recv_type("receive_message").unwrap();
    assert_received(&m, a, b, "text", "你好，B！ \"quoted\" \\ \n new line");
    assert_eq!(m["file_path"], " ");
    assert_eq!(m["message_timestamp"], ts);
    let row = ca.chat_row(a, b).unwrap();
    assert_chat(
        &row,
        b,
        nb,
        "你好，B！ \"quoted\" \\ \n new line",
        "text",
        "1",
    );
    assert_eq!(row["last_time"], ts);
    let row = cb.chat_row(b, a).unwrap();
    assert_chat(
        &row,
        a,
        na,
        "你好，B！ \"quoted\" \\ \n new line",
        "text",
        "1",
    );
    assert_eq!(row["last_time"], ts);

    // Every other type, B -> A: the chat list shows a placeholder.
    let kinds = [
        ("image", "[图片]"),
        ("audio", "[语音]"),
        ("video", "[视频]"),
        ("file", "[文件]"),
        ("emoticon", "[动画表情]"),
    ];
    for (i, (ty, shown)) in kinds.iter().enumerate() {
        let ts = format!("2026-11-28 12:01:0{i}");
        let body = format!("{ty}-payload.bin");
        let r = cb.checked(message(b, a, ty, &body, &ts));
        assert_eq!(r["status"], "success", "{r}");
        let m = ca.recv_type("receive_message").unwrap();
        assert_received(&m, b, a, ty, &body);
        assert_eq!(m["file_path"], format!("/files/{body}"));
        let unread = (2 + i).to_string();
        assert_chat(&ca.chat_row(a, b).unwrap(), b, nb, shown, ty, &unread);
        assert_chat(&cb.chat_row(b, a).unwrap(), a, na, shown, ty, "1");
    }

    // A opens the conversation.
    let r = ca.checked(update_chat(
        a,
        b,
        "[动画表情]",
        "emoticon",
        "2026-11-28 12:02:00",
    ));
    assert!(r.is_object(), "{r}");
    assert_eq!(r["type"], "update_chat", "{r}");
    assert_eq!(r["status"], "success", "{r}");
    let row = ca.chat_row(a, b).unwrap();
    assert_chat(&row, b, nb, "[动画表情]", "emoticon", "0");
    assert_eq!(row["last_time"], "2026-11-28 12:02:00");
    // B's side is untouched.
    assert_eq!(cb.chat_row(b, a).unwrap()["unread_count"], "1");
    // And the client's usual pair: send_message then update_chat, back to back.
    ca.send(&message(a, b, "text", "again", "2026-11-28 12:03:00"))
        .unwrap();
    ca.send(&update_chat(a, b, "again", "text", "2026-11-28 12:03:00"))
        .unwrap();
    assert_eq!(ca.recv_type("send_message").unwrap()["status"], "success");
    assert_eq!(ca.recv_type("update_chat").unwrap()["status"], "success");
    assert_chat(&ca.chat_row(a, b).unwrap(), b, nb, "again", "text", "0");
    assert_received(
        &cb.recv_type("receive_message").unwrap(),
        a,
        b,
        "text",
        "again",
    );
    assert_chat(&cb.chat_row(b, a).unwrap(), a, na, "again", "text", "2");

    // B deletes A: gone both ways, chat rows too.
    let r = cb.checked(json!({"type": "delete_friend", "user_id": b, "friend_id": a}));
    assert!(r.is_object(), "{r}");
    assert_eq!(r["type"], "delete_friend", "{r}");
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["user_id"], *b, "{r}");
    assert_eq!(r["friend_id"], *a, "{r}");
    for (c, me) in [(&mut ca, a), (&mut cb, b)] {
        assert_null(&c.simple("friends", me).unwrap(), "friends");
        assert_null(&c.simple("chatting", me).unwrap(), "chatting");
    }
    // No more messages either way.
    assert_error(
        &ca.request(text(a, b, "still there?")).unwrap(),
        "send_message",
    );
    assert_error(&cb.request(text(b, a, "no")).unwrap(), "send_message");
    // Nothing arrived on either side: the next frame after a round trip is its reply.
    assert_quiet(&mut ca, a);
    assert_quiet(&mut cb, b);

    // They can become friends again.
    befriend(&mut ca, a, &mut cb, b);
    assert_received(
        &ca.recv_type("receive_message").unwrap(),
        b,
        a,
        "text",
        GREETING,
    );
    assert_eq!(ca.request(text(a, b, "back")).unwrap()["status"], "success");
    assert_received(
        &cb.recv_type("receive_message").unwrap(),
        a,
        b,
        "text",
        "back",
    );
    assert_chat(&cb.chat_row(b, a).unwrap(), a, na, "back", "text", "1");

    assert_eq!(s.stop(), Some(0));
}

#[test]
fn three_users_on_three_shards() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13810000000, 3, 3);
    let names = ["甲 A", "乙 B", "丙 C"];
    let mut c: Vec<Client> = Vec::new();
    for (i, phone) in p.iter().enumerate() {
        let mut cl = register(&s, phone, names[i], &format!("pw{i}"));
        login_checked(&mut cl, phone, names[i], &format!("pw{i}"));
        c.push(cl);
    }
    // A triangle: i asks i+1, i+1 accepts. Everyone is requester once and acceptor once.
    for i in 0..3 {
        let j = (i + 1) % 3;
        let r = c[i].pair("add_friend", &p[i], &p[j]).unwrap();
        assert_eq!(r["status"], "success", "{r}");
        let req = c[j].friend_row(&p[j], &p[i]).unwrap();
        assert_eq!(req["friend_relation"], "pending");
        let r = c[j].pair("accept_friend", &p[j], &p[i]).unwrap();
        assert_eq!(r["status"], "success", "{r}");
        let g = c[i].recv_type("receive_message").unwrap();
        assert_received(&g, &p[j], &p[i], "text", GREETING);
    }
    for i in 0..3 {
        let rows = c[i].rows("friends", &p[i]);
        assert_eq!(rows.len(), 2, "{rows:?}");
        for r in &rows {
            assert_eq!(r["friend_relation"], "accepted", "{r}");
        }
        let next = (i + 1) % 3; // i asked next: greeting unread
        let prev = (i + 2) % 3; // prev asked i: i accepted
        let rows = c[i].rows("chatting", &p[i]);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let to_next = rows.iter().find(|r| r["comm_id"] == p[next]).unwrap();
        assert_chat(to_next, &p[next], names[next], GREETING, "text", "1");
        let to_prev = rows.iter().find(|r| r["comm_id"] == p[prev]).unwrap();
        assert_chat(to_prev, &p[prev], names[prev], GREETING, "text", "0");
    }

    // Everyone writes to both others; later timestamps sort first in the chat list.
    let mut minute = 0;
    for i in 0..3 {
        for j in 0..3 {
            if i == j {
                continue;
            }
            minute += 1;
            let ts = format!("2099-01-01 00:{minute:02}:00");
            let body = format!("{i}->{j}");
            let r = c[i]
                .request(message(&p[i], &p[j], "text", &body, &ts))
                .unwrap();
            assert_eq!(r["status"], "success", "{r}");
            let m = c[j].recv_type("receive_message").unwrap();
            assert_received(&m, &p[i], &p[j], "text", &body);
        }
    }
    for i in 0..3 {
        let rows = c[i].rows("chatting", &p[i]);
        assert_eq!(rows.len(), 2, "{rows:?}");
        // Most recent first.
        assert!(
            rows[0]["last_time"].as_str() >= rows[1]["last_time"].as_str(),
            "{rows:?}"
        );
        for r in &rows {
            let j: usize = (0..3).find(|&j| r["comm_id"] == p[j]).unwrap();
            // The later of (i->j, j->i) is the last message.
            let last = if j > i {
                format!("{j}->{i}")
            } else {
                format!("{i}->{j}")
            };
            assert_eq!(r["last_message"], last, "{r}");
            // One greeting if i asked j, plus one message from j.
            let unread = if j == (i + 1) % 3 { "2" } else { "1" };
            assert_eq!(r["unread_count"], unread, "{r}");
        }
    }

    // A and B part; C keeps both.
    let r = c[0].pair("delete_friend", &p[0], &p[1]).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    for (i, other) in [(0usize, 2usize), (1, 2)] {
        let f = c[i].rows("friends", &p[i]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0]["user_id"], p[other]);
        let ch = c[i].rows("chatting", &p[i]);
        assert_eq!(ch.len(), 1, "{ch:?}");
        assert_eq!(ch[0]["comm_id"], p[other]);
    }
    assert_eq!(c[2].rows("friends", &p[2]).len(), 2);
    assert_eq!(c[2].rows("chatting", &p[2]).len(), 2);
    assert_error(
        &c[0].request(text(&p[0], &p[1], "x")).unwrap(),
        "send_message",
    );
    assert_error(
        &c[1].request(text(&p[1], &p[0], "x")).unwrap(),
        "send_message",
    );
    assert_eq!(
        c[0].request(text(&p[0], &p[2], "to C")).unwrap()["status"],
        "success"
    );
    assert_received(
        &c[2].recv_type("receive_message").unwrap(),
        &p[0],
        &p[2],
        "text",
        "to C",
    );
    assert_eq!(
        c[1].request(text(&p[1], &p[2], "B to C")).unwrap()["status"],
        "success"
    );
    assert_received(
        &c[2].recv_type("receive_message").unwrap(),
        &p[1],
        &p[2],
        "text",
        "B to C",
    );

    assert_eq!(s.stop(), Some(0));
}

/// The default (production) password hashing works end to end.
#[test]
fn default_password_hashing() {
    let mut s = TestServer::start(3);
    let (p, _clients) = two_friends(&s, 13820000000);
    let (_c, r) = relogin(&s, &p[1], "pb");
    assert_null(&r, "get_unread_messages");
    assert_eq!(s.stop(), Some(0));
}

/// A conversation the client closed (`chat_status: close`) stays in the list as `close` and
/// comes back as `chatting` with the next message.
#[test]
fn closed_conversation_reopens_on_the_next_message() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb]) = two_friends(&s, 13830500000);
    let [a, b] = &p;
    let mut u = update_chat(a, b, GREETING, "text", "2026-11-28 12:00:00");
    u["chat_status"] = json!("close");
    assert_eq!(ca.checked(u)["status"], "success");
    let row = ca.chat_row(a, b).unwrap();
    assert_eq!(row["chat_status"], "close", "{row}");
    assert_eq!(row["unread_count"], "0", "{row}");
    assert_eq!(
        cb.request(text(b, a, "knock knock")).unwrap()["status"],
        "success"
    );
    let row = ca.chat_row(a, b).unwrap();
    assert_chat(&row, b, &format!("user {b}"), "knock knock", "text", "1");
    assert_eq!(s.stop(), Some(0));
}
