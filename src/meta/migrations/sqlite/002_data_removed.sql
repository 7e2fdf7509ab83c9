-- Whether an ended upload's data is gone yet: removal is retried until storage confirms it.
ALTER TABLE uploads ADD COLUMN data_removed INTEGER NOT NULL DEFAULT 0;
