//! Status intervals: each check's history kept as runs of one status, so the dashboard's
//! timeline and availability over 30 days read a few rows instead of every result.
//!
//! `check_results` stays the source of truth. The ingest transaction extends a check's last
//! run with the batch's results when they are newer than everything stored (the usual
//! case); a result that arrives out of order, or rewrites a stored one, makes the runs from
//! the one containing it onwards be rebuilt from `check_results`, in the same transaction.

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::StatusInterval;

/// A silence longer than this many intervals ends a run; the time after it is "no data".
pub(super) const GAP_INTERVALS: i64 = 3;

/// The interval assumed for a check that declares none and has not reported twice yet.
pub(super) const DEFAULT_INTERVAL_MS: i64 = 5 * 60_000;

/// One run of equal statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub start: i64,
    pub end: i64,
    pub status: u8,
    pub results: i64,
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

/// The longest silence before a result that still joins it to the run before: 3 of the
/// interval that result declares, else of the check's declared one, else of its usual one.
/// Each result's own interval counts, so a probe that changes its interval (or a backfill
/// at another pace) does not split or join its history wrongly.
pub(super) fn gap_ms(own: Option<i64>, declared: Option<i64>, usual: Option<i64>) -> i64 {
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
pub(super) fn push(runs: &mut Vec<Run>, ts: i64, status: u8, gap: i64) {
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
pub(super) fn learn_interval(usual: Option<i64>, gap: i64) -> Option<i64> {
    if gap <= 0 {
        return usual;
    }
    Some(match usual {
        Some(u) if u > 0 => u + (gap.min(2 * u) - u) / 4,
        _ => gap,
    })
}

/// One check's results written by the current batch: (time, status, declared interval),
/// in batch order.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub results: Vec<(i64, u8, Option<i64>)>,
}

/// The check's reporting settings and its open run, from its `checks` row.
struct CheckState {
    declared: Option<i64>,
    usual: Option<i64>,
    open: Option<Run>,
}

fn check_state(tx: &Connection, check_id: i64) -> rusqlite::Result<CheckState> {
    tx.prepare_cached(
        "SELECT interval_ms, usual_interval_ms, run_start_ms, run_end_ms, run_status,
            run_results FROM checks WHERE id = ?1",
    )?
    .query_row(params![check_id], |r| {
        let open = match (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?) {
            (Some(start), Some(end), Some(status), Some(results)) => Some(Run {
                start,
                end,
                status,
                results,
            }),
            _ => None,
        };
        Ok(CheckState {
            declared: r.get(0)?,
            usual: r.get(1)?,
            open,
        })
    })
}

/// Writes the check's open run and usual interval into its `checks` row.
fn set_open(
    tx: &Connection,
    check_id: i64,
    open: Option<Run>,
    usual: Option<i64>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE checks SET run_start_ms = ?2, run_end_ms = ?3, run_status = ?4,
            run_results = ?5, usual_interval_ms = ?6 WHERE id = ?1",
    )?
    .execute(params![
        check_id,
        open.map(|r| r.start),
        open.map(|r| r.end),
        open.map(|r| r.status),
        open.map(|r| r.results),
        usual
    ])?;
    Ok(())
}

/// Takes the newest run out of the table (it becomes the open run again).
fn take_last(tx: &Connection, check_id: i64) -> rusqlite::Result<Option<Run>> {
    let last = run_at_or_before(tx, check_id, i64::MAX)?;
    if let Some(l) = last {
        delete_run(tx, check_id, l.start)?;
    }
    Ok(last)
}

/// Brings a check's runs up to date with the results the batch just wrote to
/// `check_results`, and learns its usual interval from the ones that came in order.
///
/// Results newer than the open run extend it (in the `checks` row; a closed run is one
/// INSERT). Late or rewritten results mark the check dirty over their span; [`repair_dirty`]
/// later recomputes only the stretch of runs around it, once for many batches.
pub(super) fn update(
    tx: &Connection,
    check_id: i64,
    pending: &mut Pending,
) -> rusqlite::Result<()> {
    let state = check_state(tx, check_id)?;
    // Stable sort, then keep the last result of each time: the later write wins, as it did
    // in check_results.
    pending.results.sort_by_key(|r| r.0);
    pending.results.reverse();
    pending.results.dedup_by_key(|r| r.0);
    pending.results.reverse();
    let newest = state.open.map_or(i64::MIN, |l| l.end);
    // Sorted, so the late results are a prefix: their span is its first and last time.
    let late = pending.results.partition_point(|r| r.0 <= newest);
    if late > 0 {
        let (lo, hi) = (pending.results[0].0, pending.results[late - 1].0);
        tx.prepare_cached(
            "INSERT INTO intervals_dirty (check_id, lo_ms, hi_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (check_id) DO UPDATE SET lo_ms = min(lo_ms, excluded.lo_ms),
                hi_ms = max(hi_ms, excluded.hi_ms)",
        )?
        .execute(params![check_id, lo, hi])?;
    }
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
    write(tx, check_id, &runs)?;
    set_open(tx, check_id, open, usual)
}

/// Checks whose runs wait for a repair.
pub(super) fn dirty(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<i64>> {
    conn.prepare_cached("SELECT check_id FROM intervals_dirty ORDER BY check_id LIMIT ?1")?
        .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            r.get(0)
        })?
        .collect()
}

/// Repairs the runs of `check_ids` that are dirty: around the late results recorded for
/// each, with the open run taken into the table for the repair and out again after it.
pub(super) fn repair_dirty(tx: &Connection, check_ids: &[i64]) -> rusqlite::Result<()> {
    for &check_id in check_ids {
        let span: Option<(i64, i64)> = tx
            .prepare_cached(
                "DELETE FROM intervals_dirty WHERE check_id = ?1 RETURNING lo_ms, hi_ms",
            )?
            .query_row(params![check_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((lo, hi)) = span else {
            continue;
        };
        let state = check_state(tx, check_id)?;
        if let Some(o) = state.open {
            write(tx, check_id, &[o])?;
        }
        repair(tx, check_id, lo, hi, &state)?;
        let open = take_last(tx, check_id)?;
        set_open(tx, check_id, open, state.usual)?;
    }
    Ok(())
}

/// Recomputes the runs of the stretch that late results in `[lo, hi]` can change: from the
/// run containing `lo` (or `lo` itself, if it is the oldest) up to, not including, the
/// second run starting after `hi`. Runs outside it are unaffected: a run's bounds depend
/// only on its neighbouring results.
fn repair(
    tx: &Connection,
    check_id: i64,
    lo: i64,
    hi: i64,
    state: &CheckState,
) -> rusqlite::Result<()> {
    let (from, seed) = match run_at_or_before(tx, check_id, lo)? {
        Some(c) => (c.start, run_at_or_before(tx, check_id, c.start - 1)?),
        None => (lo, None),
    };
    let after: Vec<Run> = tx
        .prepare_cached(
            "SELECT start_ms, end_ms, status, results FROM status_intervals
             WHERE check_id = ?1 AND start_ms > ?2 ORDER BY start_ms LIMIT 2",
        )?
        .query_map(params![check_id, hi], map_run)?
        .collect::<rusqlite::Result<_>>()?;
    // The second run after the stretch stays; the stretch ends just before it.
    let keep = after.get(1).copied();
    let until = keep.map_or(i64::MAX, |k| k.start);
    tx.prepare_cached(
        "DELETE FROM status_intervals WHERE check_id = ?1 AND start_ms >= ?2 AND start_ms < ?3",
    )?
    .execute(params![check_id, from, until])?;
    let mut runs: Vec<Run> = seed.into_iter().collect();
    scan(tx, check_id, from, until, state, &mut runs)?;
    // Join the stretch to the run kept after it, as pushing that run's first result would.
    if let (Some(k), Some(last)) = (keep, runs.last_mut())
        && k.start - last.end
            <= gap_ms(
                result_interval(tx, check_id, k.start)?,
                state.declared,
                state.usual,
            )
    {
        last.end = k.start;
        if last.status == k.status {
            last.end = k.end;
            last.results += k.results;
            delete_run(tx, check_id, k.start)?;
        }
    }
    write(tx, check_id, &runs)
}

/// The interval a stored result declared.
fn result_interval(tx: &Connection, check_id: i64, ts: i64) -> rusqlite::Result<Option<i64>> {
    Ok(tx
        .prepare_cached("SELECT interval_ms FROM check_results WHERE check_id = ?1 AND ts_ms = ?2")?
        .query_row(params![check_id, ts], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Pushes the check's stored results in `[from, until)` onto `runs`; returns the usual
/// interval learnt from them.
fn scan(
    tx: &Connection,
    check_id: i64,
    from: i64,
    until: i64,
    state: &CheckState,
    runs: &mut Vec<Run>,
) -> rusqlite::Result<Option<i64>> {
    let mut stmt = tx.prepare_cached(
        "SELECT ts_ms, status, interval_ms FROM check_results
         WHERE check_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY ts_ms",
    )?;
    let mut rows = stmt.query(params![check_id, from, until])?;
    let (mut usual, mut previous) = (None, None);
    while let Some(row) = rows.next()? {
        let ts: i64 = row.get(0)?;
        if let Some(p) = previous {
            usual = learn_interval(usual, ts - p);
        }
        previous = Some(ts);
        let gap = gap_ms(row.get(2)?, state.declared, state.usual);
        push(runs, ts, row.get(1)?, gap);
    }
    Ok(usual)
}

/// Builds every check's runs and usual interval from its results (after the migration that
/// adds them).
pub(super) fn rebuild_all(tx: &Connection) -> rusqlite::Result<()> {
    let checks: Vec<(i64, Option<i64>)> = tx
        .prepare("SELECT id, interval_ms FROM checks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, declared) in checks {
        tx.prepare_cached("DELETE FROM status_intervals WHERE check_id = ?1")?
            .execute(params![id])?;
        let mut runs = Vec::new();
        let state = CheckState {
            declared,
            usual: None,
            open: None,
        };
        let usual = scan(tx, id, i64::MIN, i64::MAX, &state, &mut runs)?;
        let open = runs.pop();
        write(tx, id, &runs)?;
        set_open(tx, id, open, usual)?;
    }
    Ok(())
}

fn map_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        start: r.get(0)?,
        end: r.get(1)?,
        status: r.get(2)?,
        results: r.get(3)?,
    })
}

/// The stored run that starts last at or before `ts` (the one containing it, if any).
fn run_at_or_before(tx: &Connection, check_id: i64, ts: i64) -> rusqlite::Result<Option<Run>> {
    tx.prepare_cached(
        "SELECT start_ms, end_ms, status, results FROM status_intervals
         WHERE check_id = ?1 AND start_ms <= ?2 ORDER BY start_ms DESC LIMIT 1",
    )?
    .query_row(params![check_id, ts], map_run)
    .optional()
}

fn delete_run(tx: &Connection, check_id: i64, start: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM status_intervals WHERE check_id = ?1 AND start_ms = ?2")?
        .execute(params![check_id, start])?;
    Ok(())
}

fn write(tx: &Connection, check_id: i64, runs: &[Run]) -> rusqlite::Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO status_intervals (check_id, start_ms, end_ms, status, results)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (check_id, start_ms) DO UPDATE SET end_ms = excluded.end_ms,
            status = excluded.status, results = excluded.results",
    )?;
    for r in runs {
        stmt.execute(params![check_id, r.start, r.end, r.status, r.results])?;
    }
    Ok(())
}

/// The runs of one check that overlap `[from_ms, to_ms]`, oldest first: closed ones from
/// the table, then the open one from the check's row.
pub(super) fn read(
    conn: &Connection,
    check_id: i64,
    from_ms: i64,
    to_ms: i64,
) -> rusqlite::Result<Vec<StatusInterval>> {
    // Runs are disjoint and sorted, so the first one that can overlap is the last one
    // starting at or before `from_ms`; both bounds are then ranges on the primary key.
    let first: i64 = conn
        .prepare_cached(
            "SELECT coalesce(max(start_ms), ?2) FROM status_intervals
             WHERE check_id = ?1 AND start_ms <= ?2",
        )?
        .query_row(params![check_id, from_ms], |r| r.get(0))?;
    let mut runs: Vec<StatusInterval> = conn
        .prepare_cached(
            "SELECT start_ms, end_ms, status, results FROM status_intervals
             WHERE check_id = ?1 AND start_ms >= ?2 AND start_ms <= ?3 AND end_ms >= ?4
             ORDER BY start_ms",
        )?
        .query_map(params![check_id, first, to_ms, from_ms], |r| {
            map_run(r).map(StatusInterval::from)
        })?
        .collect::<rusqlite::Result<_>>()?;
    if let Some(open) = check_state(conn, check_id)?.open
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
