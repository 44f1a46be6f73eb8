//! Logs and probewatch's own metrics.
//!
//! Log style: one event per thing that happened, message in lower case, facts as fields
//! (`path`, `spool`, `error`). Metric names follow Prometheus conventions
//! (`probewatch_<what>_<unit>_total`); labels are bounded (spool names and reject kinds, never
//! file paths).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use probewatch_watch::WatchCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::LogFormat;

/// Sets up `tracing`: human-readable lines or JSON, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Labels of per-spool counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpoolLabel {
    /// Spool name.
    pub spool: String,
}

/// Labels of the rejection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Spool name.
    pub spool: String,
    /// Reject kind (`syntax`, `dtd`, …).
    pub reason: String,
}

/// The ingest path's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Files whose results were stored.
    pub files_ingested: Family<SpoolLabel, Counter>,
    /// Files refused.
    pub files_rejected: Family<RejectLabels, Counter>,
    /// Reports of a file version already in the ledger (normal after rescans).
    pub files_duplicate: Family<SpoolLabel, Counter>,
    /// Files that could not be read (permissions, vanished); not in the ledger, retried on
    /// the next event or scan.
    pub files_unreadable: Counter,
    /// Samples written.
    pub samples_written: Counter,
    /// File-ready event to commit, seconds.
    pub ingest_latency: Histogram,
    /// Transactions committed.
    pub batches: Counter,
    /// Failed commits (retried).
    pub commit_errors: Counter,
    /// Files whose after-ingest action (delete/move/quarantine) failed.
    pub after_ingest_errors: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them, with the watcher's counters, in a registry.
    pub fn new(watch: Arc<WatchCounters>) -> (Arc<Metrics>, Registry) {
        let latency_buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let metrics = Arc::new(Metrics {
            files_ingested: Family::default(),
            files_rejected: Family::default(),
            files_duplicate: Family::default(),
            files_unreadable: Counter::default(),
            samples_written: Counter::default(),
            ingest_latency: Histogram::new(latency_buckets),
            batches: Counter::default(),
            commit_errors: Counter::default(),
            after_ingest_errors: Counter::default(),
        });
        let mut registry = Registry::with_prefix("probewatch");
        registry.register(
            "files_ingested",
            "Result files whose results were stored",
            metrics.files_ingested.clone(),
        );
        registry.register(
            "files_rejected",
            "Result files refused, by reason",
            metrics.files_rejected.clone(),
        );
        registry.register(
            "files_duplicate",
            "Reports of a file version already in the ledger (skipped)",
            metrics.files_duplicate.clone(),
        );
        registry.register(
            "files_unreadable",
            "Result files that could not be read (retried later)",
            metrics.files_unreadable.clone(),
        );
        registry.register(
            "samples_written",
            "Samples written",
            metrics.samples_written.clone(),
        );
        registry.register(
            "ingest_latency_seconds",
            "Time from a file-ready event to the commit of its results",
            metrics.ingest_latency.clone(),
        );
        registry.register(
            "batches",
            "Ingest transactions committed",
            metrics.batches.clone(),
        );
        registry.register(
            "commit_errors",
            "Failed ingest commits",
            metrics.commit_errors.clone(),
        );
        registry.register(
            "after_ingest_errors",
            "Files whose delete, move or quarantine after ingest failed",
            metrics.after_ingest_errors.clone(),
        );
        registry.register_collector(Box::new(WatchCollector(watch)));
        (metrics, registry)
    }
}

impl Metrics {
    /// Creates every per-spool series at zero, so dashboards and alerts see
    /// `probewatch_files_rejected_total` before the first rejection.
    pub fn init_spools<'a>(&self, spools: impl IntoIterator<Item = &'a str>) {
        use probewatch_core::RejectKind::*;
        for spool in spools {
            let label = SpoolLabel {
                spool: spool.to_string(),
            };
            drop(self.files_ingested.get_or_create(&label));
            drop(self.files_duplicate.get_or_create(&label));
            for kind in [Empty, TooLarge, Encoding, Syntax, Dtd, Schema, Value, Io] {
                let labels = RejectLabels {
                    spool: spool.to_string(),
                    reason: kind.as_str().to_string(),
                };
                drop(self.files_rejected.get_or_create(&labels));
            }
        }
    }
}

/// Exposes the watcher's atomic counters at scrape time.
#[derive(Debug)]
struct WatchCollector(Arc<WatchCounters>);

impl Collector for WatchCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        let counters = [
            (
                "inotify_overflows",
                "Kernel inotify queue overflows (each triggers a rescan)",
                &c.overflows,
            ),
            ("rescans", "Full rescans of the spools", &c.rescans),
            (
                "ingest_queue_full",
                "File events dropped because the ingest queue was full (a rescan follows)",
                &c.queue_full,
            ),
            ("inotify_events", "inotify events read", &c.events),
            (
                "files_ready",
                "Files reported ready by the watcher",
                &c.files_ready,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let dirs = ConstGauge::new(
            i64::try_from(c.watched_dirs.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        let metric = encoder.encode_descriptor(
            "watched_directories",
            "Directories under inotify watch",
            None,
            dirs.metric_type(),
        )?;
        dirs.encode(metric)?;
        Ok(())
    }
}
