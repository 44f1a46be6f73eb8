//! The PromQL engine's view of a [`Store`]: an index of every series' labels, kept current
//! incrementally, and a [`SeriesSource`] that selects series by matchers and reads their
//! samples. Written against the `Store` trait, so any back end gets PromQL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};

use probewatch_promql::labels::{Labels, METRIC_NAME};
use probewatch_promql::source::{MatchOp, points_within};
use probewatch_promql::{Matcher, QueryError, Selection, Series, SeriesSource};

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
    /// Label name (`__name__` included) → its values, sorted → positions in `series`,
    /// ascending: an equality matcher narrows the candidates without looking at other
    /// series, and a label's values are listed without visiting every series.
    postings: HashMap<String, BTreeMap<String, Vec<usize>>>,
}

impl Index {
    /// Adds series `id` (past every id held) with its labels, `__name__` included.
    fn add(&mut self, id: i64, labels: Labels) {
        let position = self.series.len();
        for (name, value) in labels.pairs() {
            let values = match self.postings.get_mut(name.as_str()) {
                Some(values) => values,
                None => self.postings.entry(name.clone()).or_default(),
            };
            match values.get_mut(value.as_str()) {
                Some(positions) => positions.push(position),
                None => {
                    values.insert(value.clone(), vec![position]);
                }
            }
        }
        self.series.push((id, labels));
        self.max_id = id;
    }
}

impl SeriesIndex {
    /// An empty index; the first query loads it.
    pub fn new() -> SeriesIndex {
        SeriesIndex::default()
    }

    fn refresh(&self, store: &dyn Store) -> Result<(), QueryError> {
        let after = self.inner.read().map_or(0, |i| i.max_id);
        let rows = store.series_after(after).map_err(query_error)?;
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
            index.add(row.id, labels);
        }
        Ok(())
    }

    /// Every metric name, sorted (for `/api/v1/metadata`).
    pub fn metric_names(&self, store: &dyn Store) -> Result<Vec<String>, QueryError> {
        self.refresh(store)?;
        let index = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let names: Vec<String> = index
            .postings
            .get(METRIC_NAME)
            .map(|values| values.keys().cloned().collect())
            .unwrap_or_default();
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
        let mut label_pairs = 0;
        for (name, by_value) in &index.postings {
            for (value, positions) in by_value {
                let count = u64::try_from(positions.len()).unwrap_or(u64::MAX);
                if name == METRIC_NAME {
                    by_metric.push((value.to_string(), count));
                }
                by_pair.push((format!("{name}={value}"), count));
                *bytes.entry(name).or_default() += u64::try_from(value.len()).unwrap_or(0);
            }
            label_pairs += by_value.len();
            values.insert(name, u64::try_from(by_value.len()).unwrap_or(u64::MAX));
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
            label_pairs,
            by_metric: top(by_metric),
            values_by_label: named(values),
            bytes_by_label: named(bytes),
            by_pair: top(by_pair),
        })
    }

    /// Ids and labels of the series all `matchers` select.
    fn matching(&self, matchers: &[Matcher]) -> Vec<(i64, Labels)> {
        let index = self.inner.read().unwrap_or_else(|e| e.into_inner());
        positions(&index, matchers)
            .into_iter()
            .map(|p| index.series[p].clone())
            .collect()
    }
}

/// Positions in `index.series` of the series all `matchers` select, ascending.
fn positions(index: &Index, matchers: &[Matcher]) -> Vec<usize> {
    // The equality matchers' posting lists, shortest first: candidates come from the
    // shortest, and stay when every other list holds them (a binary search in an array of
    // positions). Only the other matchers read a candidate's labels. Reading every
    // candidate's labels for every matcher missed the cache at each step when a selector's
    // series lay far apart in the index (on PostgreSQL, series are created sorted by name, so
    // a probe's series are spread over its batch): 5x the time of the same work on
    // neighbouring series, a third of a rule cycle.
    let mut lists: Vec<&Vec<usize>> = Vec::new();
    let mut others: Vec<&Matcher> = Vec::new();
    for m in matchers {
        if matches!(m.op, MatchOp::Equal) && !m.value.is_empty() {
            match index.postings.get(&m.name).and_then(|v| v.get(&m.value)) {
                Some(list) => lists.push(list),
                None => return Vec::new(),
            }
        } else {
            others.push(m);
        }
    }
    lists.sort_unstable_by_key(|list| list.len());
    let selects = |p: &usize| others.iter().all(|m| m.matches_labels(&index.series[*p].1));
    match lists.split_first() {
        Some((shortest, rest)) => shortest
            .iter()
            .copied()
            .filter(|p| rest.iter().all(|list| list.binary_search(p).is_ok()))
            .filter(selects)
            .collect(),
        None if matchers.is_empty() => (0..index.series.len()).collect(),
        None => (0..index.series.len()).filter(selects).collect(),
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
        self.index.refresh(self.store)?;
        let index = self.index.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut labels: Vec<Labels> = match self.present(&index, alternatives, from_ms, to_ms)? {
            Presence::All(present) => index
                .series
                .iter()
                .zip(present)
                .filter(|(_, present)| *present)
                .map(|((_, labels), _)| labels.clone())
                .collect(),
            Presence::Some(positions) => positions
                .into_iter()
                .map(|p| index.series[p].1.clone())
                .collect(),
        };
        labels.sort();
        Ok(labels)
    }

    /// Label names of the series any of `alternatives` selects that have samples in
    /// `[from_ms, to_ms]`, sorted (`/api/v1/labels`).
    pub fn label_names(
        &self,
        alternatives: &[Vec<Matcher>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<String>, QueryError> {
        self.index.refresh(self.store)?;
        let index = self.index.inner.read().unwrap_or_else(|e| e.into_inner());
        let present = self.present(&index, alternatives, from_ms, to_ms)?;
        let mut names: Vec<String> = match &present {
            // Every series: a name is in if any of its series is; most names settle at
            // their first posting.
            Presence::All(present) => index
                .postings
                .iter()
                .filter(|(_, by_value)| {
                    by_value
                        .values()
                        .any(|list| list.iter().any(|&p| present[p]))
                })
                .map(|(name, _)| name.clone())
                .collect(),
            Presence::Some(positions) => {
                let mut names = BTreeSet::new();
                for &p in positions {
                    names.extend(index.series[p].1.pairs().iter().map(|(n, _)| n.as_str()));
                }
                names.into_iter().map(String::from).collect()
            }
        };
        names.sort();
        Ok(names)
    }

    /// Values of label `name` among the series any of `alternatives` selects that have
    /// samples in `[from_ms, to_ms]`, sorted (`/api/v1/label/<name>/values`).
    pub fn label_values(
        &self,
        name: &str,
        alternatives: &[Vec<Matcher>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<String>, QueryError> {
        self.index.refresh(self.store)?;
        let index = self.index.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(by_value) = index.postings.get(name) else {
            return Ok(Vec::new());
        };
        Ok(match self.present(&index, alternatives, from_ms, to_ms)? {
            // Every series: walk the label's own postings, already in value order.
            Presence::All(present) => by_value
                .iter()
                .filter(|(_, list)| list.iter().any(|&p| present[p]))
                .map(|(value, _)| value.clone())
                .collect(),
            Presence::Some(positions) => positions
                .iter()
                .map(|&p| index.series[p].1.get(name))
                .filter(|v| !v.is_empty())
                .collect::<BTreeSet<&str>>()
                .into_iter()
                .map(String::from)
                .collect(),
        })
    }

    /// Which selected series have samples in the range: for every series by position when
    /// an alternative has no matchers, otherwise the selected positions that do.
    fn present(
        &self,
        index: &Index,
        alternatives: &[Vec<Matcher>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Presence, QueryError> {
        if alternatives.iter().any(Vec::is_empty) {
            let ids: Vec<i64> = index.series.iter().map(|(id, _)| *id).collect();
            let present = self
                .store
                .series_with_samples(&ids, from_ms, to_ms)
                .map_err(query_error)?;
            return Ok(Presence::All(present));
        }
        let mut selected: Vec<usize> = alternatives
            .iter()
            .flat_map(|matchers| positions(index, matchers))
            .collect();
        if alternatives.len() > 1 {
            selected.sort_unstable();
            selected.dedup();
        }
        let ids: Vec<i64> = selected.iter().map(|&p| index.series[p].0).collect();
        let present = self
            .store
            .series_with_samples(&ids, from_ms, to_ms)
            .map_err(query_error)?;
        Ok(Presence::Some(
            selected
                .into_iter()
                .zip(present)
                .filter_map(|(p, ok)| ok.then_some(p))
                .collect(),
        ))
    }
}

/// What [`StoreSource::present`] found.
enum Presence {
    /// By position, for every series.
    All(Vec<bool>),
    /// The positions of the selected series with samples.
    Some(Vec<usize>),
}

/// A [`SeriesSource`] over a store. Make one per evaluation (a query, the rule groups due at
/// one time): what a [`SeriesSource::prefetch`] hint read is kept until a hint it does not
/// cover, [`StoreSource::forget_prefetched`] or the source's end.
pub struct StoreSource<'a> {
    store: &'a dyn Store,
    index: &'a SeriesIndex,
    /// What the current hint read.
    prefetched: Mutex<Held>,
}

/// What a [`SeriesSource::prefetch`] hint read: each series' samples, and which series each
/// of its selectors picked, so that neither the check that a later hint is covered nor a
/// select served from it matches the index again (three matchings of every selector a rule
/// round, a third of its time at 100,000 series).
#[derive(Default)]
struct Held {
    /// Samples by store id.
    series: HashMap<i64, Prefetched>,
    /// Each selector's series and the range they were read over.
    selectors: HashMap<MatchersKey, HeldSelector>,
    /// Series in the index when the selectors were matched: positions stay valid as series
    /// are only added, but a selector may pick one added since.
    index_len: usize,
}

/// One selector of a hint: its series' positions in the index, and the widest range any
/// selection of it asked for (each of its series was read over at least that).
struct HeldSelector {
    positions: Vec<usize>,
    from_ms: i64,
    to_ms: i64,
}

/// A selector's matchers, as a map key.
type MatchersKey = Vec<(String, u8, String)>;

fn matchers_key(matchers: &[Matcher]) -> MatchersKey {
    matchers
        .iter()
        .map(|m| {
            let op = match m.op {
                MatchOp::Equal => 0,
                MatchOp::NotEqual => 1,
                MatchOp::Re(_) => 2,
                MatchOp::NotRe(_) => 3,
            };
            (m.name.clone(), op, m.value.clone())
        })
        .collect()
}

impl Held {
    /// Whether every one of `selections` was read, over its range at least: a selector of
    /// the hint itself (what a rule group's own hint repeats of its round's) by its key,
    /// another by the series it picks in `index` (not refreshed: the hint refreshed it).
    fn covers(&self, index: &Index, selections: &[Selection]) -> bool {
        let spans = |from_ms: i64, to_ms: i64, selection: &Selection| {
            from_ms <= selection.from_ms && to_ms >= selection.to_ms
        };
        !self.series.is_empty()
            && selections.iter().all(|selection| {
                match self.selectors.get(&matchers_key(&selection.matchers)) {
                    Some(held) => spans(held.from_ms, held.to_ms, selection),
                    None => positions(index, &selection.matchers).into_iter().all(|p| {
                        self.series
                            .get(&index.series[p].0)
                            .is_some_and(|held| spans(held.from_ms, held.to_ms, selection))
                    }),
                }
            })
    }
}

/// One series' samples read ahead, and the time range they cover.
struct Prefetched {
    from_ms: i64,
    to_ms: i64,
    points: Vec<(i64, f64)>,
}

/// At most this many samples are read ahead for one hint; a group that needs more reads
/// selector by selector, under each query's own budget.
const PREFETCH_MAX_SAMPLES: usize = 5_000_000;

impl<'a> StoreSource<'a> {
    /// A source reading `store`, finding series through the shared `index`.
    pub fn new(store: &'a dyn Store, index: &'a SeriesIndex) -> StoreSource<'a> {
        StoreSource {
            store,
            index,
            prefetched: Mutex::new(Held::default()),
        }
    }

    /// The store read.
    pub fn store(&self) -> &'a dyn Store {
        self.store
    }

    /// The series index used.
    pub fn index(&self) -> &'a SeriesIndex {
        self.index
    }

    /// Drops what the last hint read: the store has changed under it (a rule group wrote
    /// samples that the next group may read).
    pub fn forget_prefetched(&self) {
        *self.prefetched.lock().unwrap_or_else(|e| e.into_inner()) = Held::default();
    }

    /// The selected series, served from what the last hint read when it holds every one of
    /// them over `[from_ms, to_ms]`; `None` when it does not.
    fn select_prefetched(
        &self,
        matchers: &[Matcher],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Option<Result<Vec<Series>, QueryError>> {
        let held = self.prefetched.lock().unwrap_or_else(|e| e.into_inner());
        if held.series.is_empty() {
            return None;
        }
        // No index refresh: the hint refreshed it, and the evaluation sees that moment.
        let index = self.index.inner.read().unwrap_or_else(|e| e.into_inner());
        let matched;
        let selected: &[usize] = match held.selectors.get(&matchers_key(matchers)) {
            Some(selector) if index.series.len() == held.index_len => &selector.positions,
            _ => {
                matched = positions(&index, matchers);
                &matched
            }
        };
        let mut out = Vec::with_capacity(selected.len());
        let mut samples = 0usize;
        for &position in selected {
            let (id, labels) = &index.series[position];
            let entry = held.series.get(id)?;
            if entry.from_ms > from_ms || entry.to_ms < to_ms {
                return None;
            }
            let points = points_within(&entry.points, from_ms, to_ms);
            if points.is_empty() {
                continue;
            }
            samples += points.len();
            if samples > max_samples {
                return Some(Err(QueryError::TooManySamples));
            }
            out.push(Series {
                labels: labels.clone(),
                points: points.to_vec(),
                drop_name: false,
            });
        }
        Some(Ok(out))
    }
}

impl SeriesSource for StoreSource<'_> {
    fn prefetch(&self, selections: &[Selection]) {
        let mut held = self.prefetched.lock().unwrap_or_else(|e| e.into_inner());
        // A hint for several rule groups due together already read what each group's own
        // hint names: keep it (one read a cycle instead of one a group).
        if !selections.is_empty()
            && held.covers(
                &self.index.inner.read().unwrap_or_else(|e| e.into_inner()),
                selections,
            )
        {
            return;
        }
        *held = Held::default();
        if selections.is_empty() {
            return;
        }
        if let Err(err) = self.index.refresh(self.store) {
            tracing::debug!(error = %err, "prefetch skipped");
            return;
        }
        // Each selector matched once, over the widest range its selections ask for (a
        // group's rules use a handful of windows); each series read over the widest range
        // of the selectors that pick it, all at once (`read_ranges`).
        let mut ranges: HashMap<MatchersKey, (&[Matcher], i64, i64)> = HashMap::new();
        for selection in selections {
            ranges
                .entry(matchers_key(&selection.matchers))
                .and_modify(|(_, from, to)| {
                    *from = (*from).min(selection.from_ms);
                    *to = (*to).max(selection.to_ms);
                })
                .or_insert((&selection.matchers, selection.from_ms, selection.to_ms));
        }
        let mut wanted: HashMap<i64, (i64, i64)> = HashMap::new();
        let mut selectors = HashMap::with_capacity(ranges.len());
        let index_len = {
            let index = self.index.inner.read().unwrap_or_else(|e| e.into_inner());
            for (key, (matchers, from_ms, to_ms)) in ranges {
                let picked = positions(&index, matchers);
                for &p in &picked {
                    wanted
                        .entry(index.series[p].0)
                        .and_modify(|(a, b)| {
                            *a = (*a).min(from_ms);
                            *b = (*b).max(to_ms);
                        })
                        .or_insert((from_ms, to_ms));
                }
                selectors.insert(
                    key,
                    HeldSelector {
                        positions: picked,
                        from_ms,
                        to_ms,
                    },
                );
            }
            index.series.len()
        };
        let mut wanted: Vec<(i64, i64, i64)> = wanted
            .into_iter()
            .map(|(id, (from, to))| (id, from, to))
            .collect();
        wanted.sort_unstable();
        match self.store.read_ranges(&wanted, PREFETCH_MAX_SAMPLES) {
            Ok(read) => {
                held.series.reserve(wanted.len());
                for ((id, from_ms, to_ms), points) in wanted.into_iter().zip(read) {
                    held.series.insert(
                        id,
                        Prefetched {
                            from_ms,
                            to_ms,
                            points,
                        },
                    );
                }
                held.selectors = selectors;
                held.index_len = index_len;
            }
            Err(err) => {
                // Too much to hold, or the store failed: the selects read as usual and
                // report what they meet.
                tracing::debug!(error = %err, "prefetch abandoned");
                *held = Held::default();
            }
        }
    }

    fn select(
        &self,
        matchers: &[Matcher],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<Series>, QueryError> {
        if let Some(served) = self.select_prefetched(matchers, from_ms, to_ms, max_samples) {
            return served;
        }
        self.index.refresh(self.store)?;
        let selected = self.index.matching(matchers);
        let ids: Vec<i64> = selected.iter().map(|(id, _)| *id).collect();
        let samples = self
            .store
            .read_samples(&ids, from_ms, to_ms, max_samples)
            .map_err(query_error)?;
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

/// A store failure as the query engine reports it: a store that cannot be reached now is
/// `unavailable` (HTTP 503: worth trying again shortly), too many samples is the engine's
/// own limit, anything else `internal`.
pub fn query_error(err: crate::StoreError) -> QueryError {
    match err {
        crate::StoreError::TooManySamples { .. } => QueryError::TooManySamples,
        crate::StoreError::Unreachable(reason) => QueryError::Unavailable(reason),
        other => QueryError::Storage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series a selector picks through the postings are exactly those whose labels every
    /// matcher accepts, for equality (including `=""`, a missing label), inequality and
    /// regex matchers, alone and together.
    #[test]
    fn positions_agree_with_reading_every_series() {
        let mut index = Index::default();
        let mut next = crate::test_numbers(0x2545_f491_4f6c_dd1du64);
        for id in 1..=400 {
            let mut pairs = vec![(METRIC_NAME.to_string(), format!("m{}", next(3)))];
            for (name, values) in [("a", 5), ("b", 3), ("c", 40)] {
                // Each label missing now and then.
                let value = next(values + 1);
                if value < values {
                    pairs.push((name.to_string(), format!("{name}{value}")));
                }
            }
            index.add(id, Labels::from_pairs(pairs));
        }
        let all = [
            ("__name__", "=", "m1"),
            ("a", "=", "a2"),
            ("a", "=", ""),
            ("b", "!=", "b1"),
            ("b", "=", "b0"),
            ("c", "=~", "c1.*"),
            ("c", "!~", "c3"),
            ("c", "=", "c7"),
            ("a", "=", "nowhere"),
        ];
        let mut checked = 0;
        for mask in 0u32..(1 << all.len()) {
            let matchers: Vec<Matcher> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, (n, op, v))| Matcher::new(n, op, v).expect("matcher"))
                .collect();
            let want: Vec<usize> = (0..index.series.len())
                .filter(|&p| {
                    matchers
                        .iter()
                        .all(|m| m.matches_labels(&index.series[p].1))
                })
                .collect();
            assert_eq!(positions(&index, &matchers), want, "{matchers:?}");
            checked += usize::from(!want.is_empty());
        }
        assert!(checked > 50, "most selections pick something: {checked}");
    }
}
