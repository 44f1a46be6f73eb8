//! Checks on PostgreSQL: latest state, status intervals and history.

use super::intervals::{dirty, repair_dirty, run};
use super::{PgStore, PreparedTx};
use crate::model::*;
use crate::{CheckStore, StoreError};
use postgres::types::Type;

/// The columns [`map_check`] reads, in its order (a macro, so that statements built with it
/// are text the connection can keep prepared).
macro_rules! check_columns {
    () => {
        "probe, host, name, last_status, last_ts_ms, last_duration, last_message, \
         interval_ms, usual_interval_ms, id, \
         CASE WHEN run_status = last_status THEN run_start_ms END"
    };
}

fn map_check(r: &postgres::Row) -> CheckRow {
    CheckRow {
        probe: r.get(0),
        host: r.get(1),
        check: r.get(2),
        status: u8::try_from(r.get::<_, i16>(3)).unwrap_or(0),
        time_ms: r.get(4),
        duration_seconds: r.get(5),
        message: r.get(6),
        interval_ms: r.get(7),
        usual_interval_ms: r.get(8),
        id: r.get(9),
        status_since_ms: r.get(10),
    }
}

impl CheckStore for PgStore {
    fn latest_checks(&self) -> Result<Vec<CheckRow>, StoreError> {
        // Ordered here, by bytes as SQLite orders them: the server sorting every check
        // spilled to disk at 100,000 checks, and its order would follow the database's
        // collation.
        let mut rows: Vec<CheckRow> = self
            .client()?
            .query(concat!("SELECT ", check_columns!(), " FROM checks"), &[])?
            .iter()
            .map(map_check)
            .collect();
        rows.sort_unstable_by(|a, b| {
            (a.probe.as_str(), a.host.as_str(), a.check.as_str()).cmp(&(
                b.probe.as_str(),
                b.host.as_str(),
                b.check.as_str(),
            ))
        });
        Ok(rows)
    }

    fn checks_after(&self, after_id: i64, limit: usize) -> Result<Vec<CheckRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .client()?
            .query(
                concat!(
                    "SELECT ",
                    check_columns!(),
                    " FROM checks WHERE id > $1 ORDER BY id LIMIT $2"
                ),
                &[&after_id, &limit],
            )?
            .iter()
            .map(map_check)
            .collect())
    }

    fn find_check(
        &self,
        probe: &str,
        host: &str,
        name: &str,
    ) -> Result<Option<CheckRow>, StoreError> {
        Ok(self
            .client()?
            .query_opt(
                concat!(
                    "SELECT ",
                    check_columns!(),
                    " FROM checks WHERE probe = $1 AND host = $2 AND name = $3"
                ),
                &[&probe, &host, &name],
            )?
            .map(|r| map_check(&r)))
    }

    fn check_intervals(
        &self,
        check_ids: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Vec<StatusInterval>>, StoreError> {
        let mut client = self.client()?;
        // Every check's runs in one statement (one snapshot, one round trip): the closed runs
        // overlapping the range (disjoint per check, so overlap is these two bounds), each
        // check's open run from its row, and (as `open` 2) the checks whose runs wait for a
        // repair after late results. Those are repaired now (a short write) and the runs read
        // again, so a read never shows runs that miss a stored result; the usual case, none
        // waiting, is the one statement. Unordered: the server's sort of the ~7,000 runs of
        // an overview page (200 checks, 24 h) took 2 of its 5 ms; each check's few runs are
        // put in order here.
        let mut repaired = false;
        let rows = loop {
            // The first column says what a row is: see `WAITING_FOR_REPAIR`.
            let rows = client.query_typed(
                "SELECT 2 AS kind, check_id, 0::int8, 0::int8, 0::int2, 0::int8
                   FROM intervals_dirty WHERE check_id = ANY($1)
                 UNION ALL
                 SELECT 0, check_id, start_ms, end_ms, status, results FROM status_intervals
                  WHERE check_id = ANY($1) AND start_ms <= $3 AND end_ms >= $2
                 UNION ALL
                 SELECT 1, id, run_start_ms, run_end_ms, run_status, run_results FROM checks
                  WHERE id = ANY($1) AND run_start_ms <= $3 AND run_end_ms >= $2",
                &[
                    (&check_ids, Type::INT8_ARRAY),
                    (&from_ms, Type::INT8),
                    (&to_ms, Type::INT8),
                ],
            )?;
            let mut waiting: Vec<i64> = rows
                .iter()
                .filter(|r| r.get::<_, i32>(0) == WAITING_FOR_REPAIR)
                .map(|r| r.get(1))
                .collect();
            if waiting.is_empty() || repaired {
                break rows;
            }
            waiting.sort_unstable();
            let (conn, statements) = client.parts();
            let mut tx = conn.transaction()?;
            lock_checks(&mut tx, &waiting)?;
            repair_dirty(&mut PreparedTx::new(&mut tx, statements), &waiting)?;
            tx.commit()?;
            repaired = true;
        };
        let mut by_check: std::collections::HashMap<i64, Vec<(i32, StatusInterval)>> =
            std::collections::HashMap::new();
        for r in &rows {
            let kind: i32 = r.get(0);
            // Marked for repair again since (another server's late results): shown as read.
            if kind == WAITING_FOR_REPAIR {
                continue;
            }
            by_check
                .entry(r.get(1))
                .or_default()
                .push((kind, StatusInterval::from(run(r, 2))));
        }
        // Closed runs (0) by start, then the open one (1).
        for runs in by_check.values_mut() {
            runs.sort_unstable_by_key(|(kind, run)| (*kind, run.start_ms));
        }
        Ok(check_ids
            .iter()
            .map(|id| {
                by_check
                    .get(id)
                    .map(|runs| runs.iter().map(|(_, run)| *run).collect())
                    .unwrap_or_default()
            })
            .collect())
    }

    fn repair_intervals(&self, max_checks: usize) -> Result<bool, StoreError> {
        let mut client = self.client()?;
        // The usual case, nothing to repair, costs one read and no transaction.
        if dirty(&mut **client, 1)?.is_empty() {
            return Ok(false);
        }
        let (conn, statements) = client.parts();
        let mut tx = conn.transaction()?;
        let ids = dirty(
            &mut tx,
            i64::try_from(max_checks.max(1)).unwrap_or(i64::MAX),
        )?;
        lock_checks(&mut tx, &ids)?;
        repair_dirty(&mut PreparedTx::new(&mut tx, statements), &ids)?;
        let more = !dirty(&mut tx, 1)?.is_empty();
        tx.commit()?;
        Ok(more)
    }

    fn check_history(&self, query: &HistoryQuery) -> Result<Vec<CheckHistoryRow>, StoreError> {
        let (direction, order) = crate::history_order(query);
        Ok(self
            .client()?
            .query_typed(
                // Each host's check reads at most `limit` results from its primary key
                // (backwards for newest first), then they are merged: never a sort of every
                // result of a long-lived check. Typed, one round trip; not kept prepared, as
                // a plan for all time ranges could read a whole partition.
                &format!(
                    "SELECT c.host, r.ts_ms, r.status, r.duration, r.message
                     FROM checks c CROSS JOIN LATERAL (
                        SELECT ts_ms, status, duration, message FROM check_results
                        WHERE check_id = c.id AND ts_ms BETWEEN $4 AND $5
                        ORDER BY ts_ms {direction} LIMIT $6) r
                     WHERE c.probe = $1 AND c.name = $2 AND ($3::text IS NULL OR c.host = $3)
                     ORDER BY {order} LIMIT $6"
                ),
                &[
                    (&query.probe, Type::TEXT),
                    (&query.check, Type::TEXT),
                    (&query.host, Type::TEXT),
                    (&query.from_ms, Type::INT8),
                    (&query.to_ms, Type::INT8),
                    (&i64::try_from(query.limit).unwrap_or(i64::MAX), Type::INT8),
                ],
            )?
            .iter()
            .map(|r| CheckHistoryRow {
                host: r.get(0),
                time_ms: r.get(1),
                status: u8::try_from(r.get::<_, i16>(2)).unwrap_or(0),
                duration_seconds: r.get(3),
                message: r.get(4),
            })
            .collect())
    }
}

/// Locks the checks' rows for the rest of the transaction, in id order (so two servers never
/// deadlock): a repair and an ingest batch of the same check then run one after the other.
pub(super) fn lock_checks(
    tx: &mut postgres::Transaction<'_>,
    ids: &[i64],
) -> Result<(), StoreError> {
    tx.execute(
        "SELECT 1 FROM checks WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )?;
    Ok(())
}

/// The first column of `check_intervals`' runs statement for a check whose runs wait for a
/// repair after late results (a row of `intervals_dirty`). Its other rows are runs: 0 for a
/// closed one (`status_intervals`), 1 for a check's open one (its `checks` row), which sorts
/// after its closed ones.
const WAITING_FOR_REPAIR: i32 = 2;
