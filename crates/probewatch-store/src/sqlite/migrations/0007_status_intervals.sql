-- Each check's history as runs of one status, so the dashboard's timeline and availability
-- over 30 days read a few rows instead of every result. A run covers [start_ms, end_ms]:
-- from its first result until its last one, or until the next run's first result when the
-- status changed without a silence in between. Time between runs is "no data".
-- Rows are rebuilt from check_results (the source of truth) after this migration and
-- whenever a result arrives out of order.
CREATE TABLE status_intervals (
    check_id INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms   INTEGER NOT NULL,
    status   INTEGER NOT NULL,
    results  INTEGER NOT NULL,
    PRIMARY KEY (check_id, start_ms)
) WITHOUT ROWID;

-- How often a check usually reports, learnt from its results; the dashboard calls a check
-- stale after 3 of these when the probe declares no interval.
ALTER TABLE checks ADD COLUMN usual_interval_ms INTEGER;
