-- corechat's embedded store: the legacy MySQL schema (database `animalchat`) translated to
-- SQLite, with the same table and column names so that the same queries and the same mental
-- model serve both backends.
--
-- Conventions:
-- * Date-times are TEXT 'yyyy-MM-dd HH:mm:ss', exactly as the client sends and reads them.
-- * The legacy ENUM columns become TEXT with a CHECK constraint listing the same values.
-- * Primary-key columns are declared NOT NULL: SQLite otherwise accepts NULL in a
--   non-INTEGER primary key, which MySQL never did.
-- * Each statement ends with `;` at the end of a line (see corechat_sql::statements).
-- * The bookkeeping table corechat_schema_version is created by the backend, not here.

CREATE TABLE m_user (
    user_id TEXT NOT NULL PRIMARY KEY,
    user_password TEXT,
    user_phone TEXT,
    user_name TEXT,
    user_email TEXT UNIQUE DEFAULT 'aa@an.com',
    user_avatar TEXT DEFAULT '/default.jpg',
    user_status TEXT DEFAULT 'inactive'
        CHECK (user_status IN ('active', 'inactive', 'busy')),
    user_created TEXT
);

-- One row per direction of a friendship. `requested_by` is not in the legacy schema: it is
-- the user id of who sent the request (NULL on rows the legacy server left behind).
CREATE TABLE m_friends_relation (
    user_id TEXT NOT NULL,
    friend_id TEXT NOT NULL,
    friend_relation TEXT DEFAULT 'pending'
        CHECK (friend_relation IN ('pending', 'accepted', 'refused')),
    created_relation TEXT,
    requested_by TEXT,
    PRIMARY KEY (user_id, friend_id)
);

-- Lets "who has `x` as a friend" be answered without a scan (deleting a user's relations
-- from the other side, consistency checks).
CREATE INDEX idx_friends_relation_friend ON m_friends_relation (friend_id);

-- The legacy column accepted the misspelt 'vedio' (and not 'video'); both are accepted here
-- so that rows copied from a legacy database load, and the backend maps 'vedio' to 'video'.
CREATE TABLE m_chatlist (
    user_id TEXT NOT NULL,
    comm_id TEXT NOT NULL,
    chat_type TEXT CHECK (chat_type IN ('friend', 'group')),
    last_message TEXT,
    last_message_type TEXT
        CHECK (last_message_type IN
            ('text', 'emoticon', 'image', 'audio', 'video', 'vedio', 'file')),
    last_time TEXT,
    unread_count INTEGER DEFAULT 0,
    chat_status TEXT CHECK (chat_status IN ('chatting', 'close')),
    PRIMARY KEY (user_id, comm_id)
);

-- message_id is an INTEGER PRIMARY KEY (the rowid) but deliberately not AUTOINCREMENT: ids
-- are assigned by the engine, never by the database, so a batch of inserts needs no round
-- trip per row.
CREATE TABLE m_friends_message (
    message_id INTEGER PRIMARY KEY,
    sender_id TEXT,
    receiver_id TEXT,
    chat_type TEXT CHECK (chat_type IN ('friend', 'group')),
    message_body TEXT,
    message_type TEXT
        CHECK (message_type IN ('text', 'emoticon', 'image', 'audio', 'video', 'file')),
    file_path TEXT,
    message_status TEXT
        CHECK (message_status IN ('received', 'read', 'delete', 'send')),
    message_timestamp TEXT
);

-- Serves "mark every received message from X to Y as read" (receiver, status, then sender
-- filtered on the few matching rows) and the receiver half of a conversation delete.
CREATE INDEX idx_friends_message_receiver_status
    ON m_friends_message (receiver_id, message_status);

CREATE INDEX idx_friends_message_sender ON m_friends_message (sender_id);

-- Undelivered messages are read once, at start-up, in id order. A partial index keeps that
-- from scanning the whole history, and costs nothing for delivered messages (which leave
-- the index as soon as their status changes).
CREATE INDEX idx_friends_message_undelivered
    ON m_friends_message (message_id) WHERE message_status = 'send';

-- Unused by the engine, kept so that the schema matches the legacy one.
CREATE TABLE m_groups (
    group_id TEXT NOT NULL PRIMARY KEY
);

CREATE TABLE m_groups_relation (
    group_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE m_media_file (
    file_id INTEGER PRIMARY KEY,
    message_id INTEGER,
    file_type TEXT,
    file_url TEXT,
    created_at TEXT
);
