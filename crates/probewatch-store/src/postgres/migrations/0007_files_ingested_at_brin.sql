-- Retention finds old ledger rows by the time they were ingested, and rows are appended in
-- that order. A block-range index (a few pages: each range of blocks' least and greatest
-- time) serves that as well as the B-tree did, which every batch had to update once for
-- each of its files.
DROP INDEX files_ingested_at;
CREATE INDEX files_ingested_at ON files USING brin (ingested_at_ms) WITH (autosummarize = on);
