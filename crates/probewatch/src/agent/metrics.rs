//! The agent's own metrics, served on `/metrics` when it is given a `listen` address: what
//! it queued, what the servers answered, how often delivery failed and why, and how much
//! waits in its outbox. Labels are bounded (answer kinds, failure kinds).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `result="stored" | "duplicate" | "rejected"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// What the server answered for a file.
    pub result: String,
}

/// `kind="retry" | "refused"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    /// `retry`: a connection error, timeout or 5xx; `refused`: the server refused the whole
    /// request (401, 403, 400) and the configuration must change.
    pub kind: String,
}

/// Every metric of the agent.
pub struct AgentMetrics {
    /// Files read from the spools and queued in the outbox.
    pub queued: Counter,
    /// Files the servers answered for, by answer.
    pub delivered: Family<ResultLabel, Counter>,
    /// Requests that failed, by kind.
    pub failures: Family<FailureLabel, Counter>,
    /// Files waiting in the outbox.
    pub outbox_files: Gauge,
    /// Age of the oldest file waiting, in seconds.
    pub outbox_oldest_seconds: Gauge<f64, AtomicU64>,
    /// When a server last answered (Unix seconds).
    pub last_contact: Gauge<f64, AtomicU64>,
}

impl AgentMetrics {
    /// The metrics and the registry that renders them.
    pub fn new() -> (AgentMetrics, Registry) {
        let mut registry = Registry::with_prefix("probewatch_agent");
        let metrics = AgentMetrics {
            queued: Counter::default(),
            delivered: Family::default(),
            failures: Family::default(),
            outbox_files: Gauge::default(),
            outbox_oldest_seconds: Gauge::default(),
            last_contact: Gauge::default(),
        };
        registry.register(
            "files_queued",
            "Files read from the spools and queued in the outbox",
            metrics.queued.clone(),
        );
        registry.register(
            "files_delivered",
            "Files a server answered for: stored, duplicate (stored before) or rejected",
            metrics.delivered.clone(),
        );
        registry.register(
            "delivery_failures",
            "Requests that failed: retry (network, timeout, 5xx) or refused (401/403/400)",
            metrics.failures.clone(),
        );
        registry.register(
            "outbox_files",
            "Files waiting in the outbox",
            metrics.outbox_files.clone(),
        );
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest file waiting in the outbox",
            metrics.outbox_oldest_seconds.clone(),
        );
        registry.register(
            "last_contact_timestamp_seconds",
            "When a server last answered",
            metrics.last_contact.clone(),
        );
        // Present from the start, so a rate() sees the first increase.
        for result in ["stored", "duplicate", "rejected"] {
            let _ = metrics.delivered.get_or_create(&ResultLabel {
                result: result.into(),
            });
        }
        for kind in ["retry", "refused"] {
            let _ = metrics
                .failures
                .get_or_create(&FailureLabel { kind: kind.into() });
        }
        (metrics, registry)
    }

    /// Counts one answer.
    pub fn answered(&self, result: &str) {
        self.delivered
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts one failed request.
    pub fn failed(&self, kind: &str) {
        self.failures
            .get_or_create(&FailureLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Files answered `result` so far.
    pub fn count(&self, result: &str) -> u64 {
        self.delivered
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .get()
    }
}

/// Serves `GET /metrics` and `GET /-/healthy` on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: std::sync::Arc<Registry>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut body, &registry);
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route(
            "/-/healthy",
            get(|| async { "probewatch agent is Healthy.\n" }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}
