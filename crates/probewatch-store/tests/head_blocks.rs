//! The sample head as blocks, on every back end: retention keeps every sample from the
//! cutoff and the count exact, and (PostgreSQL) a database whose head was a row per sample
//! (schema 3) has those rows moved into blocks, NaN payloads kept.

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
fn retention_of_the_head_keeps_every_sample_from_the_cutoff_and_counts_exactly() {
    for backend in common::backends::backends("head_retention") {
        let store = backend.open();
        // 600 series (several buckets), three batches: one wholly before the cutoff
        // (2.5 s), one that straddles it, one after; the last rewrites every series' 5 s
        // value, so the head holds repeats until compaction.
        let value = |i: i64, t: i64| (i * 10 + t) as f64;
        let batch = |times: &[i64]| -> Vec<SeriesSample> {
            (0..600)
                .flat_map(|i| {
                    times
                        .iter()
                        .map(move |&t| sample(i, t * 1_000, value(i, t)))
                })
                .collect()
        };
        store.write_samples(&batch(&[1])).expect("old");
        store.write_samples(&batch(&[2, 3, 4])).expect("straddling");
        let mut last = batch(&[5]);
        last.extend((0..600).map(|i| sample(i, 5_000, -1.0)));
        store.write_samples(&last).expect("new");
        let pruned = store.prune(2_500, &|_: &[u8]| true).expect("prune");
        // The wholly old batch goes on every back end; the straddling block's older
        // sample goes where blocks are cut (SQLite) and stays where they go whole, as
        // chunks do (PostgreSQL).
        assert!(pruned.samples >= 600, "{}: {pruned:?}", backend.name());
        let read = read_all(&*store);
        assert_eq!(read.len(), 600, "{}", backend.name());
        let mut kept_before = 0;
        for (labels, samples) in &read {
            let i: i64 = labels
                .trim_start_matches("{i=\"")
                .trim_end_matches("\"}")
                .parse()
                .expect("label");
            let (before, from): (Vec<_>, Vec<_>) =
                samples.iter().copied().partition(|&(t, _)| t < 2_500);
            assert_eq!(
                from,
                vec![
                    (3_000, value(i, 3).to_bits()),
                    (4_000, value(i, 4).to_bits()),
                    (5_000, (-1.0f64).to_bits()),
                ],
                "{} {labels}",
                backend.name()
            );
            assert!(
                before.is_empty() || before == vec![(2_000, value(i, 2).to_bits())],
                "{} {labels}: {before:?}",
                backend.name()
            );
            kept_before += before.len();
        }
        // Once compacted the count is exact: what reads back.
        let store = backend.open_with_head_max(1);
        while store.compact(1_000).expect("compact").more() {}
        assert_eq!(
            store.stats().expect("stats").samples,
            (600 * 3 + kept_before) as u64,
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

/// On PostgreSQL the default head also waits for [`HEAD_SAMPLES_PER_SERIES`] samples a
/// series before a drain, so that a drain does not rewrite a chunk per sample or two when
/// there are many series; a size set explicitly is taken as it is.
///
/// [`HEAD_SAMPLES_PER_SERIES`]: probewatch_store::postgres::HEAD_SAMPLES_PER_SERIES
#[test]
fn postgres_head_grows_with_the_series_unless_set() {
    use probewatch_store::postgres::{DEFAULT_HEAD_MAX_SAMPLES, HEAD_SAMPLES_PER_SERIES};
    for backend in common::backends::backends("head_per_series") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        // Enough series that their share outgrows the fixed size: 20,000 × 8 = 160,000.
        let series = 20_000i64;
        let threshold = u64::try_from(series).expect("positive") * HEAD_SAMPLES_PER_SERIES;
        assert!(threshold > DEFAULT_HEAD_MAX_SAMPLES);
        let round = |t: i64| -> Vec<SeriesSample> {
            (0..series)
                .map(|i| sample(i, t * 1_000, t as f64))
                .collect()
        };
        let default = open_store(
            &StoreLocation::Postgres(url.to_string()),
            &StoreOptions::default(),
        )
        .expect("open");
        // 7 samples a series: past the fixed size, short of 8 a series.
        for t in 0..7 {
            default.write_samples(&round(t)).expect("write");
        }
        assert!(7 * series as u64 > DEFAULT_HEAD_MAX_SAMPLES);
        assert!(
            !default.compact(1_000_000).expect("compact").swapped,
            "drained early"
        );
        // The same database with the size set explicitly drains now.
        let explicit = PgStore::open(url, None)
            .expect("open")
            .with_head_max_samples(DEFAULT_HEAD_MAX_SAMPLES);
        assert!(explicit.compact(1_000_000).expect("compact").swapped);
        while explicit.compact(1_000_000).expect("compact").more() {}
        // The default one drains once the series have 8 samples each in the head.
        for t in 7..14 {
            default.write_samples(&round(t)).expect("write");
        }
        assert!(!default.compact(1_000_000).expect("compact").swapped);
        default.write_samples(&round(14)).expect("write");
        assert!(default.compact(1_000_000).expect("compact").swapped);
        while default.compact(1_000_000).expect("compact").more() {}
        assert_eq!(
            default.stats().expect("stats").samples,
            15 * series as u64,
            "every sample kept"
        );
        let read = default.samples("m", 0, i64::MAX).expect("read");
        assert_eq!(read.len(), series as usize);
        assert!(read.iter().all(|s| s.samples.len() == 15));
    }
}

/// Once a drain ends, the chunks and head blocks it left dead row versions in are vacuumed
/// (on a thread of the store's own), so reads do not walk them until autovacuum comes.
#[test]
fn postgres_vacuums_after_a_drain() {
    for backend in common::backends::backends("vacuum_after_drain") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        let store = PgStore::open(url, None)
            .expect("open")
            .with_head_max_samples(100);
        let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).expect("db");
        let vacuums = |db: &mut ::postgres::Client| -> i64 {
            db.query_one(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'head_blocks'",
                &[],
            )
            .expect("stats")
            .get(0)
        };
        assert_eq!(vacuums(&mut db), 0, "a new database");
        // Two drains: the second rewrites the chunks the first wrote.
        for t in 0..2 {
            let round: Vec<SeriesSample> = (0..1_000).map(|i| sample(i, t * 1_000, 1.0)).collect();
            store.write_samples(&round).expect("write");
            assert!(store.compact(1_000_000).expect("compact").swapped);
            while store.compact(1_000_000).expect("compact").more() {}
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while vacuums(&mut db) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no vacuum after the drains"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let read = store.samples("m", 0, i64::MAX).expect("read");
        assert_eq!(read.len(), 1_000);
        assert!(read.iter().all(|s| s.samples.len() == 2));
    }
}
