//! Serving one connection: frames in, requests served in order, replies out.
//!
//! Before login only `register` and `login` are served. A successful login on a shard that
//! does not own the user moves the connection to the owner ([`Shard::hand_off`]); from then
//! on every request of that connection runs where its user's state lives, and `user_id` /
//! `send_id` must be the session's own.
//!
//! Replies to requests that change state (`register`, friend changes, `send_message`) are
//! deferred until the persistence thread has committed the change: a client told `success`
//! can rely on it surviving a crash.

use std::rc::Rc;
use std::time::Instant;

use corechat_persist::model::{MessageRow, MessageStatus, UserRow};
use corechat_persist::WriteRecord;
use corechat_shards::state::{Profile, GREETING};
use corechat_shards::{CallOp, CallReply, Handoff, MeshMsg};

use crate::auth::Verdict;
use crate::connection::{CloseReason, Conn};
use crate::frame::{FrameDecoder, FrameError};
use crate::metrics::Counters;
use crate::protocol::{
    self, now_timestamp, write_frame, BadRequest, ChatReply, FriendReply, MessageReply,
    OutgoingMessage, ProfileReply, RegisterReply, Request, Status,
};
use crate::shard::Shard;

const BUSY: &str = "server busy";

/// What the connection does after a request.
enum Flow {
    Continue,
    /// The connection now belongs to another shard.
    HandedOff,
}

/// Reads and serves one connection until it closes or moves to another shard.
pub async fn serve(shard: Rc<Shard>, conn: Rc<Conn>, leftover: Vec<u8>) {
    let mut dec = FrameDecoder::new(shard.cfg.max_frame);
    dec.extend(&leftover);
    'conn: loop {
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(body)) => protocol::parse(body, &shard.limits),
                Ok(None) => break,
                Err(e @ FrameError::TooLarge { .. }) => {
                    let m = e.to_string();
                    conn.send(|out| write_frame(out, &Status::error("error", &m)));
                    conn.close(CloseReason::BadFrame);
                    break 'conn;
                }
            };
            if conn.reading_stopped() {
                break 'conn;
            }
            let started = Instant::now();
            conn.last_active.set(started);
            if conn.user.borrow().is_none() {
                shard.anon.borrow_mut().touch(conn.id, started);
            }
            let flow = match frame {
                Ok(req) => {
                    shard.inflight.set(shard.inflight.get() + 1);
                    let f = Box::pin(handle(&shard, &conn, req, started, &mut dec)).await;
                    shard.inflight.set(shard.inflight.get() - 1);
                    f
                }
                Err(bad) => {
                    reply_bad(&shard, &conn, &bad);
                    Flow::Continue
                }
            };
            if let Flow::HandedOff = flow {
                shard.remove_conn(&conn);
                return;
            }
            if conn.is_closed() {
                break 'conn;
            }
        }
        dec.shrink_if_idle(4096);
        match conn.read_into(&mut dec, &shard.scratch).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => {
                conn.close(CloseReason::Error);
                break;
            }
        }
    }
    if conn.reading_stopped() && !conn.is_closed() {
        // Shutting down: the runtime closes the connection once its replies are out.
        return;
    }
    conn.close(CloseReason::PeerClosed);
    shard.remove_conn(&conn);
    ftlog::debug!(
        "connection from {} closed ({:?}) after {:?}",
        conn.peer,
        conn.close_reason(),
        conn.opened.elapsed()
    );
}

fn reply_bad(shard: &Shard, conn: &Conn, bad: &BadRequest) {
    Counters::inc(&shard.metrics.counters.bad_requests);
    conn.send(|out| write_frame(out, &Status::error(&bad.kind, &bad.message)));
}

fn reply_error(conn: &Conn, kind: &str, message: &str) {
    conn.send(|out| write_frame(out, &Status::error(kind, message)));
}

async fn handle(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    req: Request,
    started: Instant,
    dec: &mut FrameDecoder,
) -> Flow {
    let kind = req.kind();
    let session = conn.user_id();
    let Some(user) = session else {
        match req {
            Request::Register {
                phone,
                name,
                password,
            } => register(shard, conn, phone, name, password, started).await,
            Request::Login { user_id, password } => {
                return login(shard, conn, user_id, password, started, dec).await
            }
            _ => reply_error(conn, kind, "not logged in"),
        }
        return Flow::Continue;
    };
    if let Some(acting) = req.acting_user() {
        if acting != &*user {
            reply_error(conn, kind, "user_id does not match the logged-in user");
            return Flow::Continue;
        }
    }
    match req {
        Request::Register { .. } | Request::Login { .. } => {
            reply_error(conn, kind, "already logged in");
        }
        Request::GetUnreadMessages { .. } => get_unread(shard, conn, &user).await,
        Request::Chatting { .. } => chatting(shard, conn, &user),
        Request::Friends { .. } => friends(shard, conn, &user),
        Request::SearchUser { search_id, .. } => search(shard, conn, &search_id).await,
        Request::AddFriend { friend_id, .. } => {
            add_friend(shard, conn, &user, &friend_id, started).await
        }
        Request::AcceptFriend { friend_id, .. } => {
            accept_friend(shard, conn, &user, &friend_id, started).await
        }
        Request::DeleteFriend { friend_id, .. } => {
            delete_friend(shard, conn, &user, &friend_id, started).await
        }
        Request::SendMessage(m) => send_message(shard, conn, m, started).await,
        Request::UpdateChat { update, .. } => {
            let mut out = Vec::new();
            let r = shard
                .state
                .borrow_mut()
                .update_chat(&user, update, &mut out);
            match r {
                Ok(()) => {
                    shard.write(out, None);
                    conn.send(|o| write_frame(o, &Status::success("update_chat")));
                }
                Err(e) => reply_error(conn, kind, &e.to_string()),
            }
        }
    }
    if !matches!(
        kind,
        "add_friend" | "accept_friend" | "delete_friend" | "send_message"
    ) {
        shard.metrics.record_service(kind, started.elapsed());
    }
    Flow::Continue
}

// ----- before login -----

async fn register(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    phone: String,
    name: String,
    password: String,
    started: Instant,
) {
    let owner = shard.owner(&phone);
    let error = |m: &str| {
        conn.send(|o| {
            write_frame(
                o,
                &RegisterReply {
                    kind: "register",
                    status: "error",
                    user_id: &phone,
                    message: Some(m),
                },
            )
        });
    };
    // Refuse a taken id before paying for a password hash.
    if let CallReply::Profile(Some(_)) = shard
        .call(
            owner,
            CallOp::Lookup {
                user_id: phone.clone(),
            },
        )
        .await
    {
        return error(&format!("user {phone} already exists"));
    }
    if !shard.admit() {
        return error(BUSY);
    }
    let hash = match shard.auth.hash(password).await {
        Ok(h) => h,
        Err(e) => return error(&e.to_string()),
    };
    let user = UserRow {
        user_id: phone.clone(),
        password: hash,
        phone: phone.clone(),
        name,
        email: format!("{phone}@an.com"),
        avatar: "/default.jpg".to_string(),
        status: "inactive".to_string(),
        created: now_timestamp(),
    };
    let mut frame = Vec::new();
    write_frame(
        &mut frame,
        &RegisterReply {
            kind: "register",
            status: "success",
            user_id: &phone,
            message: None,
        },
    );
    let ack = shard.defer_reply(conn, frame, started, "register");
    match shard.call(owner, CallOp::Register { user, ack }).await {
        CallReply::Done(Ok(_)) => {}
        CallReply::Done(Err(m)) => refuse(shard, ack.token, &phone, &m),
        _ => refuse(shard, ack.token, &phone, BUSY),
    }
}

fn refuse(shard: &Shard, token: u64, phone: &str, message: &str) {
    shard.refuse_deferred(token, |o, _| {
        write_frame(
            o,
            &RegisterReply {
                kind: "register",
                status: "error",
                user_id: phone,
                message: Some(message),
            },
        )
    });
}

async fn login(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    user_id: String,
    password: String,
    started: Instant,
    dec: &mut FrameDecoder,
) -> Flow {
    let fail = |m: &str| {
        Counters::inc(&shard.metrics.counters.login_failures);
        conn.send(|o| write_frame(o, &[Status::error("login", m)]));
        shard.metrics.record_service("login", started.elapsed());
        Flow::Continue
    };
    // A register just before on this connection is answered first (and never lost by the
    // connection moving to another shard).
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while conn.deferred.get() > 0 && !conn.is_closed() && Instant::now() < deadline {
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
    let owner = shard.owner(&user_id);
    let creds = match shard
        .call(
            owner,
            CallOp::Credentials {
                user_id: user_id.clone(),
            },
        )
        .await
    {
        CallReply::Credentials(Some(c)) => c,
        CallReply::Credentials(None) => return fail("wrong user id or password"),
        _ => return fail(BUSY),
    };
    let cached = creds
        .remembered
        .is_some_and(|r| shard.auth.recall(&r, &user_id, &creds.password, &password));
    let rehash = if cached {
        None
    } else {
        match shard
            .auth
            .verify(creds.password.clone(), password.clone())
            .await
        {
            Ok(Verdict::Valid { rehash }) => rehash,
            Ok(Verdict::Invalid) => return fail("wrong user id or password"),
            Err(e) => return fail(&e.to_string()),
        }
    };
    let stored = rehash.as_deref().unwrap_or(&creds.password);
    let remember = if cached {
        None
    } else {
        shard.auth.remember(&user_id, stored, &password)
    };
    if owner == shard.id {
        shard.complete_login(conn, &user_id, rehash, remember, started);
        return Flow::Continue;
    }
    let handoff = |fd| Handoff {
        fd,
        peer: conn.peer,
        user_id: user_id.clone(),
        leftover: Vec::new(),
        rehash: rehash.clone(),
        remember,
        started,
    };
    match shard
        .hand_off(conn, owner, dec.take_remaining(), handoff)
        .await
    {
        Ok(()) => Flow::HandedOff,
        Err(leftover) => {
            // Not moved (out of descriptors, most likely): the login is not complete, so say
            // so; the client may try again on the same connection.
            dec.extend(&leftover);
            fail(BUSY)
        }
    }
}

// ----- reads -----

/// Most bytes of messages in one `get_unread_messages` frame: a large mailbox goes out as
/// several frames (the client handles each like the first).
const UNREAD_FRAME_BYTES: usize = 256 * 1024;

/// Hands over the offline queue, oldest first, in frames of bounded size, waiting for the
/// client to take each part before queuing more than half of `--max-outbound`. What could not
/// be written (the connection went away) stays queued for the next login.
async fn get_unread(shard: &Shard, conn: &Conn, user: &str) {
    let mut out = Vec::new();
    let msgs = shard.state.borrow_mut().take_undelivered(user, &mut out);
    shard.write(std::mem::take(&mut out), None);
    if msgs.is_empty() {
        conn.send(|o| {
            write_frame(
                o,
                &[Status::null("get_unread_messages", "no unread messages")],
            )
        });
        return;
    }
    let mut rest = msgs.as_slice();
    while !rest.is_empty() {
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|m| {
                bytes += 256 + m.body.len() + m.file_path.len();
                bytes <= UNREAD_FRAME_BYTES
            })
            .count()
            .max(1);
        if conn.pending_bytes() > shard.cfg.max_outbound / 2 {
            conn.flushed().await;
        }
        let replies: Vec<MessageReply> = rest[..n]
            .iter()
            .map(|m| MessageReply::new("get_unread_messages", m))
            .collect();
        if !conn.send(|o| write_frame(o, &replies)) {
            break;
        }
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        // The connection went away before these were written: keep them.
        shard
            .state
            .borrow_mut()
            .restore_undelivered(user, rest.to_vec(), &mut out);
        shard.write(out, None);
    }
}

fn chatting(shard: &Shard, conn: &Conn, user: &str) {
    let state = shard.state.borrow();
    let chats = state.chats(user);
    if chats.is_empty() {
        conn.send(|o| write_frame(o, &[Status::null("chatting", "no conversations")]));
        return;
    }
    let replies: Vec<ChatReply> = chats
        .iter()
        .map(|(c, comm)| ChatReply {
            kind: "chatting",
            status: "success",
            comm_id: comm,
            chat_type: &c.chat_type,
            last_message: &c.last_message,
            last_message_type: c.last_message_type.as_deref().unwrap_or(""),
            last_time: &c.last_time,
            unread_count: c.unread_count.to_string(),
            chat_status: &c.chat_status,
            user_name: &c.peer.name,
            user_avatar: &c.peer.avatar,
        })
        .collect();
    conn.send(|o| write_frame(o, &replies));
}

fn friends(shard: &Shard, conn: &Conn, user: &str) {
    let state = shard.state.borrow();
    let list = state.friends(user);
    if list.is_empty() {
        conn.send(|o| write_frame(o, &[Status::null("friends", "no friends")]));
        return;
    }
    let replies: Vec<FriendReply> = list
        .iter()
        .map(|(r, id)| FriendReply {
            kind: "friends",
            status: "success",
            user_id: id,
            user_phone: &r.peer.phone,
            user_name: &r.peer.name,
            user_email: &r.peer.email,
            user_avatar: &r.peer.avatar,
            user_status: &r.peer.status,
            user_created: &r.peer.created,
            friend_relation: r.relation.as_str(),
            created_relation: &r.created,
        })
        .collect();
    conn.send(|o| write_frame(o, &replies));
}

async fn search(shard: &Shard, conn: &Conn, search_id: &str) {
    let owner = shard.owner(search_id);
    let op = CallOp::Lookup {
        user_id: search_id.to_string(),
    };
    match shard.call(owner, op).await {
        CallReply::Profile(Some(p)) => {
            conn.send(|o| write_frame(o, &[ProfileReply::new("search_user", &p)]));
        }
        CallReply::Profile(None) => {
            conn.send(|o| write_frame(o, &[Status::null("search_user", "no such user")]));
        }
        _ => {
            conn.send(|o| write_frame(o, &[Status::error("search_user", BUSY)]));
        }
    }
}

// ----- changes -----

fn my_profile(shard: &Shard, user: &str) -> Option<Profile> {
    shard
        .state
        .borrow()
        .user(user)
        .map(|u| (*u.profile).clone())
}

fn pair_error(conn: &Conn, kind: &str, user: &str, friend: &str, m: &str) {
    conn.send(|o| {
        o.extend_from_slice(&Shard::pair_frame(kind, "error", user, friend, Some(m)));
    });
}

async fn add_friend(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    user: &str,
    friend: &str,
    started: Instant,
) {
    const K: &str = "add_friend";
    if let Err(e) = shard.state.borrow().check_add(user, friend) {
        return pair_error(conn, K, user, friend, &e.to_string());
    }
    let Some(me) = my_profile(shard, user) else {
        return pair_error(conn, K, user, friend, "no such user");
    };
    if !shard.admit() {
        return pair_error(conn, K, user, friend, BUSY);
    }
    let created = now_timestamp();
    let op = CallOp::FriendRequest {
        from: me,
        to: friend.to_string(),
        created: created.clone(),
    };
    match shard.call(shard.owner(friend), op).await {
        CallReply::Done(Ok(peer)) => {
            let mut out = Vec::new();
            shard
                .state
                .borrow_mut()
                .record_request(user, &peer, &created, &mut out);
            let frame = Shard::pair_frame(K, "success", user, friend, None);
            let ack = shard.defer_reply(conn, frame, started, K);
            shard.write(out, Some(ack));
        }
        CallReply::Done(Err(m)) => pair_error(conn, K, user, friend, &m),
        _ => pair_error(conn, K, user, friend, BUSY),
    }
}

async fn accept_friend(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    user: &str,
    requester: &str,
    started: Instant,
) {
    const K: &str = "accept_friend";
    if let Err(e) = shard.state.borrow().check_accept(user, requester) {
        return pair_error(conn, K, user, requester, &e.to_string());
    }
    let Some(me) = my_profile(shard, user) else {
        return pair_error(conn, K, user, requester, "no such user");
    };
    if !shard.admit() {
        return pair_error(conn, K, user, requester, BUSY);
    }
    // As the old server did: a greeting from the acceptor makes the chat visible to both.
    let greeting = MessageRow {
        // Numbered by the requester's shard, which stores it.
        message_id: 0,
        sender_id: user.to_string(),
        receiver_id: requester.to_string(),
        chat_type: "friend".to_string(),
        body: GREETING.to_string(),
        message_type: "text".to_string(),
        file_path: " ".to_string(),
        status: MessageStatus::Send,
        timestamp: now_timestamp(),
    };
    let op = CallOp::FriendAccept {
        acceptor: me,
        requester: requester.to_string(),
        greeting: greeting.clone(),
        started,
    };
    match shard.call(shard.owner(requester), op).await {
        CallReply::Done(Ok(peer)) => {
            let mut out = Vec::new();
            let r = shard
                .state
                .borrow_mut()
                .accept(user, &peer, &greeting, 0, &mut out);
            if let Err(e) = r {
                return pair_error(conn, K, user, requester, &e.to_string());
            }
            let frame = Shard::pair_frame(K, "success", user, requester, None);
            let ack = shard.defer_reply(conn, frame, started, K);
            shard.write(out, Some(ack));
        }
        CallReply::Done(Err(m)) => pair_error(conn, K, user, requester, &m),
        _ => pair_error(conn, K, user, requester, BUSY),
    }
}

async fn delete_friend(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    user: &str,
    friend: &str,
    started: Instant,
) {
    const K: &str = "delete_friend";
    let known = shard
        .state
        .borrow()
        .user(user)
        .is_some_and(|u| u.relations.contains_key(friend) || u.chats.contains_key(friend));
    if !known {
        return pair_error(conn, K, user, friend, "not friends");
    }
    if !shard.admit() {
        return pair_error(conn, K, user, friend, BUSY);
    }
    let op = CallOp::FriendDelete {
        user: user.to_string(),
        other: friend.to_string(),
    };
    let _ = shard.call(shard.owner(friend), op).await;
    let mut out = Vec::new();
    shard
        .state
        .borrow_mut()
        .remove_friend(user, friend, &mut out);
    out.push(WriteRecord::MarkConversationDeleted {
        a: user.to_string(),
        b: friend.to_string(),
    });
    let frame = Shard::pair_frame(K, "success", user, friend, None);
    let ack = shard.defer_reply(conn, frame, started, K);
    shard.write(out, Some(ack));
}

async fn send_message(shard: &Rc<Shard>, conn: &Rc<Conn>, m: OutgoingMessage, started: Instant) {
    const K: &str = "send_message";
    if let Err(e) = shard.state.borrow().check_send(&m.send_id, &m.receiver_id) {
        return reply_error(conn, K, &e.to_string());
    }
    if !shard.admit() {
        Counters::inc(&shard.metrics.counters.busy);
        return reply_error(conn, K, BUSY);
    }
    Counters::inc(&shard.metrics.counters.messages);
    let msg = MessageRow {
        // Numbered by the receiver's shard (see `Shard::deliver`).
        message_id: 0,
        sender_id: m.send_id,
        receiver_id: m.receiver_id,
        chat_type: m.chat_type,
        body: m.body,
        message_type: m.message_type,
        file_path: m.file_path,
        status: MessageStatus::Send,
        timestamp: m.timestamp,
    };
    shard.state.borrow_mut().note_sent(&msg);
    shard.chats_touched();
    let ack = shard.defer_reply(conn, protocol::send_message_success(), started, K);
    let owner = shard.owner(&msg.receiver_id);
    if owner == shard.id {
        shard.deliver(msg, ack, started);
    } else if let Some(mesh) = shard.mesh() {
        let sent = Instant::now();
        mesh.send(
            owner,
            MeshMsg::Deliver {
                msg,
                ack,
                started,
                sent,
            },
        )
        .await;
    }
}
