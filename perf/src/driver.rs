//! The worker thread: one `mio` event loop driving many simulated clients.
//!
//! Each worker owns whole *pairs* of users (a sender and its receiver, or two users who
//! message each other), so a message is sent and received on the same thread and loss,
//! duplicates and reordering are checked without any cross-thread state. Every user is a
//! small state machine that walks the same steps as the Qt client:
//!
//! ```text
//! connect -> [register] -> login -> [get_unread_messages] -> (pair) add_friend/accept_friend
//!         -> ready -> chat
//! ```
//!
//! Chat is either closed loop (at most `window` unacknowledged `send_message` per sender)
//! or open loop (one message every `interval_ns` per sender on a fixed schedule; latency
//! is measured from the *intended* send time, so a server that stalls is charged for the
//! messages it delayed, not only for the few that were in flight: no coordinated omission).
//! The window still caps the in-flight count in open loop, so a dead server cannot make the
//! generator buffer without bound; the messages held back keep their intended times.
//!
//! The controller ([`crate::run`]) talks to workers only through [`Control`]: a phase
//! number, the run's start and end times, a segment number (latencies are also recorded per
//! segment, e.g. before and during a login storm), and counters the workers add to a few
//! hundred times a second (for the progress line and the stall detector).
//!
//! The same state machine speaks NATS ([`Protocol::Nats`]): "login" is CONNECT + SUB + PING
//! and its PONG, a message is a PUB + PING whose PONG is the ack, a delivery is a MSG.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::net::{Conn, ReadState};
use crate::stats::{Counts, Metric, Stats};
use crate::wire::{self, Kind, MessageTemplate, Protocol, Reply, Status, Tag};

/// The token of each worker's `mio::Waker`.
pub const WAKE: Token = Token(usize::MAX);

/// Longest a worker sleeps in `poll` without events.
const MAX_SLEEP: Duration = Duration::from_millis(10);

/// How often a worker publishes its counters and checks which pairs are done.
const PUBLISH_EVERY_NS: u64 = 2_000_000;

/// Phases of a run, in order.
pub mod phase {
    /// Connecting, registering, logging in, befriending.
    pub const SETUP: u8 = 0;
    /// Barrier mode: senders send until the run's end time.
    pub const RUN: u8 = 1;
    /// No new closed-loop sends; waiting for acks and deliveries.
    pub const DRAIN: u8 = 2;
    /// Close everything and return the statistics.
    pub const STOP: u8 = 3;
}

/// When pairs start chatting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// All together, when the controller moves to [`phase::RUN`] (throughput).
    Barrier,
    /// Each pair as soon as its own setup is done (seed table).
    WhenReady,
}

/// What every simulated client does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    /// What the target speaks.
    pub protocol: Protocol,
    pub password: String,
    /// Register before logging in.
    pub register: bool,
    /// Log in (after registering, if `register`). Without it a user's setup ends with its
    /// registration (users created for a later phase).
    pub login: bool,
    /// Most users of one worker in setup at once (connecting, registering, logging in); the
    /// others wait for a place. `None`: all start at once.
    pub max_connecting: Option<usize>,
    /// Ask for unread messages after login, as the Qt client does.
    pub unread: bool,
    /// Make the two users of a pair friends (add_friend + accept_friend).
    pub befriend: bool,
    /// Both users of a pair send (otherwise only the first one does).
    pub both_ways: bool,
    /// Messages per sender; `None` for as many as the run's time allows.
    pub limit: Option<u64>,
    /// Most unacknowledged messages per sender.
    pub window: usize,
    /// Open loop: nanoseconds between two messages of one sender.
    pub interval_ns: Option<u64>,
    pub start: StartMode,
    /// Minimum `message_body` length in bytes.
    pub payload: usize,
    /// Pairs in the whole run (spreads open-loop schedules evenly).
    pub total_pairs: u64,
}

/// The two users of a pair, by phone number (= user id).
#[derive(Debug, Clone)]
pub struct PairSpec {
    pub id: u32,
    pub a: String,
    pub b: String,
}

/// Shared between the controller and the workers.
#[derive(Debug)]
pub struct Control {
    /// Time zero of every timestamp in the run, including those inside message bodies.
    pub base: Instant,
    pub phase: AtomicU8,
    /// Ack and delivery latencies are also recorded under this segment number.
    pub segment: AtomicU8,
    pub run_start_ns: AtomicU64,
    pub run_end_ns: AtomicU64,
    pub live: Live,
}

impl Control {
    pub fn new() -> Control {
        Control {
            base: Instant::now(),
            phase: AtomicU8::new(phase::SETUP),
            segment: AtomicU8::new(0),
            run_start_ns: AtomicU64::new(0),
            run_end_ns: AtomicU64::new(u64::MAX),
            live: Live::default(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

impl Default for Control {
    fn default() -> Self {
        Control::new()
    }
}

/// Running totals over all workers (for progress and for the controller's decisions).
#[derive(Debug, Default)]
pub struct Live {
    pub connected: AtomicU64,
    pub ready: AtomicU64,
    pub failed_users: AtomicU64,
    pub logged_in: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub refused: AtomicU64,
    pub delivered: AtomicU64,
    pub frames: AtomicU64,
    pub disconnects: AtomicU64,
    /// Pairs with nothing left to do (done, or failed).
    pub settled_pairs: AtomicU64,
    /// Requests written whose reply has not arrived yet.
    pub outstanding: AtomicI64,
    /// When the latest successful login reply arrived (ns since [`Control::base`]).
    pub last_login_ns: AtomicU64,
}

/// A snapshot of [`Live`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveSnapshot {
    pub connected: u64,
    pub ready: u64,
    pub failed_users: u64,
    pub logged_in: u64,
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    pub delivered: u64,
    pub frames: u64,
    pub disconnects: u64,
    pub settled_pairs: u64,
    pub outstanding: i64,
    pub last_login_ns: u64,
}

impl Live {
    pub fn snapshot(&self) -> LiveSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LiveSnapshot {
            connected: l(&self.connected),
            ready: l(&self.ready),
            failed_users: l(&self.failed_users),
            logged_in: l(&self.logged_in),
            sent: l(&self.sent),
            acked: l(&self.acked),
            refused: l(&self.refused),
            delivered: l(&self.delivered),
            frames: l(&self.frames),
            disconnects: l(&self.disconnects),
            settled_pairs: l(&self.settled_pairs),
            outstanding: self.outstanding.load(Ordering::Relaxed),
            last_login_ns: l(&self.last_login_ns),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connecting,
    Registering,
    LoggingIn,
    FetchingUnread,
    LoggedIn,
    Befriending,
    Ready,
    Failed,
}

impl Step {
    fn doing(self) -> &'static str {
        match self {
            Step::Connecting => "connecting",
            Step::Registering => "registering",
            Step::LoggingIn => "logging in",
            Step::FetchingUnread => "fetching unread messages",
            Step::LoggedIn => "waiting for its partner to log in",
            Step::Befriending => "befriending",
            Step::Ready => "chatting",
            Step::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Joining,
    Adding,
    Accepting,
    Ready,
    Failed,
}

/// Sending side of a user.
#[derive(Debug)]
struct Sender {
    template: MessageTemplate,
    seq: u64,
    /// (Intended) send times of unacknowledged messages, oldest first: the server answers
    /// one connection's requests in order.
    in_flight: VecDeque<u64>,
    sent: u64,
    refused: u64,
    next_due: u64,
    done: bool,
    in_heap: bool,
}

/// Receiving side of a user: which sequence numbers of its partner arrived.
#[derive(Debug, Default)]
struct Receiver {
    delivered: u64,
    seen: Vec<u64>,
    max_seq: Option<u64>,
}

impl Receiver {
    /// Marks `seq` seen; false if it already was.
    fn insert(&mut self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        let fresh = self.seen[w] & (1 << b) == 0;
        self.seen[w] |= 1 << b;
        fresh
    }
}

#[derive(Debug)]
struct User {
    phone: String,
    pair: usize,
    step: Step,
    expect: Option<(Kind, u64)>,
    connect_ns: u64,
    /// Holds one of the worker's setup places (see [`Plan::max_connecting`]).
    in_setup: bool,
    conn: Option<Conn>,
    tx: Option<Sender>,
    rx: Receiver,
}

#[derive(Debug)]
struct Pair {
    id: u32,
    a: usize,
    b: usize,
    stage: Stage,
    chatting: bool,
    settled: bool,
}

/// Counters published to [`Live`] so far.
#[derive(Debug, Default)]
struct Published {
    counts: Counts,
    settled: u64,
    outstanding: i64,
}

pub struct Worker {
    plan: Arc<Plan>,
    ctl: Arc<Control>,
    poll: Poll,
    users: Vec<User>,
    pairs: Vec<Pair>,
    stats: Stats,
    phase: u8,
    run_start: u64,
    run_end: u64,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    dirty: Vec<usize>,
    scratch: Vec<u8>,
    replies: Vec<Reply>,
    body: String,
    settled: u64,
    outstanding: i64,
    published: Published,
    last_publish: u64,
    /// The next user to start connecting, and how many are in setup now.
    next_connect: usize,
    in_setup: usize,
}

impl Worker {
    /// A worker for `pairs`; `poll` must already carry the waker the controller holds.
    pub fn new(plan: Arc<Plan>, ctl: Arc<Control>, poll: Poll, pairs: &[PairSpec]) -> Worker {
        let mut users = Vec::with_capacity(pairs.len() * 2);
        let mut ps = Vec::with_capacity(pairs.len());
        for (i, p) in pairs.iter().enumerate() {
            let a = users.len();
            let b = a + 1;
            for (me, peer, sends) in [(&p.a, &p.b, true), (&p.b, &p.a, plan.both_ways)] {
                users.push(User {
                    phone: me.clone(),
                    pair: i,
                    step: Step::Connecting,
                    expect: None,
                    connect_ns: 0,
                    in_setup: false,
                    conn: None,
                    tx: sends.then(|| Sender {
                        template: plan.protocol.message(me, peer),
                        seq: 0,
                        in_flight: VecDeque::new(),
                        sent: 0,
                        refused: 0,
                        next_due: 0,
                        done: false,
                        in_heap: false,
                    }),
                    rx: Receiver::default(),
                });
            }
            ps.push(Pair {
                id: p.id,
                a,
                b,
                stage: Stage::Joining,
                chatting: false,
                settled: false,
            });
        }
        let mut stats = Stats::default();
        stats.counts.users = users.len() as u64;
        stats.counts.pairs = ps.len() as u64;
        Worker {
            plan,
            ctl,
            poll,
            users,
            pairs: ps,
            stats,
            phase: phase::SETUP,
            run_start: 0,
            run_end: u64::MAX,
            heap: BinaryHeap::new(),
            dirty: Vec::new(),
            scratch: vec![0; 64 * 1024],
            replies: Vec::new(),
            body: String::new(),
            settled: 0,
            outstanding: 0,
            published: Published::default(),
            last_publish: 0,
            next_connect: 0,
            in_setup: 0,
        }
    }

    /// Runs until the controller says [`phase::STOP`]; returns what was measured.
    pub fn run(mut self) -> std::io::Result<Stats> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.start_pending();
            let now = self.ctl.now_ns();
            let ph = self.ctl.phase.load(Ordering::Acquire);
            if ph != self.phase {
                self.enter_phase(ph, now);
                if ph == phase::STOP {
                    break;
                }
            }
            self.flush_dirty();
            self.publish(now, false);
            let timeout = match self.heap.peek() {
                Some(Reverse((due, _))) => {
                    Duration::from_nanos(due.saturating_sub(self.ctl.now_ns())).min(MAX_SLEEP)
                }
                None => MAX_SLEEP,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in events.iter() {
                // A fresh time per event: one iteration may handle thousands of events, and
                // the first and last of them must not share a timestamp.
                let now = self.ctl.now_ns();
                let t = ev.token();
                if t == WAKE || t.0 >= self.users.len() {
                    continue;
                }
                if ev.is_writable() || ev.is_error() || ev.is_write_closed() {
                    self.on_writable(t.0, now);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(t.0, now);
                }
            }
            self.run_due(self.ctl.now_ns());
        }
        self.finish();
        Ok(self.stats)
    }

    // ----- connections -----

    /// Starts connecting the next users while there are setup places.
    fn start_pending(&mut self) {
        if self.phase == phase::STOP {
            return;
        }
        let cap = self.plan.max_connecting.unwrap_or(usize::MAX).max(1);
        while self.in_setup < cap && self.next_connect < self.users.len() {
            let u = self.next_connect;
            self.next_connect += 1;
            if self.users[u].step == Step::Failed {
                continue;
            }
            self.users[u].in_setup = true;
            self.in_setup += 1;
            self.start_connect(u);
        }
    }

    /// User `u` no longer needs a setup place (done or failed).
    fn leave_setup(&mut self, u: usize) {
        if std::mem::take(&mut self.users[u].in_setup) {
            self.in_setup -= 1;
        }
    }

    fn start_connect(&mut self, u: usize) {
        self.users[u].connect_ns = self.ctl.now_ns();
        match Conn::connect(
            self.plan.addr,
            self.poll.registry(),
            Token(u),
            self.plan.protocol,
        ) {
            Ok(c) => self.users[u].conn = Some(c),
            Err(e) => self.fail_user(u, format!("connect: {e}")),
        }
    }

    fn on_writable(&mut self, u: usize, now: u64) {
        let Some(conn) = self.users[u].conn.as_mut() else {
            return;
        };
        if !conn.is_connected() {
            match conn.finish_connect() {
                Ok(true) => {
                    let lat = now.saturating_sub(self.users[u].connect_ns);
                    self.stats.record(Metric::Connect, lat);
                    self.stats.counts.connected += 1;
                    if self.plan.register {
                        self.users[u].step = Step::Registering;
                        let f = wire::register(&self.users[u].phone, &self.plan.password);
                        self.request(u, Kind::Register, &f, now);
                    } else {
                        self.send_login(u, now);
                    }
                }
                Ok(false) => return,
                Err(e) => return self.fail_user(u, format!("connect: {e}")),
            }
        }
        self.flush(u);
    }

    fn on_readable(&mut self, u: usize, now: u64) {
        let Some(conn) = self.users[u].conn.as_mut() else {
            return;
        };
        if !conn.is_connected() {
            return;
        }
        let state = conn.fill(&mut self.scratch);
        let mut replies = std::mem::take(&mut self.replies);
        let mut bad_frame = None;
        loop {
            match conn.next_reply() {
                Ok(Some(r)) => {
                    self.stats.counts.frames += 1;
                    match r {
                        Ok(r) => replies.push(r),
                        Err(()) => self.stats.counts.malformed += 1,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    bad_frame = Some(e);
                    break;
                }
            }
        }
        for r in replies.drain(..) {
            self.on_reply(u, r, now);
        }
        self.replies = replies;
        // What the replies triggered (the next messages of a closed-loop sender) leaves now,
        // not at the end of the iteration, so a send time is close to its write.
        if self.users[u].conn.as_ref().is_some_and(Conn::has_output) {
            self.flush(u);
        }
        if let Some(e) = bad_frame {
            return self.lost(u, format!("bad frame from the server: {e}"));
        }
        match state {
            Ok(ReadState::Open) => {}
            Ok(ReadState::Closed) => self.lost(u, "connection closed by the server".into()),
            Err(e) => self.lost(u, format!("connection lost: {e}")),
        }
    }

    /// A connection that was established went away.
    fn lost(&mut self, u: usize, reason: String) {
        if self.users[u].step == Step::Failed {
            return;
        }
        self.stats.counts.disconnects += 1;
        self.fail_user(u, reason);
    }

    fn flush(&mut self, u: usize) {
        let Some(conn) = self.users[u].conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.flush() {
            self.lost(u, format!("write: {e}"));
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for u in dirty.drain(..) {
            if self.users[u].conn.as_ref().is_some_and(Conn::has_output) {
                self.flush(u);
            }
        }
        self.dirty = dirty;
    }

    /// Queues a setup request and remembers which reply it waits for.
    fn request(&mut self, u: usize, kind: Kind, frame: &[u8], now: u64) {
        let user = &mut self.users[u];
        let Some(conn) = user.conn.as_mut() else {
            return;
        };
        conn.out().extend_from_slice(frame);
        user.expect = Some((kind, now));
        self.outstanding += 1;
        self.dirty.push(u);
    }

    fn send_login(&mut self, u: usize, now: u64) {
        self.users[u].step = Step::LoggingIn;
        let f = self
            .plan
            .protocol
            .login(&self.users[u].phone, &self.plan.password);
        self.request(u, Kind::Login, &f, now);
    }

    // ----- replies -----

    fn on_reply(&mut self, u: usize, r: Reply, now: u64) {
        if self.users[u].step == Step::Failed {
            return;
        }
        match r.kind {
            Kind::SendMessage => self.on_ack(u, &r, now),
            // NATS: a PONG answers the connection's oldest outstanding request: the login
            // while in setup, else the oldest message.
            Kind::Pong => match self.users[u].expect {
                Some((k, _)) => self.on_step(u, Reply { kind: k, ..r }, now),
                None => self.on_ack(u, &r, now),
            },
            Kind::Ping => {
                if let Some(conn) = self.users[u].conn.as_mut() {
                    conn.out().extend_from_slice(b"PONG\r\n");
                    self.dirty.push(u);
                }
            }
            Kind::Hello => {}
            Kind::ReceiveMessage => match r.tag {
                Some(tag) => self.on_delivery(u, tag, now),
                None => self.stats.counts.foreign += 1,
            },
            k if self.users[u].expect.is_some_and(|(e, _)| e == k) => self.on_step(u, r, now),
            k => {
                self.stats.counts.unexpected += 1;
                if r.status == Status::Error {
                    let m = r.message.as_deref().unwrap_or("error");
                    self.stats
                        .fail(format!("unexpected {} reply: {m}", k.name()));
                }
            }
        }
    }

    fn on_step(&mut self, u: usize, r: Reply, now: u64) {
        let Some((kind, t0)) = self.users[u].expect.take() else {
            return;
        };
        self.outstanding -= 1;
        let lat = now.saturating_sub(t0);
        let ok =
            r.status == Status::Success || (kind == Kind::GetUnread && r.status != Status::Error);
        if !ok {
            let m = r.message.as_deref().unwrap_or("error");
            return self.fail_user(u, format!("{}: {m}", kind.name()));
        }
        let p = self.users[u].pair;
        match kind {
            Kind::Register => {
                self.stats.record(Metric::Register, lat);
                self.stats.counts.registered += 1;
                if self.plan.login {
                    self.send_login(u, now);
                } else {
                    self.leave_setup(u);
                    self.users[u].step = Step::LoggedIn;
                    self.advance(p, now);
                }
            }
            Kind::Login => {
                self.stats.record(Metric::Login, lat);
                self.stats.counts.logged_in += 1;
                self.ctl
                    .live
                    .last_login_ns
                    .fetch_max(now, Ordering::Relaxed);
                if self.plan.unread {
                    self.users[u].step = Step::FetchingUnread;
                    let f = wire::get_unread(&self.users[u].phone);
                    self.request(u, Kind::GetUnread, &f, now);
                } else {
                    self.leave_setup(u);
                    self.users[u].step = Step::LoggedIn;
                    self.advance(p, now);
                }
            }
            Kind::GetUnread => {
                self.stats.record(Metric::Unread, lat);
                self.leave_setup(u);
                self.users[u].step = Step::LoggedIn;
                self.advance(p, now);
            }
            Kind::AddFriend => {
                self.stats.record(Metric::AddFriend, lat);
                let (a, b) = (self.pairs[p].a, self.pairs[p].b);
                self.pairs[p].stage = Stage::Accepting;
                let f = wire::accept_friend(&self.users[b].phone, &self.users[a].phone);
                self.request(b, Kind::AcceptFriend, &f, now);
            }
            Kind::AcceptFriend => {
                self.stats.record(Metric::AcceptFriend, lat);
                self.pair_ready(p, now);
            }
            Kind::SendMessage
            | Kind::ReceiveMessage
            | Kind::Pong
            | Kind::Ping
            | Kind::Hello
            | Kind::Other => {}
        }
    }

    /// Moves a pair on once both of its users are logged in.
    fn advance(&mut self, p: usize, now: u64) {
        let (a, b) = (self.pairs[p].a, self.pairs[p].b);
        if self.pairs[p].stage != Stage::Joining
            || self.users[a].step != Step::LoggedIn
            || self.users[b].step != Step::LoggedIn
        {
            return;
        }
        if !self.plan.befriend {
            return self.pair_ready(p, now);
        }
        self.pairs[p].stage = Stage::Adding;
        self.users[a].step = Step::Befriending;
        self.users[b].step = Step::Befriending;
        let f = wire::add_friend(&self.users[a].phone, &self.users[b].phone);
        self.request(a, Kind::AddFriend, &f, now);
    }

    fn pair_ready(&mut self, p: usize, now: u64) {
        let pair = &mut self.pairs[p];
        pair.stage = Stage::Ready;
        let (a, b) = (pair.a, pair.b);
        self.users[a].step = Step::Ready;
        self.users[b].step = Step::Ready;
        self.stats.counts.ready += 2;
        if self.plan.start == StartMode::WhenReady {
            self.start_chat(p, now, now);
        }
    }

    fn start_chat(&mut self, p: usize, start: u64, now: u64) {
        let pair = &mut self.pairs[p];
        pair.chatting = true;
        let offset = match self.plan.interval_ns {
            Some(iv) => {
                (u128::from(pair.id) * u128::from(iv) / u128::from(self.plan.total_pairs.max(1)))
                    as u64
            }
            None => 0,
        };
        for (i, u) in [pair.a, pair.b].into_iter().enumerate() {
            if let Some(tx) = self.users[u].tx.as_mut() {
                // The second sender of a pair runs half an interval later.
                let half = self.plan.interval_ns.unwrap_or(0) / 2 * i as u64;
                tx.next_due = start + offset + half;
            }
            self.pump(u, now);
        }
    }

    fn on_ack(&mut self, u: usize, r: &Reply, now: u64) {
        let Some(tx) = self.users[u].tx.as_mut() else {
            self.stats.counts.unexpected += 1;
            return;
        };
        let Some(t0) = tx.in_flight.pop_front() else {
            self.stats.counts.unexpected += 1;
            return;
        };
        self.outstanding -= 1;
        if r.status == Status::Success {
            self.stats.counts.acked += 1;
            let lat = now.saturating_sub(t0);
            self.stats.record(Metric::Ack, lat);
            let seg = self.ctl.segment.load(Ordering::Relaxed) as usize;
            self.stats.record_segment(seg, Metric::Ack, lat);
        } else {
            tx.refused += 1;
            self.stats.counts.refused += 1;
            let m = r.message.as_deref().unwrap_or("error");
            self.stats.fail(format!("send_message: {m}"));
        }
        self.pump(u, now);
    }

    fn on_delivery(&mut self, u: usize, tag: Tag, now: u64) {
        let pair = &self.pairs[self.users[u].pair];
        let peer = if pair.a == u { pair.b } else { pair.a };
        // Only a message its partner has written can be ours (this also bounds the bitmap).
        let written = self.users[peer].tx.as_ref().map_or(0, |tx| tx.seq);
        if tag.pair != pair.id || tag.seq >= written {
            self.stats.counts.foreign += 1;
            return;
        }
        let rx = &mut self.users[u].rx;
        if !rx.insert(tag.seq) {
            self.stats.counts.duplicates += 1;
            return;
        }
        if rx.max_seq.is_some_and(|m| tag.seq < m) {
            self.stats.counts.reordered += 1;
        }
        rx.max_seq = Some(rx.max_seq.map_or(tag.seq, |m| m.max(tag.seq)));
        rx.delivered += 1;
        self.stats.counts.delivered += 1;
        let lat = now.saturating_sub(tag.sent_ns);
        self.stats.record(Metric::Delivery, lat);
        let seg = self.ctl.segment.load(Ordering::Relaxed) as usize;
        self.stats.record_segment(seg, Metric::Delivery, lat);
    }

    // ----- sending -----

    /// Writes whatever this sender may send now.
    fn pump(&mut self, u: usize, now: u64) {
        let pair = &self.pairs[self.users[u].pair];
        let (pair_id, chatting) = (pair.id, pair.chatting);
        let user = &mut self.users[u];
        let (Some(tx), Some(conn)) = (user.tx.as_mut(), user.conn.as_mut()) else {
            return;
        };
        if tx.done || !chatting || user.step != Step::Ready {
            return;
        }
        let window = self.plan.window.max(1);
        let mut wrote = false;
        loop {
            if self.plan.limit.is_some_and(|l| tx.seq >= l) {
                tx.done = true;
                break;
            }
            let t = match self.plan.interval_ns {
                None => {
                    if now >= self.run_end || self.phase >= phase::DRAIN {
                        tx.done = true;
                        break;
                    }
                    if tx.in_flight.len() >= window {
                        break;
                    }
                    now
                }
                Some(iv) => {
                    if tx.next_due >= self.run_end {
                        tx.done = true;
                        break;
                    }
                    if tx.next_due > now || tx.in_flight.len() >= window {
                        break;
                    }
                    let t = tx.next_due;
                    tx.next_due += iv;
                    self.stats.record(Metric::SendLag, now - t);
                    t
                }
            };
            let tag = Tag {
                pair: pair_id,
                seq: tx.seq,
                sent_ns: t,
            };
            tag.write_body(self.plan.payload, &mut self.body);
            tx.template.write(&self.body, conn.out());
            tx.in_flight.push_back(t);
            tx.seq += 1;
            tx.sent += 1;
            self.stats.counts.sent += 1;
            self.outstanding += 1;
            wrote = true;
        }
        if wrote {
            self.dirty.push(u);
        }
        if self.plan.interval_ns.is_some() && !tx.done && !tx.in_heap && tx.in_flight.len() < window
        {
            tx.in_heap = true;
            self.heap.push(Reverse((tx.next_due, u)));
        }
    }

    /// Open loop: sends what is due.
    fn run_due(&mut self, now: u64) {
        while let Some(Reverse((due, u))) = self.heap.peek().copied() {
            if due > now {
                break;
            }
            self.heap.pop();
            if let Some(tx) = self.users[u].tx.as_mut() {
                tx.in_heap = false;
            }
            self.pump(u, now);
            if self.users[u].conn.as_ref().is_some_and(Conn::has_output) {
                self.flush(u);
            }
        }
    }

    // ----- phases, failures, settling -----

    fn enter_phase(&mut self, ph: u8, now: u64) {
        let was = self.phase;
        self.phase = ph;
        if ph >= phase::RUN && self.plan.start == StartMode::Barrier {
            // The controller may end a window early: it moves the end before the drain.
            self.run_end = self.ctl.run_end_ns.load(Ordering::Acquire);
        }
        if was < phase::RUN
            && (ph == phase::RUN || ph == phase::DRAIN)
            && self.plan.start == StartMode::Barrier
        {
            self.run_start = self.ctl.run_start_ns.load(Ordering::Acquire);
            self.run_end = self.ctl.run_end_ns.load(Ordering::Acquire);
            for p in 0..self.pairs.len() {
                match self.pairs[p].stage {
                    Stage::Ready => self.start_chat(p, self.run_start, now),
                    Stage::Failed => {}
                    _ => self.fail_pair(p, "setup not finished when the run started"),
                }
            }
        }
        self.publish(now, true);
    }

    fn fail_user(&mut self, u: usize, reason: String) {
        if self.users[u].step == Step::Failed {
            return;
        }
        let p = self.users[u].pair;
        if self.users[u].step != Step::Ready {
            self.stats.counts.failed_users += 1;
        }
        self.users[u].step = Step::Failed;
        self.leave_setup(u);
        self.stats.fail(reason);
        self.fail_pair(p, "its partner failed");
    }

    /// The pair can do nothing more: close both connections.
    fn fail_pair(&mut self, p: usize, reason: &str) {
        if self.pairs[p].stage == Stage::Failed {
            return;
        }
        self.pairs[p].stage = Stage::Failed;
        self.stats.counts.failed_pairs += 1;
        for u in [self.pairs[p].a, self.pairs[p].b] {
            self.leave_setup(u);
            let user = &mut self.users[u];
            if user.step != Step::Failed {
                if user.step != Step::Ready {
                    self.stats.counts.failed_users += 1;
                    self.stats
                        .fail(format!("{} ({})", reason, user.step.doing()));
                }
                user.step = Step::Failed;
            }
            if user.expect.take().is_some() {
                self.outstanding -= 1;
            }
            if let Some(tx) = user.tx.as_mut() {
                self.outstanding -= tx.in_flight.len() as i64;
                tx.in_flight.clear();
                tx.done = true;
            }
            if let Some(c) = user.conn.take() {
                c.close(self.poll.registry());
            }
        }
        self.settle(p);
    }

    fn settle(&mut self, p: usize) {
        if !self.pairs[p].settled {
            self.pairs[p].settled = true;
            self.settled += 1;
        }
    }

    /// Marks the pairs that have nothing left to send or receive.
    fn check_settled(&mut self, now: u64) {
        if self.phase == phase::STOP {
            return;
        }
        let chatting = self.phase >= phase::DRAIN || self.plan.start == StartMode::WhenReady;
        if !chatting {
            return;
        }
        for p in 0..self.pairs.len() {
            let pair = &self.pairs[p];
            if pair.settled || !pair.chatting {
                continue;
            }
            let (a, b) = (pair.a, pair.b);
            self.pump(a, now);
            self.pump(b, now);
            let done = |s: &User, r: &User| match &s.tx {
                None => true,
                Some(tx) => {
                    tx.done && tx.in_flight.is_empty() && r.rx.delivered + tx.refused >= tx.sent
                }
            };
            if done(&self.users[a], &self.users[b]) && done(&self.users[b], &self.users[a]) {
                self.settle(p);
            }
        }
    }

    fn publish(&mut self, now: u64, force: bool) {
        if !force && now.saturating_sub(self.last_publish) < PUBLISH_EVERY_NS {
            return;
        }
        self.last_publish = now;
        self.check_settled(now);
        let live = &self.ctl.live;
        let c = &self.stats.counts;
        let old = &mut self.published;
        let add = |a: &AtomicU64, new: u64, old: &mut u64| {
            if new > *old {
                a.fetch_add(new - *old, Ordering::Relaxed);
                *old = new;
            }
        };
        add(&live.connected, c.connected, &mut old.counts.connected);
        add(&live.ready, c.ready, &mut old.counts.ready);
        add(
            &live.failed_users,
            c.failed_users,
            &mut old.counts.failed_users,
        );
        add(&live.logged_in, c.logged_in, &mut old.counts.logged_in);
        add(&live.sent, c.sent, &mut old.counts.sent);
        add(&live.acked, c.acked, &mut old.counts.acked);
        add(&live.refused, c.refused, &mut old.counts.refused);
        add(&live.delivered, c.delivered, &mut old.counts.delivered);
        add(&live.frames, c.frames, &mut old.counts.frames);
        add(
            &live.disconnects,
            c.disconnects,
            &mut old.counts.disconnects,
        );
        add(&live.settled_pairs, self.settled, &mut old.settled);
        if self.outstanding != old.outstanding {
            live.outstanding
                .fetch_add(self.outstanding - old.outstanding, Ordering::Relaxed);
            old.outstanding = self.outstanding;
        }
    }

    /// At stop: account for what never finished, close every connection.
    fn finish(&mut self) {
        for u in 0..self.users.len() {
            let step = self.users[u].step;
            if !matches!(step, Step::Ready | Step::Failed) {
                self.stats.counts.failed_users += 1;
                self.stats.fail(format!("timed out while {}", step.doing()));
                self.users[u].step = Step::Failed;
            }
            if let (Some(iv), Some(tx)) = (self.plan.interval_ns, self.users[u].tx.as_ref()) {
                let chatting = self.pairs[self.users[u].pair].chatting;
                if chatting && tx.next_due < self.run_end && self.run_end != u64::MAX {
                    self.stats.counts.unsent_backlog += (self.run_end - tx.next_due).div_ceil(iv);
                }
            }
            if let Some(c) = self.users[u].conn.take() {
                c.close(self.poll.registry());
            }
        }
        for p in 0..self.pairs.len() {
            if !matches!(self.pairs[p].stage, Stage::Ready | Stage::Failed) {
                self.pairs[p].stage = Stage::Failed;
                self.stats.counts.failed_pairs += 1;
            }
        }
        let now = self.ctl.now_ns();
        self.publish(now, true);
    }
}
