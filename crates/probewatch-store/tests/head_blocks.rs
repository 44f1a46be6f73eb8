//! The sample head as blocks, on every back end: retention cuts blocks that straddle the
//! cutoff and keeps the count exact, and (PostgreSQL) a database whose head was a row per
//! sample (schema 3) has those rows moved into blocks, NaN payloads kept.

use probewatch_core::SeriesSample;
use probewatch_store::postgres::PgStore;
use probewatch_store::*;

mod common;

/// Prometheus's stale marker: a NaN with its own payload.
const STALE: u64 = 0x7ff0_0000_0000_0002;

fn sample(i: i64, t: i64, value: f64) -> SeriesSample {
    SeriesSample {
        metric: "m".into(),
        labels: format!("{{i=\"{i}\"}}"),
        time_ms: t,
        value,
    }
}

fn read_all(store: &dyn Store) -> Vec<(String, Vec<(i64, u64)>)> {
    store
        .samples("m", i64::MIN, i64::MAX)
        .expect("read")
        .into_iter()
        .map(|s| {
            let bits = s.samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
            (s.labels, bits)
        })
        .filter(|(_, s): &(String, Vec<(i64, u64)>)| !s.is_empty())
        .collect()
}

#[test]
fn retention_cuts_head_blocks_that_straddle_the_cutoff() {
    for backend in common::backends::backends("head_retention") {
        let store = backend.open();
        // 600 series (several buckets) at 1..=5 s, in two batches: the second rewrites
        // every series' 5 s value, so the head holds repeats until compaction.
        let mut first = Vec::new();
        for i in 0..600 {
            first.extend((1..=5).map(|t| sample(i, t * 1_000, (i * 10 + t) as f64)));
        }
        store.write_samples(&first).expect("write");
        let second: Vec<SeriesSample> = (0..600).map(|i| sample(i, 5_000, -1.0)).collect();
        store.write_samples(&second).expect("rewrite");
        let pruned = store.prune(3_000, &|_: &[u8]| true).expect("prune");
        assert!(pruned.samples >= 600 * 2, "{}: {pruned:?}", backend.name());
        let read = read_all(&*store);
        assert_eq!(read.len(), 600, "{}", backend.name());
        for (labels, samples) in &read {
            let i: i64 = labels
                .trim_start_matches("{i=\"")
                .trim_end_matches("\"}")
                .parse()
                .expect("label");
            let want = vec![
                (3_000, ((i * 10 + 3) as f64).to_bits()),
                (4_000, ((i * 10 + 4) as f64).to_bits()),
                (5_000, (-1.0f64).to_bits()),
            ];
            assert_eq!(samples, &want, "{} {labels}", backend.name());
        }
        // Once compacted the count is exact: three samples a series.
        let store = backend.open_with_head_max(1);
        while store.compact(1_000).expect("compact").more() {}
        assert_eq!(
            store.stats().expect("stats").samples,
            600 * 3,
            "{}",
            backend.name()
        );
        assert_eq!(read_all(&*store), read, "{}", backend.name());
    }
}

#[test]
fn postgres_head_rows_of_schema_3_move_into_blocks() {
    for backend in common::backends::backends("head_rows_migrate") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        // Series made through the API; then the database is put back to schema 3, its
        // head a row per sample.
        {
            let store = PgStore::open(url, None).expect("open");
            let samples: Vec<SeriesSample> = (0..300).map(|i| sample(i, 1_000, 0.0)).collect();
            store.write_samples(&samples).expect("write");
        }
        let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).expect("db");
        db.batch_execute(
            "DROP TABLE head_blocks;
             DELETE FROM probewatch_schema WHERE version >= 4;
             CREATE TABLE samples_head (
                 series_id bigint NOT NULL,
                 ts_ms     bigint NOT NULL,
                 value     float8 NOT NULL,
                 bits      bigint,
                 PRIMARY KEY (series_id, ts_ms));
             INSERT INTO samples_head (series_id, ts_ms, value)
                 SELECT id, 1000, id * 1.5 FROM series;
             INSERT INTO samples_head (series_id, ts_ms, value)
                 SELECT id, 2000, id * 2.5 FROM series WHERE id % 2 = 0;
             UPDATE stats SET samples = (SELECT count(*) FROM samples_head);",
        )
        .expect("schema 3");
        db.execute(
            "INSERT INTO samples_head (series_id, ts_ms, value, bits)
                 SELECT id, 3000, 'NaN', $1 FROM series WHERE id % 3 = 0",
            &[&(STALE as i64)],
        )
        .expect("stale markers");
        db.batch_execute("UPDATE stats SET samples = (SELECT count(*) FROM samples_head)")
            .expect("count");
        let total = db
            .query_one("SELECT count(*) FROM samples_head", &[])
            .expect("count")
            .get::<_, i64>(0);
        assert!(total > 300);

        let store = PgStore::open(url, None).expect("migrates");
        let gone: Option<String> = db
            .query_one("SELECT to_regclass('samples_head')::text", &[])
            .expect("regclass")
            .get(0);
        assert_eq!(gone, None, "the old head's table is dropped");
        let ids: Vec<(i64, String)> = store
            .series_after(0)
            .expect("series")
            .into_iter()
            .map(|s| (s.id, s.labels))
            .collect();
        let read = read_all(&store);
        let mut moved = 0;
        for (id, labels) in &ids {
            let (_, samples) = read.iter().find(|(l, _)| l == labels).expect("series");
            let mut want = vec![(1_000, (*id as f64 * 1.5).to_bits())];
            if id % 2 == 0 {
                want.push((2_000, (*id as f64 * 2.5).to_bits()));
            }
            if id % 3 == 0 {
                want.push((3_000, STALE));
            }
            assert_eq!(samples, &want, "{labels}");
            moved += want.len();
        }
        assert_eq!(moved as i64, total);
        assert_eq!(store.stats().expect("stats").samples, total as u64);
    }
}
