//! Alerting on PostgreSQL: rule state, alert history, the notification outbox and silences,
//! as the SQLite back end keeps them.

use postgres::GenericClient;

use super::PgStore;
use crate::model::*;
use crate::{AlertStore, SilenceStore, StoreError};

fn state_from(code: i16) -> AlertState {
    if code == 2 {
        AlertState::Firing
    } else {
        AlertState::Pending
    }
}

/// How long a lane's claim on a notification lasts before another server may send it.
const CLAIM_MS: i64 = 60_000;

/// The columns [`notification`] reads, in its order (a macro, so that statements built
/// with it are text the connection can keep prepared).
macro_rules! notification_columns {
    () => {
        "id, receiver, payload, created_at_ms, attempts, delivered_at_ms, last_error, \
         group_key, failed_at_ms"
    };
}

fn notification(r: &postgres::Row) -> NotificationRow {
    NotificationRow {
        id: r.get(0),
        receiver: r.get(1),
        group_key: r.get(7),
        payload: r.get(2),
        created_at_ms: r.get(3),
        attempts: u32::try_from(r.get::<_, i32>(4)).unwrap_or(u32::MAX),
        delivered_at_ms: r.get(5),
        last_error: r.get(6),
        failed_at_ms: r.get(8),
    }
}

/// A rule key as stored (bytea: it holds NUL separators, which text cannot).
fn rule_key(r: &postgres::Row, at: usize) -> String {
    String::from_utf8_lossy(r.get::<_, &[u8]>(at)).into_owned()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl AlertStore for PgStore {
    fn alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        Ok(self
            .client()?
            .query(
                "SELECT rule_key, labels, state, active_at_ms, fired_at_ms, keep_firing_since_ms,
                    last_sent_ms, value, annotations FROM alerts ORDER BY rule_key, labels",
                &[],
            )?
            .iter()
            .map(|r| AlertRow {
                rule_key: rule_key(r, 0),
                labels: r.get(1),
                state: state_from(r.get(2)),
                active_at_ms: r.get(3),
                fired_at_ms: r.get(4),
                keep_firing_since_ms: r.get(5),
                last_sent_ms: r.get(6),
                value: r.get::<_, Option<f64>>(7).unwrap_or(f64::NAN),
                annotations: r.get(8),
            })
            .collect())
    }

    fn save_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        self.check_fence(&mut tx)?;
        for update in updates {
            tx.execute(
                "DELETE FROM alerts WHERE rule_key = $1",
                &[&update.rule_key.as_bytes()],
            )?;
            for a in &update.alerts {
                tx.execute(
                    "INSERT INTO alerts (rule_key, labels, state, active_at_ms, fired_at_ms,
                        keep_firing_since_ms, last_sent_ms, value, annotations)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &a.rule_key.as_bytes(),
                        &a.labels,
                        &(a.state as i16),
                        &a.active_at_ms,
                        &a.fired_at_ms,
                        &a.keep_firing_since_ms,
                        &a.last_sent_ms,
                        &a.value,
                        &a.annotations,
                    ],
                )?;
            }
            for e in &update.events {
                tx.execute(
                    "INSERT INTO alert_events (rule_key, labels, event, at_ms, value)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &e.rule_key.as_bytes(),
                        &e.labels,
                        &e.event,
                        &e.at_ms,
                        &e.value,
                    ],
                )?;
            }
            for n in &update.notifications {
                // group_wait for a group's first notification, then at most one send per
                // group_interval; notifications due together are delivered as one.
                let last: Option<i64> = tx
                    .query_one(
                        "SELECT max(send_at_ms) FROM notifications
                         WHERE receiver = $1 AND group_key = $2",
                        &[&n.receiver, &n.group_key],
                    )?
                    .get(0);
                let send_at = match last {
                    None => n.created_at_ms + n.group_wait_ms,
                    Some(last) => n.created_at_ms.max(last + n.group_interval_ms),
                };
                tx.execute(
                    "INSERT INTO notifications (receiver, payload, created_at_ms,
                        next_attempt_ms, group_key, send_at_ms) VALUES ($1, $2, $3, $4, $5, $4)",
                    &[
                        &n.receiver,
                        &n.payload,
                        &n.created_at_ms,
                        &send_at,
                        &n.group_key,
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn due_notifications(
        &self,
        receiver: Option<&str>,
        now_ms: i64,
        max: usize,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let mut client = self.client()?;
        let mut rows: Vec<(i64, NotificationRow)> = match receiver {
            // A receiver's lane claims what it will send, for a while: another server's lane
            // skips those rows (SKIP LOCKED while this statement runs, the claim after), so
            // each notification goes out from one server. The claim lapses if this one dies
            // before recording the attempt; delivery is at least once.
            Some(receiver) => client
                .query(
                    concat!(
                        "UPDATE notifications SET claimed_until_ms = $4
                         WHERE id IN (
                            SELECT id FROM notifications
                            WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL
                              AND next_attempt_ms <= $1 AND receiver = $3
                              AND (claimed_until_ms IS NULL OR claimed_until_ms <= $1)
                            ORDER BY next_attempt_ms, id LIMIT $2
                            FOR UPDATE SKIP LOCKED)
                         RETURNING ",
                        notification_columns!(),
                        ", next_attempt_ms"
                    ),
                    &[
                        &now_ms,
                        &limit(max),
                        &receiver,
                        &now_ms.saturating_add(CLAIM_MS),
                    ],
                )?
                .iter()
                .map(|r| (r.get(9), notification(r)))
                .collect(),
            // Without a receiver: a look, not a claim.
            None => client
                .query(
                    concat!(
                        "SELECT ",
                        notification_columns!(),
                        ", next_attempt_ms FROM notifications
                         WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL
                           AND next_attempt_ms <= $1
                         ORDER BY next_attempt_ms, id LIMIT $2"
                    ),
                    &[&now_ms, &limit(max)],
                )?
                .iter()
                .map(|r| (r.get(9), notification(r)))
                .collect(),
        };
        // Oldest due first, as the SQLite back end answers (RETURNING has no order).
        rows.sort_by_key(|(due, n)| (*due, n.id));
        Ok(rows.into_iter().map(|(_, n)| n).collect())
    }

    fn record_attempt(
        &self,
        id: i64,
        at_ms: i64,
        detail: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let ok = outcome == AttemptOutcome::Delivered;
        tx.execute(
            "INSERT INTO notification_attempts (notification_id, at_ms, ok, detail)
             VALUES ($1, $2, $3, $4)",
            &[&id, &at_ms, &ok, &detail],
        )?;
        match outcome {
            AttemptOutcome::Delivered => tx.execute(
                "UPDATE notifications SET attempts = attempts + 1, delivered_at_ms = $2,
                    last_error = NULL, claimed_until_ms = NULL WHERE id = $1",
                &[&id, &at_ms],
            )?,
            AttemptOutcome::RetryAt(retry) => tx.execute(
                "UPDATE notifications SET attempts = attempts + 1, next_attempt_ms = $2,
                    last_error = $3, claimed_until_ms = NULL WHERE id = $1",
                &[&id, &retry, &detail],
            )?,
            AttemptOutcome::Failed => tx.execute(
                "UPDATE notifications SET attempts = attempts + 1, failed_at_ms = $2,
                    last_error = $3, claimed_until_ms = NULL WHERE id = $1",
                &[&id, &at_ms, &detail],
            )?,
        };
        tx.commit()?;
        Ok(())
    }

    fn notifications(&self, max: usize) -> Result<Vec<NotificationRow>, StoreError> {
        Ok(self
            .client()?
            .query(
                concat!(
                    "SELECT ",
                    notification_columns!(),
                    " FROM notifications ORDER BY id DESC LIMIT $1"
                ),
                &[&limit(max)],
            )?
            .iter()
            .map(notification)
            .collect())
    }

    fn alert_events(&self, max: usize) -> Result<Vec<AlertEvent>, StoreError> {
        Ok(self
            .client()?
            .query(
                "SELECT rule_key, labels, event, at_ms, value FROM alert_events
                 ORDER BY id DESC LIMIT $1",
                &[&limit(max)],
            )?
            .iter()
            .map(|r| AlertEvent {
                rule_key: rule_key(r, 0),
                labels: r.get(1),
                event: r.get(2),
                at_ms: r.get(3),
                value: r.get::<_, Option<f64>>(4).unwrap_or(f64::NAN),
            })
            .collect())
    }

    fn attempts(&self, notification_id: i64) -> Result<Vec<AttemptRow>, StoreError> {
        Ok(self
            .client()?
            .query(
                "SELECT at_ms, ok, detail FROM notification_attempts
                 WHERE notification_id = $1 ORDER BY id",
                &[&notification_id],
            )?
            .iter()
            .map(|r| AttemptRow {
                at_ms: r.get(0),
                ok: r.get(1),
                detail: r.get(2),
            })
            .collect())
    }
}

impl SilenceStore for PgStore {
    fn add_silence(&self, s: &SilenceRow) -> Result<i64, StoreError> {
        let matchers = serde_json::to_string(&s.matchers).unwrap_or_else(|_| "[]".into());
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO silences (matchers, starts_at_ms, ends_at_ms, created_by, comment,
                    created_at_ms, acknowledgement) VALUES ($1, $2, $3, $4, $5, $6, $7)
                    RETURNING id",
                &[
                    &matchers,
                    &s.starts_at_ms,
                    &s.ends_at_ms,
                    &s.created_by,
                    &s.comment,
                    &s.created_at_ms,
                    &s.acknowledgement,
                ],
            )?
            .get(0);
        silence_event(&mut tx, id, "created", s.created_at_ms, &s.created_by)?;
        tx.commit()?;
        Ok(id)
    }

    fn expire_silence(&self, id: i64, at_ms: i64, actor: &str) -> Result<bool, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let n = tx.execute(
            "UPDATE silences SET expired_at_ms = $2 WHERE id = $1 AND expired_at_ms IS NULL
             AND ends_at_ms > $2",
            &[&id, &at_ms],
        )?;
        if n > 0 {
            silence_event(&mut tx, id, "expired", at_ms, actor)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    fn silences(&self) -> Result<Vec<SilenceRow>, StoreError> {
        Ok(self
            .client()?
            .query(
                "SELECT id, matchers, starts_at_ms, ends_at_ms, created_by, comment,
                    created_at_ms, expired_at_ms, acknowledgement FROM silences
                    ORDER BY id DESC",
                &[],
            )?
            .iter()
            .map(|r| SilenceRow {
                id: r.get(0),
                matchers: serde_json::from_str(r.get::<_, &str>(1)).unwrap_or_default(),
                starts_at_ms: r.get(2),
                ends_at_ms: r.get(3),
                created_by: r.get(4),
                comment: r.get(5),
                created_at_ms: r.get(6),
                expired_at_ms: r.get(7),
                acknowledgement: r.get(8),
            })
            .collect())
    }
}

fn silence_event(
    tx: &mut impl GenericClient,
    id: i64,
    event: &str,
    at_ms: i64,
    actor: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO silence_events (silence_id, event, at_ms, actor) VALUES ($1, $2, $3, $4)",
        &[&id, &event, &at_ms, &actor],
    )?;
    Ok(())
}
