-- Version 5: index the receiver's messages by status.
--
-- "Mark every received message from X to me as read" (update_chat, at every conversation
-- opened) filters on receiver_id and message_status; the legacy index on receiver_id alone
-- makes that scan a user's whole history. The legacy receiver_id index is kept: the foreign key
-- uses it and dropping it would change a legacy table for no gain. MySQL 8 has no
-- CREATE INDEX IF NOT EXISTS, hence the guard (checked against information_schema).

-- corechat:skip-if index m_friends_message.receiver_status
CREATE INDEX receiver_status ON m_friends_message (receiver_id, message_status);
