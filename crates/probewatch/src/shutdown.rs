//! One stop signal for the whole daemon, created where signals are handled and passed down
//! to every thread and task (as mini-redis injects its shutdown), so each loop can end
//! promptly: a sleeping thread wakes at once, an async task awaits it, and a retry loop asks
//! how long ago the stop began to decide when to give up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A clonable handle to the daemon's stop signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    stopping: Arc<AtomicBool>,
    /// When the stop began (set once).
    since: Mutex<Option<Instant>>,
    wake: Condvar,
    notify: tokio::sync::Notify,
}

impl Shutdown {
    /// A signal not yet given.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Gives the signal: every waiter wakes. Later calls do nothing more.
    pub fn trigger(&self) {
        let mut since = self.0.since.lock().unwrap_or_else(|e| e.into_inner());
        if since.is_none() {
            *since = Some(Instant::now());
        }
        self.0.stopping.store(true, Ordering::SeqCst);
        self.0.wake.notify_all();
        self.0.notify.notify_waiters();
    }

    /// Whether the signal was given.
    pub fn is_triggered(&self) -> bool {
        self.0.stopping.load(Ordering::SeqCst)
    }

    /// How long ago the signal was given, if it was.
    pub fn elapsed(&self) -> Option<Duration> {
        self.0
            .since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }

    /// Sleeps for `duration` or until the signal; returns whether the signal was given.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut guard = self.0.since.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.is_triggered() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = match self.0.wake.wait_timeout(guard, left) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Completes once the signal is given.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }

    /// The flag that turns true with the signal, for code that polls a flag (query guards,
    /// the alerting threads).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.stopping.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleepers_and_tasks_wake_at_the_signal() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.sleep(Duration::from_millis(10)));
        let sleeper = {
            let s = shutdown.clone();
            std::thread::spawn(move || s.sleep(Duration::from_secs(60)))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let waiter = {
            let s = shutdown.clone();
            std::thread::spawn(move || runtime.block_on(s.wait()))
        };
        let flag = shutdown.flag();
        std::thread::sleep(Duration::from_millis(50));
        assert!(shutdown.elapsed().is_none());
        shutdown.trigger();
        assert!(sleeper.join().expect("sleeper"), "woke early by the signal");
        waiter.join().expect("waiter");
        assert!(flag.load(Ordering::SeqCst));
        assert!(shutdown.elapsed().is_some());
    }
}
