//! Spool watching: turns "a probe finished writing a file" into a [`FileReady`] event.
//!
//! Invariant: this crate never reads file content. It reports a file only when it is complete:
//! on `IN_CLOSE_WRITE` (written and closed), `IN_MOVED_TO` (renamed into place), after a
//! settle time for files that appear without either (hard links), and from scans. Never on
//! `IN_CREATE`: a file that was just created is usually still empty.
//!
//! Watching is a hint, not the truth: the ingest ledger decides what is new. So every way of
//! missing an event ends in a scan instead — the startup scan (after the watches exist), a
//! scan of every new directory (after its watch exists), a full rescan when the kernel queue
//! overflows or too many files wait for our own queue — and a file may be reported more than
//! once.
//!
//! Threads: the inotify reader only reads events and hands them on with `try_send`, so it
//! never waits for parsing or the database; the scanner walks directories, runs the settle
//! timers and, for spools on file systems where inotify is blind (NFS, CIFS, FUSE), polls.

mod filter;
mod reader;
mod scanner;
mod walk;
mod writers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use filter::{DEFAULT_EXCLUDE, Filter, FilterError};
pub use walk::walk_files;
pub use writers::{Writers, writers};

/// Index of a spool in [`WatchConfig::spools`].
pub type SpoolId = usize;

/// One spool directory to watch.
#[derive(Debug, Clone)]
pub struct SpoolWatch {
    /// The spool root (made absolute by the caller).
    pub root: PathBuf,
    /// Which files and directories count.
    pub filter: Filter,
    /// Directories inside the root never to watch or scan (e.g. a `move` target or a
    /// quarantine inside the spool, whose files were already ingested).
    pub skip_dirs: Vec<PathBuf>,
    /// How this spool is watched.
    pub mode: WatchMode,
}

/// How a spool is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify, unless the file system is one where inotify sees nothing (then poll).
    Auto,
    /// inotify only.
    Inotify,
    /// Scan every interval; a file is ready when its size and mtime held still across two
    /// scans (or it is older than the settle time).
    Poll(Duration),
}

/// Everything the watcher needs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The spools.
    pub spools: Vec<SpoolWatch>,
    /// How long a file that appeared without close-write or rename must stay unchanged
    /// before it is reported; also how recent a scanned file's mtime may be before it is
    /// treated as possibly still being written.
    pub settle: Duration,
    /// Poll interval used when [`WatchMode::Auto`] picks polling, and for directories the
    /// inotify watch limit left unwatched.
    pub auto_poll_interval: Duration,
    /// A full rescan of every spool this often, so any event missed for any reason is made
    /// up for (cheap: the ledger skips unchanged files without reading them); `None`: never.
    pub rescan_interval: Option<Duration>,
    /// Most directories to watch with inotify; the rest are polled as if the kernel's watch
    /// limit had been reached (`None`: as many as the kernel allows). For hosts where other
    /// programs need the user's share of `fs.inotify.max_user_watches`.
    pub max_watches: Option<usize>,
    /// Most files the inotify reader holds while the ingest queue is full (each path once,
    /// about 100 bytes each); past it they are dropped and a full rescan reports them again.
    pub max_waiting: usize,
}

/// The default [`WatchConfig::max_waiting`]: a burst of a quarter of a million files (about
/// 25 MiB while it waits) needs no rescan.
pub const DEFAULT_MAX_WAITING: usize = 262_144;

/// Why a file is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadyCause {
    /// `IN_CLOSE_WRITE`: a writer closed it.
    CloseWrite,
    /// `IN_MOVED_TO`: renamed into the spool.
    MovedIn,
    /// Appeared without either and stayed unchanged for the settle time.
    Settled,
    /// Found by the startup scan, a directory scan or a rescan.
    Scan,
    /// Found stable by a poll.
    Poll,
}

impl ReadyCause {
    /// True for causes that say the content was just written. Ingest always reads and
    /// hashes these; for scans and polls it may first compare size/mtime/inode with the
    /// ledger and skip unchanged files without reading them.
    pub fn is_fresh_write(self) -> bool {
        matches!(
            self,
            ReadyCause::CloseWrite | ReadyCause::MovedIn | ReadyCause::Settled
        )
    }

    /// Snake-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyCause::CloseWrite => "close_write",
            ReadyCause::MovedIn => "moved_in",
            ReadyCause::Settled => "settled",
            ReadyCause::Scan => "scan",
            ReadyCause::Poll => "poll",
        }
    }
}

/// A file that is complete and may be ingested.
#[derive(Debug, Clone)]
pub struct FileReady {
    /// Which spool.
    pub spool: SpoolId,
    /// Absolute path.
    pub path: PathBuf,
    /// Why it is reported.
    pub cause: ReadyCause,
    /// When the watcher saw it: the start of the ingest latency measurement.
    pub seen_at: Instant,
}

/// Counters the watcher keeps; the daemon exports them as metrics.
#[derive(Debug, Default)]
pub struct WatchCounters {
    /// inotify events read.
    pub events: AtomicU64,
    /// `IN_Q_OVERFLOW` events (the kernel dropped events).
    pub overflows: AtomicU64,
    /// File events dropped because the ingest queue was full and
    /// [`WatchConfig::max_waiting`] files were already waiting (a rescan follows).
    pub queue_full: AtomicU64,
    /// Files waiting in the reader for room in the ingest queue, now.
    pub queue_waiting: AtomicU64,
    /// Full rescans started.
    pub rescans: AtomicU64,
    /// Directories under watch.
    pub watched_dirs: AtomicU64,
    /// Files reported.
    pub files_ready: AtomicU64,
    /// True once the startup scan has finished.
    pub startup_scan_done: AtomicBool,
    /// Times a spool directory that was deleted, moved or replaced was watched again.
    pub spool_rewatches: AtomicU64,
    /// Directories the inotify watch limit left unwatched, polled instead.
    pub unwatched_dirs: AtomicU64,
    /// Per spool root, why it is not watched now (missing, replaced by a symlink).
    problems: Mutex<std::collections::BTreeMap<PathBuf, String>>,
}

impl WatchCounters {
    /// Every spool that is not watched now, and why: readiness reports them.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.problems).values().cloned().collect()
    }

    /// Records (or clears, with `None`) why the spool at `root` is not watched; true when
    /// that changed.
    pub(crate) fn set_problem(&self, root: &Path, problem: Option<String>) -> bool {
        let mut problems = lock(&self.problems);
        match problem {
            Some(p) => problems.insert(root.to_path_buf(), p.clone()).as_ref() != Some(&p),
            None => problems.remove(root).is_some(),
        }
    }
}

/// Errors starting the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// inotify could not be set up.
    #[error("setting up inotify: {0} (check fs.inotify.max_user_instances)")]
    Inotify(std::io::Error),
    /// A thread could not be started.
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
}

/// A file's modification time in nanoseconds since the epoch: the unit the ledger keeps.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Locks a mutex; a thread that panicked while holding it leaves plain data (maps of paths)
/// that is still usable, so poisoning is ignored rather than spreading the panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the reader and the scanner.
pub(crate) struct Shared {
    pub spools: Vec<SpoolWatch>,
    /// Per spool: true when it is polled instead of watched.
    pub polled: Vec<bool>,
    /// See [`WatchConfig::max_watches`].
    pub max_watches: Option<usize>,
    /// See [`WatchConfig::max_waiting`].
    pub max_waiting: usize,
    pub settle: Duration,
    pub counters: Arc<WatchCounters>,
    pub shutdown: AtomicBool,
    /// A full rescan has been asked for and not started yet.
    pub rescan_pending: AtomicBool,
    /// A spool root may have been deleted, moved or replaced: check the roots now.
    pub recheck_roots: AtomicBool,
    /// inotify watch descriptor → (spool, directory).
    pub watch_dirs: Mutex<HashMap<i32, (SpoolId, PathBuf)>>,
    /// Files that appeared without a close-write yet, or were found by a scan while recently
    /// modified: reported by the scanner once unchanged for the settle time.
    pub settling: Mutex<HashMap<PathBuf, Settling>>,
}

/// A file waiting to settle.
pub(crate) struct Settling {
    pub spool: SpoolId,
    pub check_at: Instant,
}

impl Shared {
    /// The spool that contains `path`, and the path relative to its root.
    pub fn relative<'p>(&self, spool: SpoolId, path: &'p Path) -> Option<&'p Path> {
        path.strip_prefix(&self.spools[spool].root).ok()
    }

    /// True when `dir` must not be watched or scanned.
    pub fn skips_dir(&self, spool: SpoolId, dir: &Path) -> bool {
        let spool_cfg = &self.spools[spool];
        if spool_cfg.skip_dirs.iter().any(|skip| dir.starts_with(skip)) {
            return true;
        }
        match dir.strip_prefix(&spool_cfg.root) {
            Ok(rel) if rel.as_os_str().is_empty() => false,
            Ok(rel) => !spool_cfg.filter.accepts_dir(rel),
            Err(_) => true,
        }
    }

    pub fn settle_later(&self, spool: SpoolId, path: PathBuf) {
        let check_at = Instant::now() + self.settle;
        crate::lock(&self.settling).insert(path, Settling { spool, check_at });
    }
}

/// Messages to the scanner thread.
pub(crate) enum ScanRequest {
    /// Watch (if watched) and scan this directory and everything below it.
    Dir(SpoolId, PathBuf),
}

/// A running watcher. Dropping it does not stop it; call [`Watcher::stop`].
pub struct Watcher {
    shared: Arc<Shared>,
    requests: Sender<ScanRequest>,
    threads: Vec<JoinHandle<()>>,
}

/// True for file systems on which inotify reports nothing about changes made by other hosts.
fn inotify_is_blind(root: &Path) -> bool {
    const BLIND: &[i64] = &[
        0x6969,      // NFS
        0x517B,      // SMB
        0xFF53_4D42, // CIFS
        0xFE53_4D42, // SMB2
        0x6573_5546, // FUSE
        0x0102_1997, // 9p
        0x00C3_6400, // Ceph
    ];
    match rustix::fs::statfs(root) {
        #[allow(clippy::unnecessary_cast)]
        Ok(stat) => BLIND.contains(&(stat.f_type as i64)),
        Err(_) => false,
    }
}

impl Watcher {
    /// Starts watching: sets up every watch first, then scans every spool, so files that
    /// arrived while probewatch was down are reported too. Ready files go to `ready`.
    pub fn start(
        config: WatchConfig,
        ready: SyncSender<FileReady>,
        counters: Arc<WatchCounters>,
    ) -> Result<Watcher, WatchError> {
        let polled: Vec<bool> = config
            .spools
            .iter()
            .map(|spool| match spool.mode {
                WatchMode::Poll(_) => true,
                WatchMode::Inotify => false,
                WatchMode::Auto => inotify_is_blind(&spool.root),
            })
            .collect();
        let poll_interval = config
            .spools
            .iter()
            .zip(&polled)
            .filter(|(_, polled)| **polled)
            .map(|(spool, _)| match spool.mode {
                WatchMode::Poll(interval) => interval,
                _ => config.auto_poll_interval,
            })
            .min();
        for (spool, polled) in config.spools.iter().zip(&polled) {
            let how = if *polled { "polling" } else { "inotify" };
            tracing::info!(spool = %spool.root.display(), how, "watching spool");
        }
        let shared = Arc::new(Shared {
            spools: config.spools,
            polled,
            max_watches: config.max_watches,
            max_waiting: config.max_waiting.max(1),
            settle: config.settle,
            counters,
            shutdown: AtomicBool::new(false),
            rescan_pending: AtomicBool::new(true),
            recheck_roots: AtomicBool::new(false),
            watch_dirs: Mutex::new(HashMap::new()),
            settling: Mutex::new(HashMap::new()),
        });
        writers::ignore_lease_break_signal();
        let inotify = inotify::Inotify::init().map_err(WatchError::Inotify)?;
        let watches = inotify.watches();
        let (requests, request_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        let reader = reader::Reader::new(shared.clone(), inotify, ready.clone(), requests.clone());
        threads.push(
            std::thread::Builder::new()
                .name("pw-inotify".into())
                .spawn(move || reader.run())
                .map_err(|e| WatchError::Thread("inotify reader", e))?,
        );
        let scanner = scanner::Scanner::new(
            shared.clone(),
            watches,
            ready,
            request_rx,
            scanner::Intervals {
                poll: poll_interval,
                unwatched_poll: config.auto_poll_interval,
                rescan: config.rescan_interval,
            },
        );
        threads.push(
            std::thread::Builder::new()
                .name("pw-scanner".into())
                .spawn(move || scanner.run())
                .map_err(|e| WatchError::Thread("scanner", e))?,
        );
        Ok(Watcher {
            shared,
            requests,
            threads,
        })
    }

    /// Asks for a full rescan of every spool.
    pub fn rescan(&self) {
        self.shared.rescan_pending.store(true, Ordering::SeqCst);
    }

    /// Asks for a scan of one directory (watching it first).
    pub fn scan_dir(&self, spool: SpoolId, dir: PathBuf) {
        let _ = self.requests.send(ScanRequest::Dir(spool, dir));
    }

    /// Stops both threads and waits for them.
    pub fn stop(self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        drop(self.requests);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
