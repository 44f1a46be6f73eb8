//! `StoreSource`'s read-ahead for a rule group (`SeriesSource::prefetch`) on every back end:
//! the selects it covers are answered from what it read, exactly as the store would have
//! answered then; the selects it does not cover, and every select after the hint ends, read
//! the store.

use probewatch_core::SeriesSample;
use probewatch_promql::{Matcher, Selection, Series, SeriesSource};
use probewatch_store::*;

mod common;

fn matchers(text: &str) -> Vec<Matcher> {
    let mut alternatives = probewatch_promql::parse_selector(text).expect("selector");
    assert_eq!(alternatives.len(), 1);
    alternatives.remove(0)
}

/// Series `m{job, i}` for 5 instances of jobs a and b, a sample every 10 s from `from` to
/// `to` (ms), valued `value`.
fn samples(from: i64, to: i64, value: f64) -> Vec<SeriesSample> {
    let mut out = Vec::new();
    for job in ["a", "b"] {
        for i in 0..5 {
            for t in (from..=to).step_by(10_000) {
                out.push(SeriesSample {
                    metric: "m".into(),
                    labels: format!("{{i=\"{i}\",job=\"{job}\"}}"),
                    time_ms: t,
                    value,
                });
            }
        }
    }
    out
}

fn select(source: &dyn SeriesSource, text: &str, from: i64, to: i64) -> Vec<Series> {
    let mut series = source
        .select(&matchers(text), from, to, usize::MAX)
        .expect("select");
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    series
}

fn values(series: &[Series]) -> Vec<f64> {
    series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect()
}

#[test]
fn a_prefetch_answers_the_selects_it_covers_and_no_others() {
    for backend in common::backends::backends("prefetch") {
        eprintln!("prefetch on {}", backend.name());
        prefetch(&*backend.open_with_head_max(200));
    }
}

fn prefetch(store: &dyn Store) {
    store
        .write_samples(&samples(0, 600_000, 1.0))
        .expect("write");
    // In chunks; the rewrite below stays in the head and must win over them.
    while store.compact(1_000).expect("compact").more() {}
    let index = SeriesIndex::new();
    let plain = StoreSource::new(store, &index);
    let ahead = StoreSource::new(store, &index);
    ahead.prefetch(&[
        Selection {
            matchers: matchers(r#"m{job="a"}"#),
            from_ms: 300_000,
            to_ms: 600_000,
        },
        Selection {
            matchers: matchers(r#"m{job="b", i="1"}"#),
            from_ms: 0,
            to_ms: 600_000,
        },
    ]);
    // Inside what was read: the same answer as the store's.
    for (text, from, to) in [
        (r#"m{job="a"}"#, 300_000, 600_000),
        (r#"m{job="a", i="3"}"#, 400_000, 500_000),
        (r#"m{job="b", i="1"}"#, 0, 600_000),
        (r#"m{job="b", i="1"}"#, 123_456, 234_567),
        (r#"m{job="nope"}"#, 0, 600_000),
    ] {
        let (a, b) = (
            select(&plain, text, from, to),
            select(&ahead, text, from, to),
        );
        assert_eq!(a.len(), b.len(), "{text} [{from}, {to}]");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.labels, y.labels, "{text}");
            assert_eq!(x.points, y.points, "{text} [{from}, {to}]");
        }
    }
    assert_eq!(select(&ahead, r#"m{job="a"}"#, 300_000, 600_000).len(), 5);

    // The store changes: what the hint covers keeps the moment it read; the rest reads on.
    store
        .write_samples(&samples(0, 600_000, 2.0))
        .expect("rewrite");
    let covered = select(&ahead, r#"m{job="a"}"#, 300_000, 600_000);
    assert!(values(&covered).iter().all(|v| *v == 1.0), "{covered:?}");
    let wider = select(&ahead, r#"m{job="a"}"#, 0, 600_000);
    assert!(values(&wider).iter().all(|v| *v == 2.0), "{wider:?}");
    let others = select(&ahead, r#"m{job="b"}"#, 0, 600_000);
    assert_eq!(others.len(), 5);
    assert!(values(&others).iter().all(|v| *v == 2.0));
    // A budget holds on prefetched reads too.
    assert!(matches!(
        ahead.select(&matchers(r#"m{job="a"}"#), 300_000, 600_000, 10),
        Err(probewatch_promql::QueryError::TooManySamples)
    ));

    // An empty hint ends it.
    ahead.prefetch(&[]);
    let after = select(&ahead, r#"m{job="a"}"#, 300_000, 600_000);
    assert!(values(&after).iter().all(|v| *v == 2.0));
    assert_eq!(values(&after).len(), 5 * 31);

    // A hint for several rule groups at once: a later hint that it covers (one group's)
    // reads nothing and keeps its moment; one it does not cover reads the store.
    let hint = |text: &str, from_ms, to_ms| Selection {
        matchers: matchers(text),
        from_ms,
        to_ms,
    };
    ahead.prefetch(&[
        hint(r#"m{job="a"}"#, 0, 600_000),
        hint(r#"m{job="b"}"#, 0, 600_000),
    ]);
    store
        .write_samples(&samples(0, 600_000, 3.0))
        .expect("rewrite");
    ahead.prefetch(&[hint(r#"m{job="b", i="2"}"#, 100_000, 600_000)]);
    let held = select(&ahead, r#"m{job="a"}"#, 0, 600_000);
    assert!(values(&held).iter().all(|v| *v == 2.0), "{held:?}");
    ahead.prefetch(&[hint(r#"m{job="a"}"#, 0, 700_000)]);
    let read = select(&ahead, r#"m{job="a"}"#, 0, 600_000);
    assert!(values(&read).iter().all(|v| *v == 3.0), "{read:?}");
    // Forgetting it (a group wrote what the next reads) makes the next selects read.
    ahead.prefetch(&[hint(r#"m{job="b"}"#, 0, 600_000)]);
    store
        .write_samples(&samples(0, 600_000, 4.0))
        .expect("rewrite");
    ahead.forget_prefetched();
    let fresh = select(&ahead, r#"m{job="b"}"#, 0, 600_000);
    assert!(values(&fresh).iter().all(|v| *v == 4.0), "{fresh:?}");

    // A series added after the hint matched its selectors, and put in the shared index by
    // another source's select, is not hidden by what the hint matched: the select reads.
    ahead.prefetch(&[hint(r#"m{job="a"}"#, 0, 600_000)]);
    assert_eq!(select(&ahead, r#"m{job="a"}"#, 0, 600_000).len(), 5);
    store
        .write_samples(&[SeriesSample {
            metric: "m".into(),
            labels: r#"{i="9",job="a"}"#.into(),
            time_ms: 300_000,
            value: 5.0,
        }])
        .expect("a new series");
    assert_eq!(select(&plain, r#"m{job="a", i="9"}"#, 0, 600_000).len(), 1);
    let grown = select(&ahead, r#"m{job="a"}"#, 0, 600_000);
    assert_eq!(grown.len(), 6, "{grown:?}");
}
