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

/// Each path's head is its newest version whether the batches bring new paths (files named
/// anew each time), paths stored already (one file rewritten), or both, in any order: the
/// way the head is written changes with what the batches bring, the heads must not.
#[test]
fn the_head_of_each_path_follows_new_rewritten_and_mixed_batches() {
    for backend in backends("heads") {
        let name = backend.name();
        let store = open(&backend);
        let batches: [&[(&str, u8)]; 6] = [
            &[("/s/a.xml", 1), ("/s/b.xml", 1)],
            &[("/s/a.xml", 2), ("/s/b.xml", 2)],
            &[("/s/c.xml", 1), ("/s/d.xml", 1)],
            &[("/s/e.xml", 1)],
            &[("/s/f.xml", 1), ("/s/a.xml", 3), ("/s/g.xml", 1)],
            &[("/s/h.xml", 1), ("/s/b.xml", 3)],
        ];
        let mut newest = std::collections::BTreeMap::new();
        for (n, batch) in batches.iter().enumerate() {
            let items: Vec<IngestItem> = batch
                .iter()
                .map(|&(path, version)| parsed(path, version, 1_000 * n as i64, 0))
                .collect();
            let summary = store.commit_batch(&items, true).expect("commit");
            assert!(stored(&summary).iter().all(|s| *s), "{name}: batch {n}");
            for &(path, version) in *batch {
                newest.insert(path, version);
            }
            let paths: Vec<&[u8]> = newest.keys().map(|p| p.as_bytes()).collect();
            let heads = store.file_heads(&paths).expect("heads");
            for ((path, version), head) in newest.iter().zip(heads) {
                let head = head.unwrap_or_else(|| panic!("{name}: batch {n}: no head of {path}"));
                assert_eq!(
                    (head.size, head.mtime_ns),
                    (100 + u64::from(*version), 1_000 * i64::from(*version)),
                    "{name}: batch {n}: head of {path}"
                );
            }
        }
        assert_eq!(store.stats().expect("stats").files_ingested, 12, "{name}");
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

/// Samples of `names` (metric "m", one label) at `time_ms`, each value its index.
fn named_samples(names: &[String], time_ms: i64) -> Vec<SeriesSample> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| SeriesSample {
            metric: "m".into(),
            labels: format!(r#"{{n="{name}"}}"#),
            time_ms,
            value: i as f64,
        })
        .collect()
}

/// A store that did not create a series finds it, whether another store instance made it
/// before or makes it at the same moment: every name has one id, and its samples from both
/// writers are read under it. (PostgreSQL creates a batch's new names with one COPY and
/// takes it back when one exists already; this is that path.)
#[test]
fn series_other_writers_created_are_found_not_doubled() {
    for backend in backends("series_found") {
        let name = backend.name();
        let (a, b) = (backend.open(), backend.open());
        let names: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
        // `a` creates the first 100; `b` then writes those and 100 new ones in one batch.
        a.write_samples(&named_samples(&names[..100], 1_000))
            .expect("a writes");
        b.write_samples(&named_samples(&names[..200], 2_000))
            .expect("b writes");
        assert_eq!(b.series_after(0).expect("series").len(), 200, "{name}");
        // Both create the last 100 at once, in batches of 10 in opposite orders.
        let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (a.into(), b.into());
        let race = |store: Arc<dyn Store>, mut mine: Vec<String>, reverse: bool, at: i64| {
            std::thread::spawn(move || {
                if reverse {
                    mine.reverse();
                }
                for batch in mine.chunks(10) {
                    store
                        .write_samples(&named_samples(batch, at))
                        .expect("racing write");
                }
            })
        };
        let last: Vec<String> = names[200..].to_vec();
        let (ha, hb) = (
            race(a.clone(), last.clone(), false, 3_000),
            race(b.clone(), last, true, 4_000),
        );
        ha.join().expect("a");
        hb.join().expect("b");
        let series = a.series_after(0).expect("series");
        assert_eq!(series.len(), 300, "{name}: each name once");
        let mut labels: Vec<&str> = series.iter().map(|s| s.labels.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), 300, "{name}");
        assert_eq!(a.stats().expect("stats").series, 300, "{name}");
        let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
        let read = b.read_samples(&ids, 0, 10_000, usize::MAX).expect("read");
        for (s, samples) in series.iter().zip(&read) {
            let times: Vec<i64> = samples.iter().map(|p| p.0).collect();
            let n: usize = s.labels[5..s.labels.len() - 2].parse().expect("number");
            let expected: &[i64] = match n {
                0..100 => &[1_000, 2_000],
                100..200 => &[2_000],
                _ => &[3_000, 4_000],
            };
            assert_eq!(times, expected, "{name}: {}", s.labels);
        }
        // A restarted writer (no ids cached) meets the 300 names again with 50 new ones
        // among them, in batches of 70: it looks names up first once a COPY met existing
        // ones (PostgreSQL), and goes back to creating by COPY when a batch is all new.
        let restarted = backend.open();
        let mut again: Vec<String> = names.clone();
        again.extend((300..350).map(|i| format!("s{i}")));
        for batch in again.chunks(70) {
            restarted
                .write_samples(&named_samples(batch, 5_000))
                .expect("restarted writes");
        }
        let fresh: Vec<String> = (350..420).map(|i| format!("s{i}")).collect();
        restarted
            .write_samples(&named_samples(&fresh, 5_000))
            .expect("all new");
        let series = restarted.series_after(0).expect("series");
        assert_eq!(series.len(), 420, "{name}: each name once");
        assert_eq!(restarted.stats().expect("stats").series, 420, "{name}");
        let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
        let read = restarted
            .read_samples(&ids, 5_000, 5_000, usize::MAX)
            .expect("read");
        for (s, samples) in series.iter().zip(&read) {
            assert_eq!(samples.len(), 1, "{name}: {} at 5,000", s.labels);
        }
    }
}

/// A check that a store did not create itself (another store instance on the same data
/// made it) is found, not created twice, when a batch brings it beside a new one
/// (PostgreSQL's COPY of new checks is taken back then); and two stores on one SQLite file
/// both commit batches (each took its next batch id once at open, and the second failed).
#[test]
fn checks_another_writer_created_are_found_not_doubled() {
    for backend in backends("checks_found") {
        let name = backend.name();
        let (a, b) = (backend.open(), backend.open());
        a.commit_batch(&[parsed("/s/a.xml", 1, 1_000, 0)], false)
            .expect("a commits");
        let mut both = parsed("/s/b.xml", 2, 2_000, 0);
        if let ItemContent::Parsed { results, .. } = &mut both.content {
            let mut second = results[0].checks[0].clone();
            second.name = "logout".into();
            results[0].checks.push(second);
        }
        b.commit_batch(&[both], false).expect("b commits");
        let mut checks = a.latest_checks().expect("checks");
        checks.sort_by(|x, y| x.check.cmp(&y.check));
        let seen: Vec<(&str, i64, &str)> = checks
            .iter()
            .map(|c| (c.check.as_str(), c.time_ms, c.message.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("login", 2_000, "version 2"),
                ("logout", 2_000, "version 2")
            ],
            "{name}"
        );
        assert_eq!(b.stats().expect("stats").check_results, 3, "{name}");
        a.commit_batch(&[parsed("/s/c.xml", 3, 3_000, 0)], false)
            .expect("a commits again");
        assert_eq!(a.stats().expect("stats").files_ingested, 3, "{name}");
        // `b` met an existing check and now looks names up first; a batch that brings it
        // the known two and a new one, then one with only new ones, still makes each once.
        let mut three = parsed("/s/d.xml", 4, 4_000, 0);
        if let ItemContent::Parsed { results, .. } = &mut three.content {
            for extra in ["logout", "reset"] {
                let mut check = results[0].checks[0].clone();
                check.name = extra.into();
                results[0].checks.push(check);
            }
        }
        b.commit_batch(&[three], false).expect("b commits three");
        let mut new_only = parsed("/s/e.xml", 5, 5_000, 0);
        if let ItemContent::Parsed { results, .. } = &mut new_only.content {
            results[0].checks[0].name = "signup".into();
        }
        b.commit_batch(&[new_only], false)
            .expect("b commits a new one");
        let mut names: Vec<String> = a
            .latest_checks()
            .expect("checks")
            .into_iter()
            .map(|c| c.check)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["login", "logout", "reset", "signup"], "{name}");
    }
}
