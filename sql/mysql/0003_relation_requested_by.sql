-- Version 3: remember who sent a friend request.
--
-- The old server wrote two 'pending' rows and no direction, so either side could "accept".
-- NULL means unknown (rows the old server left) and keeps that legacy behaviour for them.
-- MySQL 8 has no ADD COLUMN IF NOT EXISTS, so the guard below (checked by the engine's runner
-- against information_schema) skips the statement where the column already exists, e.g. when
-- a previous run stopped between this DDL and the version record.

-- corechat:skip-if column m_friends_relation.requested_by
ALTER TABLE m_friends_relation
  ADD COLUMN requested_by VARCHAR(20) NULL DEFAULT NULL;
