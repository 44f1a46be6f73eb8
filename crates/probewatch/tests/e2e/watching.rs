//! A file is read only once it is complete, whatever the writer does.

use std::time::Duration;

use crate::util::*;

/// The trap this project exists to avoid: many writers that open, write in chunks with pauses
/// and close. A reader acting on IN_CREATE would see empty or half-written files and reject
/// them (`no element found: line 1, column 0`). Zero rejected, zero lost.
#[test]
fn chunked_writers_zero_rejected_zero_lost() {
    let env = Env::new();
    let daemon = env.start(&[]);
    let writers = 16u64;
    let per_writer = 25u64;
    let spool = env.spool();
    std::thread::scope(|scope| {
        for w in 0..writers {
            let spool = spool.clone();
            scope.spawn(move || {
                for i in 0..per_writer {
                    let n = w * per_writer + i;
                    let path = spool.join(format!("w{w}-{i}.xml"));
                    match n % 3 {
                        0 => write_chunked(&path, &result_xml(n), 4, Duration::from_millis(7)),
                        1 => write_renamed(&path, &result_xml(n)),
                        _ => std::fs::write(&path, result_xml(n)).expect("write"),
                    }
                }
            });
        }
    });
    let total = writers * per_writer;
    daemon.wait_files(total, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300)); // anything late would show up now
    let stats = daemon.stats();
    assert_eq!(stats["files_rejected"], 0, "rejected:\n{}", daemon.log());
    assert_eq!(stats["files_ingested"], total);
    assert_eq!(
        crate::exactly_once::ledger(&env).2,
        total * SAMPLES_PER_FILE
    );
    assert!(!daemon.log().contains("no element found"));
}

/// A new subdirectory, filled right after mkdir, before its watch can exist.
#[test]
fn new_subdirectories_are_watched_then_scanned() {
    let env = Env::new();
    let daemon = env.start(&[]);
    for d in 0..40u64 {
        let dir = env.spool().join(format!("host{d}/deep"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("r.xml"), result_xml(d)).expect("write");
    }
    // A directory moved in from outside the spool, with files already in it.
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("moved.xml"), result_xml(100)).expect("write");
    std::fs::rename(&outside, env.spool().join("moved-in")).expect("rename");
    daemon.wait_files(41, Duration::from_secs(30));
    assert_eq!(daemon.stats()["files_ingested"], 41);
}

/// The kernel queue overflows while probewatch is stopped: the overflow triggers a rescan and
/// every file arrives exactly once.
#[test]
fn inotify_overflow_triggers_rescan_without_loss() {
    let max_queued: u64 = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16_384);
    let files = max_queued + 2_000;
    let env = Env::new();
    let daemon = env.start(&[]);
    daemon.sigstop();
    let content: Vec<String> = (0..files).map(result_xml).collect();
    for (n, xml) in content.iter().enumerate() {
        std::fs::write(env.spool().join(format!("f{n:06}.xml")), xml).expect("write");
    }
    daemon.sigcont();
    daemon.wait_files(files, Duration::from_secs(240));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.metric("probewatch_inotify_overflows_total") >= 1.0,
        "no overflow seen"
    );
    assert!(
        daemon.metric("probewatch_rescans_total") >= 1.0,
        "no rescan"
    );
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], files);
    assert_eq!(stats["files_rejected"], 0);
    assert_eq!(
        crate::exactly_once::ledger(&env).2,
        files * SAMPLES_PER_FILE
    );
}

/// `--poll`: no inotify at all, same guarantees.
#[test]
fn poll_mode_ingests_complete_files_once() {
    let env = Env::new();
    let daemon = env.start(&["--poll", "100ms"]);
    assert!(
        daemon.log().contains("polled every 100ms"),
        "{}",
        daemon.log()
    );
    for n in 0..30u64 {
        let path = env.spool().join(format!("p{n}.xml"));
        if n % 2 == 0 {
            write_chunked(&path, &result_xml(n), 3, Duration::from_millis(60));
        } else {
            std::fs::write(&path, result_xml(n)).expect("write");
        }
    }
    daemon.wait_files(30, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500)); // several more polls: nothing new
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], 30);
    assert_eq!(stats["files_rejected"], 0);
}

/// Hard links appear without close-write: picked up after the settle time. A file rewritten
/// in place with new content is a new result; `touch` alone is not.
#[test]
fn hard_links_settle_and_rewrites_are_new_results() {
    let env = Env::new();
    let daemon = env.start(&[]);
    let outside = env.dir.path().join("src.xml");
    std::fs::write(&outside, result_xml(1)).expect("write");
    std::fs::hard_link(&outside, env.spool().join("linked.xml")).expect("link");
    daemon.wait_files(1, Duration::from_secs(15));

    let path = env.spool().join("rewritten.xml");
    std::fs::write(&path, result_xml(2)).expect("write");
    daemon.wait_files(2, Duration::from_secs(10));
    std::fs::write(&path, result_xml(3)).expect("rewrite");
    daemon.wait_files(3, Duration::from_secs(10));
    // Same bytes again (a probe rewriting an unchanged result with a declared time).
    std::fs::write(&path, result_xml(3)).expect("rewrite same");
    std::thread::sleep(Duration::from_millis(500));
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], 3);
    assert!(daemon.metric("probewatch_files_duplicate_total") >= 1.0);
}

/// Symlinks are never followed, in or out of the spool.
#[test]
fn symlinks_are_not_followed() {
    let env = Env::new();
    let secret = env.dir.path().join("secret.xml");
    std::fs::write(&secret, result_xml(9)).expect("write");
    let daemon = env.start(&[]);
    std::os::unix::fs::symlink(&secret, env.spool().join("link.xml")).expect("symlink");
    std::fs::write(env.spool().join("real.xml"), result_xml(1)).expect("write");
    daemon.wait_files(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3)); // past the settle time
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], 1);
    assert_eq!(stats["files_rejected"], 0);
}
