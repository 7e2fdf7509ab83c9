-- Uploads become byte ranges for every protocol: a size that may come later, a layout
-- (fixed slots, or one stream with its durable offset), who made it, the client's own
-- identifier and metadata, concatenation; a slot's token digest becomes optional.
-- SQLite cannot relax NOT NULL in place, so both tables are rebuilt and copied.
CREATE TABLE uploads_new (
  id TEXT PRIMARY KEY,
  protocol TEXT NOT NULL,
  owner TEXT,
  client_key TEXT,
  filename TEXT NOT NULL,
  content_type TEXT,
  metadata TEXT,
  total_size INTEGER,
  chunk_size INTEGER NOT NULL,
  layout TEXT NOT NULL DEFAULT 'slots',
  total_parts INTEGER NOT NULL DEFAULT 0,
  uploaded_parts INTEGER NOT NULL DEFAULT 0,
  durable_offset INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  checksum_sha256 TEXT,
  webhook_url TEXT,
  storage_ref TEXT,
  final_path TEXT,
  concat_of TEXT,
  partial INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  completed_at INTEGER,
  data_removed INTEGER NOT NULL DEFAULT 0);
INSERT INTO uploads_new (id, protocol, owner, filename, total_size, chunk_size, layout,
    total_parts, uploaded_parts, state, checksum_sha256, webhook_url, storage_ref,
    final_path, created_at, expires_at, completed_at, data_removed)
  SELECT id, protocol, 'key', filename, total_size, chunk_size, 'slots', total_parts,
    uploaded_parts, state, checksum_sha256, webhook_url, storage_ref, final_path,
    created_at, expires_at, completed_at, data_removed
  FROM uploads;
CREATE TABLE parts_new (
  upload_id TEXT NOT NULL REFERENCES uploads(id),
  part INTEGER NOT NULL,
  state TEXT NOT NULL,
  size INTEGER,
  checksum_sha256 TEXT,
  token_sha256 TEXT,
  storage_ref TEXT,
  uploaded_at INTEGER,
  PRIMARY KEY (upload_id, part)) WITHOUT ROWID;
INSERT INTO parts_new SELECT upload_id, part, state, size, checksum_sha256, token_sha256,
    storage_ref, uploaded_at FROM parts;
DROP TABLE parts;
DROP TABLE uploads;
ALTER TABLE uploads_new RENAME TO uploads;
ALTER TABLE parts_new RENAME TO parts;
CREATE INDEX uploads_by_expiry ON uploads(state, expires_at);
CREATE INDEX uploads_by_completion ON uploads(completed_at DESC, id DESC)
  WHERE state = 'complete' AND partial = 0;
CREATE UNIQUE INDEX uploads_by_client_key ON uploads(owner, protocol, client_key)
  WHERE client_key IS NOT NULL AND state IN ('pending', 'finalizing');
