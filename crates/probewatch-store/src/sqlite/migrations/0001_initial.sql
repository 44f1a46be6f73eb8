-- probewatch schema v1. Never edit an applied migration: add a new file instead.

-- The ingest ledger: one row per file version ever seen (ingested or rejected).
-- A version is (path, version_hash); the UNIQUE constraint is what makes ingest exactly-once.
CREATE TABLE files (
    id             INTEGER PRIMARY KEY,
    spool          TEXT    NOT NULL,
    path           BLOB    NOT NULL,
    version_hash   BLOB    NOT NULL,
    size           INTEGER NOT NULL,
    mtime_ns       INTEGER NOT NULL,
    inode          INTEGER NOT NULL,
    outcome        INTEGER NOT NULL,          -- 1 ingested, 2 rejected
    reject_kind    TEXT,
    error          TEXT,
    probes         INTEGER NOT NULL DEFAULT 0,
    samples        INTEGER NOT NULL DEFAULT 0,
    clock_skew     INTEGER NOT NULL DEFAULT 0,
    batch_id       INTEGER NOT NULL,
    ingested_at_ms INTEGER NOT NULL,
    UNIQUE (path, version_hash)
);
CREATE INDEX files_outcome ON files (outcome, id);

-- The newest version of every path: what a restart compares size/mtime/inode against,
-- so kept files are not re-read.
CREATE TABLE file_heads (
    path     BLOB PRIMARY KEY,
    file_id  INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    outcome  INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per committed transaction, written just before COMMIT: batch sizes and the
-- commit time that the benchmark's close-to-commit latency is measured against.
CREATE TABLE batches (
    id              INTEGER PRIMARY KEY,
    committed_at_us INTEGER NOT NULL,
    files           INTEGER NOT NULL
);

-- A series is a metric name plus a canonical label set ({a="b",c="d"}, sorted).
CREATE TABLE series (
    id     INTEGER PRIMARY KEY,
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (metric, labels)
);

CREATE TABLE samples (
    series_id INTEGER NOT NULL,
    ts_ms     INTEGER NOT NULL,
    value     REAL,             -- NULL means NaN: SQLite stores a bound NaN as NULL
    PRIMARY KEY (series_id, ts_ms)
) WITHOUT ROWID;

-- Every check ever seen, with its newest result denormalised for the overview.
CREATE TABLE checks (
    id            INTEGER PRIMARY KEY,
    probe         TEXT NOT NULL,
    host          TEXT NOT NULL,
    name          TEXT NOT NULL,
    interval_ms   INTEGER,
    last_ts_ms    INTEGER NOT NULL,
    last_status   INTEGER NOT NULL,
    last_duration REAL,
    last_message  TEXT NOT NULL,
    UNIQUE (probe, host, name)
);

CREATE TABLE check_results (
    check_id INTEGER NOT NULL,
    ts_ms    INTEGER NOT NULL,
    status   INTEGER NOT NULL,
    duration REAL,
    message  TEXT    NOT NULL,
    file_id  INTEGER NOT NULL,
    PRIMARY KEY (check_id, ts_ms)
) WITHOUT ROWID;

-- Running totals, so /api/v1/stats never counts millions of rows.
CREATE TABLE stats (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    files_ingested INTEGER NOT NULL,
    files_rejected INTEGER NOT NULL,
    check_results  INTEGER NOT NULL,
    samples        INTEGER NOT NULL,
    series         INTEGER NOT NULL
);
INSERT INTO stats VALUES (1, 0, 0, 0, 0, 0);
