//! The scanner thread: directory scans (startup, new directories, rescans), settle timers,
//! and polling for spools where inotify is blind.
//!
//! Every scan of a watched spool adds a directory's watch *before* listing it
//! ("watch-then-scan"), so a file created at any moment is either listed or reported by the
//! watch. A scanned file whose mtime is younger than the settle time may still be open for
//! writing; it is not reported yet but put on the settle list: if its writer closes it, the
//! close-write event reports it at once, otherwise the settle timer does.
//!
//! It also heals what inotify cannot: every few seconds (and at once after an
//! `IN_DELETE_SELF`, `IN_MOVE_SELF` or `IN_IGNORED` on a spool root) it checks each spool
//! root; one that was deleted and recreated, or moved away and back, is watched again and
//! rescanned, one that is missing or became a symlink is reported as not watched. Directories
//! the inotify watch limit left unwatched are polled (and watched as soon as the limit
//! allows), and a periodic full rescan makes up for any event missed for any other reason.

use std::collections::{BTreeSet, HashMap};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use inotify::{WatchDescriptor, WatchMask, Watches};

use crate::mtime_ns;
use crate::walk::walk_files;
use crate::writers::{Writers, writers};
use crate::{FileReady, ReadyCause, ScanRequest, Shared, SpoolId};

/// What a poll remembers of a file between two polls.
struct PollState {
    size: u64,
    mtime_ns: i64,
    reported: bool,
}

pub(crate) struct Scanner {
    shared: Arc<Shared>,
    watches: Watches,
    /// The descriptor of every watch this thread added, by id, so a spool's watches can be
    /// removed when its root is replaced.
    descriptors: HashMap<i32, WatchDescriptor>,
    ready: SyncSender<FileReady>,
    requests: Receiver<ScanRequest>,
    intervals: Intervals,
    poll_state: HashMap<PathBuf, PollState>,
    /// Per spool, the device and inode of the root directory being watched (`None`: not
    /// watched yet, or missing).
    roots: Vec<Option<(u64, u64)>>,
    /// Directories the watch limit left unwatched, polled instead.
    unwatched: BTreeSet<(SpoolId, PathBuf)>,
    /// Size and mtime of each file in an unwatched directory when it was last reported.
    unwatched_files: HashMap<PathBuf, (u64, i64)>,
    /// False once the ingest side hung up.
    alive: bool,
}

/// How often the scanner does its periodic work.
pub(crate) struct Intervals {
    /// Polling of polled spools (`None`: no spool is polled).
    pub poll: Option<Duration>,
    /// Polling of directories the watch limit left unwatched.
    pub unwatched_poll: Duration,
    /// Safety rescans of every spool (`None`: never).
    pub rescan: Option<Duration>,
}

/// How often spool roots are checked without an event asking for it.
const ROOT_CHECK_EVERY: Duration = Duration::from_secs(2);

fn mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::CREATE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

impl Scanner {
    pub fn new(
        shared: Arc<Shared>,
        watches: Watches,
        ready: SyncSender<FileReady>,
        requests: Receiver<ScanRequest>,
        intervals: Intervals,
    ) -> Scanner {
        let roots = vec![None; shared.spools.len()];
        Scanner {
            shared,
            watches,
            descriptors: HashMap::new(),
            ready,
            requests,
            intervals,
            poll_state: HashMap::new(),
            roots,
            unwatched: BTreeSet::new(),
            unwatched_files: HashMap::new(),
            alive: true,
        }
    }

    pub fn run(mut self) {
        let tick =
            (self.shared.settle / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut next_poll = Instant::now();
        let mut next_root_check = Instant::now() + ROOT_CHECK_EVERY;
        let mut next_unwatched_poll = Instant::now() + self.intervals.unwatched_poll;
        let mut next_rescan = self.intervals.rescan.map(|every| Instant::now() + every);
        let mut first = true;
        while self.alive && !self.shared.shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self.shared.recheck_roots.swap(false, Ordering::SeqCst) || now >= next_root_check {
                if !first {
                    self.check_roots();
                }
                next_root_check = now + ROOT_CHECK_EVERY;
            }
            if let Some(at) = next_rescan
                && now >= at
            {
                self.shared.rescan_pending.store(true, Ordering::SeqCst);
                next_rescan = self.intervals.rescan.map(|every| now + every);
            }
            if !self.unwatched.is_empty() && now >= next_unwatched_poll {
                self.poll_unwatched();
                next_unwatched_poll = Instant::now() + self.intervals.unwatched_poll;
            }
            if self.shared.rescan_pending.swap(false, Ordering::SeqCst) {
                self.full_scan(first);
                if first {
                    self.shared
                        .counters
                        .startup_scan_done
                        .store(true, Ordering::SeqCst);
                    first = false;
                }
            }
            match self.requests.recv_timeout(tick) {
                Ok(ScanRequest::Dir(spool, dir)) => self.scan(spool, &dir, ReadyCause::Scan),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if self.shared.shutdown.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(tick);
                }
            }
            self.check_settling();
            if let Some(interval) = self.intervals.poll
                && Instant::now() >= next_poll
            {
                self.poll();
                next_poll = Instant::now() + interval;
            }
        }
    }

    fn full_scan(&mut self, startup: bool) {
        if !startup {
            self.shared.counters.rescans.fetch_add(1, Ordering::Relaxed);
        }
        let started = Instant::now();
        let before = self.shared.counters.files_ready.load(Ordering::Relaxed);
        for spool in 0..self.shared.spools.len() {
            if self.shared.polled[spool] {
                continue; // polled spools are scanned by poll()
            }
            if startup {
                // Records the root's identity (and refuses a root that is no directory).
                self.check_root(spool, true);
                continue;
            }
            if self.roots[spool].is_none() {
                continue; // missing or refused: check_roots takes it up when it is back
            }
            let root = self.shared.spools[spool].root.clone();
            self.scan(spool, &root, ReadyCause::Scan);
        }
        let reported = self.shared.counters.files_ready.load(Ordering::Relaxed) - before;
        let what = if startup { "startup scan" } else { "rescan" };
        tracing::info!(
            files = reported,
            seconds = started.elapsed().as_secs_f64(),
            "{what} finished"
        );
    }

    /// Watches and scans `dir` and everything below it, reporting files with `cause`.
    fn scan(&mut self, spool: SpoolId, dir: &Path, cause: ReadyCause) {
        let shared = self.shared.clone();
        if shared.skips_dir(spool, dir) {
            return;
        }
        let spool_cfg = &shared.spools[spool];
        let watched = !shared.polled[spool];
        let mut found: Vec<(PathBuf, Metadata)> = Vec::new();
        let mut progress_at = Instant::now() + Duration::from_secs(5);
        let watches = &mut self.watches;
        let descriptors = &mut self.descriptors;
        let unwatched = &mut self.unwatched;
        let mut sink = Sink {
            shared: &shared,
            ready: &self.ready,
            alive: &mut self.alive,
        };
        walk_files(
            &spool_cfg.root,
            dir,
            &spool_cfg.filter,
            &spool_cfg.skip_dirs,
            &mut |d| {
                if watched && !watch_dir(watches, descriptors, &shared, spool, d) {
                    unwatched.insert((spool, d.to_path_buf()));
                }
            },
            &mut |path, meta| {
                found.push((path, meta));
                // Report in slices so a huge backlog starts flowing before the walk ends.
                if found.len() >= 1024 {
                    for (path, meta) in found.drain(..) {
                        sink.report_scanned(spool, path, &meta, cause);
                    }
                    if Instant::now() >= progress_at {
                        tracing::info!(
                            spool = %spool_cfg.root.display(),
                            reported = shared.counters.files_ready.load(Ordering::Relaxed),
                            "scan in progress"
                        );
                        progress_at = Instant::now() + Duration::from_secs(5);
                    }
                }
            },
        );
        for (path, meta) in found {
            sink.report_scanned(spool, path, &meta, cause);
        }
        self.count_unwatched();
    }

    fn count_unwatched(&self) {
        self.shared
            .counters
            .unwatched_dirs
            .store(self.unwatched.len() as u64, Ordering::Relaxed);
    }

    /// Checks every watched spool's root (see the module doc).
    fn check_roots(&mut self) {
        for spool in 0..self.shared.spools.len() {
            if !self.shared.polled[spool] {
                self.check_root(spool, false);
            }
        }
    }

    /// Checks one spool root: watches and scans it when it is a directory other than the
    /// one watched (or none was), and records why it is not watched otherwise.
    fn check_root(&mut self, spool: SpoolId, startup: bool) {
        use std::os::unix::fs::MetadataExt;
        let root = self.shared.spools[spool].root.clone();
        // Scanned only once the problem is cleared, so that no file of the spool is
        // reported while it still reads as not watched.
        let mut rescan = false;
        let problem = match std::fs::symlink_metadata(&root) {
            Ok(meta) if meta.file_type().is_dir() => {
                let identity = (meta.dev(), meta.ino());
                let root_watched = crate::lock(&self.shared.watch_dirs)
                    .values()
                    .any(|(s, dir)| *s == spool && *dir == root);
                if self.roots[spool] != Some(identity) || !root_watched {
                    let again = !startup;
                    if again {
                        self.forget_spool(spool);
                        self.shared
                            .counters
                            .spool_rewatches
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            spool = %root.display(),
                            "spool directory was deleted, moved or replaced and is back: \
                             watching it again and rescanning it"
                        );
                    }
                    self.roots[spool] = Some(identity);
                    rescan = true;
                }
                None
            }
            Ok(meta) if meta.file_type().is_symlink() => Some(format!(
                "spool {} is a symbolic link; probewatch does not follow links out of a spool: \
                 configure the directory it points to",
                root.display()
            )),
            Ok(_) => Some(format!("spool {} is not a directory", root.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "spool directory {} is missing (deleted or moved away); files written there \
                 are not seen until it is back",
                root.display()
            )),
            Err(err) => Some(format!("spool directory {}: {err}", root.display())),
        };
        if problem.is_some() && self.roots[spool].is_some() {
            self.forget_spool(spool);
            self.roots[spool] = None;
        }
        let changed = self.shared.counters.set_problem(&root, problem.clone());
        if changed {
            match problem {
                Some(problem) => tracing::error!("{problem}"),
                None => tracing::info!(spool = %root.display(), "spool directory is watched again"),
            }
        }
        if rescan {
            self.scan(spool, &root, ReadyCause::Scan);
        }
    }

    /// Removes every watch of `spool` (its root was replaced: the old watches would report
    /// paths that are no longer there).
    fn forget_spool(&mut self, spool: SpoolId) {
        let ids: Vec<i32> = crate::lock(&self.shared.watch_dirs)
            .iter()
            .filter(|(_, (s, _))| *s == spool)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(wd) = self.descriptors.remove(&id) {
                let _ = self.watches.remove(wd);
            }
            if crate::lock(&self.shared.watch_dirs).remove(&id).is_some() {
                self.shared
                    .counters
                    .watched_dirs
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.unwatched.retain(|(s, _)| *s != spool);
        self.count_unwatched();
    }

    /// Directories the watch limit left unwatched: watch them if the limit now allows (and
    /// scan them), otherwise list their files and report the new and changed ones.
    fn poll_unwatched(&mut self) {
        let shared = self.shared.clone();
        let dirs: Vec<(SpoolId, PathBuf)> = self.unwatched.iter().cloned().collect();
        let mut listed = std::collections::HashSet::new();
        for (spool, dir) in dirs {
            if watch_dir(
                &mut self.watches,
                &mut self.descriptors,
                &shared,
                spool,
                &dir,
            ) {
                self.unwatched.remove(&(spool, dir.clone()));
                tracing::info!(dir = %dir.display(), "directory is watched now");
                self.scan(spool, &dir, ReadyCause::Scan);
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                self.unwatched.remove(&(spool, dir));
                continue;
            };
            let cfg = &shared.spools[spool];
            for entry in entries.flatten() {
                let path = entry.path();
                let accepted = path
                    .strip_prefix(&cfg.root)
                    .is_ok_and(|rel| cfg.filter.accepts_file(rel));
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if !accepted || !meta.file_type().is_file() {
                    continue;
                }
                listed.insert(path.clone());
                let now = (meta.len(), mtime_ns(&meta));
                if self.unwatched_files.get(&path) == Some(&now) {
                    continue;
                }
                let age = age(&meta);
                if age < shared.settle && writers(&path) != Writers::None {
                    continue; // still being written: the next poll looks again
                }
                self.unwatched_files.insert(path.clone(), now);
                self.send(FileReady {
                    spool,
                    path,
                    cause: ReadyCause::Poll,
                    seen_at: Instant::now(),
                });
            }
        }
        self.unwatched_files.retain(|path, _| listed.contains(path));
        self.count_unwatched();
    }

    fn send(&mut self, ready: FileReady) {
        Sink {
            shared: &self.shared,
            ready: &self.ready,
            alive: &mut self.alive,
        }
        .send(ready);
    }

    /// Reports settling files that have not changed for the settle time.
    fn check_settling(&mut self) {
        let now = Instant::now();
        let due: Vec<(PathBuf, SpoolId)> = {
            let settling = crate::lock(&self.shared.settling);
            settling
                .iter()
                .filter(|(_, s)| s.check_at <= now)
                .map(|(path, s)| (path.clone(), s.spool))
                .collect()
        };
        for (path, spool) in due {
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_file() => meta,
                _ => {
                    self.forget_settling(&path);
                    continue;
                }
            };
            let age = age(&meta);
            if age < self.shared.settle || writers(&path) == Writers::Some {
                // Still changing or still open for writing: look again later.
                let mut settling = crate::lock(&self.shared.settling);
                if let Some(entry) = settling.get_mut(&path) {
                    entry.check_at = now
                        + self
                            .shared
                            .settle
                            .saturating_sub(age)
                            .max(Duration::from_millis(100));
                }
                continue;
            }
            // Only report if nobody (a close-write event) took it off the list meanwhile.
            if self.forget_settling(&path) {
                self.send(FileReady {
                    spool,
                    path,
                    cause: ReadyCause::Settled,
                    seen_at: now,
                });
            }
        }
    }

    fn forget_settling(&self, path: &Path) -> bool {
        crate::lock(&self.shared.settling).remove(path).is_some()
    }

    /// One poll of every polled spool: a file is reported once its size and mtime held still
    /// across two polls (or it is already older than the settle time).
    fn poll(&mut self) {
        let shared = self.shared.clone();
        let settle = shared.settle;
        let mut seen: HashMap<PathBuf, PollState> = HashMap::with_capacity(self.poll_state.len());
        let mut to_report = Vec::new();
        for spool in 0..shared.spools.len() {
            if !shared.polled[spool] {
                continue;
            }
            let cfg = &shared.spools[spool];
            walk_files(
                &cfg.root,
                &cfg.root,
                &cfg.filter,
                &cfg.skip_dirs,
                &mut |_| {},
                &mut |path, meta| {
                    let size = meta.len();
                    let mtime = mtime_ns(&meta);
                    let old_enough = meta
                        .modified()
                        .ok()
                        .and_then(|m| SystemTime::now().duration_since(m).ok())
                        .is_some_and(|age| age >= settle);
                    let state = match self.poll_state.remove(&path) {
                        Some(prev) if prev.size == size && prev.mtime_ns == mtime => {
                            if !prev.reported {
                                to_report.push((spool, path.clone()));
                            }
                            PollState {
                                size,
                                mtime_ns: mtime,
                                reported: true,
                            }
                        }
                        _ if old_enough => {
                            to_report.push((spool, path.clone()));
                            PollState {
                                size,
                                mtime_ns: mtime,
                                reported: true,
                            }
                        }
                        _ => PollState {
                            size,
                            mtime_ns: mtime,
                            reported: false,
                        },
                    };
                    seen.insert(path, state);
                },
            );
        }
        self.poll_state = seen;
        for (spool, path) in to_report {
            self.send(FileReady {
                spool,
                path,
                cause: ReadyCause::Poll,
                seen_at: Instant::now(),
            });
        }
    }
}

/// How long ago a file was last modified (zero for a time in the future).
fn age(meta: &Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or(Duration::ZERO)
}

/// Adds (or refreshes) the watch on `dir` and records which spool directory it is; false
/// when the inotify watch limit refused it (the caller polls the directory instead).
fn watch_dir(
    watches: &mut Watches,
    descriptors: &mut HashMap<i32, WatchDescriptor>,
    shared: &Shared,
    spool: SpoolId,
    dir: &Path,
) -> bool {
    let known = crate::lock(&shared.watch_dirs)
        .values()
        .any(|(s, d)| *s == spool && d == dir);
    let at_cap = shared
        .max_watches
        .is_some_and(|max| shared.counters.watched_dirs.load(Ordering::Relaxed) >= max as u64);
    let added = if at_cap && !known {
        Err(std::io::Error::from_raw_os_error(
            rustix::io::Errno::NOSPC.raw_os_error(),
        ))
    } else {
        watches.add(dir, mask())
    };
    match added {
        Ok(wd) => {
            let id = wd.get_watch_descriptor_id();
            descriptors.insert(id, wd);
            let mut map = crate::lock(&shared.watch_dirs);
            let previous = map.insert(id, (spool, dir.to_path_buf()));
            if previous.is_none() {
                shared.counters.watched_dirs.fetch_add(1, Ordering::Relaxed);
            }
            true
        }
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
            tracing::error!(
                dir = %dir.display(),
                "cannot watch directory: inotify watch limit reached \
                 (raise fs.inotify.max_user_watches, or max_watched_dirs); polling it instead"
            );
            false
        }
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch directory");
            true
        }
    }
}

/// Where scanned files go.
struct Sink<'a> {
    shared: &'a Shared,
    ready: &'a SyncSender<FileReady>,
    alive: &'a mut bool,
}

impl Sink<'_> {
    fn send(&mut self, ready: FileReady) {
        if self.ready.send(ready).is_err() {
            *self.alive = false;
        } else {
            self.shared
                .counters
                .files_ready
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A scanned file: reported now if it has been still for the settle time or nobody has it
    /// open for writing, otherwise left to settle.
    fn report_scanned(
        &mut self,
        spool: SpoolId,
        path: PathBuf,
        meta: &Metadata,
        cause: ReadyCause,
    ) {
        let age = age(meta);
        // Recently modified: report it now only if nobody is still writing it; otherwise its
        // close-write event (or, failing that, the settle timer) will.
        if age < self.shared.settle && writers(&path) != Writers::None {
            self.shared.settle_later(spool, path);
        } else {
            self.send(FileReady {
                spool,
                path,
                cause,
                seen_at: Instant::now(),
            });
        }
    }
}
