//! PostgreSQL keeps chunks and check results in day partitions: rows land in their day,
//! retention drops whole days (and deletes old rows of the default partition), and the
//! totals stay exact.

mod common;

use probewatch_core::{CheckResult, ProbeResult, SeriesSample, Status, TimeSource};
use probewatch_store::postgres::PgStore;
use probewatch_store::*;

const DAY: i64 = 86_400_000;

/// Probe `web` on `h1` at `time_ms` with the given checks, all OK.
fn result(time_ms: i64, checks: impl IntoIterator<Item = String>) -> ProbeResult {
    ProbeResult {
        probe: "web".into(),
        host: "h1".into(),
        time_ms,
        time_source: TimeSource::Declared,
        interval_ms: Some(60_000),
        checks: checks
            .into_iter()
            .map(|name| CheckResult {
                name,
                status: Status::Ok,
                duration_seconds: None,
                message: String::new(),
            })
            .collect(),
        metrics: Vec::new(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .expect("clock")
}

fn item(file: u64, time_ms: i64) -> IngestItem {
    let result = result(time_ms, ["login".to_string()]);
    let sample = SeriesSample {
        metric: "m".into(),
        // A series per file: a chunk's day is its newest sample's.
        labels: format!("{{file=\"{file}\"}}"),
        time_ms,
        value: 1.0,
    };
    common::item(file, vec![result], vec![sample])
}

fn tables(url: &str, like: &str) -> Vec<String> {
    let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).expect("db");
    db.query(
        "SELECT relname::text FROM pg_class WHERE relname LIKE $1 AND relkind = 'r' ORDER BY 1",
        &[&like],
    )
    .expect("tables")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn rows_land_in_their_day_and_retention_drops_whole_days() {
    for backend in common::backends::backends("partitions") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        let now = now_ms();
        let today = now.div_euclid(DAY);
        let store = PgStore::open(url, None)
            .expect("open")
            .with_head_max_samples(1);
        // Yesterday, today and tomorrow have partitions; ten days ago goes to the default.
        let day_tables = tables(url, "chunks_d%");
        for day in [today - 1, today, today + 1] {
            assert!(
                day_tables.contains(&format!("chunks_d{day}")),
                "{day_tables:?}"
            );
        }
        let times = [now - 10 * DAY, now - DAY, now];
        let items: Vec<IngestItem> = times
            .iter()
            .enumerate()
            .map(|(i, t)| item(i as u64, *t))
            .collect();
        store.commit_batch(&items, false).expect("commit");
        while store.compact(1_000).expect("compact").more() {}
        let count = |table: &str| -> i64 {
            let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).expect("db");
            db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .expect("count")
                .get(0)
        };
        assert_eq!(
            count("chunks_default"),
            1,
            "ten days ago: the default partition"
        );
        assert_eq!(count(&format!("check_results_d{}", today - 1)), 1);
        assert_eq!(count(&format!("check_results_d{today}")), 1);
        assert_eq!(store.stats().expect("stats").samples, 3);

        // Everything before today goes: yesterday's partitions are dropped whole, the old
        // row in the default partition is deleted, today's stay.
        let pruned = store.prune(today * DAY, &|_: &[u8]| true).expect("prune");
        assert_eq!((pruned.samples, pruned.check_results), (2, 2));
        let left = tables(url, "chunks_d%");
        assert!(
            !left.contains(&format!("chunks_d{}", today - 1)),
            "{left:?}"
        );
        assert!(left.contains(&format!("chunks_d{today}")), "{left:?}");
        assert!(
            !tables(url, "check_results_d%").contains(&format!("check_results_d{}", today - 1))
        );
        let stats = store.stats().expect("stats");
        assert_eq!((stats.samples, stats.check_results), (1, 1));
        let samples: Vec<Vec<(i64, f64)>> = store
            .samples("m", i64::MIN, i64::MAX)
            .expect("read")
            .into_iter()
            .map(|s| s.samples)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(samples, [vec![(now, 1.0)]]);
    }
}

/// A backfill (10,000 results for days before yesterday, which land in the default
/// partition) is analyzed at the next compaction step, so that the planner knows those rows
/// at once rather than after autovacuum's next round; fewer are left to autovacuum, and
/// one process analyzes at most every ten minutes.
#[test]
fn a_backfill_is_analyzed_at_the_next_compaction_step() {
    for backend in common::backends::backends("backfill") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        let now = now_ms();
        let store = PgStore::open(url, None).expect("open");
        // 50 files of 100 checks each, a minute apart, starting 30 days ago.
        let backfill = |first: u64| -> Vec<IngestItem> {
            (first..first + 50)
                .map(|file| {
                    let time = now - 30 * DAY + file as i64 * 60_000;
                    let checks = (0..100).map(|c| format!("c{c}"));
                    common::item(file, vec![result(time, checks)], Vec::new())
                })
                .collect()
        };
        let analyzed = || last_analyze(url, "check_results_default").is_some();
        store.commit_batch(&backfill(0), false).expect("commit");
        store.compact(1_000).expect("compact");
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        assert!(
            !analyzed(),
            "5,000 backfilled results are left to autovacuum"
        );

        store.commit_batch(&backfill(50), false).expect("commit");
        store.compact(1_000).expect("compact");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !analyzed() {
            assert!(
                std::time::Instant::now() < deadline,
                "the default partition was not analyzed after 10,000 backfilled results"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Another 10,000 at once: not analyzed again so soon (old times that keep coming
        // would otherwise analyze it every few seconds).
        let first = last_analyze(url, "check_results_default");
        store.commit_batch(&backfill(100), false).expect("commit");
        store.commit_batch(&backfill(150), false).expect("commit");
        store.compact(1_000).expect("compact");
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        assert_eq!(
            last_analyze(url, "check_results_default"),
            first,
            "analyzed at most every ten minutes"
        );
        assert_eq!(store.stats().expect("stats").check_results, 20_000);
    }
}

/// Samples of a backfill compacted into chunks of days before yesterday (the chunks'
/// default partition) get that partition analyzed at a compaction step once there are
/// 100,000 of them; fewer are left to autovacuum.
#[test]
fn a_backfill_of_samples_is_analyzed_once_compacted() {
    for backend in common::backends::backends("backfill_chunks") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        let now = now_ms();
        let store = PgStore::open(url, None)
            .expect("open")
            .with_head_max_samples(1_000);
        // Files of 100 series' samples a minute apart, starting 30 days ago.
        let backfill = |first: u64, files: u64| -> Vec<IngestItem> {
            (first..first + files)
                .map(|file| {
                    let time_ms = now - 30 * DAY + file as i64 * 60_000;
                    let samples = (0..100)
                        .map(|s| SeriesSample {
                            metric: "m".into(),
                            labels: format!("{{s=\"{s}\"}}"),
                            time_ms,
                            value: file as f64,
                        })
                        .collect();
                    common::item(file, Vec::new(), samples)
                })
                .collect()
        };
        let analyzed = || last_analyze(url, "chunks_default").is_some();
        let drain = || {
            while store.compact(10_000).expect("compact").more() {}
            store.compact(10_000).expect("compact");
        };
        // 50,000 samples.
        for first in (0..500).step_by(100) {
            store
                .commit_batch(&backfill(first, 100), false)
                .expect("commit");
        }
        drain();
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        assert!(
            !analyzed(),
            "50,000 backfilled samples are left to autovacuum"
        );
        // 60,000 more.
        for first in (500..1_100).step_by(100) {
            store
                .commit_batch(&backfill(first, 100), false)
                .expect("commit");
        }
        drain();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !analyzed() {
            assert!(
                std::time::Instant::now() < deadline,
                "the chunks' default partition was not analyzed after 110,000 backfilled samples"
            );
            store.compact(10_000).expect("compact");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(store.stats().expect("stats").samples, 110_000);
    }
}

/// When `table` was last analyzed (by hand, not by autovacuum), if ever.
fn last_analyze(url: &str, table: &str) -> Option<String> {
    let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).expect("db");
    db.query_one(
        "SELECT last_analyze::text FROM pg_stat_user_tables WHERE relname = $1",
        &[&table],
    )
    .expect("stats")
    .get(0)
}
