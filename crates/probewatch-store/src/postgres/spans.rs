//! Each series' chunk span in memory, so "which of these 100,000 series have samples between
//! `start` and `end`" (`/api/v1/series`, labels and label values with a time range) reads
//! only what changed since it was last asked, instead of every chunk row (a pass over a
//! chunk table that compaction rewrites reads its dead rows too).
//!
//! Several servers write the database, so no process sees every commit: the table follows
//! the chunks by id. Only compaction makes chunks, one step at a time under an advisory lock,
//! so ids grow in commit order and `id > last seen` finds every chunk made since; a merged
//! chunk replaces its old one under a new id with a span at least as wide. The head is small
//! and read on each question. A span is conservative (every sample lies inside it; retention
//! may leave it too wide), as SQLite's; the table is loaded again every ten minutes, which
//! forgets what retention removed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::types::Type;

use crate::StoreError;

/// Up to this many series are looked for in the head by key; more, by one pass over it.
const HEAD_BY_ID_MAX: usize = 2_000;

/// How long a loaded table is followed before it is loaded again.
const RELOAD_AFTER: Duration = Duration::from_secs(600);

/// `(first, last)` chunk sample time by series id, and the newest chunk id read.
#[derive(Debug, Default)]
pub(super) struct ChunkSpans(Mutex<Option<Loaded>>);

#[derive(Debug)]
struct Loaded {
    spans: HashMap<i64, (i64, i64)>,
    last_chunk: i64,
    at: Instant,
}

impl ChunkSpans {
    /// Brings the table up to date: loaded again when missing or old, otherwise the chunks
    /// made since it was last asked.
    /// `forget` also loads an old table again, to forget the spans retention removed.
    fn refresh(
        guard: &mut Option<Loaded>,
        tx: &mut postgres::Transaction<'_>,
        forget: bool,
    ) -> Result<(), StoreError> {
        let reload = guard
            .as_ref()
            .is_none_or(|l| forget && l.at.elapsed() > RELOAD_AFTER);
        if reload {
            *guard = None;
            let mut loaded = Loaded {
                spans: HashMap::new(),
                last_chunk: 0,
                at: Instant::now(),
            };
            for r in tx.query(
                "SELECT series_id, min(min_ts), max(max_ts), max(id) FROM chunks
                  GROUP BY series_id",
                &[],
            )? {
                loaded.spans.insert(r.get(0), (r.get(1), r.get(2)));
                loaded.last_chunk = loaded.last_chunk.max(r.get(3));
            }
            *guard = Some(loaded);
        } else if let Some(loaded) = guard.as_mut() {
            for r in tx.query_typed(
                "SELECT id, series_id, min_ts, max_ts FROM chunks WHERE id > $1",
                &[(&loaded.last_chunk, Type::INT8)],
            )? {
                let (id, series, lo, hi): (i64, i64, i64, i64) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                widen(&mut loaded.spans, series, lo, hi);
                loaded.last_chunk = loaded.last_chunk.max(id);
            }
        }
        Ok(())
    }

    /// For each of `ids`, whether it may have a chunk: false only for a series that has
    /// never had one (compaction then need not look for its previous chunk). Chunks are
    /// made only by compaction, under its lock, so after the refresh a series with a chunk
    /// is known; one whose chunks retention dropped may still answer true. The table is
    /// loaded once and then only followed here: a reload reads every chunk row, which
    /// compaction should not wait for, and a forgotten span changes nothing it decides.
    pub fn may_have_chunks(
        &self,
        tx: &mut postgres::Transaction<'_>,
        ids: &[i64],
    ) -> Result<Vec<bool>, StoreError> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::refresh(&mut guard, tx, false)?;
        let spans = guard.as_ref().map(|l| &l.spans);
        Ok(ids
            .iter()
            .map(|id| spans.is_none_or(|s| s.contains_key(id)))
            .collect())
    }

    /// Every series in `ids` (by position) whose samples may lie in `[from_ms, to_ms]`: a
    /// head sample there, or a chunk span overlapping it.
    pub fn present(
        &self,
        tx: &mut postgres::Transaction<'_>,
        ids: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::refresh(&mut guard, tx, true)?;
        let spans = guard.as_ref().map(|l| &l.spans);
        let mut present: Vec<bool> = ids
            .iter()
            .map(|id| {
                spans
                    .and_then(|s| s.get(id))
                    .is_some_and(|&(lo, hi)| lo <= to_ms && hi >= from_ms)
            })
            .collect();
        // Only the series no chunk vouches for are looked for in the head: usually none
        // when the range reaches back past the newest compaction (a scan of the whole head
        // took 44 ms at 20,000 series), a few by their key otherwise.
        let missing: Vec<i64> = ids
            .iter()
            .zip(&present)
            .filter(|(_, p)| !**p)
            .map(|(id, _)| *id)
            .collect();
        if missing.is_empty() {
            return Ok(present);
        }
        let head = super::samples::head_presence(
            tx,
            (missing.len() <= HEAD_BY_ID_MAX).then_some(&missing[..]),
            from_ms,
            to_ms,
        )?;
        for (id, p) in ids.iter().zip(present.iter_mut()) {
            *p = *p || head.contains(id);
        }
        Ok(present)
    }
}

fn widen(spans: &mut HashMap<i64, (i64, i64)>, series: i64, lo: i64, hi: i64) {
    let span = spans.entry(series).or_insert((lo, hi));
    span.0 = span.0.min(lo);
    span.1 = span.1.max(hi);
}
