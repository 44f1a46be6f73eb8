-- Each check's history as runs of one status, so the dashboard's timeline and availability
-- over 30 days read a few rows instead of every result. A run covers [start_ms, end_ms]:
-- from its first result until its last one, or until the next run's first result when the
-- status changed without a silence in between. Time between runs is "no data".
--
-- Closed runs live here; each check's open (newest) run lives in its `checks` row, so
-- extending it costs nothing beyond the UPDATE of the check's latest state that ingest
-- makes anyway. Both are derived from check_results (the source of truth): they are built
-- after this migration, and rebuilt around any result that arrives out of order.
CREATE TABLE status_intervals (
    check_id INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms   INTEGER NOT NULL,
    status   INTEGER NOT NULL,
    results  INTEGER NOT NULL,
    PRIMARY KEY (check_id, start_ms)
) WITHOUT ROWID;

-- Checks with results that arrived out of order, and the span they fall in: their runs
-- are repaired when the writer is idle, or before a read of their intervals, so a startup
-- backlog read in directory order is not slowed down by repairs after every batch.
CREATE TABLE intervals_dirty (
    check_id INTEGER PRIMARY KEY,
    lo_ms    INTEGER NOT NULL,
    hi_ms    INTEGER NOT NULL
);

ALTER TABLE checks ADD COLUMN run_start_ms INTEGER;
ALTER TABLE checks ADD COLUMN run_end_ms INTEGER;
ALTER TABLE checks ADD COLUMN run_status INTEGER;
ALTER TABLE checks ADD COLUMN run_results INTEGER;

-- How often a check usually reports, learnt from its results; the dashboard calls a check
-- stale after 3 of these when the probe declares no interval.
ALTER TABLE checks ADD COLUMN usual_interval_ms INTEGER;

-- The interval each result declared: a result joins the run before it when it came within
-- 3 of its own interval, so a probe that changes pace keeps a truthful history.
ALTER TABLE check_results ADD COLUMN interval_ms INTEGER;
