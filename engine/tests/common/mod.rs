//! Starting the real server binary for integration tests, and the clients, requests and
//! setups they share. The `mysql_*` tests use it too, with `tests/mysql_common` on top.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use corechat_engine::client::{reply_status, reply_type, Client};
pub use serde_json::{json, Value};

/// A server process on an ephemeral port, stopped (SIGTERM) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/latency`).
    pub admin: Option<SocketAddr>,
    pub child: Option<Child>,
    pub data: PathBuf,
    /// How many shards the server runs (users are placed by [`shard_of`] with this count).
    pub shards: usize,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with `shards` shards on a fresh data directory.
    pub fn start(shards: usize) -> TestServer {
        TestServer::start_with(shards, &[])
    }

    /// A server on an existing data directory, with extra flags (e.g. `--database URL`).
    pub fn start_on(data: &Path, shards: usize, extra: &[&str]) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_corechat"));
        cmd.args(["--listen", "127.0.0.1:0", "--no-pin", "--log-level", "warn"])
            .args(["--admin", "127.0.0.1:0"])
            .args(["--shards", &shards.to_string()])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start corechat");
        let stdout = child.stdout.take().unwrap();
        // Lines are read on their own thread (which then keeps draining stdout so the server
        // never blocks on a full pipe), so that waiting for "ready" is bounded even if the
        // server hangs without printing anything.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let (addr, admin) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("server did not get ready within 60 s");
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.kill();
                    panic!("server exited before ready: {:?}", child.wait());
                }
            };
            if let Some(rest) = line.strip_prefix("corechat ready on ") {
                let a = rest.split_whitespace().next().unwrap();
                let admin = rest
                    .split("admin on http://")
                    .nth(1)
                    .and_then(|r| r.trim_end_matches(')').parse().ok());
                break (a.parse().unwrap(), admin);
            }
        };
        TestServer {
            addr,
            admin,
            child: Some(child),
            data: data.to_path_buf(),
            shards,
            _dir: None,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr).unwrap()
    }

    /// SIGTERM, then wait (at most 60 s); returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        self.terminate();
        self.wait_exit()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shard a user lands on, as the server computes it.
pub fn shard_of(user: &str, shards: usize) -> usize {
    corechat_shards::shard_of(user, shards)
}

/// `count` phone numbers starting at `base`, one on each of `shards` shards in turn (so a
/// test about cross-shard traffic really crosses shards).
pub fn phones_on_distinct_shards(base: u64, count: usize, shards: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut n = base;
    while out.len() < count {
        let p = n.to_string();
        if shard_of(&p, shards) == out.len() % shards {
            out.push(p);
        }
        n += 1;
    }
    out
}

/// Registers and logs in a user; returns the logged-in client.
pub fn user(server: &TestServer, phone: &str, password: &str) -> Client {
    let mut c = server.client();
    let r = c
        .register(phone, &format!("user {phone}"), password)
        .unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let r = c.login(phone, password).unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    let r = c.simple("get_unread_messages", phone).unwrap();
    assert_eq!(reply_type(&r), "get_unread_messages");
    c
}

/// Makes `a` and `b` friends (a asks, b accepts).
pub fn befriend(a: &mut Client, a_id: &str, b: &mut Client, b_id: &str) {
    let r = a.pair("add_friend", a_id, b_id).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let r = b.pair("accept_friend", b_id, a_id).unwrap();
    assert_eq!(r["status"], "success", "{r}");
}

pub fn text(from: &str, to: &str, body: &str) -> Value {
    json!({
        "type": "send_message", "send_id": from, "receiver_id": to, "chat_type": "friend",
        "message_body": body, "message_type": "text", "file_path": " ",
        "message_timestamp": "2026-11-28 12:00:00"
    })
}

// ----- additions for the themed integration tests -----

/// argon2 parameters cheap enough for tests that create many users (a debug build hashes
/// slowly). Stored hashes carry their parameters, so a server started without these flags
/// still verifies them.
pub const FAST_AUTH: &[&str] = &["--argon2-memory-kib", "64", "--argon2-passes", "1"];

/// The greeting the acceptor of a friend request sends (see PROTOCOL.md).
pub const GREETING: &str = "我们已经是好友了，可以开始聊天了！";

impl TestServer {
    /// A server with `shards` shards on a fresh data directory, with extra flags.
    pub fn start_with(shards: usize, extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut s = TestServer::start_on(&data, shards, extra);
        s._dir = Some(dir);
        s
    }

    /// A server with cheap password hashing ([`FAST_AUTH`]).
    pub fn start_fast(shards: usize) -> TestServer {
        TestServer::start_with(shards, FAST_AUTH)
    }

    /// Stops the server with SIGTERM (asserting a clean exit) and starts a new one on the
    /// same data directory with `shards` shards; `self` then refers to the new server.
    pub fn restart(&mut self, shards: usize, extra: &[&str]) {
        assert_eq!(
            self.stop(),
            Some(0),
            "server did not exit cleanly on SIGTERM"
        );
        self.start_again(shards, extra);
    }

    /// Kills the server (SIGKILL, no shutdown at all) and starts a new one on the same data
    /// directory; `self` then refers to the new server.
    pub fn restart_after_crash(&mut self, shards: usize, extra: &[&str]) {
        self.kill();
        self.start_again(shards, extra);
    }

    /// Starts a new server on this one's data directory (this one has stopped) and takes it
    /// over.
    fn start_again(&mut self, shards: usize, extra: &[&str]) {
        // `next` has no child left when it drops, so dropping it stops nothing.
        let mut next = TestServer::start_on(&self.data.clone(), shards, extra);
        self.addr = next.addr;
        self.admin = next.admin;
        self.shards = shards;
        self.child = next.child.take();
    }

    /// Sends SIGTERM once, without waiting (see [`TestServer::wait_exit`]).
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
    }

    /// Waits (at most 60 s) for the server to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether a [`Client`] read error is its timeout (a read timeout shows as `WouldBlock` on
/// Linux) rather than the end of the connection.
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// Asserts that every value of every reply object is a JSON string (the client reads every
/// field with `QJsonValue::toString()`). A reply is an object or an array of objects.
pub fn assert_strings(v: &Value) {
    fn check(v: &Value, path: &str, whole: &Value) {
        match v {
            Value::Array(a) => {
                assert!(!a.is_empty(), "empty array reply at {path}: {whole}");
                for (i, e) in a.iter().enumerate() {
                    assert!(
                        e.is_object(),
                        "array element {path}[{i}] is not an object: {whole}"
                    );
                    check(e, &format!("{path}[{i}]"), whole);
                }
            }
            Value::Object(o) => {
                for (k, val) in o {
                    assert!(
                        val.is_string(),
                        "{path}.{k} is not a string ({val}) in reply {whole}"
                    );
                }
            }
            other => panic!("reply at {path} is neither an object nor an array: {other}"),
        }
    }
    check(v, "$", v);
}

/// The objects of a reply (an object reads as a one-element array, as the client does).
pub fn elements(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

/// Asserts that a reply is `status:"error"` of type `ty` with a message, and all strings.
#[track_caller]
pub fn assert_error(v: &Value, ty: &str) {
    assert_strings(v);
    assert_eq!(reply_type(v), ty, "{v}");
    assert_eq!(reply_status(v), "error", "{v}");
    let last = elements(v).pop().unwrap();
    assert!(
        last["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message: {v}"
    );
}

/// Asserts that a reply is one `status:"null"` object of type `ty` (possibly in an array).
#[track_caller]
pub fn assert_null(v: &Value, ty: &str) {
    assert_strings(v);
    let e = elements(v);
    assert_eq!(e.len(), 1, "{v}");
    assert_eq!(e[0]["type"], ty, "{v}");
    assert_eq!(e[0]["status"], "null", "{v}");
}

/// Asserts that nothing waits for `user`: `get_unread_messages` on `c` answers `null`.
#[track_caller]
pub fn assert_no_unread(c: &mut Client, user: &str) {
    assert_null(
        &c.simple("get_unread_messages", user).unwrap(),
        "get_unread_messages",
    );
}

/// A `send_message` of any type with a given timestamp.
pub fn message(from: &str, to: &str, message_type: &str, body: &str, ts: &str) -> Value {
    let file_path = if message_type == "text" {
        " ".to_string()
    } else {
        format!("/files/{body}")
    };
    json!({
        "type": "send_message", "send_id": from, "receiver_id": to, "chat_type": "friend",
        "message_body": body, "message_type": message_type, "file_path": file_path,
        "message_timestamp": ts
    })
}

/// An `update_chat` as the client sends it when it opens a conversation.
pub fn update_chat(user: &str, comm: &str, last: &str, last_type: &str, time: &str) -> Value {
    json!({
        "type": "update_chat", "user_id": user, "comm_id": comm, "chat_type": "friend",
        "last_message": last, "last_message_type": last_type, "last_time": time,
        "unread_count": 0, "chat_status": "chatting"
    })
}

/// Logs in on a new connection without asking for unread messages.
pub fn login(server: &TestServer, phone: &str, password: &str) -> Client {
    let mut c = server.client();
    let r = c.login(phone, password).unwrap();
    assert_eq!(reply_status(&r), "success", "{r}");
    c
}

/// Logs in on a new connection and returns the `get_unread_messages` reply too.
pub fn relogin(server: &TestServer, phone: &str, password: &str) -> (Client, Value) {
    let mut c = login(server, phone, password);
    let r = unread_all(&mut c, phone);
    (c, r)
}

/// Logs in on a new connection and asks for the unread messages once, as the client does;
/// returns the client and the first `get_unread_messages` reply (other frames stay held).
pub fn login_unread(server: &TestServer, phone: &str, password: &str) -> (Client, Value) {
    let mut c = login(server, phone, password);
    let r = c.simple("get_unread_messages", phone).unwrap();
    (c, r)
}

/// Registers and logs in `N` users ([`user`]) on distinct shards of `server` (phone numbers
/// from `base` on, see [`phones_on_distinct_shards`]), in order, with `passwords`; returns
/// their phone numbers and clients.
pub fn users<const N: usize>(
    server: &TestServer,
    base: u64,
    passwords: [&str; N],
) -> ([String; N], [Client; N]) {
    let phones: [String; N] = phones_on_distinct_shards(base, N, server.shards)
        .try_into()
        .unwrap();
    let clients = std::array::from_fn(|i| user(server, &phones[i], passwords[i]));
    (phones, clients)
}

/// Two [`users`] on distinct shards with passwords `pa` and `pb`, made friends: the first
/// asked, the second accepted (the greeting is left unread on the first one's connection).
pub fn two_friends(server: &TestServer, base: u64) -> ([String; 2], [Client; 2]) {
    let (p, [mut a, mut b]) = users(server, base, ["pa", "pb"]);
    befriend(&mut a, &p[0], &mut b, &p[1]);
    (p, [a, b])
}

/// Three [`users`] on distinct shards with passwords `pa`, `pb` and `pc`: the second (B)
/// asked the other two, both accepted, and both greetings have reached B.
pub fn b_befriends_a_and_c(server: &TestServer, base: u64) -> ([String; 3], [Client; 3]) {
    let (p, [mut a, mut b, mut c]) = users(server, base, ["pa", "pb", "pc"]);
    befriend(&mut b, &p[1], &mut a, &p[0]);
    befriend(&mut b, &p[1], &mut c, &p[2]);
    for _ in 0..2 {
        assert_receives(&mut b, GREETING);
    }
    (p, [a, b, c])
}

/// Takes `c` (logged in as `phone`) offline ([`ClientExt::go_offline`]), runs `meanwhile`
/// (which may restart the server), then logs `phone` in again; returns the new connection and
/// everything that waited for it ([`relogin`]).
pub fn while_offline(
    server: &mut TestServer,
    c: Client,
    phone: &str,
    password: &str,
    meanwhile: impl FnOnce(&mut TestServer),
) -> (Client, Value) {
    c.go_offline();
    meanwhile(server);
    relogin(server, phone, password)
}

/// Asserts that the next `receive_message` on `c` (held or new) carries `body`.
#[track_caller]
pub fn assert_receives(c: &mut Client, body: &str) {
    assert_eq!(
        c.recv_type("receive_message").unwrap()["message_body"],
        body
    );
}

/// Asserts that nothing is waiting on `c` (logged in as `user`): a `friends` round trip is
/// answered before any other frame. Returns that `friends` reply.
#[track_caller]
pub fn assert_quiet(c: &mut Client, user: &str) -> Value {
    c.send(&json!({"type": "friends", "user_id": user}))
        .unwrap();
    let (before, f) = c.frames_until("friends");
    assert!(before.is_empty(), "unexpected frames: {before:?}");
    f
}

/// `v[key]` as a string ("" when missing or not a string).
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`; panics with `what`
/// otherwise.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `get_unread_messages` and gathers its reply, which a large mailbox splits over
/// several frames, into one array. A `friends` request sent right after serves as a fence:
/// requests are answered in order, so every part of the mailbox comes before its reply.
pub fn unread_all(c: &mut Client, phone: &str) -> Value {
    c.send(&json!({"type": "get_unread_messages", "user_id": phone}))
        .unwrap();
    c.send(&json!({"type": "friends", "user_id": phone}))
        .unwrap();
    let mut parts: Vec<Value> = Vec::new();
    loop {
        let r = c.recv().unwrap();
        match reply_type(&r) {
            "friends" => break,
            "get_unread_messages" => {
                assert_strings(&r);
                parts.push(r);
            }
            _ => {}
        }
    }
    if parts.len() == 1 {
        return parts.remove(0);
    }
    Value::Array(parts.iter().flat_map(elements).collect())
}

/// Bodies of the messages in a `get_unread_messages` reply (empty for `status:"null"`).
pub fn unread_bodies(r: &Value) -> Vec<String> {
    if reply_status(r) == "null" {
        return Vec::new();
    }
    elements(r)
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "get_unread_messages", "{r}");
            assert_eq!(m["status"], "success", "{r}");
            m["message_body"].as_str().unwrap().to_string()
        })
        .collect()
}

/// More requests on a [`Client`], checked as the client reads them.
pub trait ClientExt {
    /// A request whose reply must be all strings; returns the reply.
    fn checked(&mut self, v: Value) -> Value;
    /// `friends` / `chatting` elements with `status:"success"` (empty for `null`).
    fn rows(&mut self, ty: &str, user: &str) -> Vec<Value>;
    /// The `chatting` row of `user` about `comm`.
    fn chat_row(&mut self, user: &str, comm: &str) -> Option<Value>;
    /// The `friends` row of `user` about `friend`.
    fn friend_row(&mut self, user: &str, friend: &str) -> Option<Value>;
    /// Frames received (held or new) before the first one of type `ty`, and that one.
    fn frames_until(&mut self, ty: &str) -> (Vec<Value>, Value);
    /// Closes the connection so that the server has *already* marked it closed when this
    /// returns: an over-long frame header makes the server answer an error and close it, and
    /// the error is read back. (A plain close leaves a race with messages already in flight.)
    fn go_offline(self);
    /// [`ClientExt::go_offline`], returning the frames that arrived before the close (held
    /// ones included), but not the error frame.
    fn go_offline_collect(self) -> Vec<Value>;
}

impl ClientExt for Client {
    fn checked(&mut self, v: Value) -> Value {
        let r = self.request(v).unwrap();
        assert_strings(&r);
        r
    }

    fn rows(&mut self, ty: &str, user: &str) -> Vec<Value> {
        let r = self.simple(ty, user).unwrap();
        assert_strings(&r);
        assert_eq!(reply_type(&r), ty, "{r}");
        let e = elements(&r);
        match reply_status(&r) {
            "null" => {
                assert_eq!(e.len(), 1, "{r}");
                Vec::new()
            }
            "success" => {
                assert!(e.iter().all(|x| x["status"] == "success"), "{r}");
                assert!(e.iter().all(|x| x["type"] == ty), "{r}");
                e
            }
            other => panic!("{ty} answered {other}: {r}"),
        }
    }

    fn chat_row(&mut self, user: &str, comm: &str) -> Option<Value> {
        self.rows("chatting", user)
            .into_iter()
            .find(|r| r["comm_id"] == comm)
    }

    fn friend_row(&mut self, user: &str, friend: &str) -> Option<Value> {
        self.rows("friends", user)
            .into_iter()
            .find(|r| r["user_id"] == friend)
    }

    fn frames_until(&mut self, ty: &str) -> (Vec<Value>, Value) {
        let mut before = Vec::new();
        loop {
            let v = self.recv().unwrap();
            if reply_type(&v) == ty {
                return (before, v);
            }
            before.push(v);
        }
    }

    fn go_offline(self) {
        self.go_offline_collect();
    }

    fn go_offline_collect(mut self) -> Vec<Value> {
        self.send_raw(&((2u32 << 20) + 1).to_be_bytes()).unwrap();
        let mut saw_error = false;
        let mut frames = Vec::new();
        loop {
            match self.recv() {
                Ok(v) => {
                    if reply_type(&v) == "error" && reply_status(&v) == "error" {
                        saw_error = true;
                    } else {
                        frames.push(v);
                    }
                }
                Err(e) => {
                    assert!(!is_timeout(&e), "server kept the connection: {e}");
                    break;
                }
            }
        }
        assert!(
            saw_error,
            "no error frame before the server closed the connection"
        );
        frames
    }
}
