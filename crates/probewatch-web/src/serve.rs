//! The HTTP server's accept loop, written out instead of `axum::serve` because that offers no
//! header-read timeout and no connection cap: 500 half-open requests once held the server for
//! over a minute, and at the open-files limit `accept()` failed in a tight loop while
//! `/healthz` timed out. Here:
//! - a request's headers must arrive within [`ServeLimits::header_read_timeout`];
//! - at most [`ServeLimits::max_connections`] connections are served at once (the rest wait in
//!   the kernel's backlog, as Prometheus's `web.max-connections` does);
//! - accept errors (EMFILE, ENFILE, ENOBUFS) back off instead of spinning;
//! - on shutdown, open connections finish their requests within
//!   [`ServeLimits::shutdown_grace`], then are dropped.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::AppState;

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time open requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves the router on `listener` until `shutdown` completes, then lets open requests finish
/// within the grace period. Fails only when the listener itself fails for good.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let queries = state.queries.clone();
    let service = TowerToHyperService::new(crate::router(state));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    let mut accept_errors = 0u32;
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    accept_errors = 0;
                    conn
                }
                Err(err) if is_transient(&err) => {
                    // Out of file descriptors or buffers: wait for some to be freed rather
                    // than spin; say so once per burst.
                    if accept_errors == 0 {
                        tracing::error!(error = %err, "cannot accept HTTP connections; backing off");
                    }
                    accept_errors = accept_errors.saturating_add(1);
                    let pause = Duration::from_millis(50 << accept_errors.min(5));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut shutdown => break,
                    }
                    continue;
                }
                Err(err) if is_per_connection(&err) => continue,
                Err(err) => return Err(err),
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    queries.close();
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP requests still open after {:?}; closing them",
            limits.shutdown_grace
        );
    }
    Ok(())
}

/// Errors that pass when file descriptors or buffers are freed.
fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Errors about one connection that was aborted before it was accepted.
fn is_per_connection(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) || matches!(
        err.raw_os_error(),
        Some(libc::EPROTO | libc::EPERM | libc::ENETDOWN)
    )
}
