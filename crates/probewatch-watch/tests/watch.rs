//! The watcher against a real temporary directory: each way a file can arrive.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use probewatch_watch::*;

fn start(root: &Path, mode: WatchMode, settle: Duration) -> (Watcher, Receiver<FileReady>) {
    let (watcher, rx, _) = start_with(root, mode, settle, |_| {});
    (watcher, rx)
}

/// [`start`] with the config changed by `adjust`, returning the counters too.
fn start_with(
    root: &Path,
    mode: WatchMode,
    settle: Duration,
    adjust: impl FnOnce(&mut WatchConfig),
) -> (Watcher, Receiver<FileReady>, Arc<WatchCounters>) {
    let filter = Filter::new(
        &["*.xml".to_string()],
        &DEFAULT_EXCLUDE
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )
    .expect("filter");
    let config = WatchConfig {
        spools: vec![SpoolWatch {
            root: root.to_path_buf(),
            filter,
            skip_dirs: vec![root.join("done")],
            mode,
        }],
        settle,
        auto_poll_interval: Duration::from_millis(100),
        rescan_interval: None,
        max_watches: None,
        max_waiting: DEFAULT_MAX_WAITING,
    };
    let mut config = config;
    adjust(&mut config);
    let (tx, rx) = sync_channel(QUEUE.with(|q| q.get()));
    let counters = Arc::new(WatchCounters::default());
    let watcher = Watcher::start(config, tx, counters.clone()).expect("start");
    (watcher, rx, counters)
}

thread_local! {
    /// The ingest queue's capacity for watchers this test thread starts.
    static QUEUE: std::cell::Cell<usize> = const { std::cell::Cell::new(100_000) };
}

/// [`start_with`] on inotify with a 200 ms settle time; returns once the startup scan ended.
fn start_scanned(
    root: &Path,
    adjust: impl FnOnce(&mut WatchConfig),
) -> (Watcher, Receiver<FileReady>, Arc<WatchCounters>) {
    let started = start_with(root, WatchMode::Inotify, Duration::from_millis(200), adjust);
    eventually("startup scan", Duration::from_secs(10), || {
        started
            .2
            .startup_scan_done
            .load(std::sync::atomic::Ordering::SeqCst)
    });
    started
}

/// Waits until `cond` holds, or panics saying `what`.
fn eventually(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Collects events until `want` distinct paths arrived or the deadline passes.
fn collect(
    rx: &Receiver<FileReady>,
    want: usize,
    within: Duration,
) -> HashMap<PathBuf, Vec<ReadyCause>> {
    let deadline = Instant::now() + within;
    let mut seen: HashMap<PathBuf, Vec<ReadyCause>> = HashMap::new();
    while seen.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ready) => seen.entry(ready.path).or_default().push(ready.cause),
            Err(_) => break,
        }
    }
    seen
}

fn set_old_mtime(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(old)
        .expect("mtime");
}

#[test]
fn close_write_is_reported_and_create_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (watcher, rx) = start(dir.path(), WatchMode::Inotify, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300)); // startup scan of the empty spool
    let path = dir.path().join("a.xml");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(b"<probe name=").expect("write");
    file.flush().expect("flush");
    // Open and half written: nothing may be reported.
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "reported before close"
    );
    file.write_all(b"\"p\"/>").expect("write");
    drop(file);
    let ready = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("reported after close");
    assert_eq!(
        (ready.path.as_path(), ready.cause),
        (path.as_path(), ReadyCause::CloseWrite)
    );
    watcher.stop();
}

#[test]
fn rename_into_place_new_directories_and_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (watcher, rx) = start(dir.path(), WatchMode::Inotify, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    // write-temp-then-rename: the temp name is excluded, the final name arrives as moved-in
    std::fs::write(dir.path().join("r.xml.tmp"), "x").expect("write");
    std::fs::rename(dir.path().join("r.xml.tmp"), dir.path().join("r.xml")).expect("rename");
    // a new directory with a file written right after mkdir (the recursive-watch race)
    let mut expected = vec![dir.path().join("r.xml")];
    for i in 0..50 {
        let sub = dir.path().join(format!("d{i}/e"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join("f.xml"), "x").expect("write");
        expected.push(sub.join("f.xml"));
    }
    // excluded: hidden, wrong extension, the skip dir
    std::fs::write(dir.path().join(".hidden.xml"), "x").expect("write");
    std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
    std::fs::create_dir(dir.path().join("done")).expect("mkdir");
    std::fs::write(dir.path().join("done/old.xml"), "x").expect("write");
    let seen = collect(&rx, expected.len() + 10, Duration::from_secs(5));
    for path in &expected {
        assert!(seen.contains_key(path), "missed {}", path.display());
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "unexpected files: {:?}",
        seen.keys()
    );
    assert_eq!(seen[&dir.path().join("r.xml")], vec![ReadyCause::MovedIn]);
    watcher.stop();
}

#[test]
fn startup_scan_and_hard_links_settle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old.xml");
    std::fs::write(&old, "x").expect("write");
    set_old_mtime(&old);
    let outside = tempfile::tempdir().expect("tempdir");
    let (watcher, rx) = start(dir.path(), WatchMode::Inotify, Duration::from_millis(400));
    let seen = collect(&rx, 1, Duration::from_secs(5));
    assert_eq!(seen.get(&old), Some(&vec![ReadyCause::Scan]));
    // A hard link appears with IN_CREATE only: reported once it has settled.
    let source = outside.path().join("src.xml");
    std::fs::write(&source, "x").expect("write");
    let linked = dir.path().join("linked.xml");
    let start = Instant::now();
    std::fs::hard_link(&source, &linked).expect("link");
    let seen = collect(&rx, 1, Duration::from_secs(5));
    assert_eq!(seen.get(&linked), Some(&vec![ReadyCause::Settled]));
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "reported before settling"
    );
    watcher.stop();
}

#[test]
fn polling_reports_stable_files_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (watcher, rx) = start(
        dir.path(),
        WatchMode::Poll(Duration::from_millis(100)),
        Duration::from_secs(30),
    );
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let path = dir.path().join("sub/p.xml");
    std::fs::write(&path, "x").expect("write");
    let seen = collect(&rx, 1, Duration::from_secs(5));
    assert_eq!(seen.get(&path), Some(&vec![ReadyCause::Poll]));
    // Unchanged: not reported again; changed: reported again.
    assert!(
        rx.recv_timeout(Duration::from_millis(400)).is_err(),
        "reported twice"
    );
    std::fs::write(&path, "xy").expect("write");
    let seen = collect(&rx, 1, Duration::from_secs(5));
    assert_eq!(seen.get(&path), Some(&vec![ReadyCause::Poll]));
    watcher.stop();
}

#[test]
fn a_spool_deleted_and_recreated_is_watched_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("spool");
    std::fs::create_dir(&root).expect("spool");
    let (watcher, rx, counters) = start_scanned(&root, |_| {});
    std::fs::remove_dir_all(&root).expect("delete");
    eventually(
        "the spool reported missing",
        Duration::from_secs(10),
        || counters.problems().iter().any(|p| p.contains("is missing")),
    );
    std::fs::create_dir(&root).expect("recreate");
    std::fs::write(root.join("after.xml"), "x").expect("write");
    let seen = collect(&rx, 1, Duration::from_secs(10));
    assert!(seen.contains_key(&root.join("after.xml")), "{seen:?}");
    assert!(counters.problems().is_empty(), "{:?}", counters.problems());
    assert_eq!(
        counters
            .spool_rewatches
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // And it is watched (not only scanned): a later file arrives by its event.
    std::fs::write(root.join("later.xml"), "x").expect("write");
    let seen = collect(&rx, 1, Duration::from_secs(10));
    assert_eq!(
        seen.get(&root.join("later.xml")),
        Some(&vec![ReadyCause::CloseWrite])
    );
    watcher.stop();
}

#[test]
fn a_spool_moved_away_is_forgotten_and_watched_again_when_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("spool");
    let away = dir.path().join("spool.old");
    std::fs::create_dir(&root).expect("spool");
    let (watcher, rx, counters) = start_scanned(&root, |_| {});
    std::fs::rename(&root, &away).expect("move away");
    eventually(
        "the spool reported missing",
        Duration::from_secs(10),
        || !counters.problems().is_empty(),
    );
    // Written into the moved directory: not the spool any more, never reported.
    std::fs::write(away.join("elsewhere.xml"), "x").expect("write");
    assert!(collect(&rx, 1, Duration::from_millis(500)).is_empty());
    std::fs::rename(&away, &root).expect("move back");
    let seen = collect(&rx, 1, Duration::from_secs(10));
    assert!(
        seen.contains_key(&root.join("elsewhere.xml")),
        "rescanned: {seen:?}"
    );
    eventually("the problem cleared", Duration::from_secs(10), || {
        counters.problems().is_empty()
    });
    watcher.stop();
}

#[test]
fn a_spool_replaced_by_a_symlink_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("spool");
    let other = dir.path().join("elsewhere");
    std::fs::create_dir(&root).expect("spool");
    std::fs::create_dir(&other).expect("other");
    let (watcher, rx, counters) = start_scanned(&root, |_| {});
    std::fs::remove_dir(&root).expect("delete");
    std::os::unix::fs::symlink(&other, &root).expect("symlink");
    eventually("the symlink refused", Duration::from_secs(10), || {
        counters
            .problems()
            .iter()
            .any(|p| p.contains("symbolic link"))
    });
    std::fs::write(other.join("linked.xml"), "x").expect("write");
    assert!(collect(&rx, 1, Duration::from_millis(500)).is_empty());
    watcher.stop();
}

#[test]
fn directories_past_the_watch_limit_are_polled_and_watched_when_room_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("spool");
    std::fs::create_dir_all(root.join("a")).expect("a");
    std::fs::create_dir_all(root.join("b")).expect("b");
    // Room for the root only: a and b are polled.
    let (watcher, rx, counters) = start_scanned(&root, |c| c.max_watches = Some(1));
    assert_eq!(
        counters
            .unwatched_dirs
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    std::fs::write(root.join("a/one.xml"), "1").expect("write");
    std::fs::write(root.join("b/two.xml"), "2").expect("write");
    let seen = collect(&rx, 2, Duration::from_secs(10));
    assert_eq!(
        seen.get(&root.join("a/one.xml")),
        Some(&vec![ReadyCause::Poll])
    );
    assert_eq!(
        seen.get(&root.join("b/two.xml")),
        Some(&vec![ReadyCause::Poll])
    );
    // Reported once, not at every poll.
    assert!(collect(&rx, 1, Duration::from_millis(500)).is_empty());
    // A changed file is reported again.
    std::fs::write(root.join("a/one.xml"), "one").expect("rewrite");
    let seen = collect(&rx, 1, Duration::from_secs(10));
    assert!(seen.contains_key(&root.join("a/one.xml")), "{seen:?}");
    watcher.stop();
}

#[test]
fn a_periodic_rescan_reports_a_change_no_event_announced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("spool");
    std::fs::create_dir(&root).expect("spool");
    let file = root.join("touched.xml");
    std::fs::write(&file, "x").expect("write");
    set_old_mtime(&file);
    let (watcher, rx, counters) =
        start_with(&root, WatchMode::Inotify, Duration::from_millis(200), |c| {
            c.rescan_interval = Some(Duration::from_millis(300))
        });
    assert_eq!(
        collect(&rx, 1, Duration::from_secs(10)).len(),
        1,
        "startup scan"
    );
    // Only the mtime changes (IN_ATTRIB, which is not watched; opened read-only, so no
    // close-write either): just a rescan sees it.
    std::fs::File::open(&file)
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .expect("utime");
    let seen = collect(&rx, 1, Duration::from_secs(10));
    assert_eq!(seen.get(&file), Some(&vec![ReadyCause::Scan]));
    assert!(counters.rescans.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    watcher.stop();
}

/// Writes `n` files `f00000.xml`… into `dir`, each closed after writing (one close-write each).
fn write_files(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("f{i:05}.xml"));
            std::fs::write(&path, "<x/>").expect("write");
            path
        })
        .collect()
}

#[test]
fn a_burst_bigger_than_the_ingest_queue_waits_in_the_reader_without_a_rescan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("spool");
    std::fs::create_dir(&root).expect("spool");
    QUEUE.with(|q| q.set(8));
    let (watcher, rx, counters) = start_scanned(&root, |_| {});
    // Nobody reads the queue while the burst is written: 8 fit, the rest must wait.
    let written = write_files(&root, 3_000);
    eventually(
        "files waiting in the reader",
        Duration::from_secs(10),
        || {
            counters
                .queue_waiting
                .load(std::sync::atomic::Ordering::SeqCst)
                > 0
        },
    );
    let seen = collect(&rx, written.len(), Duration::from_secs(30));
    for path in &written {
        assert!(seen.contains_key(path), "{} never reported", path.display());
    }
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(load(&counters.queue_full), 0, "nothing dropped");
    assert_eq!(load(&counters.rescans), 0, "no rescan needed");
    assert_eq!(load(&counters.overflows), 0);
    eventually("the waiting list drained", Duration::from_secs(5), || {
        load(&counters.queue_waiting) == 0
    });
    watcher.stop();
}

#[test]
fn past_the_waiting_bound_files_are_dropped_and_a_rescan_reports_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("spool");
    std::fs::create_dir(&root).expect("spool");
    QUEUE.with(|q| q.set(4));
    let (watcher, rx, counters) = start_scanned(&root, |c| c.max_waiting = 16);
    let written = write_files(&root, 500);
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::SeqCst);
    eventually("files dropped", Duration::from_secs(10), || {
        load(&counters.queue_full) > 0
    });
    // The rescan (and the files it reports) waits for room like everything else.
    let seen = collect(&rx, written.len(), Duration::from_secs(30));
    for path in &written {
        assert!(seen.contains_key(path), "{} never reported", path.display());
    }
    assert!(load(&counters.rescans) >= 1, "a rescan followed the drop");
    watcher.stop();
}
