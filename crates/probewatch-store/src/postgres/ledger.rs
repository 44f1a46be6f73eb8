//! The ingest ledger on PostgreSQL: one transaction per batch, a handful of statements each
//! over arrays (`unnest`), so a batch of a thousand files costs a few round trips, not
//! thousands.

use std::collections::HashMap;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use probewatch_core::{ProbeResult, SeriesSample};

use super::samples::HeadBlocks;
use super::{IdCaches, PgStore, PreparedTx, to_i64, to_u64};
use crate::head_block;
use crate::id_cache;
use crate::intervals;
use crate::model::*;
use crate::{LedgerStore, StoreError, now_us};

/// Ledger rows deleted per transaction by [`LedgerStore::prune`].
const PRUNE_CHUNK: i64 = 5_000;

impl LedgerStore for PgStore {
    fn check_files(&self) -> Result<(), StoreError> {
        // The database is a server's, not a file under our feet: nothing can replace it.
        // (This once asked the server, and a server that was away for that moment stopped
        // ingest until a restart: a batch's commit retries until it is back instead.)
        Ok(())
    }

    fn file_head(&self, path: &[u8]) -> Result<Option<FileHead>, StoreError> {
        let row = self.client()?.query_opt(
            "SELECT size, mtime_ns, inode, outcome FROM file_heads WHERE path = $1",
            &[&path],
        )?;
        Ok(row.map(|r| FileHead {
            size: to_u64(r.get(0)),
            mtime_ns: r.get(1),
            inode: to_u64(r.get(2)),
            outcome: Outcome::from_code(i64::from(r.get::<_, i16>(3))),
        }))
    }

    fn file_heads(&self, paths: &[&[u8]]) -> Result<Vec<Option<FileHead>>, StoreError> {
        // Planned at every call, not prepared: a fresh database's startup scan asks this
        // while the writer fills the table, and a plan made while it was empty (a scan of
        // the table per call, comparing every row with every path asked) stayed until
        // autovacuum analyzed it a minute later — 23 ms a call, 9 of a 100,000-file
        // backlog's 17 s of statements, and the daemon at 1,700-7,700 files/s instead of
        // 12,000-16,000.
        let rows = self.client()?.query_typed(
            "SELECT path, size, mtime_ns, inode, outcome FROM file_heads WHERE path = ANY($1)",
            &[(&paths, Type::BYTEA_ARRAY)],
        )?;
        let mut found: HashMap<&[u8], FileHead> = HashMap::with_capacity(rows.len());
        for r in &rows {
            found.insert(
                r.get(0),
                FileHead {
                    size: to_u64(r.get(1)),
                    mtime_ns: r.get(2),
                    inode: to_u64(r.get(3)),
                    outcome: Outcome::from_code(i64::from(r.get::<_, i16>(4))),
                },
            );
        }
        Ok(paths.iter().map(|p| found.get(p).cloned()).collect())
    }

    fn commit_batch(
        &self,
        items: &[IngestItem],
        durable: bool,
    ) -> Result<CommitSummary, StoreError> {
        let mut client = self.client()?;
        let (client, statements) = client.parts();
        let mut attempt = 0;
        loop {
            let mut tx = client.transaction()?;
            if !durable {
                // The ledger row and its data still commit together; only the wait for the
                // WAL flush is skipped (a crash of the server may lose the last moments of
                // batches, whose files are then still in the spool and ingested again).
                tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            }
            let mut ids = self.ids();
            let result = commit(&mut PreparedTx::new(&mut tx, statements), &mut ids, items)
                .and_then(|(summary, backfilled)| {
                    tx.commit()?;
                    Ok((summary, backfilled))
                });
            match result {
                Ok((summary, backfilled)) => {
                    self.backfilled.add(backfilled);
                    return Ok(summary);
                }
                Err(err) => {
                    // Ids cached during a transaction that rolled back may not exist.
                    ids.series.clear();
                    ids.checks.clear();
                    attempt += 1;
                    if !super::retryable(&err) || attempt >= 5 {
                        return Err(err);
                    }
                    tracing::debug!(attempt, error = %err, "batch conflicted with another server's; retrying");
                }
            }
        }
    }

    fn prune(
        &self,
        cutoff_ms: i64,
        file_exists: &dyn Fn(&[u8]) -> bool,
    ) -> Result<PruneSummary, StoreError> {
        let mut client = self.client()?;
        let mut summary = PruneSummary::default();
        // Whole days first (a catalog change), then old rows of the days not dropped.
        summary.samples += to_u64(super::partitions::drop_older(
            &mut client,
            "chunks",
            cutoff_ms,
        )?);
        summary.check_results += to_u64(super::partitions::drop_older(
            &mut client,
            "check_results",
            cutoff_ms,
        )?);
        // Whole chunks only: one that straddles the cutoff goes when it is all old.
        loop {
            let mut tx = client.transaction()?;
            let row = tx.query_one(
                "WITH gone AS (
                    DELETE FROM chunks WHERE id IN (
                        SELECT id FROM chunks WHERE max_ts < $1 LIMIT $2)
                    RETURNING samples)
                 SELECT count(*), coalesce(sum(samples), 0)::int8 FROM gone",
                &[&cutoff_ms, &PRUNE_CHUNK],
            )?;
            let (rows, samples): (i64, i64) = (row.get(0), row.get(1));
            tx.execute(
                "UPDATE stats SET samples = samples - $1 WHERE id = 1",
                &[&samples],
            )?;
            tx.commit()?;
            summary.samples += to_u64(samples);
            if rows < PRUNE_CHUNK {
                break;
            }
        }
        // Reads of this process no longer meet the chunks dropped and deleted.
        self.read_caches.chunks.clear();
        {
            let mut tx = client.transaction()?;
            let n = super::samples::prune_head(&mut tx, cutoff_ms)?;
            tx.execute(
                "UPDATE stats SET samples = samples - $1 WHERE id = 1",
                &[&n],
            )?;
            tx.commit()?;
            summary.samples += to_u64(n);
        }
        loop {
            let mut tx = client.transaction()?;
            let n = tx.execute(
                // By key: a ctid is unique only within one partition.
                "DELETE FROM check_results WHERE (check_id, ts_ms) IN (
                    SELECT check_id, ts_ms FROM check_results WHERE ts_ms < $1 LIMIT $2)",
                &[&cutoff_ms, &PRUNE_CHUNK],
            )?;
            tx.execute(
                "DELETE FROM status_intervals WHERE ctid = ANY (ARRAY(
                    SELECT ctid FROM status_intervals WHERE end_ms < $1 LIMIT $2))",
                &[&cutoff_ms, &PRUNE_CHUNK],
            )?;
            tx.execute(
                "UPDATE stats SET check_results = check_results - $1 WHERE id = 1",
                &[&to_i64(n)],
            )?;
            tx.commit()?;
            summary.check_results += n;
            if to_i64(n) < PRUNE_CHUNK {
                break;
            }
        }
        client.execute(
            "DELETE FROM batches WHERE committed_at_us < $1
               AND id < (SELECT max(id) FROM batches)",
            &[&cutoff_ms.saturating_mul(1000)],
        )?;
        // Servers gone for a day (each start is a new instance row).
        client.execute(
            "DELETE FROM instances WHERE heartbeat_at < now() - interval '1 day'",
            &[],
        )?;
        // Old ledger rows go only when their file is gone: a row for a file still on disk is
        // what stops a rescan from ingesting it again.
        let old = client.query(
            "SELECT id, path, outcome, spool FROM files WHERE ingested_at_ms < $1",
            &[&cutoff_ms],
        )?;
        let gone: Vec<(i64, i16, String, &[u8])> = old
            .iter()
            .filter(|r| !file_exists(r.get::<_, &[u8]>(1)))
            .map(|r| (r.get(0), r.get(2), r.get(3), r.get(1)))
            .collect();
        for chunk in gone.chunks(usize::try_from(PRUNE_CHUNK).unwrap_or(5_000)) {
            let ids: Vec<i64> = chunk.iter().map(|g| g.0).collect();
            let paths: Vec<&[u8]> = chunk.iter().map(|g| g.3).collect();
            let mut per_spool: HashMap<&str, (i64, i64)> = HashMap::new();
            for (_, outcome, spool, _) in chunk {
                let entry = per_spool.entry(spool).or_default();
                match Outcome::from_code(i64::from(*outcome)) {
                    Outcome::Ingested => entry.0 -= 1,
                    Outcome::Rejected => entry.1 -= 1,
                }
            }
            let mut tx = client.transaction()?;
            tx.execute("DELETE FROM files WHERE id = ANY($1)", &[&ids])?;
            // By path (the key): `file_id` has no index, and a scan of every head for each
            // chunk made a large prune quadratic. A head that names a newer version stays.
            tx.execute(
                "DELETE FROM file_heads h USING unnest($1::bytea[], $2::int8[]) AS g(path, id)
                 WHERE h.path = g.path AND h.file_id = g.id",
                &[&paths, &ids],
            )?;
            let (ingested, rejected) = per_spool
                .values()
                .fold((0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1));
            tx.execute(
                "UPDATE stats SET files_ingested = files_ingested + $1,
                    files_rejected = files_rejected + $2 WHERE id = 1",
                &[&ingested, &rejected],
            )?;
            for (spool, (i, r)) in &per_spool {
                tx.execute(
                    "UPDATE spool_stats SET ingested = ingested + $2, rejected = rejected + $3
                     WHERE spool = $1",
                    &[spool, i, r],
                )?;
            }
            tx.commit()?;
            summary.files += chunk.len() as u64;
        }
        Ok(summary)
    }

    fn stats(&self) -> Result<Stats, StoreError> {
        let r = self.client()?.query_one(
            "SELECT files_ingested, files_rejected, check_results, samples, series
             FROM stats WHERE id = 1",
            &[],
        )?;
        Ok(Stats {
            files_ingested: to_u64(r.get(0)),
            files_rejected: to_u64(r.get(1)),
            check_results: to_u64(r.get(2)),
            samples: to_u64(r.get(3)),
            series: to_u64(r.get(4)),
        })
    }

    fn ingest_activity(
        &self,
        since_ms: i64,
        latest_files: usize,
    ) -> Result<IngestActivity, StoreError> {
        let mut client = self.client()?;
        let minutes = client
            .query(
                "SELECT committed_at_us / 60000000 * 60000, sum(files)::int8 FROM batches
                 WHERE committed_at_us >= $1 GROUP BY 1 ORDER BY 1",
                &[&since_ms.saturating_mul(1000)],
            )?
            .iter()
            .map(|r| (r.get(0), to_u64(r.get(1))))
            .collect();
        let latencies_ms = client
            .query(
                "SELECT ingested_at_ms - mtime_ns / 1000000 FROM files ORDER BY id DESC LIMIT $1",
                &[&to_i64(latest_files as u64)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(IngestActivity {
            minutes,
            latencies_ms,
        })
    }

    fn files(&self, outcome: Option<Outcome>, limit: usize) -> Result<Vec<FileRow>, StoreError> {
        let limit = to_i64(limit as u64);
        macro_rules! columns {
            () => {
                "spool, path, outcome, reject_kind, error, ingested_at_ms, size, samples, \
                 clock_skew"
            };
        }
        let mut client = self.client()?;
        let rows = match outcome {
            Some(outcome) => client.query(
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM files WHERE outcome = $1 ORDER BY id DESC LIMIT $2"
                ),
                &[&(outcome as i16), &limit],
            )?,
            None => client.query(
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM files ORDER BY id DESC LIMIT $1"
                ),
                &[&limit],
            )?,
        };
        Ok(rows
            .iter()
            .map(|r| FileRow {
                spool: r.get(0),
                path: r.get(1),
                outcome: Outcome::from_code(i64::from(r.get::<_, i16>(2))),
                reject_kind: r.get(3),
                error: r.get(4),
                ingested_at_ms: r.get(5),
                size: to_u64(r.get(6)),
                samples: u64::try_from(r.get::<_, i32>(7)).unwrap_or(0),
                clock_skew: r.get(8),
            })
            .collect())
    }

    fn file_commits(&self, limit: usize) -> Result<Vec<(Vec<u8>, i64)>, StoreError> {
        Ok(self
            .client()?
            .query(
                "SELECT f.path, b.committed_at_us FROM files f JOIN batches b ON b.id = f.batch_id
                 ORDER BY f.id DESC LIMIT $1",
                &[&to_i64(limit as u64)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn spool_counts(&self) -> Result<Vec<(String, u64, u64)>, StoreError> {
        Ok(self
            .client()?
            .query(
                "SELECT spool, ingested, rejected FROM spool_stats
                 WHERE ingested + rejected > 0 ORDER BY spool",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), to_u64(r.get(1)), to_u64(r.get(2))))
            .collect())
    }
}

/// One column of `rows` as an array parameter (`unnest($n::type[])`).
fn column<T, U>(rows: &[T], f: impl Fn(&T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

/// The statement that adds a [`Delta`] to the totals, its fields `$1` to `$5`
/// ([`Delta::params`]): alone, or the first part of a batch's closing statement.
macro_rules! add_delta {
    () => {
        "UPDATE stats SET files_ingested = files_ingested + $1,
            files_rejected = files_rejected + $2, check_results = check_results + $3,
            samples = samples + $4, series = series + $5 WHERE id = 1"
    };
}

/// The body of one batch's transaction.
/// One batch in `tx`: its summary, and how many of its check results are for days before
/// yesterday (a backfill's, see `PgStore::analyze_after_backfill`).
fn commit(
    tx: &mut PreparedTx<'_, '_>,
    ids: &mut IdCaches,
    items: &[IngestItem],
) -> Result<(CommitSummary, u64), StoreError> {
    let mut samples: Vec<&SeriesSample> = Vec::new();
    for item in items {
        if let ItemContent::Parsed { samples: s, .. } = &item.content {
            samples.extend(s);
        }
    }
    // The series ids go to the thread that makes the head blocks, and come back with them.
    let series_ids = std::mem::take(&mut ids.series.ids);
    let samples = &samples;
    std::thread::scope(|scope| {
        let blocks = scope.spawn(move || {
            let blocks = (!samples.is_empty())
                .then(|| prepare_head_blocks(&series_ids, samples))
                .flatten();
            (series_ids, blocks)
        });
        commit_with(tx, ids, items, blocks)
    })
}

/// What [`prepare_head_blocks`]' thread gives back: the series ids it was lent, and the
/// blocks unless some series was new.
type PreparedBlocks<'s> = std::thread::ScopedJoinHandle<'s, (IdCache, Option<HeadBlocks>)>;

/// [`commit`], with the batch's head blocks being made meanwhile by `blocks`.
fn commit_with(
    tx: &mut PreparedTx<'_, '_>,
    ids: &mut IdCaches,
    items: &[IngestItem],
    blocks: PreparedBlocks<'_>,
) -> Result<(CommitSummary, u64), StoreError> {
    let now_ms = now_us() / 1000;

    // 1. Ledger rows, all at once; the unique (path, version_hash) skips versions already
    //    stored, by this server or another.
    let mut spools = Vec::with_capacity(items.len());
    let mut paths: Vec<&[u8]> = Vec::with_capacity(items.len());
    let mut hashes: Vec<&[u8]> = Vec::with_capacity(items.len());
    let (mut sizes, mut mtimes, mut inodes) = (Vec::new(), Vec::new(), Vec::new());
    let (mut outcomes, mut kinds, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let (mut probes, mut n_samples, mut skews) = (Vec::new(), Vec::new(), Vec::new());
    // In key order, as every statement of the batch: two servers' batches then take row
    // locks in the same order and cannot deadlock.
    let mut order: Vec<&IngestItem> = items.iter().collect();
    order.sort_by(|a, b| {
        (&a.file.path, &a.file.version_hash).cmp(&(&b.file.path, &b.file.version_hash))
    });
    for item in &order {
        let f = &item.file;
        spools.push(&*f.spool);
        paths.push(&f.path);
        hashes.push(&f.version_hash[..]);
        sizes.push(to_i64(f.size));
        mtimes.push(f.mtime_ns);
        inodes.push(to_i64(f.inode));
        match &item.content {
            ItemContent::Parsed {
                results,
                samples,
                clock_skew,
            } => {
                outcomes.push(Outcome::Ingested as i16);
                kinds.push(None);
                errors.push(None);
                probes.push(i32::try_from(results.len()).unwrap_or(i32::MAX));
                n_samples.push(i32::try_from(samples.len()).unwrap_or(i32::MAX));
                skews.push(*clock_skew);
            }
            ItemContent::Rejected(reject) => {
                outcomes.push(Outcome::Rejected as i16);
                kinds.push(Some(reject.kind.as_str()));
                errors.push(Some(reject.to_string()));
                probes.push(0);
                n_samples.push(0);
                skews.push(false);
            }
        }
    }
    // Usually every version is new: ids from the sequence and one COPY (a fraction of
    // `INSERT … ON CONFLICT`'s server time, see `copy_new`). When one is stored already (a
    // file offered again, by this server or another, or twice in this batch) the COPY is
    // taken back whole and the insert skips what exists.
    // The batch's id and its files' ids, in one round trip.
    let mut file_ids = next_ids(tx, Sequence::BatchThenFiles, order.len() + 1)?;
    let batch_id = file_ids.remove(0);
    let copied = copy_new(
        tx,
        "COPY files (id, spool, path, version_hash, size, mtime_ns, inode, outcome,
            reject_kind, error, probes, samples, clock_skew, batch_id, ingested_at_ms)
         FROM STDIN BINARY",
        &[
            Type::INT8,
            Type::TEXT,
            Type::BYTEA,
            Type::BYTEA,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT2,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::INT4,
            Type::BOOL,
            Type::INT8,
            Type::INT8,
        ],
        order.len(),
        |i| {
            [
                &file_ids[i],
                &spools[i],
                &paths[i],
                &hashes[i],
                &sizes[i],
                &mtimes[i],
                &inodes[i],
                &outcomes[i],
                &kinds[i],
                &errors[i],
                &probes[i],
                &n_samples[i],
                &skews[i],
                &batch_id,
                &now_ms,
            ]
        },
    )?;
    let mut new_ids: HashMap<(&[u8], &[u8]), i64> = HashMap::with_capacity(order.len());
    if copied.is_some() {
        for (item, id) in order.iter().zip(&file_ids) {
            new_ids.insert((&item.file.path, &item.file.version_hash[..]), *id);
        }
    } else {
        let inserted = tx.query(
            "INSERT INTO files (spool, path, version_hash, size, mtime_ns, inode, outcome,
                reject_kind, error, probes, samples, clock_skew, batch_id, ingested_at_ms)
             SELECT u.*, $13::int8, $14::int8 FROM unnest($1::text[], $2::bytea[],
                $3::bytea[], $4::int8[], $5::int8[], $6::int8[], $7::int2[], $8::text[],
                $9::text[], $10::int4[], $11::int4[], $12::bool[]) AS u
             ON CONFLICT (path, version_hash) DO NOTHING
             RETURNING id, path, version_hash",
            &[
                &spools, &paths, &hashes, &sizes, &mtimes, &inodes, &outcomes, &kinds, &errors,
                &probes, &n_samples, &skews, &batch_id, &now_ms,
            ],
        )?;
        for row in &inserted {
            let (path, hash): (&[u8], &[u8]) = (row.get(1), row.get(2));
            // Keys borrow from the items (found in `order`, sorted by this key), which
            // outlive the rows.
            if let Ok(at) = order.binary_search_by(|i| {
                (&i.file.path[..], &i.file.version_hash[..]).cmp(&(path, hash))
            }) {
                let file = &order[at].file;
                new_ids.insert((&file.path, &file.version_hash[..]), row.get(0));
            }
        }
    }
    let mut results = Vec::with_capacity(items.len());
    let mut stored: Vec<(&IngestItem, i64)> = Vec::with_capacity(new_ids.len());
    for item in items {
        // A version offered twice in one batch is stored once: the first takes the id.
        match new_ids.remove(&(&item.file.path[..], &item.file.version_hash[..])) {
            Some(file_id) => {
                results.push(ItemResult::Stored { file_id });
                stored.push((item, file_id));
            }
            None => results.push(ItemResult::Duplicate),
        }
    }

    // 2. Each path's newest version, for the restart fast path.
    let mut heads: HashMap<&[u8], (&IngestItem, i64)> = HashMap::new();
    for &(item, id) in &stored {
        heads.insert(&item.file.path, (item, id));
    }
    if !heads.is_empty() {
        let mut sorted: Vec<(&[u8], (&IngestItem, i64))> = heads.into_iter().collect();
        sorted.sort_by_key(|(path, _)| *path);
        let h_paths = column(&sorted, |(path, _)| *path);
        let h_ids = column(&sorted, |(_, (_, id))| *id);
        let h_sizes = column(&sorted, |(_, (item, _))| to_i64(item.file.size));
        let h_mtimes = column(&sorted, |(_, (item, _))| item.file.mtime_ns);
        let h_inodes = column(&sorted, |(_, (item, _))| to_i64(item.file.inode));
        let h_outcomes = column(&sorted, |(_, (item, _))| match item.content {
            ItemContent::Parsed { .. } => Outcome::Ingested as i16,
            ItemContent::Rejected(_) => Outcome::Rejected as i16,
        });
        write_heads(
            tx,
            &mut ids.heads,
            (
                &h_paths,
                &h_ids,
                &h_sizes,
                &h_mtimes,
                &h_inodes,
                &h_outcomes,
            ),
        )?;
    }

    // 3. Check results and samples of the stored files.
    let mut delta = Delta::default();
    let mut per_spool: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut probe_results: Vec<(&ProbeResult, i64)> = Vec::new();
    let mut samples: Vec<&SeriesSample> = Vec::new();
    for &(item, file_id) in &stored {
        let entry = per_spool.entry(&item.file.spool).or_default();
        match &item.content {
            ItemContent::Parsed {
                results: r,
                samples: s,
                ..
            } => {
                entry.0 += 1;
                delta.files_ingested += 1;
                probe_results.extend(r.iter().map(|r| (r, file_id)));
                samples.extend(s);
            }
            ItemContent::Rejected(_) => {
                entry.1 += 1;
                delta.files_rejected += 1;
            }
        }
    }
    // Results for days before yesterday are a backfill's: they land in the default
    // partition (unless this server made that day's partition back then), whose statistics
    // they make stale.
    let yesterday = super::partitions::yesterday_ms(now_ms);
    let backfilled: u64 = probe_results
        .iter()
        .filter(|(r, _)| r.time_ms < yesterday)
        .map(|(r, _)| r.checks.len() as u64)
        .sum();
    let check_results = write_checks(tx, &mut ids.checks, &probe_results, &mut delta)?;
    let samples_written = samples.len() as u64;
    let (series_ids, blocks) = blocks
        .join()
        .map_err(|_| StoreError::Database("the thread making head blocks panicked".into()))?;
    ids.series.ids = series_ids;
    match blocks {
        // Every file of the batch was new (one COPY took them all), so the blocks made of
        // all its samples are those of the files stored.
        Some(blocks) if copied.is_some() => delta.samples += to_i64(blocks.insert(tx)?),
        _ => write_samples(tx, &mut ids.series, &samples, &mut delta)?,
    }

    // 4. Totals, per-spool counts and the batch row, in one statement (three round trips
    //    and one a spool before).
    let mut per_spool: Vec<_> = per_spool.into_iter().collect();
    per_spool.sort_unstable();
    let spools = column(&per_spool, |(spool, _)| *spool);
    let ingested = column(&per_spool, |(_, (i, _))| *i);
    let rejected = column(&per_spool, |(_, (_, r))| *r);
    let files = i32::try_from(stored.len()).unwrap_or(i32::MAX);
    let committed_at_us = now_us();
    let mut params = delta.params().to_vec();
    params.extend_from_slice(&[
        &spools,
        &ingested,
        &rejected,
        &batch_id,
        &committed_at_us,
        &files,
    ]);
    tx.execute(
        concat!(
            "WITH totals AS (",
            add_delta!(),
            "),
             spools AS (
                INSERT INTO spool_stats (spool, ingested, rejected)
                SELECT * FROM unnest($6::text[], $7::int8[], $8::int8[])
                ON CONFLICT (spool) DO UPDATE SET
                    ingested = spool_stats.ingested + excluded.ingested,
                    rejected = spool_stats.rejected + excluded.rejected)
             INSERT INTO batches (id, committed_at_us, files) VALUES ($9, $10, $11)"
        ),
        &params,
    )?;
    Ok((
        CommitSummary {
            batch_id,
            items: results,
            samples: samples_written,
            check_results,
        },
        backfilled,
    ))
}

/// How the batch writer puts each path's newest version into `file_heads`.
///
/// A probe that names each result file anew (a timestamp in the name) brings a new path
/// every time; one that writes the same file over and over brings a path stored already.
/// New paths go in with one binary COPY (3.3 ms of server time for 1,000, where
/// `INSERT … ON CONFLICT DO UPDATE` took 4.2 and its arrays cost the client more). When the
/// COPY meets a stored path it is taken back and the upsert writes the batch; the writer then
/// upserts until a batch's upsert finds every path new again, so a spool of rewritten files
/// costs one failed COPY, not one a batch.
#[derive(Default)]
pub(super) struct HeadsWrite {
    /// The last batch met a stored path: upsert first.
    upsert_first: bool,
}

/// The columns of a batch's `file_heads` rows: path, file id, size, mtime, inode, outcome.
type HeadColumns<'c> = (
    &'c [&'c [u8]],
    &'c [i64],
    &'c [i64],
    &'c [i64],
    &'c [i64],
    &'c [i16],
);

/// Makes each of the batch's paths (each once) point at its newest version, as
/// [`HeadsWrite`] says.
fn write_heads(
    tx: &mut PreparedTx<'_, '_>,
    mode: &mut HeadsWrite,
    (paths, ids, sizes, mtimes, inodes, outcomes): HeadColumns<'_>,
) -> Result<(), StoreError> {
    if !mode.upsert_first
        && copy_new(
            tx,
            "COPY file_heads (path, file_id, size, mtime_ns, inode, outcome) FROM STDIN BINARY",
            &[
                Type::BYTEA,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT2,
            ],
            paths.len(),
            |i| {
                [
                    &paths[i],
                    &ids[i],
                    &sizes[i],
                    &mtimes[i],
                    &inodes[i],
                    &outcomes[i],
                ]
            },
        )?
        .is_some()
    {
        return Ok(());
    }
    // `xmax = 0` marks a row the statement inserted rather than updated.
    let inserted: i64 = tx
        .query_one(
            "WITH up AS (
                INSERT INTO file_heads (path, file_id, size, mtime_ns, inode, outcome)
                SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[],
                    $5::int8[], $6::int2[])
                ON CONFLICT (path) DO UPDATE SET file_id = excluded.file_id,
                    size = excluded.size, mtime_ns = excluded.mtime_ns,
                    inode = excluded.inode, outcome = excluded.outcome
                RETURNING xmax = 0 AS inserted)
             SELECT count(*) FILTER (WHERE inserted) FROM up",
            &[&paths, &ids, &sizes, &mtimes, &inodes, &outcomes],
        )?
        .get(0);
    mode.upsert_first = usize::try_from(inserted).unwrap_or(0) < paths.len();
    Ok(())
}

/// Running totals changed by one transaction.
#[derive(Default)]
pub(super) struct Delta {
    pub files_ingested: i64,
    pub files_rejected: i64,
    pub check_results: i64,
    pub samples: i64,
    pub series: i64,
}

impl Delta {
    pub fn apply(&self, tx: &mut PreparedTx<'_, '_>) -> Result<(), StoreError> {
        tx.execute(add_delta!(), &self.params())?;
        Ok(())
    }

    /// The parameters of [`add_delta`], in its order.
    fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [
            &self.files_ingested,
            &self.files_rejected,
            &self.check_results,
            &self.samples,
            &self.series,
        ]
    }
}

/// Finds or makes the checks at `missing` (result, check) in `results`, recording each id
/// in `keyed` and the writer's cache: one COPY when they are new, a lookup first when the
/// writer has met existing names lately ([`Names`]).
fn create_checks(
    tx: &mut PreparedTx<'_, '_>,
    names: &mut Names,
    results: &[(&ProbeResult, i64)],
    missing: &[(usize, usize)],
    keyed: &mut HashMap<id_cache::Key, i64>,
) -> Result<(), StoreError> {
    let mut keys: Vec<(&ProbeResult, &probewatch_core::CheckResult)> = missing
        .iter()
        .map(|&(ri, ci)| (results[ri].0, &results[ri].0.checks[ci]))
        .collect();
    keys.sort_by(|a, b| {
        (&a.0.probe, &a.0.host, &a.1.name).cmp(&(&b.0.probe, &b.0.host, &b.1.name))
    });
    keys.dedup_by(|a, b| (&a.0.probe, &a.0.host, &a.1.name) == (&b.0.probe, &b.0.host, &b.1.name));
    // Each row read back (id, probe, host, name) names its check's id.
    let record =
        |rows: &[postgres::Row], names: &mut Names, keyed: &mut HashMap<id_cache::Key, i64>| {
            for row in rows {
                let (probe, host, name): (&str, &str, &str) = (row.get(1), row.get(2), row.get(3));
                let key = id_cache::key(&[probe, host, name]);
                names.ids.insert(key, row.get(0));
                keyed.insert(key, row.get(0));
            }
        };
    let is_known = |keyed: &HashMap<id_cache::Key, i64>,
                    (r, c): &(&ProbeResult, &probewatch_core::CheckResult)| {
        keyed.contains_key(&id_cache::key(&[&r.probe, &r.host, &c.name]))
    };
    if names.look_up_first {
        let found = look_up_checks(tx, &keys)?;
        record(&found, names, keyed);
        names.look_up_first = !found.is_empty();
        keys.retain(|k| !is_known(keyed, k));
        if keys.is_empty() {
            return Ok(());
        }
    }
    let p = column(&keys, |(r, _)| r.probe.as_str());
    let h = column(&keys, |(r, _)| r.host.as_str());
    let n = column(&keys, |(_, c)| c.name.as_str());
    let iv = column(&keys, |(r, _)| r.interval_ms);
    let ts = column(&keys, |(r, _)| r.time_ms);
    let st = column(&keys, |(_, c)| i16::from(c.status.code()));
    let du = column(&keys, |(_, c)| c.duration_seconds);
    let me = column(&keys, |(_, c)| c.message.as_str());
    // Usually all new: ids from the sequence and one COPY, as for series.
    let ids = next_ids(tx, Sequence::Checks, keys.len())?;
    if copy_new(
        tx,
        "COPY checks (id, probe, host, name, interval_ms, last_ts_ms, last_status,
            last_duration, last_message) FROM STDIN BINARY",
        &[
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::INT2,
            Type::FLOAT8,
            Type::TEXT,
        ],
        keys.len(),
        |i| {
            [
                &ids[i], &p[i], &h[i], &n[i], &iv[i], &ts[i], &st[i], &du[i], &me[i],
            ]
        },
    )?
    .is_some()
    {
        for (i, &id) in ids.iter().enumerate() {
            let key = id_cache::key(&[p[i], h[i], n[i]]);
            names.ids.insert(key, id);
            keyed.insert(key, id);
        }
        return Ok(());
    }
    // Some existed (this server restarted, another one made them, or they fell out of the
    // cache): all read once, as for series; past that, the next batches look theirs up
    // first.
    if !names.preloaded {
        names.look_up_first = !preload(tx, names, Table::Checks)?;
        for (r, c) in &keys {
            let key = id_cache::key(&[&r.probe, &r.host, &c.name]);
            if let Some(id) = names.ids.get(key) {
                keyed.insert(key, id);
            }
        }
        keys.retain(|k| !is_known(keyed, k));
        if keys.is_empty() {
            return Ok(());
        }
    } else {
        names.look_up_first = true;
    }
    // The rows of every name the COPY held (those found since are skipped by the
    // conflict); then the ids of the rest.
    tx.execute(
        "INSERT INTO checks (probe, host, name, interval_ms, last_ts_ms, last_status,
            last_duration, last_message)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],
            $5::int8[], $6::int2[], $7::float8[], $8::text[])
         ON CONFLICT (probe, host, name) DO NOTHING",
        &[&p, &h, &n, &iv, &ts, &st, &du, &me],
    )?;
    let rows = look_up_checks(tx, &keys)?;
    record(&rows, names, keyed);
    Ok(())
}

/// The rows (id, probe, host, name) of the checks among `keys` that exist. Planned at
/// every call, as [`look_up_series`].
fn look_up_checks(
    tx: &mut PreparedTx<'_, '_>,
    keys: &[(&ProbeResult, &probewatch_core::CheckResult)],
) -> Result<Vec<postgres::Row>, StoreError> {
    let p = column(keys, |(r, _)| r.probe.as_str());
    let h = column(keys, |(r, _)| r.host.as_str());
    let n = column(keys, |(_, c)| c.name.as_str());
    Ok(tx.query_typed(
        "SELECT c.id, c.probe, c.host, c.name FROM checks c
         JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(probe, host, name)
           ON c.probe = u.probe AND c.host = u.host AND c.name = u.name",
        &[
            (&p, Type::TEXT_ARRAY),
            (&h, Type::TEXT_ARRAY),
            (&n, Type::TEXT_ARRAY),
        ],
    )?)
}

/// Writes the check results of the batch, creates checks seen for the first time, moves
/// each check's latest state forward, and marks its status intervals for repair. Returns the
/// number of check results (rewrites included, as the SQLite back end counts them).
fn write_checks(
    tx: &mut PreparedTx<'_, '_>,
    names: &mut Names,
    results: &[(&ProbeResult, i64)],
    delta: &mut Delta,
) -> Result<u64, StoreError> {
    // Ids, creating the checks not yet known.
    let mut missing: Vec<(usize, usize)> = Vec::new();
    // This batch's ids by name hash (the cache may forget entries as it fills).
    let mut keyed: HashMap<id_cache::Key, i64> = HashMap::new();
    for (ri, (result, _)) in results.iter().enumerate() {
        for (ci, check) in result.checks.iter().enumerate() {
            let key = id_cache::key(&[&result.probe, &result.host, &check.name]);
            match names.ids.get(key) {
                Some(id) => {
                    keyed.insert(key, id);
                }
                None => missing.push((ri, ci)),
            }
        }
    }
    if !missing.is_empty() {
        create_checks(tx, names, results, &missing, &mut keyed)?;
    }

    // Results, the last one written winning for the same (check, time).
    let mut rows: HashMap<(i64, i64), (&ProbeResult, &probewatch_core::CheckResult, i64)> =
        HashMap::new();
    let mut latest: HashMap<i64, (&ProbeResult, &probewatch_core::CheckResult)> = HashMap::new();
    let mut pending: HashMap<i64, intervals::Pending> = HashMap::new();
    let mut written = 0u64;
    for &(result, file_id) in results {
        for check in &result.checks {
            let Some(&id) = keyed.get(&id_cache::key(&[&result.probe, &result.host, &check.name]))
            else {
                return Err(StoreError::Database(
                    format!(
                        "check {}/{}/{} was neither found nor created",
                        result.probe, result.host, check.name
                    )
                    .into(),
                ));
            };
            written += 1;
            rows.insert((id, result.time_ms), (result, check, file_id));
            if latest
                .get(&id)
                .is_none_or(|(r, _)| r.time_ms <= result.time_ms)
            {
                latest.insert(id, (result, check));
            }
            pending.entry(id).or_default().results.push((
                result.time_ms,
                check.status.code(),
                result.interval_ms,
            ));
        }
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let mut locked: Vec<i64> = latest.keys().copied().collect();
    locked.sort_unstable();
    // The checks' rows are read and locked at once, in id order (as every server locks
    // them), before anything of the batch is written for them.
    let states = tx.query(
        "SELECT id, interval_ms, usual_interval_ms, run_start_ms, run_end_ms, run_status,
            run_results FROM checks WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&locked],
    )?;
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_unstable_by_key(|(key, _)| *key);
    let c = column(&rows, |((id, _), _)| *id);
    let ts = column(&rows, |((_, time), _)| *time);
    let st = column(&rows, |(_, (_, check, _))| i16::from(check.status.code()));
    let du = column(&rows, |(_, (_, check, _))| check.duration_seconds);
    let me = column(&rows, |(_, (_, check, _))| check.message.as_str());
    let fi = column(&rows, |(_, (_, _, file_id))| *file_id);
    let iv = column(&rows, |(_, (result, _, _))| result.interval_ms);
    // New rows are the usual case: one binary COPY. When some existed already (results
    // delivered again), insert what is new, then rewrite the rest.
    let copied = copy_new(
        tx,
        "COPY check_results (check_id, ts_ms, status, duration, message, file_id, interval_ms)
         FROM STDIN BINARY",
        &[
            Type::INT8,
            Type::INT8,
            Type::INT2,
            Type::FLOAT8,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
        ],
        c.len(),
        |i| [&c[i], &ts[i], &st[i], &du[i], &me[i], &fi[i], &iv[i]],
    )?;
    let stored = match copied {
        Some(copied) => copied,
        None => insert_then_rewrite_results(tx, (&c, &ts, &st, &du, &me, &fi, &iv))?,
    };
    delta.check_results += to_i64(stored);
    advance_checks(tx, &states, &mut pending, &latest)?;
    Ok(written)
}

/// The columns of a batch's check results, in table order.
type ResultColumns<'c> = (
    &'c [i64],
    &'c [i64],
    &'c [i16],
    &'c [Option<f64>],
    &'c [&'c str],
    &'c [i64],
    &'c [Option<i64>],
);

/// Inserts the results that are new and rewrites those delivered again with other content;
/// returns how many were new.
fn insert_then_rewrite_results(
    tx: &mut PreparedTx<'_, '_>,
    (c, ts, st, du, me, fi, iv): ResultColumns<'_>,
) -> Result<u64, StoreError> {
    let new = tx.execute(
        "INSERT INTO check_results (check_id, ts_ms, status, duration, message, file_id,
            interval_ms)
         SELECT * FROM unnest($1::int8[], $2::int8[], $3::int2[], $4::float8[], $5::text[],
            $6::int8[], $7::int8[])
         ON CONFLICT (check_id, ts_ms) DO NOTHING",
        &[&c, &ts, &st, &du, &me, &fi, &iv],
    )?;
    if (new as usize) < c.len() {
        tx.execute(
            "UPDATE check_results r SET status = u.status, duration = u.duration,
                message = u.message, file_id = u.file_id, interval_ms = u.interval_ms
             FROM unnest($1::int8[], $2::int8[], $3::int2[], $4::float8[], $5::text[],
                $6::int8[], $7::int8[]) AS u(check_id, ts_ms, status, duration, message,
                file_id, interval_ms)
             WHERE r.check_id = u.check_id AND r.ts_ms = u.ts_ms AND r.file_id <> u.file_id",
            &[&c, &ts, &st, &du, &me, &fi, &iv],
        )?;
    }
    Ok(new)
}

/// The newest result of each check in a batch.
type Latest<'i> = HashMap<i64, (&'i ProbeResult, &'i probewatch_core::CheckResult)>;

/// Brings the batch's checks up to date from their `states` (read and locked by the caller,
/// in id order), [`intervals::advance`] for each, in three statements whatever their number:
/// one UPDATE of every check row (open run, usual interval, and the latest state unless a
/// newer result is stored already: results may arrive late), the closed runs and the dirty
/// spans, each written as arrays.
fn advance_checks(
    tx: &mut PreparedTx<'_, '_>,
    states: &[postgres::Row],
    pending: &mut HashMap<i64, intervals::Pending>,
    latest: &Latest<'_>,
) -> Result<(), StoreError> {
    let mut advanced: Vec<(i64, intervals::Advance)> = Vec::with_capacity(states.len());
    for r in states {
        let id: i64 = r.get(0);
        if let Some(pending) = pending.get_mut(&id) {
            let state = super::intervals::check_state(r, 1);
            advanced.push((id, intervals::advance(&state, pending)));
        }
    }
    let closed: Vec<(i64, intervals::Run)> = advanced
        .iter()
        .flat_map(|(id, a)| a.closed.iter().map(|run| (*id, *run)))
        .collect();
    let closed_ids = column(&closed, |(id, _)| *id);
    let starts = column(&closed, |(_, run)| run.start);
    let ends = column(&closed, |(_, run)| run.end);
    let statuses = column(&closed, |(_, run)| i16::from(run.status));
    let counts = column(&closed, |(_, run)| run.results);
    let open_ids = column(&advanced, |(id, _)| *id);
    let o_start = column(&advanced, |(_, a)| a.open.map(|r| r.start));
    let o_end = column(&advanced, |(_, a)| a.open.map(|r| r.end));
    let o_status = column(&advanced, |(_, a)| a.open.map(|r| i16::from(r.status)));
    let o_count = column(&advanced, |(_, a)| a.open.map(|r| r.results));
    let o_usual = column(&advanced, |(_, a)| a.usual);
    let newest = column(&advanced, |(id, _)| latest.get(id));
    let lts = column(&newest, |n| n.map(|(r, _)| r.time_ms));
    let lst = column(&newest, |n| n.map(|(_, c)| i16::from(c.status.code())));
    let ldu = column(&newest, |n| n.and_then(|(_, c)| c.duration_seconds));
    let lme = column(&newest, |n| n.map(|(_, c)| c.message.as_str()));
    let liv = column(&newest, |n| n.and_then(|(r, _)| r.interval_ms));
    let dirty: Vec<(i64, (i64, i64))> = advanced
        .iter()
        .filter_map(|(id, a)| a.dirty.map(|span| (*id, span)))
        .collect();
    let dirty_ids = column(&dirty, |(id, _)| *id);
    let lo = column(&dirty, |(_, (l, _))| *l);
    let hi = column(&dirty, |(_, (_, h))| *h);
    // Runs closed by this batch are new rows, unless results were delivered again: one
    // COPY, falling back to an upsert.
    let copied = closed_ids.is_empty()
        || copy_new(
            tx,
            "COPY status_intervals (check_id, start_ms, end_ms, status, results)
             FROM STDIN BINARY",
            &[Type::INT8, Type::INT8, Type::INT8, Type::INT2, Type::INT8],
            closed_ids.len(),
            |i| {
                [
                    &closed_ids[i],
                    &starts[i],
                    &ends[i],
                    &statuses[i],
                    &counts[i],
                ]
            },
        )?
        .is_some();
    if !copied {
        tx.execute(
            "INSERT INTO status_intervals (check_id, start_ms, end_ms, status, results)
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int2[], $5::int8[])
             ON CONFLICT (check_id, start_ms) DO UPDATE SET end_ms = excluded.end_ms,
                status = excluded.status, results = excluded.results",
            &[&closed_ids, &starts, &ends, &statuses, &counts],
        )?;
    }
    tx.execute(
        "UPDATE checks SET run_start_ms = v.s, run_end_ms = v.e, run_status = v.st,
            run_results = v.n, usual_interval_ms = v.usual,
            last_ts_ms = CASE WHEN v.ts >= checks.last_ts_ms THEN v.ts
                ELSE checks.last_ts_ms END,
            last_status = CASE WHEN v.ts >= checks.last_ts_ms THEN v.status
                ELSE checks.last_status END,
            last_duration = CASE WHEN v.ts >= checks.last_ts_ms THEN v.duration
                ELSE checks.last_duration END,
            last_message = CASE WHEN v.ts >= checks.last_ts_ms THEN v.message
                ELSE checks.last_message END,
            interval_ms = CASE WHEN v.ts >= checks.last_ts_ms
                THEN coalesce(v.interval_ms, checks.interval_ms) ELSE checks.interval_ms END
         FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int2[], $5::int8[], $6::int8[],
                $7::int8[], $8::int2[], $9::float8[], $10::text[], $11::int8[])
              AS v(id, s, e, st, n, usual, ts, status, duration, message, interval_ms)
         WHERE checks.id = v.id",
        &[
            &open_ids, &o_start, &o_end, &o_status, &o_count, &o_usual, &lts, &lst, &ldu, &lme,
            &liv,
        ],
    )?;
    if !dirty_ids.is_empty() {
        tx.execute(
            "INSERT INTO intervals_dirty (check_id, lo_ms, hi_ms)
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[])
             ON CONFLICT (check_id) DO UPDATE SET
                lo_ms = least(intervals_dirty.lo_ms, excluded.lo_ms),
                hi_ms = greatest(intervals_dirty.hi_ms, excluded.hi_ms)",
            &[&dirty_ids, &lo, &hi],
        )?;
    }
    Ok(())
}

/// Writes the batch's samples into the head, creating series seen for the first time; the
/// last value written for the same (series, time) wins.
pub(super) fn write_samples(
    tx: &mut PreparedTx<'_, '_>,
    names: &mut Names,
    samples: &[&SeriesSample],
    delta: &mut Delta,
) -> Result<(), StoreError> {
    if samples.is_empty() {
        return Ok(());
    }
    let mut series_ids: Vec<Option<i64>> = Vec::with_capacity(samples.len());
    let mut missing: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, s) in samples.iter().enumerate() {
        let id = names.ids.get(id_cache::key(&[&s.metric, &s.labels]));
        if id.is_none() {
            missing
                .entry((s.metric.as_str(), s.labels.as_str()))
                .or_default()
                .push(i);
        }
        series_ids.push(id);
    }
    if missing.is_empty() {
        return write_rows(tx, samples, &series_ids, delta);
    }
    let mut keys: Vec<&(&str, &str)> = missing.keys().collect();
    keys.sort_by_cached_key(|k| creation_order(k.0, k.1));
    // Each row read back (id, metric, labels) names its series' id.
    let resolve =
        |rows: &[postgres::Row], cache: &mut IdCache, series_ids: &mut Vec<Option<i64>>| {
            for row in rows {
                let (id, metric, labels): (i64, &str, &str) = (row.get(0), row.get(1), row.get(2));
                cache.insert(id_cache::key(&[metric, labels]), id);
                if let Some(indexes) = missing.get(&(metric, labels)) {
                    for &i in indexes {
                        series_ids[i] = Some(id);
                    }
                }
            }
        };
    if names.look_up_first {
        let found = look_up_series(tx, &keys)?;
        resolve(&found, &mut names.ids, &mut series_ids);
        names.look_up_first = !found.is_empty();
        keys.retain(|k| missing.get(*k).is_some_and(|i| series_ids[i[0]].is_none()));
        if keys.is_empty() {
            return write_rows(tx, samples, &series_ids, delta);
        }
    }
    let metrics: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let labels: Vec<&str> = keys.iter().map(|k| k.1).collect();
    // Usually every name the cache lacks is new: ids from the sequence and one COPY,
    // about half the server time of `INSERT … ON CONFLICT` (speculative insertion cost
    // as much as the unique index itself). When some name exists already (another
    // server made it, or it fell out of the cache) the COPY is taken back whole.
    let ids = next_ids(tx, Sequence::Series, keys.len())?;
    if copy_new(
        tx,
        "COPY series (id, metric, labels) FROM STDIN BINARY",
        &[Type::INT8, Type::TEXT, Type::TEXT],
        keys.len(),
        |i| [&ids[i], &metrics[i], &labels[i]],
    )?
    .is_some()
    {
        delta.series += to_i64(keys.len() as u64);
        for (key, id) in keys.iter().zip(&ids) {
            names.ids.insert(id_cache::key(&[key.0, key.1]), *id);
            for &i in &missing[*key] {
                series_ids[i] = Some(*id);
            }
        }
        return write_rows(tx, samples, &series_ids, delta);
    }
    // Names that exist: a restarted writer (or one joining a fleet) reads them all once;
    // past what its cache holds, the next batches look theirs up first.
    if !names.preloaded {
        names.look_up_first = !preload(tx, names, Table::Series)?;
        for key in &keys {
            if let Some(id) = names.ids.get(id_cache::key(&[key.0, key.1])) {
                for &i in &missing[*key] {
                    series_ids[i] = Some(id);
                }
            }
        }
        keys.retain(|k| missing.get(*k).is_some_and(|i| series_ids[i[0]].is_none()));
        if keys.is_empty() {
            return write_rows(tx, samples, &series_ids, delta);
        }
    } else {
        names.look_up_first = true;
    }
    let metrics: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let labels: Vec<&str> = keys.iter().map(|k| k.1).collect();
    // Create what is missing; the rows that existed already are read after, and only
    // those.
    let created = tx.query(
        "INSERT INTO series (metric, labels)
         SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT (metric, labels) DO NOTHING RETURNING id, metric, labels",
        &[&metrics, &labels],
    )?;
    delta.series += to_i64(created.len() as u64);
    resolve(&created, &mut names.ids, &mut series_ids);
    keys.retain(|k| missing.get(*k).is_some_and(|i| series_ids[i[0]].is_none()));
    if !keys.is_empty() {
        let rows = look_up_series(tx, &keys)?;
        resolve(&rows, &mut names.ids, &mut series_ids);
    }
    write_rows(tx, samples, &series_ids, delta)
}

/// The rows (id, metric, labels) of the series among `keys` (metric, labels) that exist.
///
/// Planned at every call, not prepared: a plan kept from when the table was small (servers
/// starting together on a fresh database) could be a hash join over a scan of the whole
/// table, as happened to the startup scan's ledger lookup ([`LedgerStore::file_heads`]).
fn look_up_series(
    tx: &mut PreparedTx<'_, '_>,
    keys: &[&(&str, &str)],
) -> Result<Vec<postgres::Row>, StoreError> {
    let metrics: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let labels: Vec<&str> = keys.iter().map(|k| k.1).collect();
    Ok(tx.query_typed(
        "SELECT s.id, s.metric, s.labels FROM series s
         JOIN unnest($1::text[], $2::text[]) AS u(metric, labels)
           ON s.metric = u.metric AND s.labels = u.labels",
        &[(&metrics, Type::TEXT_ARRAY), (&labels, Type::TEXT_ARRAY)],
    )?)
}

/// A writer's ids of names (series, or checks), and how it makes those it lacks.
///
/// Usually they are new (a fleet's first minutes, a new probe): ids from the sequence and
/// one COPY. When they exist already — this server restarted, or another one made them —
/// the COPY fails on the first, is taken back, and `INSERT … ON CONFLICT` and a lookup
/// follow: three statements where a lookup would do (a restarted server at 100,000 checks
/// spent ~100 ms a batch on them). So a COPY that meets an existing name makes the writer
/// look names up first, creating only those not found, until a lookup finds none.
#[derive(Default)]
pub(super) struct Names {
    pub(super) ids: IdCache,
    look_up_first: bool,
    /// The table was read whole into `ids` once ([`preload`]).
    preloaded: bool,
}

impl Names {
    /// Forgets every id (after a failed transaction, whose new ids may not exist).
    pub(super) fn clear(&mut self) {
        self.ids.clear();
        self.preloaded = false;
    }
}

/// A table of names.
#[derive(Clone, Copy)]
enum Table {
    Series,
    Checks,
}

/// Reads every name of `table` into the writer's cache, once: the first time a COPY meets
/// an existing name (a restarted server: at 100,000 checks, looking up each batch's 13,000
/// series names cost it ~42 ms a batch, 2.3 s of a 100,000-file backlog). Streamed, at
/// most the cache's capacity; true when that was the whole table.
fn preload(
    tx: &mut PreparedTx<'_, '_>,
    names: &mut Names,
    table: Table,
) -> Result<bool, StoreError> {
    use postgres::fallible_iterator::FallibleIterator;
    names.preloaded = true;
    let limit = i64::try_from(IdCache::CAPACITY).unwrap_or(i64::MAX);
    let sql = match table {
        Table::Series => "SELECT id, metric, labels, NULL::text FROM series LIMIT $1",
        Table::Checks => "SELECT id, probe, host, name FROM checks LIMIT $1",
    };
    let above = limit + 1;
    let mut rows = tx.query_raw(sql, [&above as &(dyn ToSql + Sync)])?;
    let mut read = 0i64;
    while let Some(row) = rows.next()? {
        read += 1;
        let (a, b): (&str, &str) = (row.get(1), row.get(2));
        let key = match table {
            Table::Series => id_cache::key(&[a, b]),
            Table::Checks => id_cache::key(&[a, b, row.get::<_, &str>(3)]),
        };
        names.ids.insert(key, row.get(0));
    }
    Ok(read <= limit)
}

/// Writes `samples` into head blocks, each with its series id (`series_ids`, in order).
fn write_rows(
    tx: &mut PreparedTx<'_, '_>,
    samples: &[&SeriesSample],
    series_ids: &[Option<i64>],
    delta: &mut Delta,
) -> Result<(), StoreError> {
    let mut rows: Vec<(i64, i64, f64)> = Vec::with_capacity(samples.len());
    for (s, id) in samples.iter().zip(series_ids) {
        let Some(id) = id else {
            return Err(StoreError::Database(
                format!(
                    "series {}{} was neither found nor created",
                    s.metric, s.labels
                )
                .into(),
            ));
        };
        rows.push((*id, s.time_ms, s.value));
    }
    let stored = head_blocks(rows).insert(tx)?;
    delta.samples += to_i64(stored);
    Ok(())
}

/// The head blocks of a batch's `rows` (series, time, value) in the order written.
fn head_blocks(mut rows: Vec<(i64, i64, f64)>) -> HeadBlocks {
    // Last write wins within the batch: the last sample pushed per (series, time) stays.
    head_block::sort_batch(&mut rows);
    HeadBlocks::encode(&rows)
}

/// The head blocks of `samples` when the writer knows every series' id: work for the
/// client alone, done on a thread of its own while the server writes the batch's ledger
/// rows and check results (~3 ms of a 1,000-file batch, a tenth of it). `None` when some
/// series is new to the cache; the batch then writes its samples after the rest, creating
/// them.
fn prepare_head_blocks(ids: &IdCache, samples: &[&SeriesSample]) -> Option<HeadBlocks> {
    let mut rows = Vec::with_capacity(samples.len());
    for s in samples {
        rows.push((
            ids.get(id_cache::key(&[&s.metric, &s.labels]))?,
            s.time_ms,
            s.value,
        ));
    }
    Some(head_blocks(rows))
}

/// The order new series are created in: a probe's series on a host together (by their
/// `probe` and `host` labels), then by name. A pure function of the name, so every server
/// inserts shared new names in the same order (no deadlock between two batches' inserts).
fn creation_order<'s>(metric: &'s str, labels: &'s str) -> (String, String, &'s str, &'s str) {
    let (mut probe, mut host) = (String::new(), String::new());
    for (name, value) in probewatch_core::labels::parse_canonical(labels).unwrap_or_default() {
        match name.as_str() {
            "probe" => probe = value,
            "host" => host = value,
            _ => {}
        }
    }
    (probe, host, metric, labels)
}

/// The sequences [`next_ids`] takes ids from.
#[derive(Debug, Clone, Copy)]
enum Sequence {
    BatchThenFiles,
    Series,
    Checks,
}

/// `n` new ids from `sequence`, for rows that a
/// COPY then writes with their ids ([`copy_new`]); values of a COPY taken back are skipped.
fn next_ids(
    tx: &mut PreparedTx<'_, '_>,
    sequence: Sequence,
    n: usize,
) -> Result<Vec<i64>, StoreError> {
    let sql = match sequence {
        // The batch's id first, then `n - 1` files' ids.
        Sequence::BatchThenFiles => {
            "SELECT CASE WHEN i = 1 THEN nextval('batches_id_seq') ELSE nextval('files_id_seq') END
             FROM generate_series(1, $1::int8) AS i ORDER BY i"
        }
        Sequence::Series => "SELECT nextval('series_id_seq') FROM generate_series(1, $1::int8)",
        Sequence::Checks => "SELECT nextval('checks_id_seq') FROM generate_series(1, $1::int8)",
    };
    let ids: Vec<i64> = tx
        .query(sql, &[&to_i64(n as u64)])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.len() != n {
        return Err(StoreError::Database(
            format!("{sequence:?} gave {} ids for {n} rows", ids.len()).into(),
        ));
    }
    Ok(ids)
}

/// Appends `rows` rows (the `i`th given by `row(i)`) with one binary COPY under a
/// savepoint: `Some(count)`, or `None` when some row's key exists already — then the COPY
/// fails as a whole, the savepoint takes it back, and the caller inserts what is new and
/// rewrites the rest. New rows are the usual case, and a COPY costs about half an
/// `INSERT … ON CONFLICT` (speculative insertion).
fn copy_new<'r, const N: usize>(
    tx: &mut PreparedTx<'_, '_>,
    copy: &'static str,
    types: &[Type; N],
    rows: usize,
    row: impl Fn(usize) -> [&'r (dyn ToSql + Sync); N],
) -> Result<Option<u64>, StoreError> {
    let copy = tx.statement(copy)?;
    let mut attempt = tx.savepoint("copy_new")?;
    let copied = (|| {
        let sink = attempt.copy_in(&copy)?;
        let mut writer = BinaryCopyInWriter::new(sink, types);
        for i in 0..rows {
            writer.write(&row(i))?;
        }
        writer.finish()
    })();
    match copied {
        Ok(count) => {
            attempt.commit()?;
            Ok(Some(count))
        }
        Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            attempt.rollback()?;
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

use crate::id_cache::IdCache;

#[cfg(test)]
mod tests {
    use super::creation_order;

    /// New series are created a probe and host at a time, whatever their metric or other
    /// labels, so that a rule reading one probe's series finds them side by side.
    #[test]
    fn new_series_are_created_a_probe_and_host_at_a_time() {
        let mut names = vec![
            ("status", r#"{check="c1",host="h1",probe="p2"}"#),
            ("duration", r#"{check="c0",host="h1",probe="p1"}"#),
            ("status", r#"{check="c0",host="h1",probe="p1"}"#),
            ("status", r#"{check="c0",host="h2",probe="p1"}"#),
            ("up", r#"{job="node"}"#),
            ("duration", r#"{check="c1",host="h1",probe="p2"}"#),
            ("status", r#"{check="c1",host="h1",probe="p1"}"#),
        ];
        names.sort_by_cached_key(|(m, l)| creation_order(m, l));
        assert_eq!(
            names,
            [
                ("up", r#"{job="node"}"#),
                ("duration", r#"{check="c0",host="h1",probe="p1"}"#),
                ("status", r#"{check="c0",host="h1",probe="p1"}"#),
                ("status", r#"{check="c1",host="h1",probe="p1"}"#),
                ("status", r#"{check="c0",host="h2",probe="p1"}"#),
                ("duration", r#"{check="c1",host="h1",probe="p2"}"#),
                ("status", r#"{check="c1",host="h1",probe="p2"}"#),
            ]
        );
    }
}
