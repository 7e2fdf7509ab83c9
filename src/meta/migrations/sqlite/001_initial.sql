-- The first schema: uploads in fixed-size parts, each with its token's digest, and the
-- webhook outbox.
CREATE TABLE uploads (
  id TEXT PRIMARY KEY,
  protocol TEXT NOT NULL,
  filename TEXT NOT NULL,
  total_size INTEGER NOT NULL,
  chunk_size INTEGER NOT NULL,
  total_parts INTEGER NOT NULL,
  uploaded_parts INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  checksum_sha256 TEXT,
  webhook_url TEXT,
  storage_ref TEXT,
  final_path TEXT,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  completed_at INTEGER);
CREATE INDEX uploads_by_expiry ON uploads(state, expires_at);
CREATE TABLE parts (
  upload_id TEXT NOT NULL REFERENCES uploads(id),
  part INTEGER NOT NULL,
  state TEXT NOT NULL,
  size INTEGER,
  checksum_sha256 TEXT,
  token_sha256 TEXT NOT NULL,
  storage_ref TEXT,
  uploaded_at INTEGER,
  PRIMARY KEY (upload_id, part)) WITHOUT ROWID;
CREATE TABLE webhooks (
  id INTEGER PRIMARY KEY,
  upload_id TEXT NOT NULL,
  url TEXT NOT NULL,
  body TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  delivered_at INTEGER,
  gave_up_at INTEGER,
  last_error TEXT);
CREATE INDEX webhooks_due ON webhooks(next_attempt_at)
  WHERE delivered_at IS NULL AND gave_up_at IS NULL;
