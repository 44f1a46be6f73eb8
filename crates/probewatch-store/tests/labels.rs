//! Series, label names and label values through `StoreSource` on every back end: with
//! and without matchers and time ranges, past the bulk threshold where presence comes from
//! each series' time span.

use probewatch_core::SeriesSample;
use probewatch_promql::Matcher;
use probewatch_store::*;

mod common;

fn sample(metric: &str, labels: &str, time_ms: i64) -> SeriesSample {
    SeriesSample {
        metric: metric.into(),
        labels: labels.into(),
        time_ms,
        value: 1.0,
    }
}

fn selector(text: &str) -> Vec<Vec<Matcher>> {
    probewatch_promql::parse_selector(text).expect("selector")
}

#[test]
fn label_names_and_values_follow_matchers_and_time() {
    for backend in common::backends::backends("labels") {
        eprintln!("labels on {}", backend.name());
        labels(&*backend.open());
    }
}

fn labels(store: &dyn Store) {
    // 1,000 "up" series with an instance each, early (t = 1,000); 10 "late" series of two
    // jobs only at t = 100,000; one "old" series whose only label `zone` is early too.
    let mut samples: Vec<SeriesSample> = (0..1000)
        .map(|i| sample("up", &format!("{{instance=\"i{i:04}\",job=\"a\"}}"), 1_000))
        .collect();
    samples.extend((0..10).map(|i| {
        let job = if i < 5 { "b" } else { "c" };
        sample("late", &format!("{{job=\"{job}\",shard=\"{i}\"}}"), 100_000)
    }));
    samples.push(sample("old", "{zone=\"z1\"}", 1_000));
    store.write_samples(&samples).expect("write");
    while store.compact(100_000).expect("compact").more() {}
    let index = SeriesIndex::new();
    let source = StoreSource::new(store, &index);
    let all = vec![Vec::new()];
    let (ever, early, late) = ((i64::MIN, i64::MAX), (0, 2_000), (50_000, 200_000));

    let names = |alts: &[Vec<Matcher>], (from, to): (i64, i64)| {
        source.label_names(alts, from, to).expect("names")
    };
    assert_eq!(
        names(&all, ever),
        ["__name__", "instance", "job", "shard", "zone"]
    );
    assert_eq!(names(&all, late), ["__name__", "job", "shard"]);
    assert_eq!(names(&all, early), ["__name__", "instance", "job", "zone"]);
    assert_eq!(names(&selector("late"), early), Vec::<String>::new());
    assert_eq!(
        names(&selector("{zone=~\"z.*\"}"), ever),
        ["__name__", "zone"]
    );

    let values = |name: &str, alts: &[Vec<Matcher>], (from, to): (i64, i64)| {
        source.label_values(name, alts, from, to).expect("values")
    };
    assert_eq!(values("job", &all, ever), ["a", "b", "c"]);
    assert_eq!(values("job", &all, late), ["b", "c"]);
    assert_eq!(values("job", &all, early), ["a"]);
    assert_eq!(values("__name__", &all, ever), ["late", "old", "up"]);
    assert_eq!(
        values("__name__", &all, (300_000, 400_000)),
        Vec::<String>::new()
    );
    let instances = values("instance", &all, early);
    assert_eq!(instances.len(), 1000);
    assert!(instances.is_sorted());
    assert_eq!(values("instance", &all, late), Vec::<String>::new());
    assert_eq!(
        values("shard", &selector("late{job=\"c\"}"), ever),
        ["5", "6", "7", "8", "9"]
    );
    // Two selectors: the union, each value once.
    let mut both = selector("late{job=\"b\"}");
    both.extend(selector("{job=~\"b|c\", shard=~\"[5-6]\"}"));
    assert_eq!(
        values("shard", &both, late),
        ["0", "1", "2", "3", "4", "5", "6"]
    );
    assert_eq!(values("nope", &all, ever), Vec::<String>::new());

    // A series created after the index was loaded shows up.
    store
        .write_samples(&[sample("late", "{job=\"d\",shard=\"99\"}", 150_000)])
        .expect("write");
    assert_eq!(values("job", &all, late), ["b", "c", "d"]);
    assert_eq!(
        names(&selector("late{job=\"d\"}"), late),
        ["__name__", "job", "shard"]
    );
}

#[test]
fn presence_over_many_series_follows_later_writes_from_any_server() {
    for backend in common::backends::backends("labels_follow") {
        eprintln!("labels_follow on {}", backend.name());
        // A head limit of one sample: every compaction drains the head into chunks.
        let store = backend.open_with_head_max(1);
        // A second server on the same database where there is one (PostgreSQL), else the
        // same store: its chunks must be seen by the first server's next question.
        let other = backend
            .postgres_url()
            .map(|_| backend.open_with_head_max(1));
        let writer: &dyn Store = other.as_deref().unwrap_or(&*store);
        follow(&*store, writer);
    }
}

fn follow(store: &dyn Store, writer: &dyn Store) {
    // 3,000 series at t = 1,000: past the threshold where presence comes from spans.
    let early: Vec<SeriesSample> = (0..3000)
        .map(|i| sample("up", &format!("{{instance=\"i{i:04}\"}}"), 1_000))
        .collect();
    store.write_samples(&early).expect("write");
    while store.compact(10_000).expect("compact").more() {}
    let index = SeriesIndex::new();
    let source = StoreSource::new(store, &index);
    let all = vec![Vec::new()];
    let values = |from: i64, to: i64| {
        source
            .label_values("instance", &all, from, to)
            .expect("values")
    };
    assert_eq!(values(0, 2_000).len(), 3000);
    assert!(values(40_000, 60_000).is_empty());

    // Later: two series moved into chunks by the other server, one only in the head.
    writer
        .write_samples(&[
            sample("up", "{instance=\"i0007\"}", 50_000),
            sample("up", "{instance=\"late\"}", 50_000),
        ])
        .expect("write");
    while writer.compact(10_000).expect("compact").more() {}
    // "late" now has a chunk of its own (the 3,000 early series have one each).
    assert!(writer.sample_span().expect("span").chunks > 3000);
    writer
        .write_samples(&[sample("up", "{instance=\"head\"}", 55_000)])
        .expect("write");
    assert_eq!(values(40_000, 60_000), ["head", "i0007", "late"]);
    assert_eq!(values(52_000, 60_000), ["head"]);
    assert_eq!(values(0, 2_000).len(), 3000);
}
