//! Samples on PostgreSQL: the head as blocks (`store::head_block`, one row per batch and
//! bucket of series), compaction into the same compressed chunks as SQLite's
//! (`store::chunk`), and reads of many series in one statement.
//!
//! Several servers may ingest at once, so compaction cannot freeze a head as SQLite's single
//! writer does. A drain moves the blocks up to the newest one when it started, a few
//! buckets a step, each step deleting its blocks and writing their series' chunks in one
//! transaction. Blocks written meanwhile stay in the head, where reads apply them after the
//! chunks (so their values win) and the next drain takes them. Among head blocks the higher
//! id wins a repeated (series, time): the later batch of one server; two servers writing the
//! same (series, time) at the same moment may see the earlier commit win. One server
//! compacts at a time (an advisory lock); the others skip.

use std::collections::HashMap;
use std::sync::Arc;

use postgres::GenericClient;
use postgres::types::Type;
use probewatch_core::SeriesSample;

use super::chunk_cache::{self, ChunkCache};
use super::ledger::{Delta, write_samples};
use super::{PgStore, PreparedTx, to_u64};
use crate::chunk::{self, CHUNK_MAX_SAMPLES};
use crate::head_block;
use crate::model::*;
use crate::{SampleStore, StoreError};

/// The advisory lock that lets one server compact at a time.
const COMPACT_LOCK: i64 = 0x7077_636f_6d70_6163;

fn corrupt(err: chunk::ChunkError) -> StoreError {
    StoreError::Database(Box::new(err))
}

impl SampleStore for PgStore {
    fn compact(&self, max_samples: usize) -> Result<CompactStep, StoreError> {
        use std::sync::atomic::Ordering;
        let mut client = self.client()?;
        self.keep_partitions_ahead(&mut client)?;
        self.analyze_after_backfill(&mut client)?;
        let upto = self.drain_upto.load(Ordering::Relaxed);
        if upto == 0 {
            // A drain starts when the head holds enough samples to be worth it; it then
            // moves the blocks up to the newest one now, so that it ends however fast the
            // servers go on ingesting.
            let row = client.query_one(
                "SELECT coalesce(sum(samples), 0)::int8, coalesce(max(id), 0),
                        coalesce(min(id), 9223372036854775807),
                        (SELECT series FROM stats WHERE id = 1)
                 FROM head_blocks",
                &[],
            )?;
            let (samples, newest): (i64, i64) = (row.get(0), row.get(1));
            self.read_caches.head.forget_below(row.get(2));
            let series = to_u64(row.get::<_, Option<i64>>(3).unwrap_or(0));
            let threshold = self
                .head_max
                .max(series.saturating_mul(self.head_per_series));
            if to_u64(samples) < threshold || newest == 0 {
                return Ok(CompactStep::default());
            }
            self.drain_upto.store(newest, Ordering::Relaxed);
            return Ok(CompactStep {
                swapped: true,
                ..CompactStep::default()
            });
        }
        let mut tx = client.transaction()?;
        let mine: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&COMPACT_LOCK])?
            .get(0);
        if !mine {
            return Ok(CompactStep::default());
        }
        // Whole buckets (a bucket holds all of its series' head samples), the first ones
        // holding about `max_samples`. Blocks written meanwhile stay for the next drain and
        // are read after the chunks, so their values win.
        let mut buckets = Vec::new();
        let mut taken = 0i64;
        for r in tx.query(
            "SELECT bucket, sum(samples)::int8 FROM head_blocks WHERE id <= $1
              GROUP BY bucket ORDER BY bucket",
            &[&upto],
        )? {
            if taken >= i64::try_from(max_samples.max(1)).unwrap_or(i64::MAX) {
                break;
            }
            buckets.push(r.get::<_, i64>(0));
            taken += r.get::<_, i64>(1);
        }
        if buckets.is_empty() {
            self.drain_upto.store(0, Ordering::Relaxed);
            drop(tx);
            self.vacuum_after_drain();
            return Ok(CompactStep::default());
        }
        let mut blocks: Vec<(i64, i64, Vec<u8>)> = tx
            .query(
                "DELETE FROM head_blocks WHERE bucket = ANY($1) AND id <= $2
                 RETURNING id, samples, data",
                &[&buckets, &upto],
            )?
            .into_iter()
            .map(|r| (r.get(0), i64::from(r.get::<_, i32>(1)), r.get(2)))
            .collect();
        blocks.sort_unstable_by_key(|b| b.0);
        let mut rows = Vec::new();
        let mut written = 0i64;
        for (_, samples, data) in &blocks {
            head_block::decode(data, &mut rows).map_err(corrupt)?;
            written += samples;
        }
        // Oldest block first: a repeated (series, time) keeps the newest block's value.
        head_block::sort_rows(&mut rows);
        let samples_delta =
            merge_into_chunks(&mut tx, &rows, &self.spans)? - (written - rows.len() as i64);
        tx.execute(
            "UPDATE stats SET samples = samples + $1 WHERE id = 1",
            &[&samples_delta],
        )?;
        tx.commit()?;
        // Samples of days before yesterday went into chunks of the default partition
        // (unless a server made their day's partition back then): a backfill's, whose
        // statistics they make stale.
        let yesterday = super::partitions::yesterday_ms(crate::now_us() / 1000);
        self.backfilled_chunks
            .add(rows.iter().filter(|r| r.1 < yesterday).count() as u64);
        Ok(CompactStep {
            moved: rows.len(),
            swapped: false,
            samples_delta,
        })
    }

    fn sample_span(&self) -> Result<SampleSpan, StoreError> {
        let r = self.client()?.query_one(
            "SELECT (SELECT count(*) FROM chunks),
                least((SELECT min(min_ts) FROM chunks), (SELECT min(min_ts) FROM head_blocks)),
                greatest((SELECT max(max_ts) FROM chunks), (SELECT max(max_ts) FROM head_blocks))",
            &[],
        )?;
        let (lo, hi): (Option<i64>, Option<i64>) = (r.get(1), r.get(2));
        Ok(SampleSpan {
            chunks: to_u64(r.get(0)),
            range_ms: lo.zip(hi),
        })
    }

    fn series_after(&self, after_id: i64) -> Result<Vec<SeriesRow>, StoreError> {
        // Prepared once per connection: every rule group's read asks this first (usually
        // for nothing new); unprepared, the statement was parsed and planned each time.
        Ok(self
            .client()?
            .query(
                "SELECT id, metric, labels FROM series WHERE id > $1 ORDER BY id",
                &[&after_id],
            )?
            .iter()
            .map(|r| SeriesRow {
                id: r.get(0),
                metric: r.get(1),
                labels: r.get(2),
            })
            .collect())
    }

    fn series_with_samples(
        &self,
        ids: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut client = self.client()?;
        let mut tx = read_snapshot(&mut client)?;
        if ids.len() > PRESENCE_BY_ID_MAX {
            let present = self.spans.present(&mut tx, ids, from_ms, to_ms)?;
            tx.commit()?;
            return Ok(present);
        }
        let mut found = head_presence(&mut tx, Some(ids), from_ms, to_ms)?;
        let mut decoded = Vec::new();
        for r in tx.query(
            "SELECT series_id, min_ts, max_ts, data FROM chunks
             WHERE series_id = ANY($1) AND max_ts >= $2 AND min_ts <= $3",
            &[&ids, &from_ms, &to_ms],
        )? {
            let id: i64 = r.get(0);
            if found.contains(&id) {
                continue;
            }
            let (lo, hi): (i64, i64) = (r.get(1), r.get(2));
            // A chunk inside the range has a sample in it; one that straddles an end may
            // have its samples on either side only.
            let inside = if lo >= from_ms && hi <= to_ms {
                true
            } else {
                decoded.clear();
                chunk::decode(r.get(3), &mut decoded).map_err(corrupt)?;
                decoded.iter().any(|s| (from_ms..=to_ms).contains(&s.0))
            };
            if inside {
                found.insert(id);
            }
        }
        tx.commit()?;
        Ok(ids.iter().map(|id| found.contains(id)).collect())
    }

    fn read_samples(
        &self,
        ids: &[i64],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<Vec<(i64, f64)>>, StoreError> {
        // One statement: one snapshot without a transaction around it.
        let mut client = self.client()?;
        let by_ids = client.prepared(READ_BY_IDS, &READ_BY_IDS_TYPES)?;
        read_many(
            &mut **client,
            &self.read_caches,
            &by_ids,
            ids,
            &Ranges::all(from_ms, to_ms),
            max_samples,
        )?
        .ok_or(StoreError::TooManySamples { limit: max_samples })
    }

    fn read_ranges(
        &self,
        wanted: &[(i64, i64, i64)],
        max_samples: usize,
    ) -> Result<Vec<Vec<(i64, f64)>>, StoreError> {
        // One statement over the widest range (a chunk usually covers every window of a
        // group anyway), each series then cut to its own: ~120 statements a cycle of 1,000
        // rules in 20 groups became 20.
        let (Some(from_ms), Some(to_ms)) = (
            wanted.iter().map(|w| w.1).min(),
            wanted.iter().map(|w| w.2).max(),
        ) else {
            return Ok(Vec::new());
        };
        let mut ids: Vec<i64> = wanted.iter().map(|w| w.0).collect();
        ids.sort_unstable();
        ids.dedup();
        // Each series decoded over its own range only (the union of the windows asked for
        // it): over the widest of the group's, a rule cycle decoded and copied six times
        // the samples of its 5-minute windows to serve one 30-minute one.
        let mut own = vec![(i64::MAX, i64::MIN); ids.len()];
        let mut uses = vec![0usize; ids.len()];
        for &(id, from, to) in wanted {
            if let Ok(i) = ids.binary_search(&id) {
                own[i] = (own[i].0.min(from), own[i].1.max(to));
                uses[i] += 1;
            }
        }
        let mut client = self.client()?;
        let by_ids = client.prepared(READ_BY_IDS, &READ_BY_IDS_TYPES)?;
        let ranges = Ranges {
            from_ms,
            to_ms,
            own: Some(&own),
        };
        let mut read = read_many(
            &mut **client,
            &self.read_caches,
            &by_ids,
            &ids,
            &ranges,
            max_samples,
        )?
        .ok_or(StoreError::TooManySamples { limit: max_samples })?;
        Ok(wanted
            .iter()
            .map(|&(id, from, to)| match ids.binary_search(&id) {
                // Asked for once: read over exactly its range.
                Ok(i) if uses[i] == 1 => std::mem::take(&mut read[i]),
                Ok(i) => within(&read[i], (from, to)).to_vec(),
                Err(_) => Vec::new(),
            })
            .collect())
    }

    fn write_samples(&self, samples: &[SeriesSample]) -> Result<u64, StoreError> {
        let mut client = self.client()?;
        let (client, statements) = client.parts();
        let mut tx = client.transaction()?;
        let mut delta = Delta::default();
        let refs: Vec<&SeriesSample> = samples.iter().collect();
        let mut ids = self.ids();
        let written = {
            let mut tx = PreparedTx::new(&mut tx, statements);
            write_samples(&mut tx, &mut ids.series, &refs, &mut delta)
                .and_then(|()| delta.apply(&mut tx))
        }
        .and_then(|()| Ok(tx.commit()?));
        if let Err(err) = written {
            ids.series.clear();
            return Err(err);
        }
        Ok(to_u64(delta.samples))
    }

    fn samples(
        &self,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeriesSamples>, StoreError> {
        let mut client = self.client()?;
        let by_ids = client.prepared(READ_BY_IDS, &READ_BY_IDS_TYPES)?;
        let mut tx = read_snapshot(&mut client)?;
        let series: Vec<(i64, String)> = tx
            .query(
                "SELECT id, labels FROM series WHERE metric = $1 ORDER BY labels",
                &[&metric],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let ids: Vec<i64> = series.iter().map(|s| s.0).collect();
        let samples = read_whole(&mut tx, &self.read_caches, &by_ids, &ids, from_ms, to_ms)?;
        tx.commit()?;
        Ok(series
            .into_iter()
            .zip(samples)
            .map(|((_, labels), samples)| SeriesSamples {
                metric: metric.to_string(),
                labels,
                samples,
            })
            .collect())
    }

    fn last_values(
        &self,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&str, f64),
    ) -> Result<(), StoreError> {
        let mut client = self.client()?;
        let by_ids = client.prepared(READ_BY_IDS, &READ_BY_IDS_TYPES)?;
        let mut tx = read_snapshot(&mut client)?;
        // Pages of series in the order of the (metric, labels) unique index.
        let mut after = String::new();
        loop {
            let page: Vec<(i64, String)> = tx
                .query(
                    "SELECT id, labels FROM series WHERE metric = $1 AND labels > $2
                     ORDER BY labels LIMIT $3",
                    &[&metric, &after, &LAST_VALUES_PAGE],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let Some((_, last)) = page.last() else { break };
            after = last.clone();
            let ids: Vec<i64> = page.iter().map(|s| s.0).collect();
            let samples = read_whole(&mut tx, &self.read_caches, &by_ids, &ids, from_ms, to_ms)?;
            for ((_, labels), samples) in page.iter().zip(samples) {
                if let Some(&(_, value)) = samples.last() {
                    visit(labels, value);
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Series a page of [`SampleStore::last_values`] reads on PostgreSQL.
const LAST_VALUES_PAGE: i64 = 4_096;

/// Past this many series, presence comes from the chunk spans kept in memory
/// ([`super::spans`]) and the head, instead of a lookup per series (an index descent each).
const PRESENCE_BY_ID_MAX: usize = 2_000;

/// From this many series, a read that asks for at least half of all series reads the
/// range whole instead of by id.
const WHOLE_READ_MIN_SERIES: usize = 5_000;

/// A read-only transaction that sees one snapshot: chunks and head together.
fn read_snapshot(client: &mut postgres::Client) -> Result<postgres::Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?)
}

/// [`read_many`] with no limit on the samples held (tools and sweeps that read by pages).
fn read_whole(
    tx: &mut impl GenericClient,
    caches: &ReadCaches,
    by_ids: &postgres::Statement,
    ids: &[i64],
    from_ms: i64,
    to_ms: i64,
) -> Result<PerSeries, StoreError> {
    let ranges = Ranges::all(from_ms, to_ms);
    Ok(read_many(tx, caches, by_ids, ids, &ranges, usize::MAX)?.unwrap_or_default())
}

/// One series' samples, oldest first.
type Samples = Vec<(i64, f64)>;

/// Each series' samples, in the order of the ids asked for.
type PerSeries = Vec<Samples>;

/// [`read_many`]'s statement for a read of some series. Each chunk a row: those of the
/// series not held in the process's [`ChunkCache`] (`$1`) ending at or after the range's
/// start, then every chunk made since the newest one the cache has followed (`$6`, marked
/// `new`; `$7` is the largest id: a range with both ends is what makes the plan for any
/// values look the ids up in the primary key, where `id > $6` alone read every chunk, 5.8
/// ms a cycle at 100,000 series). Then each head block of the series' buckets a row (no
/// series, block id, data unless the process holds it (`$5`), first and last series,
/// bucket). Columns: series, newest time (a block's id), data, first and last series,
/// bucket, oldest time, chunk id, new. Prepared on each connection
/// ([`super::connection::Conn::prepared`]).
const READ_BY_IDS: &str = "SELECT series_id, max_ts, data, NULL::int8, NULL::int8, NULL::int8,
            min_ts, id, false
       FROM chunks WHERE series_id = ANY($1) AND max_ts >= $2
     UNION ALL
     SELECT series_id, max_ts, data, NULL, NULL, NULL, min_ts, id, true
       FROM chunks WHERE id > $6 AND id <= $7
     UNION ALL
     SELECT NULL, id, CASE WHEN id = ANY($5) THEN NULL ELSE data END,
            first_series, last_series, bucket, NULL, NULL, NULL
       FROM head_blocks WHERE bucket = ANY($4) AND max_ts >= $2 AND min_ts <= $3";

/// The parameter types of [`READ_BY_IDS`].
const READ_BY_IDS_TYPES: [Type; 7] = [
    Type::INT8_ARRAY,
    Type::INT8,
    Type::INT8,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8,
    Type::INT8,
];

/// Runs `read` (one execution of [`READ_BY_IDS`]) under the plan the server made once for
/// the statement, not one made for the ids given.
///
/// The server plans a prepared statement for its parameters' values at each execution
/// until a plan for any values looks no dearer, and for this statement it never did. With
/// 20,000 ids that plan cost it ~4 ms of estimating each id's rows in each day partition
/// (the days made ahead included), and chose index scans that look each id up in those
/// empty future days too. The plan for any values is made once per connection; it prunes
/// the days before the range when it runs, and scans the empty days (or, while they are
/// empty, reads nothing from them). A rule cycle over 100,000 idle series: the read
/// 14-16 ms + 3.8-4.1 ms planning a cycle, against 12.2 + 0.3. Two more round trips (the
/// setting, and back): the other statements of the connection keep the usual choice.
fn generic_plan<C: GenericClient, T>(
    client: &mut C,
    read: impl FnOnce(&mut C) -> Result<T, postgres::Error>,
) -> Result<T, StoreError> {
    client.batch_execute("SET plan_cache_mode = force_generic_plan")?;
    let out = read(client);
    // In a transaction that the read failed, the setting went with the transaction.
    let reset = client.batch_execute("RESET plan_cache_mode");
    let out = out?;
    reset?;
    Ok(out)
}

/// The time ranges a read wants: `[from_ms, to_ms]` for every series, or each series (by
/// its slot in the ids read) its own range within it.
struct Ranges<'a> {
    from_ms: i64,
    to_ms: i64,
    own: Option<&'a [(i64, i64)]>,
}

impl Ranges<'_> {
    /// The same range for every series.
    fn all(from_ms: i64, to_ms: i64) -> Ranges<'static> {
        Ranges {
            from_ms,
            to_ms,
            own: None,
        }
    }

    /// The range of the series in `slot`.
    fn of(&self, slot: usize) -> (i64, i64) {
        self.own
            .and_then(|own| own.get(slot).copied())
            .unwrap_or((self.from_ms, self.to_ms))
    }

    /// The smallest range holding those of `slots` (series, slot).
    fn covering(&self, slots: &[(i64, usize)]) -> (i64, i64) {
        slots
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &(_, slot)| {
                let (from, to) = self.of(slot);
                (lo.min(from), hi.max(to))
            })
    }
}

/// The samples of `samples` (oldest first) in `[from, to]`.
fn within(samples: &[(i64, f64)], (from, to): (i64, i64)) -> &[(i64, f64)] {
    let start = samples.partition_point(|s| s.0 < from);
    let end = samples.partition_point(|s| s.0 <= to);
    &samples[start..end.max(start)]
}

/// The samples of each of `ids` in its range of `ranges`, chunks then head (the head winning
/// on equal timestamps), or `None` past `max_samples` in all. `by_ids` is [`READ_BY_IDS`]
/// prepared on the connection of `tx`.
fn read_many(
    tx: &mut impl GenericClient,
    caches: &ReadCaches,
    by_ids: &postgres::Statement,
    ids: &[i64],
    ranges: &Ranges<'_>,
    max_samples: usize,
) -> Result<Option<PerSeries>, StoreError> {
    let (from_ms, to_ms) = (ranges.from_ms, ranges.to_ms);
    let mut out: Vec<Vec<(i64, f64)>> = vec![Vec::new(); ids.len()];
    // (series, slot) in id order. Head blocks list their series in id order too, so one walk
    // finds a block's wanted series: a hash lookup per series of every block met was 40 % of
    // the client's time in a rule cycle.
    let mut wanted: Vec<(i64, usize)> = ids.iter().copied().zip(0..).collect();
    wanted.sort_unstable();
    // One statement, so one snapshot and one round trip (a read of some series: prepared
    // once per connection; a whole metric: typed parameters, no prepare): each chunk a row,
    // then each head block a row. Unordered: sorting a large read made
    // the server spill to disk, and the client orders each series' few rows cheaply.
    //
    // A read of most of the store's series (a whole metric) takes every row in the range
    // and leaves the few not asked for here: planning an `= ANY` of 20,000 ids took the
    // server 7-13 ms and filtering by it 20 ms more, for rows it would return anyway.
    let whole = ids.len() >= WHOLE_READ_MIN_SERIES && {
        let total: i64 = tx
            .query_typed("SELECT series FROM stats WHERE id = 1", &[])?
            .first()
            .map_or(i64::MAX, |r| r.get(0));
        i64::try_from(ids.len())
            .unwrap_or(i64::MAX)
            .saturating_mul(2)
            >= total
    };
    // Each series once, with the earliest time wanted of it.
    let series: Vec<(i64, i64)> = wanted
        .chunk_by(|a, b| a.0 == b.0)
        .map(|slots| (slots[0].0, ranges.covering(slots).0))
        .collect();
    // A read by id takes the chunks of the series the process holds from its cache, and
    // asks only for those made since ([`ChunkCache`]); a whole read asks for everything.
    let view = (!whole).then(|| caches.chunks.view(&series));
    let fill = !whole && to_ms.saturating_sub(from_ms) <= chunk_cache::FILL_MAX_SPAN_MS;
    // Each head block that may hold samples of these series a row.
    // Head blocks never change once written: the data of those this process holds already
    // is not sent again (a rule group's read sent the whole head, ~1.6 MB at 10,000 series).
    let buckets = (!whole).then(|| buckets_of(ids));
    let cached = caches.head.snapshot(buckets.as_deref());
    let known: Vec<i64> = cached.keys().copied().collect();
    let (rows, followed) = if let (Some(buckets), Some(view)) = (&buckets, &view) {
        let missing: Vec<i64> = series
            .iter()
            .zip(&view.held)
            .filter(|(_, held)| held.is_none())
            .map(|((id, _), _)| *id)
            .collect();
        // The first read follows chunks from the newest one now.
        let followed = match view.followed {
            Some(followed) => followed,
            None => tx
                .query_typed("SELECT coalesce(max(id), 0) FROM chunks", &[])?
                .first()
                .map_or(0, |r| r.get(0)),
        };
        let rows = generic_plan(tx, |tx| {
            tx.query(
                by_ids,
                &[
                    &missing,
                    &from_ms,
                    &to_ms,
                    buckets,
                    &known,
                    &followed,
                    &i64::MAX,
                ],
            )
        })?;
        (rows, followed)
    } else {
        let rows = tx.query_typed(
            "SELECT series_id, max_ts, data, NULL::int8, NULL::int8, NULL::int8,
                    min_ts, id, false
               FROM chunks WHERE max_ts >= $1 AND min_ts <= $2
             UNION ALL
             SELECT NULL, id, CASE WHEN id = ANY($3) THEN NULL ELSE data END,
                    first_series, last_series, bucket, NULL, NULL, NULL
               FROM head_blocks WHERE max_ts >= $1 AND min_ts <= $2",
            &[
                (&from_ms, Type::INT8),
                (&to_ms, Type::INT8),
                (&known, Type::INT8_ARRAY),
            ],
        )?;
        (rows, 0)
    };
    // Per slot: its chunks' samples by the chunk's newest time, then its head samples.
    let mut chunked: Vec<Vec<(i64, Samples)>> = vec![Vec::new(); ids.len()];
    let mut head: Vec<Samples> = vec![Vec::new(); ids.len()];
    let mut taken = Taken {
        wanted: &wanted,
        ranges,
        chunked: &mut chunked,
        held: 0,
        max_samples,
    };
    let mut blocks: Vec<&postgres::Row> = Vec::new();
    // Chunks made since the cache last followed the table, by series.
    let mut new: Vec<(i64, chunk_cache::Chunk)> = Vec::new();
    let mut filled: HashMap<i64, Vec<chunk_cache::Chunk>> = HashMap::new();
    for r in &rows {
        let Some(series) = r.get::<_, Option<i64>>(0) else {
            blocks.push(r);
            continue;
        };
        let chunk = || chunk_cache::Chunk {
            id: r.get(7),
            min_ts: r.get(6),
            max_ts: r.get(1),
            data: r.get::<_, &[u8]>(2).into(),
        };
        if r.get::<_, bool>(8) {
            new.push((series, chunk()));
            continue;
        }
        if fill {
            filled.entry(series).or_default().push(chunk());
        }
        if !taken.chunk(series, r.get(1), r.get(2))? {
            return Ok(None);
        }
    }
    if let Some(view) = view {
        // The held series' chunks, brought up to date with those made since.
        new.sort_by_key(|(series, _)| *series);
        for ((id, _), held) in series.iter().zip(&view.held) {
            let Some(held) = held else { continue };
            let start = new.partition_point(|(s, _)| s < id);
            let since = new[start..].iter().take_while(|(s, _)| s == id);
            let mut now: Vec<chunk_cache::Chunk> = Vec::new();
            let chunks: &[chunk_cache::Chunk] = if since.clone().next().is_some() {
                now.extend(held.iter().cloned());
                for (_, c) in since {
                    chunk_cache::place(&mut now, c.clone());
                }
                &now
            } else {
                held
            };
            for c in chunks {
                if !taken.chunk(*id, c.max_ts, &c.data)? {
                    return Ok(None);
                }
            }
        }
        let filled = if fill {
            series
                .iter()
                .zip(&view.held)
                .filter(|(_, held)| held.is_none())
                .map(|((id, _), _)| (*id, from_ms, filled.remove(id).unwrap_or_default()))
                .collect()
        } else {
            Vec::new()
        };
        caches.chunks.update(chunk_cache::Update {
            view,
            followed,
            new,
            filled,
        });
    }
    let mut held = taken.held;
    // Head blocks in write order, each series' runs appended oldest first.
    blocks.sort_unstable_by_key(|r| r.get::<_, i64>(1));
    let mut run = Vec::new();
    let mut fetched = Vec::new();
    for r in blocks {
        let id: i64 = r.get(1);
        let block: Arc<head_block::IndexedBlock> = match r.get::<_, Option<&[u8]>>(2) {
            Some(data) => {
                let block = Arc::new(head_block::IndexedBlock::new(data.into()).map_err(corrupt)?);
                fetched.push((id, r.get::<_, i64>(5), block.clone()));
                block
            }
            None => match cached.get(&id) {
                Some((_, block)) => block.clone(),
                None => {
                    return Err(corrupt(chunk::ChunkError(
                        "head block missing from the cache",
                    )));
                }
            },
        };
        // The wanted series from the block's first on; none up to its last: skip it.
        let (first, last): (i64, i64) = (r.get(3), r.get(4));
        let rest = &wanted[wanted.partition_point(|w| w.0 < first)..];
        if rest.first().is_none_or(|w| w.0 > last) {
            continue;
        }
        let mut series = block.wanted(rest);
        while let Some((slots, samples)) = series.next_wanted().map_err(corrupt)? {
            run.clear();
            let covering = ranges.covering(slots);
            samples
                .decode_range(covering.0, covering.1, &mut run)
                .map_err(corrupt)?;
            for &(_, slot) in slots {
                head[slot].extend_from_slice(within(&run, ranges.of(slot)));
            }
            held += run.len() * slots.len();
            if held > max_samples {
                return Ok(None);
            }
        }
    }
    caches.head.add(fetched);
    for ((series, mut chunks), head) in out.iter_mut().zip(chunked).zip(head) {
        // A series' chunks are disjoint, so their newest times order them; its head runs
        // follow, oldest block first, so a repeated time keeps the newest value.
        chunks.sort_unstable_by_key(|c| c.0);
        for (_, samples) in chunks {
            if series.is_empty() {
                *series = samples; // usually a series' only chunk: no copy
            } else {
                series.extend(samples);
            }
        }
        let from_chunks = series.len();
        series.extend(head);
        if series.len() > from_chunks {
            chunk::keep_last_written(series, 0);
        }
    }
    Ok(Some(out))
}

/// The entries of `wanted` (sorted by series id) for series `id`: usually one, more when a
/// read asked for a series twice.
fn slots_of(wanted: &[(i64, usize)], id: i64) -> &[(i64, usize)] {
    let start = wanted.partition_point(|w| w.0 < id);
    let len = wanted[start..].partition_point(|w| w.0 == id);
    &wanted[start..start + len]
}

/// Where a read puts the samples of each chunk it meets, and how many it holds.
struct Taken<'r, 'a> {
    /// (series, slot) in id order.
    wanted: &'r [(i64, usize)],
    ranges: &'r Ranges<'a>,
    /// Per slot: its chunks' samples by the chunk's newest time.
    chunked: &'r mut Vec<Vec<(i64, Samples)>>,
    held: usize,
    max_samples: usize,
}

impl Taken<'_, '_> {
    /// Decodes the samples of a chunk of `series` ending at `max_ts` that its slots want;
    /// false once the read holds more than its limit.
    fn chunk(&mut self, series: i64, max_ts: i64, data: &[u8]) -> Result<bool, StoreError> {
        let slots = slots_of(self.wanted, series);
        if slots.is_empty() {
            return Ok(true);
        }
        let ranges = self.ranges;
        let covering = ranges.covering(slots);
        // The statement asks for the widest range of the read; a series wanted over a
        // narrower one has chunks that end before it (a rule's 5-minute window beside a
        // group's 30-minute one, over series gone quiet): nothing of those is wanted, and
        // decoding them (every sample of a chunk depends on the one before) was most of a
        // rule cycle's decoding over idle series.
        if max_ts < covering.0 {
            return Ok(true);
        }
        let mut decoded = Vec::new();
        chunk::decode_range(data, covering.0, covering.1, &mut decoded).map_err(corrupt)?;
        if decoded.is_empty() {
            return Ok(true);
        }
        let taken = decoded.len();
        // An id asked for more than once gets a copy per slot; usually there is one.
        if let Some((&(_, last), others)) = slots.split_last() {
            for &(_, slot) in others {
                self.chunked[slot].push((max_ts, within(&decoded, ranges.of(slot)).to_vec()));
            }
            if ranges.of(last) != covering {
                decoded = within(&decoded, ranges.of(last)).to_vec();
            }
            self.chunked[last].push((max_ts, decoded));
        }
        self.held += taken * slots.len();
        Ok(self.held <= self.max_samples)
    }
}

/// What a process keeps of what it read: chunks by series, and head blocks.
#[derive(Default)]
pub(super) struct ReadCaches {
    pub head: HeadCache,
    pub chunks: ChunkCache,
}

/// The head blocks a process has read, by id: a block is never changed once written (a
/// drain or retention deletes it whole), so its data need not cross the network twice.
/// Bounded by bytes; blocks gone from the head are dropped when compaction sees the oldest
/// block left, or with everything when the bound is reached.
#[derive(Default)]
pub(super) struct HeadCache(std::sync::Mutex<HeadCacheInner>);

#[derive(Default)]
struct HeadCacheInner {
    /// Block id → its bucket and data.
    blocks: HashMap<i64, (i64, Arc<head_block::IndexedBlock>)>,
    bytes: usize,
}

/// Most bytes of block data (with their indexes) a [`HeadCache`] holds.
const HEAD_CACHE_MAX_BYTES: usize = 16 << 20;

impl HeadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeadCacheInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The blocks held now of `buckets` (all with `None`), the data shared, not copied: a
    /// read names only those it may meet.
    fn snapshot(
        &self,
        buckets: Option<&[i64]>,
    ) -> HashMap<i64, (i64, Arc<head_block::IndexedBlock>)> {
        let inner = self.lock();
        match buckets {
            None => inner.blocks.clone(),
            Some(buckets) => inner
                .blocks
                .iter()
                .filter(|(_, (bucket, _))| buckets.binary_search(bucket).is_ok())
                .map(|(&id, block)| (id, block.clone()))
                .collect(),
        }
    }

    fn add(&self, blocks: Vec<(i64, i64, Arc<head_block::IndexedBlock>)>) {
        let mut inner = self.lock();
        for (id, bucket, block) in blocks {
            let len = block.bytes();
            if inner.blocks.insert(id, (bucket, block)).is_none() {
                inner.bytes += len;
            }
        }
        if inner.bytes > HEAD_CACHE_MAX_BYTES {
            *inner = HeadCacheInner::default();
        }
    }

    /// Drops the blocks below `oldest`, the oldest block left in the head.
    pub(super) fn forget_below(&self, oldest: i64) {
        let mut inner = self.lock();
        let mut freed = 0;
        inner.blocks.retain(|&id, (_, block)| {
            let keep = id >= oldest;
            if !keep {
                freed += block.bytes();
            }
            keep
        });
        inner.bytes -= freed;
    }
}

/// The buckets of `ids`, each once.
fn buckets_of(ids: &[i64]) -> Vec<i64> {
    let mut buckets: Vec<i64> = ids.iter().map(|&id| head_block::bucket(id)).collect();
    buckets.sort_unstable();
    buckets.dedup();
    buckets
}

/// Whether sorted `ids` hold one in `[first, last]`.
fn any_within(ids: &[i64], first: i64, last: i64) -> bool {
    let i = ids.partition_point(|&id| id < first);
    ids.get(i).is_some_and(|&id| id <= last)
}

/// The series among `ids` (every series, with `None`) with a head sample in `[from_ms,
/// to_ms]`.
pub(super) fn head_presence(
    tx: &mut impl GenericClient,
    ids: Option<&[i64]>,
    from_ms: i64,
    to_ms: i64,
) -> Result<std::collections::HashSet<i64>, StoreError> {
    let wanted: Option<Vec<i64>> = ids.map(|ids| {
        let mut wanted = ids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    });
    let rows = match &wanted {
        Some(wanted) => tx.query_typed(
            "SELECT first_series, last_series, data FROM head_blocks
              WHERE bucket = ANY($1) AND max_ts >= $2 AND min_ts <= $3",
            &[
                (&buckets_of(wanted), Type::INT8_ARRAY),
                (&from_ms, Type::INT8),
                (&to_ms, Type::INT8),
            ],
        )?,
        None => tx.query_typed(
            "SELECT first_series, last_series, data FROM head_blocks
              WHERE max_ts >= $1 AND min_ts <= $2",
            &[(&from_ms, Type::INT8), (&to_ms, Type::INT8)],
        )?,
    };
    let mut found = std::collections::HashSet::new();
    let mut run = Vec::new();
    for r in &rows {
        if wanted
            .as_ref()
            .is_some_and(|w| !any_within(w, r.get(0), r.get(1)))
        {
            continue;
        }
        let mut series = head_block::BlockSeries::new(r.get(2)).map_err(corrupt)?;
        while let Some((id, samples)) = series.next_series().map_err(corrupt)? {
            if found.contains(&id)
                || wanted
                    .as_ref()
                    .is_some_and(|w| w.binary_search(&id).is_err())
            {
                continue;
            }
            run.clear();
            samples
                .decode_range(from_ms, to_ms, &mut run)
                .map_err(corrupt)?;
            if !run.is_empty() {
                found.insert(id);
            }
        }
    }
    Ok(found)
}

/// A batch's head blocks, encoded and ready to insert: one a bucket of series.
#[derive(Default)]
pub(super) struct HeadBlocks {
    buckets: Vec<i64>,
    firsts: Vec<i64>,
    lasts: Vec<i64>,
    mins: Vec<i64>,
    maxs: Vec<i64>,
    counts: Vec<i32>,
    data: Vec<Vec<u8>>,
    /// Samples in all.
    pub samples: u64,
}

impl HeadBlocks {
    /// Encodes `rows` (series, time, value), sorted as [`head_block::sort_batch`] leaves
    /// them, a block a bucket.
    pub fn encode(rows: &[(i64, i64, f64)]) -> HeadBlocks {
        let mut blocks = HeadBlocks {
            samples: rows.len() as u64,
            ..HeadBlocks::default()
        };
        for block in rows.chunk_by(|a, b| head_block::bucket(a.0) == head_block::bucket(b.0)) {
            let (min, max) = head_block::time_span(block);
            blocks.buckets.push(head_block::bucket(block[0].0));
            blocks.firsts.push(block[0].0);
            blocks.lasts.push(block[block.len() - 1].0);
            blocks.mins.push(min);
            blocks.maxs.push(max);
            blocks
                .counts
                .push(i32::try_from(block.len()).unwrap_or(i32::MAX));
            blocks.data.push(head_block::encode(block));
        }
        blocks
    }

    /// Inserts the blocks; returns the samples they hold.
    pub fn insert(&self, tx: &mut PreparedTx<'_, '_>) -> Result<u64, StoreError> {
        if self.buckets.is_empty() {
            return Ok(0);
        }
        // The blocks' ids follow the order of the arrays: bucket order, within one batch.
        tx.execute(
            "INSERT INTO head_blocks (bucket, first_series, last_series, min_ts, max_ts, samples, data)
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
                                  $6::int4[], $7::bytea[])",
            &[
                &self.buckets,
                &self.firsts,
                &self.lasts,
                &self.mins,
                &self.maxs,
                &self.counts,
                &self.data,
            ],
        )?;
        Ok(self.samples)
    }
}

/// Removes the head blocks wholly older than `cutoff_ms`, as retention does with chunks: a
/// block that straddles the cutoff goes when it is all old (blocks are never rewritten, so
/// that readers may keep them). Returns the samples removed.
pub(super) fn prune_head(
    tx: &mut postgres::Transaction<'_>,
    cutoff_ms: i64,
) -> Result<i64, StoreError> {
    Ok(tx
        .query_one(
            "WITH gone AS (DELETE FROM head_blocks WHERE max_ts < $1 RETURNING samples)
             SELECT coalesce(sum(samples), 0)::int8 FROM gone",
            &[&cutoff_ms],
        )?
        .get(0))
}

/// Moves the rows of the per-sample head of schema 3 into blocks and drops its table (part
/// of migration 4, in its transaction).
pub(super) fn move_head_rows_into_blocks(
    tx: &mut postgres::Transaction<'_>,
) -> Result<(), StoreError> {
    let mut rows: Vec<(i64, i64, f64)> = tx
        .query(
            "SELECT series_id, ts_ms, value, bits FROM samples_head",
            &[],
        )?
        .iter()
        .map(|r| {
            let value = match r.get::<_, Option<i64>>(3) {
                Some(bits) => f64::from_bits(bits as u64),
                None => r.get(2),
            };
            (r.get(0), r.get(1), value)
        })
        .collect();
    head_block::sort_batch(&mut rows);
    let mut statements = super::Statements::new();
    let mut tx = PreparedTx::new(tx, &mut statements);
    for part in rows.chunk_by(|a, b| head_block::bucket(a.0) == head_block::bucket(b.0)) {
        HeadBlocks::encode(part).insert(&mut tx)?;
    }
    tx.batch_execute("DROP TABLE samples_head")?;
    Ok(())
}

/// Merges head samples (sorted by series and time, whole series) into their series' chunks in
/// a fixed number of statements however many series there are: as the SQLite back end
/// does per series, the chunks each series' new samples overlap, and the chunk just before
/// them when it has room, are decoded, merged (new values win) and written again. Returns
/// the change in distinct samples beyond the rows moved (zero or negative).
fn merge_into_chunks(
    tx: &mut postgres::Transaction<'_>,
    rows: &[(i64, i64, f64)],
    spans: &super::spans::ChunkSpans,
) -> Result<i64, StoreError> {
    let runs: Vec<&[(i64, i64, f64)]> = rows.chunk_by(|a, b| a.0 == b.0).collect();
    let all_ids: Vec<i64> = runs.iter().map(|r| r[0].0).collect();
    let los: Vec<i64> = runs.iter().map(|r| r[0].1).collect();
    // Only series that have had a chunk are looked up: each lookup is an index descent per
    // day partition, and a fresh fleet's series have none (434 ms a step at 100,000
    // checks in the server log, nearly all of it finding nothing).
    let known = spans.may_have_chunks(tx, &all_ids)?;
    let (mut ids, mut lookup_los, mut his) = (Vec::new(), Vec::new(), Vec::new());
    for ((run, lo), known) in runs.iter().zip(&los).zip(&known) {
        if *known {
            ids.push(run[0].0);
            lookup_los.push(*lo);
            his.push(run[run.len() - 1].1);
        }
    }
    // Each series' chunk just before its new samples, and those they overlap.
    let old = if ids.is_empty() {
        Vec::new()
    } else {
        tx.query(
            "SELECT b.id, u.s, b.samples, b.data, b.max_ts
           FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS u(s, lo, hi)
           CROSS JOIN LATERAL (SELECT id, samples, data, max_ts FROM chunks
                 WHERE series_id = u.s AND max_ts < u.lo ORDER BY max_ts DESC LIMIT 1) b
         UNION ALL
         SELECT c.id, u.s, c.samples, c.data, c.max_ts
           FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS u(s, lo, hi)
           JOIN chunks c ON c.series_id = u.s AND c.max_ts >= u.lo AND c.min_ts <= u.hi
         ORDER BY 2, 5",
            &[&ids, &lookup_los, &his],
        )?
    };
    let mut by_series: HashMap<i64, Vec<&postgres::Row>> = HashMap::new();
    for r in &old {
        by_series.entry(r.get(1)).or_default().push(r);
    }
    let mut gone: Vec<i64> = Vec::new();
    let (mut c_series, mut c_min, mut c_max, mut c_n, mut c_data) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut delta = 0i64;
    let mut new = Vec::new();
    for (run, lo) in runs.iter().zip(&los) {
        let series = run[0].0;
        new.clear();
        new.extend(run.iter().map(|&(_, ts, v)| (ts, v)));
        let mut existing = Vec::new();
        let mut old_count = 0i64;
        for r in by_series.get(&series).into_iter().flatten() {
            let samples = i64::from(r.get::<_, i32>(2));
            // The chunk just before the new samples joins only when it has room.
            if r.get::<_, i64>(4) < *lo
                && usize::try_from(samples).unwrap_or(usize::MAX) >= CHUNK_MAX_SAMPLES
            {
                continue;
            }
            chunk::decode(r.get(3), &mut existing).map_err(corrupt)?;
            old_count += samples;
            gone.push(r.get(0));
        }
        let merged = if existing.is_empty() {
            new.clone()
        } else {
            chunk::merge_sorted(&existing, &new)
        };
        for piece in merged.chunks(CHUNK_MAX_SAMPLES) {
            let (Some(min), Some(max)) = (piece.first(), piece.last()) else {
                continue;
            };
            c_series.push(series);
            c_min.push(min.0);
            c_max.push(max.0);
            c_n.push(i32::try_from(piece.len()).unwrap_or(i32::MAX));
            c_data.push(chunk::encode(piece));
        }
        delta += merged.len() as i64 - old_count - new.len() as i64;
    }
    if !gone.is_empty() {
        tx.execute("DELETE FROM chunks WHERE id = ANY($1)", &[&gone])?;
    }
    tx.execute(
        "INSERT INTO chunks (series_id, min_ts, max_ts, samples, data)
         SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int4[], $5::bytea[])",
        &[&c_series, &c_min, &c_max, &c_n, &c_data],
    )?;
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::generic_plan;

    /// The plan setting a read runs under is the connection's usual one again after it,
    /// whether the read succeeded or failed, in a transaction or not.
    #[test]
    fn a_read_under_the_generic_plan_leaves_the_connection_as_it_was() {
        let Some(pg) = probewatch_testpg::TestPostgres::start() else {
            return;
        };
        let mut client =
            postgres::Client::connect(&pg.url("postgres"), postgres::NoTls).expect("connect");
        let mode = |c: &mut postgres::Client| -> String {
            c.query_one("SHOW plan_cache_mode", &[])
                .expect("show")
                .get(0)
        };
        let during = generic_plan(&mut client, |c| {
            c.query_one("SHOW plan_cache_mode", &[])
                .map(|r| r.get::<_, String>(0))
        })
        .expect("read");
        assert_eq!(during, "force_generic_plan");
        assert_eq!(mode(&mut client), "auto");
        assert!(generic_plan(&mut client, |c| c.query("SELECT 1/0", &[])).is_err());
        assert_eq!(mode(&mut client), "auto");
        {
            let mut tx = client.transaction().expect("begin");
            assert!(generic_plan(&mut tx, |c| c.query("SELECT 1/0", &[])).is_err());
            tx.rollback().expect("rollback");
        }
        assert_eq!(mode(&mut client), "auto");
    }
}
