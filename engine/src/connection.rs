//! One client connection: a socket, the frames waiting to be written to it, and who it is.
//!
//! Each connection has two tasks on its shard: a reader (in `dispatch`) that decodes frames
//! and serves requests one after another, and a writer (here) that sends whatever the shard
//! queued for it. Anything on the shard may queue a frame — a reply, a `receive_message` from
//! another user — without waiting: frames accumulate in one buffer and the writer sends them
//! with as few system calls as possible. The socket itself is only touched inside `poll`
//! calls, so the reader and writer never hold it at the same time.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use corechat_shards::ConnId;

/// Why a connection ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    Error,
    Evicted,
    IdleTimeout,
    SlowConsumer,
    BadFrame,
    HandedOff,
    Shutdown,
}

/// A client connection on this shard.
pub struct Conn {
    pub id: ConnId,
    pub peer: SocketAddr,
    stream: RefCell<TcpStream>,
    out: RefCell<Vec<u8>>,
    max_out: usize,
    writer: Cell<Option<Waker>>,
    reader: Cell<Option<Waker>>,
    idle_waiter: Cell<Option<Waker>>,
    writing: Cell<bool>,
    closed: Cell<Option<CloseReason>>,
    /// The user this connection is logged in as. An `Rc` because every request takes a
    /// copy of it (to serve the request without holding the borrow across waits).
    pub user: RefCell<Option<Rc<str>>>,
    /// Replies to this connection waiting for a commit.
    pub deferred: Cell<u32>,
    /// Set at shutdown: read no more requests, but keep writing replies.
    stop_reading: Cell<bool>,
    pub last_active: Cell<Instant>,
    /// When the connection was accepted, for the log.
    pub opened: Instant,
}

impl Conn {
    pub fn new(id: ConnId, stream: TcpStream, peer: SocketAddr, max_out: usize) -> Rc<Conn> {
        let now = Instant::now();
        Rc::new(Conn {
            id,
            peer,
            stream: RefCell::new(stream),
            out: RefCell::new(Vec::new()),
            max_out,
            writer: Cell::new(None),
            reader: Cell::new(None),
            idle_waiter: Cell::new(None),
            writing: Cell::new(false),
            closed: Cell::new(None),
            user: RefCell::new(None),
            deferred: Cell::new(0),
            stop_reading: Cell::new(false),
            last_active: Cell::new(now),
            opened: now,
        })
    }

    pub fn user_id(&self) -> Option<Rc<str>> {
        self.user.borrow().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed.get()
    }

    /// Queues frames written by `write` (appending to the buffer). Returns false if the
    /// connection is closed or has just been closed because the client stopped reading.
    pub fn send(&self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.is_closed() {
            return false;
        }
        let len = {
            let mut out = self.out.borrow_mut();
            write(&mut out);
            out.len()
        };
        if len > self.max_out {
            self.out.borrow_mut().clear();
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        true
    }

    /// Marks the connection closed and wakes its tasks; frames already queued are still sent
    /// (an error frame before closing, say), unless the client is too slow to take them.
    pub fn close(&self, reason: CloseReason) {
        if self.closed.get().is_none() {
            self.closed.set(Some(reason));
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// Stops the reader (at shutdown) while replies still go out.
    pub fn stop_reading(&self) {
        self.stop_reading.set(true);
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    pub fn reading_stopped(&self) -> bool {
        self.stop_reading.get()
    }

    /// Reads what the socket has into `dec`, through the shard's shared `scratch` buffer
    /// (borrowed only inside a poll, never across a wait). `Ok(0)` at end of stream or once
    /// the connection is closed.
    pub async fn read_into(
        &self,
        dec: &mut crate::frame::FrameDecoder,
        scratch: &RefCell<Vec<u8>>,
    ) -> std::io::Result<usize> {
        poll_fn(|cx| {
            if self.is_closed() || self.stop_reading.get() {
                return Poll::Ready(Ok(0));
            }
            let mut buf = scratch.borrow_mut();
            let r = Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, &mut buf[..]);
            match r {
                Poll::Ready(Ok(n)) => {
                    dec.extend(&buf[..n]);
                    Poll::Ready(Ok(n))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.reader.set(Some(cx.waker().clone()));
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The writer task: sends queued frames until the connection closes.
    pub async fn run_writer(self: Rc<Self>) {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let more = poll_fn(|cx| {
                let mut out = self.out.borrow_mut();
                if !out.is_empty() {
                    std::mem::swap(&mut *out, &mut buf);
                    return Poll::Ready(true);
                }
                if self.is_closed() {
                    return Poll::Ready(false);
                }
                self.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            })
            .await;
            if !more {
                break;
            }
            self.writing.set(true);
            let r = self.write_all(&buf).await;
            self.writing.set(false);
            buf.clear();
            // A burst of large frames must not pin megabytes to an idle connection.
            if buf.capacity() > 64 * 1024 {
                buf = Vec::new();
            }
            if r.is_err() {
                self.out.borrow_mut().clear();
                self.close(CloseReason::Error);
            }
            if self.out.borrow().is_empty() {
                if self.out.borrow().capacity() > 64 * 1024 {
                    *self.out.borrow_mut() = Vec::new();
                }
                if let Some(w) = self.idle_waiter.take() {
                    w.wake();
                }
            }
        }
        if let Some(w) = self.idle_waiter.take() {
            w.wake();
        }
        if self.closed.get() != Some(CloseReason::HandedOff) {
            let fd = self.stream.borrow().as_raw_fd();
            // SAFETY: `fd` belongs to `self.stream`, which is alive for this whole call.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = socket2::SockRef::from(&borrowed).shutdown(std::net::Shutdown::Both);
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n =
                poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, data)).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// Waits until every queued frame has been written (or the connection failed).
    pub async fn flushed(&self) {
        poll_fn(|cx| {
            if (self.out.borrow().is_empty() && !self.writing.get())
                || self
                    .closed
                    .get()
                    .is_some_and(|r| r != CloseReason::HandedOff)
            {
                Poll::Ready(())
            } else {
                self.idle_waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Gives up the socket for another shard: once every queued frame is written, returns a
    /// duplicate of its descriptor and closes this side without shutting the socket down.
    pub async fn hand_off(&self) -> std::io::Result<OwnedFd> {
        self.flushed().await;
        if let Some(r) = self.closed.get() {
            return Err(std::io::Error::other(format!("connection closed: {r:?}")));
        }
        let fd = self.stream.borrow().as_raw_fd();
        // SAFETY: `fd` belongs to `self.stream`, which is alive for this whole call.
        let dup = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        self.close(CloseReason::HandedOff);
        Ok(dup)
    }

    /// Sets TCP keepalive so that a vanished peer of a logged-in connection is found.
    pub fn set_keepalive(&self, idle: Duration) {
        let fd = self.stream.borrow().as_raw_fd();
        // SAFETY: `fd` belongs to `self.stream`, which is alive for this whole call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&borrowed);
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(Duration::from_secs(10))
            .with_retries(6);
        let _ = sock.set_tcp_keepalive(&ka);
    }

    /// Bytes queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.out.borrow().len()
    }
}
