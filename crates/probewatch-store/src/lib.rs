//! The probewatch store: the [`Store`] traits and their SQLite and PostgreSQL implementations.
//!
//! This is the only crate that knows SQL. Its central promise is the ingest ledger: a file
//! version (path + content hash) counts as ingested if and only if its ledger row committed in
//! the same transaction as its data, so a crash at any moment loses nothing and repeats
//! nothing. The API is batch-shaped ([`LedgerStore::commit_batch`]) so many files share one
//! transaction and one fsync.

pub mod chunk;
mod head_block;
mod id_cache;
mod intervals;
mod location;
mod model;
pub mod postgres;
pub mod query;
pub mod sqlite;

/// A small deterministic generator for unit tests' random cases: each call `next(n)` gives
/// a number in `0..n` (xorshift from `seed`).
#[cfg(test)]
pub(crate) fn test_numbers(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

pub use location::{StoreLocation, StoreOptions, open_store};
pub use model::*;
pub use query::{Cardinality, SeriesIndex, StoreSource};
pub use sqlite::SqliteStore;

// Microseconds since the Unix epoch: commit times in the ledger, for both back ends.
pub(crate) use probewatch_core::now_us;

/// The SQL ordering of a check-history read over `check_results r` joined to `checks c`:
/// the direction of time, and the full ORDER BY (by host too when several hosts' checks are
/// read, so the order is total). Both back ends use it.
pub(crate) fn history_order(query: &HistoryQuery) -> (&'static str, String) {
    let direction = if query.newest_first { "DESC" } else { "ASC" };
    let order = if query.host.is_some() {
        format!("r.ts_ms {direction}")
    } else {
        format!("r.ts_ms {direction}, c.host")
    };
    (direction, order)
}

/// What can go wrong in the store. Callers branch only on the variant; the message is for
/// logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed (disk full, corrupt file, locked too long, …). The
    /// driver's own error is the source, so this type names no back end.
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Opening or creating the data directory failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The store's files are no longer the ones it opened (deleted or replaced under it):
    /// commits would go nowhere anyone can read.
    #[error("{0}")]
    Replaced(String),
    /// A read would hold more samples than its caller allowed.
    #[error("the read would hold more than {limit} samples")]
    TooManySamples {
        /// The caller's limit.
        limit: usize,
    },
    /// The database server cannot be reached now (down, restarting, out of connections):
    /// worth retrying, and nothing was committed.
    #[error("{0}")]
    Unreachable(String),
    /// The database server answered no, and retrying will not change that (wrong password,
    /// no such database, a read-only standby): the message says what to fix.
    #[error("{0}")]
    Refused(String),
    /// This server no longer holds the rule evaluator's lease (another took over, or it
    /// could not renew in time): its alert-state write was refused.
    #[error("{0}")]
    Fenced(String),
    /// The database was written by a newer probewatch.
    #[error("database schema version {found} is newer than this probewatch supports ({supported})")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
}

/// Storage back end. Implementations are shared between threads (`Arc<dyn Store>`): one
/// writer thread calls [`LedgerStore::commit_batch`]; the API and the fast-path lookups read
/// concurrently.
///
/// Kept narrow on purpose so a PostgreSQL implementation can follow without touching the
/// watcher, the parsers or the ingest pipeline.
pub trait Store:
    LedgerStore + SampleStore + CheckStore + AlertStore + SilenceStore + ClusterStore + Send + Sync
{
}

impl<T> Store for T where
    T: LedgerStore
        + SampleStore
        + CheckStore
        + AlertStore
        + SilenceStore
        + ClusterStore
        + Send
        + Sync
{
}

/// The store's traits, for `use probewatch_store::prelude::*` where their methods are called.
pub mod prelude {
    pub use crate::{
        AlertStore, CheckStore, ClusterStore, LedgerStore, SampleStore, SilenceStore, Store,
    };
}

/// The ingest ledger and what it counts: files, batches, per-spool totals, retention.
pub trait LedgerStore: Send + Sync {
    /// Fails with [`StoreError::Replaced`] when the files the store writes are not the ones
    /// at its path any more. Called before files leave the spool, and periodically; any
    /// failure stops ingest until a restart, so a store with no files of its own (a database
    /// server, which may only be away for a while: commits retry that) answers `Ok`.
    fn check_files(&self) -> Result<(), StoreError>;

    /// What the ledger knows about the newest version of `path`, for the restart fast path
    /// (skip a file whose size, mtime and inode are unchanged without reading it).
    fn file_head(&self, path: &[u8]) -> Result<Option<FileHead>, StoreError>;

    /// [`LedgerStore::file_head`] of many paths at once, in their order: a startup scan of a
    /// large spool asks for every file, and one round trip each is what a database server
    /// cannot afford.
    fn file_heads(&self, paths: &[&[u8]]) -> Result<Vec<Option<FileHead>>, StoreError> {
        paths.iter().map(|p| self.file_head(p)).collect()
    }

    /// Commits every item in one transaction: ledger rows, check results and samples.
    /// An item whose (path, version hash) is already in the ledger is skipped and reported as
    /// a duplicate. With `durable`, the commit is fsynced before this returns, as it must be
    /// before a file is deleted or moved away.
    fn commit_batch(
        &self,
        items: &[IngestItem],
        durable: bool,
    ) -> Result<CommitSummary, StoreError>;

    /// Removes data older than `cutoff_ms` in small steps, so ingest is never blocked for
    /// long; `file_exists` decides whether an old ledger row still guards a file on disk.
    fn prune(
        &self,
        cutoff_ms: i64,
        file_exists: &dyn Fn(&[u8]) -> bool,
    ) -> Result<PruneSummary, StoreError>;

    /// Totals for `/api/v1/stats`.
    fn stats(&self) -> Result<Stats, StoreError>;

    /// Files stored per minute since `since_ms` (minute start ms, files), and how long the
    /// newest `latest_files` files waited from their last write to being stored, in ms.
    fn ingest_activity(
        &self,
        since_ms: i64,
        latest_files: usize,
    ) -> Result<IngestActivity, StoreError>;

    /// Ledger rows, newest first, optionally only one outcome.
    fn files(&self, outcome: Option<Outcome>, limit: usize) -> Result<Vec<FileRow>, StoreError>;

    /// The newest `limit` ledger rows as (path, time their batch committed in µs), newest
    /// first: what times a file from its last write to its commit (benches, delivery checks).
    fn file_commits(&self, limit: usize) -> Result<Vec<(Vec<u8>, i64)>, StoreError>;

    /// Per spool: (spool name, files ingested, files rejected), from the ledger.
    fn spool_counts(&self) -> Result<Vec<(String, u64, u64)>, StoreError>;
}

/// Samples and series: the head, compaction into chunks, reads for PromQL.
pub trait SampleStore: Send + Sync {
    /// One step of moving samples from the ingest head into compressed chunks (or, when
    /// there is nothing to move and the head is full, freezing it for the next steps). Bounded
    /// by `max_samples`, whole series at a time, so callers interleave it with ingest batches
    /// and the writer is never held for long.
    fn compact(&self, max_samples: usize) -> Result<CompactStep, StoreError>;

    /// Where the samples are, for `/api/v1/status/tsdb`: chunk count and the oldest and
    /// newest sample time (`None` when there is no sample). Reads every chunk row: for
    /// status pages, not hot paths.
    fn sample_span(&self) -> Result<SampleSpan, StoreError>;

    /// Series created after `after_id`, by id: what a query index needs to stay current
    /// without re-reading every series.
    fn series_after(&self, after_id: i64) -> Result<Vec<SeriesRow>, StoreError>;

    /// For each series in `ids`, whether it has a sample in `[from_ms, to_ms]` (cheaper
    /// than reading them: `/api/v1/series` and label listings ask this for many series).
    /// Past a few hundred ids the answer may come from each series' time span, so it may
    /// also be true for a series with samples only before and after the range (Prometheus
    /// answers these from whole blocks, which is coarser still); never false for a series
    /// with a sample inside.
    fn series_with_samples(
        &self,
        ids: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<bool>, StoreError>;

    /// The samples of each series in `ids` within `[from_ms, to_ms]`, oldest first, read from
    /// one snapshot; fails with [`StoreError::TooManySamples`] rather than hold more than
    /// `max_samples` (a query's memory budget).
    fn read_samples(
        &self,
        ids: &[i64],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<Vec<(i64, f64)>>, StoreError>;

    /// The samples of each `(series, from_ms, to_ms)` of `wanted` (by position), oldest
    /// first; fails with [`StoreError::TooManySamples`] past `max_samples`. A rule group's
    /// read-ahead: its selectors' windows differ, and a back end a round trip away reads
    /// them in one statement. By default, one [`SampleStore::read_samples`] per distinct
    /// range.
    fn read_ranges(
        &self,
        wanted: &[(i64, i64, i64)],
        max_samples: usize,
    ) -> Result<Vec<Vec<(i64, f64)>>, StoreError> {
        let mut by_range: std::collections::BTreeMap<(i64, i64), Vec<usize>> =
            std::collections::BTreeMap::new();
        for (slot, &(_, from, to)) in wanted.iter().enumerate() {
            by_range.entry((from, to)).or_default().push(slot);
        }
        let mut out = vec![Vec::new(); wanted.len()];
        let mut budget = max_samples;
        for ((from, to), slots) in by_range {
            let ids: Vec<i64> = slots.iter().map(|&slot| wanted[slot].0).collect();
            for (slot, samples) in slots
                .into_iter()
                .zip(self.read_samples(&ids, from, to, budget)?)
            {
                budget = budget.saturating_sub(samples.len());
                out[slot] = samples;
            }
        }
        Ok(out)
    }

    /// Writes samples that come from no file (recording rules), in one transaction.
    fn write_samples(&self, samples: &[probewatch_core::SeriesSample]) -> Result<u64, StoreError>;

    /// Calls `visit` with the labels and the newest value of every series of `metric` that
    /// has a sample in `[from_ms, to_ms]`, holding a page of series at a time rather than
    /// all of them with all their samples.
    fn last_values(
        &self,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&str, f64),
    ) -> Result<(), StoreError>;

    /// Samples of every series of `metric` in `[from_ms, to_ms]`.
    fn samples(
        &self,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeriesSamples>, StoreError>;
}

/// Checks: each one's latest state, its results and its status intervals.
pub trait CheckStore: Send + Sync {
    /// The newest result of every check.
    fn latest_checks(&self) -> Result<Vec<CheckRow>, StoreError>;

    /// The newest result of at most `limit` checks whose id is above `after_id`, by id: a
    /// walk over every check that holds one page of rows at a time (at 100,000 checks all
    /// rows at once are ~24 MiB).
    fn checks_after(&self, after_id: i64, limit: usize) -> Result<Vec<CheckRow>, StoreError>;

    /// One check's newest result, by its key.
    fn find_check(
        &self,
        probe: &str,
        host: &str,
        name: &str,
    ) -> Result<Option<CheckRow>, StoreError>;

    /// For each check id, its status intervals overlapping `[from_ms, to_ms]`, oldest first.
    fn check_intervals(
        &self,
        check_ids: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Vec<StatusInterval>>, StoreError>;

    /// Repairs the status intervals of up to `max_checks` checks that received results out
    /// of order (reads repair what they need themselves; this catches up when idle).
    /// Returns whether more wait.
    fn repair_intervals(&self, max_checks: usize) -> Result<bool, StoreError>;

    /// A check's results in `[from_ms, to_ms]`, in time order (or newest first), at most
    /// `limit`.
    fn check_history(&self, query: &HistoryQuery) -> Result<Vec<CheckHistoryRow>, StoreError>;
}

/// Alert state, its events, and the notification outbox with its attempts.
pub trait AlertStore: Send + Sync {
    /// Every stored active alert.
    fn alerts(&self) -> Result<Vec<AlertRow>, StoreError>;

    /// Replaces the stored alerts of each rule in `updates` and appends their events and
    /// notifications, all in one transaction: a notification is queued if and only if the
    /// state change that caused it is saved.
    fn save_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError>;

    /// Notifications neither delivered nor failed that are due at `now_ms` (for one
    /// receiver, or for any), oldest first, at most `limit`.
    fn due_notifications(
        &self,
        receiver: Option<&str>,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<NotificationRow>, StoreError>;

    /// Records a delivery attempt and what follows from it.
    fn record_attempt(
        &self,
        id: i64,
        at_ms: i64,
        detail: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError>;

    /// The newest notifications (delivered or not), newest first.
    fn notifications(&self, limit: usize) -> Result<Vec<NotificationRow>, StoreError>;

    /// The newest alert state changes, newest first.
    fn alert_events(&self, limit: usize) -> Result<Vec<AlertEvent>, StoreError>;

    /// Every delivery attempt of a notification, oldest first.
    fn attempts(&self, notification_id: i64) -> Result<Vec<AttemptRow>, StoreError>;
}

/// Several servers on one store: which one evaluates the rules (a lease with an epoch, kept
/// by the database's clock) and which are alive (heartbeats). A store only one process
/// uses (SQLite, whose data directory is locked) has one member, which always leads.
pub trait ClusterStore: Send + Sync {
    /// Takes or renews the rule evaluator's lease for `holder` for `ttl_ms`. Returns the
    /// epoch held (a new one whenever the lease changes hands or lapsed), or `None` while
    /// another holder's lease runs. Once a lease is held, [`AlertStore::save_alerts`] on this
    /// store commits only while that epoch is still the current one (fencing): a server that
    /// was paused past its lease writes nothing.
    fn acquire_lease(&self, holder: &str, ttl_ms: i64) -> Result<Option<i64>, StoreError>;

    /// Gives the lease up (a clean stop), so another server takes over at once.
    fn release_lease(&self, holder: &str) -> Result<(), StoreError>;

    /// Records that an instance is alive.
    fn heartbeat(&self, instance: &InstanceBeat) -> Result<(), StoreError>;

    /// The lease and the servers seen in the last `within_ms`.
    fn cluster(&self, within_ms: i64) -> Result<ClusterStatus, StoreError>;
}

/// Silences set from the API or the command line.
pub trait SilenceStore: Send + Sync {
    /// Stores a new silence (its `id` is ignored) and records who created it; returns its id.
    fn add_silence(&self, silence: &SilenceRow) -> Result<i64, StoreError>;

    /// Expires a silence now; false if there is no such silence or it already ended.
    fn expire_silence(&self, id: i64, at_ms: i64, actor: &str) -> Result<bool, StoreError>;

    /// Every silence, newest first.
    fn silences(&self) -> Result<Vec<SilenceRow>, StoreError>;
}
