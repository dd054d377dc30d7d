//! Write records: the only way state changes reach the database.
//!
//! A shard turns every change it makes in memory into one or more records and pushes them,
//! in order, into the persistence queue. The queue is FIFO and shared by all shards, so a
//! record pushed after receiving a mesh message is always written after the records the
//! sending shard pushed before it sent that message: cross-shard cause and effect survive.

use crate::model::{ChatRow, MessageRow, MessageStatus, RelationRow, UserRow};

/// One change to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRecord {
    InsertUser(UserRow),
    /// Replace a stored password (a legacy plaintext one by its argon2id hash).
    SetPassword {
        user_id: String,
        password: String,
    },
    UpsertRelation(RelationRow),
    DeleteRelation {
        user_id: String,
        friend_id: String,
    },
    UpsertChat(ChatRow),
    DeleteChat {
        user_id: String,
        comm_id: String,
    },
    InsertMessage(MessageRow),
    /// Set the status of the given messages, all sent to `receiver_id`.
    SetMessageStatus {
        receiver_id: String,
        ids: Vec<u64>,
        status: MessageStatus,
    },
    /// Every `received` message from `sender_id` to `receiver_id` becomes `read`.
    MarkConversationRead {
        receiver_id: String,
        sender_id: String,
    },
    /// Every message between the two users, either way, becomes `delete`.
    MarkConversationDeleted {
        a: String,
        b: String,
    },
    /// Writes nothing. It carries an acknowledgement for a request whose effects were already
    /// queued (or that changed nothing): the queue is FIFO, so once it commits, so has every
    /// record its shard pushed before it.
    Barrier,
}

impl WriteRecord {
    /// The user whose rows this record touches, when that is a single user and no other
    /// record of another user can touch the same rows: a message and its status changes belong
    /// to its receiver, a chat row to its owner. Records with the same lane key must be
    /// written in order; records with different keys commute, so a writer may spread them over
    /// several connections. `None` for everything that spans users (accounts, friendships,
    /// deletes of a whole conversation), which is written in order with the rest of its batch.
    pub fn lane_key(&self) -> Option<&str> {
        match self {
            WriteRecord::InsertMessage(m) => Some(&m.receiver_id),
            WriteRecord::UpsertChat(c) => Some(&c.user_id),
            WriteRecord::SetMessageStatus { receiver_id, .. }
            | WriteRecord::MarkConversationRead { receiver_id, .. } => Some(receiver_id),
            _ => None,
        }
    }
}

/// Who to tell once the record is durable: a shard index and a token that shard chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub shard: usize,
    pub token: u64,
}

/// A record as it travels through the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub record: WriteRecord,
    /// Told once the record is durable (with [`crate::queue::REFUSED`] set if the database
    /// refused it).
    pub ack: Option<Ack>,
    /// Told only if the database refuses the record (with [`crate::queue::REFUSED`] set);
    /// nothing is sent when it commits. For a record whose success is acknowledged by a later
    /// one (a barrier behind the rows it depends on) but whose refusal must still reach the
    /// client.
    pub watch: Option<Ack>,
}

impl Envelope {
    pub fn new(record: WriteRecord) -> Self {
        Envelope {
            record,
            ack: None,
            watch: None,
        }
    }
    pub fn acked(record: WriteRecord, ack: Ack) -> Self {
        Envelope {
            record,
            ack: Some(ack),
            watch: None,
        }
    }
}
