-- The head as blocks (store::head_block), as SQLite's since its schema 12: each ingest
-- batch writes one row per bucket of series it touches instead of a row per sample with a
-- primary-key entry, and compaction decodes a bucket's blocks and merges them into the
-- series' chunks. The rows of samples_head are moved into blocks by the binary that applies
-- this migration (the encoding is Rust's), which then drops that table.
CREATE TABLE head_blocks (
    id           bigserial PRIMARY KEY,
    bucket       bigint  NOT NULL,
    first_series bigint  NOT NULL,
    last_series  bigint  NOT NULL,
    min_ts       bigint  NOT NULL,
    max_ts       bigint  NOT NULL,
    samples      integer NOT NULL,
    data         bytea   NOT NULL
);
CREATE INDEX head_blocks_bucket ON head_blocks (bucket, id);
-- Blocks are compressed already: kept out of line without a second compression.
ALTER TABLE head_blocks ALTER COLUMN data SET STORAGE EXTERNAL;
