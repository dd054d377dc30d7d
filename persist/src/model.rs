//! Rows as the engine sees them: one struct per table of `sql/`.
//!
//! These are plain data shared by the shards (which keep them in memory) and the backends
//! (which read and write them). Date-times travel as the wire format `yyyy-MM-dd HH:mm:ss`
//! because that is what the client sends, what the legacy database stores, and what every
//! reply must carry: converting back and forth would only add ways to disagree.

/// A registered user (`m_user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub user_id: String,
    /// An argon2id PHC string; on a legacy database possibly a plaintext password, which the
    /// engine replaces by its hash at the first successful login.
    pub password: String,
    pub phone: String,
    pub name: String,
    pub email: String,
    pub avatar: String,
    pub status: String,
    pub created: String,
}

/// State of one direction of a friendship (`m_friends_relation.friend_relation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Pending,
    Accepted,
    Refused,
}

impl Relation {
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Pending => "pending",
            Relation::Accepted => "accepted",
            Relation::Refused => "refused",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Relation::Pending),
            "accepted" => Some(Relation::Accepted),
            "refused" => Some(Relation::Refused),
            _ => None,
        }
    }
}

/// One row of `m_friends_relation`: `user_id`'s view of its relation with `friend_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationRow {
    pub user_id: String,
    pub friend_id: String,
    pub relation: Relation,
    pub created: String,
    /// Who sent the request, when known. The legacy server wrote two `pending` rows and no
    /// direction, so rows it left behind carry `None` and either side may accept them.
    pub requested_by: Option<String>,
}

/// One row of `m_chatlist`: a conversation as `user_id` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRow {
    pub user_id: String,
    pub comm_id: String,
    pub chat_type: String,
    pub last_message: String,
    /// `None` where the legacy database holds NULL.
    pub last_message_type: Option<String>,
    pub last_time: String,
    pub unread_count: i64,
    pub chat_status: String,
}

/// Delivery state of a message (`m_friends_message.message_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Stored while the receiver was offline; handed over at its next login.
    Send,
    /// Written to at least one live connection of the receiver.
    Received,
    Read,
    Delete,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Send => "send",
            MessageStatus::Received => "received",
            MessageStatus::Read => "read",
            MessageStatus::Delete => "delete",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "send" => Some(MessageStatus::Send),
            "received" => Some(MessageStatus::Received),
            "read" => Some(MessageStatus::Read),
            "delete" => Some(MessageStatus::Delete),
            _ => None,
        }
    }
}

/// One row of `m_friends_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// Assigned by the engine (see `shards::ids`), never by the database, so that a batch of
    /// inserts needs no round trip per row.
    pub message_id: u64,
    pub sender_id: String,
    pub receiver_id: String,
    pub chat_type: String,
    pub body: String,
    pub message_type: String,
    pub file_path: String,
    pub status: MessageStatus,
    pub timestamp: String,
}
