//! "Which of these series have a sample between `from` and `to`" (`/api/v1/series`, label
//! names and values with a time range), on every back end, for many series at once: some
//! vouched for by their chunks, some only by the head — a few of them (looked up by key)
//! or most of them (one pass over the head).

use probewatch_core::SeriesSample;
use probewatch_store::StoreError;

mod common;

const SERIES: i64 = 2_500;

fn sample(i: i64, t: i64) -> SeriesSample {
    SeriesSample {
        metric: "m".into(),
        labels: format!("{{i=\"{i}\"}}"),
        time_ms: t,
        value: 1.0,
    }
}

#[test]
fn presence_of_many_series_from_chunks_and_the_head() {
    for backend in common::backends::backends("presence_of_many_series") {
        // Every series every 10 s from 0 to 1,000 s; series 100 and up go on to 2,000 s.
        // All of it compacted into chunks.
        let store = backend.open_with_head_max(1);
        let mut samples = Vec::new();
        for i in 0..SERIES {
            let end = if i < 100 { 1_000_000 } else { 2_000_000 };
            samples.extend((0..=end / 10_000).map(|k| sample(i, k * 10_000)));
        }
        store.write_samples(&samples).expect("write");
        while store.compact(100_000).expect("compact").more() {}
        // Then, in the head only: every other one of the first 100 at 1,500 s, and every
        // third series at 2,600 s.
        let store = backend.open();
        let mut head = Vec::new();
        for i in (0..100).step_by(2) {
            head.push(sample(i, 1_500_000));
        }
        for i in (0..SERIES).step_by(3) {
            head.push(sample(i, 2_600_000));
        }
        store.write_samples(&head).expect("write");
        let mut ids: Vec<(String, i64)> = store
            .series_after(0)
            .expect("series")
            .into_iter()
            .map(|s| (s.labels, s.id))
            .collect();
        ids.sort();
        let id_of = |i: i64| -> i64 {
            let labels = format!("{{i=\"{i}\"}}");
            ids.iter()
                .find(|(l, _)| *l == labels)
                .map(|(_, id)| *id)
                .expect("id")
        };
        let asked: Vec<i64> = (0..SERIES).map(id_of).collect();
        for (from, to, expect) in [
            // Chunks vouch for series 100 and up; of the first 100, the head has the even
            // ones (a few, looked up by key).
            (
                1_400_000,
                1_600_000,
                Box::new(|i: i64| i >= 100 || i % 2 == 0) as Box<dyn Fn(i64) -> bool>,
            ),
            // No chunk reaches here: the head alone (most series, one pass).
            (2_500_000, 3_000_000, Box::new(|i: i64| i % 3 == 0)),
            // Nothing at all.
            (5_000_000, 6_000_000, Box::new(|_| false)),
        ] {
            let got = store
                .series_with_samples(&asked, from, to)
                .expect("presence");
            // A back end may answer from each series' time span, so a series with samples
            // before and after the range may be counted too (never one without).
            let times = |i: i64| {
                let end = if i < 100 { 1_000_000 } else { 2_000_000 };
                let mut t: Vec<i64> = (0..=end / 10_000).map(|k| k * 10_000).collect();
                if i < 100 && i % 2 == 0 {
                    t.push(1_500_000);
                }
                if i % 3 == 0 {
                    t.push(2_600_000);
                }
                t
            };
            let around = |i: i64| {
                let t = times(i);
                t.iter().any(|&x| x < from) && t.iter().any(|&x| x > to)
            };
            let wrong: Vec<i64> = (0..SERIES)
                .filter(|&i| {
                    let got = got[usize::try_from(i).expect("index")];
                    got != expect(i) && !(got && around(i))
                })
                .collect();
            assert!(
                wrong.is_empty(),
                "{}: [{from}, {to}]: wrong for series {:?}",
                backend.name(),
                &wrong[..wrong.len().min(10)]
            );
        }
    }
}

/// Reading most of the store's series at once (a whole metric) gives each series exactly
/// what reading it in small batches gives, from chunks and head, and nothing of the series
/// not asked for — on PostgreSQL such a read takes the range whole and drops the rest.
#[test]
fn reading_most_series_at_once_matches_reading_them_in_small_batches() {
    for backend in common::backends::backends("reading_most_series_at_once") {
        let store = backend.open_with_head_max(1);
        let series = 6_000i64;
        let mut samples = Vec::new();
        for i in 0..series {
            samples.extend((0..4).map(|k| sample(i, k * 60_000 + i % 7)));
        }
        store.write_samples(&samples).expect("write");
        while store.compact(100_000).expect("compact").more() {}
        let store = backend.open();
        let head: Vec<SeriesSample> = (0..series).step_by(2).map(|i| sample(i, 300_000)).collect();
        store.write_samples(&head).expect("write");
        let rows = store.series_after(0).expect("series");
        assert_eq!(rows.len(), 6_000);
        // Five of every six series, in a shuffled order with one asked twice.
        let mut asked: Vec<i64> = rows
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 6 != 0)
            .map(|(_, r)| r.id)
            .collect();
        asked.reverse();
        asked.push(asked[7]);
        let (from, to) = (60_000, 300_000);
        let whole = store
            .read_samples(&asked, from, to, usize::MAX)
            .expect("read whole");
        let by_batches: Vec<Vec<(i64, f64)>> = asked
            .chunks(100)
            .flat_map(|c| store.read_samples(c, from, to, usize::MAX).expect("read"))
            .collect();
        assert_eq!(whole.len(), asked.len());
        assert_eq!(whole, by_batches, "{}", backend.name());
        // A small read (by bucket on PostgreSQL) with a series asked twice, one with a head
        // sample: each slot gets the series whole.
        let in_head = rows
            .iter()
            .map(|r| r.id)
            .find(|&id| {
                let read = store
                    .read_samples(&[id], from, to, usize::MAX)
                    .expect("read");
                read[0].iter().any(|s| s.0 == 300_000)
            })
            .expect("a series with a head sample");
        let other = rows[rows.len() / 2].id;
        let small = store
            .read_samples(&[in_head, other, in_head], from, to, usize::MAX)
            .expect("read small");
        let one = |id| {
            store
                .read_samples(&[id], from, to, usize::MAX)
                .expect("read")[0]
                .clone()
        };
        assert_eq!(
            small,
            vec![one(in_head), one(other), one(in_head)],
            "{}",
            backend.name()
        );
        assert!(whole.iter().all(|s| !s.is_empty()));
        // The sample limit still counts only what was asked for.
        let held: usize = whole.iter().map(Vec::len).sum();
        assert!(store.read_samples(&asked, from, to, held).is_ok());
        assert!(matches!(
            store.read_samples(&asked, from, to, held - 1),
            Err(StoreError::TooManySamples { .. })
        ));
    }
}
