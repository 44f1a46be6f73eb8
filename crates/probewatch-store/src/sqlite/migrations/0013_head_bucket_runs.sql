-- Head blocks are bucketed by runs of 256 consecutive series ids ((id >> 8) modulo 64)
-- instead of one id at a time (id modulo 64), so that compaction's merge of a bucket writes
-- runs of neighbouring chunk pages instead of every page (see head_block.rs). Each block
-- records the range of series ids it holds, so that a read passes over a block without its
-- series without reading its data. The blocks written under the old rule are split under
-- the new one by the code that runs this migration, in their order, with the frozen ones
-- still frozen.

DROP INDEX head_blocks_bucket;
ALTER TABLE head_blocks RENAME TO head_blocks_by_id;

CREATE TABLE head_blocks (
    id      INTEGER PRIMARY KEY,   -- write order
    bucket  INTEGER NOT NULL,
    first_series INTEGER NOT NULL,  -- the smallest and largest series id in `data`
    last_series  INTEGER NOT NULL,
    min_ts  INTEGER NOT NULL,
    max_ts  INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    data    BLOB    NOT NULL
);
CREATE INDEX head_blocks_bucket ON head_blocks (bucket, id);
