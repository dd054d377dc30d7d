//! The channel mesh between shards, wrapped so that it can neither drop nor deadlock.
//!
//! glommio's full mesh gives every ordered pair of executors a bounded SPSC channel. A full
//! channel makes `send_to` wait, which is the back-pressure we want, but two shards that
//! each wait to send to the other while neither drains its receivers hang forever. So:
//!
//! * Receiving never waits on sending. Each peer's receiver is drained by its own task that
//!   hands every message to a synchronous handler; whatever the handler wants to send (a
//!   reply, a delivery) is appended to a local outbox with [`Mesh::push`], which never waits.
//! * Each peer has one sender task that moves its outbox into the channel, waiting while the
//!   channel is full. Only that task ever waits on the channel.
//! * Back-pressure is applied where traffic starts: a connection that originates a message
//!   uses [`Mesh::send`], which waits while the outbox to that peer is above its high-water
//!   mark. Replies and deliveries caused by received messages are bounded by the requests
//!   that caused them, so the outboxes stay bounded without ever blocking a receiver.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};

/// Counters of one shard's mesh traffic.
#[derive(Debug, Default)]
pub struct MeshStats {
    pub sent: Cell<u64>,
    pub received: Cell<u64>,
    /// How often an originating sender had to wait for outbox space.
    pub waited: Cell<u64>,
}

/// One shard's end of the mesh.
pub struct Mesh<T: Send + 'static> {
    me: usize,
    peers: usize,
    high_water: usize,
    outbox: Vec<RefCell<VecDeque<T>>>,
    sender_waker: Vec<Cell<Option<Waker>>>,
    space_waiters: Vec<RefCell<Vec<Waker>>>,
    closed: Cell<bool>,
    pub stats: MeshStats,
}

impl<T: Send + 'static> Mesh<T> {
    /// Joins the mesh (all shards must call this with clones of the same builder), then
    /// starts the sender and receiver tasks on the current executor. `handler(mesh, from,
    /// msg)` is called for every received message and must not block; it gets the mesh so it
    /// can answer even before `join` has returned (a peer may already be talking).
    pub async fn join<H>(
        builder: MeshBuilder<T, Full>,
        high_water: usize,
        handler: H,
    ) -> Result<Rc<Self>, MeshError>
    where
        H: Fn(&Rc<Mesh<T>>, usize, T) + 'static,
    {
        let (senders, mut receivers): (Senders<T>, Receivers<T>) =
            builder.join().await.map_err(|_| MeshError::Join)?;
        let me = senders.peer_id();
        let peers = senders.nr_consumers();
        let mesh = Rc::new(Mesh {
            me,
            peers,
            high_water: high_water.max(1),
            outbox: (0..peers).map(|_| RefCell::new(VecDeque::new())).collect(),
            sender_waker: (0..peers).map(|_| Cell::new(None)).collect(),
            space_waiters: (0..peers).map(|_| RefCell::new(Vec::new())).collect(),
            closed: Cell::new(false),
            stats: MeshStats::default(),
        });
        let senders = Rc::new(senders);
        for peer in 0..peers {
            if peer == me {
                continue;
            }
            let (m, s) = (mesh.clone(), senders.clone());
            glommio::spawn_local(async move { m.run_sender(peer, s).await }).detach();
        }
        let handler = Rc::new(handler);
        for (peer, rx) in receivers.streams() {
            let (m, h) = (mesh.clone(), handler.clone());
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    m.stats.received.set(m.stats.received.get() + 1);
                    h(&m, peer, msg);
                }
            })
            .detach();
        }
        Ok(mesh)
    }

    /// This shard's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.peers
    }

    /// Queues `msg` for shard `to` without waiting. For replies and for work caused by a
    /// received message.
    pub fn push(&self, to: usize, msg: T) {
        if to == self.me || to >= self.peers {
            ftlog::error!(
                "mesh: dropping a message addressed to shard {to} from shard {}",
                self.me
            );
            return;
        }
        self.outbox[to].borrow_mut().push_back(msg);
        if let Some(w) = self.sender_waker[to].take() {
            w.wake();
        }
    }

    /// Queues `msg` for shard `to`, first waiting while that outbox is above its high-water
    /// mark. For traffic a client originates.
    pub async fn send(&self, to: usize, msg: T) {
        if to < self.peers && self.outbox[to].borrow().len() >= self.high_water {
            self.stats.waited.set(self.stats.waited.get() + 1);
            poll_fn(|cx| {
                if self.closed.get() || self.outbox[to].borrow().len() < self.high_water {
                    Poll::Ready(())
                } else {
                    self.space_waiters[to].borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
        }
        self.push(to, msg);
    }

    /// Messages waiting in the outboxes (not yet in a channel).
    pub fn backlog(&self) -> usize {
        self.outbox.iter().map(|q| q.borrow().len()).sum()
    }

    /// Stops the sender tasks once their outboxes are empty.
    pub fn close(&self) {
        self.closed.set(true);
        for w in &self.sender_waker {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
        for ws in &self.space_waiters {
            for w in ws.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    async fn run_sender(self: Rc<Self>, peer: usize, senders: Rc<Senders<T>>) {
        loop {
            let next = poll_fn(|cx| {
                if let Some(m) = self.outbox[peer].borrow_mut().pop_front() {
                    return Poll::Ready(Some(m));
                }
                if self.closed.get() {
                    return Poll::Ready(None);
                }
                self.sender_waker[peer].set(Some(cx.waker().clone()));
                Poll::Pending
            })
            .await;
            let Some(msg) = next else { break };
            let sent = match senders.try_send_to(peer, msg) {
                Ok(()) => Ok(()),
                Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(msg))) => {
                    senders.send_to(peer, msg).await.map_err(|_| ())
                }
                Err(_) => Err(()),
            };
            if sent.is_err() {
                ftlog::error!(
                    "mesh: channel from shard {} to shard {peer} is closed",
                    self.me
                );
                break;
            }
            self.stats.sent.set(self.stats.sent.get() + 1);
            if self.outbox[peer].borrow().len() < self.high_water {
                for w in self.space_waiters[peer].borrow_mut().drain(..) {
                    w.wake();
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("could not join the channel mesh")]
    Join,
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorBuilder, Placement};
    use std::time::{Duration, Instant};

    /// Two shards flood each other through tiny channels while answering every message they
    /// receive with a reply: the pattern that hangs a naive mesh. Every message and every
    /// reply must arrive, within a bounded time.
    #[test]
    fn cross_traffic_through_tiny_channels_does_not_deadlock() {
        const N: u64 = 30_000;
        let builder: MeshBuilder<(bool, u64), Full> = MeshBuilder::full(2, 2);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..2 {
            let b = builder.clone();
            let done = done.clone();
            handles.push(
                LocalExecutorBuilder::new(Placement::Unbound)
                    .spawn(move || async move {
                        let got_req = Rc::new(Cell::new(0u64));
                        let got_rep = Rc::new(Cell::new(0u64));
                        let (gq, gp) = (got_req.clone(), got_rep.clone());
                        let mesh = Mesh::join(b, 4, move |m, from, (is_req, v)| {
                            if is_req {
                                gq.set(gq.get() + 1);
                                m.push(from, (false, v));
                            } else {
                                gp.set(gp.get() + 1);
                            }
                        })
                        .await
                        .unwrap();
                        let other = 1 - i;
                        for v in 0..N {
                            mesh.send(other, (true, v)).await;
                        }
                        let start = Instant::now();
                        while (got_req.get() < N || got_rep.get() < N)
                            && start.elapsed() < Duration::from_secs(60)
                        {
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                        let r = (got_req.get(), got_rep.get());
                        // The channels go away with the executors: wait for the peer too.
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        while done.load(std::sync::atomic::Ordering::SeqCst) < 2
                            && start.elapsed() < Duration::from_secs(60)
                        {
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                        mesh.close();
                        r
                    })
                    .unwrap(),
            );
        }
        for h in handles {
            assert_eq!(h.join().unwrap(), (N, N));
        }
    }
}
