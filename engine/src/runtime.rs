//! Starting and stopping the server: load the store, start the persistence thread, the
//! password pool and one pinned executor per shard, and on SIGTERM stop in the order that
//! loses nothing.
//!
//! Stop order: shards stop accepting and reading; requests in progress finish and the replies
//! that wait on commits go out; once every shard is there (they keep answering each other
//! meanwhile), connections close after their last bytes and the mesh goes away; then the
//! persistence thread drains the queue, commits and exits; then the process exits 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use corechat_persist::{BatchConfig, Loaded, PersistQueue, StoreConfig};
use corechat_shards::state::Profile;
use corechat_shards::{shard_of, Mesh, MeshMsg, ShardState};

use crate::admin::Admin;
use crate::auth::Auth;
use crate::config::Config;
use crate::connection::CloseReason;
use crate::metrics::Registry;
use crate::shard::{Shard, ShardInit};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Store(#[from] corechat_persist::PersistError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {what}: {source}")]
    Start {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("shard {0} failed: {1}")]
    Shard(usize, String),
}

/// A running server, for the binary and for tests that embed it.
pub struct Server {
    pub addr: SocketAddr,
    /// Where `/metrics` and `/latency` are served, unless the admin listener is off.
    pub admin_addr: Option<SocketAddr>,
    admin: Option<Admin>,
    reporter: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    shards: Vec<glommio::ExecutorJoinHandle<Result<(), String>>>,
    persist: PersistQueue,
    persist_thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Loads the store and starts every thread; returns once all shards accept connections.
    pub fn start(cfg: Config) -> Result<Server, ServerError> {
        raise_fd_limit();
        let store = match &cfg.database {
            Some(url) => StoreConfig::Mysql {
                url: url.clone(),
                writers: cfg.db_writers,
            },
            None => StoreConfig::Sqlite {
                dir: cfg.data_dir.clone(),
            },
        };
        let mut backend = corechat_persist::open(&store)?;
        let t0 = Instant::now();
        let n = cfg.shards;
        let mut states: Vec<ShardState> = (0..n).map(|_| ShardState::new()).collect();
        let mut profiles: HashMap<String, Profile> = HashMap::new();
        let summary = backend.load(&mut |item| match item {
            Loaded::User(u) => {
                profiles.insert(u.user_id.clone(), Profile::from_row(&u));
                states[shard_of(&u.user_id, n)].load_user(u);
            }
            Loaded::Relation(r) => {
                let peer = profiles.get(&r.friend_id);
                states[shard_of(&r.user_id, n)].load_relation(r, peer);
            }
            Loaded::Chat(c) => {
                let peer = profiles.get(&c.comm_id);
                states[shard_of(&c.user_id, n)].load_chat(c, peer);
            }
            Loaded::Undelivered(m) => states[shard_of(&m.receiver_id, n)].load_undelivered(m),
        })?;
        drop(profiles);
        ftlog::info!(
            "loaded {} users, {} relations, {} chat rows, {} undelivered messages from {} in {:?}",
            summary.users,
            summary.relations,
            summary.chats,
            summary.undelivered,
            backend.describe(),
            t0.elapsed()
        );
        let store_name = backend.describe();

        let (fds, addr) =
            crate::listener::bind_all(cfg.listen, n, cfg.backlog).map_err(|source| {
                ServerError::Listen {
                    addr: cfg.listen,
                    source,
                }
            })?;

        let queue = PersistQueue::new(cfg.queue_capacity, n);
        let persist_thread = corechat_persist::spawn(
            backend,
            queue.clone(),
            BatchConfig {
                max_batch: cfg.batch_size,
                linger: cfg.batch_linger,
                ..BatchConfig::default()
            },
        )
        .map_err(|source| ServerError::Start {
            what: "the persistence thread",
            source,
        })?;
        // Room for a storm of logins as large as the connections this machine can hold (a
        // job is two short strings and a channel: ~200 bytes); beyond it, `server busy`.
        let auth = Auth::start(
            cfg.auth_threads,
            64 * 1024,
            cfg.argon2_memory_kib,
            cfg.argon2_passes,
            cfg.credential_cache_ttl,
        )
        .map_err(|source| ServerError::Start {
            what: "the password threads",
            source,
        })?;

        let registry = Arc::new(Registry::new(n, queue.clone()));
        let admin = match cfg.admin {
            Some(a) => Some(
                Admin::start(a, registry.clone())
                    .map_err(|source| ServerError::Listen { addr: a, source })?,
            ),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let reporter = match cfg.report_interval {
            Some(every) => Some(
                crate::admin::spawn_reporter(every, registry.clone(), stop.clone()).map_err(
                    |source| ServerError::Start {
                        what: "the latency reporter",
                        source,
                    },
                )?,
            ),
            None => None,
        };
        let mesh: MeshBuilder<MeshMsg, _> = MeshBuilder::full(n, cfg.mesh_capacity);
        // Shutdown barriers: shards that have drained their own work, and that have closed
        // their connections (see `run_shard`).
        let (drained, exited) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let cpus = crate::config::usable_cores();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, String>>();
        let mut handles = Vec::with_capacity(n);
        for (id, (state, fd)) in states.into_iter().zip(fds).enumerate() {
            let init = ShardInit {
                id,
                shards: n,
                cfg: cfg.clone(),
                state,
                persist: queue.clone(),
                auth: auth.clone(),
                max_message_id: summary.max_message_id,
                registry: registry.clone(),
            };
            let placement = if cfg.pin {
                Placement::Fixed(id % cpus)
            } else {
                Placement::Unbound
            };
            let (mesh, stop, ready) = (mesh.clone(), stop.clone(), ready_tx.clone());
            let barriers = (drained.clone(), exited.clone());
            let h = LocalExecutorBuilder::new(placement)
                .name(&format!("corechat-shard-{id}"))
                .spawn(move || run_shard(init, mesh, fd, stop, barriers, ready))
                .map_err(|e| ServerError::Start {
                    what: "a shard executor",
                    source: std::io::Error::other(e.to_string()),
                })?;
            handles.push(h);
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    stop.store(true, Ordering::Release);
                    return Err(ServerError::Shard(0, e));
                }
                Err(_) => {
                    stop.store(true, Ordering::Release);
                    return Err(ServerError::Shard(0, "exited before it was ready".into()));
                }
            }
        }
        ftlog::info!("serving {addr} with {n} shards on {store_name}");
        Ok(Server {
            addr,
            admin_addr: admin.as_ref().map(|a| a.addr),
            admin,
            reporter,
            stop,
            shards: handles,
            persist: queue,
            persist_thread: Some(persist_thread),
        })
    }

    /// A flag that, once set, stops the server (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Waits until the stop flag is set and the shards and the persistence thread have
    /// finished, in that order.
    pub fn wait(mut self) -> Result<(), ServerError> {
        let mut failed = None;
        for (i, h) in self.shards.drain(..).enumerate() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(ServerError::Shard(i, e)),
                Err(e) => failed = Some(ServerError::Shard(i, e.to_string())),
            }
        }
        self.persist.close();
        if let Some(t) = self.persist_thread.take() {
            let _ = t.join();
        }
        if let Some(a) = self.admin.take() {
            a.stop();
        }
        if let Some(r) = self.reporter.take() {
            let _ = r.join();
        }
        ftlog::info!("stopped; every queued record was written");
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops the server and waits for it.
    pub fn shutdown(self) -> Result<(), ServerError> {
        self.stop.store(true, Ordering::Release);
        self.wait()
    }
}

/// The body of one shard's executor.
async fn run_shard(
    init: ShardInit,
    mesh: MeshBuilder<MeshMsg, glommio::channels::channel_mesh::Full>,
    fd: OwnedFd,
    stop: Arc<AtomicBool>,
    (drained, exited): (Arc<AtomicUsize>, Arc<AtomicUsize>),
    ready: std::sync::mpsc::Sender<Result<usize, String>>,
) -> Result<(), String> {
    let id = init.id;
    let high_water = init.cfg.mesh_capacity;
    let shard = Shard::new(init);
    let weak = Rc::downgrade(&shard);
    let joined = Mesh::join(mesh, high_water, move |mesh, from, msg| {
        if let Some(s) = weak.upgrade() {
            s.on_mesh(mesh, from, msg);
        }
    })
    .await;
    let mesh = match joined {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return Err(e.to_string());
        }
    };
    shard.set_mesh(mesh.clone());
    glommio::spawn_local(shard.clone().run_acks()).detach();
    glommio::spawn_local(shard.clone().run_overflow()).detach();
    glommio::spawn_local(shard.clone().run_chat_flush()).detach();
    glommio::spawn_local(sweep_anonymous(shard.clone())).detach();
    glommio::spawn_local(shard.clone().run_publisher()).detach();

    // SAFETY: a bound, listening TCP socket that this shard owns alone.
    let listener =
        unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd.into_raw_fd()) };
    let accept = glommio::spawn_local(accept_loop(shard.clone(), listener));
    let _ = ready.send(Ok(id));

    while !stop.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    shard.stop();
    accept.cancel().await;
    let conns: Vec<_> = shard.conns.borrow().values().cloned().collect();
    for c in &conns {
        c.stop_reading();
    }

    // 1. Requests in progress finish (they may wait on other shards, whose mesh receivers
    //    keep running), and their replies that wait for a commit go out.
    let deadline = Instant::now() + Duration::from_secs(30);
    let busy = |s: &Shard| {
        s.inflight.get() > 0 || s.pending_acks() > 0 || s.overflow_len() > 0 || s.flush_due()
    };
    while busy(&shard) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    // 2. Every shard has reached that point before any mesh goes away: until then this shard
    //    keeps answering the others (deliveries, calls) and queuing their records.
    drained.fetch_add(1, Ordering::AcqRel);
    while drained.load(Ordering::Acquire) < shard.shards && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    while busy(&shard) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    // 3. Close the connections once what is queued for them is written.
    let conns: Vec<_> = shard.conns.borrow().values().cloned().collect();
    for c in &conns {
        c.close(CloseReason::Shutdown);
    }
    let flush_deadline = Instant::now() + Duration::from_secs(2);
    for c in &conns {
        while c.pending_bytes() > 0 && Instant::now() < flush_deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }
    exited.fetch_add(1, Ordering::AcqRel);
    while exited.load(Ordering::Acquire) < shard.shards && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    mesh.close();
    shard.publish();
    if shard.overflow_len() > 0 {
        return Err(format!(
            "{} records could not be queued before the deadline",
            shard.overflow_len()
        ));
    }
    Ok(())
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let mut limited_since: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if limited_since.take().is_some() {
                    ftlog::info!("shard {}: accepting connections again", shard.id);
                }
                let _ = stream.set_nodelay(true);
                let peer = match stream.peer_addr() {
                    Ok(p) => p,
                    Err(_) => continue,
                };
                let conn = shard.add_conn(stream, peer, true);
                let s = shard.clone();
                glommio::spawn_local(crate::dispatch::serve(s, conn, Vec::new())).detach();
            }
            Err(e) => {
                let raw = match &e {
                    glommio::GlommioError::IoError(io) => io.raw_os_error(),
                    _ => None,
                };
                if matches!(
                    raw,
                    Some(libc::EMFILE)
                        | Some(libc::ENFILE)
                        | Some(libc::ENOMEM)
                        | Some(libc::ENOBUFS)
                ) {
                    // Out of descriptors: keep serving the connections we have, and try
                    // again shortly rather than spin on a listener that stays readable.
                    if limited_since.is_none() {
                        ftlog::warn!(
                            "shard {}: cannot accept ({e}); serving existing connections and retrying",
                            shard.id
                        );
                        limited_since = Some(Instant::now());
                    }
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                } else {
                    ftlog::debug!("shard {}: accept failed: {e}", shard.id);
                }
            }
        }
    }
}

/// Closes connections that stayed anonymous and idle past the timeout.
async fn sweep_anonymous(shard: Rc<Shard>) {
    let timeout = shard.cfg.anonymous_idle_timeout;
    let every = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        glommio::timer::sleep(every).await;
        let idle = shard.anon.borrow().idle(Instant::now(), timeout);
        for id in idle {
            if let Some(c) = shard.conn(id) {
                ftlog::debug!(
                    "closing anonymous connection from {} idle for {:?}",
                    c.peer,
                    timeout
                );
                c.close(CloseReason::IdleTimeout);
            }
            shard.anon.borrow_mut().remove(id);
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every connection is one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read a plain struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
