//! SQL for alerting: rule state, alert history and the notification outbox (migration 0004).

use rusqlite::{Connection, params};

use crate::model::*;

fn state_code(state: AlertState) -> i64 {
    state as i64
}

fn state_from(code: i64) -> AlertState {
    if code == 2 {
        AlertState::Firing
    } else {
        AlertState::Pending
    }
}

pub(super) fn alerts(conn: &Connection) -> rusqlite::Result<Vec<AlertRow>> {
    conn.prepare_cached(
        "SELECT rule_key, labels, state, active_at_ms, fired_at_ms, keep_firing_since_ms,
            last_sent_ms, value, annotations FROM alerts ORDER BY rule_key, labels",
    )?
    .query_map([], |r| {
        Ok(AlertRow {
            rule_key: r.get(0)?,
            labels: r.get(1)?,
            state: state_from(r.get(2)?),
            active_at_ms: r.get(3)?,
            fired_at_ms: r.get(4)?,
            keep_firing_since_ms: r.get(5)?,
            last_sent_ms: r.get(6)?,
            value: r.get::<_, Option<f64>>(7)?.unwrap_or(f64::NAN),
            annotations: r.get(8)?,
        })
    })?
    .collect()
}

pub(super) fn save_alerts(tx: &Connection, updates: &[AlertUpdate]) -> rusqlite::Result<()> {
    for update in updates {
        tx.prepare_cached("DELETE FROM alerts WHERE rule_key = ?1")?
            .execute(params![update.rule_key])?;
        for a in &update.alerts {
            tx.prepare_cached(
                "INSERT INTO alerts (rule_key, labels, state, active_at_ms, fired_at_ms,
                    keep_firing_since_ms, last_sent_ms, value, annotations)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                a.rule_key,
                a.labels,
                state_code(a.state),
                a.active_at_ms,
                a.fired_at_ms,
                a.keep_firing_since_ms,
                a.last_sent_ms,
                a.value,
                a.annotations
            ])?;
        }
        for e in &update.events {
            tx.prepare_cached(
                "INSERT INTO alert_events (rule_key, labels, event, at_ms, value)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![e.rule_key, e.labels, e.event, e.at_ms, e.value])?;
        }
        for n in &update.notifications {
            // group_wait for a group's first notification, then at most one send per
            // group_interval; notifications due together are delivered as one.
            let last: Option<i64> = tx
                .prepare_cached(
                    "SELECT max(send_at_ms) FROM notifications WHERE receiver = ?1 AND group_key = ?2",
                )?
                .query_row(params![n.receiver, n.group_key], |r| r.get(0))?;
            let send_at = match last {
                None => n.created_at_ms + n.group_wait_ms,
                Some(last) => n.created_at_ms.max(last + n.group_interval_ms),
            };
            tx.prepare_cached(
                "INSERT INTO notifications (receiver, payload, created_at_ms, next_attempt_ms,
                    group_key, send_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
            )?
            .execute(params![
                n.receiver,
                n.payload,
                n.created_at_ms,
                send_at,
                n.group_key
            ])?;
        }
    }
    Ok(())
}

fn notification(r: &rusqlite::Row<'_>) -> rusqlite::Result<NotificationRow> {
    Ok(NotificationRow {
        id: r.get(0)?,
        receiver: r.get(1)?,
        group_key: r.get(7)?,
        payload: r.get(2)?,
        created_at_ms: r.get(3)?,
        attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
        delivered_at_ms: r.get(5)?,
        last_error: r.get(6)?,
        failed_at_ms: r.get(8)?,
    })
}

pub(super) fn due(
    conn: &Connection,
    receiver: Option<&str>,
    now_ms: i64,
    limit: usize,
) -> rusqlite::Result<Vec<NotificationRow>> {
    const COLUMNS: &str = "SELECT id, receiver, payload, created_at_ms, attempts,
        delivered_at_ms, last_error, group_key, failed_at_ms FROM notifications
        WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL AND next_attempt_ms <= ?1";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    match receiver {
        // One receiver's lane: the partial index (receiver, next_attempt_ms) serves it.
        Some(receiver) => conn
            .prepare_cached(&format!(
                "{COLUMNS} AND receiver = ?3 ORDER BY next_attempt_ms, id LIMIT ?2"
            ))?
            .query_map(params![now_ms, limit, receiver], notification)?
            .collect(),
        None => conn
            .prepare_cached(&format!("{COLUMNS} ORDER BY next_attempt_ms, id LIMIT ?2"))?
            .query_map(params![now_ms, limit], notification)?
            .collect(),
    }
}

pub(super) fn recent(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<NotificationRow>> {
    conn.prepare_cached(
        "SELECT id, receiver, payload, created_at_ms, attempts, delivered_at_ms, last_error,
            group_key, failed_at_ms FROM notifications ORDER BY id DESC LIMIT ?1",
    )?
    .query_map(
        params![i64::try_from(limit).unwrap_or(i64::MAX)],
        notification,
    )?
    .collect()
}

pub(super) fn record_attempt(
    tx: &Connection,
    id: i64,
    at_ms: i64,
    detail: &str,
    outcome: AttemptOutcome,
) -> rusqlite::Result<()> {
    let ok = outcome == AttemptOutcome::Delivered;
    tx.prepare_cached(
        "INSERT INTO notification_attempts (notification_id, at_ms, ok, detail)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, at_ms, ok, detail])?;
    match outcome {
        AttemptOutcome::Delivered => tx
            .prepare_cached(
                "UPDATE notifications SET attempts = attempts + 1, delivered_at_ms = ?2,
                    last_error = NULL WHERE id = ?1",
            )?
            .execute(params![id, at_ms])?,
        AttemptOutcome::RetryAt(retry) => tx
            .prepare_cached(
                "UPDATE notifications SET attempts = attempts + 1, next_attempt_ms = ?2,
                    last_error = ?3 WHERE id = ?1",
            )?
            .execute(params![id, retry, detail])?,
        AttemptOutcome::Failed => tx
            .prepare_cached(
                "UPDATE notifications SET attempts = attempts + 1, failed_at_ms = ?2,
                    last_error = ?3 WHERE id = ?1",
            )?
            .execute(params![id, at_ms, detail])?,
    };
    Ok(())
}

pub(super) fn add_silence(tx: &Connection, s: &SilenceRow) -> rusqlite::Result<i64> {
    let matchers = serde_json::to_string(&s.matchers).unwrap_or_else(|_| "[]".into());
    tx.prepare_cached(
        "INSERT INTO silences (matchers, starts_at_ms, ends_at_ms, created_by, comment,
            created_at_ms, acknowledgement) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        matchers,
        s.starts_at_ms,
        s.ends_at_ms,
        s.created_by,
        s.comment,
        s.created_at_ms,
        s.acknowledgement
    ])?;
    let id = tx.last_insert_rowid();
    tx.prepare_cached(
        "INSERT INTO silence_events (silence_id, event, at_ms, actor) VALUES (?1, 'created', ?2, ?3)",
    )?
    .execute(params![id, s.created_at_ms, s.created_by])?;
    Ok(id)
}

pub(super) fn expire_silence(
    tx: &Connection,
    id: i64,
    at_ms: i64,
    actor: &str,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE silences SET expired_at_ms = ?2 WHERE id = ?1 AND expired_at_ms IS NULL
             AND ends_at_ms > ?2",
        )?
        .execute(params![id, at_ms])?;
    if n > 0 {
        tx.prepare_cached(
            "INSERT INTO silence_events (silence_id, event, at_ms, actor) VALUES (?1, 'expired', ?2, ?3)",
        )?
        .execute(params![id, at_ms, actor])?;
    }
    Ok(n > 0)
}

pub(super) fn silences(conn: &Connection) -> rusqlite::Result<Vec<SilenceRow>> {
    conn.prepare_cached(
        "SELECT id, matchers, starts_at_ms, ends_at_ms, created_by, comment, created_at_ms,
            expired_at_ms, acknowledgement FROM silences ORDER BY id DESC",
    )?
    .query_map([], |r| {
        Ok(SilenceRow {
            id: r.get(0)?,
            matchers: serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or_default(),
            starts_at_ms: r.get(2)?,
            ends_at_ms: r.get(3)?,
            created_by: r.get(4)?,
            comment: r.get(5)?,
            created_at_ms: r.get(6)?,
            expired_at_ms: r.get(7)?,
            acknowledgement: r.get(8)?,
        })
    })?
    .collect()
}

pub(super) fn attempts(conn: &Connection, id: i64) -> rusqlite::Result<Vec<AttemptRow>> {
    conn.prepare_cached(
        "SELECT at_ms, ok, detail FROM notification_attempts WHERE notification_id = ?1
         ORDER BY id",
    )?
    .query_map(params![id], |r| {
        Ok(AttemptRow {
            at_ms: r.get(0)?,
            ok: r.get(1)?,
            detail: r.get(2)?,
        })
    })?
    .collect()
}

pub(super) fn events(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<AlertEvent>> {
    conn.prepare_cached(
        "SELECT rule_key, labels, event, at_ms, value FROM alert_events ORDER BY id DESC
         LIMIT ?1",
    )?
    .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
        Ok(AlertEvent {
            rule_key: r.get(0)?,
            labels: r.get(1)?,
            event: r.get(2)?,
            at_ms: r.get(3)?,
            value: r.get::<_, Option<f64>>(4)?.unwrap_or(f64::NAN),
        })
    })?
    .collect()
}
