-- A finished file's SHA-256 when the server knows it: it matched the digest the client
-- declared, or the whole file arrived in one write (a single-request upload) and was hashed
-- on its way in. NULL otherwise (files put together from parts hashed one by one).
ALTER TABLE uploads ADD COLUMN sha256 TEXT;
