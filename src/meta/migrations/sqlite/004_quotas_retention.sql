-- When an upload ended (cancelled, expired, deleted), so that ended uploads can be pruned
-- after a retention time; uploads that ended before this column count from their expiry.
-- An index for what an owner has open (quotas).
ALTER TABLE uploads ADD COLUMN ended_at INTEGER;
CREATE INDEX uploads_by_owner ON uploads(owner, state);
