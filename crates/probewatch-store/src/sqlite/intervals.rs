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

/// The longest silence a run bridges, from the declared interval, else the usual one.
pub(super) fn gap_ms(declared: Option<i64>, usual: Option<i64>) -> i64 {
    GAP_INTERVALS
        * declared
            .filter(|v| *v > 0)
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

/// One check's results written by the current batch.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// (time, status), in batch order.
    pub results: Vec<(i64, u8)>,
    /// The newest declared interval among them.
    pub declared: Option<i64>,
}

/// Brings a check's runs up to date with the results the batch just wrote to
/// `check_results`. Returns the check's usual interval, learnt from in-order results.
pub(super) fn update(
    tx: &Connection,
    check_id: i64,
    pending: &mut Pending,
) -> rusqlite::Result<Option<i64>> {
    let (stored_declared, usual): (Option<i64>, Option<i64>) = tx
        .prepare_cached("SELECT interval_ms, usual_interval_ms FROM checks WHERE id = ?1")?
        .query_row(params![check_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let gap = gap_ms(pending.declared.or(stored_declared), usual);
    pending.results.sort_by_key(|r| r.0);
    let Some(&(first, _)) = pending.results.first() else {
        return Ok(usual);
    };
    let last = last_run(tx, check_id)?;
    let in_order =
        pending.results.windows(2).all(|w| w[0].0 < w[1].0) && last.is_none_or(|l| first > l.end);
    if !in_order {
        rebuild(tx, check_id, first, gap)?;
        return Ok(usual);
    }
    let mut usual = usual;
    let mut previous = last.map(|l| l.end);
    let mut runs: Vec<Run> = last.into_iter().collect();
    for &(ts, status) in &pending.results {
        if let Some(p) = previous {
            usual = learn_interval(usual, ts - p);
        }
        previous = Some(ts);
        push(&mut runs, ts, status, gap);
    }
    write(tx, check_id, &runs)?;
    Ok(usual)
}

/// Rebuilds a check's runs from `check_results`, starting with the run that contains
/// `from_ts` (or from the beginning). Returns the usual interval seen in the rescanned
/// results.
pub(super) fn rebuild(
    tx: &Connection,
    check_id: i64,
    from_ts: i64,
    gap: i64,
) -> rusqlite::Result<Option<i64>> {
    let start: Option<i64> = tx
        .prepare_cached(
            "SELECT start_ms FROM status_intervals WHERE check_id = ?1 AND start_ms <= ?2
             ORDER BY start_ms DESC LIMIT 1",
        )?
        .query_row(params![check_id, from_ts], |r| r.get(0))
        .optional()?;
    let from = start.unwrap_or(i64::MIN);
    let seed = match start {
        Some(s) => run_before(tx, check_id, s)?,
        None => None,
    };
    tx.prepare_cached("DELETE FROM status_intervals WHERE check_id = ?1 AND start_ms >= ?2")?
        .execute(params![check_id, from])?;
    let mut runs: Vec<Run> = seed.into_iter().collect();
    let mut usual = None;
    let mut previous: Option<i64> = None;
    let mut stmt = tx.prepare_cached(
        "SELECT ts_ms, status FROM check_results WHERE check_id = ?1 AND ts_ms >= ?2
         ORDER BY ts_ms",
    )?;
    let mut rows = stmt.query(params![check_id, from])?;
    while let Some(row) = rows.next()? {
        let (ts, status): (i64, u8) = (row.get(0)?, row.get(1)?);
        if let Some(p) = previous {
            usual = learn_interval(usual, ts - p);
        }
        previous = Some(ts);
        push(&mut runs, ts, status, gap);
    }
    write(tx, check_id, &runs)?;
    Ok(usual)
}

/// Rebuilds every check's runs and usual interval (after the migration that adds them).
pub(super) fn rebuild_all(tx: &Connection) -> rusqlite::Result<()> {
    let checks: Vec<(i64, Option<i64>)> = tx
        .prepare("SELECT id, interval_ms FROM checks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, declared) in checks {
        let usual = rebuild(tx, id, i64::MIN, gap_ms(declared, None))?;
        tx.prepare_cached("UPDATE checks SET usual_interval_ms = ?2 WHERE id = ?1")?
            .execute(params![id, usual])?;
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

fn last_run(tx: &Connection, check_id: i64) -> rusqlite::Result<Option<Run>> {
    tx.prepare_cached(
        "SELECT start_ms, end_ms, status, results FROM status_intervals WHERE check_id = ?1
         ORDER BY start_ms DESC LIMIT 1",
    )?
    .query_row(params![check_id], map_run)
    .optional()
}

fn run_before(tx: &Connection, check_id: i64, start: i64) -> rusqlite::Result<Option<Run>> {
    tx.prepare_cached(
        "SELECT start_ms, end_ms, status, results FROM status_intervals
         WHERE check_id = ?1 AND start_ms < ?2 ORDER BY start_ms DESC LIMIT 1",
    )?
    .query_row(params![check_id, start], map_run)
    .optional()
}

fn write(tx: &Connection, check_id: i64, runs: &[Run]) -> rusqlite::Result<()> {
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

/// The runs of one check that overlap `[from_ms, to_ms]`, oldest first.
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
    conn.prepare_cached(
        "SELECT start_ms, end_ms, status, results FROM status_intervals
         WHERE check_id = ?1 AND start_ms >= ?2 AND start_ms <= ?3 AND end_ms >= ?4
         ORDER BY start_ms",
    )?
    .query_map(params![check_id, first, to_ms, from_ms], |r| {
        map_run(r).map(StatusInterval::from)
    })?
    .collect()
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
