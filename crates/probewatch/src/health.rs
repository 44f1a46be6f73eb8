//! What the ingest threads tell the rest of the daemon about their health, for `/-/ready`
//! and `/metrics`: whether commits fail, whether ingest stopped for good (the database file
//! was replaced), and how long the oldest file in hand has waited. Written with atomics on
//! the hot path; read on demand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Files that could not be opened or read, retried with backoff.
    unreadable: Mutex<BTreeMap<PathBuf, Unreadable>>,
}

/// A file that could not be opened or read, and when it is tried again.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// Index of its spool.
    pub spool: usize,
    /// Its spool's name.
    pub spool_name: Arc<str>,
    /// Why the last attempt failed.
    pub error: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the first attempt failed (wall clock, ms).
    pub since_ms: i64,
    /// When to try again.
    pub next_at: Instant,
    /// The same, on the wall clock (ms).
    pub next_at_ms: i64,
}

/// Delay before another attempt at an unreadable file: 1 s, doubling, at most 5 minutes.
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

impl Default for IngestHealth {
    fn default() -> IngestHealth {
        IngestHealth {
            epoch: Instant::now(),
            committing_since: AtomicU64::new(0),
            preparing_since: AtomicU64::new(0),
            commit_error: Mutex::new(None),
            halted: Mutex::new(None),
            unreadable: Mutex::new(BTreeMap::new()),
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

    /// Why ingest stopped for good, if it did.
    pub fn halted_reason(&self) -> Option<String> {
        self.halted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

    /// Records a failed attempt at `path`; returns true when it is the file's first.
    pub fn unreadable(
        &self,
        path: PathBuf,
        spool: usize,
        spool_name: Arc<str>,
        error: String,
    ) -> bool {
        let mut files = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        let now_ms = crate::ingest::now_ms();
        let entry = files.entry(path).or_insert_with(|| Unreadable {
            spool,
            spool_name,
            error: String::new(),
            attempts: 0,
            since_ms: now_ms,
            next_at: Instant::now(),
            next_at_ms: now_ms,
        });
        entry.attempts += 1;
        entry.error = error;
        let delay = retry_delay(entry.attempts);
        entry.next_at = Instant::now() + delay;
        entry.next_at_ms = now_ms + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        entry.attempts == 1
    }

    /// `path` was read (or is gone): no more attempts.
    pub fn readable(&self, path: &std::path::Path) {
        let mut files = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        if !files.is_empty() {
            files.remove(path);
        }
    }

    /// The files due for another attempt at `now`, and when the next one after them is.
    pub fn due_retries(&self, now: Instant) -> (Vec<(usize, PathBuf)>, Option<Instant>) {
        let files = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        let due = files
            .iter()
            .filter(|(_, f)| f.next_at <= now)
            .map(|(path, f)| (f.spool, path.clone()))
            .collect();
        let next = files.values().map(|f| f.next_at).filter(|t| *t > now).min();
        (due, next)
    }

    /// Every file waiting for another attempt.
    pub fn unreadable_files(&self) -> Vec<(PathBuf, Unreadable)> {
        self.unreadable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect()
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

/// The daemon's own state for the web side: ingest health and what the watcher cannot see.
pub struct DaemonState {
    /// The ingest pipeline's health.
    pub ingest: Arc<IngestHealth>,
    /// The watcher's counters and problems.
    pub watch: Arc<probewatch_watch::WatchCounters>,
}

impl probewatch_web::DaemonStatus for DaemonState {
    fn problems(&self) -> Vec<String> {
        let mut problems = self.ingest.problems();
        problems.extend(self.watch.problems());
        problems
    }

    fn unreadable_files(&self) -> Vec<probewatch_web::UnreadableFile> {
        self.ingest
            .unreadable_files()
            .into_iter()
            .map(|(path, f)| probewatch_web::UnreadableFile {
                path: path.to_string_lossy().into_owned(),
                spool: f.spool_name.to_string(),
                error: f.error,
                attempts: f.attempts,
                since_ms: f.since_ms,
                next_attempt_ms: f.next_at_ms,
            })
            .collect()
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

    #[test]
    fn unreadable_files_back_off_and_leave_when_read() {
        let health = IngestHealth::default();
        let path = PathBuf::from("/spool/a.xml");
        assert!(health.unreadable(path.clone(), 0, "s".into(), "EACCES".into()));
        assert!(!health.unreadable(path.clone(), 0, "s".into(), "EACCES".into()));
        let (due, next) = health.due_retries(Instant::now());
        assert!(due.is_empty(), "the second failure waits 2 s");
        assert!(next.is_some());
        let (due, _) = health.due_retries(Instant::now() + Duration::from_secs(3));
        assert_eq!(due, [(0, path.clone())]);
        assert_eq!(health.unreadable_files()[0].1.attempts, 2);
        health.readable(&path);
        assert!(health.unreadable_files().is_empty());
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(30), Duration::from_secs(300));
    }
}
