//! Where a user lives: the state one shard owns for its users.
//!
//! Everything here is plain single-threaded data, owned by one executor and never shared, so
//! it needs no locks. Each method checks a rule, changes memory and appends the write records
//! that make the change durable to `out`; the caller pushes them into the persistence queue.
//! Nothing here does I/O, which keeps the chat rules testable without a runtime.
//!
//! A user's relations and chat rows carry a snapshot of the other user's public profile
//! (profiles never change through the protocol), so listing friends or chats never has to ask
//! another shard. Snapshots are immutable and shared within the shard through `Arc` rather
//! than `Rc` only so that the state, built while loading on the main thread, can be moved to
//! its executor; no two cores ever share one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use corechat_persist::model::{ChatRow, MessageRow, MessageStatus, Relation, RelationRow, UserRow};
use corechat_persist::WriteRecord;

/// Identifies a live connection on this shard.
pub type ConnId = u64;

/// A user's public profile: what `login`, `search_user` and `friends` show. No password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub user_id: String,
    pub phone: String,
    pub name: String,
    pub email: String,
    pub avatar: String,
    pub status: String,
    pub created: String,
}

impl Profile {
    pub fn from_row(u: &UserRow) -> Self {
        Profile {
            user_id: u.user_id.clone(),
            phone: u.phone.clone(),
            name: u.name.clone(),
            email: u.email.clone(),
            avatar: u.avatar.clone(),
            status: u.status.clone(),
            created: u.created.clone(),
        }
    }

    /// A stand-in for a user the database no longer knows (legacy rows can point at one).
    pub fn unknown(user_id: &str) -> Self {
        Profile {
            user_id: user_id.to_string(),
            phone: String::new(),
            name: user_id.to_string(),
            email: String::new(),
            avatar: "/default.jpg".to_string(),
            status: "inactive".to_string(),
            created: String::new(),
        }
    }
}

/// One side of a friendship, as its owner sees it.
#[derive(Debug, Clone)]
pub struct RelationEntry {
    pub relation: Relation,
    pub created: String,
    pub requested_by: Option<String>,
    pub peer: Arc<Profile>,
}

/// One conversation in a user's chat list.
#[derive(Debug, Clone)]
pub struct ChatEntry {
    pub chat_type: String,
    pub last_message: String,
    pub last_message_type: Option<String>,
    pub last_time: String,
    pub unread_count: i64,
    pub chat_status: String,
    pub peer: Arc<Profile>,
    /// Changed by a message since its row was last queued for writing.
    pub dirty: bool,
}

/// A digest of a password that verified recently (see the engine's `auth` module), so a
/// repeat login need not pay for argon2 again. In memory only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    pub digest: [u8; 32],
    pub until: Instant,
}

/// Everything a shard keeps for one of its users.
#[derive(Debug)]
pub struct User {
    pub profile: Arc<Profile>,
    pub password: String,
    pub relations: HashMap<String, RelationEntry>,
    pub chats: HashMap<String, ChatEntry>,
    /// Messages that arrived while no connection of the user was live, oldest first.
    pub undelivered: VecDeque<MessageRow>,
    /// Live connections logged in as this user.
    pub sessions: Vec<ConnId>,
    pub remembered: Option<Remembered>,
}

/// Why a request about users or friends was refused; the text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no such user")]
    NoSuchUser,
    #[error("you cannot add yourself")]
    SelfFriend,
    #[error("already friends")]
    AlreadyFriends,
    #[error("friend request already sent")]
    AlreadyRequested,
    #[error("this user has already asked you: accept their request")]
    RequestFromThem,
    #[error("no pending friend request from this user")]
    NoPendingRequest,
    #[error("not friends")]
    NotFriends,
    #[error("too many sessions for this user (at most {0})")]
    TooManySessions(usize),
    #[error("no such conversation")]
    NoSuchChat,
}

/// What a login check needs to know about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub profile: Profile,
    pub password: String,
    pub remembered: Option<Remembered>,
}

/// What happened to a message handed to its receiver's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The receiver's live connections, to which `receive_message` must be written now.
    pub sessions: Vec<ConnId>,
    pub status: MessageStatus,
}

/// The text shown in the chat list for a message: the body for text, a placeholder otherwise.
pub fn preview(message_type: &str, body: &str) -> String {
    match message_type {
        "image" => "[图片]".to_string(),
        "audio" => "[语音]".to_string(),
        "video" => "[视频]".to_string(),
        "file" => "[文件]".to_string(),
        "emoticon" => "[动画表情]".to_string(),
        _ => body.to_string(),
    }
}

/// `m_chatlist.unread_count` is a signed 32-bit INT: counts stop there rather than make the
/// database refuse the row.
pub const MAX_UNREAD: i64 = i32::MAX as i64;

/// The greeting the acceptor of a friend request sends, as the old server did: it makes the
/// new conversation visible in both chat lists.
pub const GREETING: &str = "我们已经是好友了，可以开始聊天了！";

/// The users one shard owns.
#[derive(Debug, Default)]
pub struct ShardState {
    users: HashMap<String, User>,
    /// Profiles of other users referenced by relations and chats, shared within this shard.
    peers: HashMap<String, Arc<Profile>>,
    /// Chat rows changed by messages and not yet queued for writing (see `flush_chats`).
    dirty: Vec<(String, String)>,
}

impl ShardState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn user(&self, user_id: &str) -> Option<&User> {
        self.users.get(user_id)
    }

    pub fn exists(&self, user_id: &str) -> bool {
        self.users.contains_key(user_id)
    }

    fn peer(&mut self, p: &Profile) -> Arc<Profile> {
        if let Some(u) = self.users.get(&p.user_id) {
            return u.profile.clone();
        }
        match self.peers.get(&p.user_id) {
            Some(rc) if **rc == *p => rc.clone(),
            _ => {
                let rc = Arc::new(p.clone());
                self.peers.insert(p.user_id.clone(), rc.clone());
                rc
            }
        }
    }

    // ----- loading -----

    /// Adds a stored user at start.
    pub fn load_user(&mut self, row: UserRow) {
        let profile = Arc::new(Profile::from_row(&row));
        self.users.insert(
            row.user_id.clone(),
            User {
                profile,
                password: row.password,
                relations: HashMap::new(),
                chats: HashMap::new(),
                undelivered: VecDeque::new(),
                sessions: Vec::new(),
                remembered: None,
            },
        );
    }

    /// Adds a stored relation row of one of this shard's users; `peer` is the other user's
    /// profile (or `None` if the database no longer has that user).
    pub fn load_relation(&mut self, row: RelationRow, peer: Option<&Profile>) {
        let peer = self.peer(
            &peer
                .cloned()
                .unwrap_or_else(|| Profile::unknown(&row.friend_id)),
        );
        if let Some(u) = self.users.get_mut(&row.user_id) {
            u.relations.insert(
                row.friend_id,
                RelationEntry {
                    relation: row.relation,
                    created: row.created,
                    requested_by: row.requested_by,
                    peer,
                },
            );
        }
    }

    pub fn load_chat(&mut self, row: ChatRow, peer: Option<&Profile>) {
        let peer = self.peer(
            &peer
                .cloned()
                .unwrap_or_else(|| Profile::unknown(&row.comm_id)),
        );
        if let Some(u) = self.users.get_mut(&row.user_id) {
            u.chats.insert(
                row.comm_id,
                ChatEntry {
                    chat_type: row.chat_type,
                    last_message: row.last_message,
                    last_message_type: row.last_message_type,
                    last_time: row.last_time,
                    unread_count: row.unread_count,
                    chat_status: row.chat_status,
                    peer,
                    dirty: false,
                },
            );
        }
    }

    pub fn load_undelivered(&mut self, m: MessageRow) {
        if let Some(u) = self.users.get_mut(&m.receiver_id) {
            u.undelivered.push_back(m);
        }
    }

    // ----- accounts and sessions -----

    /// Creates a user owned by this shard.
    pub fn register(&mut self, row: UserRow, out: &mut Vec<WriteRecord>) -> Result<(), RuleError> {
        if self.users.contains_key(&row.user_id) {
            return Err(RuleError::UserExists(row.user_id));
        }
        out.push(WriteRecord::InsertUser(row.clone()));
        self.load_user(row);
        Ok(())
    }

    /// The profile, stored password and remembered credential of a user, for a login check.
    pub fn credentials(&self, user_id: &str) -> Option<Credentials> {
        self.users.get(user_id).map(|u| Credentials {
            profile: (*u.profile).clone(),
            password: u.password.clone(),
            remembered: u.remembered,
        })
    }

    /// Keeps the digest of a credential that just verified.
    pub fn remember(&mut self, user_id: &str, r: Remembered) {
        if let Some(u) = self.users.get_mut(user_id) {
            u.remembered = Some(r);
        }
    }

    /// Replaces a stored password (a legacy plaintext one by its hash).
    pub fn set_password(&mut self, user_id: &str, hash: String, out: &mut Vec<WriteRecord>) {
        if let Some(u) = self.users.get_mut(user_id) {
            u.password = hash.clone();
            u.remembered = None;
            out.push(WriteRecord::SetPassword {
                user_id: user_id.to_string(),
                password: hash,
            });
        }
    }

    pub fn add_session(
        &mut self,
        user_id: &str,
        conn: ConnId,
        max: usize,
    ) -> Result<(), RuleError> {
        let u = self.users.get_mut(user_id).ok_or(RuleError::NoSuchUser)?;
        if u.sessions.len() >= max {
            return Err(RuleError::TooManySessions(max));
        }
        u.sessions.push(conn);
        Ok(())
    }

    pub fn remove_session(&mut self, user_id: &str, conn: ConnId) {
        if let Some(u) = self.users.get_mut(user_id) {
            u.sessions.retain(|c| *c != conn);
        }
    }

    pub fn sessions(&self, user_id: &str) -> &[ConnId] {
        self.users
            .get(user_id)
            .map(|u| u.sessions.as_slice())
            .unwrap_or(&[])
    }

    // ----- friends -----

    /// Checks, on the requester's shard, that `user` may send a request to `friend`.
    pub fn check_add(&self, user: &str, friend: &str) -> Result<(), RuleError> {
        if user == friend {
            return Err(RuleError::SelfFriend);
        }
        let u = self.users.get(user).ok_or(RuleError::NoSuchUser)?;
        match u.relations.get(friend) {
            Some(r) if r.relation == Relation::Accepted => Err(RuleError::AlreadyFriends),
            Some(r) if r.relation == Relation::Pending => match &r.requested_by {
                Some(by) if by == friend => Err(RuleError::RequestFromThem),
                _ => Err(RuleError::AlreadyRequested),
            },
            _ => Ok(()),
        }
    }

    /// On the addressee's shard: records the incoming request from `from` to `to` and returns
    /// `to`'s profile.
    pub fn receive_request(
        &mut self,
        to: &str,
        from: &Profile,
        created: &str,
        out: &mut Vec<WriteRecord>,
    ) -> Result<Profile, RuleError> {
        let peer = self.peer(from);
        let u = self.users.get_mut(to).ok_or(RuleError::NoSuchUser)?;
        if let Some(r) = u.relations.get(&from.user_id) {
            match r.relation {
                Relation::Accepted => return Err(RuleError::AlreadyFriends),
                // Requests that crossed: both asked, so either may accept. Keep the row (and
                // who asked first) rather than make each side the requester in its own eyes.
                Relation::Pending => return Ok((*u.profile).clone()),
                Relation::Refused => {}
            }
        }
        let entry = RelationEntry {
            relation: Relation::Pending,
            created: created.to_string(),
            requested_by: Some(from.user_id.clone()),
            peer,
        };
        out.push(WriteRecord::UpsertRelation(relation_row(
            to,
            &from.user_id,
            &entry,
        )));
        u.relations.insert(from.user_id.clone(), entry);
        Ok((*u.profile).clone())
    }

    /// On the requester's shard, once the addressee accepted the request into its state.
    pub fn record_request(
        &mut self,
        user: &str,
        friend: &Profile,
        created: &str,
        out: &mut Vec<WriteRecord>,
    ) {
        let peer = self.peer(friend);
        if let Some(u) = self.users.get_mut(user) {
            // A request from them that crossed ours: leave it, so this user can accept it.
            if u.relations
                .get(&friend.user_id)
                .is_some_and(|r| r.relation == Relation::Pending)
            {
                return;
            }
            let entry = RelationEntry {
                relation: Relation::Pending,
                created: created.to_string(),
                requested_by: Some(user.to_string()),
                peer,
            };
            out.push(WriteRecord::UpsertRelation(relation_row(
                user,
                &friend.user_id,
                &entry,
            )));
            u.relations.insert(friend.user_id.clone(), entry);
        }
    }

    /// Checks, on the acceptor's shard, that `acceptor` has a request from `requester` to accept.
    /// Rows the legacy server left have no direction; either side may accept those.
    pub fn check_accept(&self, acceptor: &str, requester: &str) -> Result<(), RuleError> {
        let u = self.users.get(acceptor).ok_or(RuleError::NoSuchUser)?;
        match u.relations.get(requester) {
            Some(r) if r.relation == Relation::Accepted => Err(RuleError::AlreadyFriends),
            Some(r) if r.relation == Relation::Pending => match &r.requested_by {
                Some(by) if by == acceptor => Err(RuleError::NoPendingRequest),
                _ => Ok(()),
            },
            _ => Err(RuleError::NoPendingRequest),
        }
    }

    /// Makes `user`'s relation with `peer` accepted and opens the conversation, with the
    /// greeting as its last message. Used on both sides: `unread` is 1 for the requester (who
    /// receives the greeting) and 0 for the acceptor. Fails if `user` has no pending relation
    /// with `peer` (it was deleted meanwhile).
    pub fn accept(
        &mut self,
        user: &str,
        peer: &Profile,
        greeting: &MessageRow,
        unread: i64,
        out: &mut Vec<WriteRecord>,
    ) -> Result<Profile, RuleError> {
        let peer_rc = self.peer(peer);
        let u = self.users.get_mut(user).ok_or(RuleError::NoSuchUser)?;
        let r = u
            .relations
            .get_mut(&peer.user_id)
            .ok_or(RuleError::NoPendingRequest)?;
        if r.relation == Relation::Accepted {
            return Err(RuleError::AlreadyFriends);
        }
        r.relation = Relation::Accepted;
        r.peer = peer_rc.clone();
        out.push(WriteRecord::UpsertRelation(relation_row(
            user,
            &peer.user_id,
            r,
        )));
        let chat = u
            .chats
            .entry(peer.user_id.clone())
            .or_insert_with(|| ChatEntry {
                chat_type: "friend".to_string(),
                last_message: String::new(),
                last_message_type: None,
                last_time: greeting.timestamp.clone(),
                unread_count: 0,
                chat_status: "chatting".to_string(),
                peer: peer_rc,
                dirty: false,
            });
        chat.last_message = preview(&greeting.message_type, &greeting.body);
        chat.last_message_type = Some(greeting.message_type.clone());
        chat.last_time = greeting.timestamp.clone();
        chat.unread_count = (chat.unread_count + unread).min(MAX_UNREAD);
        chat.chat_status = "chatting".to_string();
        out.push(WriteRecord::UpsertChat(chat_row(user, &peer.user_id, chat)));
        Ok((*u.profile).clone())
    }

    /// Removes `user`'s relation with `other` and their conversation; messages waiting for
    /// `user` from `other` are dropped from the offline queue (they become `delete`d).
    /// Returns whether there was anything to remove.
    pub fn remove_friend(&mut self, user: &str, other: &str, out: &mut Vec<WriteRecord>) -> bool {
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        let had = u.relations.remove(other).is_some();
        let had_chat = u.chats.remove(other).is_some();
        u.undelivered.retain(|m| m.sender_id != other);
        if had {
            out.push(WriteRecord::DeleteRelation {
                user_id: user.to_string(),
                friend_id: other.to_string(),
            });
        }
        if had_chat {
            out.push(WriteRecord::DeleteChat {
                user_id: user.to_string(),
                comm_id: other.to_string(),
            });
        }
        had || had_chat
    }

    pub fn is_friend(&self, user: &str, other: &str) -> bool {
        self.users
            .get(user)
            .and_then(|u| u.relations.get(other))
            .is_some_and(|r| r.relation == Relation::Accepted)
    }

    /// A user's relations, oldest first (ties by id) so the list is stable.
    pub fn friends(&self, user: &str) -> Vec<(&RelationEntry, &str)> {
        let Some(u) = self.users.get(user) else {
            return Vec::new();
        };
        let mut v: Vec<_> = u.relations.iter().map(|(k, r)| (r, k.as_str())).collect();
        v.sort_by(|a, b| a.0.created.cmp(&b.0.created).then(a.1.cmp(b.1)));
        v
    }

    /// A user's conversations, most recent first.
    pub fn chats(&self, user: &str) -> Vec<(&ChatEntry, &str)> {
        let Some(u) = self.users.get(user) else {
            return Vec::new();
        };
        let mut v: Vec<_> = u.chats.iter().map(|(k, c)| (c, k.as_str())).collect();
        v.sort_by(|a, b| b.0.last_time.cmp(&a.0.last_time).then(a.1.cmp(b.1)));
        v
    }

    // ----- messages -----

    /// On the sender's shard: may `sender` write to `receiver`?
    pub fn check_send(&self, sender: &str, receiver: &str) -> Result<(), RuleError> {
        if !self.users.contains_key(sender) {
            return Err(RuleError::NoSuchUser);
        }
        if self.is_friend(sender, receiver) {
            Ok(())
        } else {
            Err(RuleError::NotFriends)
        }
    }

    /// On the sender's shard: the sender's chat row now shows the message (queued by the
    /// next [`ShardState::flush_chats`]).
    pub fn note_sent(&mut self, m: &MessageRow) {
        self.touch_chat(&m.sender_id, &m.receiver_id, m, 0);
    }

    /// On the receiver's shard: takes a message for one of this shard's users. The receiver's
    /// chat row shows it with one more unread (queued by the next `flush_chats`); if a
    /// connection of the receiver is live the message is `received` and those connections are
    /// returned, otherwise it waits in the offline queue as `send`. The message row is
    /// appended to `out`.
    pub fn deliver(
        &mut self,
        m: MessageRow,
        out: &mut Vec<WriteRecord>,
    ) -> Result<Delivered, RuleError> {
        let Some(u) = self.users.get(&m.receiver_id) else {
            return Err(RuleError::NoSuchUser);
        };
        if !u
            .relations
            .get(&m.sender_id)
            .is_some_and(|r| r.relation == Relation::Accepted)
        {
            return Err(RuleError::NotFriends);
        }
        let (receiver, sender) = (m.receiver_id.clone(), m.sender_id.clone());
        self.touch_chat(&receiver, &sender, &m, 1);
        self.store_message(m, out)
    }

    /// Keeps a message for its receiver (one of this shard's users) without touching the chat
    /// list: `received` if a connection is live (returned), else queued as `send`. The
    /// message row is appended to `out` last.
    pub fn store_message(
        &mut self,
        mut m: MessageRow,
        out: &mut Vec<WriteRecord>,
    ) -> Result<Delivered, RuleError> {
        let Some(u) = self.users.get_mut(&m.receiver_id) else {
            return Err(RuleError::NoSuchUser);
        };
        let sessions = u.sessions.clone();
        m.status = if sessions.is_empty() {
            MessageStatus::Send
        } else {
            MessageStatus::Received
        };
        let status = m.status;
        if sessions.is_empty() {
            u.undelivered.push_back(m.clone());
        }
        out.push(WriteRecord::InsertMessage(m));
        Ok(Delivered { sessions, status })
    }

    /// A message meant for live connections that all failed before it was written: it waits
    /// for the next login instead.
    pub fn requeue(&mut self, mut m: MessageRow, out: &mut Vec<WriteRecord>) {
        let Some(u) = self.users.get_mut(&m.receiver_id) else {
            return;
        };
        out.push(WriteRecord::SetMessageStatus {
            receiver_id: m.receiver_id.clone(),
            ids: vec![m.message_id],
            status: MessageStatus::Send,
        });
        m.status = MessageStatus::Send;
        u.undelivered.push_back(m);
    }

    /// Shows a message in `owner`'s chat row with `peer_id`. The row is only marked dirty:
    /// [`ShardState::flush_chats`] queues one write per changed row, however many messages
    /// changed it since the last flush. A busy conversation then costs one row write per
    /// flush, not one per message, and no allocation per message here.
    fn touch_chat(&mut self, owner: &str, peer_id: &str, m: &MessageRow, unread: i64) {
        let Some(u) = self.users.get_mut(owner) else {
            return;
        };
        if !u.chats.contains_key(peer_id) {
            let peer = match u.relations.get(peer_id) {
                Some(r) => r.peer.clone(),
                None => Arc::new(Profile::unknown(peer_id)),
            };
            u.chats.insert(
                peer_id.to_string(),
                ChatEntry {
                    chat_type: m.chat_type.clone(),
                    last_message: String::new(),
                    last_message_type: None,
                    last_time: String::new(),
                    unread_count: 0,
                    chat_status: "chatting".to_string(),
                    peer,
                    dirty: false,
                },
            );
        }
        let Some(chat) = u.chats.get_mut(peer_id) else {
            return;
        };
        chat.last_message.clear();
        match m.message_type.as_str() {
            "text" => chat.last_message.push_str(&m.body),
            other => chat.last_message.push_str(&preview(other, "")),
        }
        if chat.last_message_type.as_deref() != Some(m.message_type.as_str()) {
            chat.last_message_type = Some(m.message_type.clone());
        }
        chat.last_time.clear();
        chat.last_time.push_str(&m.timestamp);
        chat.unread_count = (chat.unread_count + unread).min(MAX_UNREAD);
        if chat.chat_status != "chatting" {
            chat.chat_status = "chatting".to_string();
        }
        if !chat.dirty {
            chat.dirty = true;
            self.dirty.push((owner.to_string(), peer_id.to_string()));
        }
    }

    /// Are there chat rows changed by messages and not yet queued?
    pub fn has_dirty_chats(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Queues the current state of every chat row that messages changed since the last call.
    /// A row deleted meanwhile is skipped (its delete was queued when it happened).
    pub fn flush_chats(&mut self, out: &mut Vec<WriteRecord>) {
        for (owner, peer) in std::mem::take(&mut self.dirty) {
            if let Some(chat) = self
                .users
                .get_mut(&owner)
                .and_then(|u| u.chats.get_mut(&peer))
            {
                if chat.dirty {
                    chat.dirty = false;
                    out.push(WriteRecord::UpsertChat(chat_row(&owner, &peer, chat)));
                }
            }
        }
    }

    /// Hands over the messages that arrived while the user was offline, oldest first, and
    /// marks them delivered.
    pub fn take_undelivered(&mut self, user: &str, out: &mut Vec<WriteRecord>) -> Vec<MessageRow> {
        let Some(u) = self.users.get_mut(user) else {
            return Vec::new();
        };
        let msgs: Vec<MessageRow> = u
            .undelivered
            .drain(..)
            .map(|mut m| {
                m.status = MessageStatus::Received;
                m
            })
            .collect();
        if !msgs.is_empty() {
            out.push(WriteRecord::SetMessageStatus {
                receiver_id: user.to_string(),
                ids: msgs.iter().map(|m| m.message_id).collect(),
                status: MessageStatus::Received,
            });
        }
        msgs
    }

    /// Puts messages back at the front of the offline queue (their delivery failed).
    pub fn restore_undelivered(
        &mut self,
        user: &str,
        msgs: Vec<MessageRow>,
        out: &mut Vec<WriteRecord>,
    ) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        if msgs.is_empty() {
            return;
        }
        out.push(WriteRecord::SetMessageStatus {
            receiver_id: user.to_string(),
            ids: msgs.iter().map(|m| m.message_id).collect(),
            status: MessageStatus::Send,
        });
        for mut m in msgs.into_iter().rev() {
            m.status = MessageStatus::Send;
            u.undelivered.push_front(m);
        }
    }

    /// `update_chat`: the client opened a conversation. Sets its row and marks the messages
    /// from `comm_id` read.
    pub fn update_chat(
        &mut self,
        user: &str,
        update: ChatUpdate,
        out: &mut Vec<WriteRecord>,
    ) -> Result<(), RuleError> {
        let u = self.users.get_mut(user).ok_or(RuleError::NoSuchUser)?;
        let peer = match (
            u.chats.get(&update.comm_id),
            u.relations.get(&update.comm_id),
        ) {
            (Some(c), _) => c.peer.clone(),
            (None, Some(r)) if r.relation == Relation::Accepted => r.peer.clone(),
            _ => return Err(RuleError::NoSuchChat),
        };
        let chat = ChatEntry {
            chat_type: update.chat_type,
            last_message: update.last_message,
            last_message_type: (!update.last_message_type.is_empty())
                .then_some(update.last_message_type),
            last_time: update.last_time,
            unread_count: update.unread_count,
            chat_status: update.chat_status,
            peer,
            dirty: false,
        };
        out.push(WriteRecord::UpsertChat(chat_row(
            user,
            &update.comm_id,
            &chat,
        )));
        out.push(WriteRecord::MarkConversationRead {
            receiver_id: user.to_string(),
            sender_id: update.comm_id.clone(),
        });
        u.chats.insert(update.comm_id, chat);
        Ok(())
    }
}

/// The fields of an `update_chat` request, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUpdate {
    pub comm_id: String,
    pub chat_type: String,
    pub last_message: String,
    pub last_message_type: String,
    pub last_time: String,
    pub unread_count: i64,
    pub chat_status: String,
}

fn relation_row(user: &str, friend: &str, r: &RelationEntry) -> RelationRow {
    RelationRow {
        user_id: user.to_string(),
        friend_id: friend.to_string(),
        relation: r.relation,
        created: r.created.clone(),
        requested_by: r.requested_by.clone(),
    }
}

fn chat_row(user: &str, comm: &str, c: &ChatEntry) -> ChatRow {
    ChatRow {
        user_id: user.to_string(),
        comm_id: comm.to_string(),
        chat_type: c.chat_type.clone(),
        last_message: c.last_message.clone(),
        last_message_type: c.last_message_type.clone(),
        last_time: c.last_time.clone(),
        unread_count: c.unread_count,
        chat_status: c.chat_status.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserRow {
        UserRow {
            user_id: id.into(),
            password: "$argon2id$x".into(),
            phone: id.into(),
            name: format!("n{id}"),
            email: format!("{id}@an.com"),
            avatar: "/default.jpg".into(),
            status: "inactive".into(),
            created: "2026-01-01 00:00:00".into(),
        }
    }

    fn msg(id: u64, from: &str, to: &str, ty: &str, body: &str) -> MessageRow {
        MessageRow {
            message_id: id,
            sender_id: from.into(),
            receiver_id: to.into(),
            chat_type: "friend".into(),
            body: body.into(),
            message_type: ty.into(),
            file_path: " ".into(),
            status: MessageStatus::Send,
            timestamp: "2026-01-02 03:04:05".into(),
        }
    }

    /// Two users on one shard, made friends through the same calls two shards would make.
    fn friends() -> ShardState {
        let mut s = ShardState::new();
        let mut out = Vec::new();
        s.register(user("1"), &mut out).unwrap();
        s.register(user("2"), &mut out).unwrap();
        let p1 = Profile::from_row(&user("1"));
        let p2 = Profile::from_row(&user("2"));
        s.check_add("1", "2").unwrap();
        let got = s
            .receive_request("2", &p1, "2026-01-01 00:00:01", &mut out)
            .unwrap();
        assert_eq!(got.user_id, "2");
        s.record_request("1", &p2, "2026-01-01 00:00:01", &mut out);
        assert_eq!(s.check_accept("1", "2"), Err(RuleError::NoPendingRequest));
        s.check_accept("2", "1").unwrap();
        let g = msg(1, "2", "1", "text", GREETING);
        s.accept("1", &p2, &g, 1, &mut out).unwrap();
        s.accept("2", &p1, &g, 0, &mut out).unwrap();
        s
    }

    #[test]
    fn register_twice_fails_and_writes_once() {
        let mut s = ShardState::new();
        let mut out = Vec::new();
        s.register(user("1"), &mut out).unwrap();
        assert_eq!(
            s.register(user("1"), &mut out),
            Err(RuleError::UserExists("1".into()))
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn friendship_rules() {
        let mut s = ShardState::new();
        let mut out = Vec::new();
        s.register(user("1"), &mut out).unwrap();
        assert_eq!(s.check_add("1", "1"), Err(RuleError::SelfFriend));
        assert_eq!(s.check_send("1", "2"), Err(RuleError::NotFriends));
        let s = friends();
        assert!(s.is_friend("1", "2") && s.is_friend("2", "1"));
        assert_eq!(s.check_add("1", "2"), Err(RuleError::AlreadyFriends));
        let chats = s.chats("1");
        assert_eq!(chats.len(), 1);
        assert_eq!(chats[0].0.unread_count, 1);
        assert_eq!(chats[0].0.chat_status, "chatting");
        assert_eq!(chats[0].0.last_message, GREETING);
        assert_eq!(s.chats("2")[0].0.unread_count, 0);
    }

    #[test]
    fn crossing_requests_leave_someone_able_to_accept() {
        let mut s = ShardState::new();
        let mut out = Vec::new();
        s.register(user("1"), &mut out).unwrap();
        s.register(user("2"), &mut out).unwrap();
        let (p1, p2) = (Profile::from_row(&user("1")), Profile::from_row(&user("2")));
        s.check_add("1", "2").unwrap();
        s.check_add("2", "1").unwrap();
        // Each shard handles the other's request before it hears back about its own.
        s.receive_request("2", &p1, "t", &mut out).unwrap();
        s.receive_request("1", &p2, "t", &mut out).unwrap();
        s.record_request("1", &p2, "t", &mut out);
        s.record_request("2", &p1, "t", &mut out);
        assert!(s.check_accept("1", "2").is_ok() || s.check_accept("2", "1").is_ok());
        assert_eq!(s.check_add("1", "2"), Err(RuleError::RequestFromThem));
    }

    #[test]
    fn legacy_pending_rows_can_be_accepted_by_either_side() {
        let mut s = ShardState::new();
        let mut out = Vec::new();
        s.register(user("1"), &mut out).unwrap();
        let row = RelationRow {
            user_id: "1".into(),
            friend_id: "2".into(),
            relation: Relation::Pending,
            created: "2025-01-01 00:00:00".into(),
            requested_by: None,
        };
        s.load_relation(row, None);
        assert_eq!(s.check_accept("1", "2"), Ok(()));
    }

    #[test]
    fn offline_delivery_then_handover_oldest_first() {
        let mut s = friends();
        let mut out = Vec::new();
        let d = s.deliver(msg(10, "2", "1", "text", "a"), &mut out).unwrap();
        assert_eq!(d.status, MessageStatus::Send);
        assert!(d.sessions.is_empty());
        s.deliver(msg(11, "2", "1", "image", ""), &mut out).unwrap();
        assert!(matches!(out.last(), Some(WriteRecord::InsertMessage(m)) if m.message_id == 11));
        let mut chats = Vec::new();
        s.flush_chats(&mut chats);
        assert!(
            matches!(chats.as_slice(), [WriteRecord::UpsertChat(c)] if c.unread_count == 3),
            "one write for the row two messages changed: {chats:?}"
        );
        s.flush_chats(&mut chats);
        assert_eq!(chats.len(), 1, "nothing new to flush");
        let c = &s.chats("1")[0].0;
        assert_eq!(c.unread_count, 3);
        assert_eq!(c.last_message, "[图片]");
        let mut out = Vec::new();
        let got = s.take_undelivered("1", &mut out);
        assert_eq!(
            got.iter().map(|m| m.message_id).collect::<Vec<_>>(),
            vec![10, 11]
        );
        assert_eq!(
            out,
            vec![WriteRecord::SetMessageStatus {
                receiver_id: "1".into(),
                ids: vec![10, 11],
                status: MessageStatus::Received
            }]
        );
        assert!(s.take_undelivered("1", &mut out).is_empty());
    }

    #[test]
    fn live_delivery_goes_to_every_session_and_is_not_queued() {
        let mut s = friends();
        s.add_session("1", 7, 2).unwrap();
        s.add_session("1", 8, 2).unwrap();
        assert_eq!(s.add_session("1", 9, 2), Err(RuleError::TooManySessions(2)));
        let mut out = Vec::new();
        let d = s
            .deliver(msg(10, "2", "1", "text", "hi"), &mut out)
            .unwrap();
        assert_eq!(d.sessions, vec![7, 8]);
        assert_eq!(d.status, MessageStatus::Received);
        assert!(s.take_undelivered("1", &mut out).is_empty());
        s.remove_session("1", 7);
        assert_eq!(s.sessions("1"), &[8]);
    }

    #[test]
    fn delete_friend_removes_relation_chat_and_queued_messages() {
        let mut s = friends();
        let mut out = Vec::new();
        s.deliver(msg(10, "2", "1", "text", "a"), &mut out).unwrap();
        let mut out = Vec::new();
        assert!(s.remove_friend("1", "2", &mut out));
        let mut chats = Vec::new();
        s.flush_chats(&mut chats);
        assert!(
            chats.is_empty(),
            "a deleted row is not written back: {chats:?}"
        );
        assert!(s.remove_friend("2", "1", &mut out));
        assert!(!s.is_friend("1", "2"));
        assert!(s.chats("1").is_empty());
        assert!(s.take_undelivered("1", &mut out).is_empty());
        assert_eq!(
            s.deliver(msg(11, "2", "1", "text", "b"), &mut out),
            Err(RuleError::NotFriends)
        );
    }

    #[test]
    fn update_chat_sets_row_and_marks_read() {
        let mut s = friends();
        let mut out = Vec::new();
        let up = ChatUpdate {
            comm_id: "2".into(),
            chat_type: "friend".into(),
            last_message: "x".into(),
            last_message_type: "text".into(),
            last_time: "2026-01-03 00:00:00".into(),
            unread_count: 0,
            chat_status: "chatting".into(),
        };
        s.update_chat("1", up.clone(), &mut out).unwrap();
        assert_eq!(s.chats("1")[0].0.unread_count, 0);
        assert!(out.contains(&WriteRecord::MarkConversationRead {
            receiver_id: "1".into(),
            sender_id: "2".into()
        }));
        let mut other = up;
        other.comm_id = "3".into();
        assert_eq!(
            s.update_chat("1", other, &mut out),
            Err(RuleError::NoSuchChat)
        );
    }

    #[test]
    fn restore_puts_messages_back_in_order() {
        let mut s = friends();
        let mut out = Vec::new();
        s.deliver(msg(10, "2", "1", "text", "a"), &mut out).unwrap();
        s.deliver(msg(11, "2", "1", "text", "b"), &mut out).unwrap();
        let got = s.take_undelivered("1", &mut out);
        s.restore_undelivered("1", got, &mut out);
        let again = s.take_undelivered("1", &mut out);
        assert_eq!(
            again.iter().map(|m| m.message_id).collect::<Vec<_>>(),
            vec![10, 11]
        );
    }
}
