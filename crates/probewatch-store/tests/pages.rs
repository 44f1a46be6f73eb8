//! Walks that hold a page at a time instead of everything at once, on every back end:
//! `checks_after` visits every check exactly once, and `last_values` gives each series'
//! newest value in a range, as the whole read (`samples`) does; and `read_ranges`, many
//! series each with its own range at once, answers as one read per range would.

use std::collections::{BTreeMap, BTreeSet};

use probewatch_core::{CheckResult, ProbeResult, SeriesSample, Status, TimeSource};
use probewatch_store::StoreError;

mod common;

fn result(host: usize, checks: usize, ts: i64) -> ProbeResult {
    ProbeResult {
        probe: "web".into(),
        host: format!("h{host}"),
        time_ms: ts,
        time_source: TimeSource::Declared,
        interval_ms: Some(60_000),
        checks: (0..checks)
            .map(|c| CheckResult {
                name: format!("c{c}"),
                status: Status::Ok,
                duration_seconds: None,
                message: String::new(),
            })
            .collect(),
        metrics: Vec::new(),
    }
}

#[test]
fn paging_over_checks_visits_each_exactly_once() {
    for backend in common::backends::backends("paging_over_checks") {
        let store = backend.open();
        // 1,003 checks over 59 hosts, in batches that interleave hosts.
        let mut file = 0;
        for round in 0..17 {
            let items: Vec<_> = (0..59)
                .filter(|h| h % 17 == round)
                .map(|h| {
                    file += 1;
                    common::item(file, vec![result(h, 17, 1_000)], Vec::new())
                })
                .collect();
            store.commit_batch(&items, false).expect("commit");
        }
        let all = store.latest_checks().expect("checks");
        assert_eq!(all.len(), 59 * 17, "{}", backend.name());
        for page_size in [1, 7, 256, 5_000] {
            let mut seen = Vec::new();
            let mut after = i64::MIN;
            loop {
                let page = store.checks_after(after, page_size).expect("page");
                assert!(page.len() <= page_size, "{}", backend.name());
                let Some(last) = page.last() else { break };
                assert!(page.windows(2).all(|w| w[0].id < w[1].id), "by id");
                assert!(page[0].id > after);
                after = last.id;
                seen.extend(page.into_iter().map(|c| (c.host, c.check)));
            }
            let unique: BTreeSet<_> = seen.iter().cloned().collect();
            assert_eq!(
                (seen.len(), unique.len()),
                (all.len(), all.len()),
                "{} page {page_size}",
                backend.name()
            );
        }
    }
}

#[test]
fn last_values_match_the_whole_read() {
    for backend in common::backends::backends("last_values") {
        // 9,000 series (more than two of PostgreSQL's pages), each with samples at
        // 1..=k s, k varying; a series of another metric; some samples compacted.
        let store = backend.open_with_head_max(20_000);
        let sample = |metric: &str, i: usize, t: i64| SeriesSample {
            metric: metric.into(),
            labels: format!("{{i=\"{i}\"}}"),
            time_ms: t * 1_000,
            value: (i as f64) + (t as f64) / 100.0,
        };
        let mut samples = Vec::new();
        for i in 0..9_000 {
            samples.extend((1..=(i % 5) as i64).map(|t| sample("m", i, t)));
        }
        samples.push(sample("other", 1, 3));
        store.write_samples(&samples).expect("write");
        while store.compact(10_000).expect("compact").more() {}
        // A later write of one series' newest sample wins.
        store
            .write_samples(&[SeriesSample {
                value: -1.0,
                ..sample("m", 4, 4)
            }])
            .expect("rewrite");
        for (from, to) in [(0, 10_000), (2_000, 3_000), (5_000, 9_000)] {
            let whole: BTreeMap<String, f64> = store
                .samples("m", from, to)
                .expect("samples")
                .into_iter()
                .filter_map(|s| s.samples.last().map(|&(_, v)| (s.labels, v)))
                .collect();
            let mut visited = BTreeMap::new();
            store
                .last_values("m", from, to, &mut |labels, value| {
                    assert!(
                        visited.insert(labels.to_string(), value).is_none(),
                        "{labels} twice"
                    );
                })
                .expect("last values");
            assert_eq!(visited, whole, "{} [{from}, {to}]", backend.name());
            if from == 0 {
                assert_eq!(visited.len(), 9_000 / 5 * 4, "{}", backend.name());
                assert_eq!(visited.get("{i=\"4\"}"), Some(&-1.0));
            }
        }
    }
}

#[test]
fn read_ranges_match_one_read_per_range() {
    for backend in common::backends::backends("read_ranges") {
        // 300 series, a sample every 10 s over 20 min; half compacted into chunks, then
        // a rewrite of some in the head that must win.
        let store = backend.open_with_head_max(5_000);
        let sample = |i: i64, t: i64, v: f64| SeriesSample {
            metric: "m".into(),
            labels: format!("{{i=\"{i}\"}}"),
            time_ms: t,
            value: v,
        };
        let mut samples = Vec::new();
        for t in (0..1_200_000).step_by(10_000) {
            samples.extend((0..300).map(|i| sample(i, t, (i * 1_000 + t / 1_000) as f64)));
        }
        store.write_samples(&samples).expect("write");
        while store.compact(20_000).expect("compact").more() {}
        let rewrite: Vec<SeriesSample> = (0..300)
            .step_by(7)
            .map(|i| sample(i, 600_000, -2.0))
            .collect();
        store.write_samples(&rewrite).expect("rewrite");
        let ids: Vec<i64> = store
            .series_after(0)
            .expect("series")
            .iter()
            .map(|s| s.id)
            .collect();
        let mut rng = common::Rng(0x9e37_79b9_7f4a_7c15);
        let mut wanted = Vec::new();
        for _ in 0..500 {
            let id = ids[rng.below(ids.len() as u64) as usize];
            let from = rng.below(1_300_000) as i64 - 50_000;
            let to = from + rng.below(700_000) as i64;
            wanted.push((id, from, to));
        }
        let read = store.read_ranges(&wanted, usize::MAX).expect("ranges");
        assert_eq!(read.len(), wanted.len());
        let mut nonempty = 0;
        for (&(id, from, to), got) in wanted.iter().zip(&read) {
            let want = store
                .read_samples(&[id], from, to, usize::MAX)
                .expect("read")
                .remove(0);
            assert_eq!(got, &want, "{} {id} [{from}, {to}]", backend.name());
            nonempty += usize::from(!got.is_empty());
        }
        assert!(nonempty > 400, "{nonempty}");
        assert!(matches!(
            store.read_ranges(&wanted, 10),
            Err(StoreError::TooManySamples { .. })
        ));
    }
}
