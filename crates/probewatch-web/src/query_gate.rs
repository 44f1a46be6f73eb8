//! Where every PromQL evaluation and series listing that a request asks for runs, under the
//! guards Prometheus has: at most `max_concurrent` at once (the others wait, within their
//! timeout), a deadline that counts the wait, a budget of samples, and cancellation when the
//! client goes away (axum drops the handler's future) or the server stops. Without these one
//! GET could hold the machine's memory and CPU for as long as it liked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use probewatch_promql::{Guard, QueryError};
use probewatch_store::StoreSource;

use crate::AppState;

/// The shared limit on running queries, and the flag that cancels them all at shutdown.
#[derive(Debug)]
pub struct QueryGate {
    slots: Arc<tokio::sync::Semaphore>,
    closed: Arc<AtomicBool>,
}

impl QueryGate {
    /// Lets at most `max_concurrent` queries run at once (at least one).
    pub fn new(max_concurrent: usize) -> QueryGate {
        QueryGate {
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Cancels every running query and refuses new ones: the server is stopping.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.slots.close();
    }
}

/// Sets the flag when dropped: the request's future was dropped (client gone) or finished.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` on the blocking pool with a store-backed source and a guard carrying the
/// request's deadline, sample budget and cancel flags, once a slot is free.
pub(crate) async fn run<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&StoreSource<'_>, Guard) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    let options = state.query_options;
    let gate = state.queries.clone();
    let started = Instant::now();
    let permit = match options.timeout {
        Some(timeout) => tokio::time::timeout(timeout, gate.slots.clone().acquire_owned())
            .await
            .map_err(|_| QueryError::Timeout)?,
        None => gate.slots.clone().acquire_owned().await,
    }
    .map_err(|_| QueryError::Canceled)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let guard = Guard::new(options.max_samples)
        .with_timeout(options.timeout.map(|t| t.saturating_sub(started.elapsed())))
        .with_cancel(cancel)
        .with_cancel(gate.closed.clone());
    let (store, index) = (state.store.clone(), state.index.clone());
    // The slot is held until the evaluation really ends, even when the client has gone and
    // the evaluation is only noticing its cancel flag.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(&StoreSource::new(store.as_ref(), &index), guard)
    })
    .await
    .map_err(|e| QueryError::Storage(format!("query task failed: {e}")))?
}
