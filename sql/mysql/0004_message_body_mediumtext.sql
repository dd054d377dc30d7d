-- Version 4: room for long messages.
--
-- TEXT holds 65,535 bytes, less than a 64 KiB message (more once CJK text takes 3 bytes a
-- character); in strict mode such a message would fail its whole batch, and the persistence
-- thread would retry it forever. MEDIUMTEXT holds 16 MiB. The chat list's last_message carries
-- the same text as a preview, so it is widened too. Nullability, charset and data are kept;
-- MODIFY to the same type again is harmless. On a large legacy table this copies the table
-- once (minutes for millions of rows): run `migrate` in a maintenance window if that matters.

ALTER TABLE m_friends_message
  MODIFY COLUMN message_body MEDIUMTEXT;

ALTER TABLE m_chatlist
  MODIFY COLUMN last_message MEDIUMTEXT;
