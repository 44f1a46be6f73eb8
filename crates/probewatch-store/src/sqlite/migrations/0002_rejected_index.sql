-- Only rejected files are listed by outcome (GET /api/v1/files?status=rejected); indexing
-- every ingested row cost one more B-tree insert per file on the hot path.
DROP INDEX files_outcome;
CREATE INDEX files_rejected ON files (id) WHERE outcome = 2;
