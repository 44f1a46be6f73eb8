-- Alerting: rule state that survives a restart, a durable notification outbox with every
-- delivery attempt, and the history of alert state changes.

-- The active (pending or firing) alerts of every alert rule, replaced per rule after each
-- evaluation in the same transaction as the notifications it produced.
CREATE TABLE alerts (
    rule_key             TEXT    NOT NULL,   -- group name, NUL, rule name, NUL, rule index
    labels               TEXT    NOT NULL,   -- the alert's labels, canonical text
    state                INTEGER NOT NULL,   -- 1 pending, 2 firing
    active_at_ms         INTEGER NOT NULL,
    fired_at_ms          INTEGER,
    keep_firing_since_ms INTEGER,
    last_sent_ms         INTEGER,            -- last firing notification, for repeat_interval
    value                REAL,
    annotations          TEXT    NOT NULL,   -- JSON object
    PRIMARY KEY (rule_key, labels)
) WITHOUT ROWID;

-- Every state change, for the dashboard's alert history.
CREATE TABLE alert_events (
    id       INTEGER PRIMARY KEY,
    rule_key TEXT    NOT NULL,
    labels   TEXT    NOT NULL,
    event    TEXT    NOT NULL,   -- pending | firing | resolved
    at_ms    INTEGER NOT NULL,
    value    REAL
);

-- The outbox: a notification is committed with the state change that caused it, and stays
-- until a receiver accepted it.
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    receiver        TEXT    NOT NULL,
    payload         TEXT    NOT NULL,   -- JSON, the receiver's body
    created_at_ms   INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at_ms INTEGER,
    last_error      TEXT
);
CREATE INDEX notifications_due ON notifications (next_attempt_ms) WHERE delivered_at_ms IS NULL;

CREATE TABLE notification_attempts (
    id              INTEGER PRIMARY KEY,
    notification_id INTEGER NOT NULL,
    at_ms           INTEGER NOT NULL,
    ok              INTEGER NOT NULL,
    detail          TEXT    NOT NULL
);
