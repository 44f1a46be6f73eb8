//! Status intervals: each check's history kept as runs of one status, so the dashboard's
//! timeline and availability over 30 days read a few rows instead of every result.
//!
//! `check_results` stays the source of truth. The ingest transaction extends a check's last
//! run with the batch's results when they are newer than everything stored (the usual
//! case); a result that arrives out of order, or rewrites a stored one, marks the check
//! dirty over its span, and [`repair_dirty`] later recomputes only the stretch of runs
//! around it, once for many batches.
//!
//! The algorithm is written once, over [`RunTable`]: the handful of row operations each back
//! end provides on its own tables.

use crate::model::StatusInterval;

pub(crate) mod window;

/// A silence longer than this many intervals ends a run; the time after it is "no data".
pub(crate) const GAP_INTERVALS: i64 = 3;

/// The interval assumed for a check that declares none and has not reported twice yet.
pub(crate) const DEFAULT_INTERVAL_MS: i64 = 5 * 60_000;

/// One run of equal statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: i64,
    pub end: i64,
    pub status: u8,
    pub results: i64,
}

impl Run {
    /// The open run a check row stores as four nullable columns (start, end, status,
    /// results): a run when all four are set.
    pub fn from_columns(
        start: Option<i64>,
        end: Option<i64>,
        status: Option<u8>,
        results: Option<i64>,
    ) -> Option<Run> {
        Some(Run {
            start: start?,
            end: end?,
            status: status?,
            results: results?,
        })
    }
}

impl From<Run> for StatusInterval {
    fn from(r: Run) -> StatusInterval {
        StatusInterval {
            start_ms: r.start,
            end_ms: r.end,
            status: r.status,
            results: u64::try_from(r.results).unwrap_or(0),
        }
    }
}

/// The check's reporting settings and its open run, from its `checks` row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckState {
    pub declared: Option<i64>,
    pub usual: Option<i64>,
    pub open: Option<Run>,
}

/// A stored result as the runs see it: (time, status, the interval it declared).
pub(crate) type RunResult = (i64, u8, Option<i64>);

/// One check's results written by the current batch: (time, status, declared interval),
/// in batch order.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub results: Vec<RunResult>,
}

/// The row operations the algorithm needs, on one back end's tables, inside the caller's
/// transaction. Closed runs live in `status_intervals` keyed by (check, start); the open
/// run and the usual interval in the check's own row; late spans in `intervals_dirty`.
pub(crate) trait RunTable {
    /// The back end's error.
    type Error;

    /// The check's settings and open run.
    fn check_state(&mut self, check_id: i64) -> Result<CheckState, Self::Error>;
    /// Writes the check's open run and usual interval.
    fn set_open(
        &mut self,
        check_id: i64,
        open: Option<Run>,
        usual: Option<i64>,
    ) -> Result<(), Self::Error>;
    /// The stored run that starts last at or before `ts`.
    fn run_at_or_before(&mut self, check_id: i64, ts: i64) -> Result<Option<Run>, Self::Error>;
    /// The first `limit` stored runs starting after `ts`.
    fn runs_after(&mut self, check_id: i64, ts: i64, limit: i64) -> Result<Vec<Run>, Self::Error>;
    /// Deletes the stored runs starting in `[from, until)`.
    fn delete_runs(&mut self, check_id: i64, from: i64, until: i64) -> Result<(), Self::Error>;
    /// Inserts or replaces runs (by start).
    fn write_runs(&mut self, check_id: i64, runs: &[Run]) -> Result<(), Self::Error>;
    /// The interval the stored result at `ts` declared.
    fn result_interval(&mut self, check_id: i64, ts: i64) -> Result<Option<i64>, Self::Error>;
    /// Calls `f` with each stored result in `[from, until)`, oldest first.
    fn scan_results(
        &mut self,
        check_id: i64,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(i64, u8, Option<i64>),
    ) -> Result<(), Self::Error>;
    /// Widens the check's dirty span to cover `[lo, hi]`.
    fn mark_dirty(&mut self, check_id: i64, lo: i64, hi: i64) -> Result<(), Self::Error>;
    /// Removes and returns the check's dirty span.
    fn take_dirty(&mut self, check_id: i64) -> Result<Option<(i64, i64)>, Self::Error>;
}

/// The longest silence before a result that still joins it to the run before: 3 of the
/// interval that result declares, else of the check's declared one, else of its usual one.
/// Each result's own interval counts, so a probe that changes its interval (or a backfill
/// at another pace) does not split or join its history wrongly.
pub(crate) fn gap_ms(own: Option<i64>, declared: Option<i64>, usual: Option<i64>) -> i64 {
    GAP_INTERVALS
        * own
            .filter(|v| *v > 0)
            .or(declared.filter(|v| *v > 0))
            .or(usual.filter(|v| *v > 0))
            .unwrap_or(DEFAULT_INTERVAL_MS)
}

/// Appends one result that is newer than every result already in `runs`. A new status
/// closes the previous run at this result's time (the old status held until the change was
/// seen), unless a silence longer than `gap` came first.
pub(crate) fn push(runs: &mut Vec<Run>, ts: i64, status: u8, gap: i64) {
    let run = Run {
        start: ts,
        end: ts,
        status,
        results: 1,
    };
    match runs.last_mut() {
        Some(last) if ts - last.end <= gap => {
            last.end = ts;
            if last.status == status {
                last.results += 1;
            } else {
                runs.push(run);
            }
        }
        _ => runs.push(run),
    }
}

/// The usual interval after one more gap between consecutive results: a moving average
/// that follows a faster probe at once and a slower one gradually (each gap counts for at
/// most twice the current estimate, so one outage does not make every check look fresh).
pub(crate) fn learn_interval(usual: Option<i64>, gap: i64) -> Option<i64> {
    if gap <= 0 {
        return usual;
    }
    Some(match usual {
        Some(u) if u > 0 => u + (gap.min(2 * u) - u) / 4,
        _ => gap,
    })
}

/// What one batch's results do to a check's runs: computed by [`advance`], written by the
/// back end (one check at a time by [`update`], or many checks in a few statements).
#[derive(Debug, Default)]
pub(crate) struct Advance {
    /// The span of late or rewritten results, to mark dirty.
    pub dirty: Option<(i64, i64)>,
    /// Runs closed by this batch, to insert.
    pub closed: Vec<Run>,
    /// The check's open run after this batch.
    pub open: Option<Run>,
    /// The check's usual interval after this batch.
    pub usual: Option<i64>,
}

/// Extends a check's open run with the batch's results that are newer than everything
/// stored, and learns its usual interval from them; late or rewritten results only mark a
/// span for [`repair_dirty`].
pub(crate) fn advance(state: &CheckState, pending: &mut Pending) -> Advance {
    // Stable sort, then keep the last result of each time: the later write wins, as it did
    // in check_results.
    pending.results.sort_by_key(|r| r.0);
    pending.results.reverse();
    pending.results.dedup_by_key(|r| r.0);
    pending.results.reverse();
    let newest = state.open.map_or(i64::MIN, |l| l.end);
    // Sorted, so the late results are a prefix: their span is its first and last time.
    let late = pending.results.partition_point(|r| r.0 <= newest);
    let dirty = (late > 0).then(|| (pending.results[0].0, pending.results[late - 1].0));
    let mut usual = state.usual;
    let mut runs: Vec<Run> = state.open.into_iter().collect();
    for &(ts, status, own) in &pending.results[late..] {
        if let Some(previous) = runs.last() {
            usual = learn_interval(usual, ts - previous.end);
        }
        push(
            &mut runs,
            ts,
            status,
            gap_ms(own, state.declared, state.usual),
        );
    }
    let open = runs.pop();
    Advance {
        dirty,
        closed: runs,
        open,
        usual,
    }
}

/// Brings one check's runs up to date with the results the batch just wrote ([`advance`],
/// written through `table`).
pub(crate) fn update<T: RunTable>(
    table: &mut T,
    check_id: i64,
    pending: &mut Pending,
) -> Result<(), T::Error> {
    let state = table.check_state(check_id)?;
    let advanced = advance(&state, pending);
    if let Some((lo, hi)) = advanced.dirty {
        table.mark_dirty(check_id, lo, hi)?;
    }
    table.write_runs(check_id, &advanced.closed)?;
    table.set_open(check_id, advanced.open, advanced.usual)
}

/// Repairs the runs of `check_ids` that are dirty: around the late results recorded for
/// each, with the open run taken into the table for the repair and out again after it.
pub(crate) fn repair_dirty<T: RunTable>(table: &mut T, check_ids: &[i64]) -> Result<(), T::Error> {
    for &check_id in check_ids {
        if let Some((lo, hi)) = table.take_dirty(check_id)? {
            repair_check(table, check_id, lo, hi)?;
        }
    }
    Ok(())
}

/// Repairs one check's runs around its late results in `[lo, hi]` (its dirty span, already
/// taken).
pub(crate) fn repair_check<T: RunTable>(
    table: &mut T,
    check_id: i64,
    lo: i64,
    hi: i64,
) -> Result<(), T::Error> {
    let state = table.check_state(check_id)?;
    if let Some(o) = state.open {
        table.write_runs(check_id, &[o])?;
    }
    repair(table, check_id, lo, hi, &state)?;
    // The newest run becomes the open run again.
    let open = table.run_at_or_before(check_id, i64::MAX)?;
    if let Some(l) = open {
        table.delete_runs(check_id, l.start, l.start.saturating_add(1))?;
    }
    table.set_open(check_id, open, state.usual)
}

/// Recomputes the runs of the stretch that late results in `[lo, hi]` can change: from the
/// run containing `lo` (or `lo` itself, if it is the oldest) up to, not including, the
/// second run starting after `hi`. Runs outside it are unaffected: a run's bounds depend
/// only on its neighbouring results.
fn repair<T: RunTable>(
    table: &mut T,
    check_id: i64,
    lo: i64,
    hi: i64,
    state: &CheckState,
) -> Result<(), T::Error> {
    let (from, seed) = match table.run_at_or_before(check_id, lo)? {
        Some(c) => (c.start, table.run_at_or_before(check_id, c.start - 1)?),
        None => (lo, None),
    };
    let after = table.runs_after(check_id, hi, 2)?;
    // The second run after the stretch stays; the stretch ends just before it.
    let keep = after.get(1).copied();
    let until = keep.map_or(i64::MAX, |k| k.start);
    table.delete_runs(check_id, from, until)?;
    let mut runs: Vec<Run> = seed.into_iter().collect();
    scan(table, check_id, from, until, state, &mut runs)?;
    // Join the stretch to the run kept after it, as pushing that run's first result would.
    if let (Some(k), Some(last)) = (keep, runs.last_mut()) {
        let own = table.result_interval(check_id, k.start)?;
        if k.start - last.end <= gap_ms(own, state.declared, state.usual) {
            last.end = k.start;
            if last.status == k.status {
                last.end = k.end;
                last.results += k.results;
                table.delete_runs(check_id, k.start, k.start.saturating_add(1))?;
            }
        }
    }
    table.write_runs(check_id, &runs)
}

/// Pushes the check's stored results in `[from, until)` onto `runs`; returns the usual
/// interval learnt from them.
fn scan<T: RunTable>(
    table: &mut T,
    check_id: i64,
    from: i64,
    until: i64,
    state: &CheckState,
    runs: &mut Vec<Run>,
) -> Result<Option<i64>, T::Error> {
    let (mut usual, mut previous) = (None, None);
    table.scan_results(check_id, from, until, &mut |ts, status, own| {
        if let Some(p) = previous {
            usual = learn_interval(usual, ts - p);
        }
        previous = Some(ts);
        push(runs, ts, status, gap_ms(own, state.declared, state.usual));
    })?;
    Ok(usual)
}

/// Builds one check's runs and usual interval from all its results (after the migration
/// that adds them).
pub(crate) fn rebuild<T: RunTable>(
    table: &mut T,
    check_id: i64,
    declared: Option<i64>,
) -> Result<(), T::Error> {
    table.delete_runs(check_id, i64::MIN, i64::MAX)?;
    let mut runs = Vec::new();
    let state = CheckState {
        declared,
        usual: None,
        open: None,
    };
    let usual = scan(table, check_id, i64::MIN, i64::MAX, &state, &mut runs)?;
    let open = runs.pop();
    table.write_runs(check_id, &runs)?;
    table.set_open(check_id, open, usual)
}

/// The runs of one check that overlap `[from_ms, to_ms]`, oldest first: closed ones from
/// the table (starting at the one containing `from_ms`), then the open one.
pub(crate) fn read<T: RunTable>(
    table: &mut T,
    check_id: i64,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<StatusInterval>, T::Error> {
    let first = table
        .run_at_or_before(check_id, from_ms)?
        .map_or(from_ms, |r| r.start);
    let mut runs: Vec<StatusInterval> = Vec::new();
    let mut after = first.saturating_sub(1);
    // Pages of runs until one starts after the range.
    'pages: loop {
        let page = table.runs_after(check_id, after, 512)?;
        let full = page.len() == 512;
        for r in page {
            if r.start > to_ms {
                break 'pages;
            }
            after = r.start;
            if r.end >= from_ms {
                runs.push(r.into());
            }
        }
        if !full {
            break;
        }
    }
    if let Some(open) = table.check_state(check_id)?.open
        && open.start <= to_ms
        && open.end >= from_ms
    {
        runs.push(open.into());
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_on_status_changes_and_on_silences() {
        let mut runs = Vec::new();
        for (ts, status) in [(0, 0), (10, 0), (20, 2), (30, 2), (200, 2), (210, 0)] {
            push(&mut runs, ts, status, 30);
        }
        let got: Vec<(i64, i64, u8, i64)> = runs
            .iter()
            .map(|r| (r.start, r.end, r.status, r.results))
            .collect();
        // The ok run lasts until the critical result; the silence 30→200 splits the
        // critical runs; the last ok run starts where the critical one ends.
        assert_eq!(
            got,
            vec![
                (0, 20, 0, 2),
                (20, 30, 2, 2),
                (200, 210, 2, 1),
                (210, 210, 0, 1)
            ]
        );
    }

    #[test]
    fn the_usual_interval_follows_faster_probes_at_once_and_slower_ones_gradually() {
        assert_eq!(learn_interval(None, 10_000), Some(10_000));
        assert_eq!(learn_interval(Some(10_000), 10_000), Some(10_000));
        assert_eq!(learn_interval(Some(60_000), 10_000), Some(47_500));
        // One hour-long outage moves a 10 s estimate to 12.5 s, not to an hour.
        assert_eq!(learn_interval(Some(10_000), 3_600_000), Some(12_500));
        assert_eq!(learn_interval(Some(10_000), 0), Some(10_000));
    }
}
