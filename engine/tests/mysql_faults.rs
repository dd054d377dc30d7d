//! The real server on MariaDB/MySQL under load while things break: the database kills the
//! server's persistence connection again and again, and the server itself is killed with
//! SIGKILL. What a sender was told is stored must be stored, exactly once. Needs
//! `CORECHAT_TEST_MYSQL_URL` (see `mysql_common`).

mod common;
mod mysql_common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use mysql_common::*;

const SHARDS: usize = 3;
const BUSY: &str = "server busy";

/// Senders and their receivers, registered, friends, each logged in once.
struct Pairs {
    senders: Vec<String>,
    receivers: Vec<String>,
    sender_clients: Vec<Client>,
    receiver_clients: Vec<Client>,
}

fn pairs(server: &TestServer, base: u64, n: usize) -> Pairs {
    let phones = phones_on_distinct_shards(base, 2 * n, SHARDS);
    let (senders, receivers): (Vec<String>, Vec<String>) = (0..n)
        .map(|i| (phones[2 * i].clone(), phones[2 * i + 1].clone()))
        .unzip();
    let mut sender_clients = Vec::new();
    let mut receiver_clients = Vec::new();
    for i in 0..n {
        let mut a = user(server, &senders[i], "pw");
        let mut b = user(server, &receivers[i], "pw");
        befriend(&mut a, &senders[i], &mut b, &receivers[i]);
        sender_clients.push(a);
        receiver_clients.push(b);
    }
    Pairs {
        senders,
        receivers,
        sender_clients,
        receiver_clients,
    }
}

/// What one sending connection saw.
#[derive(Debug, Default)]
struct SendLog {
    /// Bodies answered `success`.
    acked: Vec<String>,
    /// Bodies answered `server busy`.
    busy: Vec<String>,
    /// Other error replies: (body, reply).
    refused: Vec<(String, String)>,
    /// The request in flight when the connection broke, and why.
    broken: Option<(String, String)>,
}

/// One request in flight at a time, so every reply is known to be the answer to that message.
fn sender(
    mut c: Client,
    from: String,
    to: String,
    tag: String,
    stop: Arc<AtomicBool>,
    total_acked: Arc<AtomicUsize>,
) -> JoinHandle<SendLog> {
    thread::spawn(move || {
        c.timeout = Duration::from_secs(30);
        let mut log = SendLog::default();
        let mut k = 0;
        while !stop.load(Ordering::Acquire) {
            let body = format!("{tag}|{k}");
            k += 1;
            match c.request(text(&from, &to, &body)) {
                Ok(v) if v["status"] == "success" => {
                    log.acked.push(body);
                    total_acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(v) if v["message"] == BUSY => {
                    log.busy.push(body);
                    thread::sleep(Duration::from_millis(5));
                }
                Ok(v) => log.refused.push((body, v.to_string())),
                Err(e) => {
                    log.broken = Some((body, e.to_string()));
                    break;
                }
            }
        }
        log
    })
}

/// The senders of a load: `conns` connections per pair, each sending to the pair's receiver
/// one message at a time until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    total_acked: Arc<AtomicUsize>,
    pairs: usize,
    /// (pair, sending thread).
    threads: Vec<(usize, JoinHandle<SendLog>)>,
}

impl Load {
    /// Starts the senders of every pair: its own sender client (taken from `p`) and
    /// `conns - 1` more logins, tagging their bodies `{tag}|{sender}|{k}` (k: the connection).
    fn start(server: &TestServer, p: &mut Pairs, conns: usize, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let total_acked = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        let mut clients = std::mem::take(&mut p.sender_clients).into_iter();
        for (i, (from, to)) in p.senders.iter().zip(&p.receivers).enumerate() {
            for k in 0..conns {
                let c = match k {
                    0 => clients.next().unwrap(),
                    _ => login_unread(server, from, "pw").0,
                };
                let tag = format!("{tag}|{from}|{k}");
                threads.push((
                    i,
                    sender(
                        c,
                        from.clone(),
                        to.clone(),
                        tag,
                        stop.clone(),
                        total_acked.clone(),
                    ),
                ));
            }
        }
        Load {
            stop,
            total_acked,
            pairs: p.senders.len(),
            threads,
        }
    }

    /// Messages acknowledged so far, by all senders.
    fn acked(&self) -> usize {
        self.total_acked.load(Ordering::Relaxed)
    }

    /// Stops the senders; returns their logs by pair.
    fn finish(self) -> Vec<Vec<SendLog>> {
        self.stop.store(true, Ordering::Release);
        let mut logs: Vec<Vec<SendLog>> = (0..self.pairs).map(|_| Vec::new()).collect();
        for (i, h) in self.threads {
            logs[i].push(h.join().expect("sender thread"));
        }
        logs
    }
}

/// Reads `receive_message` frames until told how many to expect and has them all (or the
/// connection breaks, when `until_eof`); returns (body, when) for those from `prefix`.
fn receiver(
    mut c: Client,
    who: String,
    prefix: String,
    expected: Arc<AtomicUsize>,
    until_eof: bool,
) -> JoinHandle<Vec<(String, Instant)>> {
    thread::spawn(move || {
        c.timeout = Duration::from_millis(200);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let want = expected.load(Ordering::Acquire);
            if want != usize::MAX && got.len() >= want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{who}: {} messages received, {want} expected",
                got.len()
            );
            match c.recv() {
                Ok(v) if reply_type(&v) == "receive_message" => {
                    let b = s(&v, "message_body");
                    if b.starts_with(&prefix) {
                        got.push((b.to_string(), Instant::now()));
                    }
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) if until_eof => break,
                Err(e) => panic!("{who}: connection broke: {e}"),
            }
        }
        got
    })
}

/// Asserts that each message a sender was told is stored (`acked`) is stored exactly once,
/// from its pair's sender to its pair's receiver, with the status `status(pair)`.
#[track_caller]
fn assert_acked_stored_once(
    stored: &[Msg],
    p: &Pairs,
    logs: &[Vec<SendLog>],
    status: impl Fn(usize) -> &'static str,
) {
    let by = rows_by_body(stored);
    for (i, pair_logs) in logs.iter().enumerate() {
        for b in pair_logs.iter().flat_map(|l| &l.acked) {
            let m = stored_once(&by, b);
            assert_eq!((&m.sender, &m.receiver), (&p.senders[i], &p.receivers[i]));
            assert_eq!(m.status, status(i), "{m:?}");
        }
    }
}

fn assert_no_duplicates(stored: &[Msg]) {
    let by = rows_by_body(stored);
    let dup: Vec<(&&str, usize)> = by
        .iter()
        .map(|(b, v)| (b, v.len()))
        .filter(|(b, n)| *n > 1 && !b.starts_with("我们"))
        .collect();
    assert!(dup.is_empty(), "messages stored more than once: {dup:?}");
    let ids: HashSet<u64> = stored.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), stored.len(), "message ids are unique");
}

#[test]
fn killed_database_connections_lose_and_duplicate_no_acknowledged_message() {
    const PAIRS: usize = 8;
    const CONNS: usize = 4;
    const KILLS: usize = 8;
    let db = TestDb::new("fault_kill");
    // A small queue, so that stalls while the persistence thread reconnects can fill it and
    // turn senders away with "server busy" (which must then not be stored).
    let mut server = db.start(SHARDS, &["--queue-capacity", "128"]);
    let mut p = pairs(&server, 15300000000, PAIRS);

    let load = Load::start(&server, &mut p, CONNS, "kill");
    let expected: Vec<Arc<AtomicUsize>> = (0..PAIRS)
        .map(|_| Arc::new(AtomicUsize::new(usize::MAX)))
        .collect();
    let receivers: Vec<_> = std::mem::take(&mut p.receiver_clients)
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            receiver(
                c,
                p.receivers[i].clone(),
                format!("kill|{}|", p.senders[i]),
                expected[i].clone(),
                false,
            )
        })
        .collect();

    // Another session kills the server's persistence connection again and again.
    let mut admin = admin_conn();
    let mut killed: Vec<(u64, Instant, usize)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(25);
    while killed.len() < KILLS || load.acked() < 1000 {
        if Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(150));
        for id in server_sessions(&mut admin, &db.name) {
            if killed.iter().any(|k| k.0 == id) {
                continue;
            }
            if admin.query_drop(format!("KILL CONNECTION {id}")).is_ok() {
                killed.push((id, Instant::now(), load.acked()));
            }
        }
    }
    // Load continues a little after the last kill, then the senders stop.
    let after_last = load.acked();
    let settle = Instant::now() + Duration::from_secs(5);
    while load.acked() < after_last + 100 && Instant::now() < settle {
        thread::sleep(Duration::from_millis(20));
    }
    let logs = load.finish();
    // Drain: every receiver gets what its sender had acknowledged.
    for i in 0..PAIRS {
        let n: usize = logs[i].iter().map(|l| l.acked.len()).sum();
        expected[i].store(n, Ordering::Release);
    }
    let received: Vec<Vec<(String, Instant)>> = receivers
        .into_iter()
        .map(|h| h.join().expect("receiver thread"))
        .collect();

    let acked: usize = logs.iter().flatten().map(|l| l.acked.len()).sum();
    let busy: usize = logs.iter().flatten().map(|l| l.busy.len()).sum();
    eprintln!(
        "mysql faults (kill): {} persistence connections killed, {acked} messages acknowledged, \
         {busy} answered \"server busy\"",
        killed.len()
    );
    assert!(
        killed.len() >= 3,
        "the server's persistence connection was found and killed only {} times \
         (processlist of {}: sessions of user corechat)",
        killed.len(),
        db.name
    );
    assert!(
        killed.last().unwrap().2 > killed[0].2,
        "messages were acknowledged between the kills: {killed:?}"
    );
    for l in logs.iter().flatten() {
        assert!(
            l.broken.is_none(),
            "a sender's connection broke: {:?}",
            l.broken
        );
        assert!(
            l.refused.is_empty(),
            "refused with other errors: {:?}",
            l.refused
        );
    }

    // Receivers kept getting messages while connections were being killed, and got exactly
    // the acknowledged ones.
    let (first_kill, last_kill) = (killed[0].1, killed.last().unwrap().1);
    let during = received
        .iter()
        .flatten()
        .filter(|(_, t)| *t >= first_kill && *t <= last_kill)
        .count();
    assert!(
        during > 0,
        "no receive_message between the first and the last kill"
    );
    for i in 0..PAIRS {
        let mut want: Vec<&str> = logs[i]
            .iter()
            .flat_map(|l| l.acked.iter().map(String::as_str))
            .collect();
        want.sort_unstable();
        let mut got: Vec<&str> = received[i].iter().map(|(b, _)| b.as_str()).collect();
        got.sort_unstable();
        assert_eq!(
            got, want,
            "{} received exactly what {} was told was sent",
            p.receivers[i], p.senders[i]
        );
        assert!(
            received[i].iter().any(|(_, t)| *t > first_kill),
            "{} got nothing after the first kill",
            p.receivers[i]
        );
    }

    assert_eq!(server.stop(), Some(0), "SIGTERM after the drain: exit 0");

    let stored = messages(&mut db.conn());
    assert_no_duplicates(&stored);
    // Delivered live.
    assert_acked_stored_once(&stored, &p, &logs, |_| "received");
    let by = rows_by_body(&stored);
    for l in logs.iter().flatten() {
        for b in &l.busy {
            assert!(
                !by.contains_key(b.as_str()),
                "{b:?} was refused (busy) but stored"
            );
        }
    }
    let tagged = stored
        .iter()
        .filter(|m| m.body.starts_with("kill|"))
        .count();
    assert_eq!(tagged, acked, "only acknowledged messages are stored");
}

#[test]
fn a_killed_server_keeps_every_acknowledged_message_exactly_once() {
    const PAIRS: usize = 6;
    const CONNS: usize = 2;
    let db = TestDb::new("fault_crash");
    let mut server = db.start(SHARDS, &[]);
    let mut p = pairs(&server, 15400000000, PAIRS);
    // Receivers of the first half of the pairs stay online (their messages are 'received'), the others log out
    // (theirs wait as 'send').
    let online = |i: usize| i < PAIRS / 2;

    let never = Arc::new(AtomicUsize::new(usize::MAX));
    let mut receivers = Vec::new();
    for (i, c) in std::mem::take(&mut p.receiver_clients)
        .into_iter()
        .enumerate()
    {
        if online(i) {
            let prefix = format!("crash|{}|", p.senders[i]);
            receivers.push((
                i,
                receiver(c, p.receivers[i].clone(), prefix, never.clone(), true),
            ));
        } else {
            drop(c);
        }
    }
    // Until the server has seen those connections close, a message to them would still be
    // written to the closing socket (and stored 'received'): probe until one waits as 'send'.
    let mut probe_conn = db.conn();
    for i in (0..PAIRS).filter(|&i| !online(i)) {
        let (mut a, _) = login_unread(&server, &p.senders[i], "pw");
        let mut n = 0;
        wait_for(Duration::from_secs(10), "a logged-out receiver", || {
            let b = format!("probe|{}|{n}", p.senders[i]);
            n += 1;
            let r = a.request(text(&p.senders[i], &p.receivers[i], &b)).unwrap();
            assert_eq!(r["status"], "success", "{r}");
            let st: Option<String> = probe_conn
                .exec_first(
                    "SELECT message_status FROM m_friends_message WHERE message_body = ?",
                    (&b,),
                )
                .unwrap();
            (st.as_deref() == Some("send")).then_some(())
        });
    }

    let load = Load::start(&server, &mut p, CONNS, "crash");

    // Under load: SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(20);
    while load.acked() < 1500 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    let logs = load.finish();
    let received: Vec<(usize, HashSet<String>)> = receivers
        .into_iter()
        .map(|(i, h)| {
            let got = h.join().expect("receiver thread");
            (i, got.into_iter().map(|(b, _)| b).collect())
        })
        .collect();
    let acked: usize = logs.iter().flatten().map(|l| l.acked.len()).sum();
    let in_flight = logs.iter().flatten().filter(|l| l.broken.is_some()).count();
    eprintln!(
        "mysql faults (crash): {acked} messages acknowledged before kill -9, {in_flight} in flight"
    );
    assert!(acked > 0, "no message was acknowledged before the kill");
    for l in logs.iter().flatten() {
        assert!(l.refused.is_empty(), "refused: {:?}", l.refused);
    }
    for (i, got) in &received {
        for b in logs[*i].iter().flat_map(|l| &l.acked) {
            assert!(
                got.contains(b),
                "{} never got acknowledged {b:?}",
                p.receivers[*i]
            );
        }
    }

    // Restart on the same database and compare.
    let mut server = db.start(SHARDS, &[]);
    let mut c = db.conn();
    let stored = messages(&mut c);
    assert_no_duplicates(&stored);
    assert_acked_stored_once(&stored, &p, &logs, |i| {
        if online(i) {
            "received"
        } else {
            "send"
        }
    });
    let mut sent: HashSet<String> = HashSet::new();
    for l in logs.iter().flatten() {
        sent.extend(l.acked.iter().cloned());
        sent.extend(l.busy.iter().cloned());
        sent.extend(l.broken.iter().map(|b| b.0.clone()));
    }
    for m in stored.iter().filter(|m| m.body.starts_with("crash|")) {
        assert!(sent.contains(&m.body), "stored but never sent: {m:?}");
    }

    // The restarted server serves on: the offline receivers get everything stored for them,
    // and new messages get ids that collide with nothing stored before.
    for i in (0..PAIRS).filter(|&i| !online(i)) {
        let (_, unread) = login_unread(&server, &p.receivers[i], "pw");
        let got: HashSet<String> = elements(&unread)
            .iter()
            .map(|m| s(m, "message_body").to_string())
            .filter(|b| b.starts_with("crash|"))
            .collect();
        let want: HashSet<String> = stored
            .iter()
            .filter(|m| m.receiver == p.receivers[i] && m.body.starts_with("crash|"))
            .map(|m| m.body.clone())
            .collect();
        assert_eq!(got, want, "{} gets what waited for it", p.receivers[i]);
    }
    let mut after = Vec::new();
    for i in 0..PAIRS {
        let (mut a, _) = login_unread(&server, &p.senders[i], "pw");
        for k in 0..5 {
            let b = format!("after|{}|{k}", p.senders[i]);
            let r = a.request(text(&p.senders[i], &p.receivers[i], &b)).unwrap();
            assert_eq!(r["status"], "success", "{r}");
            after.push(b);
        }
    }
    assert_eq!(server.stop(), Some(0));
    let again = messages(&mut c);
    assert_no_duplicates(&again);
    let by = rows_by_body(&again);
    for b in &after {
        assert_eq!(
            by.get(b.as_str()).map_or(0, Vec::len),
            1,
            "{b:?} sent after the restart is stored once"
        );
    }
    assert_eq!(
        again.len(),
        stored.len() + after.len(),
        "nothing else changed"
    );
    for m in &stored {
        let now = again.iter().find(|x| x.id == m.id).expect("still there");
        assert_eq!(now.body, m.body, "message {} kept its body", m.id);
    }
}
