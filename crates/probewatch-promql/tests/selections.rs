//! `Query::selections` names every read an instant evaluation makes: each `select` falls
//! inside one of the selections (same matchers, a covering time range), so a source that
//! read the selections ahead (`SeriesSource::prefetch`) answers the whole evaluation.

use std::cell::RefCell;

use probewatch_promql::{
    Labels, Matcher, MemorySource, Query, QueryError, QueryOptions, Selection, Series, SeriesSource,
};

/// A source that records every `select` it answers.
struct Recording {
    inner: MemorySource,
    selects: RefCell<Vec<(String, i64, i64)>>,
}

fn key(matchers: &[Matcher]) -> String {
    let mut parts: Vec<String> = matchers
        .iter()
        .map(|m| format!("{}{:?}{}", m.name, std::mem::discriminant(&m.op), m.value))
        .collect();
    parts.sort();
    parts.join(",")
}

impl SeriesSource for Recording {
    fn select(
        &self,
        matchers: &[Matcher],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<Series>, QueryError> {
        self.selects
            .borrow_mut()
            .push((key(matchers), from_ms, to_ms));
        self.inner.select(matchers, from_ms, to_ms, max_samples)
    }
}

#[test]
fn selections_cover_every_read_of_an_instant_evaluation() {
    let mut inner = MemorySource::new();
    for job in ["a", "b"] {
        let labels = Labels::from_pairs(vec![
            ("__name__".to_string(), "up".to_string()),
            ("job".to_string(), job.to_string()),
        ]);
        inner.add(&labels, (0..400).map(|i| (i * 15_000, 1.0)));
    }
    let source = Recording {
        inner,
        selects: RefCell::new(Vec::new()),
    };
    let options = QueryOptions::default();
    let t = 3_600_000;
    for text in [
        "up",
        r#"up{job="a"} == 1"#,
        "rate(up[5m])",
        "max_over_time(up[1h] offset 10m)",
        "up @ 1000000",
        "avg_over_time(up[10m] @ end())",
        "max_over_time(rate(up[5m])[30m:1m])",
        "max_over_time(rate(up[5m])[30m:1m] offset 5m)",
        r#"absent_over_time(nothing{job="x"}[5m]) or up"#,
        r#"up{job="a"} and on (job) up{job="b"}"#,
        r#"{__name__="up", job=~"a|b"}"#,
        "label_replace(up, \"x\", \"$1\", \"job\", \"(.*)\")",
        "sum by (job) (increase(up[1h])) / scalar(count(up offset 1h))",
    ] {
        let query = Query::parse(text).expect(text);
        let selections: Vec<Selection> = query.selections(t, &options);
        source.selects.borrow_mut().clear();
        query.instant(&source, t, &options).expect(text);
        let selects = source.selects.borrow();
        assert!(!selects.is_empty(), "{text}: nothing read");
        for (matchers, from, to) in selects.iter() {
            assert!(
                selections
                    .iter()
                    .any(|s| key(&s.matchers) == *matchers && s.from_ms <= *from && *to <= s.to_ms),
                "{text}: select {matchers} [{from}, {to}] not among {:?}",
                selections
                    .iter()
                    .map(|s| (key(&s.matchers), s.from_ms, s.to_ms))
                    .collect::<Vec<_>>()
            );
        }
    }
}
