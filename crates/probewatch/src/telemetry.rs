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
/// Text lines go through [`EscapingStderr`], so text from outside (file names, probe
/// messages) cannot break a line or forge one.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(ansi)
            .with_writer(move || EscapingStderr { ansi })
            .try_init(),
        LogFormat::Json => builder
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .try_init(),
    };
}

/// Writes one formatted log line to stderr with every control character but the final
/// newline escaped (`\n`, `\r`, `\x1b`…): a file named `a\nERROR forged` stays on its
/// line. ANSI colour sequences the formatter itself adds are kept when `ansi` is on.
/// `tracing-subscriber` hands each event to the writer in one `write` of the whole line.
#[derive(Debug)]
pub struct EscapingStderr {
    ansi: bool,
}

impl std::io::Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let escaped = escape_log_line(buf, self.ansi);
        std::io::Write::write_all(&mut std::io::stderr().lock(), &escaped)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut std::io::stderr())
    }
}

/// [`EscapingStderr`]'s escaping, kept apart for tests.
pub fn escape_log_line(buf: &[u8], keep_ansi_colours: bool) -> Vec<u8> {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let mut out = Vec::with_capacity(buf.len() + 8);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        // An SGR colour sequence: ESC [ digits/semicolons m
        if keep_ansi_colours && b == 0x1b && body.get(i + 1) == Some(&b'[') {
            let end = body[i + 2..]
                .iter()
                .position(|c| !(c.is_ascii_digit() || *c == b';'))
                .map(|p| i + 2 + p);
            if let Some(end) = end
                && body[end] == b'm'
            {
                out.extend_from_slice(&body[i..=end]);
                i = end + 1;
                continue;
            }
        }
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b'\t'),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
        i += 1;
    }
    if body.len() < buf.len() {
        out.push(b'\n');
    }
    out
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
    /// Files that could not be opened or read (permissions, too many open files, a path too
    /// long); each counted once, retried with backoff until read or gone.
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
    /// Store operations that failed, by operation.
    pub store_errors: Family<OpLabel, Counter>,
}

/// Labels of the store error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// What failed: `commit`, `compact`, `repair_intervals`, `check_files`, `prune`.
    pub op: &'static str,
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
            store_errors: Family::default(),
        });
        for op in [
            "commit",
            "compact",
            "repair_intervals",
            "check_files",
            "prune",
        ] {
            drop(metrics.store_errors.get_or_create(&OpLabel { op }));
        }
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
            "Result files that could not be opened or read (counted once each); each is tried \
             again with backoff until it is read or gone, and listed meanwhile in \
             /api/v1/files?status=unreadable and on /ingest",
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
        registry.register(
            "store_errors",
            "Store operations that failed, by operation (commits are retried; see /-/ready)",
            metrics.store_errors.clone(),
        );
        registry.register_collector(Box::new(WatchCollector(watch)));
        (metrics, registry)
    }

    /// Counts a failed store operation.
    pub fn store_error(&self, op: &'static str) {
        self.store_errors.get_or_create(&OpLabel { op }).inc();
    }
}

/// The notification outbox as `/metrics` shows it, read from the store at each scrape: per
/// receiver, notifications waiting to be delivered (retries included) and the age of the
/// oldest, so a Prometheus watching probewatch can alert when a receiver is stuck; and the
/// delivery attempts and failures per receiver since the start.
struct OutboxCollector {
    store: Arc<dyn probewatch_store::Store>,
    deliveries: Arc<probewatch_alerting::notify::DeliveryCounts>,
}

/// Most waiting notifications one scrape reads.
const OUTBOX_SCRAPE_LIMIT: usize = 10_000;

impl std::fmt::Debug for OutboxCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboxCollector")
    }
}

use probewatch_alerting::notify::ReceiverCounts;

/// Reads one of a receiver's counts.
type CountOf = fn(&ReceiverCounts) -> u64;

impl Collector for OutboxCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let deliveries = self.deliveries.snapshot();
        let counters: [(&str, &str, CountOf); 2] = [
            (
                "notifications",
                "Delivery attempts per receiver (each try, re-send to an Alertmanager and test)",
                |c| c.attempts,
            ),
            (
                "notifications_failed",
                "Delivery attempts that failed per receiver, retried or not",
                |c| c.failed,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (receiver, counts) in &deliveries {
                let labels = [("receiver", receiver.as_str())];
                ConstCounter::new(value(counts)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut seconds = encoder.encode_descriptor(
            "notification_attempt_seconds",
            "Time spent in delivery attempts per receiver (divided by the attempts' rate: the \
             mean attempt)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (receiver, counts) in &deliveries {
            let labels = [("receiver", receiver.as_str())];
            ConstCounter::new(counts.seconds).encode(seconds.encode_family(&labels)?)?;
        }
        // Everything not delivered and not failed for good, whenever its next attempt is.
        let Ok(waiting) = self
            .store
            .due_notifications(None, i64::MAX, OUTBOX_SCRAPE_LIMIT)
        else {
            return Ok(());
        };
        let now = crate::ingest::now_ms();
        let mut per_receiver: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
        for n in &waiting {
            let entry = per_receiver
                .entry(n.receiver.as_str())
                .or_insert((0, n.created_at_ms));
            entry.0 += 1;
            entry.1 = entry.1.min(n.created_at_ms);
        }
        let mut queued = encoder.encode_descriptor(
            "notifications_queued",
            "Notifications waiting to be delivered (retries included), per receiver",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (receiver, (count, _)) in &per_receiver {
            let labels = [("receiver", *receiver)];
            let metric = queued.encode_family(&labels)?;
            ConstGauge::new(*count).encode(metric)?;
        }
        let mut oldest = encoder.encode_descriptor(
            "notifications_oldest_queued_age_seconds",
            "Age of the oldest notification waiting to be delivered, per receiver",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (receiver, (_, since)) in &per_receiver {
            let labels = [("receiver", *receiver)];
            let metric = oldest.encode_family(&labels)?;
            ConstGauge::new((now - since).max(0) as f64 / 1000.0).encode(metric)?;
        }
        Ok(())
    }
}

/// Registers the outbox's gauges (read from `store` at each scrape) and the delivery
/// counters per receiver.
pub fn register_outbox(
    registry: &mut Registry,
    store: Arc<dyn probewatch_store::Store>,
    deliveries: Arc<probewatch_alerting::notify::DeliveryCounts>,
) {
    registry.register_collector(Box::new(OutboxCollector { store, deliveries }));
}

/// `rule_group="<file>;<group>"`, as Prometheus labels its rule group metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleGroupLabel {
    /// The group's file and name.
    pub rule_group: String,
}

/// How rule evaluation goes, per group, under Prometheus's names (with our prefix).
#[derive(Debug, Default)]
pub struct RuleMetrics {
    /// Evaluations of the group.
    pub evaluations: Family<RuleGroupLabel, Counter>,
    /// Rule evaluations that failed.
    pub failures: Family<RuleGroupLabel, Counter>,
    /// How long the group's last evaluation took.
    pub last_duration: Family<
        RuleGroupLabel,
        prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    >,
    /// When the group was last evaluated (Unix seconds).
    pub last_evaluation: Family<
        RuleGroupLabel,
        prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    >,
}

impl RuleMetrics {
    /// The metrics, registered.
    pub fn register(registry: &mut Registry) -> Arc<RuleMetrics> {
        let m = Arc::new(RuleMetrics::default());
        registry.register(
            "rule_group_evaluations",
            "Evaluations of a rule group",
            m.evaluations.clone(),
        );
        registry.register(
            "rule_evaluation_failures",
            "Rule evaluations that failed, per group",
            m.failures.clone(),
        );
        registry.register(
            "rule_group_last_duration_seconds",
            "How long the group's last evaluation took",
            m.last_duration.clone(),
        );
        registry.register(
            "rule_group_last_evaluation_timestamp_seconds",
            "When the group was last evaluated",
            m.last_evaluation.clone(),
        );
        m
    }
}

/// Registers the ingest pipeline's state gauges: files reported but not yet handled, and how
/// long the oldest file in hand has waited.
pub fn register_ingest_state(
    registry: &mut Registry,
    watch: Arc<WatchCounters>,
    handled: Arc<std::sync::atomic::AtomicU64>,
    health: Arc<crate::health::IngestHealth>,
) {
    registry.register_collector(Box::new(IngestStateCollector {
        watch,
        handled,
        health,
    }));
}

#[derive(Debug)]
struct IngestStateCollector {
    watch: Arc<WatchCounters>,
    handled: Arc<std::sync::atomic::AtomicU64>,
    health: Arc<crate::health::IngestHealth>,
}

impl Collector for IngestStateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let backlog = self
            .watch
            .files_ready
            .load(Ordering::Relaxed)
            .saturating_sub(self.handled.load(Ordering::Relaxed));
        let backlog = ConstGauge::new(i64::try_from(backlog).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "ingest_backlog_files",
            "Files reported ready and not yet committed or skipped",
            None,
            backlog.metric_type(),
        )?;
        backlog.encode(metric)?;
        let waited = ConstGauge::new(
            self.health
                .oldest_waiting()
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        let metric = encoder.encode_descriptor(
            "ingest_oldest_waiting_seconds",
            "How long the oldest file being prepared or committed has waited since it was \
             reported (0 when none is)",
            None,
            waited.metric_type(),
        )?;
        waited.encode(metric)?;
        Ok(())
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
                "File events dropped because the ingest queue was full and too many files \
                 were waiting for it (a rescan follows)",
                &c.queue_full,
            ),
            ("inotify_events", "inotify events read", &c.events),
            (
                "files_ready",
                "Files reported ready by the watcher",
                &c.files_ready,
            ),
            (
                "spool_rewatches",
                "Spool directories deleted, moved or replaced and watched again when back",
                &c.spool_rewatches,
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
        let unwatched = ConstGauge::new(
            i64::try_from(c.unwatched_dirs.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        let metric = encoder.encode_descriptor(
            "unwatched_directories",
            "Directories the inotify watch limit left unwatched; they are polled instead",
            None,
            unwatched.metric_type(),
        )?;
        unwatched.encode(metric)?;
        let waiting = ConstGauge::new(
            i64::try_from(c.queue_waiting.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        let metric = encoder.encode_descriptor(
            "ingest_queue_waiting_files",
            "Files the inotify reader holds until the ingest queue has room",
            None,
            waiting.metric_type(),
        )?;
        waiting.encode(metric)?;
        let problems = ConstGauge::new(i64::try_from(c.problems().len()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "spools_not_watched",
            "Spools whose directory is missing or refused (see /-/ready)",
            None,
            problems.metric_type(),
        )?;
        problems.encode(metric)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_break_or_forge_a_line() {
        let line = b"WARN rejected /spool/a\nERROR forged: x\r\x1b[2Jy\x07.xml\n";
        let out = String::from_utf8(escape_log_line(line, false)).expect("utf-8");
        assert_eq!(
            out,
            "WARN rejected /spool/a\\nERROR forged: x\\r\\x1b[2Jy\\x07.xml\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
        // The formatter's own colours survive when colour is on; a screen-clearing sequence
        // from outside does not.
        let coloured = b"\x1b[32m INFO\x1b[0m file \x1b[2J\n";
        let out = String::from_utf8(escape_log_line(coloured, true)).expect("utf-8");
        assert!(out.starts_with("\x1b[32m INFO\x1b[0m"), "{out:?}");
        assert!(out.contains("\\x1b[2J"), "{out:?}");
    }
}
