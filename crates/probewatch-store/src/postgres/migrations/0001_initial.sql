-- probewatch on PostgreSQL: the whole store, as the SQLite back end's ten migrations left it,
-- plus what several servers on one database need (a leader lease, instance heartbeats and
-- claims on notifications being sent).

-- The ingest ledger: one row per file version (path + content hash), the exactly-once check.
CREATE TABLE files (
    id             bigserial PRIMARY KEY,
    spool          text     NOT NULL,
    path           bytea    NOT NULL,
    version_hash   bytea    NOT NULL,
    size           bigint   NOT NULL,
    mtime_ns       bigint   NOT NULL,
    inode          bigint   NOT NULL,
    outcome        smallint NOT NULL,          -- 1 ingested, 2 rejected
    reject_kind    text,
    error          text,
    probes         integer  NOT NULL DEFAULT 0,
    samples        integer  NOT NULL DEFAULT 0,
    clock_skew     boolean  NOT NULL DEFAULT false,
    batch_id       bigint   NOT NULL,
    ingested_at_ms bigint   NOT NULL,
    UNIQUE (path, version_hash)
);
CREATE INDEX files_rejected ON files (id) WHERE outcome = 2;
CREATE INDEX files_ingested_at ON files (ingested_at_ms);

-- The newest version of each path, for the restart fast path.
CREATE TABLE file_heads (
    path     bytea    PRIMARY KEY,
    file_id  bigint   NOT NULL,
    size     bigint   NOT NULL,
    mtime_ns bigint   NOT NULL,
    inode    bigint   NOT NULL,
    outcome  smallint NOT NULL
);

-- One row per committed batch (the ingest page's rate). Ids come from a sequence: several
-- servers commit batches at once.
CREATE TABLE batches (
    id              bigserial PRIMARY KEY,
    committed_at_us bigint  NOT NULL,
    files           integer NOT NULL
);
CREATE INDEX batches_committed ON batches (committed_at_us);

CREATE TABLE series (
    id     bigserial PRIMARY KEY,
    metric text NOT NULL,
    labels text NOT NULL,
    UNIQUE (metric, labels)
);

-- Samples not yet compacted: (series, time) → value, the value's 8 bytes kept exactly
-- (float8 would fold NaN payloads, and Prometheus's stale marker is one).
CREATE TABLE samples_head (
    series_id bigint NOT NULL,
    ts_ms     bigint NOT NULL,
    value     float8 NOT NULL,
    bits      bigint,                          -- set only for a NaN other than the plain one
    PRIMARY KEY (series_id, ts_ms)
);

-- Compressed runs of one series' samples (store::chunk), disjoint in time per series.
-- Partitioned by day of their newest sample (chunks_d<day number>, made ahead of time by
-- the store), so retention drops a day at a time; the default partition takes what falls
-- outside the days made (backfill), and retention deletes its rows.
CREATE TABLE chunks (
    id        bigserial,
    series_id bigint  NOT NULL,
    min_ts    bigint  NOT NULL,
    max_ts    bigint  NOT NULL,
    samples   integer NOT NULL,
    data      bytea   NOT NULL,
    PRIMARY KEY (id, max_ts)
) PARTITION BY RANGE (max_ts);
CREATE TABLE chunks_default PARTITION OF chunks DEFAULT;
CREATE INDEX chunks_series ON chunks (series_id, max_ts);

CREATE TABLE checks (
    id                bigserial PRIMARY KEY,
    probe             text     NOT NULL,
    host              text     NOT NULL,
    name              text     NOT NULL,
    interval_ms       bigint,
    last_ts_ms        bigint   NOT NULL,
    last_status       smallint NOT NULL,
    last_duration     float8,
    last_message      text     NOT NULL,
    run_start_ms      bigint,
    run_end_ms        bigint,
    run_status        smallint,
    run_results       bigint,
    usual_interval_ms bigint,
    UNIQUE (probe, host, name)
);

-- Partitioned by day like chunks (check_results_d<day number>, and a default partition).
CREATE TABLE check_results (
    check_id    bigint   NOT NULL,
    ts_ms       bigint   NOT NULL,
    status      smallint NOT NULL,
    duration    float8,
    message     text     NOT NULL,
    file_id     bigint   NOT NULL,
    interval_ms bigint,
    PRIMARY KEY (check_id, ts_ms)
) PARTITION BY RANGE (ts_ms);
CREATE TABLE check_results_default PARTITION OF check_results DEFAULT;

CREATE TABLE status_intervals (
    check_id bigint   NOT NULL,
    start_ms bigint   NOT NULL,
    end_ms   bigint   NOT NULL,
    status   smallint NOT NULL,
    results  bigint   NOT NULL,
    PRIMARY KEY (check_id, start_ms)
);

CREATE TABLE intervals_dirty (
    check_id bigint PRIMARY KEY,
    lo_ms    bigint NOT NULL,
    hi_ms    bigint NOT NULL
);

-- Running totals. One row per writer would spread the lock; one row is simplest and a
-- batch holds it only for its last statement.
CREATE TABLE stats (
    id             integer PRIMARY KEY CHECK (id = 1),
    files_ingested bigint NOT NULL,
    files_rejected bigint NOT NULL,
    check_results  bigint NOT NULL,
    samples        bigint NOT NULL,
    series         bigint NOT NULL
);
INSERT INTO stats VALUES (1, 0, 0, 0, 0, 0);

CREATE TABLE spool_stats (
    spool    text PRIMARY KEY,
    ingested bigint NOT NULL,
    rejected bigint NOT NULL
);

-- rule_key is group name, NUL, rule name, NUL, rule index: bytea, as text cannot hold NUL.
CREATE TABLE alerts (
    rule_key             bytea    NOT NULL,
    labels               text     NOT NULL,
    state                smallint NOT NULL,    -- 1 pending, 2 firing
    active_at_ms         bigint   NOT NULL,
    fired_at_ms          bigint,
    keep_firing_since_ms bigint,
    last_sent_ms         bigint,
    value                float8,
    annotations          text     NOT NULL,    -- JSON object
    PRIMARY KEY (rule_key, labels)
);

CREATE TABLE alert_events (
    id       bigserial PRIMARY KEY,
    rule_key bytea  NOT NULL,
    labels   text   NOT NULL,
    event    text   NOT NULL,                  -- pending | firing | resolved
    at_ms    bigint NOT NULL,
    value    float8
);

CREATE TABLE notifications (
    id              bigserial PRIMARY KEY,
    receiver        text    NOT NULL,
    payload         text    NOT NULL,          -- JSON, the receiver's body
    created_at_ms   bigint  NOT NULL,
    next_attempt_ms bigint  NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    delivered_at_ms bigint,
    last_error      text,
    group_key       text    NOT NULL DEFAULT '',
    send_at_ms      bigint,
    failed_at_ms    bigint,
    claimed_until_ms bigint                    -- a server's lane is sending it until then
);
CREATE INDEX notifications_lane ON notifications (receiver, next_attempt_ms)
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;
CREATE INDEX notifications_group ON notifications (receiver, group_key, send_at_ms);

CREATE TABLE notification_attempts (
    id              bigserial PRIMARY KEY,
    notification_id bigint  NOT NULL,
    at_ms           bigint  NOT NULL,
    ok              boolean NOT NULL,
    detail          text    NOT NULL
);
CREATE INDEX notification_attempts_of ON notification_attempts (notification_id);

CREATE TABLE silences (
    id            bigserial PRIMARY KEY,
    matchers      text   NOT NULL,             -- JSON array of PromQL matcher texts
    starts_at_ms  bigint NOT NULL,
    ends_at_ms    bigint NOT NULL,
    created_by    text   NOT NULL,
    comment       text   NOT NULL,
    created_at_ms bigint NOT NULL,
    expired_at_ms bigint
);

CREATE TABLE silence_events (
    id         bigserial PRIMARY KEY,
    silence_id bigint NOT NULL,
    event      text   NOT NULL,                -- created | expired
    at_ms      bigint NOT NULL,
    actor      text   NOT NULL
);

-- Several servers, one rule evaluator: the holder of this row's lease evaluates, and every
-- alert-state transaction checks that its epoch is still the current one (fencing).
CREATE TABLE leader_lease (
    id         integer PRIMARY KEY CHECK (id = 1),
    holder     text,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
INSERT INTO leader_lease VALUES (1, NULL, 0, '-infinity');

-- Each server's heartbeat, for the dashboard's cluster view.
CREATE TABLE instances (
    id           text PRIMARY KEY,
    address      text        NOT NULL,
    version      text        NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);
