//! The inotify reader thread: reads kernel events and hands them on, never waiting.
//!
//! At 30,000 files/s the kernel's default queue of 16,384 events fills in half a second, so
//! this thread does nothing slow: no parsing, no database, no directory walks. A full ingest
//! queue does not block it either: the file waits in the reader's own list (in arrival
//! order, once per path) and is handed on as room frees up. A burst of any size up to
//! [`crate::WatchConfig::max_waiting`] paths thus costs no rescan; past it the waiting list is
//! dropped and a full rescan is asked for, just as on a kernel overflow.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Sender, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify};

use crate::{FileReady, ReadyCause, ScanRequest, Shared};

pub(crate) struct Reader {
    shared: Arc<Shared>,
    inotify: Inotify,
    ready: SyncSender<FileReady>,
    requests: Sender<ScanRequest>,
    waiting: Waiting,
}

/// Files reported while the ingest queue was full, oldest first, each path once.
#[derive(Default)]
struct Waiting {
    files: VecDeque<FileReady>,
    paths: HashSet<PathBuf>,
}

/// What one event asks for.
enum Action {
    Ready(usize, PathBuf, ReadyCause),
    Settle(usize, PathBuf),
    ScanDir(usize, PathBuf),
    /// The kernel removed this watch (its directory is gone).
    Forget(i32),
    Nothing,
}

impl Reader {
    pub fn new(
        shared: Arc<Shared>,
        inotify: Inotify,
        ready: SyncSender<FileReady>,
        requests: Sender<ScanRequest>,
    ) -> Reader {
        Reader {
            shared,
            inotify,
            ready,
            requests,
            waiting: Waiting::default(),
        }
    }

    pub fn run(mut self) {
        // Large enough for thousands of events per read(2).
        let mut buffer = vec![0u8; 256 * 1024];
        let idle = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        // While files wait for room, look back soon: the queue drains at the writer's pace.
        let busy = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000,
        };
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            if !self.hand_on_waiting() {
                return;
            }
            let timeout = if self.waiting.files.is_empty() {
                &idle
            } else {
                &busy
            };
            let readable = {
                let mut fds = [rustix::event::PollFd::new(
                    &self.inotify,
                    rustix::event::PollFlags::IN,
                )];
                rustix::event::poll(&mut fds, Some(timeout))
            };
            match readable {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "polling inotify failed");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
            let actions: Vec<Action> = match self.inotify.read_events(&mut buffer) {
                Ok(events) => {
                    let watch_dirs = crate::lock(&self.shared.watch_dirs);
                    events
                        .map(|event| {
                            self.shared.counters.events.fetch_add(1, Ordering::Relaxed);
                            self.classify(
                                &watch_dirs,
                                event.wd.get_watch_descriptor_id(),
                                event.mask,
                                event.name,
                            )
                        })
                        .collect()
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => {
                    tracing::error!(error = %err, "reading inotify events failed");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            if !self.apply(actions) {
                return;
            }
        }
    }

    /// Decides what an event means, under the watch-map lock (no IO here).
    fn classify(
        &self,
        watch_dirs: &std::collections::HashMap<i32, (usize, PathBuf)>,
        wd: i32,
        mask: EventMask,
        name: Option<&OsStr>,
    ) -> Action {
        let shared = &self.shared;
        if mask.contains(EventMask::Q_OVERFLOW) {
            shared.counters.overflows.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "inotify queue overflowed: events were lost, rescanning every spool \
                 (consider raising fs.inotify.max_queued_events)"
            );
            shared.rescan_pending.store(true, Ordering::SeqCst);
            return Action::Nothing;
        }
        let Some((spool, dir)) = watch_dirs.get(&wd) else {
            return Action::Nothing;
        };
        let Some(name) = name else {
            if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED)
                && *dir == shared.spools[*spool].root
            {
                // The scanner checks the root at once: gone, moved, or back again.
                shared.recheck_roots.store(true, Ordering::SeqCst);
            }
            if mask.contains(EventMask::IGNORED) {
                return Action::Forget(wd);
            }
            return Action::Nothing;
        };
        let path = dir.join(name);
        if mask.contains(EventMask::ISDIR) {
            if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
                && !shared.skips_dir(*spool, &path)
            {
                return Action::ScanDir(*spool, path);
            }
            return Action::Nothing;
        }
        let accepted = shared
            .relative(*spool, &path)
            .is_some_and(|rel| shared.spools[*spool].filter.accepts_file(rel));
        if !accepted {
            return Action::Nothing;
        }
        if mask.contains(EventMask::CLOSE_WRITE) {
            Action::Ready(*spool, path, ReadyCause::CloseWrite)
        } else if mask.contains(EventMask::MOVED_TO) {
            Action::Ready(*spool, path, ReadyCause::MovedIn)
        } else if mask.contains(EventMask::CREATE) {
            Action::Settle(*spool, path)
        } else {
            Action::Nothing
        }
    }

    /// Hands waiting files on while the queue has room; false when the ingest side has gone
    /// away.
    fn hand_on_waiting(&mut self) -> bool {
        while let Some(ready) = self.waiting.files.pop_front() {
            let path = ready.path.clone();
            match self.ready.try_send(ready) {
                Ok(()) => {
                    self.waiting.paths.remove(&path);
                    self.shared
                        .counters
                        .files_ready
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(ready)) => {
                    self.waiting.files.push_front(ready);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        self.shared
            .counters
            .queue_waiting
            .store(self.waiting.files.len() as u64, Ordering::Relaxed);
        true
    }

    /// Queues `ready` behind the files already waiting, or hands it on at once; false when
    /// the ingest side has gone away. Past the waiting list's bound, everything waiting is
    /// dropped and a rescan is asked for (it reports every file again).
    fn hand_on(&mut self, ready: FileReady) -> bool {
        if self.waiting.files.is_empty() {
            match self.ready.try_send(ready) {
                Ok(()) => {
                    self.shared
                        .counters
                        .files_ready
                        .fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(TrySendError::Full(ready)) => return self.wait(ready),
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        self.wait(ready)
    }

    fn wait(&mut self, ready: FileReady) -> bool {
        if self.waiting.paths.contains(&ready.path) {
            // Already waiting: that one reads the file as it is when its turn comes.
            return true;
        }
        if self.waiting.files.len() >= self.shared.max_waiting {
            let dropped = self.waiting.files.len() as u64 + 1;
            self.waiting = Waiting::default();
            self.shared
                .counters
                .queue_full
                .fetch_add(dropped, Ordering::Relaxed);
            if !self.shared.rescan_pending.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    dropped,
                    "ingest queue full and too many files waiting: dropped them, a rescan \
                     will pick them up"
                );
            }
            return true;
        }
        self.waiting.paths.insert(ready.path.clone());
        self.waiting.files.push_back(ready);
        true
    }

    /// Carries out the actions; false when the ingest side has gone away.
    fn apply(&mut self, actions: Vec<Action>) -> bool {
        let shared = self.shared.clone();
        let now = Instant::now();
        let mut ready = Vec::new();
        // One lock for the whole read(2) batch rather than one per event.
        let mut settling = crate::lock(&shared.settling);
        for action in actions {
            match action {
                Action::Ready(spool, path, cause) => {
                    settling.remove(&path);
                    ready.push(FileReady {
                        spool,
                        path,
                        cause,
                        seen_at: now,
                    });
                }
                Action::Settle(spool, path) => {
                    let check_at = now + shared.settle;
                    settling.insert(path, crate::Settling { spool, check_at });
                }
                Action::ScanDir(spool, path) => {
                    let _ = self.requests.send(ScanRequest::Dir(spool, path));
                }
                Action::Forget(wd) => {
                    if crate::lock(&shared.watch_dirs).remove(&wd).is_some() {
                        shared.counters.watched_dirs.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Action::Nothing => {}
            }
        }
        drop(settling);
        for file in ready {
            if !self.hand_on(file) {
                return false;
            }
        }
        shared
            .counters
            .queue_waiting
            .store(self.waiting.files.len() as u64, Ordering::Relaxed);
        true
    }
}
