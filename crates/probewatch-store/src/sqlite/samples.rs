//! Sample storage: the two head tables, compaction into chunks, and reading a series back.
//!
//! Ingest appends to the *active* head (`samples_head_N`, N from `head_state`), a table that
//! compaction keeps small, so a batch dirties a few hundred cached pages however many series
//! there are. When the active head holds enough samples and the other head is empty, the heads
//! swap; the now *frozen* head is moved into `chunks` a few thousand samples per transaction
//! (whole series at a time), so the writer lock is never held for long. Migration 0003
//! describes the tables.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::chunk::{self, CHUNK_MAX_SAMPLES, ChunkError};
use crate::model::CompactStep;

/// A sample value as the head tables hold it. SQLite turns a bound NaN into NULL, which loses
/// the payload of Prometheus's stale marker; so a NaN other than the plain one is stored as
/// its 8 bytes (a BLOB keeps them: REAL affinity converts only integers). NULL reads as NaN.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeadValue(pub f64);

impl rusqlite::ToSql for HeadValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value};
        let v = self.0;
        Ok(if v.is_nan() && v.to_bits() != f64::NAN.to_bits() {
            ToSqlOutput::Owned(Value::Blob(v.to_bits().to_le_bytes().to_vec()))
        } else {
            ToSqlOutput::Owned(Value::Real(v))
        })
    }
}

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

/// Upsert into head 0 or 1: insert, or on a repeated (series, timestamp) replace the value.
pub(super) const HEAD_INSERT: [&str; 2] = [
    "INSERT OR IGNORE INTO samples_head_0 (series_id, ts_ms, value) VALUES (?1, ?2, ?3)",
    "INSERT OR IGNORE INTO samples_head_1 (series_id, ts_ms, value) VALUES (?1, ?2, ?3)",
];
pub(super) const HEAD_UPDATE: [&str; 2] = [
    "UPDATE samples_head_0 SET value = ?3 WHERE series_id = ?1 AND ts_ms = ?2",
    "UPDATE samples_head_1 SET value = ?3 WHERE series_id = ?1 AND ts_ms = ?2",
];
/// `INSERT OR IGNORE` of `rows` rows at once into head 0 or 1.
pub(super) fn head_insert_many(head: usize, rows: usize) -> String {
    let mut sql =
        format!("INSERT OR IGNORE INTO samples_head_{head} (series_id, ts_ms, value) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?)");
    }
    sql
}

const HEAD_OLDEST: [&str; 2] = [
    "SELECT series_id, ts_ms, value FROM samples_head_0 ORDER BY series_id, ts_ms LIMIT ?1",
    "SELECT series_id, ts_ms, value FROM samples_head_1 ORDER BY series_id, ts_ms LIMIT ?1",
];
const HEAD_REST_OF_SERIES: [&str; 2] = [
    "SELECT series_id, ts_ms, value FROM samples_head_0 WHERE series_id = ?1 AND ts_ms > ?2
     ORDER BY ts_ms",
    "SELECT series_id, ts_ms, value FROM samples_head_1 WHERE series_id = ?1 AND ts_ms > ?2
     ORDER BY ts_ms",
];
const HEAD_DELETE_UPTO: [&str; 2] = [
    "DELETE FROM samples_head_0 WHERE series_id <= ?1",
    "DELETE FROM samples_head_1 WHERE series_id <= ?1",
];
const HEAD_RANGE: [&str; 2] = [
    "SELECT ts_ms, value FROM samples_head_0 WHERE series_id = ?1 AND ts_ms BETWEEN ?2 AND ?3
     ORDER BY ts_ms",
    "SELECT ts_ms, value FROM samples_head_1 WHERE series_id = ?1 AND ts_ms BETWEEN ?2 AND ?3
     ORDER BY ts_ms",
];
pub(super) const HEAD_PRUNE: [&str; 2] = [
    "DELETE FROM samples_head_0 WHERE series_id = ?1 AND ts_ms < ?2",
    "DELETE FROM samples_head_1 WHERE series_id = ?1 AND ts_ms < ?2",
];
pub(super) const HEAD_COUNT: [&str; 2] = [
    "SELECT count(*) FROM samples_head_0",
    "SELECT count(*) FROM samples_head_1",
];

/// Which head (0 or 1) ingest writes to.
pub(super) fn active_head(conn: &Connection) -> rusqlite::Result<usize> {
    let active: i64 = conn
        .prepare_cached("SELECT active FROM head_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    Ok(usize::from(active == 1))
}

/// One compaction step in its own transaction: moves at least `max_samples` samples (or all
/// that are left), always whole series, from the frozen head into chunks; or, when the
/// frozen head is empty and the active one holds `head_max` samples or more, swaps the heads.
pub(super) fn compact_step(
    conn: &mut Connection,
    active_rows: u64,
    head_max: u64,
    max_samples: usize,
) -> rusqlite::Result<CompactStep> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let frozen = 1 - active_head(&tx)?;
    let limit = i64::try_from(max_samples.max(1)).unwrap_or(i64::MAX);
    let mut rows: Vec<(i64, i64, f64)> = tx
        .prepare_cached(HEAD_OLDEST[frozen])?
        .query_map(params![limit], head_row)?
        .collect::<rusqlite::Result<_>>()?;
    let Some(&(last_series, last_ts, _)) = rows.last() else {
        if active_rows < head_max {
            return Ok(CompactStep::default());
        }
        tx.prepare_cached("UPDATE head_state SET active = ?1 WHERE id = 1")?
            .execute(params![frozen as i64])?;
        tx.commit()?;
        return Ok(CompactStep {
            swapped: true,
            ..CompactStep::default()
        });
    };
    if rows.len() as i64 == limit {
        let rest = tx
            .prepare_cached(HEAD_REST_OF_SERIES[frozen])?
            .query_map(params![last_series, last_ts], head_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.extend(rest);
    }
    let mut samples_delta = 0i64;
    let mut new = Vec::new();
    for series in rows.chunk_by(|a, b| a.0 == b.0) {
        new.clear();
        new.extend(series.iter().map(|&(_, ts, v)| (ts, v)));
        samples_delta += merge_into_chunks(&tx, series[0].0, &new)?;
    }
    tx.prepare_cached(HEAD_DELETE_UPTO[frozen])?
        .execute(params![last_series])?;
    tx.prepare_cached("UPDATE stats SET samples = samples + ?1 WHERE id = 1")?
        .execute(params![samples_delta])?;
    tx.commit()?;
    Ok(CompactStep {
        moved: rows.len(),
        swapped: false,
        samples_delta,
    })
}

fn head_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, f64)> {
    Ok((r.get(0)?, r.get(1)?, r.get::<_, HeadValue>(2)?.0))
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

fn corrupt(err: ChunkError) -> rusqlite::Error {
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
        let data = row.get_ref(0)?.as_blob()?;
        let before = out.len();
        chunk::decode(data, out).map_err(corrupt)?;
        // Only the first and last chunk can reach outside the range.
        if out[before..].first().is_some_and(|s| s.0 < from_ms)
            || out.last().is_some_and(|s| s.0 > to_ms)
        {
            let kept: Vec<(i64, f64)> = out
                .drain(before..)
                .filter(|s| (from_ms..=to_ms).contains(&s.0))
                .collect();
            out.extend(kept);
        }
    }
    let from_chunks = out.len();
    let active = active_head(conn)?;
    for head in [1 - active, active] {
        let mut stmt = conn.prepare_cached(HEAD_RANGE[head])?;
        let rows = stmt.query_map(params![series_id, from_ms, to_ms], |r| {
            Ok((r.get(0)?, r.get::<_, HeadValue>(1)?.0))
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    if out.len() > from_chunks {
        chunk::keep_last_written(out, start);
    }
    Ok(())
}

const HEAD_ANY: [&str; 2] = [
    "SELECT EXISTS (SELECT 1 FROM samples_head_0 WHERE series_id = ?1 AND ts_ms BETWEEN ?2 AND ?3)",
    "SELECT EXISTS (SELECT 1 FROM samples_head_1 WHERE series_id = ?1 AND ts_ms BETWEEN ?2 AND ?3)",
];

/// Whether the series has a sample in `[from_ms, to_ms]`, without reading them all: a
/// chunk's first and last timestamps are samples, so only a chunk that spans the whole range
/// is decoded.
pub(super) fn has_samples(
    conn: &Connection,
    series_id: i64,
    from_ms: i64,
    to_ms: i64,
) -> rusqlite::Result<bool> {
    for head in HEAD_ANY {
        if conn
            .prepare_cached(head)?
            .query_row(params![series_id, from_ms, to_ms], |r| r.get(0))?
        {
            return Ok(true);
        }
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

const HEAD_MANY: [&str; 2] = [
    "SELECT series_id, ts_ms, value FROM samples_head_0 WHERE series_id IN rarray(?1)
     AND ts_ms BETWEEN ?2 AND ?3 ORDER BY series_id, ts_ms",
    "SELECT series_id, ts_ms, value FROM samples_head_1 WHERE series_id IN rarray(?1)
     AND ts_ms BETWEEN ?2 AND ?3 ORDER BY series_id, ts_ms",
];

/// One series' samples, oldest first.
type Points = Vec<(i64, f64)>;

/// [`read_series`] for many series with three statements in all (chunks, frozen head,
/// active head) instead of three per series: a rule evaluation cycle reads thousands of short
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
        chunk::decode(row.get_ref(1)?.as_blob()?, series).map_err(corrupt)?;
        if series[before..].first().is_some_and(|s| s.0 < from_ms)
            || series.last().is_some_and(|s| s.0 > to_ms)
        {
            let kept: Vec<(i64, f64)> = series
                .drain(before..)
                .filter(|s| (from_ms..=to_ms).contains(&s.0))
                .collect();
            series.extend(kept);
        }
        held += series.len() - before;
        if held > max_samples {
            return Ok(None);
        }
        from_chunks[i] = series.len();
    }
    drop(rows);
    let active = active_head(conn)?;
    for head in [1 - active, active] {
        let mut stmt = conn.prepare_cached(HEAD_MANY[head])?;
        let mut rows = stmt.query(params![list.clone(), from_ms, to_ms])?;
        while let Some(row) = rows.next()? {
            if let Some(&i) = position.get(&row.get::<_, i64>(0)?) {
                held += 1;
                if held > max_samples {
                    return Ok(None);
                }
                out[i].push((row.get(1)?, row.get::<_, HeadValue>(2)?.0));
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
