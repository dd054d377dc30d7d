//! `corechat-relay`: the floor corechat is compared with. It speaks the same framing (4-byte
//! big-endian length + body) and forwards messages between connections, and does nothing
//! else: no JSON parsing, no state beyond "which connection is which user", no
//! persistence, no acknowledgement that waits for a disk.
//!
//! # The scheme
//!
//! Frames are not parsed; the relay only finds the string value of a top-level key by a byte
//! search (`"key"`, optional whitespace, `:`, a quoted value without escapes). In JSON text a
//! quote inside a string value is always escaped, so the bare pattern `"key"` followed by a
//! colon only matches a key. What it does with a frame depends on its `"type"`:
//!
//! | frame | what the relay does | reply to the sender |
//! |---|---|---|
//! | `login` | binds the connection to the `"user_id"` value (a later login rebinds) | `[{"type":"login","status":"success"}]` |
//! | `send_message` | writes the frame, unchanged (length prefix included), to the connection bound to `"receiver_id"` | `{"type":"send_message","status":"success"}`, or `status:"error"`, `message:"receiver offline"` when no connection is bound to it |
//! | anything else | nothing | `{"type":"<its type>","status":"success"}` |
//!
//! So the load generator's corechat workload runs against it unchanged: register, login,
//! get_unread_messages, add_friend and accept_friend all "succeed", and the receiver gets
//! the sender's `send_message` request itself (the generator counts a `send_message` frame
//! that carries a `message_body` as a delivery: corechat's acks carry none).
//!
//! # Why std threads and mio, not glommio
//!
//! A floor should be the cheapest forwarding the kernel allows. Here every thread owns an
//! epoll loop and a `SO_REUSEPORT` listener; the thread that reads a message writes it
//! straight into the receiver's socket (sockets are shared between threads, each with a
//! small mutex-protected backlog used only when the socket is full), so a message costs one
//! `read` on the sender's side and one `write` to the receiver, with no hop between threads,
//! no channel and no wake-up of another executor. In glommio a socket belongs to one
//! executor, so a message between connections on different cores needs a cross-core channel
//! and a wake-up, which is part of what corechat's design pays for and what the floor must
//! not. mio is also what the generator already uses: no second runtime in this crate, and
//! no io_uring or locked-memory requirements on the machine.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use corechat_engine::frame::{encode, FrameDecoder};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// Largest frame accepted.
const MAX_FRAME: usize = 1 << 20;
/// A receiver that stops reading is dropped once this much waits for it.
const MAX_BACKLOG: usize = 64 << 20;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKE: Token = Token(usize::MAX);

/// The value of the top-level string field `key` (given with its quotes: `b"\"type\""`).
pub fn field<'a>(frame: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(at) = find(&frame[from..], key) {
        let mut i = from + at + key.len();
        from = from + at + 1;
        while frame.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if frame.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while frame.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if frame.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let len = frame[start..].iter().position(|b| *b == b'"')?;
        return Some(&frame[start..start + len]);
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let at = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|b| *b == first)?;
        i += at;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode(body, &mut v);
    v
}

/// One connection as every thread sees it: the socket and what could not be written yet.
struct Peer {
    stream: TcpStream,
    backlog: Mutex<Vec<u8>>,
    closed: AtomicBool,
}

impl Peer {
    /// Writes `bytes` now, keeping what the socket does not take for its writable event.
    /// False if the peer is gone or hopelessly behind.
    fn send(&self, bytes: &[u8]) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut b = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0;
        if b.is_empty() {
            while done < bytes.len() {
                match (&self.stream).write(&bytes[done..]) {
                    Ok(0) => return false,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        }
        if done < bytes.len() {
            if b.len() + bytes.len() - done > MAX_BACKLOG {
                return false;
            }
            b.extend_from_slice(&bytes[done..]);
        }
        true
    }

    /// On a writable event: writes the backlog.
    fn flush(&self) -> io::Result<()> {
        let mut b = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0;
        while done < b.len() {
            match (&self.stream).write(&b[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        b.drain(..done);
        Ok(())
    }
}

type Routes = RwLock<HashMap<Box<[u8]>, Arc<Peer>>>;

/// A connection as its own thread sees it.
struct Local {
    peer: Arc<Peer>,
    dec: FrameDecoder,
    user: Option<Box<[u8]>>,
}

struct Replies {
    login: Vec<u8>,
    sent: Vec<u8>,
    offline: Vec<u8>,
}

/// A running relay; [`Relay::stop`] (or dropping it) stops its threads.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Binds `threads` listeners on `listen` (port 0: a random port, shared by all) and
    /// starts one event loop per thread.
    pub fn start(listen: SocketAddr, threads: usize) -> io::Result<Relay> {
        let threads = threads.max(1);
        let routes: Arc<Routes> = Arc::new(RwLock::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut addr = listen;
        let mut relay = Relay {
            addr,
            stop: stop.clone(),
            wakers: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..threads {
            let listener = bind(addr)?;
            addr = listener.local_addr()?;
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKE)?;
            let (routes, stop) = (routes.clone(), stop.clone());
            let h = std::thread::Builder::new()
                .name(format!("relay-{i}"))
                .spawn(move || Worker::new(poll, listener, routes, stop).run())?;
            relay.wakers.push(waker);
            relay.threads.push(h);
        }
        relay.addr = addr;
        Ok(relay)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(8192)?;
    Ok(TcpListener::from_std(s.into()))
}

struct Worker {
    poll: Poll,
    listener: TcpListener,
    routes: Arc<Routes>,
    stop: Arc<AtomicBool>,
    conns: Vec<Option<Local>>,
    free: Vec<usize>,
    replies: Replies,
    scratch: Vec<u8>,
}

impl Worker {
    fn new(poll: Poll, listener: TcpListener, routes: Arc<Routes>, stop: Arc<AtomicBool>) -> Self {
        Worker {
            poll,
            listener,
            routes,
            stop,
            conns: Vec::new(),
            free: Vec::new(),
            replies: Replies {
                login: framed(br#"[{"type":"login","status":"success"}]"#),
                sent: framed(br#"{"type":"send_message","status":"success"}"#),
                offline: framed(
                    br#"{"type":"send_message","status":"error","message":"receiver offline"}"#,
                ),
            },
            scratch: vec![0; 64 * 1024],
        }
    }

    fn run(mut self) {
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut self.listener, LISTENER, Interest::READABLE)
        {
            eprintln!("corechat-relay: cannot watch the listener: {e}");
            return;
        }
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(500)))
            {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("corechat-relay: poll failed: {e}");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKE => {}
                    LISTENER => self.accept(),
                    Token(i) => {
                        if ev.is_writable() || ev.is_error() {
                            let ok = self.conns[i]
                                .as_ref()
                                .is_some_and(|c| c.peer.flush().is_ok());
                            if !ok {
                                self.close(i);
                                continue;
                            }
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(i);
                        }
                    }
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let i = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.free.push(i);
                        continue;
                    }
                    self.conns[i] = Some(Local {
                        peer: Arc::new(Peer {
                            stream,
                            backlog: Mutex::new(Vec::new()),
                            closed: AtomicBool::new(false),
                        }),
                        dec: FrameDecoder::new(MAX_FRAME),
                        user: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors: what waits stays queued until the next connection
                    // arrives (edge-triggered, so this does not spin).
                    eprintln!("corechat-relay: accept: {e}");
                    return;
                }
            }
        }
    }

    fn read(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        let mut eof = false;
        loop {
            match (&c.peer.stream).read(&mut self.scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => c.dec.extend(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        // Replies to this connection, and forwarded frames for the current receiver (runs of
        // messages to one receiver leave in one write).
        let mut reply = Vec::new();
        let mut to: Option<(Vec<u8>, Option<Arc<Peer>>)> = None;
        let mut fwd = Vec::new();
        let mut bad = false;
        loop {
            let frame = match c.dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    bad = true;
                    break;
                }
            };
            let ty = field(frame, b"\"type\"").unwrap_or(b"");
            match ty {
                b"send_message" => {
                    let rcv = field(frame, b"\"receiver_id\"").unwrap_or(b"");
                    if to.as_ref().is_none_or(|(id, _)| id.as_slice() != rcv) {
                        if let Some((_, Some(p))) = &to {
                            if !fwd.is_empty() {
                                p.send(&fwd);
                            }
                        }
                        fwd.clear();
                        let peer = self
                            .routes
                            .read()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(rcv)
                            .cloned();
                        to = Some((rcv.to_vec(), peer));
                    }
                    if let Some((_, Some(_))) = &to {
                        encode(frame, &mut fwd);
                        reply.extend_from_slice(&self.replies.sent);
                    } else {
                        reply.extend_from_slice(&self.replies.offline);
                    }
                }
                b"login" => {
                    let user: Box<[u8]> = field(frame, b"\"user_id\"").unwrap_or(b"").into();
                    let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(old) = c.user.take() {
                        if routes.get(&old).is_some_and(|p| Arc::ptr_eq(p, &c.peer)) {
                            routes.remove(&old);
                        }
                    }
                    routes.insert(user.clone(), c.peer.clone());
                    c.user = Some(user);
                    reply.extend_from_slice(&self.replies.login);
                }
                other => {
                    let ty: Vec<u8> = other
                        .iter()
                        .copied()
                        .filter(|b| b.is_ascii_alphanumeric() || *b == b'_')
                        .collect();
                    let mut body = br#"{"type":""#.to_vec();
                    body.extend_from_slice(&ty);
                    body.extend_from_slice(br#"","status":"success"}"#);
                    encode(&body, &mut reply);
                }
            }
        }
        if let Some((_, Some(p))) = &to {
            if !fwd.is_empty() {
                p.send(&fwd);
            }
        }
        let alive = reply.is_empty() || c.peer.send(&reply);
        c.dec.shrink_if_idle(64 * 1024);
        if eof || bad || !alive {
            self.close(i);
        }
    }

    fn close(&mut self, i: usize) {
        let Some(mut c) = self.conns[i].take() else {
            return;
        };
        c.peer.closed.store(true, Ordering::Relaxed);
        if let Some(u) = c.user.take() {
            let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
            if routes.get(&u).is_some_and(|p| Arc::ptr_eq(p, &c.peer)) {
                routes.remove(&u);
            }
        }
        // The socket closes when the last Arc (maybe held for a moment by another thread
        // forwarding to it) goes.
        if let Some(p) = Arc::get_mut(&mut c.peer) {
            let _ = self.poll.registry().deregister(&mut p.stream);
        } else {
            let _ = c.peer.stream.shutdown(std::net::Shutdown::Both);
        }
        self.free.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corechat_engine::client::{qt_json, Client};
    use serde_json::json;

    #[test]
    fn fields_by_byte_search() {
        let f = qt_json(&json!({
            "type": "send_message", "send_id": "1", "receiver_id": "2",
            "message_body": "say \"type\": \"login\"", "chat_type": "friend"
        }));
        assert_eq!(field(&f, b"\"type\""), Some(&b"send_message"[..]));
        assert_eq!(field(&f, b"\"receiver_id\""), Some(&b"2"[..]));
        assert_eq!(field(&f, b"\"user_id\""), None);
        assert_eq!(
            field(br#"{"type" : "login"}"#, b"\"type\""),
            Some(&b"login"[..])
        );
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"xxabc", b"abc"), Some(2));
    }

    #[test]
    fn forwards_between_two_clients() {
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let mut a = Client::connect(relay.addr()).unwrap();
        let mut b = Client::connect(relay.addr()).unwrap();
        let r = a.register("1", "a", "pw").unwrap();
        assert_eq!(r["status"], "success");
        assert_eq!(a.login("1", "pw").unwrap()[0]["status"], "success");
        assert_eq!(b.login("2", "pw").unwrap()[0]["status"], "success");
        a.send_text("1", "2", "hello").unwrap();
        assert_eq!(a.recv_type("send_message").unwrap()["status"], "success");
        let got = b.recv().unwrap();
        assert_eq!(got["message_body"], "hello");
        assert_eq!(got["type"], "send_message");
        a.send_text("1", "3", "nobody").unwrap();
        let r = a.recv_type("send_message").unwrap();
        assert_eq!(r["message"], "receiver offline");
        drop(b);
        std::thread::sleep(Duration::from_millis(100));
        a.send_text("1", "2", "gone").unwrap();
        assert_eq!(a.recv_type("send_message").unwrap()["status"], "error");
        relay.stop();
    }
}
