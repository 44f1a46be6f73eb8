//! Day partitions of the time-ordered tables (`chunks` by their newest sample,
//! `check_results` by time): made a few days ahead, so rows land in their day; dropped
//! whole by retention, which is a catalog change instead of deleting millions of rows.
//!
//! Rows outside the days made (a backfill of last year) go to each table's default
//! partition, whose old rows retention deletes in steps as before. A day is never made for
//! a range the default partition already holds rows of (PostgreSQL would refuse): such a
//! day stays in the default partition.

use postgres::GenericClient;

use crate::StoreError;

/// The partitioned tables and the column they are partitioned by.
const TABLES: [&str; 2] = ["chunks", "check_results"];

/// One day in ms.
pub(super) const DAY_MS: i64 = 86_400_000;

/// Days made ahead of (and behind) today.
const AHEAD: i64 = 2;

/// The start of yesterday, the first day a server makes a partition for: rows older than
/// this (a backfill's) land in the default partition unless a server made their day back
/// then.
pub(super) fn yesterday_ms(now_ms: i64) -> i64 {
    (now_ms.div_euclid(DAY_MS) - 1) * DAY_MS
}

/// Makes the day partitions around `now_ms` that do not exist yet. A day whose rows are
/// already in the default partition is skipped (and logged once here).
pub(super) fn ensure(client: &mut impl GenericClient, now_ms: i64) -> Result<(), StoreError> {
    let today = now_ms.div_euclid(DAY_MS);
    for table in TABLES {
        let existing = days(client, table)?;
        for day in today - 1..=today + AHEAD {
            if existing.contains(&day) {
                continue;
            }
            let (from, to) = (day * DAY_MS, (day + 1) * DAY_MS);
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {table}_d{day} PARTITION OF {table}
                 FOR VALUES FROM ({from}) TO ({to})"
            );
            if let Err(err) = client.batch_execute(&sql) {
                // The default partition holds rows of that day: leave the day there.
                tracing::debug!(table, day, error = %err, "day partition not made");
            }
        }
    }
    Ok(())
}

/// The day numbers of a table's day partitions.
fn days(client: &mut impl GenericClient, table: &str) -> Result<Vec<i64>, StoreError> {
    let prefix = format!("{table}_d");
    Ok(client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::text::regclass",
            &[&table],
        )?
        .iter()
        .filter_map(|r| r.get::<_, String>(0).strip_prefix(&prefix)?.parse().ok())
        .collect())
}

/// Drops the day partitions of `table` wholly older than `cutoff_ms`; returns the rows they
/// held (samples for `chunks`, results for `check_results`), counted before each drop.
pub(super) fn drop_older(
    client: &mut postgres::Client,
    table: &str,
    cutoff_ms: i64,
) -> Result<i64, StoreError> {
    let count = match table {
        "chunks" => "coalesce(sum(samples), 0)::int8",
        _ => "count(*)",
    };
    let mut dropped = 0;
    for day in days(client, table)? {
        if (day + 1) * DAY_MS > cutoff_ms {
            continue;
        }
        let mut tx = client.transaction()?;
        let n: i64 = tx
            .query_one(&format!("SELECT {count} FROM {table}_d{day}"), &[])?
            .get(0);
        tx.batch_execute(&format!("DROP TABLE {table}_d{day}"))?;
        let column = if table == "chunks" {
            "samples"
        } else {
            "check_results"
        };
        tx.execute(
            &format!("UPDATE stats SET {column} = {column} - $1 WHERE id = 1"),
            &[&n],
        )?;
        tx.commit()?;
        dropped += n;
    }
    Ok(dropped)
}
