//! Status intervals on PostgreSQL: [`crate::intervals`]'s row operations on this back end's
//! tables, through the caller's transaction.

use std::collections::HashMap;

use postgres::GenericClient;
use postgres::types::Type;

use super::PreparedTx;
use crate::StoreError;
use crate::intervals::window::{Attempt, Changes, RUNS_EACH_SIDE, Window};
use crate::intervals::{self, CheckState, Run, RunResult, RunTable};

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

/// The most results of one check a batched repair holds; a check whose repair reads more
/// (a stretch of months with one status) is repaired through the database, by pages.
const RESULTS_HELD_MAX: i64 = 2_000;

/// Repairs the runs of `check_ids` that wait for a repair (locked by the caller), many
/// checks a statement: their dirty spans, states and the two runs each side of each span
/// are read in two statements, the results each repair reads in one more, every check is
/// repaired in memory ([`Window`]) and the changes written in three. Only a check whose
/// repair needs more than that read goes through the database, a statement at a time.
pub(super) fn repair_dirty(
    tx: &mut PreparedTx<'_, '_>,
    check_ids: &[i64],
) -> Result<(), StoreError> {
    let spans: Vec<(i64, (i64, i64))> = tx
        .query_typed(
            "DELETE FROM intervals_dirty WHERE check_id = ANY($1) RETURNING check_id, lo_ms, hi_ms",
            &[(&check_ids, Type::INT8_ARRAY)],
        )?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    if spans.is_empty() {
        return Ok(());
    }
    let mut windows = read_windows(tx, &spans)?;
    let mut changes: Vec<(i64, Changes)> = Vec::new();
    let mut unheld: Vec<(i64, (i64, i64))> = Vec::new();
    let mut wanted: Vec<(i64, i64, i64)> = Vec::new();
    for &(check_id, span) in &spans {
        let Some(window) = windows.get(&check_id) else {
            continue; // the check is gone
        };
        match window.attempt(span) {
            Attempt::Done(done) => changes.push((check_id, done)),
            Attempt::NeedsResults { from, until } => wanted.push((check_id, from, until)),
            Attempt::Unheld => unheld.push((check_id, span)),
        }
    }
    let span_of: HashMap<i64, (i64, i64)> = spans.iter().copied().collect();
    let mut held = read_results(tx, &wanted)?;
    for &(check_id, from, until) in &wanted {
        let span = span_of[&check_id];
        let (Some(window), Some(rows)) = (windows.get_mut(&check_id), held.remove(&check_id))
        else {
            unheld.push((check_id, span));
            continue;
        };
        window.hold_results(from, until, rows);
        match window.attempt(span) {
            Attempt::Done(done) => changes.push((check_id, done)),
            _ => unheld.push((check_id, span)),
        }
    }
    write_changes(tx, &changes)?;
    for (check_id, (lo, hi)) in unheld {
        intervals::repair_check(&mut PgRuns(tx), check_id, lo, hi)?;
    }
    Ok(())
}

/// Each check's window around its span: its state, the runs starting at or before the
/// span's start (newest first) and after its end (oldest first), two each.
fn read_windows(
    tx: &mut PreparedTx<'_, '_>,
    spans: &[(i64, (i64, i64))],
) -> Result<HashMap<i64, Window>, StoreError> {
    let ids: Vec<i64> = spans.iter().map(|s| s.0).collect();
    let los: Vec<i64> = spans.iter().map(|s| s.1.0).collect();
    let his: Vec<i64> = spans.iter().map(|s| s.1.1).collect();
    let side = i64::try_from(RUNS_EACH_SIDE).unwrap_or(2);
    // The first column says what a row is: 0 a check's state, 1 a run before, 2 a run after.
    let rows = tx.query_typed(
        "SELECT 0 AS kind, id, interval_ms, usual_interval_ms, run_start_ms, run_end_ms,
                run_status, run_results
           FROM checks WHERE id = ANY($1)
         UNION ALL
         SELECT 1, w.c, NULL, NULL, r.start_ms, r.end_ms, r.status, r.results
           FROM unnest($1, $2) AS w(c, lo) CROSS JOIN LATERAL (
                SELECT start_ms, end_ms, status, results FROM status_intervals
                 WHERE check_id = w.c AND start_ms <= w.lo ORDER BY start_ms DESC LIMIT $4) r
         UNION ALL
         SELECT 2, w.c, NULL, NULL, r.start_ms, r.end_ms, r.status, r.results
           FROM unnest($1, $3) AS w(c, hi) CROSS JOIN LATERAL (
                SELECT start_ms, end_ms, status, results FROM status_intervals
                 WHERE check_id = w.c AND start_ms > w.hi ORDER BY start_ms LIMIT $4) r",
        &[
            (&ids, Type::INT8_ARRAY),
            (&los, Type::INT8_ARRAY),
            (&his, Type::INT8_ARRAY),
            (&side, Type::INT8),
        ],
    )?;
    let mut states: HashMap<i64, CheckState> = HashMap::new();
    let mut before: HashMap<i64, Vec<Run>> = HashMap::new();
    let mut after: HashMap<i64, Vec<Run>> = HashMap::new();
    for r in &rows {
        let check_id: i64 = r.get(1);
        match r.get::<_, i32>(0) {
            0 => {
                states.insert(check_id, check_state(r, 2));
            }
            1 => before.entry(check_id).or_default().push(run(r, 4)),
            _ => after.entry(check_id).or_default().push(run(r, 4)),
        }
    }
    Ok(spans
        .iter()
        .filter_map(|&(check_id, span)| {
            let state = *states.get(&check_id)?;
            let mut before = before.remove(&check_id).unwrap_or_default();
            let mut after = after.remove(&check_id).unwrap_or_default();
            before.sort_unstable_by_key(|r| std::cmp::Reverse(r.start));
            after.sort_unstable_by_key(|r| r.start);
            Some((
                check_id,
                Window::around(check_id, state, span, &before, &after),
            ))
        })
        .collect())
}

/// Each check's stored results in `[from, until]` (both included), oldest first; a check
/// with more than [`RESULTS_HELD_MAX`] there is left out.
fn read_results(
    tx: &mut PreparedTx<'_, '_>,
    wanted: &[(i64, i64, i64)],
) -> Result<HashMap<i64, Vec<RunResult>>, StoreError> {
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let (ids, froms, untils) = columns3(wanted);
    let limit = RESULTS_HELD_MAX + 1;
    let rows = tx.query_typed(
        "SELECT w.c, r.ts_ms, r.status, r.interval_ms
           FROM unnest($1, $2, $3) AS w(c, f, u) CROSS JOIN LATERAL (
                SELECT ts_ms, status, interval_ms FROM check_results
                 WHERE check_id = w.c AND ts_ms >= w.f AND ts_ms <= w.u
                 ORDER BY ts_ms LIMIT $4) r",
        &[
            (&ids, Type::INT8_ARRAY),
            (&froms, Type::INT8_ARRAY),
            (&untils, Type::INT8_ARRAY),
            (&limit, Type::INT8),
        ],
    )?;
    let mut held: HashMap<i64, Vec<RunResult>> = ids.iter().map(|&id| (id, Vec::new())).collect();
    for r in &rows {
        if let Some(results) = held.get_mut(&r.get::<_, i64>(0)) {
            results.push((
                r.get(1),
                u8::try_from(r.get::<_, i16>(2)).unwrap_or(0),
                r.get(3),
            ));
        }
    }
    let max = usize::try_from(RESULTS_HELD_MAX).unwrap_or(usize::MAX);
    held.retain(|_, results| results.len() <= max);
    for results in held.values_mut() {
        results.sort_unstable_by_key(|r| r.0);
    }
    Ok(held)
}

/// Writes what the repairs changed: the deletions, then the runs written, then the checks'
/// open runs and usual intervals.
fn write_changes(
    tx: &mut PreparedTx<'_, '_>,
    changes: &[(i64, Changes)],
) -> Result<(), StoreError> {
    let deleted: Vec<(i64, i64, i64)> = changes
        .iter()
        .flat_map(|(id, c)| c.deleted.iter().map(|&(f, u)| (*id, f, u)))
        .collect();
    if !deleted.is_empty() {
        let (ids, froms, untils) = columns3(&deleted);
        tx.query_typed(
            "DELETE FROM status_intervals s USING unnest($1, $2, $3) AS w(c, f, u)
              WHERE s.check_id = w.c AND s.start_ms >= w.f AND s.start_ms < w.u",
            &[
                (&ids, Type::INT8_ARRAY),
                (&froms, Type::INT8_ARRAY),
                (&untils, Type::INT8_ARRAY),
            ],
        )?;
    }
    let written: Vec<(i64, Run)> = changes
        .iter()
        .flat_map(|(id, c)| c.written.iter().map(|r| (*id, *r)))
        .collect();
    if !written.is_empty() {
        let ids: Vec<i64> = written.iter().map(|w| w.0).collect();
        let starts: Vec<i64> = written.iter().map(|w| w.1.start).collect();
        let ends: Vec<i64> = written.iter().map(|w| w.1.end).collect();
        let statuses: Vec<i16> = written.iter().map(|w| i16::from(w.1.status)).collect();
        let results: Vec<i64> = written.iter().map(|w| w.1.results).collect();
        tx.query_typed(
            "INSERT INTO status_intervals (check_id, start_ms, end_ms, status, results)
             SELECT * FROM unnest($1, $2, $3, $4, $5)
             ON CONFLICT (check_id, start_ms) DO UPDATE SET end_ms = excluded.end_ms,
                status = excluded.status, results = excluded.results",
            &[
                (&ids, Type::INT8_ARRAY),
                (&starts, Type::INT8_ARRAY),
                (&ends, Type::INT8_ARRAY),
                (&statuses, Type::INT2_ARRAY),
                (&results, Type::INT8_ARRAY),
            ],
        )?;
    }
    let opened: Vec<(i64, Option<Run>, Option<i64>)> = changes
        .iter()
        .filter_map(|(id, c)| c.open.map(|(open, usual)| (*id, open, usual)))
        .collect();
    if !opened.is_empty() {
        let ids: Vec<i64> = opened.iter().map(|o| o.0).collect();
        let starts: Vec<Option<i64>> = opened.iter().map(|o| o.1.map(|r| r.start)).collect();
        let ends: Vec<Option<i64>> = opened.iter().map(|o| o.1.map(|r| r.end)).collect();
        let statuses: Vec<Option<i16>> = opened
            .iter()
            .map(|o| o.1.map(|r| i16::from(r.status)))
            .collect();
        let results: Vec<Option<i64>> = opened.iter().map(|o| o.1.map(|r| r.results)).collect();
        let usual: Vec<Option<i64>> = opened.iter().map(|o| o.2).collect();
        tx.query_typed(
            "UPDATE checks c SET run_start_ms = w.s, run_end_ms = w.e, run_status = w.st,
                    run_results = w.r, usual_interval_ms = w.u
               FROM unnest($1, $2, $3, $4, $5, $6) AS w(id, s, e, st, r, u)
              WHERE c.id = w.id",
            &[
                (&ids, Type::INT8_ARRAY),
                (&starts, Type::INT8_ARRAY),
                (&ends, Type::INT8_ARRAY),
                (&statuses, Type::INT2_ARRAY),
                (&results, Type::INT8_ARRAY),
                (&usual, Type::INT8_ARRAY),
            ],
        )?;
    }
    Ok(())
}

/// The three columns of a list of triples.
fn columns3(rows: &[(i64, i64, i64)]) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    (
        rows.iter().map(|r| r.0).collect(),
        rows.iter().map(|r| r.1).collect(),
        rows.iter().map(|r| r.2).collect(),
    )
}
