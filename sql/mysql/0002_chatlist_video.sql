-- Version 2: let the chat list store a 'video' preview.
--
-- The old server misspelt the value as 'vedio' in m_chatlist (but not in m_friends_message), so
-- in strict SQL mode a video preview cannot be written at all. 'video' is appended at the END of
-- the ENUM: existing rows keep their stored index (old 'vedio' rows stay valid and are read back
-- as 'video' by the engine), and appending is a metadata-only change on both MySQL 8 and
-- MariaDB (no table copy). Re-running it is harmless: MODIFY to the same definition.

ALTER TABLE m_chatlist
  MODIFY COLUMN last_message_type ENUM('text','emoticon','image','audio','vedio','file','video') DEFAULT NULL;
