//! The PostgreSQL back end: one store for many hosts and several probewatch servers.
//!
//! The same promises as the SQLite back end, kept by PostgreSQL's transactions instead of a
//! single writer: a file version's ledger row (`UNIQUE (path, version_hash)`) commits in the
//! same transaction as its results, so two servers offered the same file store it once.
//! Ledger rows, series and checks are written by COPY under a savepoint, falling back to
//! `INSERT … ON CONFLICT DO NOTHING` when one exists, so servers ingesting at once never
//! make one twice.
//!
//! The store's traits are synchronous, as the writer, the rule evaluator and the HTTP
//! handlers (through `spawn_blocking`) call them from ordinary threads; so this back end uses
//! the synchronous `postgres` client with an r2d2 pool rather than async tokio-postgres.

mod alerting;
mod checks;
mod cluster;
mod intervals;
mod ledger;
mod partitions;
mod samples;
mod spans;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use crate::StoreError;
use crate::id_cache::IdCache;

/// Versioned schema changes, applied in order; the number of a migration is its position.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_checks_autovacuum.sql"),
    include_str!("migrations/0003_acknowledgements.sql"),
    include_str!("migrations/0004_head_blocks.sql"),
    include_str!("migrations/0005_names_in_byte_order.sql"),
    include_str!("migrations/0006_checks_room_to_update.sql"),
];

/// The migration after which the rows of the old per-sample head are moved into blocks.
const HEAD_BLOCKS_MIGRATION: usize = 4;

/// Backfilled check results (days before yesterday) after which the default partition is
/// analyzed ([`PgStore::analyze_after_backfill`]).
const BACKFILL_ANALYZE_ROWS: u64 = 10_000;

/// Least time between two such analyses by one process (ms).
const BACKFILL_ANALYZE_EVERY_MS: i64 = 600_000;

/// Head samples that start a compaction drain. Smaller than SQLite's: several servers
/// share the head, and a read of many series decodes every block of their buckets.
pub const DEFAULT_HEAD_MAX_SAMPLES: u64 = 131_072;

/// With the default head size, a drain also waits for this many head samples per stored
/// series. A drain rewrites the newest chunk of every series it moves samples of; with
/// 700,000 series, 131,072 samples meant a chunk rewritten for every sample or two, and
/// compaction took most of the server's time at 100,000 checks.
pub const HEAD_SAMPLES_PER_SERIES: u64 = 8;

/// The advisory lock key that serializes migrations between servers starting together
/// ("probewatch" folded into 63 bits).
const MIGRATION_LOCK: i64 = 0x7072_6f62_6577_6174;

/// What a URL that leaves the TCP settings unset gets (the driver's defaults are the
/// kernel's): a database that vanishes from the network without closing its connections (a
/// failed primary's host, a cut link) is noticed within about a minute, where the kernel's
/// retransmissions would hold a commit for ~15 minutes, ingest stalled on a connection to
/// a host that is gone while a promoted standby waits. Sent data unacknowledged for
/// `TCP_USER_TIMEOUT` fails the connection; an idle one is probed after `KEEPALIVES_IDLE`.
/// A live server acknowledges both however long its statement runs.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVES_RETRIES: u32 = 3;
/// The driver's default keepalive idle time, which a URL without `keepalives_idle` has.
const DRIVER_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// How long a statement waits for a lock another session holds before it fails (the
/// server's `lock_timeout`, set for this store's sessions unless the URL's `options` set
/// it). probewatch's own lock waits last a batch at most; a session that holds a table for
/// minutes (a `LOCK TABLE`, a `VACUUM FULL`, a stuck transaction) would otherwise hold
/// ingest with it, and readiness could only say that ingest stalled, not why. The commit
/// then fails with "canceling statement due to lock timeout", says so, and is retried.
const LOCK_TIMEOUT: &str = "20s";

/// How often the pool's failures to open a connection are logged at most: while the
/// database is away each of its threads fails several times a second.
const CONNECT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a caller waits for a pooled connection: short, so that a reader (a page,
/// `/-/ready`) learns soon that the database is away.
const CONNECTION_WAIT: Duration = Duration::from_secs(3);

/// Connections the pool keeps at most: the writer, the rule evaluator, the notifier lanes
/// and the HTTP readers.
const POOL_SIZE: u32 = 16;

impl From<postgres::Error> for StoreError {
    fn from(err: postgres::Error) -> StoreError {
        let sentence = describe(&err);
        let unavailable = err.is_closed()
            || err.as_db_error().map_or_else(
                || is_connection_error(&err),
                // Class 08: connection exceptions; 57: the server is shutting down or starting.
                |db| matches!(&db.code().code()[..2], "08" | "57"),
            );
        if unavailable {
            return StoreError::Unreachable(format!("PostgreSQL is unavailable: {sentence}"));
        }
        StoreError::Database(Box::new(PgError {
            sentence,
            source: err,
        }))
    }
}

/// A PostgreSQL error whose message says what the server said (the driver's own says only
/// "db error").
#[derive(Debug)]
struct PgError {
    sentence: String,
    source: postgres::Error,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL: {}", self.sentence)
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What went wrong, in one line: the server's message and code, or the error and its causes.
fn describe(err: &postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(": {detail}"));
        }
        return text;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

impl From<r2d2::Error> for StoreError {
    fn from(err: r2d2::Error) -> StoreError {
        StoreError::Unreachable(format!("no PostgreSQL connection available: {err}"))
    }
}

/// Whether an error without a server error code is the connection failing (as opposed to,
/// say, a value that does not convert).
fn is_connection_error(err: &postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether a failed transaction is worth running again as it was: a deadlock with, or a
/// serialization failure against, another server's transaction.
fn retryable(err: &StoreError) -> bool {
    sql_state(err).is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// The SQLSTATE the server gave for a failed statement, if it got that far.
fn sql_state(err: &StoreError) -> Option<&SqlState> {
    let StoreError::Database(source) = err else {
        return None;
    };
    source
        .downcast_ref::<PgError>()
        .and_then(|e| e.source.code())
}

/// The pool's connection manager: rust-postgres's, but a connection is checked (one empty
/// query) only when it has been idle a while, not at every checkout — a connection broken by
/// a database restart is found before it is handed out, and a busy server pays nothing.
#[derive(Debug)]
struct Manager(PostgresConnectionManager<NoTls>);

/// A pooled connection, when it was last given back, and the statements prepared on it.
pub(super) struct Conn {
    client: Client,
    returned: std::time::Instant,
    statements: HashMap<&'static str, postgres::Statement>,
}

impl Conn {
    /// `sql` prepared once on this connection, so that the server keeps its plan: an
    /// unnamed statement is planned again at every execution (0.23 ms for a rule group's
    /// read, 20 times a cycle).
    pub(super) fn prepared(
        &mut self,
        sql: &'static str,
        types: &[postgres::types::Type],
    ) -> Result<postgres::Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare_typed(sql, types)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// `sql` run with `params` as a statement prepared once on this connection (see
    /// [`Conn::prepared`]): one round trip, where the client's own `query` with a text
    /// first prepares an unnamed statement (a round trip of its own) and the server plans
    /// it again each time. Every read a page makes goes through here or `query_typed`.
    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        let statement = self.prepared(sql, &[])?;
        self.client.query(&statement, params)
    }

    /// [`Conn::query`] for exactly one row.
    pub(super) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<postgres::Row, postgres::Error> {
        let statement = self.prepared(sql, &[])?;
        self.client.query_one(&statement, params)
    }

    /// [`Conn::query`] for at most one row.
    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<postgres::Row>, postgres::Error> {
        let statement = self.prepared(sql, &[])?;
        self.client.query_opt(&statement, params)
    }

    /// [`Conn::query`] for a statement that returns no rows: the rows it changed.
    pub(super) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.prepared(sql, &[])?;
        self.client.execute(&statement, params)
    }

    /// The client and the statements prepared on it, borrowed apart: a transaction of the
    /// one uses the other ([`PreparedTx`]).
    pub(super) fn parts(&mut self) -> (&mut Client, &mut Statements) {
        (&mut self.client, &mut self.statements)
    }
}

/// Statements prepared on one connection, by their text.
pub(super) type Statements = HashMap<&'static str, postgres::Statement>;

/// A transaction whose statements are prepared once per connection. An unnamed statement
/// costs a round trip of its own (parse and describe) before it runs, and is planned again
/// each time: an ingest batch ran a dozen of them. Its `execute`, `query` and `query_one`
/// take the statement's text, as the transaction's own do, and `statement` gives the
/// prepared statement (for a COPY); everything else is the transaction's (through `Deref`).
pub(super) struct PreparedTx<'a, 't> {
    tx: &'a mut postgres::Transaction<'t>,
    statements: &'a mut Statements,
}

impl<'a, 't> PreparedTx<'a, 't> {
    pub(super) fn new(
        tx: &'a mut postgres::Transaction<'t>,
        statements: &'a mut Statements,
    ) -> Self {
        PreparedTx { tx, statements }
    }

    /// `sql`, prepared on this connection the first time it is asked for.
    pub(super) fn statement(
        &mut self,
        sql: &'static str,
    ) -> Result<postgres::Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        // Prepared statements outlive the transaction, even one that rolls back.
        let statement = self.tx.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    pub(super) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        self.tx.execute(&statement, params)
    }

    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.tx.query(&statement, params)
    }

    pub(super) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<postgres::Row, postgres::Error> {
        let statement = self.statement(sql)?;
        self.tx.query_one(&statement, params)
    }
}

impl<'t> std::ops::Deref for PreparedTx<'_, 't> {
    type Target = postgres::Transaction<'t>;
    fn deref(&self) -> &Self::Target {
        self.tx
    }
}

impl std::ops::DerefMut for PreparedTx<'_, '_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.tx
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Idle time after which a connection is checked before use.
const CHECK_IDLE_AFTER: Duration = Duration::from_millis(500);

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Conn, postgres::Error> {
        Ok(Conn {
            client: self.0.connect()?,
            returned: std::time::Instant::now(),
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), postgres::Error> {
        if conn.returned.elapsed() < CHECK_IDLE_AFTER {
            return Ok(());
        }
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.returned = std::time::Instant::now();
        conn.client.is_closed()
    }
}

/// A PostgreSQL store. Cheap to share: connections come from a pool.
pub struct PgStore {
    /// `None` only while the store is dropped (see `Drop`).
    pool: Option<r2d2::Pool<Manager>>,
    /// The URL with its password hidden, for messages.
    shown: String,
    /// This process's caches of series and check ids; a miss asks the database, so several
    /// servers each keep their own.
    ids: Mutex<IdCaches>,
    /// Head samples that start a compaction drain.
    head_max: u64,
    /// Head samples per stored series that a drain also waits for (0 when the size was set
    /// explicitly).
    head_per_series: u64,
    /// While a drain is under way, the newest head block it moves (compaction steps move
    /// the blocks up to it, bucket by bucket); 0 when none is.
    drain_upto: std::sync::atomic::AtomicI64,
    /// The evaluator's lease this store last took (holder, epoch): alert-state writes check
    /// it is still current.
    fence: Mutex<Option<(String, i64)>>,
    /// When the day partitions ahead were last made (ms).
    partitions_made_at: std::sync::atomic::AtomicI64,
    /// Each series' chunk span, for presence questions over many series.
    spans: spans::ChunkSpans,
    /// The head blocks this process has read.
    head_cache: samples::HeadCache,
    /// A vacuum after a drain is running (see [`PgStore::vacuum_after_drain`]).
    vacuuming: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Check results this process wrote for days before yesterday since the default
    /// partition was last analyzed (see [`PgStore::analyze_after_backfill`]).
    backfilled: std::sync::atomic::AtomicU64,
    /// When this process last analyzed it (ms; 0: never).
    backfill_analyzed_at: std::sync::atomic::AtomicI64,
}

#[derive(Default)]
struct IdCaches {
    series: IdCache,
    checks: IdCache,
}

/// Closing a connection blocks on its socket, which panics on a thread that drives async
/// tasks (where an HTTP server may drop the last handle to the store): the pool is dropped
/// on a thread of its own.
impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::Builder::new()
                .name("pw-pg-close".into())
                .spawn(move || drop(pool))
                .map(|closer| closer.join());
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// `url` as it may be shown: `postgres://user@host:port/database`, never the password.
pub fn redact_url(url: &str) -> String {
    match postgres::Config::from_str(url) {
        Ok(config) => shown(&config),
        Err(_) => "(an unparsable PostgreSQL URL)".to_string(),
    }
}

fn shown(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            postgres::config::Host::Unix(dir) => format!("{}:{port}", dir.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or `key=value` settings),
    /// with `password` when given (it overrides one in the URL), checks that it can write
    /// there, and brings the schema up to date. Fails with [`StoreError::Unreachable`] when
    /// the server cannot be reached (worth retrying) and [`StoreError::Refused`] when it
    /// answered no (wrong password, no such database, a read-only standby).
    pub fn open(url: &str, password: Option<&str>) -> Result<PgStore, StoreError> {
        let mut config = postgres::Config::from_str(url).map_err(|err| {
            StoreError::Refused(format!("the PostgreSQL URL is not valid: {err}"))
        })?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        detect_vanished_server(&mut config);
        bound_lock_waits(&mut config);
        // Which process a session belongs to, for pg_stat_activity (and an operator who must
        // end one server's sessions).
        config.application_name(&format!("probewatch/{}", std::process::id()));
        let shown = shown(&config);
        let mut client = config
            .connect(NoTls)
            .map_err(|err| connect_error(&shown, &config, &err))?;
        let standby: bool = client.query_one("SELECT pg_is_in_recovery()", &[])?.get(0);
        if standby {
            return Err(StoreError::Refused(format!(
                "PostgreSQL at {shown} is a read-only standby (pg_is_in_recovery() is true): \
                 point the store at the primary"
            )));
        }
        migrate(&mut client)?;
        partitions::ensure(&mut client, now_ms())?;
        let connect_errors = ConnectErrorLog::new(&shown, &config);
        let manager = Manager(PostgresConnectionManager::new(config, NoTls));
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECTION_WAIT)
            // A connection idle for a while (perhaps broken by a database restart) is checked
            // before it is handed out, not by the request that would fail on it.
            .test_on_check_out(true)
            .error_handler(Box::new(connect_errors))
            .build_unchecked(manager);
        Ok(PgStore {
            pool: Some(pool),
            shown,
            ids: Mutex::new(IdCaches::default()),
            head_max: DEFAULT_HEAD_MAX_SAMPLES,
            head_per_series: HEAD_SAMPLES_PER_SERIES,
            drain_upto: std::sync::atomic::AtomicI64::new(0),
            fence: Mutex::new(None),
            partitions_made_at: std::sync::atomic::AtomicI64::new(now_ms()),
            spans: spans::ChunkSpans::default(),
            head_cache: samples::HeadCache::default(),
            vacuuming: Default::default(),
            backfilled: Default::default(),
            backfill_analyzed_at: Default::default(),
        })
    }

    /// Sets how many head samples start a compaction drain, whatever the number of series
    /// (by default [`DEFAULT_HEAD_MAX_SAMPLES`], or [`HEAD_SAMPLES_PER_SERIES`] per series
    /// when that is more); tests use small values to compact often.
    pub fn with_head_max_samples(mut self, samples: u64) -> PgStore {
        self.head_max = samples.max(1);
        self.head_per_series = 0;
        self
    }

    /// Makes the day partitions ahead, at most every ten minutes (the writer calls this
    /// between batches, through compaction).
    fn keep_partitions_ahead(&self, client: &mut postgres::Client) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        let last = self.partitions_made_at.load(Ordering::Relaxed);
        if now - last < 600_000 {
            return Ok(());
        }
        self.partitions_made_at.store(now, Ordering::Relaxed);
        partitions::ensure(client, now)
    }

    /// Analyzes the default partition of `check_results` once this process has written
    /// [`BACKFILL_ANALYZE_ROWS`] results for days before yesterday (a backfill: days that
    /// have no partition land there), at most every [`BACKFILL_ANALYZE_EVERY_MS`]: results
    /// that keep arriving with old times (a probe's clock days behind, the ingest bench's
    /// fixed 2023 times) would otherwise analyze it every few seconds. One analysis early in
    /// a backfill is enough: the planner scales the frequencies it records by the
    /// partition's size when it plans.
    ///
    /// Right after a 30-day backfill of one check, the partition's statistics were those of
    /// before it: the planner expected 6 of that check's rows and sorted all 259,200 to show
    /// its newest 100 (48–99 ms for the check's page instead of ~2). Autovacuum analyzes
    /// within about a minute; this does it at the next compaction step.
    fn analyze_after_backfill(&self, client: &mut postgres::Client) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let rows = self.backfilled.load(Ordering::Relaxed);
        if rows < BACKFILL_ANALYZE_ROWS {
            return Ok(());
        }
        let now = now_ms();
        let last = self.backfill_analyzed_at.load(Ordering::Relaxed);
        if last != 0 && now - last < BACKFILL_ANALYZE_EVERY_MS {
            return Ok(());
        }
        self.backfill_analyzed_at.store(now, Ordering::Relaxed);
        self.backfilled.fetch_sub(rows, Ordering::Relaxed);
        let started = std::time::Instant::now();
        client.batch_execute("ANALYZE check_results_default")?;
        tracing::info!(
            rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "analyzed the check results of days before the partitions, after a backfill"
        );
        Ok(())
    }

    /// Vacuums the chunks and head blocks on a thread of its own, once a drain has ended.
    ///
    /// A drain rewrites every drained series' newest chunk and deletes the head blocks it
    /// moved, leaving a dead row version and index entry behind for each. Until they are
    /// vacuumed every read walks them: right after the drains of a load, a rule group's read
    /// met ~12 index entries per live chunk, and a rule cycle took 89 ms against 65 ms once
    /// vacuumed. Autovacuum gets there within minutes; reads should not wait that long.
    /// `SKIP_LOCKED`: when another server (or autovacuum) is at it already, this one skips.
    fn vacuum_after_drain(&self) {
        use std::sync::atomic::Ordering;
        let Some(pool) = self.pool.clone() else {
            return;
        };
        if self.vacuuming.swap(true, Ordering::AcqRel) {
            return; // the last one is still running
        }
        let running = self.vacuuming.clone();
        let spawned = std::thread::Builder::new()
            .name("pw-pg-vacuum".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let done = pool.get().map_err(StoreError::from).and_then(|mut client| {
                    client
                        .batch_execute("VACUUM (SKIP_LOCKED) chunks, head_blocks")
                        .map_err(StoreError::from)
                });
                match done {
                    Ok(()) => tracing::debug!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "vacuumed the chunks and head blocks after a drain"
                    ),
                    Err(err) => tracing::warn!(
                        error = %err,
                        "vacuum after a drain failed; autovacuum will get to it"
                    ),
                }
                running.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.vacuuming.store(false, Ordering::Release);
        }
    }

    /// The database URL, password hidden.
    pub fn url(&self) -> &str {
        &self.shown
    }

    fn client(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        match &self.pool {
            Some(pool) => pool.get().map_err(|err| {
                StoreError::Unreachable(format!(
                    "no connection to PostgreSQL at {} within {} s: {err}",
                    self.shown,
                    CONNECTION_WAIT.as_secs()
                ))
            }),
            None => Err(StoreError::Unreachable("the store is closing".into())),
        }
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, IdCaches> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sets the TCP timeouts a URL left to the kernel (see [`TCP_USER_TIMEOUT`]). A URL's own
/// `tcp_user_timeout`, `keepalives_idle`, `keepalives_interval` and `keepalives_retries`
/// (seconds, as the driver reads them) are kept.
fn detect_vanished_server(config: &mut postgres::Config) {
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
}

/// Sets [`LOCK_TIMEOUT`] in the sessions' options, unless the URL's options set a
/// `lock_timeout` of their own.
fn bound_lock_waits(config: &mut postgres::Config) {
    let options = config.get_options().unwrap_or("");
    if !options.contains("lock_timeout") {
        let joined = format!("{options} -c lock_timeout={LOCK_TIMEOUT}");
        config.options(joined.trim_start());
    }
}

/// The pool's failures to open a connection, logged as one sentence naming the server (its
/// password hidden) at most every [`CONNECT_ERROR_LOG_EVERY`], with how many were not
/// logged since; r2d2's own handler logs "error connecting to server" for every attempt.
struct ConnectErrorLog {
    shown: String,
    config: postgres::Config,
    /// When a failure was last logged, and the failures since.
    last: Mutex<(Option<std::time::Instant>, u64)>,
}

impl ConnectErrorLog {
    fn new(shown: &str, config: &postgres::Config) -> ConnectErrorLog {
        ConnectErrorLog {
            shown: shown.to_string(),
            config: config.clone(),
            last: Mutex::new((None, 0)),
        }
    }
}

impl std::fmt::Debug for ConnectErrorLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectErrorLog")
            .field("server", &self.shown)
            .finish_non_exhaustive()
    }
}

impl r2d2::HandleError<postgres::Error> for ConnectErrorLog {
    fn handle_error(&self, err: postgres::Error) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last
            .0
            .is_some_and(|at| now.duration_since(at) < CONNECT_ERROR_LOG_EVERY)
        {
            last.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut last.1);
        last.0 = Some(now);
        drop(last);
        // What the server said, in connect_error's words; or why it was not reached, with
        // every cause (the driver's own message is only "error connecting to server").
        let sentence = match connect_error(&self.shown, &self.config, &err) {
            StoreError::Refused(s) => s,
            _ if err.as_db_error().is_none() => {
                format!(
                    "cannot reach PostgreSQL at {}: {}",
                    self.shown,
                    describe(&err)
                )
            }
            other => other.to_string(),
        };
        tracing::warn!(
            suppressed,
            "cannot open a connection to the store: {sentence}"
        );
    }
}

/// One sentence for a failed connection: what PostgreSQL said, or that it was not reached.
fn connect_error(shown: &str, config: &postgres::Config, err: &postgres::Error) -> StoreError {
    let user = config.get_user().unwrap_or("");
    let database = config.get_dbname().unwrap_or(user);
    let Some(db) = err.as_db_error() else {
        return StoreError::Unreachable(format!("cannot reach PostgreSQL at {shown}: {err}"));
    };
    let code = db.code();
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        StoreError::Refused(format!(
            "PostgreSQL at {shown} refused user {user:?}: wrong password, or no pg_hba.conf \
             entry lets it in ({})",
            db.message()
        ))
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        StoreError::Refused(format!(
            "PostgreSQL at {shown} has no database {database:?}: create it (createdb -O \
             {user} {database}) or correct the URL"
        ))
    } else if *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::TOO_MANY_CONNECTIONS {
        StoreError::Unreachable(format!(
            "PostgreSQL at {shown} cannot take a connection now: {}",
            db.message()
        ))
    } else {
        StoreError::Refused(format!(
            "PostgreSQL at {shown} refused the connection: {}",
            db.message()
        ))
    }
}

/// Applies the migrations this database has not had, under an advisory lock so that
/// servers starting together apply each once; refuses a schema newer than this build.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // A server starting beside one that migrates waits for it however long it takes.
    tx.batch_execute("SET LOCAL lock_timeout = 0")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS probewatch_schema (
            version    integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM probewatch_schema",
            &[],
        )?
        .get(0);
    let supported = MIGRATIONS.len() as i64;
    if i64::from(current) > supported {
        return Err(StoreError::SchemaTooNew {
            found: i64::from(current),
            supported,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(sql)?;
        if i + 1 == HEAD_BLOCKS_MIGRATION {
            samples::move_head_rows_into_blocks(&mut tx)?;
        }
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO probewatch_schema (version) VALUES ($1)",
            &[&version],
        )?;
    }
    tx.commit()?;
    Ok(())
}

use probewatch_core::now_ms;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_tcp_settings_gets_timeouts_and_its_own_are_kept() {
        let mut plain = postgres::Config::from_str("postgres://u@db:5432/probewatch")
            .expect("url without settings");
        detect_vanished_server(&mut plain);
        assert_eq!(plain.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(plain.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(plain.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(plain.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));

        let mut own = postgres::Config::from_str(
            "postgres://u@db/probewatch?tcp_user_timeout=5&keepalives_idle=7\
             &keepalives_interval=2&keepalives_retries=9",
        )
        .expect("url with settings");
        detect_vanished_server(&mut own);
        assert_eq!(own.get_tcp_user_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(own.get_keepalives_idle(), Duration::from_secs(7));
        assert_eq!(own.get_keepalives_interval(), Some(Duration::from_secs(2)));
        assert_eq!(own.get_keepalives_retries(), Some(9));
    }

    #[test]
    fn sessions_get_a_lock_timeout_unless_the_url_sets_one() {
        let mut plain =
            postgres::Config::from_str("postgres://u@db/probewatch").expect("plain url");
        bound_lock_waits(&mut plain);
        assert_eq!(plain.get_options(), Some("-c lock_timeout=20s"));

        let mut other =
            postgres::Config::from_str("postgres://u@db/probewatch?options=-c%20search_path%3Dpw")
                .expect("url with options");
        bound_lock_waits(&mut other);
        assert_eq!(
            other.get_options(),
            Some("-c search_path=pw -c lock_timeout=20s")
        );

        let mut own = postgres::Config::from_str(
            "postgres://u@db/probewatch?options=-c%20lock_timeout%3D5min",
        )
        .expect("url with its own lock timeout");
        bound_lock_waits(&mut own);
        assert_eq!(own.get_options(), Some("-c lock_timeout=5min"));
    }
}
