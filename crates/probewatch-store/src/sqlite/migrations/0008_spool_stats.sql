-- Files ingested and rejected per spool, kept current by ingest and retention, so the
-- ingest page does not count the whole ledger on every view.
CREATE TABLE spool_stats (
    spool    TEXT PRIMARY KEY,
    ingested INTEGER NOT NULL,
    rejected INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO spool_stats (spool, ingested, rejected)
SELECT spool, sum(outcome = 1), sum(outcome = 2) FROM files GROUP BY spool;
