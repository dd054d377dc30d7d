-- Version 6: make a message row cheaper to write.
--
-- A message insert in the legacy schema maintained three secondary indexes (sender_id,
-- receiver_id, and 0005's receiver_status) and checked two foreign keys, and every chat-row
-- upsert checked one more. Measured with `corechat-admin ack-bench` (docs/benchmarks.md), this
-- was about 40% of MariaDB's work per message. Now:
--
-- * One index serves every query corechat makes on messages: (receiver_id, sender_id,
--   message_status) answers "mark what X sent me as read" (update_chat) and "delete the
--   conversation" (one lookup per direction) exactly, and any query on a receiver's messages
--   by its prefix. The three old indexes go; nothing in corechat reads them.
-- * The foreign keys of m_friends_message and m_chatlist to m_user go. The engine writes a
--   message or a chat row only between users it holds in memory, loaded from m_user or
--   registered (and written to m_user first, in the same queue); the check added a lookup of
--   m_user per row for nothing. The keys of m_relation and m_file stay: they are rarely
--   written. Users are never deleted, so no row can be orphaned.
--
-- No data changes. Foreign keys are dropped before the indexes they used. The legacy foreign
-- keys had no names, so MySQL/MariaDB named them TABLE_ibfk_N in creation order; a key named
-- otherwise (a database rebuilt by hand) is left in place, which is still correct, only slower.
-- Building the new index reads the whole message table once (about a minute per 10 million
-- messages on the reference machine); MariaDB and MySQL 8 build it in place, without blocking
-- writes.

-- corechat:skip-unless foreign-key m_friends_message.m_friends_message_ibfk_1
ALTER TABLE m_friends_message DROP FOREIGN KEY m_friends_message_ibfk_1;
-- corechat:skip-unless foreign-key m_friends_message.m_friends_message_ibfk_2
ALTER TABLE m_friends_message DROP FOREIGN KEY m_friends_message_ibfk_2;
-- corechat:skip-unless foreign-key m_chatlist.m_chatlist_ibfk_1
ALTER TABLE m_chatlist DROP FOREIGN KEY m_chatlist_ibfk_1;
-- corechat:skip-if index m_friends_message.conversation
CREATE INDEX conversation ON m_friends_message (receiver_id, sender_id, message_status);
-- corechat:skip-unless index m_friends_message.receiver_status
DROP INDEX receiver_status ON m_friends_message;
-- corechat:skip-unless index m_friends_message.receiver_id
DROP INDEX receiver_id ON m_friends_message;
-- corechat:skip-unless index m_friends_message.sender_id
DROP INDEX sender_id ON m_friends_message;
