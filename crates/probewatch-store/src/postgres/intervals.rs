//! Status intervals on PostgreSQL: [`crate::intervals`]'s row operations on this back end's
//! tables, through the caller's transaction.

use postgres::GenericClient;

use super::PreparedTx;
use crate::StoreError;
use crate::intervals::{CheckState, Run, RunTable};

/// The run tables seen through one transaction, its statements prepared once per
/// connection: a repair runs several for each check it rebuilds, and unprepared each was
/// parsed and planned again, each a round trip of its own before it ran (a backlog's
/// repair of 6,656 checks parsed ~60,000 statements: 1.1 s of server time in parse alone).
pub(super) struct PgRuns<'a, 'b, 't>(pub &'a mut PreparedTx<'b, 't>);

/// A check's settings and open run from six columns of its row, starting at `at`:
/// interval_ms, usual_interval_ms, run_start_ms, run_end_ms, run_status, run_results.
pub(super) fn check_state(r: &postgres::Row, at: usize) -> CheckState {
    CheckState {
        declared: r.get(at),
        usual: r.get(at + 1),
        open: Run::from_columns(
            r.get(at + 2),
            r.get(at + 3),
            r.get::<_, Option<i16>>(at + 4)
                .and_then(|s| u8::try_from(s).ok()),
            r.get(at + 5),
        ),
    }
}

/// A stored run from four columns starting at `at`: start, end, status, results.
pub(super) fn run(r: &postgres::Row, at: usize) -> Run {
    Run {
        start: r.get(at),
        end: r.get(at + 1),
        status: u8::try_from(r.get::<_, i16>(at + 2)).unwrap_or(0),
        results: r.get(at + 3),
    }
}

impl RunTable for PgRuns<'_, '_, '_> {
    type Error = StoreError;

    fn check_state(&mut self, check_id: i64) -> Result<CheckState, StoreError> {
        let r = self.0.query_one(
            "SELECT interval_ms, usual_interval_ms, run_start_ms, run_end_ms, run_status,
                run_results FROM checks WHERE id = $1",
            &[&check_id],
        )?;
        Ok(check_state(&r, 0))
    }

    fn set_open(
        &mut self,
        check_id: i64,
        open: Option<Run>,
        usual: Option<i64>,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE checks SET run_start_ms = $2, run_end_ms = $3, run_status = $4,
                run_results = $5, usual_interval_ms = $6 WHERE id = $1",
            &[
                &check_id,
                &open.map(|r| r.start),
                &open.map(|r| r.end),
                &open.map(|r| i16::from(r.status)),
                &open.map(|r| r.results),
                &usual,
            ],
        )?;
        Ok(())
    }

    fn run_at_or_before(&mut self, check_id: i64, ts: i64) -> Result<Option<Run>, StoreError> {
        Ok(self
            .0
            .query_opt(
                "SELECT start_ms, end_ms, status, results FROM status_intervals
                 WHERE check_id = $1 AND start_ms <= $2 ORDER BY start_ms DESC LIMIT 1",
                &[&check_id, &ts],
            )?
            .map(|r| run(&r, 0)))
    }

    fn runs_after(&mut self, check_id: i64, ts: i64, limit: i64) -> Result<Vec<Run>, StoreError> {
        Ok(self
            .0
            .query(
                "SELECT start_ms, end_ms, status, results FROM status_intervals
                 WHERE check_id = $1 AND start_ms > $2 ORDER BY start_ms LIMIT $3",
                &[&check_id, &ts, &limit],
            )?
            .iter()
            .map(|r| run(r, 0))
            .collect())
    }

    fn delete_runs(&mut self, check_id: i64, from: i64, until: i64) -> Result<(), StoreError> {
        self.0.execute(
            "DELETE FROM status_intervals WHERE check_id = $1 AND start_ms >= $2 AND start_ms < $3",
            &[&check_id, &from, &until],
        )?;
        Ok(())
    }

    fn write_runs(&mut self, check_id: i64, runs: &[Run]) -> Result<(), StoreError> {
        if runs.is_empty() {
            return Ok(());
        }
        let starts: Vec<i64> = runs.iter().map(|r| r.start).collect();
        let ends: Vec<i64> = runs.iter().map(|r| r.end).collect();
        let statuses: Vec<i16> = runs.iter().map(|r| i16::from(r.status)).collect();
        let results: Vec<i64> = runs.iter().map(|r| r.results).collect();
        self.0.execute(
            "INSERT INTO status_intervals (check_id, start_ms, end_ms, status, results)
             SELECT $1, * FROM unnest($2::int8[], $3::int8[], $4::int2[], $5::int8[])
             ON CONFLICT (check_id, start_ms) DO UPDATE SET end_ms = excluded.end_ms,
                status = excluded.status, results = excluded.results",
            &[&check_id, &starts, &ends, &statuses, &results],
        )?;
        Ok(())
    }

    fn result_interval(&mut self, check_id: i64, ts: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .0
            .query_opt(
                "SELECT interval_ms FROM check_results WHERE check_id = $1 AND ts_ms = $2",
                &[&check_id, &ts],
            )?
            .and_then(|r| r.get(0)))
    }

    fn scan_results(
        &mut self,
        check_id: i64,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(i64, u8, Option<i64>),
    ) -> Result<(), StoreError> {
        // In pages, so a check with years of results is never held in memory at once.
        let mut after = from;
        let mut inclusive = true;
        loop {
            let rows = self.0.query(
                "SELECT ts_ms, status, interval_ms FROM check_results
                 WHERE check_id = $1 AND (ts_ms > $2 OR ($5 AND ts_ms = $2)) AND ts_ms < $3
                 ORDER BY ts_ms LIMIT $4",
                &[&check_id, &after, &until, &SCAN_PAGE, &inclusive],
            )?;
            for r in &rows {
                after = r.get(0);
                f(
                    after,
                    u8::try_from(r.get::<_, i16>(1)).unwrap_or(0),
                    r.get(2),
                );
            }
            inclusive = false;
            if (rows.len() as i64) < SCAN_PAGE {
                return Ok(());
            }
        }
    }

    fn mark_dirty(&mut self, check_id: i64, lo: i64, hi: i64) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO intervals_dirty (check_id, lo_ms, hi_ms) VALUES ($1, $2, $3)
             ON CONFLICT (check_id) DO UPDATE SET
                lo_ms = least(intervals_dirty.lo_ms, excluded.lo_ms),
                hi_ms = greatest(intervals_dirty.hi_ms, excluded.hi_ms)",
            &[&check_id, &lo, &hi],
        )?;
        Ok(())
    }

    fn take_dirty(&mut self, check_id: i64) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(self
            .0
            .query_opt(
                "DELETE FROM intervals_dirty WHERE check_id = $1 RETURNING lo_ms, hi_ms",
                &[&check_id],
            )?
            .map(|r| (r.get(0), r.get(1))))
    }
}

/// Results read per round trip when a stretch of runs is rebuilt.
const SCAN_PAGE: i64 = 10_000;

/// Checks whose runs wait for a repair.
pub(super) fn dirty(client: &mut impl GenericClient, limit: i64) -> Result<Vec<i64>, StoreError> {
    Ok(client
        .query(
            "SELECT check_id FROM intervals_dirty ORDER BY check_id LIMIT $1",
            &[&limit],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
