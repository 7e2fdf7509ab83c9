-- A finished file's SHA-256 when the server knows it: it matched the digest the client
-- declared, or the whole file arrived in one write (a single-request upload) and was hashed
-- on its way in. NULL otherwise (files put together from parts hashed one by one).
ALTER TABLE uploads ADD COLUMN sha256 TEXT;
-- The order files completed in, 1, 2, 3, ... given in the completing transaction (one writer
-- at a time): listings page by it, so a file that completes while a client pages through
-- always sorts before the client's cursor (completed_at has whole seconds, and the clock may
-- step back). Files completed before this column are numbered in their (completed_at, id)
-- order.
ALTER TABLE uploads ADD COLUMN completed_seq INTEGER;
CREATE TEMP TABLE completion_order AS
  SELECT id FROM uploads WHERE completed_at IS NOT NULL ORDER BY completed_at, id;
CREATE INDEX temp.completion_order_id ON completion_order(id);
UPDATE uploads SET completed_seq = (SELECT rowid FROM completion_order WHERE completion_order.id = uploads.id)
  WHERE completed_at IS NOT NULL;
DROP TABLE completion_order;
DROP INDEX IF EXISTS uploads_by_completion;
CREATE INDEX uploads_by_completion_seq ON uploads(completed_seq);
