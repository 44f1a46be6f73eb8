//! Sample storage: the head of blocks, compaction into chunks, and reading series back.
//!
//! Each ingest batch appends one `head_blocks` row per bucket of series it touches
//! ([`head_block`]'s encoding), so a sample costs no B-tree entry of its own. When the live
//! head holds enough samples and nothing is frozen, the head is frozen (`head_frozen.upto`,
//! the last frozen block id); compaction then moves the frozen blocks into `chunks` a few
//! buckets per transaction, so the writer lock is never held for long. A block written later
//! wins over an earlier one and over chunks for the same (series, time). Migrations 0003 and
//! 0012 describe the tables.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::chunk::{self, CHUNK_MAX_SAMPLES, ChunkError};
use crate::head_block;
use crate::model::CompactStep;

/// A sample value as schema 11's head tables held it: NULL for a NaN, a BLOB of 8 bytes for a
/// NaN with a payload (Prometheus's stale marker), otherwise a REAL.
#[derive(Debug, Clone, Copy)]
struct HeadValue(f64);

impl rusqlite::types::FromSql for HeadValue {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::{FromSqlError, ValueRef};
        match value {
            ValueRef::Real(v) => Ok(HeadValue(v)),
            ValueRef::Integer(i) => Ok(HeadValue(i as f64)),
            ValueRef::Null => Ok(HeadValue(f64::NAN)),
            ValueRef::Blob(b) => <[u8; 8]>::try_from(b)
                .map(|bytes| HeadValue(f64::from_bits(u64::from_le_bytes(bytes))))
                .map_err(|_| FromSqlError::InvalidBlobSize {
                    expected_size: 8,
                    blob_size: b.len(),
                }),
            ValueRef::Text(_) => Err(FromSqlError::InvalidType),
        }
    }
}

/// The last block id that is frozen: blocks up to it are compaction's, later ones ingest's.
pub(super) fn frozen_upto(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT upto FROM head_frozen WHERE id = 1")?
        .query_row([], |r| r.get(0))
}

/// Live blocks of one bucket past which they are consolidated into one. Every batch writes a
/// block per bucket it touches, and a read goes through every block of its buckets that it
/// cannot rule out by time, so their number, not only their samples, is bounded: at most
/// this many live and this many frozen per bucket. Consolidating costs a rewrite of the
/// bucket's live samples; freezing instead (as before) meant moving the head into chunks
/// every 64 batches, a chunk row rewritten per sample or two when series are many.
pub(super) const HEAD_MAX_BUCKET_BLOCKS: u32 = 64;

/// What the live (not frozen) head holds, kept by the writer in memory so that the check
/// after every batch needs no query: its samples, and its blocks per bucket.
#[derive(Debug, Clone)]
pub(super) struct LiveHead {
    pub samples: u64,
    blocks: Vec<u32>,
    /// Samples per bucket (repeats dropped by a consolidation still counted: an upper bound).
    bucket_samples: Vec<u64>,
}

/// The share of the head's samples one bucket may hold before the head is frozen anyway.
/// A consolidation or a merge decodes a bucket's samples in memory (24 bytes each); on a
/// server with a few hundred series, all in one bucket, a 4M-sample head would have meant
/// ~100 MiB at once.
const BUCKET_SHARE: u64 = 16;

impl Default for LiveHead {
    fn default() -> Self {
        LiveHead {
            samples: 0,
            blocks: vec![0; head_block::BUCKETS as usize],
            bucket_samples: vec![0; head_block::BUCKETS as usize],
        }
    }
}

impl LiveHead {
    /// Counts what the database's live head holds (at open).
    pub fn load(conn: &Connection) -> rusqlite::Result<LiveHead> {
        let mut live = LiveHead::default();
        let mut stmt = conn.prepare(
            "SELECT bucket, count(*), coalesce(sum(samples), 0) FROM head_blocks
             WHERE id > (SELECT upto FROM head_frozen WHERE id = 1) GROUP BY bucket",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            live.note(row.get(0)?, row.get(1)?, row.get(2)?);
        }
        Ok(live)
    }

    fn note(&mut self, bucket: i64, blocks: i64, samples: i64) {
        let slot = usize::try_from(bucket.rem_euclid(head_block::BUCKETS)).unwrap_or(0);
        self.blocks[slot] = self.blocks[slot].saturating_add(u32::try_from(blocks).unwrap_or(0));
        let samples = u64::try_from(samples).unwrap_or(0);
        self.bucket_samples[slot] = self.bucket_samples[slot].saturating_add(samples);
        self.samples = self.samples.saturating_add(samples);
    }

    /// Adds what a committed transaction wrote.
    pub fn add(&mut self, other: &LiveHead) {
        self.samples = self.samples.saturating_add(other.samples);
        for (mine, theirs) in self.blocks.iter_mut().zip(&other.blocks) {
            *mine = mine.saturating_add(*theirs);
        }
        for (mine, theirs) in self.bucket_samples.iter_mut().zip(&other.bucket_samples) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// True when the head is due to be frozen: it holds `head_max` samples, or one bucket
    /// holds its [`BUCKET_SHARE`] of them.
    fn full(&self, head_max: u64) -> bool {
        self.samples >= head_max
            || self
                .bucket_samples
                .iter()
                .any(|&n| n >= (head_max / BUCKET_SHARE).max(1))
    }

    /// Notes that the live blocks of `buckets` were consolidated into so many pieces each,
    /// `delta` samples (repeats) dropping out.
    fn consolidated(&mut self, buckets: &[(i64, usize)], delta: i64) {
        for (bucket, pieces) in buckets {
            let slot = usize::try_from(bucket.rem_euclid(head_block::BUCKETS)).unwrap_or(0);
            self.blocks[slot] = u32::try_from(*pieces).unwrap_or(u32::MAX);
        }
        self.samples = self
            .samples
            .saturating_sub(u64::try_from(-delta).unwrap_or(0));
    }

    /// Buckets holding [`HEAD_MAX_BUCKET_BLOCKS`] live blocks or more.
    fn crowded(&self) -> Vec<i64> {
        (0..head_block::BUCKETS)
            .zip(&self.blocks)
            .filter(|(_, n)| **n >= HEAD_MAX_BUCKET_BLOCKS)
            .map(|(bucket, _)| bucket)
            .collect()
    }
}

/// Samples a consolidated piece aims at: a read of one series goes through one piece of
/// its bucket (a few KiB) rather than the whole bucket's share of the head.
const PIECE_SAMPLES: usize = 4_096;

/// Most pieces a bucket's live blocks are consolidated into; the pieces count against
/// [`HEAD_MAX_BUCKET_BLOCKS`], so this many fewer batches fit before the next consolidation.
const MAX_PIECES: usize = 16;

/// Replaces the live blocks of `bucket` (ids above `upto`) by a few blocks ("pieces", each
/// a range of series) holding what they hold, a later block's value winning for a repeated
/// (series, time). The pieces take the ids of the newest blocks they replace, so they stay
/// after every block they replace and before any written later; pieces hold different
/// series, so their order among themselves does not matter (and only blocks of the same
/// bucket can share a series). Returns the change in samples (repeats dropped: zero or
/// negative) and the number of pieces.
fn consolidate(tx: &Connection, bucket: i64, upto: i64) -> rusqlite::Result<(i64, usize)> {
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, data FROM head_blocks WHERE bucket = ?1 AND id > ?2 ORDER BY id",
        )?;
        let mut blocks = stmt.query(params![bucket, upto])?;
        while let Some(block) = blocks.next()? {
            ids.push(block.get::<_, i64>(0)?);
            head_block::decode(block.get_ref(1)?.as_blob()?, &mut rows).map_err(corrupt)?;
        }
    }
    if ids.is_empty() {
        return Ok((0, 0));
    }
    let written = rows.len() as i64;
    head_block::sort_rows(&mut rows);
    tx.prepare_cached("DELETE FROM head_blocks WHERE bucket = ?1 AND id > ?2")?
        .execute(params![bucket, upto])?;
    let most = MAX_PIECES.min(ids.len());
    let target = PIECE_SAMPLES.max(rows.len().div_ceil(most));
    let mut pieces: Vec<&[(i64, i64, f64)]> = Vec::new();
    let mut rest = &rows[..];
    while !rest.is_empty() {
        // Cut at the first series boundary at or after `target` samples.
        let mut cut = target.min(rest.len());
        while cut < rest.len() && rest[cut].0 == rest[cut - 1].0 {
            cut += 1;
        }
        if pieces.len() + 1 == most {
            cut = rest.len();
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    for (piece, id) in pieces.iter().zip(&ids[ids.len() - pieces.len()..]) {
        insert_block(tx, Some(*id), bucket, piece)?;
    }
    Ok((rows.len() as i64 - written, pieces.len()))
}

/// Inserts one head block of `rows` (sorted by series, all of `bucket`), with the given id
/// or, with `None`, the next rowid.
fn insert_block(
    conn: &Connection,
    id: Option<i64>,
    bucket: i64,
    rows: &[(i64, i64, f64)],
) -> rusqlite::Result<()> {
    let (min, max) = head_block::time_span(rows);
    conn.prepare_cached(
        "INSERT INTO head_blocks (id, bucket, first_series, last_series, min_ts, max_ts,
         samples, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        bucket,
        rows[0].0,
        rows[rows.len() - 1].0,
        min,
        max,
        rows.len() as i64,
        head_block::encode(rows)
    ])?;
    Ok(())
}

/// Writes one batch's samples into the head: `rows` sorted by [`head_block::sort_batch`],
/// one block per bucket, and counts them into `live`.
pub(super) fn write_blocks(
    conn: &Connection,
    rows: &[(i64, i64, f64)],
    live: &mut LiveHead,
) -> rusqlite::Result<()> {
    for block in rows.chunk_by(|a, b| head_block::bucket(a.0) == head_block::bucket(b.0)) {
        let bucket = head_block::bucket(block[0].0);
        insert_block(conn, None, bucket, block)?;
        live.note(bucket, 1, block.len() as i64);
    }
    Ok(())
}

/// One compaction step in its own transaction. First, the live blocks of any bucket holding
/// [`HEAD_MAX_BUCKET_BLOCKS`] are consolidated into one. Then it moves the frozen blocks of
/// whole buckets (at least `max_samples` samples, or all that are left) into chunks; or,
/// when nothing is frozen and the live head holds `head_max` samples, freezes it. `live` is
/// kept up to date once the transaction commits.
pub(super) fn compact_step(
    conn: &mut Connection,
    live: &mut LiveHead,
    head_max: u64,
    max_samples: usize,
) -> rusqlite::Result<CompactStep> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let upto = frozen_upto(&tx)?;
    let mut crowded = Vec::new();
    let mut consolidated = 0i64;
    for bucket in live.crowded() {
        let (delta, pieces) = consolidate(&tx, bucket, upto)?;
        consolidated += delta;
        crowded.push((bucket, pieces));
    }
    // A lookup at the start of the ids, not a scan: this runs after every batch.
    let first: Option<i64> = tx
        .prepare_cached("SELECT min(id) FROM head_blocks")?
        .query_row([], |r| r.get(0))?;
    if first.is_none_or(|first| first > upto) {
        // Nothing is frozen.
        let freeze = live.full(head_max);
        if freeze {
            tx.prepare_cached(
                "UPDATE head_frozen SET upto = (SELECT coalesce(max(id), upto) FROM head_blocks)
                 WHERE id = 1",
            )?
            .execute([])?;
        }
        if consolidated != 0 {
            tx.prepare_cached("UPDATE stats SET samples = samples + ?1 WHERE id = 1")?
                .execute(params![consolidated])?;
        }
        if freeze || !crowded.is_empty() {
            tx.commit()?;
        }
        live.consolidated(&crowded, consolidated);
        if freeze {
            *live = LiveHead::default();
        }
        return Ok(CompactStep {
            swapped: freeze,
            samples_delta: consolidated,
            ..CompactStep::default()
        });
    }
    let buckets: Vec<(i64, i64)> = tx
        .prepare_cached(
            "SELECT bucket, sum(samples) FROM head_blocks WHERE id <= ?1
             GROUP BY bucket ORDER BY bucket",
        )?
        .query_map(params![upto], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut taken = 0usize;
    let mut samples_delta = consolidated;
    let mut rows = Vec::new();
    let mut new = Vec::new();
    for (bucket, samples) in buckets {
        if taken >= max_samples.max(1) {
            break;
        }
        rows.clear();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT data FROM head_blocks WHERE bucket = ?1 AND id <= ?2 ORDER BY id",
            )?;
            let mut blocks = stmt.query(params![bucket, upto])?;
            while let Some(block) = blocks.next()? {
                head_block::decode(block.get_ref(0)?.as_blob()?, &mut rows).map_err(corrupt)?;
            }
        }
        let written = rows.len() as i64;
        head_block::sort_rows(&mut rows);
        // Repeats inside the head were counted when written.
        samples_delta += rows.len() as i64 - written;
        for series in rows.chunk_by(|a, b| a.0 == b.0) {
            new.clear();
            new.extend(series.iter().map(|&(_, ts, v)| (ts, v)));
            samples_delta += merge_into_chunks(&tx, series[0].0, &new)?;
        }
        tx.prepare_cached("DELETE FROM head_blocks WHERE bucket = ?1 AND id <= ?2")?
            .execute(params![bucket, upto])?;
        taken += usize::try_from(samples).unwrap_or(0);
    }
    tx.prepare_cached("UPDATE stats SET samples = samples + ?1 WHERE id = 1")?
        .execute(params![samples_delta])?;
    tx.commit()?;
    live.consolidated(&crowded, consolidated);
    Ok(CompactStep {
        moved: taken,
        swapped: false,
        samples_delta,
    })
}

/// Removes head samples older than `cutoff_ms`: blocks wholly older go, a block that
/// straddles the cutoff is written again without them. Returns how many were removed.
pub(super) fn prune_head(tx: &Connection, cutoff_ms: i64) -> rusqlite::Result<i64> {
    let mut removed = 0i64;
    let straddling: Vec<(i64, i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT id, samples, data FROM head_blocks WHERE min_ts < ?1 AND max_ts >= ?1",
        )?
        .query_map(params![cutoff_ms], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut rows = Vec::new();
    for (id, samples, data) in straddling {
        rows.clear();
        head_block::decode(&data, &mut rows).map_err(corrupt)?;
        rows.retain(|r| r.1 >= cutoff_ms);
        removed += samples - rows.len() as i64;
        let (min, max) = head_block::time_span(&rows);
        tx.prepare_cached(
            "UPDATE head_blocks SET min_ts = ?2, max_ts = ?3, samples = ?4, data = ?5
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            min,
            max,
            rows.len() as i64,
            head_block::encode(&rows)
        ])?;
    }
    let mut stmt =
        tx.prepare_cached("DELETE FROM head_blocks WHERE max_ts < ?1 RETURNING samples")?;
    let mut gone = stmt.query(params![cutoff_ms])?;
    while let Some(row) = gone.next()? {
        removed += row.get::<_, i64>(0)?;
    }
    Ok(removed)
}

/// Moves the head rows of schema 11 (two tables, a row per sample) into blocks: the frozen
/// table's rows first, so that they stay frozen and the active table's rows stay later.
pub(super) fn rows_to_blocks(tx: &Connection) -> rusqlite::Result<()> {
    let active: i64 = tx.query_row("SELECT active FROM head_state WHERE id = 1", [], |r| {
        r.get(0)
    })?;
    let active = usize::from(active == 1);
    for (n, head) in [1 - active, active].into_iter().enumerate() {
        let mut rows: Vec<(i64, i64, f64)> = tx
            .prepare(&format!(
                "SELECT series_id, ts_ms, value FROM samples_head_{head}"
            ))?
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, HeadValue>(2)?.0))
            })?
            .collect::<rusqlite::Result<_>>()?;
        head_block::sort_batch(&mut rows);
        // Schema 12's table, without the series range: migration 13 splits these blocks
        // again under its own buckets.
        let mut insert = tx.prepare(
            "INSERT INTO head_blocks (bucket, min_ts, max_ts, samples, data)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for block in rows.chunk_by(|a, b| head_block::bucket(a.0) == head_block::bucket(b.0)) {
            let (min, max) = head_block::time_span(block);
            insert.execute(params![
                head_block::bucket(block[0].0),
                min,
                max,
                block.len() as i64,
                head_block::encode(block)
            ])?;
        }
        if n == 0 {
            tx.execute(
                "UPDATE head_frozen SET upto = (SELECT coalesce(max(id), 0) FROM head_blocks)",
                [],
            )?;
        }
    }
    tx.execute_batch("DROP TABLE samples_head_0; DROP TABLE samples_head_1; DROP TABLE head_state;")
}

/// Splits the blocks of `head_blocks_by_id` (bucketed by id mod 64, schema 12) into
/// `head_blocks` under today's [`head_block::bucket`], oldest first, so a later block still
/// wins; a block frozen before stays frozen. Drops the old table.
pub(super) fn rebucket_blocks(tx: &Connection) -> rusqlite::Result<()> {
    let upto = frozen_upto(tx)?;
    let mut new_upto = 0i64;
    let mut rows = Vec::new();
    {
        let mut stmt = tx.prepare("SELECT id, data FROM head_blocks_by_id ORDER BY id")?;
        let mut blocks = stmt.query([])?;
        while let Some(block) = blocks.next()? {
            let id: i64 = block.get(0)?;
            rows.clear();
            head_block::decode(block.get_ref(1)?.as_blob()?, &mut rows).map_err(corrupt)?;
            head_block::sort_batch(&mut rows);
            write_blocks(tx, &rows, &mut LiveHead::default())?;
            if id <= upto {
                new_upto =
                    tx.query_row("SELECT coalesce(max(id), 0) FROM head_blocks", [], |r| {
                        r.get(0)
                    })?;
            }
        }
    }
    tx.execute(
        "UPDATE head_frozen SET upto = ?1 WHERE id = 1",
        params![new_upto],
    )?;
    tx.execute_batch("DROP TABLE head_blocks_by_id")
}

/// Merges `new` (sorted, unique timestamps) into the series' chunks: every chunk that
/// overlaps `new` in time, and the chunk just before it when that one has room, are decoded,
/// merged with `new` (whose values win) and rewritten, so chunks stay disjoint and fill up.
/// Returns the change in distinct samples beyond `new.len()` (zero or negative).
fn merge_into_chunks(
    tx: &Transaction<'_>,
    series_id: i64,
    new: &[(i64, f64)],
) -> rusqlite::Result<i64> {
    let (Some(first), Some(last)) = (new.first(), new.last()) else {
        return Ok(0);
    };
    let (lo, hi) = (first.0, last.0);
    let mut old: Vec<(i64, i64, Vec<u8>)> = Vec::new();
    let before: Option<(i64, i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT id, samples, data FROM chunks WHERE series_id = ?1 AND max_ts < ?2
             ORDER BY max_ts DESC LIMIT 1",
        )?
        .query_row(params![series_id, lo], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some(before) = before
        && usize::try_from(before.1).is_ok_and(|n| n < CHUNK_MAX_SAMPLES)
    {
        old.push(before);
    }
    old.extend(
        tx.prepare_cached(
            "SELECT id, samples, data FROM chunks WHERE series_id = ?1 AND max_ts >= ?2
                AND min_ts <= ?3 ORDER BY max_ts",
        )?
        .query_map(params![series_id, lo, hi], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?,
    );
    let mut existing = Vec::new();
    let mut old_count = 0i64;
    for (id, n, data) in &old {
        chunk::decode(data, &mut existing).map_err(corrupt)?;
        old_count += n;
        tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?
            .execute(params![id])?;
    }
    let merged = if existing.is_empty() {
        new.to_vec()
    } else {
        chunk::merge_sorted(&existing, new)
    };
    for piece in merged.chunks(CHUNK_MAX_SAMPLES) {
        let (Some(min), Some(max)) = (piece.first(), piece.last()) else {
            continue;
        };
        tx.prepare_cached(
            "INSERT INTO chunks (series_id, min_ts, max_ts, samples, data)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            series_id,
            min.0,
            max.0,
            piece.len() as i64,
            chunk::encode(piece)
        ])?;
    }
    Ok(merged.len() as i64 - old_count - new.len() as i64)
}

pub(super) fn corrupt(err: ChunkError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(err))
}

/// Appends the samples of one series in `[from_ms, to_ms]` to `out`, oldest first: chunks,
/// then the frozen head, then the active head, a later source winning on equal timestamps.
/// Run it inside a read transaction so the three sources are one snapshot.
pub(super) fn read_series(
    conn: &Connection,
    series_id: i64,
    from_ms: i64,
    to_ms: i64,
    out: &mut Vec<(i64, f64)>,
) -> rusqlite::Result<()> {
    let start = out.len();
    // A series' chunks are disjoint, so max_ts order is time order, and it is the index's
    // order: no sort (which spilled blobs to a temporary file).
    let mut stmt = conn.prepare_cached(
        "SELECT data FROM chunks WHERE series_id = ?1 AND max_ts >= ?2 AND min_ts <= ?3
         ORDER BY max_ts",
    )?;
    let mut rows = stmt.query(params![series_id, from_ms, to_ms])?;
    while let Some(row) = rows.next()? {
        chunk::decode_range(row.get_ref(0)?.as_blob()?, from_ms, to_ms, out).map_err(corrupt)?;
    }
    let from_chunks = out.len();
    head_runs(conn, series_id, from_ms, to_ms, |run| {
        run.decode_range(from_ms, to_ms, out).map_err(corrupt)?;
        Ok(true)
    })?;
    if out.len() > from_chunks {
        chunk::keep_last_written(out, start);
    }
    Ok(())
}

/// Calls `each` with the run of `series_id` in every head block that may hold its samples in
/// `[from_ms, to_ms]`, in write order, until `each` returns false.
fn head_runs(
    conn: &Connection,
    series_id: i64,
    from_ms: i64,
    to_ms: i64,
    mut each: impl FnMut(head_block::Run<'_>) -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT data FROM head_blocks WHERE bucket = ?1 AND max_ts >= ?2 AND min_ts <= ?3
         AND first_series <= ?4 AND last_series >= ?4 ORDER BY id",
    )?;
    let mut blocks = stmt.query(params![
        head_block::bucket(series_id),
        from_ms,
        to_ms,
        series_id
    ])?;
    while let Some(block) = blocks.next()? {
        if let Some(run) = find_run(block.get_ref(0)?.as_blob()?, series_id)?
            && !each(run)?
        {
            break;
        }
    }
    Ok(())
}

/// The run of `series_id` in a block, if the block has one.
fn find_run(data: &[u8], series_id: i64) -> rusqlite::Result<Option<head_block::Run<'_>>> {
    let mut series = head_block::BlockSeries::new(data).map_err(corrupt)?;
    while let Some((id, run)) = series.next_series().map_err(corrupt)? {
        if id == series_id {
            return Ok(Some(run));
        }
        if id > series_id {
            break;
        }
    }
    Ok(None)
}

/// Whether the series has a sample in `[from_ms, to_ms]`, without reading them all: a
/// chunk's first and last timestamps are samples, so only a chunk that spans the whole range
/// is decoded.
pub(super) fn has_samples(
    conn: &Connection,
    series_id: i64,
    from_ms: i64,
    to_ms: i64,
) -> rusqlite::Result<bool> {
    let mut found = Vec::new();
    head_runs(conn, series_id, from_ms, to_ms, |run| {
        run.decode_range(from_ms, to_ms, &mut found)
            .map_err(corrupt)?;
        Ok(found.is_empty())
    })?;
    if !found.is_empty() {
        return Ok(true);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT min_ts, max_ts, data FROM chunks WHERE series_id = ?1 AND max_ts >= ?2
         AND min_ts <= ?3",
    )?;
    let mut rows = stmt.query(params![series_id, from_ms, to_ms])?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        let (min, max): (i64, i64) = (row.get(0)?, row.get(1)?);
        if (from_ms..=to_ms).contains(&min) || (from_ms..=to_ms).contains(&max) {
            return Ok(true);
        }
        decoded.clear();
        chunk::decode(row.get_ref(2)?.as_blob()?, &mut decoded).map_err(corrupt)?;
        if decoded.iter().any(|s| (from_ms..=to_ms).contains(&s.0)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One series' samples, oldest first.
type Points = Vec<(i64, f64)>;

/// [`read_series`] for many series with two statements in all (chunks, head blocks)
/// instead of two per series: a rule evaluation cycle reads thousands of short
/// series, and per-statement overhead was most of its time. `None` once more than
/// `max_samples` would be held (counted as chunks are decoded, so memory stays bounded).
pub(super) fn read_many(
    conn: &Connection,
    ids: &[i64],
    from_ms: i64,
    to_ms: i64,
    max_samples: usize,
) -> rusqlite::Result<Option<Vec<Points>>> {
    let mut held = 0usize;
    let mut out: Vec<Vec<(i64, f64)>> = vec![Vec::new(); ids.len()];
    let position: std::collections::HashMap<i64, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let list = std::rc::Rc::new(
        ids.iter()
            .map(|id| rusqlite::types::Value::Integer(*id))
            .collect::<Vec<_>>(),
    );
    let mut stmt = conn.prepare_cached(
        "SELECT series_id, data FROM chunks WHERE series_id IN rarray(?1) AND max_ts >= ?2
         AND min_ts <= ?3 ORDER BY series_id, max_ts",
    )?;
    let mut rows = stmt.query(params![list.clone(), from_ms, to_ms])?;
    let mut from_chunks = vec![0usize; ids.len()];
    while let Some(row) = rows.next()? {
        let Some(&i) = position.get(&row.get::<_, i64>(0)?) else {
            continue;
        };
        let series = &mut out[i];
        let before = series.len();
        chunk::decode_range(row.get_ref(1)?.as_blob()?, from_ms, to_ms, series).map_err(corrupt)?;
        held += series.len() - before;
        if held > max_samples {
            return Ok(None);
        }
        from_chunks[i] = series.len();
    }
    drop(rows);
    let buckets = std::rc::Rc::new(
        ids.iter()
            .map(|id| head_block::bucket(*id))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(rusqlite::types::Value::Integer)
            .collect::<Vec<_>>(),
    );
    // (id, the slot it is read into), by id: blocks list their series in id order.
    let mut wanted: Vec<(i64, usize)> = position.iter().map(|(&id, &i)| (id, i)).collect();
    wanted.sort_unstable();
    let mut stmt = conn.prepare_cached(
        "SELECT first_series, last_series, data FROM head_blocks WHERE bucket IN rarray(?1)
         AND max_ts >= ?2 AND min_ts <= ?3 ORDER BY id",
    )?;
    let mut blocks = stmt.query(params![buckets, from_ms, to_ms])?;
    while let Some(block) = blocks.next()? {
        // A block none of whose series are wanted is passed over without reading its data
        // (SQLite reads a column's overflow pages only when it is asked for).
        let (first, last): (i64, i64) = (block.get(0)?, block.get(1)?);
        let rest = &wanted[wanted.partition_point(|w| w.0 < first)..];
        if rest.first().is_none_or(|w| w.0 > last) {
            continue;
        }
        let mut series =
            head_block::WantedSeries::new(block.get_ref(2)?.as_blob()?, rest).map_err(corrupt)?;
        while let Some((slots, run)) = series.next_wanted().map_err(corrupt)? {
            for &(_, i) in slots {
                let before = out[i].len();
                run.decode_range(from_ms, to_ms, &mut out[i])
                    .map_err(corrupt)?;
                held += out[i].len() - before;
                if held > max_samples {
                    return Ok(None);
                }
            }
        }
    }
    for (series, chunked) in out.iter_mut().zip(from_chunks) {
        if series.len() > chunked && !series.is_sorted_by(|a, b| a.0 < b.0) {
            series.sort_by_key(|s| s.0);
            series.reverse();
            series.dedup_by_key(|s| s.0);
            series.reverse();
        }
    }
    // An id asked for more than once gets its samples in every slot, as on PostgreSQL
    // (they were read into its last slot only).
    for (i, id) in ids.iter().enumerate() {
        let read_into = position.get(id).copied().unwrap_or(i);
        if read_into != i {
            held += out[read_into].len();
            if held > max_samples {
                return Ok(None);
            }
            out[i] = out[read_into].clone();
        }
    }
    Ok(Some(out))
}
