//! Where a message goes: to every live device of its receiver, or into the offline queue that
//! `get_unread_messages` empties at the next login, oldest first and exactly once.

mod common;
use common::*;

/// Sends a text and waits for its `success`.
#[track_caller]
fn send_ok(c: &mut Client, from: &str, to: &str, body: &str) {
    let r = c.request(text(from, to, body)).unwrap();
    assert_strings(&r);
    assert_eq!(r["status"], "success", "{r}");
}

#[test]
fn every_device_of_the_receiver_gets_the_message() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13830000000, 2, 3);
    let (a, b) = (&p[0], &p[1]);
    let mut a1 = user(&s, a, "pa");
    let (mut a2, r) = login_unread(&s, a, "pa");
    assert_null(&r, "get_unread_messages");
    let mut b1 = user(&s, b, "pb");
    befriend(&mut a1, a, &mut b1, b);
    // The greeting reaches both of A's devices.
    for c in [&mut a1, &mut a2] {
        let g = c.recv_type("receive_message").unwrap();
        assert_strings(&g);
        assert_eq!(g["message_body"], GREETING);
    }
    send_ok(&mut b1, b, a, "to all of A");
    for c in [&mut a1, &mut a2] {
        let m = c.recv_type("receive_message").unwrap();
        assert_strings(&m);
        assert_eq!(m["type"], "receive_message");
        assert_eq!(m["send_id"], *b);
        assert_eq!(m["receiver_id"], *a);
        assert_eq!(m["message_body"], "to all of A");
    }
    // Either device may send; the receiver gets it once.
    send_ok(&mut a2, a, b, "from the second device");
    assert_receives(&mut b1, "from the second device");
    assert_quiet(&mut b1, b);
    // Nothing was queued for later.
    let (_a3, r) = relogin(&s, a, "pa");
    assert_null(&r, "get_unread_messages");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn fifth_session_is_refused_until_one_closes() {
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13831000000, 1, 3);
    let a = &p[0];
    let mut first = user(&s, a, "pa");
    let mut others: Vec<Client> = (0..3).map(|_| login(&s, a, "pa")).collect();
    let mut fifth = s.client();
    let r = fifth.login(a, "pa").unwrap();
    assert_error(&r, "login");
    assert!(r.is_array(), "login replies are arrays: {r}");
    // The refused connection is not logged in.
    let r = fifth.simple("friends", a).unwrap();
    assert_error(&r, "friends");
    assert_eq!(elements(&r)[0]["message"], "not logged in");
    // The four sessions still work.
    assert_null(&first.simple("friends", a).unwrap(), "friends");
    for c in &mut others {
        assert_null(&c.simple("chatting", a).unwrap(), "chatting");
    }
    // Once one session is gone, the same connection may log in.
    others.pop().unwrap().go_offline();
    let r = fifth.login(a, "pa").unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    assert_null(&fifth.simple("friends", a).unwrap(), "friends");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn offline_messages_are_handed_over_oldest_first_exactly_once() {
    let mut s = TestServer::start_fast(3);
    // B asks both while online: the greetings are delivered live.
    let (p, [mut ca, mut cb, mut cc]) = b_befriends_a_and_c(&s, 13832000000);
    let [a, b, c] = &p;
    send_ok(&mut ca, a, b, "live");
    assert_receives(&mut cb, "live");

    let order = [(a, "a1"), (a, "a2"), (c, "c1"), (a, "a3"), (c, "c2")];
    let mut expect = Vec::new();
    let (mut cb, r) = while_offline(&mut s, cb, b, "pb", |_| {
        // While B is away, A (one shard) and C (another) write, interleaved.
        for (i, (from, body)) in order.into_iter().enumerate() {
            let cl = if from == a { &mut ca } else { &mut cc };
            let ts = format!("2026-11-28 13:00:0{i}");
            let r = cl.request(message(from, b, "text", body, &ts)).unwrap();
            assert_eq!(r["status"], "success", "{r}");
            expect.push((from.to_string(), body.to_string(), ts));
        }
    });
    // B comes back: the five, in order, with every field; nothing delivered live repeats.
    assert_eq!(reply_type(&r), "get_unread_messages", "{r}");
    assert_eq!(reply_status(&r), "success", "{r}");
    let got = elements(&r);
    assert_eq!(got.len(), expect.len(), "{r}");
    for (m, (from, body, ts)) in got.iter().zip(&expect) {
        assert_eq!(m["type"], "get_unread_messages");
        assert_eq!(m["status"], "success");
        assert_eq!(m["send_id"], *from, "{r}");
        assert_eq!(m["receiver_id"], *b, "{r}");
        assert_eq!(m["chat_type"], "friend");
        assert_eq!(m["message_body"], *body, "{r}");
        assert_eq!(m["message_type"], "text");
        assert_eq!(m["file_path"], " ");
        assert_eq!(m["message_timestamp"], *ts, "{r}");
    }
    // Exactly once: a second ask has nothing, and neither has the next login.
    assert_no_unread(&mut cb, b);
    let (_cb2, r) = relogin(&s, b, "pb");
    assert_null(&r, "get_unread_messages");
    // The chat rows counted them: greeting + "live" + 3 from A; greeting + 2 from C.
    assert_eq!(cb.chat_row(b, a).unwrap()["unread_count"], "5");
    assert_eq!(cb.chat_row(b, c).unwrap()["unread_count"], "3");
    // Back online: new messages arrive live and are not queued.
    send_ok(&mut ca, a, b, "welcome back");
    assert_receives(&mut cb, "welcome back");
    assert_no_unread(&mut cb, b);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn greeting_waits_for_an_offline_requester() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb]) = users(&s, 13833000000, ["pa", "pb"]);
    let [a, b] = &p;
    assert_eq!(ca.pair("add_friend", a, b).unwrap()["status"], "success");
    let (mut ca, r) = while_offline(&mut s, ca, a, "pa", |_| {
        assert_eq!(cb.pair("accept_friend", b, a).unwrap()["status"], "success");
        send_ok(&mut cb, b, a, "are you there?");
    });
    assert_eq!(unread_bodies(&r), vec![GREETING, "are you there?"], "{r}");
    assert_eq!(elements(&r)[0]["send_id"], *b);
    let row = ca.chat_row(a, b).unwrap();
    assert_eq!(row["unread_count"], "2", "{row}");
    assert_eq!(row["last_message"], "are you there?", "{row}");
    assert_eq!(row["chat_status"], "chatting", "{row}");
    assert_no_unread(&mut ca, a);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn unread_messages_of_a_deleted_friend_are_dropped() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb]) = two_friends(&s, 13834000000);
    let [a, b] = &p;
    assert_receives(&mut ca, GREETING);
    let (mut ca, r) = while_offline(&mut s, ca, a, "pa", |_| {
        send_ok(&mut cb, b, a, "soon gone");
        assert_eq!(cb.pair("delete_friend", b, a).unwrap()["status"], "success");
    });
    assert_null(&r, "get_unread_messages");
    assert_null(&ca.simple("friends", a).unwrap(), "friends");
    assert_null(&ca.simple("chatting", a).unwrap(), "chatting");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn sender_gets_success_for_offline_and_online_receivers() {
    let mut s = TestServer::start_fast(2);
    let (p, [mut ca, cb]) = two_friends(&s, 13835000000);
    let [a, b] = &p;
    let (_cb, r) = while_offline(&mut s, cb, b, "pb", |_| {
        // Pipelined: ten sends, then ten replies, all success, in order.
        for i in 0..10 {
            ca.send_text(a, b, &format!("m{i}")).unwrap();
        }
        for _ in 0..10 {
            let r = ca.recv_type("send_message").unwrap();
            assert_strings(&r);
            assert_eq!(r["status"], "success", "{r}");
        }
    });
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(unread_bodies(&r), want);
    assert_eq!(s.stop(), Some(0));
}

/// A mailbox bigger than one connection's output limit (16 MiB by default) is still handed
/// over, and the connection survives; a second login does not find the same messages again.
#[test]
fn a_large_offline_mailbox_is_handed_over() {
    const N: usize = 300;
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, cb]) = two_friends(&s, 13836000000);
    let [a, b] = &p;
    cb.go_offline();
    // 300 messages of 60 KiB: about 18 MB waiting for B.
    let body = |i: usize| format!("{i:04}{}", "x".repeat(60 * 1024));
    for i in 0..N {
        ca.send_text(a, b, &body(i)).unwrap();
        if i >= 16 {
            assert_eq!(ca.recv_type("send_message").unwrap()["status"], "success");
        }
    }
    for _ in 0..16 {
        assert_eq!(ca.recv_type("send_message").unwrap()["status"], "success");
    }
    let mut cb = login(&s, b, "pb");
    cb.send(&json!({"type": "get_unread_messages", "user_id": b}))
        .unwrap();
    // In one reply or several: all of them, in order, on a connection that stays open.
    let mut got = Vec::new();
    while got.len() < N {
        let r = cb
            .recv()
            .unwrap_or_else(|e| panic!("connection lost after {} of {N} messages: {e}", got.len()));
        assert_eq!(reply_type(&r), "get_unread_messages");
        got.extend(unread_bodies(&r));
    }
    assert!(
        got == (0..N).map(body).collect::<Vec<_>>(),
        "wrong messages"
    );
    assert_no_unread(&mut cb, b);
    assert_eq!(s.stop(), Some(0));
}
