//! Each series' time span in memory, so "which of these 700,000 series have samples between
//! `start` and `end`" (`/api/v1/series`, labels and label values with a time range) is a
//! lookup per series instead of a pass over the heads and the chunk index.
//!
//! A span is conservative: every sample of the series lies inside it, but a series may have
//! no sample in a range its span overlaps (a gap, or samples since removed by retention).
//! Prometheus answers the same questions from whole blocks, so it is as coarse or coarser.
//!
//! The table is loaded on first use (under the writer lock, so no commit is missed), then the
//! writer widens spans after each commit; retention forgets it, to be loaded again. Series that only have chunks get an unknown start
//! (`i64::MIN`): the load reads only the chunk index `(series_id, max_ts)`, never the chunk
//! rows, so it stays cheap on a large database.

use std::sync::RwLock;

use rusqlite::Connection;

use super::samples::corrupt;
use crate::head_block::BlockSeries;

/// `(first, last)` sample time by series id; `EMPTY` for a series with no samples known.
#[derive(Debug, Default)]
pub(super) struct SpanTable(RwLock<Option<Vec<(i64, i64)>>>);

const EMPTY: (i64, i64) = (i64::MAX, i64::MIN);

impl SpanTable {
    pub fn is_loaded(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Loads the table from the database; `conn` must be the writer's connection, held so
    /// that nothing commits meanwhile.
    pub fn load(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut spans: Vec<(i64, i64)> = Vec::new();
        let mut stmt = conn.prepare(
            "SELECT series_id, max(max_ts) FROM chunks INDEXED BY chunks_series
             GROUP BY series_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            widen(&mut spans, row.get(0)?, i64::MIN, row.get(1)?);
        }
        drop(rows);
        let mut stmt = conn.prepare("SELECT data FROM head_blocks")?;
        let mut blocks = stmt.query([])?;
        let mut run = Vec::new();
        while let Some(block) = blocks.next()? {
            let mut series = BlockSeries::new(block.get_ref(0)?.as_blob()?).map_err(corrupt)?;
            while let Some((id, samples)) = series.next_series().map_err(corrupt)? {
                run.clear();
                samples.decode(&mut run).map_err(corrupt)?;
                if let (Some(first), Some(last)) = (run.first(), run.last()) {
                    widen(&mut spans, id, first.0, last.0);
                }
            }
        }
        drop(blocks);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(spans);
        Ok(())
    }

    /// Forgets the table (retention removed samples, so spans may be too wide); the next
    /// question loads it again.
    pub fn forget(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Widens spans by samples just committed, as `(series id, time, value)`; nothing before
    /// the table is loaded (the load will read them).
    pub fn note(&self, samples: &[(i64, i64, f64)]) {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        let Some(spans) = guard.as_mut() else {
            return;
        };
        for &(id, ts, _) in samples {
            widen(spans, id, ts, ts);
        }
    }

    /// For each id, whether its span overlaps `[from_ms, to_ms]`; `None` if not loaded.
    pub fn overlapping(&self, ids: &[i64], from_ms: i64, to_ms: i64) -> Option<Vec<bool>> {
        let guard = self.0.read().unwrap_or_else(|e| e.into_inner());
        let spans = guard.as_ref()?;
        Some(
            ids.iter()
                .map(|&id| {
                    usize::try_from(id)
                        .ok()
                        .and_then(|i| spans.get(i))
                        // An empty span (lo > hi) overlaps nothing, not even all time.
                        .is_some_and(|&(lo, hi)| lo <= hi && lo <= to_ms && hi >= from_ms)
                })
                .collect(),
        )
    }
}

/// Widens series `id`'s span to cover `[lo, hi]`, growing the table as ids grow.
fn widen(spans: &mut Vec<(i64, i64)>, id: i64, lo: i64, hi: i64) {
    let Ok(i) = usize::try_from(id) else {
        return;
    };
    if i >= spans.len() {
        spans.resize(i + 1, EMPTY);
    }
    let span = &mut spans[i];
    *span = (span.0.min(lo), span.1.max(hi));
}
