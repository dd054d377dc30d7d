//! Broken, hostile or merely unusual input: bad bytes, bad JSON, huge frames, frames
//! coalesced in one write or split over many, unknown types, oversized or malformed fields.

mod common;
use common::*;

use std::time::Duration;

use corechat_engine::client::qt_json;

/// One wire frame around `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// One wire frame holding `v` as the Qt client writes it.
fn qt_frame(v: &Value) -> Vec<u8> {
    frame(&qt_json(v))
}

/// The connection is alive and logged in as `user` (or not logged in, if `None`).
#[track_caller]
fn assert_usable(c: &mut Client, user: Option<&str>) {
    let r = c.simple("friends", user.unwrap_or("13870000000")).unwrap();
    assert_strings(&r);
    match user {
        Some(_) => assert_ne!(reply_status(&r), "error", "{r}"),
        None => assert_eq!(elements(&r)[0]["message"], "not logged in", "{r}"),
    }
}

#[test]
fn bad_bytes_and_bad_json_are_answered_and_survived() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13870000001, 1, 3);
    let bad: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, b'{', b'}'],
        b"{\"type\": \"login\", \"user_id\": \"\xc3\x28\"}".to_vec(),
        b"{\"type\":".to_vec(),
        b"not json at all".to_vec(),
        b"".to_vec(),
        b"{\"type\": \"login\"} trailing".to_vec(),
        b"[1, 2]".to_vec(),
        b"\"a string\"".to_vec(),
        b"{}".to_vec(),
        b"{\"type\": 5}".to_vec(),
        b"{\"type\": null, \"user_id\": \"1\"}".to_vec(),
    ];
    let mut c = s.client();
    // Before login.
    for body in &bad {
        c.send_raw(&frame(body)).unwrap();
        let r = c.recv().unwrap();
        assert_error(&r, "error");
        assert_usable(&mut c, None);
    }
    // And after login, on the user's own shard.
    c.register(&p[0], "n", "pw").unwrap();
    assert_eq!(reply_status(&c.login(&p[0], "pw").unwrap()), "success");
    for body in &bad {
        c.send_raw(&frame(body)).unwrap();
        let r = c.recv().unwrap();
        assert_error(&r, "error");
        assert_usable(&mut c, Some(&p[0]));
    }
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn frame_over_one_mib_is_refused_and_the_connection_closed() {
    let mut s = TestServer::start_fast(3);
    for len in [(1u32 << 20) + 1, 64 << 20, u32::MAX] {
        let mut c = s.client();
        c.send_raw(&len.to_be_bytes()).unwrap();
        let r = c.recv().unwrap();
        assert_error(&r, "error");
        match c.recv() {
            Ok(v) => panic!("connection still open, sent {v}"),
            Err(e) => assert!(!is_timeout(&e), "not closed: {e}"),
        }
    }
    // A frame of exactly 1 MiB is a frame like any other (here: a request before login).
    let mut c = s.client();
    let mut body = br#"{"type": "friends", "user_id": "13870000000"}"#.to_vec();
    body.resize(1 << 20, b' ');
    c.send_raw(&frame(&body)).unwrap();
    let r = c.recv_type("friends").unwrap();
    assert_eq!(elements(&r)[0]["message"], "not logged in", "{r}");
    assert_usable(&mut c, None);
    // The server itself is fine.
    let p = phones_on_distinct_shards(13870000100, 1, 3);
    let _u = user(&s, &p[0], "pw");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn many_frames_in_one_write() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13871000000, 6, 3);
    // The whole start-up of a client in one write (after its registration), for users on
    // every shard: the login usually moves the connection to another shard, with the frames
    // that follow it.
    let mut clients = Vec::new();
    for phone in &p {
        let mut c = s.client();
        assert_eq!(c.register(phone, "n", "pw").unwrap()["status"], "success");
        let mut bytes = Vec::new();
        for v in [
            json!({"type": "friends", "user_id": phone}),
            json!({"type": "login", "user_id": phone, "user_password": "wrong"}),
            json!({"type": "login", "user_id": phone, "user_password": "pw"}),
            json!({"type": "get_unread_messages", "user_id": phone}),
            json!({"type": "friends", "user_id": phone}),
            json!({"type": "chatting", "user_id": phone}),
            json!({"type": "search_user", "user_id": phone, "search_id": phone}),
        ] {
            bytes.extend(qt_frame(&v));
        }
        c.send_raw(&bytes).unwrap();
        let want = [
            ("friends", "error"),
            ("login", "error"),
            ("login", "success"),
            ("get_unread_messages", "null"),
            ("friends", "null"),
            ("chatting", "null"),
            ("search_user", "success"),
        ];
        for (ty, st) in want {
            let r = c.recv().unwrap();
            assert_strings(&r);
            assert_eq!(reply_type(&r), ty, "{r}");
            assert_eq!(reply_status(&r), st, "{r}");
        }
        clients.push(c);
    }
    // Friends, then a burst of messages and update_chats in one write.
    let (mut a, mut b) = {
        let mut it = clients.into_iter();
        (it.next().unwrap(), it.next().unwrap())
    };
    befriend(&mut a, &p[0], &mut b, &p[1]);
    assert_receives(&mut a, GREETING);
    let mut bytes = Vec::new();
    for i in 0..50 {
        bytes.extend(qt_frame(&text(&p[0], &p[1], &format!("burst {i}"))));
        bytes.extend(qt_frame(&update_chat(
            &p[0],
            &p[1],
            &format!("burst {i}"),
            "text",
            "2026-11-28 12:00:00",
        )));
    }
    a.send_raw(&bytes).unwrap();
    for _ in 0..50 {
        assert_eq!(a.recv_type("send_message").unwrap()["status"], "success");
        assert_eq!(a.recv_type("update_chat").unwrap()["status"], "success");
    }
    for i in 0..50 {
        assert_receives(&mut b, &format!("burst {i}"));
    }
    assert_eq!(b.chat_row(&p[1], &p[0]).unwrap()["unread_count"], "50");
    assert_eq!(a.chat_row(&p[0], &p[1]).unwrap()["unread_count"], "0");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn frames_split_over_many_writes() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13872000000, 3, 3);
    let pause = || std::thread::sleep(Duration::from_millis(5));
    for phone in &p {
        let mut c = s.client();
        // A register frame, a few bytes at a time (the length itself split too).
        let reg = qt_frame(&json!({"type": "register", "user_phone": phone,
            "user_name": "分开 split", "user_password": "pw"}));
        for chunk in reg.chunks(3) {
            c.send_raw(chunk).unwrap();
            pause();
        }
        assert_eq!(c.recv().unwrap()["status"], "success");
        // A login frame and half of the next one, then the rest: the connection may move to
        // another shard between the two halves.
        let login = qt_frame(&json!({"type": "login", "user_id": phone, "user_password": "pw"}));
        let unread = qt_frame(&json!({"type": "get_unread_messages", "user_id": phone}));
        let friends = qt_frame(&json!({"type": "friends", "user_id": phone}));
        let mut first = login.clone();
        first.extend_from_slice(&unread[..2]);
        c.send_raw(&first).unwrap();
        pause();
        c.send_raw(&unread[2..9]).unwrap();
        pause();
        let mut rest = unread[9..].to_vec();
        rest.extend_from_slice(&friends[..friends.len() - 1]);
        c.send_raw(&rest).unwrap();
        pause();
        c.send_raw(&friends[friends.len() - 1..]).unwrap();
        let r = c.recv().unwrap();
        assert_eq!(reply_type(&r), "login", "{r}");
        assert_eq!(reply_status(&r), "success", "{r}");
        assert_eq!(elements(&r)[0]["user_name"], "分开 split");
        assert_null(&c.recv().unwrap(), "get_unread_messages");
        assert_null(&c.recv().unwrap(), "friends");
    }
    // A big message split in many pieces arrives whole.
    let mut a = login(&s, &p[0], "pw");
    let mut b = login(&s, &p[1], "pw");
    befriend(&mut a, &p[0], &mut b, &p[1]);
    let body: String = "长消息 long message ".repeat(2000);
    let f = qt_frame(&text(&p[0], &p[1], &body));
    for chunk in f.chunks(7000) {
        a.send_raw(chunk).unwrap();
        pause();
    }
    assert_eq!(a.recv_type("send_message").unwrap()["status"], "success");
    assert_receives(&mut b, &body);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn unknown_types_get_an_error_of_their_type() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13873000000, 1, 3);
    let mut c = s.client();
    for logged_in in [false, true] {
        if logged_in {
            c.register(&p[0], "n", "pw").unwrap();
            assert_eq!(reply_status(&c.login(&p[0], "pw").unwrap()), "success");
        }
        for ty in ["group_text", "receive_message", "logout", "LOGIN", "删除"] {
            let r = c
                .request(json!({"type": ty, "user_id": p[0], "group_id": "1"}))
                .unwrap();
            assert_error(&r, ty);
        }
        // A very long unknown type comes back shortened, still as an error.
        let long = "x".repeat(10_000);
        c.send(&json!({"type": long})).unwrap();
        let r = c.recv().unwrap();
        assert_strings(&r);
        assert_eq!(reply_status(&r), "error", "{r}");
        assert!(long.starts_with(reply_type(&r)), "{r}");
        assert_usable(&mut c, logged_in.then_some(p[0].as_str()));
    }
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn message_fields_are_validated() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb]) = two_friends(&s, 13874000000);
    let [a, b] = &p;
    assert_receives(&mut ca, GREETING);
    let ok_ts = "2026-11-28 12:00:00";
    let mut refused: Vec<Value> = Vec::new();
    // Over 64 KiB of body (the frame itself is well under 1 MiB).
    refused.push(text(a, b, &"x".repeat(64 * 1024 + 1)));
    refused.push(text(a, b, &"字".repeat(64 * 1024 / 3 + 1)));
    // Timestamps not in the client's format.
    for ts in [
        "",
        "yesterday",
        "2026-11-28T12:00:00",
        "2026-13-01 00:00:00",
        "2026-02-30 12:00:00",
        "2026-11-28 25:00:00",
        "2026-11-28 12:00",
        "2026-11-28 12:00:00; DROP TABLE m_user",
    ] {
        refused.push(message(a, b, "text", "bad time", ts));
    }
    // Types and chat types outside the schema, missing fields.
    refused.push(message(a, b, "vedio", "typo", ok_ts));
    refused.push(message(a, b, "sticker", "unknown", ok_ts));
    let mut g = text(a, b, "group");
    g["chat_type"] = json!("group");
    refused.push(g);
    for field in [
        "message_body",
        "receiver_id",
        "message_type",
        "message_timestamp",
    ] {
        let mut m = text(a, b, "missing");
        m.as_object_mut().unwrap().remove(field);
        refused.push(m);
    }
    let mut m = text(a, b, "object body");
    m["message_body"] = json!({"nested": "x"});
    refused.push(m);
    for req in refused {
        let r = ca.request(req.clone()).unwrap();
        assert_error(&r, "send_message");
    }
    // None of them reached B or changed the chat rows.
    let r = ca.request(text(a, b, "marker")).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let (before, m) = cb.frames_until("receive_message");
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(m["message_body"], "marker");
    assert_eq!(cb.chat_row(b, a).unwrap()["unread_count"], "1");
    // Exactly 64 KiB is fine.
    let body = "y".repeat(64 * 1024);
    assert_eq!(ca.request(text(a, b, &body)).unwrap()["status"], "success");
    assert_receives(&mut cb, &body);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn update_chat_accepts_number_or_string_counts_and_refuses_bad_ones() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, _cb]) = two_friends(&s, 13875000000);
    let [a, b] = &p;
    let ts = "2026-11-28 12:00:00";
    for count in [json!(0), json!("0"), json!(3), json!("3")] {
        let mut u = update_chat(a, b, "x", "text", ts);
        u["unread_count"] = count.clone();
        let r = ca.request(u).unwrap();
        assert_strings(&r);
        assert_eq!(r["status"], "success", "{count}: {r}");
        let row = ca.chat_row(a, b).unwrap();
        assert_eq!(
            row["unread_count"],
            count.to_string().trim_matches('"'),
            "{row}"
        );
    }
    for count in [
        json!(-1),
        json!("many"),
        json!(1.5),
        json!(null),
        json!(1e12),
    ] {
        let mut u = update_chat(a, b, "x", "text", ts);
        u["unread_count"] = count.clone();
        let r = ca.request(u).unwrap();
        assert_error(&r, "update_chat");
    }
    let mut u = update_chat(a, b, "x", "text", "now");
    assert_error(&ca.request(u.clone()).unwrap(), "update_chat");
    u["last_time"] = json!(ts);
    u["chat_status"] = json!("open");
    assert_error(&ca.request(u).unwrap(), "update_chat");
    // A conversation that does not exist.
    let u = update_chat(a, "19999999999", "x", "text", ts);
    assert_error(&ca.request(u).unwrap(), "update_chat");
    assert!(ca.chat_row(a, "19999999999").is_none());
    // Ids as JSON numbers, as the client may send them.
    let mut c = s.client();
    let id: u64 = a.parse().unwrap();
    let r = c
        .request(json!({"type": "login", "user_id": id, "user_password": "pa"}))
        .unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    let r = c
        .request(json!({"type": "friends", "user_id": id}))
        .unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn register_fields_are_validated_and_refusals_create_nothing() {
    let mut s = TestServer::start_fast(3);
    let mut c = s.client();
    let long_name = "名".repeat(256);
    let long_pw = "p".repeat(1025);
    let cases = [
        json!({"type": "register", "user_phone": "", "user_name": "n", "user_password": "pw"}),
        json!({"type": "register", "user_phone": "1387600000a", "user_name": "n", "user_password": "pw"}),
        json!({"type": "register", "user_phone": "1387600000000", "user_name": "n", "user_password": "pw"}),
        json!({"type": "register", "user_phone": "13876000001", "user_name": "", "user_password": "pw"}),
        json!({"type": "register", "user_phone": "13876000002", "user_name": long_name, "user_password": "pw"}),
        json!({"type": "register", "user_phone": "13876000003", "user_name": "n", "user_password": ""}),
        json!({"type": "register", "user_phone": "13876000004", "user_name": "n", "user_password": long_pw}),
        json!({"type": "register", "user_phone": "13876000005", "user_name": "n\u{0}x", "user_password": "pw"}),
        json!({"type": "register", "user_phone": "13876000006", "user_password": "pw"}),
        json!({"type": "register", "user_phone": "13876000007", "user_name": "n"}),
    ];
    for req in cases {
        let r = c.request(req.clone()).unwrap();
        assert_error(&r, "register");
        // Whatever was refused does not exist.
        if let Some(phone) = req["user_phone"].as_str().filter(|p| !p.is_empty()) {
            if phone.len() <= 12 && phone.bytes().all(|b| b.is_ascii_digit()) {
                let r = c.login(phone, "pw").unwrap();
                assert_error(&r, "login");
            }
        }
    }
    // Limits are inclusive: 255 characters of name, 1024 bytes of password, 12 digits.
    let r = c
        .register("138760000099", &"名".repeat(255), &"p".repeat(1024))
        .unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let r = c.login("138760000099", &"p".repeat(1024)).unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    assert_eq!(elements(&r)[0]["user_name"], "名".repeat(255));
    assert_eq!(s.stop(), Some(0));
}

/// `register` and `login` in one write (the connection may move to the user's shard at the
/// login, before the registration is committed): every request is answered.
#[test]
fn register_and_login_in_one_write_are_both_answered() {
    // Commits that take a moment (a batch linger here; a slow disk in real life) let the
    // login finish first.
    let mut flags = FAST_AUTH.to_vec();
    flags.extend(["--batch-linger-us", "200000"]);
    let mut s = TestServer::start_with(3, &flags);
    let p = phones_on_distinct_shards(13877000000, 12, 3);
    let addr = s.addr;
    let lost: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = p
            .iter()
            .map(|phone| {
                sc.spawn(move || {
                    let mut c = Client::connect(addr).unwrap();
                    let mut bytes = Vec::new();
                    for v in [
                        json!({"type": "register", "user_phone": phone, "user_name": "n",
                            "user_password": "pw"}),
                        json!({"type": "login", "user_id": phone, "user_password": "pw"}),
                        json!({"type": "friends", "user_id": phone}),
                    ] {
                        bytes.extend(qt_frame(&v));
                    }
                    c.send_raw(&bytes).unwrap();
                    let r = c.recv_type("login").unwrap();
                    assert_eq!(reply_status(&r), "success", "{r}");
                    assert_null(&c.recv_type("friends").unwrap(), "friends");
                    match c.recv_type("register") {
                        Ok(r) => {
                            assert_eq!(r["status"], "success", "{r}");
                            None
                        }
                        Err(e) if is_timeout(&e) => Some(format!(
                            "{phone} (shard {}): no register reply",
                            shard_of(phone, 3)
                        )),
                        Err(e) => panic!("{phone}: {e}"),
                    }
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(lost.is_empty(), "register replies lost: {lost:?}");
    assert_eq!(s.stop(), Some(0));
}
