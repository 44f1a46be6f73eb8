//! The PostgreSQL back end: one store for many hosts and several probewatch servers.
//!
//! The same promises as the SQLite back end, kept by PostgreSQL's transactions instead of a
//! single writer: a file version's ledger row (`UNIQUE (path, version_hash)`) commits in the
//! same transaction as its results, so two servers offered the same file store it once.
//! Ledger rows, series, checks and each path's head are written by COPY under a savepoint,
//! falling back to `INSERT … ON CONFLICT` when one exists, so servers ingesting at once never
//! make one twice.
//!
//! The store's traits are synchronous, as the writer, the rule evaluator and the HTTP
//! handlers (through `spawn_blocking`) call them from ordinary threads; so this back end uses
//! the synchronous `postgres` client with an r2d2 pool rather than async tokio-postgres.

mod alerting;
mod checks;
mod chunk_cache;
mod cluster;
mod connection;
mod errors;
mod intervals;
mod ledger;
mod partitions;
mod samples;
mod spans;

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::StoreError;
pub use connection::redact_url;
use connection::{
    Manager, PreparedTx, Statements, bound_lock_waits, detect_vanished_server, shown,
};
use errors::{connect_error, retryable};

/// Versioned schema changes, applied in order; the number of a migration is its position.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_checks_autovacuum.sql"),
    include_str!("migrations/0003_acknowledgements.sql"),
    include_str!("migrations/0004_head_blocks.sql"),
    include_str!("migrations/0005_names_in_byte_order.sql"),
    include_str!("migrations/0006_checks_room_to_update.sql"),
    include_str!("migrations/0007_files_ingested_at_brin.sql"),
];

/// The migration after which the rows of the old per-sample head are moved into blocks.
const HEAD_BLOCKS_MIGRATION: usize = 4;

/// Backfilled check results (days before yesterday) after which the default partition is
/// analyzed ([`PgStore::analyze_after_backfill`]).
const BACKFILL_ANALYZE_ROWS: u64 = 10_000;

/// Samples compacted into chunks of days before yesterday after which the chunks' default
/// partition is analyzed: a few hundred chunks.
const BACKFILL_ANALYZE_SAMPLES: u64 = 100_000;

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

/// A PostgreSQL store. Cheap to share: connections come from a pool.
pub struct PgStore {
    /// `None` only while the store is dropped (see `Drop`).
    pool: Option<connection::Pool>,
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
    /// The chunks and head blocks this process has read.
    read_caches: samples::ReadCaches,
    /// A vacuum after a drain is running (see [`PgStore::vacuum_after_drain`]).
    vacuuming: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Check results this process wrote for days before yesterday since the default
    /// partition was last analyzed (see [`PgStore::analyze_after_backfill`]).
    backfilled: Backfill,
    /// Samples this process compacted into chunks of days before yesterday, likewise.
    backfilled_chunks: Backfill,
}

/// Rows a process wrote for days before yesterday into one table since it last analyzed
/// that table's default partition, and when it did.
#[derive(Default)]
struct Backfill {
    rows: std::sync::atomic::AtomicU64,
    /// ms; 0: never.
    analyzed_at: std::sync::atomic::AtomicI64,
}

impl Backfill {
    fn add(&self, rows: u64) {
        self.rows
            .fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the batch writer keeps between batches: the ids of names it has met, and how it
/// writes the newest version of each path.
#[derive(Default)]
struct IdCaches {
    series: ledger::Names,
    checks: ledger::Names,
    heads: ledger::HeadsWrite,
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
        let pool = connection::pool(config, &shown);
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
            read_caches: samples::ReadCaches::default(),
            vacuuming: Default::default(),
            backfilled: Backfill::default(),
            backfilled_chunks: Backfill::default(),
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
    /// have no partition land there), and that of `chunks` once it has compacted
    /// [`BACKFILL_ANALYZE_SAMPLES`] samples of such days, each at most every
    /// [`BACKFILL_ANALYZE_EVERY_MS`]: results that keep arriving with old times (a probe's
    /// clock days behind, the ingest bench's fixed 2023 times) would otherwise analyze it
    /// every few seconds. One analysis early in a backfill is enough: the planner scales the
    /// frequencies it records by the partition's size when it plans.
    ///
    /// Right after a 30-day backfill of one check, the partition's statistics were those of
    /// before it: the planner expected 6 of that check's rows and sorted all 259,200 to show
    /// its newest 100 (48–99 ms for the check's page instead of ~2). Autovacuum analyzes
    /// within about a minute; this does it at the next compaction step.
    fn analyze_after_backfill(&self, client: &mut postgres::Client) -> Result<(), StoreError> {
        for (backfill, threshold, table) in [
            (
                &self.backfilled,
                BACKFILL_ANALYZE_ROWS,
                "check_results_default",
            ),
            (
                &self.backfilled_chunks,
                BACKFILL_ANALYZE_SAMPLES,
                "chunks_default",
            ),
        ] {
            analyze_after(client, backfill, threshold, table)?;
        }
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
        let shown = self.shown.clone();
        let spawned = std::thread::Builder::new()
            .name("pw-pg-vacuum".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let done = pool.get(&shown).and_then(|mut client| {
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
            Some(pool) => pool.get(&self.shown),
            None => Err(StoreError::Unreachable("the store is closing".into())),
        }
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, IdCaches> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Analyzes `table` when `backfill` counts `threshold` rows and it was not analyzed by this
/// process in the last [`BACKFILL_ANALYZE_EVERY_MS`].
fn analyze_after(
    client: &mut postgres::Client,
    backfill: &Backfill,
    threshold: u64,
    table: &str,
) -> Result<(), StoreError> {
    use std::sync::atomic::Ordering;
    let rows = backfill.rows.load(Ordering::Relaxed);
    if rows < threshold {
        return Ok(());
    }
    let now = now_ms();
    let last = backfill.analyzed_at.load(Ordering::Relaxed);
    if last != 0 && now - last < BACKFILL_ANALYZE_EVERY_MS {
        return Ok(());
    }
    backfill.analyzed_at.store(now, Ordering::Relaxed);
    backfill.rows.fetch_sub(rows, Ordering::Relaxed);
    let started = std::time::Instant::now();
    client.batch_execute(&format!("ANALYZE {table}"))?;
    tracing::info!(
        table,
        rows,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "analyzed a default partition after a backfill"
    );
    Ok(())
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
