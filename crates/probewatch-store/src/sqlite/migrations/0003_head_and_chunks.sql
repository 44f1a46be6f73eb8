-- Samples move from one row per sample to a small head plus compressed chunks.
--
-- With one row per sample keyed (series_id, ts_ms), every ingest batch touched one B-tree
-- leaf per active series: ~20 MB of WAL per thousand files once there were a few thousand
-- series. Now ingest writes into the active head table, which stays small and cache-resident;
-- compaction freezes a full head (the two heads swap roles) and moves its samples, series by
-- series in short transactions, into `chunks` (see chunk.rs for the encoding).
--
-- Reads combine chunks, then the inactive head, then the active head; a later source wins for
-- the same (series, timestamp). A series' chunks never overlap in time.

CREATE TABLE samples_head_0 (
    series_id INTEGER NOT NULL,
    ts_ms     INTEGER NOT NULL,
    value     REAL,             -- NULL means NaN: SQLite stores a bound NaN as NULL
    PRIMARY KEY (series_id, ts_ms)
) WITHOUT ROWID;

CREATE TABLE samples_head_1 (
    series_id INTEGER NOT NULL,
    ts_ms     INTEGER NOT NULL,
    value     REAL,
    PRIMARY KEY (series_id, ts_ms)
) WITHOUT ROWID;

-- Which head ingest writes to; the other one is frozen until compaction empties it.
CREATE TABLE head_state (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    active INTEGER NOT NULL CHECK (active IN (0, 1))
);

CREATE TABLE chunks (
    id        INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    min_ts    INTEGER NOT NULL,
    max_ts    INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    data      BLOB    NOT NULL
);
CREATE INDEX chunks_series ON chunks (series_id, max_ts);

-- Existing samples become the frozen head, so the first compaction turns them into chunks.
INSERT INTO samples_head_0 SELECT series_id, ts_ms, value FROM samples;
INSERT INTO head_state VALUES (1, 1);
DROP TABLE samples;
