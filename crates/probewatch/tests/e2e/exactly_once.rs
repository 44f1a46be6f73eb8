//! No file lost, none counted twice: across restarts, kill -9 and after-ingest actions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::util::*;

/// Counts ledger rows, distinct paths and stored samples (distinct series and times) from
/// the store itself, not from the running totals the daemon keeps.
pub(crate) fn ledger(env: &Env) -> (u64, u64, u64) {
    ledger_of(&*env.store())
}

/// The ledger's file rows, distinct paths, and the samples of series that come from files
/// (see [`from_files`]).
pub(crate) fn ledger_of(store: &dyn probewatch_store::Store) -> (u64, u64, u64) {
    let files = store.files(None, usize::MAX).expect("files");
    let paths: std::collections::HashSet<&[u8]> = files.iter().map(|f| &f.path[..]).collect();
    let ids: Vec<i64> = store
        .series_after(0)
        .expect("series")
        .iter()
        .filter(|s| from_files(&s.metric))
        .map(|s| s.id)
        .collect();
    let samples: usize = store
        .read_samples(&ids, i64::MIN, i64::MAX, usize::MAX)
        .expect("samples")
        .iter()
        .map(Vec::len)
        .sum();
    (files.len() as u64, paths.len() as u64, samples as u64)
}

/// Whether a metric comes from result files, not from the daemon itself (its staleness
/// sweep's `probe_check_stale`, an agent's `probewatch_agent_*`): those grow with time and
/// are not part of what a file stored.
pub(crate) fn from_files(metric: &str) -> bool {
    metric != "probe_check_stale" && !metric.starts_with("probewatch_")
}

#[test]
fn restart_ingests_the_backlog_and_nothing_twice() {
    let env = Env::new();
    for n in 0..50u64 {
        std::fs::write(env.spool().join(format!("old{n}.xml")), result_xml(n)).expect("write");
    }
    let daemon = env.start(&[]);
    daemon.wait_files(50, Duration::from_secs(30));
    daemon.stop();
    // Written while probewatch is down.
    for n in 50..80u64 {
        std::fs::write(env.spool().join(format!("new{n}.xml")), result_xml(n)).expect("write");
    }
    let daemon = env.start(&[]);
    daemon.wait_files(80, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], 80);
    assert_eq!(ledger(&env).2, 80 * SAMPLES_PER_FILE);
    daemon.stop();
    assert_eq!(ledger(&env), (80, 80, 80 * SAMPLES_PER_FILE));
}

/// kill -9 at random moments while writers keep writing; every complete file ends up
/// ingested exactly once.
#[test]
fn kill9_under_load_loses_nothing_and_repeats_nothing() {
    let env = Env::new();
    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let total = 1500u64;
    let writer = {
        let spool = env.spool();
        let written = written.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for n in 0..total {
                let path = spool.join(format!("k{n:05}.xml"));
                if n % 2 == 0 {
                    write_renamed(&path, &result_xml(n));
                } else {
                    write_chunked(&path, &result_xml(n), 2, Duration::from_micros(300));
                }
                written.fetch_add(1, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // A tiny sample head keeps compaction (head → chunks) running all the time, so the kills
    // land in compaction transactions too.
    let config = format!(
        "head_samples = 300\n[[spool]]\npath = {:?}\n",
        env.spool().display().to_string()
    );
    let mut kills = 0;
    while !done.load(Ordering::SeqCst) {
        let daemon = env.start_with_config(&config);
        std::thread::sleep(Duration::from_millis(150 + (kills * 37) % 200));
        daemon.kill9();
        kills += 1;
    }
    writer.join().expect("writer");
    let daemon = env.start_with_config(&config);
    daemon.wait_files(total, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let stats = daemon.stats();
    assert!(kills >= 3, "only {kills} kills");
    assert_eq!(stats["files_rejected"], 0, "{}", daemon.log());
    assert_eq!(stats["files_ingested"], total);
    daemon.stop();
    assert_eq!(ledger(&env), (total, total, total * SAMPLES_PER_FILE));
    let chunks = env.store().sample_span().expect("span").chunks;
    assert!(chunks > 0, "compaction never ran");
}

/// `after_ingest = "delete"` with kill -9: files disappear only after their commit, and
/// every one of them is in the ledger exactly once.
#[test]
fn delete_after_ingest_survives_kill9() {
    let env = Env::new();
    let config = format!(
        "[[spool]]\npath = {:?}\nafter_ingest = \"delete\"\n",
        env.spool().display().to_string()
    );
    let total = 600u64;
    let writer = {
        let spool = env.spool();
        std::thread::spawn(move || {
            for n in 0..total {
                std::fs::write(spool.join(format!("d{n:05}.xml")), result_xml(n)).expect("write");
                if n % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    for _ in 0..3 {
        let daemon = env.start_with_config(&config);
        std::thread::sleep(Duration::from_millis(200));
        daemon.kill9();
    }
    writer.join().expect("writer");
    let daemon = env.start_with_config(&config);
    daemon.wait_files(total, Duration::from_secs(60));
    daemon.wait_until("spool empty", Duration::from_secs(30), |_| {
        std::fs::read_dir(env.spool())
            .map(|d| d.count())
            .unwrap_or(1)
            == 0
    });
    assert_eq!(daemon.stats()["files_ingested"], total);
    daemon.stop();
    assert_eq!(ledger(&env), (total, total, total * SAMPLES_PER_FILE));
}

/// `move` keeps the relative path under the target; a target inside the spool is not
/// re-ingested.
#[test]
fn move_after_ingest_into_a_directory_inside_the_spool() {
    let env = Env::new();
    let done = env.spool().join("done");
    let config = format!(
        "[[spool]]\npath = {:?}\nafter_ingest = \"move\"\nmove_to = {:?}\n",
        env.spool().display().to_string(),
        done.display().to_string()
    );
    let daemon = env.start_with_config(&config);
    std::fs::create_dir_all(env.spool().join("web")).expect("mkdir");
    std::fs::write(env.spool().join("web/a.xml"), result_xml(1)).expect("write");
    std::fs::write(env.spool().join("b.xml"), result_xml(2)).expect("write");
    daemon.wait_files(2, Duration::from_secs(10));
    daemon.wait_until("moved", Duration::from_secs(10), |_| {
        done.join("web/a.xml").exists() && done.join("b.xml").exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stats()["files_ingested"], 2);
    assert!(!env.spool().join("b.xml").exists());
}

/// Retention prunes samples and check results older than the retention, and ledger rows only
/// of files that are gone: a kept file's row still stops it being ingested again.
#[test]
fn retention_prunes_old_data_but_keeps_rows_that_guard_files() {
    let env = Env::new();
    let config = format!(
        "retention = \"1m\"\nprune_interval = \"1s\"\n[[spool]]\npath = {:?}\n",
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&config);
    std::fs::write(env.spool().join("gone.xml"), result_xml(1)).expect("write");
    std::fs::write(env.spool().join("kept.xml"), result_xml(2)).expect("write");
    daemon.wait_files(2, Duration::from_secs(10));
    std::fs::remove_file(env.spool().join("gone.xml")).expect("delete");
    // Results are stamped in 2023: their samples go at the first pass. The ledger rows stay
    // younger than the retention (the shortest allowed is a minute); that rows of vanished
    // files go and rows of present ones stay is the store story test's part.
    daemon.wait_until("pruned", Duration::from_secs(30), |d| {
        d.stats()["check_results"] == 0 && ledger(&env).2 == 0
    });
    assert!(daemon.log().contains("retention pruned old data"));
    daemon.stop();
    // Restart: the startup scan sees kept.xml, whose ledger row survived; nothing new.
    let daemon = env.start_with_config(&config);
    std::thread::sleep(Duration::from_millis(800));
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], 2);
    assert_eq!(ledger(&env).2, 0, "the probes' samples stay pruned");
    daemon.stop();
}
