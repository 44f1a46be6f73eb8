//! What the ingest threads tell the rest of the daemon about their health, for `/-/ready`
//! and `/metrics`: whether commits fail, whether ingest stopped for good (the database file
//! was replaced), and how long the oldest file in hand has waited. Written with atomics on
//! the hot path; read on demand.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a file may wait in the pipeline before the daemon counts as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// Shared between the ingest threads (writing) and readiness and metrics (reading).
#[derive(Debug)]
pub struct IngestHealth {
    epoch: Instant,
    /// When the oldest file of the batch being committed was reported (ms after `epoch`,
    /// plus one; 0: no batch in flight).
    committing_since: AtomicU64,
    /// Likewise for the file the prepare thread is reading.
    preparing_since: AtomicU64,
    /// Why the last commit failed; cleared by the next success.
    commit_error: Mutex<Option<String>>,
    /// Why ingest stopped for good (needs a restart), if it did.
    halted: Mutex<Option<String>>,
}

impl Default for IngestHealth {
    fn default() -> IngestHealth {
        IngestHealth {
            epoch: Instant::now(),
            committing_since: AtomicU64::new(0),
            preparing_since: AtomicU64::new(0),
            commit_error: Mutex::new(None),
            halted: Mutex::new(None),
        }
    }
}

impl IngestHealth {
    fn stamp(&self, at: Option<Instant>) -> u64 {
        at.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(self.epoch).as_millis())
                .unwrap_or(u64::MAX - 1)
                + 1
        })
    }

    /// The batch being committed has this oldest file (`None`: the commit ended).
    pub fn committing(&self, oldest: Option<Instant>) {
        self.committing_since
            .store(self.stamp(oldest), Ordering::Relaxed);
    }

    /// The prepare thread is reading a file reported at `seen_at` (`None`: done).
    pub fn preparing(&self, seen_at: Option<Instant>) {
        self.preparing_since
            .store(self.stamp(seen_at), Ordering::Relaxed);
    }

    /// Records the outcome of a commit attempt.
    pub fn commit_result(&self, error: Option<String>) {
        *self.commit_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Ingest stopped for good, for this reason.
    pub fn halt(&self, why: String) {
        *self.halted.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Whether ingest stopped for good.
    pub fn is_halted(&self) -> bool {
        self.halted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// How long the oldest file in the pipeline's hands has waited since it was reported.
    pub fn oldest_waiting(&self) -> Option<Duration> {
        let oldest = [&self.committing_since, &self.preparing_since]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|&stamp| stamp > 0)
            .min()?;
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(now.saturating_sub(oldest - 1)))
    }

    /// Every reason ingest is not working now, for `/-/ready`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = &*self.halted.lock().unwrap_or_else(|e| e.into_inner()) {
            out.push(format!("ingest stopped: {why}; restart probewatch"));
        }
        if let Some(err) = &*self.commit_error.lock().unwrap_or_else(|e| e.into_inner()) {
            out.push(format!("store: commits fail: {err}"));
        }
        if let Some(waited) = self.oldest_waiting()
            && waited >= STALL_AFTER
        {
            out.push(format!(
                "ingest stalled: the oldest file in hand was reported {}s ago",
                waited.as_secs()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_what_is_wrong() {
        let health = IngestHealth::default();
        assert!(health.problems().is_empty());
        assert_eq!(health.oldest_waiting(), None);
        let long_ago = Instant::now().checked_sub(Duration::from_secs(90));
        health.committing(long_ago);
        health.commit_result(Some("disk I/O error".into()));
        let problems = health.problems().join("\n");
        assert!(
            problems.contains("commits fail: disk I/O error"),
            "{problems}"
        );
        // The epoch is now, so a file from before it counts from the epoch.
        assert!(health.oldest_waiting().is_some());
        health.committing(None);
        health.commit_result(None);
        assert!(health.problems().is_empty());
        health.halt("the database file was replaced".into());
        assert!(health.is_halted());
        assert!(health.problems()[0].contains("restart probewatch"));
    }
}
