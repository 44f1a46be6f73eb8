//! The scanner thread: directory scans (startup, new directories, rescans), settle timers,
//! and polling for spools where inotify is blind.
//!
//! Every scan of a watched spool adds a directory's watch *before* listing it
//! ("watch-then-scan"), so a file created at any moment is either listed or reported by the
//! watch. A scanned file whose mtime is younger than the settle time may still be open for
//! writing; it is not reported yet but put on the settle list: if its writer closes it, the
//! close-write event reports it at once, otherwise the settle timer does.

use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use inotify::{WatchMask, Watches};

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
    ready: SyncSender<FileReady>,
    requests: Receiver<ScanRequest>,
    poll_interval: Option<Duration>,
    poll_state: HashMap<PathBuf, PollState>,
    /// False once the ingest side hung up.
    alive: bool,
}

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
        poll_interval: Option<Duration>,
    ) -> Scanner {
        Scanner {
            shared,
            watches,
            ready,
            requests,
            poll_interval,
            poll_state: HashMap::new(),
            alive: true,
        }
    }

    pub fn run(mut self) {
        let tick =
            (self.shared.settle / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut next_poll = Instant::now();
        let mut first = true;
        while self.alive && !self.shared.shutdown.load(Ordering::Relaxed) {
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
            if let Some(interval) = self.poll_interval
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
                if watched {
                    watch_dir(watches, &shared, spool, d);
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
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or(Duration::ZERO);
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

/// Adds (or refreshes) the watch on `dir` and records which spool directory it is.
fn watch_dir(watches: &mut Watches, shared: &Shared, spool: SpoolId, dir: &Path) {
    match watches.add(dir, mask()) {
        Ok(wd) => {
            let mut map = crate::lock(&shared.watch_dirs);
            let previous = map.insert(wd.get_watch_descriptor_id(), (spool, dir.to_path_buf()));
            if previous.is_none() {
                shared.counters.watched_dirs.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
            tracing::error!(
                dir = %dir.display(),
                "cannot watch directory: inotify watch limit reached \
                 (raise fs.inotify.max_user_watches); its files are found only by rescans"
            );
        }
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch directory");
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
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
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
