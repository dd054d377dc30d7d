//! Starting the real server binary for integration tests.

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
    pub child: Option<Child>,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with `shards` shards on a fresh data directory.
    pub fn start(shards: usize) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut s = TestServer::start_on(&data, shards, &[]);
        s._dir = Some(dir);
        s
    }

    /// A server on an existing data directory, with extra flags.
    pub fn start_on(data: &Path, shards: usize, extra: &[&str]) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_corechat"));
        cmd.args(["--listen", "127.0.0.1:0", "--no-pin", "--log-level", "warn"])
            .args(["--shards", &shards.to_string()])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start corechat");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            assert!(Instant::now() < deadline, "server did not get ready");
            let line = lines.next().expect("server exited before ready").unwrap();
            if let Some(rest) = line.strip_prefix("corechat ready on ") {
                let a = rest.split_whitespace().next().unwrap();
                break a.parse().unwrap();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        TestServer {
            addr,
            child: Some(child),
            data: data.to_path_buf(),
            _dir: None,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr).unwrap()
    }

    /// SIGTERM, then wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
