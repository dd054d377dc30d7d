//! What survives a clean stop (SIGTERM) and a start on the same data directory, also with a
//! different number of shards: accounts, friendships and requests, chat rows with their
//! unread counts, and messages not yet handed over.

mod common;
use common::*;

/// Sends a text and waits for its `success`.
#[track_caller]
fn send_ok(c: &mut Client, from: &str, to: &str, body: &str, ts: &str) {
    let r = c.request(message(from, to, "text", body, ts)).unwrap();
    assert_eq!(r["status"], "success", "{r}");
}

#[test]
fn state_survives_restart_with_another_shard_count() {
    let mut s = TestServer::start_fast(3);
    let passwords = ["pass-a", "pass-b", "pass-c", "pass-d"];
    let (p, [mut ca, mut cb, mut cc, mut cd]) = users(&s, 13840000000, passwords);
    let [a, b, c, d] = &p;
    // A-B and A-C friends (A asked both), D has asked A (pending), C-B were friends and parted.
    befriend(&mut ca, a, &mut cb, b);
    befriend(&mut ca, a, &mut cc, c);
    befriend(&mut cc, c, &mut cb, b);
    assert_receives(&mut cc, GREETING);
    assert_eq!(cc.pair("delete_friend", c, b).unwrap()["status"], "success");
    assert_eq!(cd.pair("add_friend", d, a).unwrap()["status"], "success");
    for _ in 0..2 {
        assert_receives(&mut ca, GREETING);
    }
    // Live traffic, then A opens its chat with B.
    send_ok(&mut cb, b, a, "b1", "2026-11-28 14:00:01");
    send_ok(&mut cb, b, a, "b2 image", "2026-11-28 14:00:02");
    assert_receives(&mut ca, "b1");
    assert_receives(&mut ca, "b2 image");
    let r = ca.request(update_chat(a, b, "b2 image", "text", "2026-11-28 14:00:02"));
    assert_eq!(r.unwrap()["status"], "success");
    send_ok(&mut ca, a, c, "a to c", "2026-11-28 14:00:03");
    assert_receives(&mut cc, "a to c");
    // A goes away; B and C write to it.
    ca.go_offline();
    send_ok(&mut cb, b, a, "offline 1", "2026-11-28 14:01:01");
    let r = cc
        .request(message(c, a, "image", "cat.png", "2026-11-28 14:01:02"))
        .unwrap();
    assert_eq!(r["status"], "success", "{r}");
    send_ok(&mut cb, b, a, "offline 3", "2026-11-28 14:01:03");

    // Snapshot of what every user sees.
    let mut before = Vec::new();
    for (cl, me) in [(&mut cb, b), (&mut cc, c), (&mut cd, d)] {
        before.push((cl.rows("friends", me), cl.rows("chatting", me)));
    }
    drop((cb, cc, cd));

    s.restart(2, FAST_AUTH);

    // Passwords: the right one works, a wrong one does not.
    let mut bad = s.client();
    assert_error(&bad.login(a, "pass-b").unwrap(), "login");
    // A gets what was waiting. (The order across senders on different shards is the
    // subject of `offline_order_from_several_shards_survives_restart`; here the contents.)
    let (mut ca, r) = relogin(&s, a, "pass-a");
    let mut bodies = unread_bodies(&r);
    bodies.sort();
    assert_eq!(bodies, vec!["cat.png", "offline 1", "offline 3"], "{r}");
    let e = elements(&r);
    let from_b: Vec<&Value> = e.iter().filter(|m| m["send_id"] == *b).collect();
    assert_eq!(from_b[0]["message_body"], "offline 1", "{r}");
    assert_eq!(from_b[1]["message_body"], "offline 3", "{r}");
    let img = e.iter().find(|m| m["send_id"] == *c).unwrap();
    assert_eq!(img["message_type"], "image");
    assert_eq!(img["file_path"], "/files/cat.png");
    assert_eq!(img["message_body"], "cat.png");
    assert_eq!(img["receiver_id"], *a);
    assert_eq!(img["message_timestamp"], "2026-11-28 14:01:02");
    assert_no_unread(&mut ca, a);
    // A's lists.
    let friends = ca.rows("friends", a);
    assert_eq!(friends.len(), 3, "{friends:?}");
    let rel = |id: &str| {
        friends.iter().find(|f| f["user_id"] == id).unwrap()["friend_relation"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(rel(b), "accepted");
    assert_eq!(rel(c), "accepted");
    assert_eq!(rel(d), "pending");
    for f in &friends {
        assert_eq!(
            f["user_name"],
            format!("user {}", f["user_id"].as_str().unwrap())
        );
        assert!(f.get("user_password").is_none());
    }
    let ab = ca.chat_row(a, b).unwrap();
    // update_chat set 0, then two offline messages.
    assert_eq!(ab["unread_count"], "2", "{ab}");
    assert_eq!(ab["last_message"], "offline 3", "{ab}");
    assert_eq!(ab["last_time"], "2026-11-28 14:01:03", "{ab}");
    assert_eq!(ab["user_name"], format!("user {b}"));
    let ac = ca.chat_row(a, c).unwrap();
    // Greeting + the image.
    assert_eq!(ac["unread_count"], "2", "{ac}");
    assert_eq!(ac["last_message"], "[图片]", "{ac}");
    assert_eq!(ac["last_message_type"], "image", "{ac}");
    // Everyone else sees exactly what they saw before.
    for (i, (me, pw)) in [(b, "pass-b"), (c, "pass-c"), (d, "pass-d")]
        .into_iter()
        .enumerate()
    {
        let (mut cl, r) = relogin(&s, me, pw);
        assert_null(&r, "get_unread_messages");
        assert_eq!(cl.rows("friends", me), before[i].0, "friends of {me}");
        assert_eq!(cl.rows("chatting", me), before[i].1, "chats of {me}");
    }
    // The pending request survives with its direction: D cannot accept it, A can.
    let mut cd = login(&s, d, "pass-d");
    assert_error(&cd.pair("accept_friend", d, a).unwrap(), "accept_friend");
    assert_eq!(ca.pair("accept_friend", a, d).unwrap()["status"], "success");
    assert_receives(&mut cd, GREETING);
    // The parted pair stays parted; the friends still talk.
    let mut cb = login(&s, b, "pass-b");
    assert_error(&cb.request(text(b, c, "hi c")).unwrap(), "send_message");
    send_ok(&mut cb, b, a, "after restart", "2026-11-28 15:00:00");
    assert_receives(&mut ca, "after restart");
    // Registering a stored id again fails.
    let mut x = s.client();
    assert_error(&x.register(a, "again", "pw").unwrap(), "register");
    assert_eq!(s.stop(), Some(0));
}

/// Messages queued across two restarts (3 -> 2 -> 3 shards): new message ids must not
/// collide with stored ones, and nothing is handed over twice.
#[test]
fn offline_queue_across_two_restarts() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb]) = two_friends(&s, 13841000000);
    let [a, b] = &p;
    assert_receives(&mut ca, GREETING);
    let (mut ca, r) = while_offline(&mut s, ca, a, "pa", |s| {
        for i in 0..5 {
            send_ok(&mut cb, b, a, &format!("first {i}"), "2026-11-28 16:00:00");
        }
        drop(cb);
        s.restart(2, FAST_AUTH);
        // B writes more after the first restart, A still away.
        let mut cb = login(s, b, "pb");
        for i in 0..5 {
            send_ok(&mut cb, b, a, &format!("second {i}"), "2026-11-28 16:00:01");
        }
        drop(cb);
        s.restart(3, FAST_AUTH);
    });
    let want: Vec<String> = (0..5)
        .map(|i| format!("first {i}"))
        .chain((0..5).map(|i| format!("second {i}")))
        .collect();
    assert_eq!(unread_bodies(&r), want, "{r}");
    assert_eq!(ca.chat_row(a, b).unwrap()["unread_count"], "11");
    drop(ca);
    // Handed over before the stop: not again after it.
    s.restart(2, FAST_AUTH);
    let (_ca, r) = relogin(&s, a, "pa");
    assert_null(&r, "get_unread_messages");
    assert_eq!(s.stop(), Some(0));
}

/// The offline queue keeps arrival order across a restart even when the senders sit on
/// different shards (each shard numbers its messages on its own).
#[test]
fn offline_order_from_several_shards_survives_restart() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, cb, mut cc]) = b_befriends_a_and_c(&s, 13842000000);
    let [a, b, c] = &p;
    let order = [
        (a, "a1"),
        (a, "a2"),
        (a, "a3"),
        (c, "c1"),
        (a, "a4"),
        (c, "c2"),
    ];
    let want: Vec<&str> = order.iter().map(|(_, body)| *body).collect();
    let (_cb, r) = while_offline(&mut s, cb, b, "pb", |s| {
        for (i, (from, body)) in order.iter().enumerate() {
            let cl = if *from == a { &mut ca } else { &mut cc };
            send_ok(cl, from, b, body, &format!("2026-11-28 17:00:0{i}"));
        }
        s.restart(3, FAST_AUTH);
    });
    assert_eq!(unread_bodies(&r), want, "{r}");
    assert_eq!(s.stop(), Some(0));
}

/// A reply of `success` to a change means the change is stored: it survives even a crash.
#[test]
fn acknowledged_changes_survive_kill_9() {
    let mut s = TestServer::start_fast(3);
    let (p, [mut ca, mut cb, mut cc]) = users(&s, 13843000000, ["pa", "pb", "pc"]);
    let [a, b, c] = &p;
    befriend(&mut ca, a, &mut cb, b);
    assert_eq!(cc.pair("add_friend", c, a).unwrap()["status"], "success");
    let (mut ca, r) = while_offline(&mut s, ca, a, "pa", |s| {
        for i in 0..20 {
            cb.send_text(b, a, &format!("m{i}")).unwrap();
        }
        for _ in 0..20 {
            assert_eq!(cb.recv_type("send_message").unwrap()["status"], "success");
        }
        drop((cb, cc));
        s.restart_after_crash(3, FAST_AUTH);
    });
    // (The greeting reached A live before.)
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(unread_bodies(&r), want, "{r}");
    assert_eq!(ca.chat_row(a, b).unwrap()["unread_count"], "21");
    assert_eq!(ca.friend_row(a, b).unwrap()["friend_relation"], "accepted");
    assert_eq!(ca.friend_row(a, c).unwrap()["friend_relation"], "pending");
    let (_cc, r) = relogin(&s, c, "pc");
    assert_null(&r, "get_unread_messages");
    assert_eq!(s.stop(), Some(0));
}

/// SIGTERM while clients keep sending (from two shards to a user on a third): the server
/// answers or closes every connection promptly, exits 0, and every message it acknowledged
/// is stored.
#[test]
fn sigterm_under_load_answers_or_closes_and_keeps_what_it_acknowledged() {
    use std::sync::mpsc;
    use std::time::Duration;
    let mut s = TestServer::start_fast(3);
    let p = phones_on_distinct_shards(13844000000, 3, 3);
    let b = p[1].clone();
    let mut cb = user(&s, &b, "pb");
    let mut senders = Vec::new();
    for me in [&p[0], &p[2]] {
        let mut c = user(&s, me, "ps");
        befriend(&mut c, me, &mut cb, &b);
        // Every wait bounded: writes too.
        c.stream()
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        senders.push((me.clone(), c));
    }
    cb.go_offline();
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = senders
        .into_iter()
        .map(|(me, mut c)| {
            let (b, tx) = (b.clone(), tx.clone());
            std::thread::spawn(move || {
                let (mut sent, mut ok, mut answered) = (0usize, 0usize, 0usize);
                loop {
                    // A deep pipeline: requests are always in flight when the signal comes.
                    while sent - answered < 64 {
                        if c.send_text(&me, &b, &format!("{me}#{sent}")).is_err() {
                            break;
                        }
                        sent += 1;
                    }
                    match c.recv_type("send_message") {
                        Ok(r) => {
                            answered += 1;
                            if r["status"] == "success" {
                                ok += 1;
                            }
                            if ok == 200 {
                                tx.send(()).unwrap();
                            }
                        }
                        Err(e) => return (me, sent, ok, e),
                    }
                }
            })
        })
        .collect();
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("200 messages acknowledged before the stop");
    }
    s.terminate();
    let ends: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (me, sent, ok, end) in &ends {
        assert!(
            !is_timeout(end),
            "after SIGTERM the server left {me}'s connection open for 10 s without answering \
             ({sent} sent, {ok} acknowledged)"
        );
    }
    assert_eq!(s.wait_exit(), Some(0));
    let s2 = TestServer::start_on(&s.data.clone(), 3, FAST_AUTH);
    let (_cb, r) = relogin(&s2, &b, "pb");
    let got = unread_bodies(&r);
    for (me, sent, ok, _) in &ends {
        let mine: Vec<&String> = got
            .iter()
            .filter(|m| m.starts_with(&format!("{me}#")))
            .collect();
        assert!(
            mine.len() >= *ok,
            "{me}: {} stored, {ok} acknowledged",
            mine.len()
        );
        assert!(mine.len() <= *sent);
        for (i, m) in mine.iter().enumerate() {
            assert_eq!(**m, format!("{me}#{i}"));
        }
    }
}
