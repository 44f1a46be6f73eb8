//! Samples read back identically whether they sit in the head or in chunks: compaction is
//! checked against a plain map on every back end (see `common/backends.rs`), with late and
//! repeated timestamps, steps interleaved with ingest, and restarts in between.

use std::collections::BTreeMap;

use probewatch_core::SeriesSample;
use probewatch_store::*;

mod common;
use common::Rng;

type Model = BTreeMap<(String, i64), f64>;

fn batch(file: u64, samples: Vec<SeriesSample>) -> IngestItem {
    common::item(file, Vec::new(), samples)
}

/// The ids of every series, in id order.
fn series_ids(store: &dyn Store) -> Vec<i64> {
    store
        .series_after(0)
        .expect("series")
        .iter()
        .map(|r| r.id)
        .collect()
}

fn check_reads(store: &dyn Store, model: &Model, series: &[String], rng: &mut Rng) {
    for _ in 0..6 {
        let (a, b) = (rng.below(40_000) as i64, rng.below(40_000) as i64);
        let (from, to) = (a.min(b), a.max(b));
        let got = store.samples("m", from, to).expect("read");
        for labels in series {
            let want: Vec<(i64, f64)> = model
                .range((labels.clone(), from)..=(labels.clone(), to))
                .map(|((_, ts), v)| (*ts, *v))
                .collect();
            let have = got
                .iter()
                .find(|s| &s.labels == labels)
                .map(|s| s.samples.clone())
                .unwrap_or_default();
            assert_eq!(have, want, "series {labels} in [{from}, {to}]");
        }
        // The batched read (what queries use) must agree with the per-series one.
        let rows = store.series_after(0).expect("series");
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let batched = store
            .read_samples(&ids, from, to, usize::MAX)
            .expect("read_samples");
        for (row, samples) in rows.iter().zip(batched) {
            let want: Vec<(i64, f64)> = model
                .range((row.labels.clone(), from)..=(row.labels.clone(), to))
                .map(|((_, ts), v)| (*ts, *v))
                .collect();
            assert_eq!(
                samples, want,
                "batched read of {} in [{from}, {to}]",
                row.labels
            );
        }
    }
}

#[test]
fn compaction_preserves_every_sample_and_the_last_write_wins() {
    for backend in common::backends::backends("compaction") {
        eprintln!("compaction on {}", backend.name());
        compaction(&backend);
    }
}

fn compaction(backend: &common::backends::Backend) {
    let series: Vec<String> = (0..7).map(|i| format!("{{s=\"{i}\"}}")).collect();
    let mut model = Model::new();
    let mut rng = Rng(0x5eed);
    let mut file = 0u64;
    for round in 0..4 {
        let store = backend.open_with_head_max(300);
        for _ in 0..40 {
            let mut items = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let mut samples = Vec::new();
                for _ in 0..rng.below(30) {
                    let labels = series[rng.below(series.len() as u64) as usize].clone();
                    // Mostly advancing time, sometimes far in the past (late data), with
                    // repeats of earlier timestamps that must replace their value.
                    let ts = match rng.below(10) {
                        0 => rng.below(40_000) as i64,
                        1 => 20_000,
                        _ => (round * 10_000 + rng.below(10_000)) as i64,
                    };
                    let value = rng.below(1000) as f64 / 8.0;
                    samples.push(SeriesSample {
                        metric: "m".into(),
                        labels,
                        time_ms: ts,
                        value,
                    });
                }
                file += 1;
                items.push(batch(file, samples));
            }
            // The model applies samples in commit order: a later one replaces an earlier one.
            for item in &items {
                if let ItemContent::Parsed { samples, .. } = &item.content {
                    for s in samples {
                        model.insert((s.labels.clone(), s.time_ms), s.value);
                    }
                }
            }
            store.commit_batch(&items, false).expect("commit");
            for _ in 0..rng.below(3) {
                store.compact(1 + rng.below(120) as usize).expect("compact");
            }
            if rng.below(8) == 0 {
                check_reads(&*store, &model, &series, &mut rng);
            }
        }
        check_reads(&*store, &model, &series, &mut rng);
    }

    // Drain the head: with a head limit of one sample compaction runs until it is empty.
    // Everything then lives in chunks, and the count is exact.
    let store = backend.open_with_head_max(1);
    let mut steps = 0;
    while store.compact(50).expect("compact").more() {
        steps += 1;
        assert!(steps < 10_000, "compaction does not finish");
    }
    check_reads(&*store, &model, &series, &mut rng);
    assert_eq!(store.stats().expect("stats").samples, model.len() as u64);
    // The layout's own invariants, in each back end's tables: no head rows left, a series'
    // chunks never overlap in time and are never over-full.
    const HEAD_ROWS: &str = "SELECT count(*) FROM head_blocks";
    const OVERLAPS: &str =
        "SELECT count(*) FROM chunks a JOIN chunks b ON a.series_id = b.series_id
        AND a.id < b.id AND a.min_ts <= b.max_ts AND b.min_ts <= a.max_ts";
    const BIGGEST: &str = "SELECT max(samples)::int8 FROM chunks";
    let (head_rows, overlaps, biggest): (i64, i64, i64) = match backend {
        common::backends::Backend::Sqlite(dir) => {
            let db = rusqlite::Connection::open(dir.path().join(sqlite::DB_FILE)).expect("db");
            let one = |sql: &str| -> i64 {
                db.query_row(&sql.replace("::int8", ""), [], |r| r.get(0))
                    .expect("count")
            };
            (one(HEAD_ROWS), one(OVERLAPS), one(BIGGEST))
        }
        common::backends::Backend::Postgres { url, .. } => {
            let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).expect("db");
            let mut one = |sql: &str| -> i64 { db.query_one(sql, &[]).expect("count").get(0) };
            (one(HEAD_ROWS), one(OVERLAPS), one(BIGGEST))
        }
    };
    assert_eq!(head_rows, 0);
    assert_eq!(overlaps, 0);
    assert!(biggest as usize <= chunk::CHUNK_MAX_SAMPLES);
}

/// Retention gives the space it frees back to the file system (incremental auto-vacuum),
/// and what is left still reads back.
#[test]
fn retention_returns_freed_space_to_the_file_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let db = dir.path().join("probewatch.db");
    let checkpointed_size = || {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        std::fs::metadata(&db).expect("stat").len()
    };
    let (series, rounds, per_batch) = (300i64, 1_100i64, 100i64);
    for first in (0..rounds).step_by(per_batch as usize) {
        let samples: Vec<SeriesSample> = (first..first + per_batch)
            .flat_map(|round| {
                (0..series).map(move |i| SeriesSample {
                    metric: "m".into(),
                    labels: format!("{{s=\"{i}\"}}"),
                    time_ms: round * 60_000,
                    value: (i as f64) * 1.5 + (round % 7) as f64,
                })
            })
            .collect();
        store.write_samples(&samples).expect("write");
        while store.compact(100_000).expect("compact").more() {}
    }
    let before = checkpointed_size();
    // The first two chunks of every series (512 samples each) are all older than this.
    let cutoff = 1_024 * 60_000;
    let summary = store.prune(cutoff, &|_| true).expect("prune");
    assert_eq!(summary.samples, (series * 1_024) as u64, "{summary:?}");
    assert!(summary.bytes_released > 0, "{summary:?}");
    let after = checkpointed_size();
    assert!(
        after + summary.bytes_released / 2 < before,
        "the file did not shrink: {before} -> {after} bytes ({summary:?})"
    );
    let left = store.samples("m", 0, i64::MAX).expect("read");
    assert_eq!(left.len(), series as usize);
    for s in &left {
        let times: Vec<i64> = s.samples.iter().map(|x| x.0).collect();
        let want: Vec<i64> = (1_024..rounds).map(|r| r * 60_000).collect();
        assert_eq!(times, want, "{}", s.labels);
    }
}

/// With the default head size, a head that grows past it starts a drain by itself. On
/// PostgreSQL that decision reads the table's live-row statistic instead of counting
/// (a scan of up to 131,072 rows a batch); it lags a little, so the test keeps asking as the
/// ingest writer does between batches.
#[test]
fn a_head_past_its_default_size_drains() {
    for backend in common::backends::backends("a_head_past_its_default_size_drains") {
        let store = backend.open();
        let per_series = 100u64;
        let total = (sqlite::DEFAULT_HEAD_MAX_SAMPLES / per_series + 80) * per_series;
        let mut file = 0u64;
        let mut items = Vec::new();
        for s in 0..total / per_series {
            let samples = (0..per_series)
                .map(|t| SeriesSample {
                    metric: "m".into(),
                    labels: format!("{{s=\"{s}\"}}"),
                    time_ms: i64::try_from(t).expect("small") * 1000,
                    value: 1.0,
                })
                .collect();
            file += 1;
            items.push(batch(file, samples));
            if items.len() == 100 {
                store.commit_batch(&items, false).expect("commit");
                items.clear();
            }
        }
        store.commit_batch(&items, false).expect("commit");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let started = loop {
            let step = store.compact(50_000).expect("compact");
            if step.more() {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        };
        assert!(
            started,
            "{}: the full head never started a drain",
            backend.name()
        );
        while store.compact(50_000).expect("compact").more() {}
        assert_eq!(store.stats().expect("stats").samples, total);
        let one = store
            .read_samples(&[1], 0, 1_000_000, usize::MAX)
            .expect("read");
        assert_eq!(one[0].len(), 100, "{}", backend.name());
    }
}

/// Two servers on one PostgreSQL database take turns compacting, each keeping its own
/// memory of which series have chunks (it skips the previous-chunk lookup for the rest)
/// and of the head blocks it has read: the chunks one makes must be seen by the other, so
/// no sample is lost or duplicated and no chunk overlaps another, and reads along the way
/// agree with the model.
#[test]
fn two_servers_take_turns_compacting_one_database() {
    for backend in common::backends::backends("two_servers_take_turns_compacting") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        let open = || {
            postgres::PgStore::open(url, None)
                .expect("open")
                .with_head_max_samples(40)
        };
        let (a, b) = (open(), open());
        let series: Vec<String> = (0..9).map(|i| format!("{{s=\"{i}\"}}")).collect();
        let mut model = Model::new();
        let mut rng = Rng(0x7e4a);
        for file in 0..120u64 {
            let mut samples = Vec::new();
            for _ in 0..1 + rng.below(12) {
                let labels = series[rng.below(series.len() as u64) as usize].clone();
                let ts = match rng.below(8) {
                    0 => rng.below(30_000) as i64,
                    _ => (file * 250 + rng.below(250)) as i64,
                };
                let value = rng.below(1000) as f64;
                model.insert((labels.clone(), ts), value);
                samples.push(SeriesSample {
                    metric: "m".into(),
                    labels,
                    time_ms: ts,
                    value,
                });
            }
            let writer: &dyn Store = if file % 2 == 0 { &a } else { &b };
            writer
                .commit_batch(&[batch(file + 1, samples)], false)
                .expect("commit");
            let compactor: &dyn Store = if rng.below(2) == 0 { &a } else { &b };
            for _ in 0..rng.below(3) {
                compactor
                    .compact(1 + rng.below(30) as usize)
                    .expect("compact");
            }
            // Both read as they go: each keeps the head blocks it has read, while the other
            // writes new ones and drains old ones into chunks.
            if file % 10 == 9 {
                check_reads(&a, &model, &series, &mut rng);
                check_reads(&b, &model, &series, &mut rng);
            }
        }
        while a.compact(50).expect("compact").more() | b.compact(50).expect("compact").more() {}
        check_reads(&a, &model, &series, &mut rng);
        check_reads(&b, &model, &series, &mut rng);
        let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).expect("db");
        let overlaps: i64 = db
            .query_one(
                "SELECT count(*) FROM chunks x JOIN chunks y ON x.series_id = y.series_id
                 AND x.id < y.id AND x.min_ts <= y.max_ts AND y.min_ts <= x.max_ts",
                &[],
            )
            .expect("overlaps")
            .get(0);
        assert_eq!(overlaps, 0, "chunks of a series never overlap");
    }
}

/// Reads over several chunks a series, narrow and wide, agree with the model, also after
/// another server rewrote the chunks (a late sample merged in, new ones appended) between
/// one server's reads (whose head blocks it keeps).
#[test]
fn reads_follow_chunks_rewritten_since_they_were_read() {
    for backend in common::backends::backends("reads_follow_rewritten_chunks") {
        let reader = backend.open_with_head_max(1);
        let other = backend.postgres_url().map(|url| {
            postgres::PgStore::open(url, None)
                .expect("open")
                .with_head_max_samples(1)
        });
        let writer: &dyn Store = match &other {
            Some(store) => store,
            None => &*reader,
        };
        let series: Vec<String> = (0..6).map(|i| format!("{{s=\"{i}\"}}")).collect();
        let mut model = Model::new();
        let write =
            |model: &mut Model, file: u64, times: &mut dyn Iterator<Item = i64>, value: f64| {
                let mut samples = Vec::new();
                for ts in times {
                    for labels in &series {
                        model.insert((labels.clone(), ts), value);
                        samples.push(SeriesSample {
                            metric: "m".into(),
                            labels: labels.clone(),
                            time_ms: ts,
                            value,
                        });
                    }
                }
                writer
                    .commit_batch(&[batch(file, samples)], false)
                    .expect("commit");
                while writer.compact(10_000).expect("compact").more() {}
            };
        // 1,300 samples a series: three chunks each.
        write(&mut model, 1, &mut (0..1_300).map(|i| i * 1_000), 1.0);
        let ids = series_ids(&*reader);
        let expect = |model: &Model, from: i64, to: i64| -> Vec<Vec<(i64, f64)>> {
            series
                .iter()
                .map(|labels| {
                    model
                        .range((labels.clone(), from)..=(labels.clone(), to))
                        .map(|((_, ts), v)| (*ts, *v))
                        .collect()
                })
                .collect()
        };
        let read = |from: i64, to: i64| {
            reader
                .read_samples(&ids, from, to, usize::MAX)
                .expect("read")
        };
        // Series ids follow the labels' order here (made in that order).
        for (from, to) in [(1_250_000, 1_300_000), (0, 1_300_000), (400_000, 700_000)] {
            assert_eq!(read(from, to), expect(&model, from, to), "[{from}, {to}]");
            assert_eq!(
                read(from, to),
                expect(&model, from, to),
                "again [{from}, {to}]"
            );
        }
        // Another server replaces a sample in the middle chunk and appends to the last.
        write(&mut model, 2, &mut [600_000].into_iter(), 7.0);
        write(&mut model, 3, &mut (1_300..1_400).map(|i| i * 1_000), 2.0);
        for (from, to) in [(0, 1_400_000), (500_000, 700_000), (1_250_000, 1_400_000)] {
            assert_eq!(
                read(from, to),
                expect(&model, from, to),
                "after [{from}, {to}]"
            );
        }
        // read_ranges, the rule groups' read, agrees too.
        let wanted: Vec<(i64, i64, i64)> = ids.iter().map(|&id| (id, 590_000, 610_000)).collect();
        let ranges = reader.read_ranges(&wanted, usize::MAX).expect("ranges");
        assert_eq!(ranges, expect(&model, 590_000, 610_000));
    }
}

/// Readers of one server, in threads, while another server writes and compacts: each read
/// sees every series as one unbroken run of the samples written (value = time), at least as
/// far as was written before it began. A read served from chunks it kept, not following a
/// chunk merged or moved out of the head since, would show a gap or lose the run's end.
#[test]
fn reads_in_threads_keep_up_with_another_servers_compaction() {
    for backend in common::backends::backends("reads_keep_up_with_compaction") {
        let Some(url) = backend.postgres_url() else {
            continue;
        };
        let writer = postgres::PgStore::open(url, None)
            .expect("open")
            .with_head_max_samples(30);
        let reader = postgres::PgStore::open(url, None).expect("open");
        let series: Vec<String> = (0..5).map(|i| format!("{{s=\"{i}\"}}")).collect();
        let sample = |labels: &str, ts: i64| SeriesSample {
            metric: "m".into(),
            labels: labels.to_string(),
            time_ms: ts,
            value: ts as f64,
        };
        writer
            .commit_batch(
                &[batch(1, series.iter().map(|s| sample(s, 0)).collect())],
                false,
            )
            .expect("commit");
        let ids = series_ids(&reader);
        let written = std::sync::atomic::AtomicI64::new(0);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for thread in 0..2i64 {
                let (reader, ids, written, done) = (&reader, &ids, &written, &done);
                scope.spawn(move || {
                    let mut reads = 0;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) || reads < 5 {
                        let least = written.load(std::sync::atomic::Ordering::SeqCst);
                        // Rule-like windows at the end, and the whole run.
                        let from = if reads % 2 == thread {
                            0
                        } else {
                            (least - 40).max(0)
                        };
                        let got = reader
                            .read_samples(ids, from * 1000, 1_000_000, usize::MAX)
                            .expect("read");
                        for samples in got {
                            let times: Vec<i64> = samples.iter().map(|s| s.0 / 1000).collect();
                            let want: Vec<i64> = (from..=from + times.len() as i64 - 1).collect();
                            assert_eq!(times, want, "one unbroken run from {from}");
                            assert!(
                                samples.iter().all(|s| s.1 == (s.0) as f64),
                                "values are their times"
                            );
                            assert!(
                                times.last().copied().unwrap_or(-1) >= least,
                                "a read sees what was written before it began ({least})"
                            );
                        }
                        reads += 1;
                    }
                });
            }
            for ts in 1..400i64 {
                let samples = series.iter().map(|s| sample(s, ts * 1000)).collect();
                writer
                    .commit_batch(&[batch(ts as u64 + 1, samples)], false)
                    .expect("commit");
                written.store(ts, std::sync::atomic::Ordering::SeqCst);
                while writer.compact(17).expect("compact").more() {}
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
}
