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

    /// Every metric name, sorted (for `/api/v1/metadata`).
    pub fn metric_names(&self, store: &dyn Store) -> Result<Vec<String>, QueryError> {
        self.refresh(store)?;
        let index = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let prefix = posting_key(METRIC_NAME, "");
        let mut names: Vec<String> = index
            .postings
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix).map(String::from))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The index's cardinality as Prometheus's `/api/v1/status/tsdb` reports it, each list
    /// the `limit` largest.
    pub fn cardinality(&self, store: &dyn Store, limit: usize) -> Result<Cardinality, QueryError> {
        self.refresh(store)?;
        let index = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut by_metric = Vec::new();
        let mut by_pair = Vec::new();
        let mut values: HashMap<&str, u64> = HashMap::new();
        let mut bytes: HashMap<&str, u64> = HashMap::new();
        for (key, positions) in &index.postings {
            let Some((name, value)) = key.split_once('\u{ffff}') else {
                continue;
            };
            let count = u64::try_from(positions.len()).unwrap_or(u64::MAX);
            if name == METRIC_NAME {
                by_metric.push((value.to_string(), count));
            }
            by_pair.push((format!("{name}={value}"), count));
            *values.entry(name).or_default() += 1;
            *bytes.entry(name).or_default() += u64::try_from(value.len()).unwrap_or(0);
        }
        let top = |mut list: Vec<(String, u64)>| {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            list.truncate(limit);
            list
        };
        let named = |map: HashMap<&str, u64>| {
            top(map.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        };
        Ok(Cardinality {
            series: index.series.len(),
            label_pairs: index.postings.len(),
            by_metric: top(by_metric),
            values_by_label: named(values),
            bytes_by_label: named(bytes),
            by_pair: top(by_pair),
        })
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

/// Cardinality of the series index (see [`SeriesIndex::cardinality`]).
#[derive(Debug, Clone, Default)]
pub struct Cardinality {
    /// Series.
    pub series: usize,
    /// Distinct `name=value` pairs.
    pub label_pairs: usize,
    /// Series per metric name, largest first.
    pub by_metric: Vec<(String, u64)>,
    /// Distinct values per label name, largest first.
    pub values_by_label: Vec<(String, u64)>,
    /// Bytes of the distinct values per label name, largest first.
    pub bytes_by_label: Vec<(String, u64)>,
    /// Series per `name=value` pair, largest first.
    pub by_pair: Vec<(String, u64)>,
}

impl StoreSource<'_> {
    /// Label sets of the series selected by any of `alternatives` that have samples in
    /// `[from_ms, to_ms]`, sorted and without repeats (for `/api/v1/series`).
    pub fn series_labels(
        &self,
        alternatives: &[Vec<Matcher>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        let mut labels = self.present_series(alternatives, from_ms, to_ms)?;
        labels.sort();
        Ok(labels)
    }

    /// Like [`StoreSource::series_labels`] but in no particular order: label names and
    /// values need only a set, and sorting every series' labels was most of their cost at
    /// hundreds of thousands of series.
    pub fn present_series(
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
        if alternatives.len() > 1 {
            let mut seen = std::collections::HashSet::with_capacity(selected.len());
            selected.retain(|(id, _)| seen.insert(*id));
        }
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
