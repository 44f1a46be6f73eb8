-- Silences: alerts matching all of a silence's matchers between its start and end are not
-- notified. Every change is recorded.
CREATE TABLE silences (
    id            INTEGER PRIMARY KEY,
    matchers      TEXT    NOT NULL,   -- JSON array of PromQL matcher texts, e.g. ["probe=\"web\""]
    starts_at_ms  INTEGER NOT NULL,
    ends_at_ms    INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    comment       TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expired_at_ms INTEGER             -- set when expired early
);

CREATE TABLE silence_events (
    id         INTEGER PRIMARY KEY,
    silence_id INTEGER NOT NULL,
    event      TEXT    NOT NULL,      -- created | expired
    at_ms      INTEGER NOT NULL,
    actor      TEXT    NOT NULL
);
