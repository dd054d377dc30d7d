-- Version 2: one index for the queries on a conversation instead of two.
--
-- A message insert maintained three secondary indexes. (receiver_id, sender_id,
-- message_status) answers "mark what X sent me as read" and "delete the conversation" (one
-- lookup per direction) exactly, and any query on a receiver's messages by its prefix, so the
-- (receiver_id, message_status) and (sender_id) indexes go; nothing in corechat reads them.
-- The partial index of undelivered messages stays: it holds only rows still `send`, and the
-- start-up load reads it. Same change as MySQL's version 6. No data changes.

CREATE INDEX IF NOT EXISTS idx_friends_message_conversation
    ON m_friends_message (receiver_id, sender_id, message_status);
DROP INDEX IF EXISTS idx_friends_message_receiver_status;
DROP INDEX IF EXISTS idx_friends_message_sender;
