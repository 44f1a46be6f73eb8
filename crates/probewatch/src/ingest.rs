//! The ingest path: `FileReady` → read, hash, parse → one transaction per batch → after-ingest
//! actions.
//!
//! Two threads, so parsing and committing overlap on two cores:
//! - the *prepare* thread opens each reported file (never following symlinks), skips files the
//!   ledger already has unchanged (scans only), reads it under the size limit, hashes it and
//!   parses it;
//! - the *writer* thread takes whatever prepared items are waiting (up to `batch_max_files`)
//!   and commits them in one transaction. There is no artificial delay: a lone file commits at
//!   once, and under load batches grow by themselves while the previous commit runs.
//!
//! Invariants: a file's results and its ledger row commit together; a file is deleted, moved
//! or quarantined only after the commit that recorded it is durable (fsynced); a failed commit
//! is retried, never dropped.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use probewatch_core::format::FileContext;
use probewatch_core::{ParseLimits, Reject, RejectKind, TimeSource, parse};
use probewatch_store::{FileMeta, IngestItem, ItemContent, ItemResult, Store};
use probewatch_watch::{FileReady, mtime_ns};
use sha2::{Digest, Sha256};

use crate::config::{AfterIngest, Spool};
use crate::telemetry::{Metrics, RejectLabels, SpoolLabel};
use prometheus_client::metrics::counter::Counter;

/// What the ingest path needs to know.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The spools, indexed like the watcher's.
    pub spools: Arc<Vec<Spool>>,
    /// Largest accepted file.
    pub max_file_bytes: u64,
    /// Future timestamps beyond this are flagged as clock skew.
    pub clock_skew_tolerance: Duration,
    /// Most files per transaction.
    pub batch_max_files: usize,
    /// Parser limits.
    pub parse_limits: ParseLimits,
    /// Told the metric names of every batch that committed samples (rules evaluate on it).
    pub on_commit: Option<std::sync::mpsc::SyncSender<Vec<String>>>,
    /// Counts every reported file that is done with: committed, or skipped as unchanged. Set
    /// against the watcher's `files_ready`, it tells when a backlog has been caught up.
    pub handled: Arc<std::sync::atomic::AtomicU64>,
    /// What readiness and metrics learn of the pipeline's state.
    pub health: Arc<crate::health::IngestHealth>,
    /// The daemon's stop signal: a commit that keeps failing is given up
    /// [`SHUTDOWN_COMMIT_GRACE`] after it.
    pub shutdown: crate::shutdown::Shutdown,
    /// Where the types and help texts textfiles declare go (for `/api/v1/metadata`).
    pub metadata: Arc<probewatch_web::status_api::MetricMetadata>,
}

/// How long a failing commit is still retried once the daemon is stopping. The files of a
/// batch given up stay in the spool and are ingested at the next start.
pub const SHUTDOWN_COMMIT_GRACE: Duration = Duration::from_secs(10);

/// How often the writer checks that the database file is still the one it writes to (and
/// always before files leave the spool).
const FILE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Work for the writer thread.
enum Work {
    /// A file to commit.
    Item(Box<Prepared>),
    /// A file the ledger already has unchanged; only its after-ingest action may be due
    /// (the process stopped between commit and delete/move).
    AfterOnly {
        spool: usize,
        path: PathBuf,
        outcome: probewatch_store::Outcome,
    },
    /// Files an agent or a push client sent, already parsed: committed durably, and the
    /// sender told what became of each.
    Remote(Box<RemoteBatch>),
}

/// Items that arrived over HTTP, and where to answer once they are committed.
struct RemoteBatch {
    items: Vec<IngestItem>,
    reply: SyncSender<Result<probewatch_store::CommitSummary, String>>,
}

/// The way into the writer for files that arrive over HTTP (agents, push): they commit in
/// the writer's order, durably, and each caller learns what became of its items. Closed
/// when the pipeline stops, so the writer can finish.
#[derive(Clone)]
pub struct RemoteCommits {
    work: Arc<std::sync::Mutex<Option<SyncSender<Work>>>>,
}

impl RemoteCommits {
    /// Commits `items` (waiting for room in the writer's queue), and returns once the commit
    /// is durable; an error says why nothing was committed.
    pub fn commit(
        &self,
        items: Vec<IngestItem>,
    ) -> Result<probewatch_store::CommitSummary, String> {
        let sender = self
            .work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| "probewatch is stopping".to_string())?;
        let (reply, answer) = sync_channel(1);
        sender
            .send(Work::Remote(Box::new(RemoteBatch { items, reply })))
            .map_err(|_| "probewatch is stopping".to_string())?;
        drop(sender);
        answer
            .recv()
            .map_err(|_| "probewatch stopped before the commit".to_string())?
    }

    fn close(&self) {
        self.work.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

struct Prepared {
    spool: usize,
    path: PathBuf,
    seen_at: Instant,
    item: IngestItem,
}

impl Work {
    /// What this work holds in memory, as far as the byte budget counts it: the file's
    /// size (its parsed results and samples are a small multiple of it).
    fn bytes(&self) -> u64 {
        match self {
            Work::Item(p) => p.item.file.size.max(1),
            Work::AfterOnly { .. } => 1,
            // Not read by the preparer, so not in its budget; the sender bounds its batch.
            Work::Remote(_) => 0,
        }
    }
}

/// Bytes of parsed files that may be queued or in a batch at once. The queue is also
/// bounded by count (`batch_max_files`), but a thousand 8 MiB files would be gigabytes: the
/// preparer waits while this much is in flight (one file is always let through, however
/// big), and the writer closes a batch at half of it.
pub const IN_FLIGHT_BYTES: u64 = 24 * 1024 * 1024;

/// Gives bytes back to the budget when dropped, however the batch ends.
struct GiveBack<'a>(&'a ByteBudget, u64);

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        self.0.give(self.1);
    }
}

/// The byte budget shared by the preparer (which takes) and the writer (which gives back
/// once a batch is committed).
#[derive(Debug, Default)]
struct ByteBudget {
    used: std::sync::Mutex<u64>,
    freed: std::sync::Condvar,
}

impl ByteBudget {
    /// Waits until `n` more bytes fit (or nothing is in flight), then takes them.
    fn take(&self, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + n > IN_FLIGHT_BYTES {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += n;
    }

    /// Gives back `n` bytes.
    fn give(&self, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(n);
        self.freed.notify_all();
    }
}

/// Where a committed item came from.
struct Origin {
    spool: usize,
    path: PathBuf,
    seen_at: Instant,
}

/// The running ingest threads.
pub struct Pipeline {
    threads: Vec<JoinHandle<()>>,
    remote: RemoteCommits,
}

impl Pipeline {
    /// Starts the prepare and writer threads. They stop on their own once every sender of
    /// `ready` is gone and everything queued has been committed.
    pub fn start(
        settings: IngestSettings,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        ready: Receiver<FileReady>,
    ) -> std::io::Result<Pipeline> {
        // Room for one full batch to gather while the previous one commits; each entry holds
        // a parsed file, so this also bounds memory.
        let (work_tx, work_rx) = sync_channel::<Work>(settings.batch_max_files);
        let budget = Arc::new(ByteBudget::default());
        let remote = RemoteCommits {
            work: Arc::new(std::sync::Mutex::new(Some(work_tx.clone()))),
        };
        let preparer = Preparer {
            settings: settings.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            budget: budget.clone(),
            textfile_series: Default::default(),
            hostname: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        };
        let prepare = std::thread::Builder::new()
            .name("pw-prepare".into())
            .spawn(move || preparer.run(ready, work_tx))?;
        let counters = settings
            .spools
            .iter()
            .map(|spool| {
                let label = SpoolLabel {
                    spool: spool.name.to_string(),
                };
                SpoolCounters {
                    ingested: metrics.files_ingested.get_or_create(&label).clone(),
                    duplicate: metrics.files_duplicate.get_or_create(&label).clone(),
                }
            })
            .collect();
        let writer = Writer {
            budget,
            settings,
            store,
            metrics,
            counters,
            files_checked: std::cell::Cell::new(Instant::now()),
        };
        let write = std::thread::Builder::new()
            .name("pw-writer".into())
            .spawn(move || writer.run(work_rx))?;
        Ok(Pipeline {
            threads: vec![prepare, write],
            remote,
        })
    }

    /// The writer's entrance for files that arrive over HTTP.
    pub fn remote(&self) -> RemoteCommits {
        self.remote.clone()
    }

    /// Waits until both threads have finished (after the watcher and the HTTP server
    /// stopped).
    pub fn join(self) {
        self.remote.close();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

pub(crate) use probewatch_core::now_ms;

struct Preparer {
    settings: IngestSettings,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    budget: Arc<ByteBudget>,
    /// Each Prometheus textfile's series in its last version, so a rewrite that drops a
    /// series marks it stale at once (as Prometheus marks a scrape's vanished series).
    textfile_series: std::cell::RefCell<TextfileSeries>,
    /// This machine's name: the host of textfiles whose spool names none.
    hostname: String,
}

/// The series of each textfile's last version read (by path), bounded.
#[derive(Default)]
struct TextfileSeries {
    by_path: std::collections::HashMap<Vec<u8>, Vec<(String, String)>>,
}

/// Textfiles whose series are remembered at most (past it, the memory starts afresh: a
/// dropped series then goes stale after the lookback instead).
const TEXTFILES_REMEMBERED: usize = 100_000;

impl TextfileSeries {
    /// Stale markers, at `at_ms`, for the series the last version of `path` had and
    /// `samples` (its new version) has not; remembers the new version's series.
    fn stale_markers(
        &mut self,
        path: &[u8],
        samples: &[probewatch_core::SeriesSample],
        at_ms: i64,
    ) -> Vec<probewatch_core::SeriesSample> {
        let now: Vec<(String, String)> = samples
            .iter()
            .map(|s| (s.metric.clone(), s.labels.clone()))
            .collect();
        if self.by_path.len() >= TEXTFILES_REMEMBERED && !self.by_path.contains_key(path) {
            self.by_path.clear();
        }
        let Some(before) = self.by_path.insert(path.to_vec(), now) else {
            return Vec::new();
        };
        let kept: std::collections::HashSet<(&str, &str)> = samples
            .iter()
            .map(|s| (s.metric.as_str(), s.labels.as_str()))
            .collect();
        before
            .into_iter()
            .filter(|(m, l)| !kept.contains(&(m.as_str(), l.as_str())))
            .map(|(metric, labels)| probewatch_core::SeriesSample {
                metric,
                labels,
                time_ms: at_ms,
                value: f64::from_bits(probewatch_promql::value::STALE_NAN_BITS),
            })
            .collect()
    }
}

impl Preparer {
    fn run(self, ready: Receiver<FileReady>, work: SyncSender<Work>) {
        let health = self.settings.health.clone();
        loop {
            // Wait for the next reported file, or until an unreadable file is due again.
            let (due, next) = health.due_retries(Instant::now());
            for (spool, path) in due {
                let retry = FileReady {
                    spool,
                    path,
                    cause: probewatch_watch::ReadyCause::Scan,
                    seen_at: Instant::now(),
                };
                if !self.handle(retry, None, &work) {
                    return;
                }
            }
            let wait = next.map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(Instant::now())
            });
            match ready.recv_timeout(wait.min(Duration::from_secs(1))) {
                Ok(file) => {
                    // Whatever else is waiting is taken too, so the ledger is asked about a
                    // scan's files in one lookup rather than one round trip each.
                    let mut files = vec![file];
                    while files.len() < LOOKUP_BATCH {
                        match ready.try_recv() {
                            Ok(file) => files.push(file),
                            Err(_) => break,
                        }
                    }
                    let heads = self.known_heads(&files);
                    for (file, head) in files.into_iter().zip(heads) {
                        if !self.handle(file, Some(head), &work) {
                            return;
                        }
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// What the ledger knows of each scanned file (fresh writes are not looked up: they are
    /// new versions whatever the ledger says). A failed lookup reads the files.
    fn known_heads(&self, files: &[FileReady]) -> Vec<Option<probewatch_store::FileHead>> {
        let scanned: Vec<(usize, Vec<u8>)> = files
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.cause.is_fresh_write())
            .map(|(i, f)| (i, f.path.as_os_str().as_bytes().to_vec()))
            .collect();
        let mut heads = vec![None; files.len()];
        if scanned.is_empty() {
            return heads;
        }
        let paths: Vec<&[u8]> = scanned.iter().map(|(_, p)| p.as_slice()).collect();
        if let Ok(found) = self.store.file_heads(&paths) {
            for ((i, _), head) in scanned.iter().zip(found) {
                heads[*i] = head;
            }
        }
        heads
    }

    /// Prepares one file and hands it to the writer; false once the writer is gone. `head`
    /// is what the ledger knows of it, when it was looked up already.
    fn handle(
        &self,
        file: FileReady,
        head: Option<Option<probewatch_store::FileHead>>,
        work: &SyncSender<Work>,
    ) -> bool {
        let health = &self.settings.health;
        health.preparing(Some(file.seen_at));
        let (spool, path) = (file.spool, file.path.clone());
        let prepared = self.prepare(file, head);
        health.preparing(None);
        let handled = || {
            self.settings
                .handled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        match prepared {
            Ok(Some(w)) => {
                health.readable(&path);
                self.budget.take(w.bytes());
                return work.send(w).is_ok();
            }
            Ok(None) => {
                health.readable(&path);
                handled();
            }
            Err(error) => {
                handled();
                let name = self
                    .settings
                    .spools
                    .get(spool)
                    .map_or_else(|| std::sync::Arc::from("?"), |s| s.name.clone());
                let attempt = health.unreadable(path.clone(), spool, name, error.clone());
                if attempt {
                    self.metrics.files_unreadable.inc();
                    tracing::error!(
                        path = %path.display(),
                        error = %error,
                        "cannot read result file; trying again with backoff (listed on /ingest)"
                    );
                } else {
                    tracing::debug!(path = %path.display(), error = %error, "still cannot read result file");
                }
            }
        }
        true
    }

    /// Reads, hashes and parses a reported file. `Ok(None)`: nothing to do (gone, a
    /// symlink, not a regular file); `Err`: it could not be opened or read, and why.
    fn prepare(
        &self,
        ready: FileReady,
        head: Option<Option<probewatch_store::FileHead>>,
    ) -> Result<Option<Work>, String> {
        let Some(spool) = self.settings.spools.get(ready.spool) else {
            return Ok(None);
        };
        let path = ready.path;
        let Some((file, meta)) = open_spool_file(&path)? else {
            return Ok(None);
        };
        let path_bytes = path.as_os_str().as_bytes().to_vec();
        let size = meta.len();
        let mtime = mtime_ns(&meta);
        let head = match head {
            Some(head) => head,
            None if ready.cause.is_fresh_write() => None,
            None => self.store.file_head(&path_bytes).ok().flatten(),
        };
        if !ready.cause.is_fresh_write()
            && let Some(head) = head
            && unchanged(head.size, head.mtime_ns, head.inode, &meta)
        {
            return Ok(Some(Work::AfterOnly {
                spool: ready.spool,
                path,
                outcome: head.outcome,
            }));
        }
        let (version_hash, content) = match read_limited(&file, size, self.settings.max_file_bytes)?
        {
            Err(size) => too_large(size, mtime, meta.ino(), self.settings.max_file_bytes),
            Ok(bytes) => {
                let parsed = parse_file(
                    &bytes,
                    mtime,
                    &ParseSettings {
                        format: spool.format,
                        labels: &spool.labels,
                        limits: &self.settings.parse_limits,
                        clock_skew_tolerance: self.settings.clock_skew_tolerance,
                        mapping: spool.mapping.as_deref(),
                        // A textfile is this machine's metrics, unless the spool says
                        // which host they are (as node_exporter's instance label).
                        default_host: (spool.format == probewatch_core::Format::Prometheus
                            && spool.labels.get("host").is_none())
                        .then_some(self.hostname.as_str()),
                    },
                    None,
                    &path.display().to_string(),
                );
                if spool.format == probewatch_core::Format::Prometheus
                    && matches!(parsed.1, ItemContent::Parsed { .. })
                {
                    for (name, m) in probewatch_core::format::prometheus::metadata(&bytes) {
                        self.settings
                            .metadata
                            .record(&name, &m.kind, &m.help, &m.unit);
                    }
                }
                parsed
            }
        };
        let mut content = content;
        if spool.format == probewatch_core::Format::Prometheus
            && let ItemContent::Parsed { samples, .. } = &mut content
        {
            let stale = self.textfile_series.borrow_mut().stale_markers(
                &path_bytes,
                samples,
                mtime / 1_000_000,
            );
            samples.extend(stale);
        }
        let item = IngestItem {
            file: FileMeta {
                spool: spool.name.clone(),
                path: path_bytes,
                size,
                mtime_ns: mtime,
                inode: meta.ino(),
                version_hash,
            },
            content,
        };
        Ok(Some(Work::Item(Box::new(Prepared {
            spool: ready.spool,
            path,
            seen_at: ready.seen_at,
            item,
        }))))
    }
}

/// Opens a reported spool file for reading, never following a symlink. `Ok(None)`: nothing
/// to do (gone, a symlink, not a regular file); `Err`: why it cannot be opened.
pub(crate) fn open_spool_file(
    path: &Path,
) -> Result<Option<(std::fs::File, std::fs::Metadata)>, String> {
    // O_NOFOLLOW: a symlink is never followed (out of the spool or into it twice).
    // O_NONBLOCK: a FIFO named like a result file cannot hang the pipeline.
    let file = match std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "file vanished before it was read");
            return Ok(None);
        }
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            tracing::info!(path = %path.display(), "ignoring symlink in spool");
            return Ok(None);
        }
        Err(err) if err.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            if long_path_is_gone(path) {
                return Ok(None);
            }
            return Err(format!(
                "cannot open: the path is longer than the system allows (PATH_MAX, {} \
                 bytes): shorten the spool's path or the file's name ({err})",
                libc::PATH_MAX
            ));
        }
        Err(err) => return Err(format!("cannot open: {err}")),
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() => Ok(Some((file, meta))),
        Ok(_) => {
            tracing::info!(path = %path.display(), "ignoring non-regular file in spool");
            Ok(None)
        }
        Err(err) => Err(format!("cannot stat: {err}")),
    }
}

/// Whether a file found by a scan is the version recorded (size, mtime and inode match),
/// unless its mtime is so recent that a same-size rewrite within the clock tick could hide
/// behind it ("racy" mtime, as git calls it).
pub(crate) fn unchanged(size: u64, mtime: i64, inode: u64, meta: &std::fs::Metadata) -> bool {
    let now_ns = now_ms().saturating_mul(1_000_000);
    let racy = now_ns.saturating_sub(mtime_ns(meta)) < 2_000_000_000;
    !racy && size == meta.len() && mtime == mtime_ns(meta) && inode == meta.ino()
}

/// Reads an opened file whole, or `Ok(Err(size))` when it is over `max` bytes (then the
/// rest is not read).
pub(crate) fn read_limited(
    file: &std::fs::File,
    size: u64,
    max: u64,
) -> Result<Result<Vec<u8>, u64>, String> {
    if size > max {
        return Ok(Err(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
    if let Err(err) = file.take(max + 1).read_to_end(&mut bytes) {
        return Err(format!("cannot read: {err}"));
    }
    if bytes.len() as u64 > max {
        return Ok(Err(bytes.len() as u64));
    }
    Ok(Ok(bytes))
}

/// A file over the size limit is not read; its identity is its size, mtime and inode.
pub(crate) fn too_large(size: u64, mtime: i64, inode: u64, max: u64) -> ([u8; 32], ItemContent) {
    let mut hasher = Sha256::new();
    hasher.update(b"too-large\0");
    hasher.update(size.to_le_bytes());
    hasher.update(mtime.to_le_bytes());
    hasher.update(inode.to_le_bytes());
    let reject = Reject::new(
        RejectKind::TooLarge,
        format!("file is {size} bytes, over the limit of {max} bytes (max_file_bytes)"),
    );
    (hasher.finalize().into(), ItemContent::Rejected(reject))
}

/// How a file's bytes become results: its spool's format and labels, and the limits.
pub(crate) struct ParseSettings<'a> {
    /// The spool's format.
    pub format: probewatch_core::Format,
    /// Labels the spool adds to every series.
    pub labels: &'a probewatch_core::Labels,
    /// Parser limits.
    pub limits: &'a ParseLimits,
    /// Results stamped further in the future are flagged as clock skew.
    pub clock_skew_tolerance: Duration,
    /// The spool's mapping, for format `mapping`.
    pub mapping: Option<&'a probewatch_core::format::mapping::Mapping>,
    /// The host of results that name none (a textfile: the machine's), if any.
    pub default_host: Option<&'a str>,
}

/// Which hosts a remote sender (an agent, a push client) may write results for.
pub(crate) struct HostRule<'a> {
    /// The host of results that name none: the sender's own name.
    pub default_host: &'a str,
    /// Every host it may write for (the default host is one of them).
    pub allowed: &'a [String],
}

/// Hashes and parses a file's bytes into the ledger's version hash and the item's content.
/// The version hash is the content's SHA-256, mixed with the mtime when a result takes its
/// time from the mtime (then every rewrite is a new result, even with the same bytes).
pub(crate) fn parse_file(
    bytes: &[u8],
    mtime_ns: i64,
    settings: &ParseSettings<'_>,
    sender: Option<&HostRule<'_>>,
    shown_as: &str,
) -> ([u8; 32], ItemContent) {
    let content_hash: [u8; 32] = Sha256::digest(bytes).into();
    let mtime_ms = mtime_ns / 1_000_000;
    let mut results = match parse(
        settings.format,
        bytes,
        FileContext {
            mtime_ms,
            name: Path::new(shown_as)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(""),
            mapping: settings.mapping,
        },
        settings.limits,
    ) {
        Err(reject) => {
            return (
                content_hash,
                ItemContent::Rejected(naming_probe(reject, bytes)),
            );
        }
        Ok(results) => results,
    };
    if let Some(host) = settings.default_host {
        for result in results.iter_mut().filter(|r| r.host.is_empty()) {
            result.host = host.to_string();
        }
    }
    if let Some(rule) = sender {
        for result in &mut results {
            if result.host.is_empty() {
                result.host = rule.default_host.to_string();
            } else if !rule.allowed.contains(&result.host) {
                let reject = Reject::new(
                    RejectKind::Forbidden,
                    format!(
                        "result for host {:?}, but sender {:?} may only write for {}",
                        result.host,
                        rule.default_host,
                        rule.allowed.join(", ")
                    ),
                );
                return (content_hash, ItemContent::Rejected(reject));
            }
        }
    }
    let version_hash = if results
        .iter()
        .any(|r| r.time_source == TimeSource::FileMtime)
    {
        let mut hasher = Sha256::new();
        hasher.update(content_hash);
        hasher.update(mtime_ns.to_le_bytes());
        hasher.finalize().into()
    } else {
        content_hash
    };
    let limit = now_ms().saturating_add(
        i64::try_from(settings.clock_skew_tolerance.as_millis()).unwrap_or(i64::MAX),
    );
    let clock_skew = results.iter().any(|r| r.time_ms > limit);
    if clock_skew {
        tracing::warn!(
            path = shown_as,
            "result stamped more than {} in the future (clock skew?); stored at its own time",
            humantime::format_duration(settings.clock_skew_tolerance)
        );
    }
    (
        version_hash,
        ItemContent::Parsed {
            samples: results
                .iter()
                .flat_map(|r| r.series_samples(settings.labels))
                .collect(),
            results,
            clock_skew,
        },
    )
}

struct Writer {
    settings: IngestSettings,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    budget: Arc<ByteBudget>,
    /// Per spool (same index), so the hot path does no label lookups.
    counters: Vec<SpoolCounters>,
    /// When the database file's identity was last confirmed.
    files_checked: std::cell::Cell<Instant>,
}

/// One spool's counters, resolved once.
struct SpoolCounters {
    ingested: Counter,
    duplicate: Counter,
}

/// Most reported files whose ledger entries are looked up together.
const LOOKUP_BATCH: usize = 256;

/// Smallest compaction step, in samples: enough to amortise a transaction, small enough
/// (a few milliseconds) not to delay the next batch noticeably.
const COMPACT_MIN_STEP: usize = 2048;

/// Checks whose status intervals one idle step repairs (each is a few rows).
const INTERVAL_REPAIRS_PER_STEP: usize = 64;

impl Writer {
    fn run(self, work: Receiver<Work>) {
        let max = self.settings.batch_max_files;
        let mut progress = Progress::default();
        // A frozen head may be left from before a restart.
        let mut compact_pending = true;
        loop {
            let first = if compact_pending {
                match work.try_recv() {
                    Ok(first) => first,
                    Err(TryRecvError::Empty) => {
                        compact_pending = self.compact(COMPACT_MIN_STEP) || self.repair_intervals();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match work.recv() {
                    Ok(first) => first,
                    Err(_) => break,
                }
            };
            let mut bytes = first.bytes();
            let mut batch = vec![first];
            while batch.len() < max && bytes < IN_FLIGHT_BYTES / 2 {
                match work.try_recv() {
                    Ok(next) => {
                        bytes += next.bytes();
                        batch.push(next);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            // Files of the spools: what `handled` counts against the watcher's reports.
            let n = batch
                .iter()
                .filter(|w| !matches!(w, Work::Remote(_)))
                .count();
            // The batch's bytes go back once it is committed (or dropped): the preparer may
            // then read more.
            let returned = GiveBack(&self.budget, bytes);
            if let Some(reason) = self.settings.health.halted_reason() {
                // Nothing is committed or moved: every file stays in the spool for the next
                // start, and senders over HTTP keep theirs.
                for work in batch {
                    if let Work::Remote(r) = work {
                        let _ = r
                            .reply
                            .try_send(Err(format!("ingest is stopped: {reason}")));
                    }
                }
                self.settings
                    .handled
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let samples = self.commit(batch);
            drop(returned);
            self.settings
                .handled
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            progress.record(n, n == max);
            // Keep compaction abreast of ingest: move about twice what this batch added, and
            // finish the rest when the queue is empty.
            let step = usize::try_from(samples.saturating_mul(2)).unwrap_or(usize::MAX);
            self.compact(step.max(COMPACT_MIN_STEP));
            // What is left (compaction, interval repairs) goes on when the queue is empty.
            compact_pending = true;
        }
        progress.finish();
    }

    /// When idle: repairs the status intervals of a few checks that got results out of
    /// order (done here, once for many batches, rather than in every ingest transaction).
    fn repair_intervals(&self) -> bool {
        match self.store.repair_intervals(INTERVAL_REPAIRS_PER_STEP) {
            Ok(more) => more,
            Err(err) => {
                self.metrics.store_error("repair_intervals");
                tracing::warn!(error = %err, "repairing status intervals failed");
                false
            }
        }
    }

    /// One compaction step; returns whether there may be more to do.
    fn compact(&self, max_samples: usize) -> bool {
        match self.store.compact(max_samples) {
            Ok(step) => {
                if step.swapped {
                    tracing::debug!("sample head full; compacting it into chunks");
                }
                step.more()
            }
            Err(err) => {
                // Ingest goes on into the active head; the next batch tries again.
                self.metrics.store_error("compact");
                tracing::warn!(error = %err, "compacting samples failed");
                false
            }
        }
    }

    /// Commits a batch; returns the samples it wrote.
    fn commit(&self, batch: Vec<Work>) -> u64 {
        let mut items = Vec::with_capacity(batch.len());
        let mut origins = Vec::with_capacity(batch.len());
        let mut after_only = Vec::new();
        let mut remote = Vec::new();
        for work in batch {
            match work {
                Work::Remote(r) => remote.push(*r),
                Work::Item(p) => {
                    let Prepared {
                        spool,
                        path,
                        seen_at,
                        item,
                    } = *p;
                    items.push(item);
                    origins.push(Origin {
                        spool,
                        path,
                        seen_at,
                    });
                }
                Work::AfterOnly {
                    spool,
                    path,
                    outcome,
                } => after_only.push((spool, path, outcome)),
            }
        }
        let durable = origins
            .iter()
            .map(|o| o.spool)
            .chain(after_only.iter().map(|a| a.0))
            .any(|s| self.settings.spools.get(s).is_some_and(Spool::moves_files));
        if (durable || self.files_checked.get().elapsed() >= FILE_CHECK_EVERY)
            && !self.database_is_there()
        {
            return 0;
        }
        let remote_samples = if remote.is_empty() {
            0
        } else {
            self.commit_remote(remote)
        };
        if items.is_empty() && after_only.is_empty() {
            return remote_samples;
        }
        let summary = if items.is_empty() && !durable {
            None
        } else {
            // Also commits (and with `durable`, fsyncs) when only after-only work is queued,
            // so an earlier non-durable commit is on disk before its file moves.
            let oldest = origins.iter().map(|o| o.seen_at).min();
            self.settings.health.committing(oldest);
            let summary = self.commit_with_retry(&items, durable);
            self.settings.health.committing(None);
            match summary {
                Some(summary) => Some(summary),
                None => {
                    tracing::warn!(
                        files = items.len(),
                        "gave up committing at shutdown; these files stay in the spool and \
                         are ingested at the next start"
                    );
                    return 0;
                }
            }
        };
        // A commit into a file that was unlinked meanwhile reached no one: check again
        // before any file leaves the spool.
        if durable && !self.database_is_there() {
            return 0;
        }
        let committed_at = Instant::now();
        if let Some(summary) = &summary
            && summary.samples > 0
        {
            self.tell_rules(&items);
        }
        if let Some(summary) = &summary {
            self.metrics.batches.inc();
            self.metrics.samples_written.inc_by(summary.samples);
            for ((origin, item), result) in origins.iter().zip(&items).zip(&summary.items) {
                self.account(origin, item, *result, committed_at);
            }
        }
        for (spool, path, outcome) in after_only {
            self.after(spool, &path, outcome);
        }
        summary.map_or(0, |s| s.samples) + remote_samples
    }

    /// Tells the rules which metrics a committed batch wrote (they evaluate on it).
    fn tell_rules(&self, items: &[IngestItem]) {
        let Some(tx) = &self.settings.on_commit else {
            return;
        };
        // Distinct names first, then copies: a batch has thousands of samples but few
        // metrics.
        let distinct: std::collections::HashSet<&str> = items
            .iter()
            .filter_map(|i| match &i.content {
                ItemContent::Parsed { samples, .. } => Some(samples),
                ItemContent::Rejected(_) => None,
            })
            .flatten()
            .map(|s| s.metric.as_str())
            .collect();
        let names: Vec<String> = distinct.into_iter().map(str::to_string).collect();
        // Never wait for the rules: a full queue means they will look soon anyway.
        let _ = tx.try_send(names);
    }

    /// Commits what agents and push clients sent, in one durable transaction (they delete
    /// their copies once answered), and answers each sender. A failure is answered too:
    /// the sender keeps its files and tries again, so nothing is retried here.
    fn commit_remote(&self, batches: Vec<RemoteBatch>) -> u64 {
        let mut items = Vec::with_capacity(batches.iter().map(|b| b.items.len()).sum());
        let mut replies = Vec::with_capacity(batches.len());
        for batch in batches {
            replies.push((batch.reply, batch.items.len()));
            items.extend(batch.items);
        }
        let answer = if let Some(reason) = self.settings.health.halted_reason() {
            Err(format!("ingest is stopped: {reason}"))
        } else if !self.database_is_there() {
            Err("ingest is stopped: the database file was replaced".to_string())
        } else {
            self.store.commit_batch(&items, true).map_err(|err| {
                self.metrics.commit_errors.inc();
                self.metrics.store_error("commit");
                tracing::warn!(error = %err, files = items.len(), "committing files sent over HTTP failed; the senders retry");
                err.to_string()
            })
        };
        let samples = match &answer {
            Ok(summary) => {
                self.metrics.batches.inc();
                self.metrics.samples_written.inc_by(summary.samples);
                if summary.samples > 0 {
                    self.tell_rules(&items);
                }
                summary.samples
            }
            Err(_) => 0,
        };
        let mut at = 0;
        for (reply, n) in replies {
            let part = answer.as_ref().map_err(Clone::clone).map(|summary| {
                probewatch_store::CommitSummary {
                    batch_id: summary.batch_id,
                    items: summary.items[at..at + n].to_vec(),
                    samples: 0,
                    check_results: 0,
                }
            });
            at += n;
            let _ = reply.try_send(part);
        }
        samples
    }

    /// Whether the database file is still the one the store writes to; if not, ingest
    /// stops for good (readiness fails and says why) and nothing leaves the spool.
    fn database_is_there(&self) -> bool {
        self.files_checked.set(Instant::now());
        match self.store.check_files() {
            Ok(()) => true,
            Err(err) => {
                self.metrics.store_error("check_files");
                tracing::error!(
                    error = %err,
                    "ingest stopped: no file is moved or deleted from the spools until \
                     probewatch is restarted"
                );
                self.settings.health.halt(err.to_string());
                false
            }
        }
    }

    /// Commits, retrying a failure with backoff for as long as the daemon runs; `None` when
    /// it was still failing [`SHUTDOWN_COMMIT_GRACE`] after the stop signal.
    fn commit_with_retry(
        &self,
        items: &[IngestItem],
        durable: bool,
    ) -> Option<probewatch_store::CommitSummary> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.store.commit_batch(items, durable) {
                Ok(summary) => {
                    self.settings.health.commit_result(None);
                    return Some(summary);
                }
                Err(err) => {
                    self.metrics.commit_errors.inc();
                    self.metrics.store_error("commit");
                    self.settings.health.commit_result(Some(err.to_string()));
                    let shutdown = &self.settings.shutdown;
                    if shutdown
                        .elapsed()
                        .is_some_and(|since| since >= SHUTDOWN_COMMIT_GRACE)
                    {
                        return None;
                    }
                    tracing::error!(
                        error = %err,
                        files = items.len(),
                        "committing ingest batch failed; retrying in {}",
                        humantime::format_duration(delay)
                    );
                    shutdown.sleep(delay);
                    if shutdown.is_triggered() {
                        // From now on retry briefly, so the stop stays within its bound.
                        delay = delay.min(Duration::from_millis(500));
                    } else {
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }

    fn account(&self, p: &Origin, item: &IngestItem, result: ItemResult, committed_at: Instant) {
        let Some(spool) = self.settings.spools.get(p.spool) else {
            return;
        };
        let outcome = match &item.content {
            ItemContent::Parsed { .. } => probewatch_store::Outcome::Ingested,
            ItemContent::Rejected(_) => probewatch_store::Outcome::Rejected,
        };
        match result {
            ItemResult::Duplicate => {
                self.counters[p.spool].duplicate.inc();
                tracing::debug!(path = %p.path.display(), "already ingested this version; skipped");
            }
            ItemResult::Stored { .. } => {
                self.metrics.ingest_latency.observe(
                    committed_at
                        .saturating_duration_since(p.seen_at)
                        .as_secs_f64(),
                );
                match &item.content {
                    ItemContent::Parsed { .. } => {
                        self.counters[p.spool].ingested.inc();
                        tracing::debug!(path = %p.path.display(), "ingested");
                    }
                    ItemContent::Rejected(reject) => {
                        let labels = RejectLabels {
                            spool: spool.name.to_string(),
                            reason: reject.kind.as_str().to_string(),
                        };
                        self.metrics.files_rejected.get_or_create(&labels).inc();
                        tracing::warn!(
                            spool = %spool.name,
                            reason = reject.kind.as_str(),
                            "rejected {}: {reject}",
                            p.path.display()
                        );
                    }
                }
            }
        }
        self.after(p.spool, &p.path, outcome);
    }

    /// The spool's after-ingest action, or quarantine for a rejected file. Only called once
    /// the file's ledger row is durable.
    fn after(&self, spool: usize, path: &Path, outcome: probewatch_store::Outcome) {
        let Some(spool) = self.settings.spools.get(spool) else {
            return;
        };
        if !after_ingest(spool, path, outcome) {
            self.metrics.after_ingest_errors.inc();
        }
    }
}

/// The spool's after-ingest action for a file whose ledger row is durable (on a server, or
/// acknowledged by one): delete or move an ingested file, quarantine a rejected one. False
/// when the action failed (logged here).
pub(crate) fn after_ingest(spool: &Spool, path: &Path, outcome: probewatch_store::Outcome) -> bool {
    let target_dir = match (outcome, &spool.after_ingest, &spool.quarantine) {
        (probewatch_store::Outcome::Ingested, AfterIngest::Keep, _) => return true,
        (probewatch_store::Outcome::Ingested, AfterIngest::Delete, _) => {
            if let Err(err) = std::fs::remove_file(path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::error!(path = %path.display(), error = %err, "cannot delete ingested file");
                return false;
            }
            return true;
        }
        (probewatch_store::Outcome::Ingested, AfterIngest::Move(dir), _) => dir,
        (probewatch_store::Outcome::Rejected, _, Some(dir)) => dir,
        (probewatch_store::Outcome::Rejected, _, None) => return true,
    };
    if let Err(err) = move_into(&spool.root, path, target_dir) {
        tracing::error!(
            path = %path.display(),
            target = %target_dir.display(),
            error = %err,
            "cannot move file after ingest"
        );
        return false;
    }
    true
}

/// Logs a progress line every few seconds while a backlog is being worked off (batches
/// come out full), and once when it is done.
#[derive(Default)]
struct Progress {
    /// Start of the current backlog, files since then, and when the last line was logged.
    backlog: Option<(Instant, u64, Instant)>,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn record(&mut self, files: usize, full: bool) {
        let now = Instant::now();
        match (&mut self.backlog, full) {
            (None, true) => self.backlog = Some((now, files as u64, now)),
            (Some((started, total, logged)), _) => {
                *total += files as u64;
                if !full {
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    tracing::info!(
                        files = *total,
                        seconds = secs,
                        rate = *total as f64 / secs,
                        "backlog ingested"
                    );
                    self.backlog = None;
                } else if logged.elapsed() >= Self::EVERY {
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    tracing::info!(
                        files = *total,
                        rate = *total as f64 / secs,
                        "ingesting backlog"
                    );
                    *logged = now;
                }
            }
            (None, false) => {}
        }
    }

    fn finish(&mut self) {
        self.record(0, false);
    }
}

/// Whether a file whose full path is too long to open has been removed: its directory's path
/// is short enough (the watcher could not have reported it otherwise), so it is asked.
fn long_path_is_gone(path: &Path) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    let Ok(dir) = std::fs::File::open(dir) else {
        return false;
    };
    matches!(
        rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW),
        Err(rustix::io::Errno::NOENT)
    )
}

/// Moves `path` (inside `root`) to the same relative place under `target_dir`, never
/// overwriting an earlier file of the same name.
fn move_into(root: &Path, path: &Path, target_dir: &Path) -> std::io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let relative = path.strip_prefix(root).unwrap_or(path);
    let mut target = target_dir.join(relative);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut n = 1;
    while target.exists() {
        let mut name = target_dir.join(relative).into_os_string();
        name.push(format!(".{n}"));
        target = PathBuf::from(name);
        n += 1;
    }
    match std::fs::rename(path, &target) {
        Err(err) if err.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(path, &target)?;
            std::fs::File::open(&target)?.sync_all()?;
            std::fs::remove_file(path)
        }
        other => other,
    }
}

/// A rejection that names the probe the file says it is from (when it says so plainly and
/// the reason does not already), so the probe's check page can show that its last file was
/// refused: `probe "web": line 3, …`.
fn naming_probe(mut reject: Reject, bytes: &[u8]) -> Reject {
    if let Some(probe) = probewatch_core::format::sniff_probe(bytes) {
        let named = format!("probe {probe:?}");
        if !reject.detail.contains(&named) {
            reject.detail = format!("{named}: {}", reject.detail);
        }
    }
    reject
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One file always gets through however big; others wait until bytes come back.
    #[test]
    fn the_byte_budget_lets_one_big_file_through_and_holds_the_rest() {
        let budget = Arc::new(ByteBudget::default());
        budget.take(IN_FLIGHT_BYTES * 3);
        let waiting = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                budget.take(1);
                Instant::now()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!waiting.is_finished(), "nothing more while over budget");
        let gave_back = Instant::now();
        budget.give(IN_FLIGHT_BYTES * 3);
        let taken = waiting.join().expect("join");
        assert!(taken >= gave_back);
        budget.take(IN_FLIGHT_BYTES - 1);
        assert_eq!(
            *budget.used.lock().expect("lock"),
            IN_FLIGHT_BYTES,
            "fits exactly"
        );
    }
}
