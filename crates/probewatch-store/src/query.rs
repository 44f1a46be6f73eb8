//! The PromQL engine's view of a [`Store`]: an index of every series' labels, kept current
//! incrementally, and a [`SeriesSource`] that selects series by matchers and reads their
//! samples. Written against the `Store` trait, so any back end gets PromQL.

use std::collections::HashMap;
use std::sync::RwLock;

use probewatch_promql::labels::{Labels, METRIC_NAME};
use probewatch_promql::source::MatchOp;
use probewatch_promql::{Matcher, QueryError, Series, SeriesSource};

use crate::Store;

/// Every series' labels (with `__name__`), loaded once and then extended with new series.
/// Share one per process: series are never renamed, only added.
#[derive(Debug, Default)]
pub struct SeriesIndex {
    inner: RwLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    max_id: i64,
    /// (store id, labels), by id.
    series: Vec<(i64, Labels)>,
    /// `name=value` (every label, `__name__` included) → positions in `series`, ascending:
    /// an equality matcher narrows the candidates without looking at other series.
    postings: HashMap<String, Vec<usize>>,
}

fn posting_key(name: &str, value: &str) -> String {
    format!("{name}\u{ffff}{value}")
}

impl SeriesIndex {
    /// An empty index; the first query loads it.
    pub fn new() -> SeriesIndex {
        SeriesIndex::default()
    }

    fn refresh(&self, store: &dyn Store) -> Result<(), QueryError> {
        let after = self.inner.read().map_or(0, |i| i.max_id);
        let rows = store
            .series_after(after)
            .map_err(|e| QueryError::Storage(e.to_string()))?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut index = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for row in rows {
            if row.id <= index.max_id {
                continue; // another query added it meanwhile
            }
            let Some(pairs) = probewatch_core::labels::parse_canonical(&row.labels) else {
                tracing::warn!(id = row.id, labels = %row.labels, "unreadable series labels");
                continue;
            };
            let mut labels = Labels::from_pairs(pairs);
            labels.set(METRIC_NAME, row.metric.clone());
            let position = index.series.len();
            for (name, value) in labels.pairs() {
                index
                    .postings
                    .entry(posting_key(name, value))
                    .or_default()
                    .push(position);
            }
            index.series.push((row.id, labels));
            index.max_id = row.id;
        }
        Ok(())
    }

    /// Ids and labels of the series all `matchers` select.
    fn matching(&self, matchers: &[Matcher]) -> Vec<(i64, Labels)> {
        let index = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let pick = |(id, labels): &(i64, Labels)| {
            matchers
                .iter()
                .all(|m| m.matches_labels(labels))
                .then(|| (*id, labels.clone()))
        };
        // The shortest posting list of the equality matchers bounds the candidates.
        let mut narrowest: Option<&Vec<usize>> = None;
        for m in matchers {
            if !matches!(m.op, MatchOp::Equal) || m.value.is_empty() {
                continue;
            }
            let Some(list) = index.postings.get(&posting_key(&m.name, &m.value)) else {
                return Vec::new();
            };
            if narrowest.is_none_or(|n| list.len() < n.len()) {
                narrowest = Some(list);
            }
        }
        match narrowest {
            Some(positions) => positions
                .iter()
                .filter_map(|&p| pick(&index.series[p]))
                .collect(),
            None => index.series.iter().filter_map(pick).collect(),
        }
    }
}

impl StoreSource<'_> {
    /// Label sets of the series selected by any of `alternatives` that have samples in
    /// `[from_ms, to_ms]`, sorted and without repeats (for `/api/v1/series` and labels).
    pub fn series_labels(
        &self,
        alternatives: &[Vec<Matcher>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        self.index.refresh(self.store)?;
        let mut selected: Vec<(i64, Labels)> = Vec::new();
        for matchers in alternatives {
            selected.extend(self.index.matching(matchers));
        }
        selected.sort_by(|a, b| a.1.cmp(&b.1));
        selected.dedup_by(|a, b| a.0 == b.0);
        let ids: Vec<i64> = selected.iter().map(|(id, _)| *id).collect();
        let present = self
            .store
            .series_with_samples(&ids, from_ms, to_ms)
            .map_err(|e| QueryError::Storage(e.to_string()))?;
        Ok(selected
            .into_iter()
            .zip(present)
            .filter_map(|((_, labels), present)| present.then_some(labels))
            .collect())
    }
}

/// A [`SeriesSource`] over a store.
pub struct StoreSource<'a> {
    /// Where samples come from.
    pub store: &'a dyn Store,
    /// The shared series index.
    pub index: &'a SeriesIndex,
}

impl SeriesSource for StoreSource<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<Series>, QueryError> {
        self.index.refresh(self.store)?;
        let selected = self.index.matching(matchers);
        let ids: Vec<i64> = selected.iter().map(|(id, _)| *id).collect();
        let samples = self
            .store
            .read_samples(&ids, from_ms, to_ms, max_samples)
            .map_err(|e| match e {
                crate::StoreError::TooManySamples { .. } => QueryError::TooManySamples,
                other => QueryError::Storage(other.to_string()),
            })?;
        Ok(selected
            .into_iter()
            .zip(samples)
            .filter(|(_, points)| !points.is_empty())
            .map(|((_, labels), points)| Series {
                labels,
                points,
                drop_name: false,
            })
            .collect())
    }
}
