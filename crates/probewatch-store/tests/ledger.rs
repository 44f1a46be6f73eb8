//! The ingest ledger's promises, on every back end (see `common/backends.rs`): a file
//! version is stored exactly once, whichever batch, store instance or server offers it;
//! the restart fast path, the totals and the listings agree with what was committed; and
//! retention keeps a ledger row while its file is still on disk.

mod common;

use std::sync::Arc;

use common::backends::{Backend, backends};
use probewatch_core::{
    CheckResult, ProbeResult, Reject, RejectKind, SeriesSample, Status, TimeSource,
};
use probewatch_store::postgres::PgStore;
use probewatch_store::prelude::*;
use probewatch_store::*;

fn open(backend: &Backend) -> Box<dyn LedgerStore> {
    match backend {
        Backend::Sqlite(dir) => Box::new(SqliteStore::open(dir.path()).expect("open sqlite")),
        Backend::Postgres { url, .. } => Box::new(PgStore::open(url, None).expect("open postgres")),
    }
}

fn file(path: &str, version: u8, spool: &str) -> FileMeta {
    FileMeta {
        spool: Arc::from(spool),
        path: path.as_bytes().to_vec(),
        size: 100 + u64::from(version),
        mtime_ns: 1_000 * i64::from(version),
        inode: 7,
        version_hash: [version; 32],
    }
}

/// A parsed file with one check and `samples` samples of one series at times 1..=samples.
fn parsed(path: &str, version: u8, time_ms: i64, samples: i64) -> IngestItem {
    let result = ProbeResult {
        probe: "web".into(),
        host: "h1".into(),
        time_ms,
        interval_ms: Some(60_000),
        time_source: TimeSource::Declared,
        metrics: Vec::new(),
        checks: vec![CheckResult {
            name: "login".into(),
            status: Status::Ok,
            duration_seconds: Some(0.5),
            message: format!("version {version}"),
        }],
    };
    IngestItem {
        file: file(path, version, "main"),
        content: ItemContent::Parsed {
            results: vec![result],
            samples: (1..=samples)
                .map(|t| SeriesSample {
                    metric: "m".into(),
                    labels: format!("{{path=\"{path}\"}}"),
                    time_ms: t,
                    value: t as f64,
                })
                .collect(),
            clock_skew: false,
        },
    }
}

fn rejected(path: &str, version: u8) -> IngestItem {
    IngestItem {
        file: file(path, version, "other"),
        content: ItemContent::Rejected(Reject::new(RejectKind::Syntax, "no root element")),
    }
}

fn stored(summary: &CommitSummary) -> Vec<bool> {
    summary
        .items
        .iter()
        .map(|r| matches!(r, ItemResult::Stored { .. }))
        .collect()
}

#[test]
fn each_file_version_is_stored_exactly_once() {
    for backend in backends("exactly_once") {
        let name = backend.name();
        let store = open(&backend);
        assert_eq!(store.stats().expect("stats"), Stats::default(), "{name}");
        let first = store
            .commit_batch(
                &[
                    parsed("/s/a.xml", 1, 1_000, 3),
                    rejected("/s/bad.xml", 1),
                    // The same version twice in one batch: stored once.
                    parsed("/s/a.xml", 1, 1_000, 3),
                ],
                false,
            )
            .expect("commit");
        assert_eq!(stored(&first), [true, true, false], "{name}");
        assert_eq!(first.samples, 3, "{name}");
        // Offered again in a later batch, with a new version of it: only the new one.
        let second = store
            .commit_batch(
                &[
                    parsed("/s/a.xml", 1, 1_000, 3),
                    parsed("/s/a.xml", 2, 2_000, 4),
                ],
                true,
            )
            .expect("commit");
        assert_eq!(stored(&second), [false, true], "{name}");
        assert!(second.batch_id > first.batch_id, "{name}");
        let stats = store.stats().expect("stats");
        assert_eq!(stats.files_ingested, 2, "{name}");
        assert_eq!(stats.files_rejected, 1, "{name}");
        assert_eq!(stats.check_results, 2, "{name}");
        // Samples 1..=3 then 1..=4 of the same series: 4 distinct (series, time) pairs. A
        // rewritten pair may count twice until compaction merges it (SQLite's head does
        // not look up what it appends); drained, the count is exact.
        assert!((4..=7).contains(&stats.samples), "{name}: {stats:?}");
        let drained = backend.open_with_head_max(1);
        while drained.compact(50).expect("compact").more() {}
        assert_eq!(drained.stats().expect("stats").samples, 4, "{name}");
        drop(drained);
        assert_eq!(stats.series, 1, "{name}");
        assert_eq!(
            store.spool_counts().expect("spools"),
            [("main".to_string(), 2, 0), ("other".to_string(), 0, 1)],
            "{name}"
        );
        let head = store.file_head(b"/s/a.xml").expect("head").expect("known");
        assert_eq!(
            (head.size, head.mtime_ns, head.outcome),
            (102, 2_000, Outcome::Ingested),
            "{name}"
        );
        assert_eq!(
            store.file_head(b"/s/none.xml").expect("head"),
            None,
            "{name}"
        );
        // Many at once, in the order asked, unknown ones included.
        let heads = store
            .file_heads(&[b"/s/none.xml", b"/s/a.xml", b"/s/none.xml"])
            .expect("heads");
        assert_eq!(heads, [None, Some(head), None], "{name}");
        let files = store.files(None, 10).expect("files");
        assert_eq!(files.len(), 3, "{name}");
        assert_eq!(files[0].path, b"/s/a.xml", "{name}: newest first");
        let bad = store.files(Some(Outcome::Rejected), 10).expect("files");
        assert_eq!(bad.len(), 1, "{name}");
        assert_eq!(bad[0].reject_kind.as_deref(), Some("syntax"), "{name}");
        assert!(
            bad[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no root element")),
            "{name}"
        );
        let activity = store.ingest_activity(0, 10).expect("activity");
        assert_eq!(
            activity.minutes.iter().map(|m| m.1).sum::<u64>(),
            3,
            "{name}"
        );
        assert_eq!(activity.latencies_ms.len(), 3, "{name}");
        store.check_files().expect("files in place");

        // Reopened (a restart): the ledger still refuses what it has.
        drop(store);
        let store = open(&backend);
        let again = store
            .commit_batch(&[parsed("/s/a.xml", 2, 2_000, 4)], false)
            .expect("commit");
        assert_eq!(stored(&again), [false], "{name}");
        assert_eq!(store.stats().expect("stats").files_ingested, 2, "{name}");
    }
}

#[test]
fn two_servers_offered_the_same_files_store_each_once() {
    for backend in backends("two_servers") {
        let Some(url) = backend.postgres_url() else {
            continue; // SQLite has one writer process by design.
        };
        let (a, b) = (
            Arc::new(PgStore::open(url, None).expect("open a")),
            Arc::new(PgStore::open(url, None).expect("open b")),
        );
        // Both servers race through the same 200 files in batches of 20, in opposite orders.
        let items: Vec<IngestItem> = (0..200)
            .map(|i| parsed(&format!("/s/{i}.xml"), 1, 1_000 + i, 2))
            .collect();
        let run = |store: Arc<PgStore>, items: Vec<IngestItem>| {
            std::thread::spawn(move || {
                let mut stored_here = 0;
                for batch in items.chunks(20) {
                    let summary = store.commit_batch(batch, false).expect("commit");
                    stored_here += stored(&summary).iter().filter(|s| **s).count();
                }
                stored_here
            })
        };
        let mut reversed = items.clone();
        reversed.reverse();
        let (ha, hb) = (run(a.clone(), items), run(b.clone(), reversed));
        let total = ha.join().expect("a") + hb.join().expect("b");
        assert_eq!(total, 200, "every file stored by exactly one of the two");
        let stats = a.stats().expect("stats");
        assert_eq!(stats.files_ingested, 200);
        assert_eq!(stats.check_results, 200);
        assert_eq!(stats.series, 200);
        assert_eq!(stats.samples, 400);
    }
}

#[test]
fn retention_keeps_the_ledger_row_of_a_file_still_on_disk() {
    for backend in backends("retention") {
        let name = backend.name();
        let store = open(&backend);
        store
            .commit_batch(
                &[
                    parsed("/s/gone.xml", 1, 1_000, 2),
                    parsed("/s/here.xml", 1, 2_000, 2),
                ],
                false,
            )
            .expect("commit");
        // Everything is older than a cutoff in the future.
        let cutoff = i64::MAX / 2;
        let summary = store
            .prune(cutoff, &|path: &[u8]| path == b"/s/here.xml")
            .expect("prune");
        assert_eq!(summary.files, 1, "{name}");
        assert_eq!(summary.check_results, 2, "{name}");
        assert_eq!(summary.samples, 4, "{name}");
        assert!(
            store.file_head(b"/s/gone.xml").expect("head").is_none(),
            "{name}"
        );
        assert!(
            store.file_head(b"/s/here.xml").expect("head").is_some(),
            "{name}"
        );
        let again = store
            .commit_batch(&[parsed("/s/here.xml", 1, 2_000, 2)], false)
            .expect("commit");
        assert_eq!(
            stored(&again),
            [false],
            "{name}: the kept row still guards the file"
        );
        let stats = store.stats().expect("stats");
        assert_eq!(
            (stats.files_ingested, stats.samples, stats.check_results),
            (1, 0, 0),
            "{name}"
        );
    }
}
