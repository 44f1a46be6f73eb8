//! Plain data passed in and out of the [`crate::Store`].

use std::sync::Arc;

use probewatch_core::{ProbeResult, Reject, SeriesSample};

/// What the ledger remembers about the newest version of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHead {
    /// Size in bytes when it was ingested.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Outcome of that version.
    pub outcome: Outcome,
}

/// What happened to a file version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its results are stored.
    Ingested = 1,
    /// It was refused; the reason is in the ledger.
    Rejected = 2,
}

impl Outcome {
    /// `ingested` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ingested => "ingested",
            Outcome::Rejected => "rejected",
        }
    }

    /// Reads [`Outcome::as_str`]'s words.
    pub fn from_name(name: &str) -> Option<Outcome> {
        match name {
            "ingested" => Some(Outcome::Ingested),
            "rejected" => Some(Outcome::Rejected),
            _ => None,
        }
    }

    pub(crate) fn from_code(code: i64) -> Outcome {
        if code == 2 {
            Outcome::Rejected
        } else {
            Outcome::Ingested
        }
    }
}

/// The identity and metadata of one file version, as read by ingest.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// Name of the spool it was found in.
    pub spool: Arc<str>,
    /// Absolute path, as raw bytes (file names need not be UTF-8).
    pub path: Vec<u8>,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// SHA-256 of the content (mixed with the mtime when results take their time from it;
    /// see docs/format.md). Same path + same hash = same version, never ingested twice.
    pub version_hash: [u8; 32],
}

/// What ingest made of a file.
#[derive(Debug, Clone)]
pub enum ItemContent {
    /// Parsed results and the samples they become
    /// ([`probewatch_core::ProbeResult::series_samples`], computed by the caller so the
    /// writer thread does not have to).
    Parsed {
        /// The results, in file order (their checks become check results).
        results: Vec<ProbeResult>,
        /// Every sample of every result.
        samples: Vec<SeriesSample>,
        /// True when a result is stamped more than the allowed skew in the future.
        clock_skew: bool,
    },
    /// Refused, with the reason.
    Rejected(Reject),
}

/// One file version to commit.
#[derive(Debug, Clone)]
pub struct IngestItem {
    /// Identity and metadata.
    pub file: FileMeta,
    /// Results or rejection.
    pub content: ItemContent,
}

/// What a commit did with each item, in input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemResult {
    /// Stored as a new ledger row with this id.
    Stored {
        /// Ledger row id.
        file_id: i64,
    },
    /// The same path and version hash were already in the ledger: nothing was written.
    Duplicate,
}

/// Result of [`crate::LedgerStore::commit_batch`].
#[derive(Debug, Clone)]
pub struct CommitSummary {
    /// The batch's id in the `batches` table.
    pub batch_id: i64,
    /// One entry per input item.
    pub items: Vec<ItemResult>,
    /// Samples written (new or replacing an older value at the same timestamp).
    pub samples: u64,
    /// Check results written.
    pub check_results: u64,
}

/// Result of [`crate::LedgerStore::prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneSummary {
    /// Samples deleted.
    pub samples: u64,
    /// Check results deleted.
    pub check_results: u64,
    /// Ledger rows deleted.
    pub files: u64,
    /// Bytes of free pages given back to the file system.
    pub bytes_released: u64,
}

/// What the database takes on disk (see `SqliteStore::disk_usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// The database file's size.
    pub file_bytes: u64,
    /// Free pages inside it (reused before the file grows).
    pub free_bytes: u64,
    /// The encoded sample chunks alone.
    pub chunk_data_bytes: u64,
}

/// Totals, as `/api/v1/stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ledger rows with outcome ingested.
    pub files_ingested: u64,
    /// Ledger rows with outcome rejected.
    pub files_rejected: u64,
    /// Stored check results.
    pub check_results: u64,
    /// Stored samples.
    pub samples: u64,
    /// Known series.
    pub series: u64,
}

/// Where the samples are (see [`crate::SampleStore::sample_span`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleSpan {
    /// Compacted chunks.
    pub chunks: u64,
    /// Oldest and newest sample time (ms), if any sample exists.
    pub range_ms: Option<(i64, i64)>,
}

/// The newest result of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    /// Probe name.
    pub probe: String,
    /// Host (may be empty).
    pub host: String,
    /// Check name.
    pub check: String,
    /// Status code 0–3.
    pub status: u8,
    /// Result time, ms since the epoch.
    pub time_ms: i64,
    /// Duration, if measured.
    pub duration_seconds: Option<f64>,
    /// The probe's message.
    pub message: String,
    /// The probe's declared reporting interval, if any.
    pub interval_ms: Option<i64>,
    /// How often the check has usually reported, learnt from its results.
    pub usual_interval_ms: Option<i64>,
    /// The check's id in the store, for [`crate::CheckStore::check_intervals`].
    pub id: i64,
    /// When the check's current status began: the start of its latest run of results of
    /// that status, none reporting more than three intervals after the one before (None
    /// while a late result waits for its run to be repaired).
    pub status_since_ms: Option<i64>,
}

impl CheckRow {
    /// The interval the check is expected to report at: declared, else learnt.
    pub fn expected_interval_ms(&self) -> Option<i64> {
        self.interval_ms
            .filter(|v| *v > 0)
            .or(self.usual_interval_ms.filter(|v| *v > 0))
    }

    /// Whether the check fell silent at `now_ms`: nothing came for three of its expected
    /// intervals (one late or lost result is not yet silence). A check with no known
    /// interval never is.
    pub fn is_silent(&self, now_ms: i64) -> bool {
        self.expected_interval_ms()
            .is_some_and(|i| now_ms - self.time_ms > i.saturating_mul(3))
    }
}

/// A run of one status in a check's history: every result from `start_ms` to `end_ms` had
/// `status` (the end is the next run's start when the status changed without a silence in
/// between). Time not covered by any run had no results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusInterval {
    /// First result of the run, ms.
    pub start_ms: i64,
    /// Last result of the run, or the first result of the status that followed it, ms.
    pub end_ms: i64,
    /// Status code 0–3.
    pub status: u8,
    /// Results in the run.
    pub results: u64,
}

/// Which check history to read.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// Probe name.
    pub probe: String,
    /// Check name.
    pub check: String,
    /// Only this host, or every host.
    pub host: Option<String>,
    /// Inclusive start, ms.
    pub from_ms: i64,
    /// Inclusive end, ms.
    pub to_ms: i64,
    /// At most this many rows.
    pub limit: usize,
    /// Newest rows first (the limit then keeps the newest).
    pub newest_first: bool,
}

/// One stored check result.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckHistoryRow {
    /// Host.
    pub host: String,
    /// Result time, ms.
    pub time_ms: i64,
    /// Status code 0–3.
    pub status: u8,
    /// Duration, if measured.
    pub duration_seconds: Option<f64>,
    /// The probe's message.
    pub message: String,
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    /// Spool name.
    pub spool: String,
    /// Path bytes.
    pub path: Vec<u8>,
    /// Outcome.
    pub outcome: Outcome,
    /// Reject kind (`syntax`, …) for rejected files.
    pub reject_kind: Option<String>,
    /// The full error, for rejected files.
    pub error: Option<String>,
    /// When it was committed, ms.
    pub ingested_at_ms: i64,
    /// Size in bytes.
    pub size: u64,
    /// Samples it contributed.
    pub samples: u64,
    /// A result was stamped too far in the future.
    pub clock_skew: bool,
}

/// The samples of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// Metric name.
    pub metric: String,
    /// Canonical label text, `{a="b"}`.
    pub labels: String,
    /// (timestamp ms, value), oldest first.
    pub samples: Vec<(i64, f64)>,
}

/// What one compaction step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStep {
    /// Samples moved from the frozen head into chunks.
    pub moved: usize,
    /// The heads swapped roles: the full active head is now frozen, to be compacted.
    pub swapped: bool,
    /// Change in distinct stored samples (negative when a moved sample replaced one already
    /// in a chunk).
    pub samples_delta: i64,
}

impl CompactStep {
    /// Whether another step may find work.
    pub fn more(&self) -> bool {
        self.moved > 0 || self.swapped
    }
}

/// One row of the series table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRow {
    /// Store id.
    pub id: i64,
    /// Metric name.
    pub metric: String,
    /// Canonical label text, `{a="b"}`.
    pub labels: String,
}

/// Whether an alert waits out its `for` duration or fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// Active, `for` not yet elapsed.
    Pending = 1,
    /// Firing.
    Firing = 2,
}

/// One active alert of one alert rule, as the rule engine persists it so a restart neither
/// loses pending time nor re-notifies.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    /// Which rule: group name, rule name and position.
    pub rule_key: String,
    /// The alert's labels, canonical text.
    pub labels: String,
    /// Pending or firing.
    pub state: AlertState,
    /// When the condition started to hold.
    pub active_at_ms: i64,
    /// When it started firing.
    pub fired_at_ms: Option<i64>,
    /// Since when the condition no longer holds while `keep_firing_for` keeps it firing.
    pub keep_firing_since_ms: Option<i64>,
    /// When a firing notification was last queued (for `repeat_interval`).
    pub last_sent_ms: Option<i64>,
    /// The expression's value at the last state change.
    pub value: f64,
    /// Rendered annotations, a JSON object.
    pub annotations: String,
}

/// A state change of an alert, kept as history.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// Which rule.
    pub rule_key: String,
    /// The alert's labels, canonical text.
    pub labels: String,
    /// `pending`, `firing` or `resolved`.
    pub event: String,
    /// When.
    pub at_ms: i64,
    /// The value then.
    pub value: f64,
}

/// A notification to queue in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// Receiver name from the configuration.
    pub receiver: String,
    /// The body to deliver (JSON).
    pub payload: String,
    /// When it was produced.
    pub created_at_ms: i64,
    /// The alert group it belongs to (receiver-specific): notifications of one group are
    /// scheduled together and delivered as one.
    pub group_key: String,
    /// Delay before the first notification of a group that has none yet.
    pub group_wait_ms: i64,
    /// Least time between two notifications of a group.
    pub group_interval_ms: i64,
}

/// The alerts of one rule after an evaluation, with what it caused; saved in one
/// transaction with the rest of its group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertUpdate {
    /// Which rule.
    pub rule_key: String,
    /// Its active alerts now (replacing the stored ones).
    pub alerts: Vec<AlertRow>,
    /// State changes.
    pub events: Vec<AlertEvent>,
    /// Notifications to queue.
    pub notifications: Vec<NewNotification>,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRow {
    /// Outbox id.
    pub id: i64,
    /// Receiver name.
    pub receiver: String,
    /// Alert group (see [`NewNotification::group_key`]).
    pub group_key: String,
    /// Body.
    pub payload: String,
    /// When it was queued.
    pub created_at_ms: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was delivered, if it was.
    pub delivered_at_ms: Option<i64>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When its receiver refused it for good, if it did (no more attempts).
    pub failed_at_ms: Option<i64>,
}

/// What a delivery attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver accepted it.
    Delivered,
    /// It failed for now; try again at this time (ms).
    RetryAt(i64),
    /// The receiver refused it for good; no more attempts.
    Failed,
}

/// A silence: alerts matching every matcher between start and end are not notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRow {
    /// Id (0 for one not yet stored).
    pub id: i64,
    /// PromQL matcher texts, e.g. `probe="web"`, `severity=~"page|ticket"`.
    pub matchers: Vec<String>,
    /// Start.
    pub starts_at_ms: i64,
    /// End (earlier if expired).
    pub ends_at_ms: i64,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// When it was created.
    pub created_at_ms: i64,
    /// When it was expired early, if it was.
    pub expired_at_ms: Option<i64>,
    /// An acknowledgement: bound to one alert (its matchers are the alert's labels) and
    /// expired once that alert resolves.
    pub acknowledgement: bool,
}

impl SilenceRow {
    /// Whether it silences at `now_ms`.
    pub fn active_at(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms
            && now_ms < self.ends_at_ms
            && self.expired_at_ms.is_none_or(|e| now_ms < e)
    }
}

/// One delivery attempt of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// When.
    pub at_ms: i64,
    /// Whether the receiver accepted it.
    pub ok: bool,
    /// The receiver's answer or the error.
    pub detail: String,
}

/// Recent ingest activity, for the dashboard's ingest page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestActivity {
    /// (minute start ms, files stored in that minute), oldest first; minutes without files
    /// are absent.
    pub minutes: Vec<(i64, u64)>,
    /// For the newest files, newest first: ms from the file's last modification to the
    /// commit that stored it.
    pub latencies_ms: Vec<i64>,
}

/// What a server says of itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceBeat {
    /// A unique id for this process (host, pid and start time).
    pub id: String,
    /// Where its HTTP API listens.
    pub address: String,
    /// Its probewatch version.
    pub version: String,
    /// When it started (ms since the epoch).
    pub started_at_ms: i64,
}

/// One server as the cluster status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    /// What it said in its last heartbeat.
    pub beat: InstanceBeat,
    /// How long ago that was, by the store's clock (ms).
    pub heartbeat_age_ms: i64,
}

/// Who evaluates the rules and which servers share the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterStatus {
    /// The back end: `sqlite` or `postgresql`.
    pub backend: String,
    /// The instance holding the rule evaluator's lease, while it runs.
    pub leader: Option<String>,
    /// The lease's epoch: it grows each time the lease changes hands.
    pub epoch: i64,
    /// How long the current lease still runs (ms), when one is held.
    pub lease_left_ms: Option<i64>,
    /// The servers that sent a heartbeat recently, newest first.
    pub instances: Vec<InstanceRow>,
}
