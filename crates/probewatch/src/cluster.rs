//! This server's place among servers sharing one store: it sends heartbeats and competes
//! for the rule evaluator's lease (`ClusterStore`), so exactly one server evaluates rules.
//!
//! The lease is renewed every third of its length. What this process believes about it is
//! conservative: it counts as leader until the time the last successful renewal was *sent*
//! plus the lease length, minus a safety margin — so it steps down before the database
//! could hand the lease to another server, even when it cannot reach the database to learn
//! that. The store fences alert-state writes by the lease's epoch besides, so a server that
//! was paused past its lease (and does not know it yet) writes nothing.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use probewatch_store::{InstanceBeat, Store};

use crate::shutdown::Shutdown;

/// Whether this server evaluates the rules now.
#[derive(Debug)]
pub struct Leadership {
    /// This process's id in the cluster.
    pub id: String,
    /// Until when this process may act as leader (`None`: it does not lead).
    until: Mutex<Option<Instant>>,
    /// The epoch of the lease held, or 0.
    epoch: AtomicI64,
    /// This server gave the lease up because it is stopping (not lost it to another).
    released: AtomicBool,
}

impl Leadership {
    /// A process that leads for good (tests and tools without a lease).
    pub fn always(id: &str) -> Arc<Leadership> {
        Arc::new(Leadership {
            id: id.to_string(),
            until: Mutex::new(Some(
                Instant::now() + Duration::from_secs(100 * 365 * 86_400),
            )),
            epoch: AtomicI64::new(1),
            released: AtomicBool::new(false),
        })
    }

    /// Whether this server gave the lease up because it is stopping.
    pub fn released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// Whether this process holds the lease now.
    pub fn is_leader(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether this process's term ran out without a renewal it could confirm (the store
    /// did not answer in time), as opposed to another server holding the lease.
    pub fn lapsed(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() >= until)
    }

    /// The epoch of the lease held (0 when none).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// A process id unique in the cluster: host, pid, start time.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{host}:{}:{started:x}", std::process::id())
}

/// Starts `pw-lease`: heartbeats and the lease, every third of `lease`; on stop it gives the
/// lease up so another server takes over at once.
pub fn start(
    store: Arc<dyn Store>,
    beat: InstanceBeat,
    lease: Duration,
    shutdown: Shutdown,
) -> std::io::Result<(Arc<Leadership>, std::thread::JoinHandle<()>)> {
    let leadership = Arc::new(Leadership {
        id: beat.id.clone(),
        until: Mutex::new(None),
        epoch: AtomicI64::new(0),
        released: AtomicBool::new(false),
    });
    let shared = leadership.clone();
    let period = (lease / 3).max(Duration::from_millis(100));
    // Renewal round trips and clock-rate differences: step down this much early.
    let margin = (lease / 5).max(Duration::from_millis(50));
    let ttl_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let handle = std::thread::Builder::new()
        .name("pw-lease".into())
        .spawn(move || {
            // What this thread last announced, so each change is logged once.
            let mut leading = false;
            while !shutdown.is_triggered() {
                if let Err(err) = store.heartbeat(&beat) {
                    tracing::warn!(error = %err, "heartbeat failed");
                }
                let sent = Instant::now();
                match store.acquire_lease(&beat.id, ttl_ms) {
                    Ok(Some(epoch)) => {
                        *shared.until.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(sent + lease.saturating_sub(margin));
                        let before = shared.epoch.swap(epoch, Ordering::SeqCst);
                        if !leading || before != epoch {
                            tracing::info!(epoch, "this server now evaluates the rules");
                        }
                        leading = true;
                    }
                    Ok(None) => {
                        *shared.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        shared.epoch.store(0, Ordering::SeqCst);
                        if leading {
                            tracing::warn!("another server took over rule evaluation");
                        }
                        leading = false;
                    }
                    Err(err) => {
                        // Keep what we had: it runs out by itself before the lease does.
                        tracing::warn!(error = %err,
                            "renewing the rule evaluator's lease failed");
                    }
                }
                if leading && !shared.is_leader() {
                    tracing::warn!("stepping down: the lease could not be renewed in time");
                    leading = false;
                }
                shutdown.sleep(period);
            }
            if shared.is_leader() {
                shared.released.store(true, Ordering::SeqCst);
                *shared.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if let Err(err) = store.release_lease(&beat.id) {
                    tracing::warn!(error = %err, "giving the lease up failed; it lapses");
                }
            }
        })?;
    Ok((leadership, handle))
}
