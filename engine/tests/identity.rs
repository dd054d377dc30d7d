//! Identity comes from the session: nothing but register and login before a login, and after
//! it no request may act as another user. Also login failures and double registration.

mod common;
use common::*;

/// Every request type but register/login, acting as `me` (towards `other`), well formed.
fn requests(me: &str, other: &str) -> Vec<Value> {
    vec![
        json!({"type": "get_unread_messages", "user_id": me}),
        json!({"type": "chatting", "user_id": me}),
        json!({"type": "friends", "user_id": me}),
        json!({"type": "search_user", "user_id": me, "search_id": other}),
        json!({"type": "add_friend", "user_id": me, "friend_id": other}),
        json!({"type": "accept_friend", "user_id": me, "friend_id": other}),
        json!({"type": "delete_friend", "user_id": me, "friend_id": other}),
        text(me, other, "hello"),
        update_chat(me, other, "hello", "text", "2026-11-28 12:00:00"),
    ]
}

#[test]
fn nothing_but_register_and_login_before_login() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, cb]) = two_friends(&s, 13850000000);
    let [a, b] = &p;
    assert_receives(&mut ca, GREETING);
    cb.go_offline();
    let mut cx = s.client();
    for req in requests(b, a).into_iter().chain(requests(a, b)) {
        let ty = req["type"].as_str().unwrap().to_string();
        let r = cx.request(req).unwrap();
        assert_error(&r, &ty);
        assert_eq!(elements(&r)[0]["message"], "not logged in", "{r}");
    }
    // Nothing happened: A was not messaged, the friendship stands, B's chat is unchanged.
    let f = assert_quiet(&mut ca, a);
    assert_eq!(elements(&f)[0]["friend_relation"], "accepted");
    // The same connection may still register and log in.
    let r = cx.register("13859999999", "late", "pw").unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let r = cx.login(b, "pb").unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    let row = cx.chat_row(b, a).unwrap();
    assert_eq!(row["unread_count"], "0", "{row}");
    assert_eq!(row["last_message"], GREETING, "{row}");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn cannot_act_as_another_user() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb, mut cc]) = users(&s, 13851000000, ["pa", "pb", "pc"]);
    let [a, b, c] = &p;
    // B and C are friends; C has an unread message from B waiting while offline.
    befriend(&mut cb, b, &mut cc, c);
    assert_receives(&mut cb, GREETING);
    cc.go_offline();
    let r = cb.request(text(b, c, "for C only")).unwrap();
    assert_eq!(r["status"], "success", "{r}");

    // A tries every request as B (towards C) and as C (towards B).
    for req in requests(b, c).into_iter().chain(requests(c, b)) {
        let ty = req["type"].as_str().unwrap().to_string();
        let r = ca.request(req).unwrap();
        assert_error(&r, &ty);
        let e = elements(&r);
        assert_eq!(e.len(), 1, "{r}");
        // An error carries nothing of the other user's data.
        assert!(e[0].get("friend_relation").is_none(), "{r}");
        assert!(e[0].get("message_body").is_none(), "{r}");
        assert!(e[0].get("comm_id").is_none(), "{r}");
    }
    // A's own requests still work, and A received nothing.
    assert_null(&assert_quiet(&mut ca, a), "friends");
    assert_null(&ca.simple("chatting", a).unwrap(), "chatting");
    // B received nothing "from C", and B's friendship with C stands.
    let f = elements(&assert_quiet(&mut cb, b));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["user_id"], *c);
    assert_eq!(f[0]["friend_relation"], "accepted");
    // C's message was not consumed by A's get_unread_messages, and C's chat row was not
    // rewritten by A's update_chat.
    let (mut cc, r) = relogin(&s, c, "pc");
    assert_eq!(unread_bodies(&r), vec!["for C only"], "{r}");
    let row = cc.chat_row(c, b).unwrap();
    assert_eq!(row["unread_count"], "1", "{row}");
    assert_eq!(row["last_message"], "for C only", "{row}");
    let f = cc.rows("friends", c);
    assert_eq!(f.len(), 1, "no request from A was recorded as C: {f:?}");
    assert_eq!(f[0]["user_id"], *b);
    assert_eq!(f[0]["friend_relation"], "accepted");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn wrong_password_then_retry_on_the_same_connection() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13852000000, 3, 3);
    for phone in &p {
        let mut c = s.client();
        assert_eq!(
            c.register(phone, "n", "right").unwrap()["status"],
            "success"
        );
        for wrong in ["wrong", "Right", "right "] {
            let r = c.login(phone, wrong).unwrap();
            assert_error(&r, "login");
            assert!(r.is_array(), "{r}");
            assert!(elements(&r)[0].get("user_id").is_none_or(|v| v.is_string()));
            assert_error(&c.simple("friends", phone).unwrap(), "friends");
        }
        let r = c.login(phone, "right").unwrap();
        assert_strings(&r);
        assert_eq!(reply_status(&r), "success", "{r}");
        assert_eq!(elements(&r)[0]["user_id"], *phone);
        assert_no_unread(&mut c, phone);
        // Logged in: a second login or register on this connection is refused.
        assert_error(&c.login(phone, "right").unwrap(), "login");
        assert_error(&c.register("13852999999", "x", "y").unwrap(), "register");
        assert_null(&c.simple("friends", phone).unwrap(), "friends");
    }
    // A wrong password again after a good one (the credential cache must not accept it).
    let mut c = s.client();
    assert_error(&c.login(&p[0], "wrong").unwrap(), "login");
    // The register that was refused while logged in did not happen.
    assert_error(&c.login("13852999999", "y").unwrap(), "login");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn login_of_unknown_user_fails() {
    let mut s = TestServer::start_fast(3);
    let mut c = s.client();
    for id in ["13853000000", "1", "nobody", "13853000000' OR '1'='1"] {
        let r = c.login(id, "pw").unwrap();
        assert_error(&r, "login");
    }
    let r = c.register("13853000000", "now", "pw").unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let r = c.login("13853000000", "pw").unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn double_register_fails() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13854000000, 3, 3);
    for phone in &p {
        let mut c = s.client();
        let r = c.register(phone, "first", "pw1").unwrap();
        assert_eq!(r["status"], "success", "{r}");
        let r = c.register(phone, "second", "pw2").unwrap();
        assert_error(&r, "register");
        assert!(r.is_object(), "{r}");
        // From another connection too; and the first password stays.
        let mut d = s.client();
        assert_error(&d.register(phone, "third", "pw3").unwrap(), "register");
        assert_error(&d.login(phone, "pw2").unwrap(), "login");
        let r = d.login(phone, "pw1").unwrap();
        assert_eq!(reply_status(&r), "success", "{r}");
        assert_eq!(elements(&r)[0]["user_name"], "first");
    }
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn concurrent_registrations_of_one_id_admit_exactly_one() {
    let mut s = TestServer::start_fast(3);
    let phone = "13855000000";
    let addr = s.addr;
    let results: Vec<(String, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                sc.spawn(move || {
                    let mut c = Client::connect(addr).unwrap();
                    let pw = format!("pw{i}");
                    let r = c.register(phone, &format!("n{i}"), &pw).unwrap();
                    assert_strings(&r);
                    (r["status"].as_str().unwrap().to_string(), pw)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<_> = results.iter().filter(|(st, _)| st == "success").collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .all(|(st, _)| st == "success" || st == "error"));
    let mut c = s.client();
    let r = c.login(phone, &winners[0].1).unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    assert_eq!(s.stop(), Some(0));
}
