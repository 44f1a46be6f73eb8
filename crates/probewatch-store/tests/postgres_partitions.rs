//! PostgreSQL keeps chunks and check results in day partitions: rows land in their day,
//! retention drops whole days (and deletes old rows of the default partition), and the
//! totals stay exact.

mod common;

use probewatch_core::{CheckResult, ProbeResult, SeriesSample, Status, TimeSource};
use probewatch_store::postgres::PgStore;
use probewatch_store::*;

const DAY: i64 = 86_400_000;

fn item(file: u64, time_ms: i64) -> IngestItem {
    let result = ProbeResult {
        probe: "web".into(),
        host: "h1".into(),
        time_ms,
        time_source: TimeSource::Declared,
        interval_ms: Some(60_000),
        checks: vec![CheckResult {
            name: "login".into(),
            status: Status::Ok,
            duration_seconds: None,
            message: String::new(),
        }],
        metrics: Vec::new(),
    };
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .expect("clock");
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
