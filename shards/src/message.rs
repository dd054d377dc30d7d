//! The messages that cross the mesh between shards.
//!
//! Each one is a complete, owned value (`Send`), because it leaves one core's memory for
//! another's. Requests that need an answer carry the asking shard and a token; the answer
//! comes back as [`MeshMsg::Reply`] with the same token.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Instant;

use corechat_persist::model::{MessageRow, UserRow};
use corechat_persist::Ack;

use crate::state::{Credentials, Profile, Remembered};

#[derive(Debug)]
pub enum MeshMsg {
    /// A chat message for a user the receiving shard owns. Once its row is committed the
    /// persistence thread acknowledges `ack` to the sender's shard.
    Deliver {
        msg: MessageRow,
        ack: Ack,
        /// When the sender's frame was decoded, for the end-to-end latency histogram.
        started: Instant,
        /// When it entered the mesh, for the hop histogram.
        sent: Instant,
    },
    /// The receiver's shard refused a [`MeshMsg::Deliver`]: the token of its `ack`.
    DeliverRefused {
        token: u64,
        reason: String,
    },
    /// A question for the shard that owns some user.
    Call {
        from: usize,
        token: u64,
        op: CallOp,
    },
    Reply {
        token: u64,
        reply: CallReply,
    },
    /// A logged-in connection moving to the shard that owns its user.
    Handoff(Box<Handoff>),
}

/// Operations one shard asks of the owner of another user.
#[derive(Debug)]
pub enum CallOp {
    /// The public profile of `user_id`.
    Lookup { user_id: String },
    /// Profile and stored password of `user_id`, for a login.
    Credentials { user_id: String },
    /// Create a user (the password already hashed); `ack` is acknowledged once it is stored.
    Register { user: UserRow, ack: Ack },
    /// `from` asks `to` to be friends.
    FriendRequest {
        from: Profile,
        to: String,
        created: String,
    },
    /// `acceptor` accepts the request of `requester`; `greeting` goes from acceptor to requester.
    FriendAccept {
        acceptor: Profile,
        requester: String,
        greeting: MessageRow,
        started: Instant,
    },
    /// `user` ends the friendship with `other` (who the receiving shard owns).
    FriendDelete { user: String, other: String },
}

#[derive(Debug)]
pub enum CallReply {
    Profile(Option<Profile>),
    Credentials(Option<Credentials>),
    /// The outcome of a change: the other user's profile, or the reason it was refused.
    Done(Result<Profile, String>),
    /// The persistence queue is full: try later.
    Busy,
}

/// Everything the owning shard needs to adopt a connection that logged in elsewhere.
#[derive(Debug)]
pub struct Handoff {
    /// A duplicate of the connection's descriptor; closed if the message is dropped.
    pub fd: OwnedFd,
    pub peer: SocketAddr,
    pub user_id: String,
    /// Bytes the old shard had read past the login frame.
    pub leftover: Vec<u8>,
    /// A new hash to store in place of a legacy plaintext password.
    pub rehash: Option<String>,
    /// The digest of the password that just verified, for the credential cache.
    pub remember: Option<Remembered>,
    /// When the login frame was decoded, for the latency histogram.
    pub started: Instant,
}
