-- What an upload's first bytes are (libmagic's finding, when ALLOWED_TYPES is set), and why an
-- upload failed: a file of a type that is not allowed ends as 'failed', with the error's name
-- (failure_code, e.g. 'media_type') and its message, which later requests are answered with.
ALTER TABLE uploads ADD COLUMN detected_type TEXT;
ALTER TABLE uploads ADD COLUMN failure_code TEXT;
ALTER TABLE uploads ADD COLUMN failure_reason TEXT;
