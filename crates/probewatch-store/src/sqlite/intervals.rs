//! Status intervals on SQLite: [`crate::intervals`]'s row operations on this back end's
//! tables, inside the caller's transaction.

use rusqlite::{Connection, OptionalExtension, params};

use crate::intervals::{CheckState, Run, RunTable};

/// The run tables seen through one connection (a transaction for writes).
pub(super) struct SqliteRuns<'a>(pub &'a Connection);

fn map_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        start: r.get(0)?,
        end: r.get(1)?,
        status: r.get(2)?,
        results: r.get(3)?,
    })
}

impl RunTable for SqliteRuns<'_> {
    type Error = rusqlite::Error;

    fn check_state(&mut self, check_id: i64) -> rusqlite::Result<CheckState> {
        self.0
            .prepare_cached(
                "SELECT interval_ms, usual_interval_ms, run_start_ms, run_end_ms, run_status,
                    run_results FROM checks WHERE id = ?1",
            )?
            .query_row(params![check_id], |r| {
                Ok(CheckState {
                    declared: r.get(0)?,
                    usual: r.get(1)?,
                    open: Run::from_columns(r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
                })
            })
    }

    fn set_open(
        &mut self,
        check_id: i64,
        open: Option<Run>,
        usual: Option<i64>,
    ) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(
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

    fn run_at_or_before(&mut self, check_id: i64, ts: i64) -> rusqlite::Result<Option<Run>> {
        self.0
            .prepare_cached(
                "SELECT start_ms, end_ms, status, results FROM status_intervals
                 WHERE check_id = ?1 AND start_ms <= ?2 ORDER BY start_ms DESC LIMIT 1",
            )?
            .query_row(params![check_id, ts], map_run)
            .optional()
    }

    fn runs_after(&mut self, check_id: i64, ts: i64, limit: i64) -> rusqlite::Result<Vec<Run>> {
        self.0
            .prepare_cached(
                "SELECT start_ms, end_ms, status, results FROM status_intervals
                 WHERE check_id = ?1 AND start_ms > ?2 ORDER BY start_ms LIMIT ?3",
            )?
            .query_map(params![check_id, ts, limit], map_run)?
            .collect()
    }

    fn delete_runs(&mut self, check_id: i64, from: i64, until: i64) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(
                "DELETE FROM status_intervals
                 WHERE check_id = ?1 AND start_ms >= ?2 AND start_ms < ?3",
            )?
            .execute(params![check_id, from, until])?;
        Ok(())
    }

    fn write_runs(&mut self, check_id: i64, runs: &[Run]) -> rusqlite::Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut stmt = self.0.prepare_cached(
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

    fn result_interval(&mut self, check_id: i64, ts: i64) -> rusqlite::Result<Option<i64>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT interval_ms FROM check_results WHERE check_id = ?1 AND ts_ms = ?2",
            )?
            .query_row(params![check_id, ts], |r| r.get(0))
            .optional()?
            .flatten())
    }

    fn scan_results(
        &mut self,
        check_id: i64,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(i64, u8, Option<i64>),
    ) -> rusqlite::Result<()> {
        let mut stmt = self.0.prepare_cached(
            "SELECT ts_ms, status, interval_ms FROM check_results
             WHERE check_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY ts_ms",
        )?;
        let mut rows = stmt.query(params![check_id, from, until])?;
        while let Some(row) = rows.next()? {
            f(row.get(0)?, row.get(1)?, row.get(2)?);
        }
        Ok(())
    }

    fn mark_dirty(&mut self, check_id: i64, lo: i64, hi: i64) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO intervals_dirty (check_id, lo_ms, hi_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (check_id) DO UPDATE SET lo_ms = min(lo_ms, excluded.lo_ms),
                    hi_ms = max(hi_ms, excluded.hi_ms)",
            )?
            .execute(params![check_id, lo, hi])?;
        Ok(())
    }

    fn take_dirty(&mut self, check_id: i64) -> rusqlite::Result<Option<(i64, i64)>> {
        self.0
            .prepare_cached(
                "DELETE FROM intervals_dirty WHERE check_id = ?1 RETURNING lo_ms, hi_ms",
            )?
            .query_row(params![check_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    }
}

/// Checks whose runs wait for a repair.
pub(super) fn dirty(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<i64>> {
    conn.prepare_cached("SELECT check_id FROM intervals_dirty ORDER BY check_id LIMIT ?1")?
        .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            r.get(0)
        })?
        .collect()
}

/// Builds every check's runs and usual interval from its results (after the migration that
/// adds them).
pub(super) fn rebuild_all(tx: &Connection) -> rusqlite::Result<()> {
    let checks: Vec<(i64, Option<i64>)> = tx
        .prepare("SELECT id, interval_ms FROM checks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, declared) in checks {
        crate::intervals::rebuild(&mut SqliteRuns(tx), id, declared)?;
    }
    Ok(())
}
