//! Several servers on one PostgreSQL database: the rule evaluator's lease (one row, with an
//! epoch, timed by the database's clock so servers' clocks do not matter) and heartbeats.

use super::PgStore;
use crate::model::*;
use crate::{ClusterStore, StoreError};

impl ClusterStore for PgStore {
    fn acquire_lease(&self, holder: &str, ttl_ms: i64) -> Result<Option<i64>, StoreError> {
        // Renewing a lease that still runs keeps its epoch; taking a lapsed or free one (even
        // our own, lapsed: we may have been paused) starts a new epoch.
        let row = self.client()?.query_opt(
            "UPDATE leader_lease SET
                epoch = CASE WHEN holder = $1 AND expires_at > now() THEN epoch ELSE epoch + 1 END,
                holder = $1,
                expires_at = now() + make_interval(secs => $2::float8 / 1000)
             WHERE id = 1 AND (holder = $1 OR holder IS NULL OR expires_at <= now())
             RETURNING epoch",
            &[&holder, &(ttl_ms as f64)],
        )?;
        let epoch: Option<i64> = row.map(|r| r.get(0));
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) =
            epoch.map(|e| (holder.to_string(), e));
        Ok(epoch)
    }

    fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.client()?.execute(
            "UPDATE leader_lease SET holder = NULL, expires_at = '-infinity'
             WHERE id = 1 AND holder = $1",
            &[&holder],
        )?;
        Ok(())
    }

    fn heartbeat(&self, i: &InstanceBeat) -> Result<(), StoreError> {
        self.client()?.execute(
            "INSERT INTO instances (id, address, version, started_at, heartbeat_at)
             VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000), now())
             ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                version = excluded.version, heartbeat_at = now()",
            &[&i.id, &i.address, &i.version, &(i.started_at_ms as f64)],
        )?;
        Ok(())
    }

    fn cluster(&self, within_ms: i64) -> Result<ClusterStatus, StoreError> {
        // Past a century the interval would leave PostgreSQL's timestamp range.
        let within_ms = within_ms.clamp(0, 100 * 365 * 86_400_000);
        let mut client = self.client()?;
        let lease = client.query_one(
            "SELECT holder, epoch,
                CASE WHEN expires_at > now()
                     THEN (extract(epoch FROM expires_at - now()) * 1000)::int8 END
             FROM leader_lease WHERE id = 1",
            &[],
        )?;
        let left: Option<i64> = lease.get(2);
        let instances = client
            .query(
                "SELECT id, address, version,
                    (extract(epoch FROM started_at) * 1000)::int8,
                    (extract(epoch FROM now() - heartbeat_at) * 1000)::int8
                 FROM instances
                 WHERE heartbeat_at > now() - make_interval(secs => $1::float8 / 1000)
                 ORDER BY heartbeat_at DESC",
                &[&(within_ms as f64)],
            )?
            .iter()
            .map(|r| InstanceRow {
                beat: InstanceBeat {
                    id: r.get(0),
                    address: r.get(1),
                    version: r.get(2),
                    started_at_ms: r.get(3),
                },
                heartbeat_age_ms: r.get(4),
            })
            .collect();
        Ok(ClusterStatus {
            backend: "postgresql".into(),
            leader: left.and(lease.get(0)),
            epoch: lease.get(1),
            lease_left_ms: left,
            instances,
        })
    }
}

impl PgStore {
    /// Fails with [`StoreError::Fenced`] unless this store holds the evaluator's lease with
    /// the epoch it last took, and keeps the lease row share-locked for the rest of `tx`: a
    /// server taking the lease over waits until this transaction ends, so an alert-state
    /// write either commits under a valid lease or not at all.
    pub(super) fn check_fence(&self, tx: &mut postgres::Transaction<'_>) -> Result<(), StoreError> {
        let fence = self.fence.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((holder, epoch)) = fence else {
            return Err(StoreError::Fenced(
                "this server does not hold the rule evaluator's lease".into(),
            ));
        };
        let valid = tx
            .query_opt(
                "SELECT 1 FROM leader_lease
                 WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now()
                 FOR SHARE",
                &[&holder, &epoch],
            )?
            .is_some();
        if valid {
            Ok(())
        } else {
            Err(StoreError::Fenced(format!(
                "the rule evaluator's lease (epoch {epoch}) is no longer held by {holder}: \
                 another server leads now, or it lapsed"
            )))
        }
    }
}
