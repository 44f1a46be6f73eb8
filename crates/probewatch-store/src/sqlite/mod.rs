//! The embedded SQLite back end: one file `probewatch.db` in the data directory, WAL mode.
//!
//! One write connection sits behind a mutex (only the ingest writer thread and the pruner
//! take it); reads use a small pool of read-only connections, which WAL lets run beside the
//! writer. Commits use `synchronous=NORMAL` (a process crash loses nothing committed; a power
//! cut may lose the last commits, whose files are then still in the spool and simply ingested
//! again), and `synchronous=FULL` when the caller is about to delete or move files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use probewatch_core::{ProbeResult, SeriesSample};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::head_block;
use crate::id_cache::{self, IdCache};
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, now_us};

mod alerting;

mod intervals;
use intervals as sqlite_intervals;
use sqlite_intervals::SqliteRuns;
mod samples;
mod series_directory;
mod spans;
use series_directory::SeriesDirectory;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_rejected_index.sql"),
    include_str!("migrations/0003_head_and_chunks.sql"),
    include_str!("migrations/0004_alerting.sql"),
    include_str!("migrations/0005_silences.sql"),
    include_str!("migrations/0006_notification_groups.sql"),
    include_str!("migrations/0007_status_intervals.sql"),
    include_str!("migrations/0008_spool_stats.sql"),
    include_str!("migrations/0009_notification_failures.sql"),
    include_str!("migrations/0010_series_name_hash.sql"),
    include_str!("migrations/0011_acknowledgements.sql"),
    include_str!("migrations/0012_head_blocks.sql"),
    include_str!("migrations/0013_head_bucket_runs.sql"),
    include_str!("migrations/0014_series_without_name_index.sql"),
];

/// The migration after which every check's status intervals are built from its results.
const INTERVALS_MIGRATION: usize = 7;

/// The migration after which the sample head is blocks (the old head rows are moved).
const HEAD_BLOCKS_MIGRATION: usize = 12;

/// The migration after which head blocks are bucketed by runs of series ids.
const HEAD_BUCKET_RUNS_MIGRATION: usize = 13;

/// Samples the live head may hold before it is frozen and compacted. Appending to the head
/// costs the same however large it is (a batch appends its blocks); compaction rewrites one
/// chunk row per series it moves, so the more samples a series collects first, the fewer
/// rows a sample costs: at 700,000 series, 1,048,576 samples meant a chunk row rewritten per
/// sample and a half, and 100,000 checks ingested at half the rate of 1,000. A read goes
/// through the blocks of its series' buckets (at most 64 live and 64 frozen per bucket) and
/// decodes only its series' runs in them. On disk, ~3 bytes a sample.
pub const DEFAULT_HEAD_MAX_SAMPLES: u64 = 4_194_304;

/// Ids per pruning transaction.
const PRUNE_CHUNK: usize = 200;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "probewatch.db";

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    /// Device and inode of the database file as opened: commits go into that file even if
    /// the path is later unlinked or replaced, so [`LedgerStore::check_files`] compares.
    identity: (u64, u64),
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    /// Each series' time span, for presence questions over many series.
    spans: spans::SpanTable,
    /// The one process that uses this store (its data directory is locked), as its last
    /// heartbeat described it.
    member: Mutex<Option<(InstanceBeat, std::time::Instant)>>,
}

/// The write connection and the id caches that only the writer may touch.
struct Writer {
    conn: Connection,
    /// `metric` + canonical labels → series id, for every stored series.
    series: SeriesDirectory,
    /// (probe, host, check) → check id.
    checks: IdCache,
    /// (series id, time, value) of every sample of the current transaction: written to the
    /// head at its end, then given to the span table once it commits.
    head_rows: Vec<(i64, i64, f64)>,
    /// What the live head holds (as far as this process knows), to decide when to freeze it.
    live: samples::LiveHead,
    head_max: u64,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        StoreError::Database(Box::new(err))
    }
}

fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Turns on SQLite's query planner stability guarantee. The bundled SQLite is built with
/// STAT4, under which a cached statement whose plan could depend on a bound value (`col = ?`,
/// ranges) is prepared again after every new binding: `sqlite3Reprepare` was 12% of a
/// many-series query's profile and more of the writer's. Our statements have one good plan
/// whatever the values, so keep it.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, applying migrations.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            context: format!("creating data directory {}", data_dir.display()),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // A new database returns the space retention frees (`release_free_pages`); the mode
        // can only be chosen before the first table exists.
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if tables == 0 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // A batch of a thousand files dirties a few MiB of index pages; with SQLite's default
        // 2 MiB cache they spill to the WAL mid-transaction and are read back (seen in perf).
        // 12 MiB holds the sample head and the ledger's hot pages; 16 MiB was no faster and
        // took peak RSS over 64 MiB, 8 MiB slowed a 1M-file backlog (docs/benchmarks.md).
        conn.pragma_update(None, "cache_size", -12_288)?;
        stable_plans(&conn)?;
        migrate(&mut conn)?;
        let identity = file_identity(&path).map_err(|source| StoreError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        let live = samples::LiveHead::load(&conn)?;
        Ok(SqliteStore {
            path,
            identity,
            writer: Mutex::new(Writer {
                conn,
                series: SeriesDirectory::default(),
                checks: IdCache::default(),
                head_rows: Vec::new(),
                live,
                head_max: DEFAULT_HEAD_MAX_SAMPLES,
            }),
            readers: Mutex::new(Vec::new()),
            spans: spans::SpanTable::default(),
            member: Mutex::new(None),
        })
    }

    /// Sets how many samples the live head collects before it is frozen and compacted
    /// (default [`DEFAULT_HEAD_MAX_SAMPLES`]); tests use small values to compact often.
    pub fn with_head_max_samples(self, samples: u64) -> SqliteStore {
        self.writer().head_max = samples.max(1);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a pooled read-only connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                rusqlite::vtab::array::load_module(&conn)?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                stable_plans(&conn)?;
                conn
            }
        };
        let result = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        Ok(result?)
    }

    /// Runs `f` in one write transaction (IMMEDIATE: the write lock is taken at its start,
    /// so it never fails half-way for want of it) and commits it.
    fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut writer = self.writer();
        let tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `delete` (with an id and the cutoff; returns what it deleted) for every id
    /// `ids_sql` lists, in transactions of [`PRUNE_CHUNK`] ids, so the writer lock is never
    /// held for long; returns the total deleted.
    fn delete_old(
        &self,
        ids_sql: &str,
        delete: fn(&Connection, i64, i64) -> rusqlite::Result<i64>,
        cutoff_ms: i64,
        delta: fn(i64) -> Delta,
    ) -> Result<u64, StoreError> {
        let ids: Vec<i64> =
            self.read(|c| c.prepare(ids_sql)?.query_map([], |r| r.get(0))?.collect())?;
        let mut deleted = 0u64;
        for chunk in ids.chunks(PRUNE_CHUNK) {
            let n = self.write(|tx| {
                let mut n = 0;
                for id in chunk {
                    n += delete(tx, *id, cutoff_ms)?;
                }
                delta(n).apply(tx)?;
                Ok(n)
            })?;
            deleted += to_u64(n);
        }
        Ok(deleted)
    }

    /// Removes the head's samples older than `cutoff_ms`, in one transaction.
    fn prune_head(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let n = self.write(|tx| {
            let n = samples::prune_head(tx, cutoff_ms)?;
            Delta {
                samples: -n,
                ..Delta::default()
            }
            .apply(tx)?;
            Ok(n)
        })?;
        if n > 0 {
            // The writer's counts of the live head come from what it wrote; read them again
            // from what is left, or they run high and freeze the head early.
            let mut writer = self.writer();
            writer.live = samples::LiveHead::load(&writer.conn)?;
        }
        Ok(to_u64(n))
    }

    /// Moves every sample of the head into chunks, however few it holds: for measuring what
    /// storage costs (`probewatch bench-promql`).
    pub fn compact_all(&self) -> Result<(), StoreError> {
        let mut swaps = 0;
        loop {
            let mut writer = self.writer();
            let Writer { conn, live, .. } = &mut *writer;
            // A head limit of 0 freezes whenever nothing is frozen: the second freeze comes
            // once all that the first one froze has been moved.
            let step = samples::compact_step(conn, live, 0, 200_000)?;
            if step.swapped {
                swaps += 1;
                if swaps == 2 {
                    return Ok(());
                }
            }
        }
    }

    /// The database file's size and how much of it is free pages, after a checkpoint has
    /// moved everything out of the write-ahead log.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let writer = self.writer();
        let conn = &writer.conn;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let chunk_bytes: i64 = conn.query_row(
            "SELECT coalesce(sum(length(data)), 0) FROM chunks",
            [],
            |r| r.get(0),
        )?;
        Ok(DiskUsage {
            file_bytes: to_u64(page * pages),
            free_bytes: to_u64(page * free),
            chunk_data_bytes: to_u64(chunk_bytes),
        })
    }

    /// Gives the database's free pages back to the file system, a few MiB per writer lock so
    /// ingest is never held up for long. Only databases created with incremental
    /// auto-vacuum can (those created by this version on; older ones keep reusing their
    /// free pages). Returns the bytes released.
    fn release_free_pages(&self) -> Result<u64, StoreError> {
        const STEP_PAGES: i64 = 2048;
        let (mode, page): (i64, i64) = {
            let writer = self.writer();
            (
                writer
                    .conn
                    .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?,
                writer
                    .conn
                    .query_row("PRAGMA page_size", [], |r| r.get(0))?,
            )
        };
        if mode != 2 {
            return Ok(0);
        }
        let free_pages = |conn: &Connection| -> rusqlite::Result<i64> {
            conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))
        };
        let mut released = 0u64;
        loop {
            let writer = self.writer();
            let free = free_pages(&writer.conn)?;
            if free == 0 {
                return Ok(released);
            }
            // The pragma frees pages as its statement is stepped: run it to the end.
            let mut stmt = writer
                .conn
                .prepare(&format!("PRAGMA incremental_vacuum({STEP_PAGES})"))?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            drop(rows);
            drop(stmt);
            let left = free_pages(&writer.conn)?;
            released += to_u64((free - left).max(0) * page);
            if left >= free {
                return Ok(released);
            }
        }
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported,
        });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        if index + 1 == INTERVALS_MIGRATION {
            sqlite_intervals::rebuild_all(&tx)?;
        }
        if index + 1 == HEAD_BLOCKS_MIGRATION {
            samples::rows_to_blocks(&tx)?;
        }
        if index + 1 == HEAD_BUCKET_RUNS_MIGRATION {
            samples::rebucket_blocks(&tx)?;
        }
        tx.pragma_update(None, "user_version", to_i64(index as u64 + 1))?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied schema migration");
    }
    Ok(())
}

/// Running totals changed by one transaction.
#[derive(Default)]
struct Delta {
    files_ingested: i64,
    files_rejected: i64,
    check_results: i64,
    samples: i64,
    series: i64,
    /// Blocks and samples this transaction appended to the live head.
    head: samples::LiveHead,
}

impl Delta {
    fn apply(&self, tx: &Connection) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "UPDATE stats SET files_ingested = files_ingested + ?1,
                files_rejected = files_rejected + ?2, check_results = check_results + ?3,
                samples = samples + ?4, series = series + ?5 WHERE id = 1",
        )?
        .execute(params![
            self.files_ingested,
            self.files_rejected,
            self.check_results,
            self.samples,
            self.series
        ])?;
        Ok(())
    }
}

/// Per-spool changes to the ledger counts made by one transaction.
#[derive(Default)]
struct SpoolDelta(HashMap<String, (i64, i64)>);

impl SpoolDelta {
    fn add(&mut self, spool: &str, outcome: Outcome, n: i64) {
        let entry = match self.0.get_mut(spool) {
            Some(e) => e,
            None => self.0.entry(spool.to_string()).or_default(),
        };
        match outcome {
            Outcome::Ingested => entry.0 += n,
            Outcome::Rejected => entry.1 += n,
        }
    }

    fn apply(&self, tx: &Connection) -> rusqlite::Result<()> {
        for (spool, (ingested, rejected)) in &self.0 {
            tx.prepare_cached(
                "INSERT INTO spool_stats (spool, ingested, rejected) VALUES (?1, ?2, ?3)
                 ON CONFLICT (spool) DO UPDATE SET ingested = ingested + excluded.ingested,
                    rejected = rejected + excluded.rejected",
            )?
            .execute(params![spool, ingested, rejected])?;
        }
        Ok(())
    }
}

impl Writer {
    fn commit_batch(&mut self, items: &[IngestItem]) -> rusqlite::Result<CommitSummary> {
        let Writer {
            conn,
            series,
            checks,
            head_rows,
            ..
        } = self;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read under the write lock, not kept from the last batch: another process may have
        // committed batches on this file since (two stores each counting their own ids
        // failed on `batches.id`).
        let batch_id: i64 = tx
            .prepare_cached("SELECT coalesce(max(id), 0) + 1 FROM batches")?
            .query_row([], |r| r.get(0))?;
        let mut writer = ResultWriter::new(&tx, series, checks, head_rows)?;
        let mut results = Vec::with_capacity(items.len());
        let mut samples_written = 0u64;
        let mut checks_written = 0u64;
        let mut per_spool = SpoolDelta::default();
        let now_ms = now_us() / 1000;
        for item in items {
            let file = &item.file;
            let (outcome, kind, error, probes, n_samples, skew) = match &item.content {
                ItemContent::Parsed {
                    results,
                    samples,
                    clock_skew,
                } => (
                    Outcome::Ingested,
                    None,
                    None,
                    results.len(),
                    samples.len(),
                    *clock_skew,
                ),
                ItemContent::Rejected(reject) => (
                    Outcome::Rejected,
                    Some(reject.kind.as_str()),
                    Some(reject.to_string()),
                    0,
                    0,
                    false,
                ),
            };
            // The UNIQUE (path, version_hash) constraint is the exactly-once check: an
            // ignored insert means this version is already in the ledger.
            let inserted = tx.prepare_cached(
                "INSERT OR IGNORE INTO files (spool, path, version_hash, size, mtime_ns, inode, outcome,
                    reject_kind, error, probes, samples, clock_skew, batch_id, ingested_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                &*file.spool,
                file.path,
                file.version_hash,
                to_i64(file.size),
                file.mtime_ns,
                to_i64(file.inode),
                outcome as i64,
                kind,
                error,
                to_i64(probes as u64),
                to_i64(n_samples as u64),
                skew,
                batch_id,
                now_ms,
            ])?;
            if inserted == 0 {
                results.push(ItemResult::Duplicate);
                continue;
            }
            let file_id = tx.last_insert_rowid();
            per_spool.add(&file.spool, outcome, 1);
            tx.prepare_cached(
                "INSERT INTO file_heads (path, file_id, size, mtime_ns, inode, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (path) DO UPDATE SET file_id = excluded.file_id,
                    size = excluded.size, mtime_ns = excluded.mtime_ns,
                    inode = excluded.inode, outcome = excluded.outcome",
            )?
            .execute(params![
                file.path,
                file_id,
                to_i64(file.size),
                file.mtime_ns,
                to_i64(file.inode),
                outcome as i64
            ])?;
            match &item.content {
                ItemContent::Parsed {
                    results: probe_results,
                    samples,
                    ..
                } => {
                    writer.delta.files_ingested += 1;
                    for result in probe_results {
                        writer.checks(result, file_id)?;
                    }
                    for sample in samples {
                        writer.sample(sample)?;
                    }
                    samples_written += samples.len() as u64;
                    checks_written += probe_results
                        .iter()
                        .map(|r| r.checks.len() as u64)
                        .sum::<u64>();
                }
                ItemContent::Rejected(_) => writer.delta.files_rejected += 1,
            }
            results.push(ItemResult::Stored { file_id });
        }
        let stored = results
            .iter()
            .filter(|r| matches!(r, ItemResult::Stored { .. }))
            .count();
        tx.prepare_cached("INSERT INTO batches (id, committed_at_us, files) VALUES (?1, ?2, ?3)")?
            .execute(params![batch_id, now_us(), to_i64(stored as u64)])?;
        writer.flush_samples()?;
        writer.write_latest()?;
        writer.delta.apply(&tx)?;
        per_spool.apply(&tx)?;
        let head = std::mem::take(&mut writer.delta.head);
        drop(writer);
        tx.commit()?;
        series.committed();
        self.live.add(&head);
        Ok(CommitSummary {
            batch_id,
            items: results,
            samples: samples_written,
            check_results: checks_written,
        })
    }
}

/// Writes the check results and samples of one transaction, with the writer's id caches.
struct ResultWriter<'a, 'i> {
    tx: &'a Connection,
    series: &'a mut SeriesDirectory,
    checks: &'a mut IdCache,
    /// Samples of this transaction, for [`ResultWriter::flush_samples`].
    head_rows: &'a mut Vec<(i64, i64, f64)>,
    delta: Delta,
    /// The newest result of each check seen in this batch; written to `checks` once, at the
    /// end, instead of one UPDATE per result.
    latest: HashMap<i64, (&'i ProbeResult, &'i probewatch_core::CheckResult)>,
    /// Each check's results in this batch, for its status intervals.
    pending: HashMap<i64, crate::intervals::Pending>,
    /// The series insert, held for the batch once a new series needs it: at first sight
    /// every sample is a new series, and taking it from the statement cache (hashing the
    /// SQL, resetting on return) was ~8 % of the daemon's CPU.
    insert_series: Option<rusqlite::CachedStatement<'a>>,
}

/// The columns [`map_check`] reads, in its order.
const CHECK_COLUMNS: &str = "probe, host, name, last_status, last_ts_ms, last_duration,
    last_message, interval_ms, usual_interval_ms, id,
    CASE WHEN run_status = last_status THEN run_start_ms END";

fn map_check(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckRow> {
    Ok(CheckRow {
        probe: r.get(0)?,
        host: r.get(1)?,
        check: r.get(2)?,
        status: r.get(3)?,
        time_ms: r.get(4)?,
        duration_seconds: r.get(5)?,
        message: r.get(6)?,
        interval_ms: r.get(7)?,
        usual_interval_ms: r.get(8)?,
        id: r.get(9)?,
        status_since_ms: r.get(10)?,
    })
}

/// Runs `insert` (an `INSERT OR IGNORE`); if the row already existed, runs `update` with the
/// same parameters. Returns true when a new row was inserted: the later of two values for the
/// same key wins, and nothing is counted twice.
fn insert_or_update(
    tx: &Connection,
    insert: &str,
    update: &str,
    params: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<bool> {
    if tx.prepare_cached(insert)?.execute(params)? > 0 {
        return Ok(true);
    }
    tx.prepare_cached(update)?.execute(params)?;
    Ok(false)
}

impl<'a> ResultWriter<'a, '_> {
    /// A writer for transaction `tx`, samples going to the head. Call
    /// [`SeriesDirectory::committed`] once `tx` commits.
    fn new(
        tx: &'a Connection,
        series: &'a mut SeriesDirectory,
        checks: &'a mut IdCache,
        head_rows: &'a mut Vec<(i64, i64, f64)>,
    ) -> rusqlite::Result<Self> {
        head_rows.clear();
        series.begin(tx)?;
        Ok(ResultWriter {
            tx,
            series,
            checks,
            head_rows,
            delta: Delta::default(),
            latest: HashMap::new(),
            pending: HashMap::new(),
            insert_series: None,
        })
    }
}

impl<'a, 'i> ResultWriter<'a, 'i> {
    /// Writes one probe result's check results and updates each check's latest state.
    fn checks(&mut self, result: &'i ProbeResult, file_id: i64) -> rusqlite::Result<()> {
        let ts = result.time_ms;
        for check in &result.checks {
            let check_id = self.check_id(result, check)?;
            let status = check.status.code();
            let new = insert_or_update(
                self.tx,
                "INSERT OR IGNORE INTO check_results (check_id, ts_ms, status, duration, message,
                    file_id, interval_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                "UPDATE check_results SET status = ?3, duration = ?4, message = ?5, file_id = ?6,
                    interval_ms = ?7
                 WHERE check_id = ?1 AND ts_ms = ?2",
                params![
                    check_id,
                    ts,
                    status,
                    check.duration_seconds,
                    check.message,
                    file_id,
                    result.interval_ms
                ],
            )?;
            if new {
                self.delta.check_results += 1;
            }
            self.pending.entry(check_id).or_default().results.push((
                ts,
                status,
                result.interval_ms,
            ));
            let newer = self
                .latest
                .get(&check_id)
                .is_none_or(|(r, _)| r.time_ms <= ts);
            if newer {
                self.latest.insert(check_id, (result, check));
            }
        }
        Ok(())
    }

    /// Writes each check's newest result of this batch as its latest state (unless the
    /// stored one is newer: results may arrive out of order).
    /// Also brings each check's status intervals and usual interval up to date.
    fn write_latest(&mut self) -> rusqlite::Result<()> {
        for (check_id, mut pending) in self.pending.drain() {
            crate::intervals::update(&mut SqliteRuns(self.tx), check_id, &mut pending)?;
        }
        // One statement for every check of the batch, not one from the cache each.
        let mut update = self.tx.prepare_cached(
            "UPDATE checks SET last_ts_ms = ?2, last_status = ?3, last_duration = ?4,
                last_message = ?5, interval_ms = coalesce(?6, interval_ms)
             WHERE id = ?1 AND last_ts_ms <= ?2",
        )?;
        for (check_id, (result, check)) in self.latest.drain() {
            update.execute(params![
                check_id,
                result.time_ms,
                check.status.code(),
                check.duration_seconds,
                check.message,
                result.interval_ms
            ])?;
        }
        Ok(())
    }

    /// The id of (probe, host, check), created with this result as its latest if new.
    fn check_id(
        &mut self,
        result: &ProbeResult,
        check: &probewatch_core::CheckResult,
    ) -> rusqlite::Result<i64> {
        let key = id_cache::key(&[&result.probe, &result.host, &check.name]);
        if let Some(id) = self.checks.get(key) {
            return Ok(id);
        }
        let (probe, host, name) = (&result.probe, &result.host, &check.name);
        let existing: Option<i64> = self
            .tx
            .prepare_cached("SELECT id FROM checks WHERE probe = ?1 AND host = ?2 AND name = ?3")?
            .query_row(params![probe, host, name], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                self.tx
                    .prepare_cached(
                        "INSERT INTO checks (probe, host, name, interval_ms, last_ts_ms,
                            last_status, last_duration, last_message)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        probe,
                        host,
                        name,
                        result.interval_ms,
                        result.time_ms,
                        check.status.code(),
                        check.duration_seconds,
                        check.message
                    ])?;
                self.tx.last_insert_rowid()
            }
        };
        self.checks.insert(key, id);
        Ok(id)
    }

    /// Writes one sample, creating its series if new.
    fn sample(&mut self, sample: &SeriesSample) -> rusqlite::Result<()> {
        let (metric, labels, ts, value) =
            (&sample.metric, &sample.labels, sample.time_ms, sample.value);
        let key = id_cache::key(&[metric, labels]);
        let series_id = match self.series.get(key) {
            Some(id) => id,
            None => {
                // The directory knows every stored series: a name it lacks is new.
                let insert =
                    match &mut self.insert_series {
                        Some(insert) => insert,
                        None => self.insert_series.insert(self.tx.prepare_cached(
                            "INSERT INTO series (metric, labels) VALUES (?1, ?2)",
                        )?),
                    };
                insert.execute(params![metric, labels])?;
                let id = self.tx.last_insert_rowid();
                self.delta.series += 1;
                self.series.created(key, id);
                id
            }
        };
        self.head_rows.push((series_id, ts, value));
        Ok(())
    }

    /// Writes the samples [`ResultWriter::sample`] collected into the head: one block per
    /// bucket of series, the last value given for a (series, time) winning. A repeat of a
    /// (series, time) stored by an earlier batch is counted here and taken back when
    /// compaction merges the two.
    fn flush_samples(&mut self) -> rusqlite::Result<()> {
        head_block::sort_batch(self.head_rows);
        samples::write_blocks(self.tx, self.head_rows, &mut self.delta.head)?;
        self.delta.samples += self.head_rows.len() as i64;
        Ok(())
    }
}

impl LedgerStore for SqliteStore {
    fn check_files(&self) -> Result<(), StoreError> {
        match file_identity(&self.path) {
            Ok(identity) if identity == self.identity => Ok(()),
            Ok(_) => Err(StoreError::Replaced(format!(
                "the database file {} was replaced while probewatch was running; what \
                 probewatch commits no longer reaches it",
                self.path.display()
            ))),
            Err(err) => Err(StoreError::Replaced(format!(
                "the database file {} is gone ({err}) while probewatch was running; what \
                 probewatch commits no longer reaches it",
                self.path.display()
            ))),
        }
    }

    fn file_head(&self, path: &[u8]) -> Result<Option<FileHead>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT size, mtime_ns, inode, outcome FROM file_heads WHERE path = ?1",
            )?
            .query_row(params![path], |r| {
                Ok(FileHead {
                    size: to_u64(r.get(0)?),
                    mtime_ns: r.get(1)?,
                    inode: to_u64(r.get(2)?),
                    outcome: Outcome::from_code(r.get(3)?),
                })
            })
            .optional()
        })
    }

    fn commit_batch(
        &self,
        items: &[IngestItem],
        durable: bool,
    ) -> Result<CommitSummary, StoreError> {
        let mut writer = self.writer();
        if durable {
            writer.conn.pragma_update(None, "synchronous", "FULL")?;
        }
        let result = writer.commit_batch(items);
        match &result {
            Ok(_) => self.spans.note(&writer.head_rows),
            Err(_) => {
                // The transaction rolled back: ids cached during it may not exist (the
                // series directory reads itself afresh at the next transaction).
                writer.checks.clear();
            }
        }
        if durable {
            writer.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        Ok(result?)
    }

    fn prune(
        &self,
        cutoff_ms: i64,
        file_exists: &dyn Fn(&[u8]) -> bool,
    ) -> Result<PruneSummary, StoreError> {
        let samples = self.delete_old(
            "SELECT id FROM series",
            |tx, id, cutoff| {
                // Whole chunks only: one that straddles the cutoff goes when it is all old.
                let mut n = 0i64;
                let mut stmt = tx.prepare_cached(
                    "DELETE FROM chunks WHERE series_id = ?1 AND max_ts < ?2 RETURNING samples",
                )?;
                let mut rows = stmt.query(params![id, cutoff])?;
                while let Some(row) = rows.next()? {
                    n += row.get::<_, i64>(0)?;
                }
                Ok(n)
            },
            cutoff_ms,
            |n| Delta {
                samples: -n,
                ..Delta::default()
            },
        )? + self.prune_head(cutoff_ms)?;
        let check_results = self.delete_old(
            "SELECT id FROM checks",
            |tx, id, cutoff| {
                let n = tx
                    .prepare_cached("DELETE FROM check_results WHERE check_id = ?1 AND ts_ms < ?2")?
                    .execute(params![id, cutoff])?;
                tx.prepare_cached(
                    "DELETE FROM status_intervals WHERE check_id = ?1 AND end_ms < ?2",
                )?
                .execute(params![id, cutoff])?;
                Ok(to_i64(n as u64))
            },
            cutoff_ms,
            |n| Delta {
                check_results: -n,
                ..Delta::default()
            },
        )?;
        // Batch rows (the ingest page's rate) older than retention go too, except the newest,
        // which keeps batch ids increasing across restarts.
        {
            let writer = self.writer();
            writer.conn.execute(
                "DELETE FROM batches WHERE committed_at_us < ?1
                   AND id < (SELECT max(id) FROM batches)",
                params![cutoff_ms.saturating_mul(1000)],
            )?;
        }
        let mut summary = PruneSummary {
            samples,
            check_results,
            ..PruneSummary::default()
        };
        // Old ledger rows go only when their file is gone: a row for a file still on disk is
        // what stops a rescan from ingesting it again.
        let old_files: Vec<(i64, Vec<u8>, i64, String)> = self.read(|c| {
            c.prepare("SELECT id, path, outcome, spool FROM files WHERE ingested_at_ms < ?1")?
                .query_map(params![cutoff_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
        })?;
        let gone: Vec<&(i64, Vec<u8>, i64, String)> = old_files
            .iter()
            .filter(|(_, path, _, _)| !file_exists(path))
            .collect();
        for chunk in gone.chunks(PRUNE_CHUNK) {
            self.write(|tx| {
                let mut delta = Delta::default();
                let mut per_spool = SpoolDelta::default();
                for (id, _, outcome, spool) in chunk {
                    tx.prepare_cached("DELETE FROM files WHERE id = ?1")?
                        .execute(params![id])?;
                    tx.prepare_cached("DELETE FROM file_heads WHERE file_id = ?1")?
                        .execute(params![id])?;
                    let outcome = Outcome::from_code(*outcome);
                    match outcome {
                        Outcome::Ingested => delta.files_ingested -= 1,
                        Outcome::Rejected => delta.files_rejected -= 1,
                    }
                    per_spool.add(spool, outcome, -1);
                }
                delta.apply(tx)?;
                per_spool.apply(tx)
            })?;
            summary.files += chunk.len() as u64;
        }
        if summary.samples > 0 {
            self.spans.forget();
        }
        summary.bytes_released = self.release_free_pages()?;
        Ok(summary)
    }

    fn stats(&self) -> Result<Stats, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT files_ingested, files_rejected, check_results, samples, series
                 FROM stats WHERE id = 1",
                [],
                |r| {
                    Ok(Stats {
                        files_ingested: to_u64(r.get(0)?),
                        files_rejected: to_u64(r.get(1)?),
                        check_results: to_u64(r.get(2)?),
                        samples: to_u64(r.get(3)?),
                        series: to_u64(r.get(4)?),
                    })
                },
            )
        })
    }

    fn files(&self, outcome: Option<Outcome>, limit: usize) -> Result<Vec<FileRow>, StoreError> {
        self.read(|conn| {
            let sql = "SELECT spool, path, outcome, reject_kind, error, ingested_at_ms, size,
                    samples, clock_skew FROM files";
            let order = " ORDER BY id DESC LIMIT ?";
            let map = |r: &rusqlite::Row<'_>| {
                Ok(FileRow {
                    spool: r.get(0)?,
                    path: r.get(1)?,
                    outcome: Outcome::from_code(r.get(2)?),
                    reject_kind: r.get(3)?,
                    error: r.get(4)?,
                    ingested_at_ms: r.get(5)?,
                    size: to_u64(r.get(6)?),
                    samples: to_u64(r.get(7)?),
                    clock_skew: r.get(8)?,
                })
            };
            // The outcome is written as a literal (it is our own enum, not user text) so the
            // partial index files_rejected can serve the rejected listing.
            let filter = match outcome {
                Some(outcome) => format!(" WHERE outcome = {}", outcome as i64),
                None => String::new(),
            };
            conn.prepare_cached(&format!("{sql}{filter}{order}"))?
                .query_map(params![to_i64(limit as u64)], map)?
                .collect()
        })
    }

    fn file_commits(&self, limit: usize) -> Result<Vec<(Vec<u8>, i64)>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT f.path, b.committed_at_us FROM files f JOIN batches b ON b.id = f.batch_id
                 ORDER BY f.id DESC LIMIT ?1",
            )?
            .query_map(params![to_i64(limit as u64)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
    }

    fn spool_counts(&self) -> Result<Vec<(String, u64, u64)>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT spool, ingested, rejected FROM spool_stats
                 WHERE ingested + rejected > 0 ORDER BY spool",
            )?
            .query_map([], |r| {
                Ok((r.get(0)?, to_u64(r.get(1)?), to_u64(r.get(2)?)))
            })?
            .collect()
        })
    }

    fn ingest_activity(
        &self,
        since_ms: i64,
        latest_files: usize,
    ) -> Result<IngestActivity, StoreError> {
        self.read(|c| {
            // Batch ids and commit times grow together, so the first batch of the window is
            // found by bisecting the primary key instead of scanning every batch ever.
            let probe = |id: i64| -> rusqlite::Result<Option<(i64, i64)>> {
                c.prepare_cached(
                    "SELECT id, committed_at_us FROM batches WHERE id >= ?1 ORDER BY id LIMIT 1",
                )?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
            };
            let (lo, hi): (Option<i64>, Option<i64>) =
                c.query_row("SELECT min(id), max(id) FROM batches", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let mut minutes = Vec::new();
            if let (Some(mut lo), Some(mut hi)) = (lo, hi) {
                let since_us = since_ms.saturating_mul(1000);
                hi += 1;
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    match probe(mid)? {
                        Some((id, at)) if at < since_us => lo = id + 1,
                        _ => hi = mid,
                    }
                }
                minutes = c
                    .prepare_cached(
                        "SELECT committed_at_us / 60000000 * 60000, sum(files) FROM batches
                         WHERE id >= ?1 AND committed_at_us >= ?2 GROUP BY 1 ORDER BY 1",
                    )?
                    .query_map(params![lo, since_us], |r| {
                        Ok((r.get(0)?, to_u64(r.get(1)?)))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
            }
            let latencies_ms = c
                .prepare_cached(
                    "SELECT ingested_at_ms - mtime_ns / 1000000 FROM files
                     ORDER BY id DESC LIMIT ?1",
                )?
                .query_map(params![to_i64(latest_files as u64)], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(IngestActivity {
                minutes,
                latencies_ms,
            })
        })
    }
}

impl SampleStore for SqliteStore {
    fn compact(&self, max_samples: usize) -> Result<CompactStep, StoreError> {
        let mut writer = self.writer();
        let Writer {
            conn,
            live,
            head_max,
            ..
        } = &mut *writer;
        Ok(samples::compact_step(conn, live, *head_max, max_samples)?)
    }

    fn sample_span(&self) -> Result<SampleSpan, StoreError> {
        self.read(|conn| {
            let (chunks, mut lo, mut hi): (i64, Option<i64>, Option<i64>) = conn.query_row(
                "SELECT count(*), min(min_ts), max(max_ts) FROM chunks",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            {
                let (a, b): (Option<i64>, Option<i64>) = conn.query_row(
                    "SELECT min(min_ts), max(max_ts) FROM head_blocks",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                lo = match (lo, a) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                hi = match (hi, b) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
            }
            Ok(SampleSpan {
                chunks: to_u64(chunks),
                range_ms: lo.zip(hi),
            })
        })
    }

    fn series_after(&self, after_id: i64) -> Result<Vec<SeriesRow>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT id, metric, labels FROM series WHERE id > ?1 ORDER BY id")?
                .query_map(params![after_id], |r| {
                    Ok(SeriesRow {
                        id: r.get(0)?,
                        metric: r.get(1)?,
                        labels: r.get(2)?,
                    })
                })?
                .collect()
        })
    }

    fn write_samples(&self, samples: &[probewatch_core::SeriesSample]) -> Result<u64, StoreError> {
        let mut guard = self.writer();
        let Writer {
            conn,
            series,
            checks,
            head_rows,
            live,
            ..
        } = &mut *guard;
        let result = (|| -> rusqlite::Result<(u64, samples::LiveHead)> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut writer = ResultWriter::new(&tx, series, checks, head_rows)?;
            for sample in samples {
                writer.sample(sample)?;
            }
            writer.flush_samples()?;
            writer.delta.apply(&tx)?;
            let added = to_u64(writer.delta.samples);
            let head = std::mem::take(&mut writer.delta.head);
            drop(writer);
            tx.commit()?;
            series.committed();
            Ok((added, head))
        })();
        // On an error the series directory reads itself afresh at the next transaction.
        let (added, head) = result?;
        live.add(&head);
        self.spans.note(head_rows);
        Ok(added)
    }

    fn series_with_samples(
        &self,
        ids: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        // Past a few hundred series one pass over the heads and the chunk index is cheaper
        // than three statements per series.
        const BULK: usize = 500;
        if ids.len() > BULK {
            if !self.spans.is_loaded() {
                let writer = self.writer();
                if !self.spans.is_loaded() {
                    self.spans.load(&writer.conn)?;
                }
            }
            if let Some(present) = self.spans.overlapping(ids, from_ms, to_ms) {
                return Ok(present);
            }
        }
        self.read(|conn| {
            let tx = conn.unchecked_transaction()?;
            ids.iter()
                .map(|id| samples::has_samples(&tx, *id, from_ms, to_ms))
                .collect()
        })
    }

    fn read_samples(
        &self,
        ids: &[i64],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<Vec<(i64, f64)>>, StoreError> {
        let read = self.read(|conn| {
            let tx = conn.unchecked_transaction()?;
            samples::read_many(&tx, ids, from_ms, to_ms, max_samples)
        })?;
        read.ok_or(StoreError::TooManySamples { limit: max_samples })
    }

    fn samples(
        &self,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeriesSamples>, StoreError> {
        self.read(|conn| {
            let series: Vec<(i64, String)> = conn
                // A scan (no index by metric: queries find series through the SeriesIndex);
                // this is for tests and tools.
                .prepare_cached("SELECT id, labels FROM series WHERE metric = ?1 ORDER BY labels")?
                .query_map(params![metric], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = Vec::with_capacity(series.len());
            // One read transaction: chunks and both heads from the same snapshot.
            let tx = conn.unchecked_transaction()?;
            for (id, labels) in series {
                let mut samples = Vec::new();
                samples::read_series(&tx, id, from_ms, to_ms, &mut samples)?;
                out.push(SeriesSamples {
                    metric: metric.to_string(),
                    labels,
                    samples,
                });
            }
            Ok(out)
        })
    }

    fn last_values(
        &self,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&str, f64),
    ) -> Result<(), StoreError> {
        self.read(|conn| {
            // One read transaction, the series streamed as their samples are read.
            let tx = conn.unchecked_transaction()?;
            let mut stmt = tx.prepare_cached("SELECT id, labels FROM series WHERE metric = ?1")?;
            let mut series = stmt.query(params![metric])?;
            let mut samples = Vec::new();
            while let Some(row) = series.next()? {
                samples.clear();
                samples::read_series(&tx, row.get(0)?, from_ms, to_ms, &mut samples)?;
                if let Some(&(_, value)) = samples.last() {
                    visit(row.get_ref(1)?.as_str()?, value);
                }
            }
            Ok(())
        })
    }
}

impl CheckStore for SqliteStore {
    fn latest_checks(&self) -> Result<Vec<CheckRow>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {CHECK_COLUMNS} FROM checks ORDER BY probe, host, name"
            ))?
            .query_map([], map_check)?
            .collect()
        })
    }

    fn checks_after(&self, after_id: i64, limit: usize) -> Result<Vec<CheckRow>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {CHECK_COLUMNS} FROM checks WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?
            .query_map(params![after_id, to_i64(limit as u64)], map_check)?
            .collect()
        })
    }

    fn find_check(
        &self,
        probe: &str,
        host: &str,
        name: &str,
    ) -> Result<Option<CheckRow>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {CHECK_COLUMNS} FROM checks WHERE probe = ?1 AND host = ?2 AND name = ?3"
            ))?
            .query_row(params![probe, host, name], map_check)
            .optional()
        })
    }

    fn check_intervals(
        &self,
        check_ids: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Vec<StatusInterval>>, StoreError> {
        // Late results may have left some of these checks waiting for a repair: do it now
        // (a short write), so a read never shows runs that miss a stored result.
        let dirty: Vec<i64> = self.read(|conn| sqlite_intervals::dirty(conn, usize::MAX))?;
        if !dirty.is_empty() {
            let wanted: std::collections::HashSet<i64> = check_ids.iter().copied().collect();
            let repair: Vec<i64> = dirty.into_iter().filter(|id| wanted.contains(id)).collect();
            if !repair.is_empty() {
                self.write(|tx| crate::intervals::repair_dirty(&mut SqliteRuns(tx), &repair))?;
            }
        }
        self.read(|conn| {
            check_ids
                .iter()
                .map(|id| crate::intervals::read(&mut SqliteRuns(conn), *id, from_ms, to_ms))
                .collect()
        })
    }

    fn repair_intervals(&self, max_checks: usize) -> Result<bool, StoreError> {
        let mut writer = self.writer();
        // The usual case, nothing to repair, costs one read and no transaction.
        if sqlite_intervals::dirty(&writer.conn, 1)?.is_empty() {
            return Ok(false);
        }
        let tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids = sqlite_intervals::dirty(&tx, max_checks.max(1))?;
        crate::intervals::repair_dirty(&mut SqliteRuns(&tx), &ids)?;
        let more = !sqlite_intervals::dirty(&tx, 1)?.is_empty();
        tx.commit()?;
        Ok(more)
    }

    fn check_history(&self, query: &HistoryQuery) -> Result<Vec<CheckHistoryRow>, StoreError> {
        // The direction is a literal of our own, so the primary key serves the order; with
        // one host there is one check, and no tie-break that would force a sort of every row.
        let (_, order) = crate::history_order(query);
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT c.host, r.ts_ms, r.status, r.duration, r.message
                 FROM checks c JOIN check_results r ON r.check_id = c.id
                 WHERE c.probe = ?1 AND c.name = ?2 AND (?3 IS NULL OR c.host = ?3)
                   AND r.ts_ms BETWEEN ?4 AND ?5
                 ORDER BY {order} LIMIT ?6"
            ))?
            .query_map(
                params![
                    query.probe,
                    query.check,
                    query.host,
                    query.from_ms,
                    query.to_ms,
                    to_i64(query.limit as u64)
                ],
                |r| {
                    Ok(CheckHistoryRow {
                        host: r.get(0)?,
                        time_ms: r.get(1)?,
                        status: r.get(2)?,
                        duration_seconds: r.get(3)?,
                        message: r.get(4)?,
                    })
                },
            )?
            .collect()
        })
    }
}

impl AlertStore for SqliteStore {
    fn alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        self.read(alerting::alerts)
    }

    fn save_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.write(|tx| alerting::save_alerts(tx, updates))
    }

    fn due_notifications(
        &self,
        receiver: Option<&str>,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        self.read(|c| alerting::due(c, receiver, now_ms, limit))
    }

    fn record_attempt(
        &self,
        id: i64,
        at_ms: i64,
        detail: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        self.write(|tx| alerting::record_attempt(tx, id, at_ms, detail, outcome))
    }

    fn notifications(&self, limit: usize) -> Result<Vec<NotificationRow>, StoreError> {
        self.read(|c| alerting::recent(c, limit))
    }

    fn alert_events(&self, limit: usize) -> Result<Vec<AlertEvent>, StoreError> {
        self.read(|c| alerting::events(c, limit))
    }

    fn attempts(&self, notification_id: i64) -> Result<Vec<AttemptRow>, StoreError> {
        self.read(|c| alerting::attempts(c, notification_id))
    }
}

/// One process per SQLite store (the data directory is locked), so it always leads.
impl ClusterStore for SqliteStore {
    fn acquire_lease(&self, _holder: &str, _ttl_ms: i64) -> Result<Option<i64>, StoreError> {
        Ok(Some(1))
    }

    fn release_lease(&self, _holder: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn heartbeat(&self, instance: &InstanceBeat) -> Result<(), StoreError> {
        *self.member.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((instance.clone(), std::time::Instant::now()));
        Ok(())
    }

    fn cluster(&self, _within_ms: i64) -> Result<ClusterStatus, StoreError> {
        let member = self
            .member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(ClusterStatus {
            backend: "sqlite".into(),
            leader: member.as_ref().map(|(beat, _)| beat.id.clone()),
            epoch: 1,
            lease_left_ms: None,
            instances: member
                .into_iter()
                .map(|(beat, at)| InstanceRow {
                    beat,
                    heartbeat_age_ms: i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX),
                })
                .collect(),
        })
    }
}

impl SilenceStore for SqliteStore {
    fn add_silence(&self, silence: &SilenceRow) -> Result<i64, StoreError> {
        self.write(|tx| alerting::add_silence(tx, silence))
    }

    fn expire_silence(&self, id: i64, at_ms: i64, actor: &str) -> Result<bool, StoreError> {
        self.write(|tx| alerting::expire_silence(tx, id, at_ms, actor))
    }

    fn silences(&self) -> Result<Vec<SilenceRow>, StoreError> {
        self.read(alerting::silences)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a database at schema `version` (its first migrations only) holding `data`, as
    /// an older probewatch left it.
    fn database_at_schema(dir: &Path, version: usize, data: &str) {
        let conn = Connection::open(dir.join(DB_FILE)).expect("open");
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.pragma_update(None, "user_version", version as i64)
            .expect("version");
        conn.execute_batch(data).expect("old data");
    }

    /// Head blocks bucketed by id mod 64 (schema 12) are split under today's buckets: reads
    /// stay exact, a later block still wins, and frozen blocks stay frozen.
    #[test]
    fn head_blocks_of_schema_12_are_bucketed_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = [(1i64, "{a=\"1\"}"), (257, "{a=\"257\"}")];
        let series: Vec<String> = names
            .iter()
            .map(|(id, labels)| format!("({id}, 'm', '{labels}', 0)"))
            .collect();
        database_at_schema(
            dir.path(),
            12,
            &format!(
                "INSERT INTO series (id, metric, labels, name_hash) VALUES {};
                 UPDATE stats SET samples = 4, series = 2;
                 UPDATE head_frozen SET upto = 1;",
                series.join(", ")
            ),
        );
        {
            // Under the old rule ids 1 and 257 share bucket 1: one block holds both.
            let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
            let mut insert = conn
                .prepare("INSERT INTO head_blocks (id, bucket, min_ts, max_ts, samples, data) VALUES (?1, 1, ?2, ?3, ?4, ?5)")
                .expect("prepare");
            let frozen = [(1, 1000, 1.0), (257, 1000, 7.0)];
            let live = [(1, 1000, 5.0), (1, 2000, 2.0)];
            for (id, rows) in [(1, &frozen[..]), (2, &live[..])] {
                let (lo, hi) = head_block::time_span(rows);
                insert
                    .execute(params![
                        id,
                        lo,
                        hi,
                        rows.len() as i64,
                        head_block::encode(rows)
                    ])
                    .expect("block");
            }
        }
        let store = SqliteStore::open(dir.path()).expect("migrates");
        let (frozen, wrong_bucket): (i64, i64) = store
            .read(|c| {
                let frozen = c.query_row(
                    "SELECT count(*) FROM head_blocks
                     WHERE id <= (SELECT upto FROM head_frozen WHERE id = 1)",
                    [],
                    |r| r.get(0),
                )?;
                let mut wrong = 0;
                let mut stmt = c.prepare("SELECT bucket, data FROM head_blocks")?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let mut decoded = Vec::new();
                    head_block::decode(row.get_ref(1)?.as_blob()?, &mut decoded)
                        .map_err(samples::corrupt)?;
                    let bucket: i64 = row.get(0)?;
                    wrong += decoded
                        .iter()
                        .filter(|r| head_block::bucket(r.0) != bucket)
                        .count() as i64;
                }
                Ok((frozen, wrong))
            })
            .expect("blocks");
        assert_eq!(frozen, 2, "the frozen block, split in two, stays frozen");
        assert_eq!(wrong_bucket, 0);
        let read = |store: &SqliteStore| {
            let got: Vec<(String, Vec<(i64, f64)>)> = store
                .samples("m", 0, 10_000)
                .expect("read")
                .into_iter()
                .map(|s| (s.labels, s.samples))
                .collect();
            assert_eq!(
                got,
                [
                    ("{a=\"1\"}".to_string(), vec![(1000, 5.0), (2000, 2.0)]),
                    ("{a=\"257\"}".to_string(), vec![(1000, 7.0)]),
                ]
            );
        };
        read(&store);
        store.compact_all().expect("compact");
        read(&store);
        assert_eq!(store.stats().expect("stats").samples, 3);
    }

    /// A database from before migration 0003 keeps its samples: they become the frozen head
    /// and compaction turns them into chunks.
    #[test]
    fn samples_from_schema_2_survive_the_move_to_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        database_at_schema(
            dir.path(),
            2,
            "INSERT INTO series (id, metric, labels) VALUES (1, 'm', '{a=\"b\"}');
             INSERT INTO samples VALUES (1, 1000, 1.5), (1, 2000, NULL), (1, 3000, 3.0);
             UPDATE stats SET samples = 3, series = 1;",
        );
        let store = SqliteStore::open(dir.path()).expect("migrates");
        let read = |store: &SqliteStore| {
            let series = store.samples("m", 0, 10_000).expect("read");
            assert_eq!(series.len(), 1);
            let s = &series[0].samples;
            assert_eq!((s.len(), s[0], s[2]), (3, (1000, 1.5), (3000, 3.0)));
            assert!(s[1].1.is_nan());
        };
        read(&store);
        let step = store.compact(100).expect("compact");
        assert_eq!((step.moved, step.samples_delta), (3, 0));
        assert!(!store.compact(100).expect("compact").more());
        read(&store);
        assert_eq!(store.stats().expect("stats").samples, 3);
    }

    /// Series from before migrations 0010 and 0014 are found by the series directory: a
    /// sample for an existing name joins its series instead of creating a second one, and
    /// the name index and hash are gone.
    #[test]
    fn series_from_schema_9_are_found_after_migrating() {
        let dir = tempfile::tempdir().expect("tempdir");
        database_at_schema(
            dir.path(),
            9,
            "INSERT INTO series (id, metric, labels) VALUES (7, 'm', '{a=\"b\"}'),
                 (8, 'm', '{a=\"c\"}');
             INSERT INTO samples_head_0 VALUES (7, 1000, 1.5);
             UPDATE stats SET samples = 1, series = 2;",
        );
        let store = SqliteStore::open(dir.path()).expect("migrates");
        let sample = |labels: &str, t: i64| probewatch_core::SeriesSample {
            metric: "m".into(),
            labels: labels.into(),
            time_ms: t,
            value: 2.0,
        };
        store
            .write_samples(&[sample("{a=\"b\"}", 2000), sample("{a=\"d\"}", 2000)])
            .expect("write");
        let rows = store.series_after(0).expect("series");
        let names: Vec<(i64, &str)> = rows.iter().map(|r| (r.id, r.labels.as_str())).collect();
        assert_eq!(
            names,
            [(7, "{a=\"b\"}"), (8, "{a=\"c\"}"), (9, "{a=\"d\"}")]
        );
        let b = store.samples("m", 0, 10_000).expect("read");
        assert_eq!(b[0].samples, [(1000, 1.5), (2000, 2.0)]);
        let left: (i64, i64) = store
            .read(|c| {
                c.query_row(
                    "SELECT (SELECT count(*) FROM pragma_index_list('series')),
                        (SELECT count(*) FROM pragma_table_info('series')
                         WHERE name = 'name_hash')",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .expect("schema");
        assert_eq!(left, (0, 0));
    }

    /// A (series, time) repeated in one batch ends with the last value written and is
    /// counted once; repeated by a later batch, its new value wins, and the count takes it
    /// back when compaction merges the two.
    #[test]
    fn repeated_samples_in_one_batch_keep_the_last_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let sample = |s: i64, t: i64, v: f64| probewatch_core::SeriesSample {
            metric: "m".into(),
            labels: format!("{{s=\"{s}\"}}"),
            time_ms: t,
            value: v,
        };
        let mut batch = Vec::new();
        // 3 series x 100 times, then every tenth key again with a new value, then once more
        // for key (1, 50): 330 + 1 rows, 300 distinct keys.
        for s in 0..3 {
            for t in 0..100 {
                batch.push(sample(s, t, 1.0));
            }
        }
        for s in 0..3 {
            for t in (0..100).step_by(10) {
                batch.push(sample(s, t, 2.0));
            }
        }
        batch.push(sample(1, 50, 3.0));
        let added = store.write_samples(&batch).expect("write");
        assert_eq!(added, 300);
        // Again, in another batch.
        assert_eq!(
            store.write_samples(&[sample(2, 99, 4.0)]).expect("write"),
            1
        );
        let read = store.samples("m", 0, 1_000).expect("read");
        assert_eq!(read.len(), 3);
        let store = store.with_head_max_samples(1);
        while store.compact(50).expect("compact").more() {}
        let drained = store.samples("m", 0, 1_000).expect("read");
        assert_eq!(drained, read);
        for (s, series) in read.iter().enumerate() {
            assert_eq!(series.samples.len(), 100);
            for &(t, v) in &series.samples {
                let want = match (s, t) {
                    (1, 50) => 3.0,
                    (2, 99) => 4.0,
                    (_, t) if t % 10 == 0 => 2.0,
                    _ => 1.0,
                };
                assert_eq!(v, want, "series {s} at {t}");
            }
        }
        assert_eq!(store.stats().expect("stats").samples, 300);
    }

    fn sample_of(labels: &str, time_ms: i64, value: f64) -> probewatch_core::SeriesSample {
        probewatch_core::SeriesSample {
            metric: "m".into(),
            labels: labels.into(),
            time_ms,
            value,
        }
    }

    /// (id, labels) of every stored series, by id.
    fn series_names(store: &SqliteStore) -> Vec<(i64, String)> {
        let rows = store.series_after(0).expect("series");
        rows.into_iter().map(|r| (r.id, r.labels)).collect()
    }

    /// A series another process created (here a second store on the same file, as
    /// `probewatch ingest` beside a stopped daemon) is found by this writer's directory at
    /// its next transaction, not created again.
    #[test]
    fn series_another_writer_created_are_found_not_doubled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = SqliteStore::open(dir.path()).expect("open");
        one.write_samples(&[sample_of("{a=\"1\"}", 1000, 1.0)])
            .expect("write");
        let two = SqliteStore::open(dir.path()).expect("open again");
        two.write_samples(&[sample_of("{a=\"2\"}", 1000, 2.0)])
            .expect("write");
        one.write_samples(&[
            sample_of("{a=\"2\"}", 2000, 3.0),
            sample_of("{a=\"3\"}", 2000, 4.0),
        ])
        .expect("write");
        assert_eq!(
            series_names(&one),
            [
                (1, "{a=\"1\"}".to_string()),
                (2, "{a=\"2\"}".to_string()),
                (3, "{a=\"3\"}".to_string())
            ]
        );
        let read = one.samples("m", 0, 10_000).expect("read");
        assert_eq!(read[1].samples, [(1000, 2.0), (2000, 3.0)]);
        assert_eq!(one.stats().expect("stats").series, 3);
    }

    /// A transaction that fails after creating a series leaves no trace in the directory:
    /// SQLite gives the rolled-back id to the next new series, and the failed name, written
    /// again, gets an id of its own instead of sharing that one.
    #[test]
    fn a_failed_transaction_leaves_no_series_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        store
            .write_samples(&[sample_of("{a=\"1\"}", 1000, 1.0)])
            .expect("write");
        let side = Connection::open(dir.path().join(DB_FILE)).expect("open");
        side.execute_batch(
            "CREATE TRIGGER fail_totals BEFORE UPDATE ON stats
             BEGIN SELECT RAISE(ABORT, 'disk trouble'); END;",
        )
        .expect("trigger");
        let failed = store.write_samples(&[sample_of("{a=\"2\"}", 1000, 2.0)]);
        assert!(failed.is_err(), "{failed:?}");
        side.execute_batch("DROP TRIGGER fail_totals")
            .expect("drop");
        store
            .write_samples(&[sample_of("{a=\"3\"}", 1000, 3.0)])
            .expect("write");
        store
            .write_samples(&[sample_of("{a=\"2\"}", 2000, 4.0)])
            .expect("write");
        assert_eq!(
            series_names(&store),
            [
                (1, "{a=\"1\"}".to_string()),
                (2, "{a=\"3\"}".to_string()),
                (3, "{a=\"2\"}".to_string())
            ]
        );
        let read = store.samples("m", 0, 10_000).expect("read");
        let by_labels: Vec<(&str, &[(i64, f64)])> = read
            .iter()
            .map(|s| (s.labels.as_str(), s.samples.as_slice()))
            .collect();
        assert_eq!(
            by_labels,
            [
                ("{a=\"1\"}", &[(1000, 1.0)][..]),
                ("{a=\"2\"}", &[(2000, 4.0)][..]),
                ("{a=\"3\"}", &[(1000, 3.0)][..])
            ]
        );
    }

    /// A trickle of small batches writes a block per batch and bucket; the head consolidates
    /// a bucket's live blocks into one long before its samples would freeze it, so a read
    /// never has more than a bounded number of blocks to go through. Reads stay exact
    /// throughout, a later write of a (series, time) winning, and the count of samples is
    /// exact once compacted.
    #[test]
    fn a_trickle_of_small_batches_consolidates_the_head_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        // Batch b writes every series at time (b mod 40) s: each time is written again and
        // again, the last batch to write it giving its value. 200 series x 40 times is more
        // than one consolidated piece holds.
        const SERIES: i64 = 200;
        const TIMES: i64 = 40;
        let sample = |s: i64, b: i64| probewatch_core::SeriesSample {
            metric: "m".into(),
            labels: format!("{{s=\"{s:03}\"}}"),
            time_ms: (b % TIMES) * 1_000,
            value: (s * 1_000_000 + b) as f64,
        };
        let head_blocks = |store: &SqliteStore| -> i64 {
            store
                .read(|c| c.query_row("SELECT count(*) FROM head_blocks", [], |r| r.get(0)))
                .expect("count")
        };
        let check = |store: &SqliteStore, batches: i64| {
            let want = |s: i64| -> Vec<(i64, f64)> {
                (0..batches.min(TIMES))
                    .map(|t| {
                        let last = (0..batches).rev().find(|b| b % TIMES == t).unwrap_or(t);
                        (t * 1_000, (s * 1_000_000 + last) as f64)
                    })
                    .collect()
            };
            // One series at a time, as the check page reads.
            let read = store.samples("m", 0, i64::MAX).expect("read");
            assert_eq!(read.len(), SERIES as usize);
            for (s, series) in read.iter().enumerate() {
                assert_eq!(series.samples, want(s as i64), "series {s} after {batches}");
            }
            // Some series at once, as PromQL reads.
            let ids: Vec<i64> = store
                .series_after(0)
                .expect("series")
                .iter()
                .map(|r| r.id)
                .collect();
            let some: Vec<i64> = ids.iter().copied().step_by(37).collect();
            let read = store
                .read_samples(&some, 0, i64::MAX, usize::MAX)
                .expect("read many");
            for (n, samples) in read.iter().enumerate() {
                let s = (n * 37) as i64;
                assert_eq!(
                    samples,
                    &want(s),
                    "series {s} read with others after {batches}"
                );
            }
        };
        // 200 series, all in one bucket: every batch writes one block of 200 samples.
        let batches = 3 * i64::from(samples::HEAD_MAX_BUCKET_BLOCKS) + 5;
        let mut most = 0;
        for b in 0..batches {
            let batch: Vec<_> = (0..SERIES).map(|s| sample(s, b)).collect();
            store.write_samples(&batch).expect("write");
            // What the ingest writer does after each batch.
            while store.compact(10_000).expect("compact").more() {}
            most = most.max(head_blocks(&store));
            if b % 61 == 0 {
                check(&store, b + 1);
            }
        }
        assert!(
            most <= i64::from(samples::HEAD_MAX_BUCKET_BLOCKS),
            "{most} blocks"
        );
        assert!(head_blocks(&store) < batches, "nothing was consolidated");
        check(&store, batches);
        store.compact_all().expect("compact");
        check(&store, batches);
        assert_eq!(
            store.stats().expect("stats").samples,
            (SERIES * TIMES) as u64
        );
    }

    /// One series, `m{a="b"}`, valued t at every second t in `[from, to)`.
    fn one_series(from: i64, to: i64) -> Vec<probewatch_core::SeriesSample> {
        (from..to)
            .map(|t| probewatch_core::SeriesSample {
                metric: "m".into(),
                labels: "{a=\"b\"}".into(),
                time_ms: t * 1_000,
                value: t as f64,
            })
            .collect()
    }

    /// A few series all fall in one bucket; the head is frozen once that bucket holds a
    /// sixteenth of the head's limit, so a merge never decodes a whole large head at once.
    #[test]
    fn one_crowded_bucket_freezes_the_head_before_its_total() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path())
            .expect("open")
            .with_head_max_samples(1_600);
        store.write_samples(&one_series(0, 99)).expect("write");
        assert!(
            !store.compact(10_000).expect("compact").swapped,
            "99 of 100"
        );
        store.write_samples(&one_series(99, 100)).expect("write");
        assert!(
            store.compact(10_000).expect("compact").swapped,
            "100 of 100"
        );
        while store.compact(10_000).expect("compact").more() {}
        let read = store.samples("m", 0, i64::MAX).expect("read");
        assert_eq!(
            read[0].samples,
            (0..100).map(|t| (t * 1_000, t as f64)).collect::<Vec<_>>()
        );
    }

    /// Retention that empties the live head leaves the writer's counts of it right: the
    /// samples written after do not freeze it as if the pruned ones were still there.
    #[test]
    fn retention_of_the_live_head_does_not_freeze_it_early() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path())
            .expect("open")
            .with_head_max_samples(1_600);
        // 99 of the bucket's 100, all pruned; then 99 newer ones: still 99 of 100.
        store.write_samples(&one_series(0, 99)).expect("write");
        let pruned = store.prune(1_000_000, &|_: &[u8]| true).expect("prune");
        assert_eq!(pruned.samples, 99);
        store
            .write_samples(&one_series(1_000, 1_099))
            .expect("write");
        assert!(
            !store.compact(10_000).expect("compact").swapped,
            "99 live samples of 100 do not freeze the head"
        );
        store
            .write_samples(&one_series(1_099, 1_100))
            .expect("write");
        assert!(store.compact(10_000).expect("compact").swapped, "100 do");
    }

    /// Prometheus's stale marker keeps its bits in the head (where SQLite would turn a NaN
    /// into NULL) and through compaction; a plain NaN stays a NaN.
    #[test]
    fn a_stale_marker_survives_the_head_and_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let sample = |t: i64, v: f64| probewatch_core::SeriesSample {
            metric: "m".into(),
            labels: "{a=\"b\"}".into(),
            time_ms: t,
            value: v,
        };
        store
            .write_samples(&[
                sample(1000, 1.0),
                sample(2000, stale),
                sample(3000, f64::NAN),
            ])
            .expect("write");
        let read = |store: &SqliteStore| {
            let series = store.samples("m", 0, 10_000).expect("read");
            let bits: Vec<u64> = series[0].samples.iter().map(|s| s.1.to_bits()).collect();
            assert_eq!(bits[0], 1f64.to_bits());
            assert_eq!(bits[1], stale.to_bits(), "stale marker kept");
            assert!(f64::from_bits(bits[2]).is_nan());
        };
        read(&store);
        while store.compact(100).expect("compact").more() {}
        read(&store);
    }

    /// The bulk answer to "which series have a sample in this range" agrees with the
    /// per-series one, in the heads and in chunks, including a chunk that spans the range
    /// with no sample inside it (a gap).
    #[test]
    fn series_with_samples_in_bulk_covers_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let mut samples = Vec::new();
        for i in 0..1200i64 {
            // Series i: samples every 10 s, with a gap from 5,000 s to 9,000 s for odd ones,
            // and only early samples for every seventh.
            for k in 0..1000i64 {
                let t = k * 10_000;
                if (i % 2 == 1 && (5_000_000..9_000_000).contains(&t))
                    || (i % 7 == 0 && t > 3_000_000)
                {
                    continue;
                }
                samples.push(probewatch_core::SeriesSample {
                    metric: "m".into(),
                    labels: format!("{{i=\"{i}\"}}"),
                    time_ms: t,
                    value: 1.0,
                });
            }
        }
        store.write_samples(&samples).expect("write");
        while store.compact(100_000).expect("compact").more() {}
        // Some in the active head too.
        let late = |i: i64, t: i64| probewatch_core::SeriesSample {
            metric: "m".into(),
            labels: format!("{{i=\"{i}\"}}"),
            time_ms: t,
            value: 2.0,
        };
        store.write_samples(&[late(3, 15_000_000)]).expect("write");
        let ids: Vec<i64> = store
            .series_after(0)
            .expect("series")
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids.len(), 1200);
        let check = |store: &SqliteStore| {
            for (from, to) in [
                (6_000_000, 7_000_000),
                (0, 1_000),
                (3_500_000, 4_000_000),
                (14_000_000, 16_000_000),
                (19_000_000, 21_000_000),
                (i64::MIN, i64::MAX),
                (30_000_000, 40_000_000),
            ] {
                let bulk = store.series_with_samples(&ids, from, to).expect("bulk");
                let one: Vec<bool> = ids
                    .chunks(100)
                    .flat_map(|c| store.series_with_samples(c, from, to).expect("one by one"))
                    .collect();
                for (n, (b, o)) in bulk.iter().zip(&one).enumerate() {
                    // Spans may only add a series with samples on both sides of the range.
                    let exact = |from, to| {
                        store
                            .series_with_samples(&ids[n..=n], from, to)
                            .expect("one")[0]
                    };
                    let around = from > i64::MIN
                        && to < i64::MAX
                        && exact(i64::MIN, from - 1)
                        && exact(to + 1, i64::MAX);
                    assert!(
                        b == o || (*b && around),
                        "series {n} in {from}..{to}: bulk {b}, one by one {o}"
                    );
                }
            }
        };
        check(&store);
        // Written after the span table was loaded: the writer widens it.
        store.write_samples(&[late(7, 20_000_000)]).expect("write");
        let present = store
            .series_with_samples(&ids, 19_000_000, 21_000_000)
            .expect("bulk");
        assert_eq!(
            present.iter().filter(|p| **p).count(),
            1,
            "only series 7 has a sample at 20,000 s"
        );
        check(&store);
        // Retention: series 7's early samples go, and spans are loaded again without them.
        store.prune(19_000_000, &|_| true).expect("prune");
        let present = store
            .series_with_samples(&ids, 0, 18_000_000)
            .expect("bulk");
        assert_eq!(
            present.iter().filter(|p| **p).count(),
            0,
            "every sample before 19,000 s was pruned"
        );
        check(&store);
        // A reopened store loads the same spans from the database.
        drop(store);
        let store = SqliteStore::open(dir.path()).expect("reopen");
        check(&store);
    }
}
