//! Only accepted friends may write to each other, and the friend requests follow their rules.

mod common;
use common::*;

/// The next `receive_message` on `c` must be `body` from `from`, with nothing else before it.
#[track_caller]
fn next_message_is(c: &mut Client, from: &str, body: &str) {
    let (before, m) = c.frames_until("receive_message");
    assert!(before.is_empty(), "unexpected frames: {before:?}");
    assert_strings(&m);
    assert_eq!(m["send_id"], from, "{m}");
    assert_eq!(m["message_body"], body, "{m}");
}

#[test]
fn strangers_cannot_write() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb]) = users(&s, 13860000000, ["pa", "pb"]);
    let [a, b] = &p;
    for ty in ["text", "image", "file"] {
        let r = ca
            .request(message(a, b, ty, "stranger", "2026-11-28 12:00:00"))
            .unwrap();
        assert_error(&r, "send_message");
    }
    // To oneself and to nobody.
    assert_error(&ca.request(text(a, a, "me")).unwrap(), "send_message");
    assert_error(
        &ca.request(text(a, "19999999999", "nobody")).unwrap(),
        "send_message",
    );
    // No chat rows were created on either side.
    assert_null(&ca.simple("chatting", a).unwrap(), "chatting");
    assert_null(&cb.simple("chatting", b).unwrap(), "chatting");
    // Once friends, the first message B gets from A is the one sent after the acceptance.
    befriend(&mut ca, a, &mut cb, b);
    next_message_is(&mut ca, b, GREETING);
    assert_eq!(
        ca.request(text(a, b, "marker")).unwrap()["status"],
        "success"
    );
    next_message_is(&mut cb, a, "marker");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn pending_friends_cannot_write() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb]) = users(&s, 13861000000, ["pa", "pb"]);
    let [a, b] = &p;
    assert_eq!(ca.pair("add_friend", a, b).unwrap()["status"], "success");
    assert_error(
        &ca.request(text(a, b, "too early")).unwrap(),
        "send_message",
    );
    assert_error(
        &cb.request(text(b, a, "too early")).unwrap(),
        "send_message",
    );
    assert_null(&ca.simple("chatting", a).unwrap(), "chatting");
    assert_null(&cb.simple("chatting", b).unwrap(), "chatting");
    // Neither received anything before the acceptance's own traffic.
    assert_eq!(cb.pair("accept_friend", b, a).unwrap()["status"], "success");
    next_message_is(&mut ca, b, GREETING);
    assert_eq!(
        ca.request(text(a, b, "marker")).unwrap()["status"],
        "success"
    );
    next_message_is(&mut cb, a, "marker");
    // The offline queue holds nothing from before either.
    let (_c, r) = relogin(&s, b, "pb");
    assert_null(&r, "get_unread_messages");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn request_rules() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb, mut cc]) = users(&s, 13862000000, ["pa", "pb", "pc"]);
    let [a, b, c] = &p;
    // Not to oneself, not to nobody.
    assert_error(&ca.pair("add_friend", a, a).unwrap(), "add_friend");
    assert_error(
        &ca.pair("add_friend", a, "19999999999").unwrap(),
        "add_friend",
    );
    // Nothing to accept or delete yet.
    assert_error(&ca.pair("accept_friend", a, b).unwrap(), "accept_friend");
    assert_error(&ca.pair("delete_friend", a, b).unwrap(), "delete_friend");
    assert_null(&ca.simple("friends", a).unwrap(), "friends");
    // A and C both ask B; asking twice is refused.
    assert_eq!(ca.pair("add_friend", a, b).unwrap()["status"], "success");
    assert_error(&ca.pair("add_friend", a, b).unwrap(), "add_friend");
    assert_eq!(cc.pair("add_friend", c, b).unwrap()["status"], "success");
    let f = cb.rows("friends", b);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f.iter().all(|r| r["friend_relation"] == "pending"), "{f:?}");
    // B accepts A only.
    assert_eq!(cb.pair("accept_friend", b, a).unwrap()["status"], "success");
    assert_eq!(cb.friend_row(b, a).unwrap()["friend_relation"], "accepted");
    assert_eq!(cb.friend_row(b, c).unwrap()["friend_relation"], "pending");
    assert_eq!(cb.rows("chatting", b).len(), 1);
    assert_error(&cc.request(text(c, b, "hello?")).unwrap(), "send_message");
    // B declines C by deleting the request: gone on both sides.
    assert_eq!(cb.pair("delete_friend", b, c).unwrap()["status"], "success");
    assert!(cb.friend_row(b, c).is_none());
    assert_null(&cc.simple("friends", c).unwrap(), "friends");
    // C may ask again, and this time B accepts.
    assert_eq!(cc.pair("add_friend", c, b).unwrap()["status"], "success");
    assert_eq!(cb.pair("accept_friend", b, c).unwrap()["status"], "success");
    assert_eq!(
        cc.request(text(c, b, "finally")).unwrap()["status"],
        "success"
    );
    assert_receives(&mut cb, "finally");
    assert_eq!(cb.rows("friends", b).len(), 2);
    assert_eq!(s.stop(), Some(0));
}

/// Two users who ask each other at the same moment (their requests cross between shards) must
/// not end up both waiting: afterwards one of them can accept, and then they are friends.
#[test]
fn crossing_requests_do_not_leave_both_waiting() {
    const PAIRS: usize = 10;
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13863000000, 2 * PAIRS, 3);
    let mut cl: Vec<Client> = p.iter().map(|x| user(&s, x, "pw")).collect();
    let mut stuck = Vec::new();
    for k in 0..PAIRS {
        let (i, j) = (2 * k, 2 * k + 1);
        let (l, r) = cl.split_at_mut(j);
        let (ci, cj) = (&mut l[i], &mut r[0]);
        // Both requests leave before either reply is read.
        ci.send(&json!({"type": "add_friend", "user_id": p[i], "friend_id": p[j]}))
            .unwrap();
        cj.send(&json!({"type": "add_friend", "user_id": p[j], "friend_id": p[i]}))
            .unwrap();
        let ri = ci.recv_type("add_friend").unwrap();
        let rj = cj.recv_type("add_friend").unwrap();
        assert_strings(&ri);
        assert_strings(&rj);
        assert!(
            ri["status"] == "success" || rj["status"] == "success",
            "{ri} {rj}"
        );
        // Each side, as its client would, accepts what it lists as a request.
        let mut accepted = false;
        for (c, me, other) in [(&mut *ci, &p[i], &p[j]), (&mut *cj, &p[j], &p[i])] {
            let row = c.friend_row(me, other);
            match row.as_ref().map(|r| r["friend_relation"].as_str().unwrap()) {
                Some("accepted") => accepted = true,
                Some(_) if !accepted => {
                    let r = c.pair("accept_friend", me, other).unwrap();
                    accepted = r["status"] == "success";
                }
                _ => {}
            }
        }
        if !accepted {
            let again = ci.pair("add_friend", &p[i], &p[j]).unwrap();
            stuck.push(format!(
                "{} <-> {} (asking again: {})",
                p[i], p[j], again["message"]
            ));
            continue;
        }
        for (c, me, other) in [(&mut *ci, &p[i], &p[j]), (&mut *cj, &p[j], &p[i])] {
            let row = c.friend_row(me, other).unwrap();
            assert_eq!(row["friend_relation"], "accepted", "{row}");
        }
    }
    assert!(
        stuck.is_empty(),
        "{} of {PAIRS} pairs are stuck, neither side can accept: {stuck:?}",
        stuck.len()
    );
    assert_eq!(s.stop(), Some(0));
}
