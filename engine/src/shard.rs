//! One core's runtime: its users' state, its connections, its end of the mesh, and its
//! traffic with the persistence thread.
//!
//! Everything in [`Shard`] is owned by one executor (`Rc`, `RefCell`, `Cell`): no locks.
//! What crosses to other cores does so as owned [`MeshMsg`]s; what goes to the database
//! goes as [`WriteRecord`]s into the persistence queue.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::poll_fn;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use glommio::net::TcpStream;

use corechat_persist::model::MessageRow;
use corechat_persist::{Ack, Envelope, PersistQueue, WriteRecord};
use corechat_shards::state::Profile;
use corechat_shards::{
    shard_of, CallOp, CallReply, ConnId, Handoff, Mesh, MeshMsg, MessageIds, ShardState,
};

use crate::anonymous::Anonymous;
use crate::auth::Auth;
use crate::config::Config;
use crate::connection::{CloseReason, Conn};
use crate::metrics::{Counters, Gauges, Metrics, Registry};
use crate::protocol::{write_frame, Limits, MessageReply, PairReply, Status};

/// Set in the token that a chat flush's last record carries (see [`Shard::flush_chats`]), so
/// that its commit is told apart from a reply's. ([`corechat_persist::queue::REFUSED`] is
/// bit 63.)
const FLUSH: u64 = 1 << 62;

/// A reply waiting for the persistence thread to commit what it depends on.
struct PendingAck {
    conn: ConnId,
    /// Borrowed for replies that are the same bytes every time (`send_message` success).
    frame: Cow<'static, [u8]>,
    started: Instant,
    kind: &'static str,
    /// The chat flush of this shard that must have committed too (0: none). The request
    /// changed chat rows that are queued by that flush, not with its own records.
    flush: u64,
}

/// One shard: the state and runtime of one core.
pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub cfg: Config,
    pub limits: Limits,
    pub state: RefCell<ShardState>,
    pub conns: RefCell<HashMap<ConnId, Rc<Conn>>>,
    pub anon: RefCell<Anonymous>,
    pub persist: PersistQueue,
    pub auth: Auth,
    pub metrics: Metrics,
    registry: std::sync::Arc<Registry>,
    mesh: OnceCell<Rc<Mesh<MeshMsg>>>,
    next_conn: Cell<u64>,
    ids: RefCell<MessageIds>,
    next_token: Cell<u64>,
    calls: RefCell<HashMap<u64, oneshot::Sender<CallReply>>>,
    acks: RefCell<HashMap<u64, PendingAck>>,
    /// Records the queue had no room for, in order; retried before any newer record.
    overflow: RefCell<VecDeque<Envelope>>,
    overflow_waker: Cell<Option<Waker>>,
    chat_flush_waker: Cell<Option<Waker>>,
    /// Chat flushes queued so far (the next is `flushes + 1`), and the last one committed.
    flushes: Cell<u64>,
    flushes_committed: Cell<u64>,
    /// Acknowledgements of messages delivered here, sent behind the next chat flush so that a
    /// sender's `success` also covers the receiver's chat row (unread count, preview).
    after_flush: RefCell<Vec<Ack>>,
    /// Replies whose records committed but whose chat flush (the key) has not yet.
    parked: RefCell<BTreeMap<u64, Vec<PendingAck>>>,
    stopping: Cell<bool>,
    /// Requests being served right now (some wait on other shards).
    pub inflight: Cell<usize>,
    /// One read buffer for all connections of the shard: a read copies straight into the
    /// connection's frame decoder, so an idle connection holds no buffer of its own.
    pub scratch: RefCell<Vec<u8>>,
}

/// What a shard is told when it starts.
pub struct ShardInit {
    pub id: usize,
    pub shards: usize,
    pub cfg: Config,
    pub state: ShardState,
    pub persist: PersistQueue,
    pub auth: Auth,
    pub max_message_id: u64,
    pub registry: std::sync::Arc<Registry>,
}

impl Shard {
    pub fn new(init: ShardInit) -> Rc<Shard> {
        let limits = Limits {
            max_body: init.cfg.max_message,
        };
        let per_shard = |total: usize| total.div_ceil(init.shards).max(1);
        let anon = Anonymous::new(
            per_shard(init.cfg.max_anonymous),
            per_shard(init.cfg.max_anonymous_per_ip),
        );
        Rc::new(Shard {
            id: init.id,
            shards: init.shards,
            limits,
            state: RefCell::new(init.state),
            conns: RefCell::new(HashMap::new()),
            anon: RefCell::new(anon),
            persist: init.persist,
            auth: init.auth,
            metrics: Metrics::new(),
            registry: init.registry,
            mesh: OnceCell::new(),
            next_conn: Cell::new(1),
            ids: RefCell::new(MessageIds::new(init.max_message_id, init.id, init.shards)),
            next_token: Cell::new(1),
            calls: RefCell::new(HashMap::new()),
            acks: RefCell::new(HashMap::new()),
            overflow: RefCell::new(VecDeque::new()),
            overflow_waker: Cell::new(None),
            chat_flush_waker: Cell::new(None),
            flushes: Cell::new(0),
            flushes_committed: Cell::new(0),
            after_flush: RefCell::new(Vec::new()),
            parked: RefCell::new(BTreeMap::new()),
            stopping: Cell::new(false),
            inflight: Cell::new(0),
            scratch: RefCell::new(vec![0; 64 * 1024]),
            cfg: init.cfg,
        })
    }

    pub fn set_mesh(&self, mesh: Rc<Mesh<MeshMsg>>) {
        let _ = self.mesh.set(mesh);
    }

    pub fn mesh(&self) -> Option<&Rc<Mesh<MeshMsg>>> {
        self.mesh.get()
    }

    pub fn owner(&self, user_id: &str) -> usize {
        shard_of(user_id, self.shards)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    pub fn stop(&self) {
        self.stopping.set(true);
    }

    fn token(&self) -> u64 {
        let t = self.next_token.get();
        self.next_token.set(t + 1);
        t
    }

    pub fn next_message_id(&self) -> u64 {
        self.ids.borrow_mut().next_id()
    }

    /// Publishes this shard's histograms and counters for reports, once a second.
    pub async fn run_publisher(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            self.publish();
        }
    }

    pub fn publish(&self) {
        let mesh = self.mesh.get();
        let gauges = Gauges {
            connections: self.conns.borrow().len() as u64,
            anonymous: self.anon.borrow().len() as u64,
            users: self.state.borrow().user_count() as u64,
            pending_acks: self.pending_acks() as u64,
            overflow: self.overflow.borrow().len() as u64,
            mesh_backlog: mesh.map_or(0, |m| m.backlog() as u64),
            mesh_sent: mesh.map_or(0, |m| m.stats.sent.get()),
            mesh_received: mesh.map_or(0, |m| m.stats.received.get()),
        };
        self.metrics.publish(self.registry.slot(self.id), gauges);
    }

    // ----- connections -----

    /// Registers a new connection on this shard and starts its writer. An `anonymous` one
    /// (just accepted, not logged in) counts against the caps on such connections.
    pub fn add_conn(
        self: &Rc<Self>,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        anonymous: bool,
    ) -> Rc<Conn> {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let conn = Conn::new(id, stream, peer, self.cfg.max_outbound);
        Counters::inc(&self.metrics.counters.accepted);
        self.conns.borrow_mut().insert(id, conn.clone());
        let evict = match anonymous {
            true => self
                .anon
                .borrow_mut()
                .add(id, peer.ip(), conn.last_active.get()),
            false => None,
        };
        if let Some(victim) = evict {
            if let Some(c) = self.conns.borrow().get(&victim) {
                ftlog::info!(
                    "closing idle anonymous connection from {} to make room",
                    c.peer
                );
                c.close(CloseReason::Evicted);
            }
        }
        glommio::spawn_local(conn.clone().run_writer()).detach();
        conn
    }

    /// Forgets a connection whose reader has ended.
    pub fn remove_conn(&self, conn: &Conn) {
        self.conns.borrow_mut().remove(&conn.id);
        self.anon.borrow_mut().remove(conn.id);
        if let Some(user) = conn.user.borrow().as_ref() {
            self.state.borrow_mut().remove_session(user, conn.id);
        }
    }

    pub fn conn(&self, id: ConnId) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&id).cloned()
    }

    // ----- persistence -----

    /// May a request that writes records be accepted now?
    pub fn admit(&self) -> bool {
        self.overflow.borrow().is_empty() && self.persist.admit()
    }

    /// Pushes `records` in order; the last one carries `ack`. Never drops: what the queue
    /// cannot take now waits in the overflow, which is retried first.
    pub fn write(&self, mut records: Vec<WriteRecord>, ack: Option<Ack>) {
        if records.is_empty() && ack.is_some() {
            records.push(WriteRecord::Barrier);
        }
        let n = records.len();
        self.push_all(records.into_iter().enumerate().map(|(i, r)| Envelope {
            record: r,
            ack: if i + 1 == n { ack } else { None },
            watch: None,
        }));
    }

    /// Pushes `records` in order, each watched by `ack`: nothing is said when they commit,
    /// but if the database refuses one, the request behind `ack` hears so.
    fn write_watched(&self, records: Vec<WriteRecord>, ack: Ack) {
        self.push_all(records.into_iter().map(|r| Envelope {
            record: r,
            ack: None,
            watch: Some(ack),
        }));
    }

    fn push_all(&self, envelopes: impl Iterator<Item = Envelope>) {
        for env in envelopes {
            if !self.overflow.borrow().is_empty() {
                self.overflow.borrow_mut().push_back(env);
                continue;
            }
            if let Err(env) = self.persist.push(env) {
                if self.overflow.borrow().is_empty() {
                    ftlog::warn!(
                        "persistence queue full: shard {} holds records back",
                        self.id
                    );
                }
                self.overflow.borrow_mut().push_back(env);
            }
        }
        if !self.overflow.borrow().is_empty() {
            if let Some(w) = self.overflow_waker.take() {
                w.wake();
            }
        }
    }

    /// Moves held-back records into the queue as room appears.
    pub async fn run_overflow(self: Rc<Self>) {
        loop {
            poll_fn(|cx| {
                if self.overflow.borrow().is_empty() {
                    self.overflow_waker.set(Some(cx.waker().clone()));
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            loop {
                let Some(env) = self.overflow.borrow_mut().pop_front() else {
                    break;
                };
                if let Err(env) = self.persist.push(env) {
                    self.overflow.borrow_mut().push_front(env);
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// Messages changed chat rows: make sure a flush is coming.
    pub fn chats_touched(&self) {
        if let Some(w) = self.chat_flush_waker.take() {
            w.wake();
        }
    }

    /// Is a chat flush due (rows changed, or deliveries waiting to be acknowledged)?
    pub fn flush_due(&self) -> bool {
        self.state.borrow().has_dirty_chats() || !self.after_flush.borrow().is_empty()
    }

    /// Queues changed chat rows about once a millisecond while messages flow: one write per
    /// row per flush instead of one per message (see `ShardState::flush_chats`). Nobody is
    /// told `success` before the chat rows their request changed are durable: replies wait
    /// for the flush (see [`PendingAck::flush`] and `after_flush`), which costs them at most
    /// that millisecond.
    pub async fn run_chat_flush(self: Rc<Self>) {
        const EVERY: Duration = Duration::from_millis(1);
        let mut last = Instant::now();
        loop {
            poll_fn(|cx| {
                if self.flush_due() {
                    Poll::Ready(())
                } else {
                    self.chat_flush_waker.set(Some(cx.waker().clone()));
                    Poll::Pending
                }
            })
            .await;
            // At most one flush a millisecond, but no waiting when the last one is older:
            // under load rows coalesce, when quiet a reply is not held back for nothing.
            // Yielding first lets the requests already read in this tick join the flush.
            let since = last.elapsed();
            if since < EVERY {
                glommio::timer::sleep(EVERY - since).await;
            } else {
                glommio::yield_if_needed().await;
                futures_lite::future::yield_now().await;
            }
            last = Instant::now();
            self.flush_chats();
        }
    }

    /// Queues the changed chat rows, the last carrying this flush's token, then one barrier
    /// per delivery waiting for it: the queue is FIFO, so each barrier commits with or after
    /// the rows.
    fn flush_chats(&self) {
        let mut out = Vec::new();
        self.state.borrow_mut().flush_chats(&mut out);
        let n = self.flushes.get() + 1;
        self.flushes.set(n);
        self.write(
            out,
            Some(Ack {
                shard: self.id,
                token: FLUSH | n,
            }),
        );
        let waiting = std::mem::take(&mut *self.after_flush.borrow_mut());
        for ack in waiting {
            self.write(Vec::new(), Some(ack));
        }
    }

    /// A chat flush committed: the replies that waited for it go out.
    fn flush_committed(&self, n: u64) {
        if n <= self.flushes_committed.get() {
            return;
        }
        self.flushes_committed.set(n);
        let ready = {
            let mut parked = self.parked.borrow_mut();
            let later = parked.split_off(&(n + 1));
            std::mem::replace(&mut *parked, later)
        };
        for p in ready.into_values().flatten() {
            self.release(p);
        }
    }

    pub fn overflow_len(&self) -> usize {
        self.overflow.borrow().len()
    }

    /// Registers a reply to send once a record carrying the returned [`Ack`] has committed.
    pub fn defer_reply(
        &self,
        conn: &Conn,
        frame: impl Into<Cow<'static, [u8]>>,
        started: Instant,
        kind: &'static str,
    ) -> Ack {
        let token = self.token();
        conn.deferred.set(conn.deferred.get() + 1);
        // Chat rows changed and not yet queued belong to the next flush; the reply waits for it.
        let flush = if self.state.borrow().has_dirty_chats() {
            self.flushes.get() + 1
        } else {
            0
        };
        self.acks.borrow_mut().insert(
            token,
            PendingAck {
                conn: conn.id,
                frame: frame.into(),
                started,
                kind,
                flush,
            },
        );
        Ack {
            shard: self.id,
            token,
        }
    }

    /// Sends instead of a deferred reply: the change it waited for was refused.
    pub fn refuse_deferred(&self, token: u64, frame: impl FnOnce(&mut Vec<u8>, &'static str)) {
        let p = self.acks.borrow_mut().remove(&token);
        if let Some(p) = p {
            if let Some(c) = self.conn(p.conn) {
                c.deferred.set(c.deferred.get().saturating_sub(1));
                c.send(|out| frame(out, p.kind));
            }
        }
    }

    /// Sends deferred replies as the persistence thread acknowledges their records.
    pub async fn run_acks(self: Rc<Self>) {
        let mut tokens = Vec::new();
        loop {
            poll_fn(|cx| self.persist.acks(self.id).poll_drain(cx, &mut tokens)).await;
            for t in tokens.drain(..) {
                if t & FLUSH != 0 {
                    // A chat row the database refused was logged by the persistence thread;
                    // the flush is over either way.
                    self.flush_committed(t & !(FLUSH | corechat_persist::queue::REFUSED));
                    continue;
                }
                if t & corechat_persist::queue::REFUSED != 0 {
                    // The database refused the change for good; the client must not be told
                    // it succeeded.
                    self.refuse_deferred(t & !corechat_persist::queue::REFUSED, |out, kind| {
                        write_frame(out, &Status::error(kind, "the change could not be stored"));
                    });
                    continue;
                }
                let Some(p) = self.acks.borrow_mut().remove(&t) else {
                    continue;
                };
                if p.flush > self.flushes_committed.get() {
                    self.parked.borrow_mut().entry(p.flush).or_default().push(p);
                } else {
                    self.release(p);
                }
            }
        }
    }

    /// Sends a reply whose changes are all durable.
    fn release(&self, p: PendingAck) {
        self.metrics.record_service(p.kind, p.started.elapsed());
        if let Some(c) = self.conn(p.conn) {
            c.deferred.set(c.deferred.get().saturating_sub(1));
            let frame = p.frame;
            c.send(|out| out.extend_from_slice(&frame));
        }
    }

    /// Replies still waiting for a commit (shutdown waits for them).
    pub fn pending_acks(&self) -> usize {
        self.acks.borrow().len() + self.parked.borrow().values().map(Vec::len).sum::<usize>()
    }

    // ----- calls to other shards -----

    /// Asks the shard owning a user; answered locally when that is this shard.
    pub async fn call(&self, owner: usize, op: CallOp) -> CallReply {
        if owner == self.id {
            return self.answer(op);
        }
        let Some(mesh) = self.mesh.get() else {
            return CallReply::Busy;
        };
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        self.calls.borrow_mut().insert(token, tx);
        mesh.send(
            owner,
            MeshMsg::Call {
                from: self.id,
                token,
                op,
            },
        )
        .await;
        rx.await.unwrap_or(CallReply::Busy)
    }

    /// Answers a call about one of this shard's users.
    fn answer(&self, op: CallOp) -> CallReply {
        match op {
            CallOp::Lookup { user_id } => CallReply::Profile(
                self.state
                    .borrow()
                    .user(&user_id)
                    .map(|u| (*u.profile).clone()),
            ),
            CallOp::Credentials { user_id } => {
                CallReply::Credentials(self.state.borrow().credentials(&user_id))
            }
            CallOp::Register { user, ack } => {
                if !self.admit() {
                    return CallReply::Busy;
                }
                let profile = Profile::from_row(&user);
                let mut out = Vec::new();
                let r = self.state.borrow_mut().register(user, &mut out);
                match r {
                    Ok(()) => {
                        self.write(out, Some(ack));
                        CallReply::Done(Ok(profile))
                    }
                    Err(e) => CallReply::Done(Err(e.to_string())),
                }
            }
            CallOp::FriendRequest { from, to, created } => {
                if !self.admit() {
                    return CallReply::Busy;
                }
                let mut out = Vec::new();
                let r = self
                    .state
                    .borrow_mut()
                    .receive_request(&to, &from, &created, &mut out);
                self.write(out, None);
                CallReply::Done(r.map_err(|e| e.to_string()))
            }
            CallOp::FriendAccept {
                acceptor,
                requester,
                mut greeting,
                started,
            } => {
                greeting.message_id = self.next_message_id();
                if !self.admit() {
                    return CallReply::Busy;
                }
                let mut out = Vec::new();
                let r = self
                    .state
                    .borrow_mut()
                    .accept(&requester, &acceptor, &greeting, 1, &mut out);
                match r {
                    Ok(profile) => {
                        self.write(out, None);
                        self.store_and_push(greeting, started);
                        CallReply::Done(Ok(profile))
                    }
                    Err(e) => CallReply::Done(Err(e.to_string())),
                }
            }
            CallOp::FriendDelete { user, other } => {
                let mut out = Vec::new();
                self.state
                    .borrow_mut()
                    .remove_friend(&other, &user, &mut out);
                self.write(out, None);
                CallReply::Done(Ok(Profile::unknown(&other)))
            }
        }
    }

    // ----- messages -----

    /// Hands a chat message to its receiver, one of this shard's users. Its row is pushed
    /// with `ack`, so the sender hears `success` once the row is durable.
    pub fn deliver(&self, mut msg: MessageRow, ack: Ack, started: Instant) {
        // Ids come from the receiver's shard, so one receiver's messages are numbered in the
        // order they arrived: that is the order the offline queue is reloaded in.
        msg.message_id = self.next_message_id();
        self.prune_sessions(&msg.receiver_id);
        let mut out = Vec::new();
        // The row moves into its record; the live copy is written from there (no clone of
        // the message per delivery).
        let r = self.state.borrow_mut().deliver(msg, &mut out);
        self.chats_touched();
        match r {
            Ok(d) => {
                let c = &self.metrics.counters;
                Counters::inc(match d.sessions.is_empty() {
                    true => &c.stored_offline,
                    false => &c.delivered_live,
                });
                self.push_live(&d.sessions, started, &mut out);
                // The sender's `success` goes behind the receiver's chat row (next flush);
                // a refusal of the message itself still reaches the sender.
                self.write_watched(out, ack);
                self.after_flush.borrow_mut().push(ack);
                self.chats_touched();
            }
            Err(e) => {
                let reason = e.to_string();
                if ack.shard == self.id {
                    self.refuse_send(ack.token, &reason);
                } else if let Some(mesh) = self.mesh.get() {
                    mesh.push(
                        ack.shard,
                        MeshMsg::DeliverRefused {
                            token: ack.token,
                            reason,
                        },
                    );
                }
            }
        }
    }

    /// Stores a message for its receiver without touching the chat list (the greeting of an
    /// accepted friend request) and writes it to the receiver's live connections.
    fn store_and_push(&self, msg: MessageRow, started: Instant) {
        self.prune_sessions(&msg.receiver_id);
        let mut out = Vec::new();
        let r = self.state.borrow_mut().store_message(msg, &mut out);
        if let Ok(d) = r {
            self.push_live(&d.sessions, started, &mut out);
            self.write(out, None);
        }
    }

    /// Writes `receive_message` to each live session; the message is the row of the last
    /// record in `out` (where `ShardState::store_message` puts it). If every session failed,
    /// the message waits for the next login instead (its records are appended to `out`).
    fn push_live(&self, sessions: &[ConnId], started: Instant, out: &mut Vec<WriteRecord>) {
        if sessions.is_empty() {
            return;
        }
        let Some(WriteRecord::InsertMessage(msg)) = out.last() else {
            // Not reachable: the caller has just stored the message. Writing nothing leaves
            // it `received` in the database, so say so rather than lose it silently.
            ftlog::error!("shard {}: no message row to deliver", self.id);
            return;
        };
        let reply = MessageReply::new("receive_message", msg);
        let mut written = 0;
        if let [only] = sessions {
            // The usual case: serialised straight into the connection's buffer.
            if let Some(c) = self.conn(*only) {
                if c.send(|o| write_frame(o, &reply)) {
                    written += 1;
                }
            }
        } else {
            let mut frame = Vec::with_capacity(256 + msg.body.len());
            write_frame(&mut frame, &reply);
            for s in sessions {
                if let Some(c) = self.conn(*s) {
                    if c.send(|o| o.extend_from_slice(&frame)) {
                        written += 1;
                    }
                }
            }
        }
        self.metrics.record_delivery(started.elapsed());
        if written == 0 {
            let msg = msg.clone();
            self.state.borrow_mut().requeue(msg, out);
        }
    }

    /// Drops sessions whose connection has closed, so a message is never counted as
    /// delivered to a dead connection.
    fn prune_sessions(&self, user: &str) {
        let dead: Vec<ConnId> = self
            .state
            .borrow()
            .sessions(user)
            .iter()
            .copied()
            .filter(|c| self.conn(*c).is_none_or(|c| c.is_closed()))
            .collect();
        for c in dead {
            self.state.borrow_mut().remove_session(user, c);
        }
    }

    /// Answers a `send_message` whose delivery was refused.
    pub fn refuse_send(&self, token: u64, reason: &str) {
        self.refuse_deferred(token, |out, kind| {
            write_frame(out, &Status::error(kind, reason));
        });
    }

    // ----- the mesh -----

    /// Handles one message from another shard. Never waits: see `shards::mesh`. `mesh` is
    /// passed in because a peer may talk before this shard's `set_mesh` has run.
    pub fn on_mesh(self: &Rc<Self>, mesh: &Rc<Mesh<MeshMsg>>, _from: usize, msg: MeshMsg) {
        let _ = self.mesh.set(mesh.clone());
        match msg {
            MeshMsg::Deliver {
                msg,
                ack,
                started,
                sent,
            } => {
                self.metrics.record_hop(sent.elapsed());
                self.deliver(msg, ack, started);
            }
            MeshMsg::DeliverRefused { token, reason } => self.refuse_send(token, &reason),
            MeshMsg::Call { from, token, op } => {
                let reply = self.answer(op);
                mesh.push(from, MeshMsg::Reply { token, reply });
            }
            MeshMsg::Reply { token, reply } => {
                if let Some(tx) = self.calls.borrow_mut().remove(&token) {
                    let _ = tx.send(reply);
                }
            }
            MeshMsg::Handoff(h) => {
                let shard = self.clone();
                glommio::spawn_local(async move { shard.adopt(*h).await }).detach();
            }
        }
    }

    /// Takes over a connection that logged in on another shard as one of this shard's users.
    async fn adopt(self: Rc<Self>, h: Handoff) {
        // SAFETY: the descriptor is an open TCP socket that this message owned alone.
        let stream = unsafe { TcpStream::from_raw_fd(h.fd.into_raw_fd()) };
        let conn = self.add_conn(stream, h.peer, false);
        self.complete_login(&conn, &h.user_id, h.rehash, h.remember, h.started);
        crate::dispatch::serve(self.clone(), conn, h.leftover).await;
    }

    /// Finishes a login on the owning shard: stores a rehashed legacy password, remembers the
    /// credential, opens the session and answers the client.
    pub fn complete_login(
        &self,
        conn: &Rc<Conn>,
        user_id: &str,
        rehash: Option<String>,
        remember: Option<corechat_shards::state::Remembered>,
        started: Instant,
    ) {
        if let Some(hash) = rehash {
            let mut out = Vec::new();
            self.state
                .borrow_mut()
                .set_password(user_id, hash, &mut out);
            self.write(out, None);
        }
        if let Some(r) = remember {
            self.state.borrow_mut().remember(user_id, r);
        }
        self.prune_sessions(user_id);
        let r = self
            .state
            .borrow_mut()
            .add_session(user_id, conn.id, self.cfg.max_sessions);
        match r {
            Ok(()) => {
                Counters::inc(&self.metrics.counters.logins);
                *conn.user.borrow_mut() = Some(Rc::from(user_id));
                self.anon.borrow_mut().remove(conn.id);
                conn.set_keepalive(self.cfg.keepalive);
                let state = self.state.borrow();
                if let Some(u) = state.user(user_id) {
                    let p = u.profile.clone();
                    conn.send(|out| {
                        write_frame(out, &[crate::protocol::ProfileReply::new("login", &p)])
                    });
                }
                ftlog::debug!(
                    "{} logged in from {} on shard {}",
                    user_id,
                    conn.peer,
                    self.id
                );
            }
            Err(e) => {
                // Still not logged in: it counts as anonymous here (an adopted connection
                // was not tracked yet).
                let victim = self
                    .anon
                    .borrow_mut()
                    .add(conn.id, conn.peer.ip(), Instant::now());
                if let Some(c) = victim.and_then(|v| self.conn(v)) {
                    c.close(CloseReason::Evicted);
                }
                let m = e.to_string();
                conn.send(|out| write_frame(out, &[Status::error("login", &m)]));
            }
        }
        self.metrics.record_service("login", started.elapsed());
    }

    /// Sends a connection to the shard that owns its user, once every frame queued for it
    /// has been written. `leftover` is what was read past the login frame; it is given back
    /// if the connection could not be moved (say, no descriptor left for the duplicate), and
    /// the connection then stays here, not logged in.
    pub async fn hand_off(
        &self,
        conn: &Rc<Conn>,
        owner: usize,
        leftover: Vec<u8>,
        make: impl FnOnce(std::os::fd::OwnedFd) -> Handoff,
    ) -> Result<(), Vec<u8>> {
        let Some(mesh) = self.mesh.get() else {
            return Err(leftover);
        };
        match conn.hand_off().await {
            Ok(fd) => {
                let mut h = make(fd);
                h.leftover = leftover;
                Counters::inc(&self.metrics.counters.handoffs);
                mesh.send(owner, MeshMsg::Handoff(Box::new(h))).await;
                Ok(())
            }
            Err(e) => {
                ftlog::warn!(
                    "shard {}: cannot move {} to shard {owner}: {e}",
                    self.id,
                    conn.peer
                );
                Err(leftover)
            }
        }
    }

    /// A reply to `add_friend`/`accept_friend`/`delete_friend`.
    pub fn pair_frame(
        kind: &str,
        status: &str,
        user: &str,
        friend: &str,
        message: Option<&str>,
    ) -> Vec<u8> {
        let mut f = Vec::new();
        write_frame(
            &mut f,
            &PairReply {
                kind,
                status,
                user_id: user,
                friend_id: friend,
                message,
            },
        );
        f
    }
}
