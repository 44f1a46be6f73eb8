-- The sample head becomes blocks: one row per ingest batch and bucket of series (series id
-- modulo 64), holding that batch's samples of those series encoded (see head_block.rs),
-- instead of one row per sample in two B-tree tables. A batch of 14,000 samples was 14,000
-- B-tree inserts; it is now at most 64 rows appended at the end of the table.
--
-- A block written later wins over an earlier one (and over chunks) for the same (series,
-- time). Blocks up to `head_frozen.upto` are frozen: compaction moves them into chunks,
-- bucket by bucket; later blocks are live. The rows of the two old head tables are moved
-- into blocks by the code that runs this migration (the frozen table's first), then the old
-- tables are dropped.

CREATE TABLE head_blocks (
    id      INTEGER PRIMARY KEY,   -- write order
    bucket  INTEGER NOT NULL,
    min_ts  INTEGER NOT NULL,
    max_ts  INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    data    BLOB    NOT NULL
);
CREATE INDEX head_blocks_bucket ON head_blocks (bucket, id);

CREATE TABLE head_frozen (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    upto INTEGER NOT NULL
);
INSERT INTO head_frozen VALUES (1, 0);
