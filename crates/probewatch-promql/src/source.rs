//! Where the engine reads samples from: the [`SeriesSource`] trait, label matchers, and an
//! in-memory source for tests and rule unit tests.

use regex::Regex;

use crate::QueryError;
use crate::labels::Labels;
use crate::value::Series;

/// How a matcher compares a label value.
#[derive(Debug, Clone)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored; `.` matches newlines, as in Prometheus 3)
    Re(Regex),
    /// `!~`
    NotRe(Regex),
}

/// One label matcher of a selector, e.g. `job=~"api|web"`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name (`__name__` for the metric name).
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// The text after the operator (for regexes, the pattern as written).
    pub value: String,
}

impl Matcher {
    /// Builds a matcher; regexes are anchored and compiled here.
    pub fn new(name: &str, op: &str, value: &str) -> Result<Matcher, QueryError> {
        let op = match op {
            "=" => MatchOp::Equal,
            "!=" => MatchOp::NotEqual,
            "=~" => MatchOp::Re(anchored_regex(value)?),
            "!~" => MatchOp::NotRe(anchored_regex(value)?),
            other => return Err(QueryError::Parse(format!("unknown match operator {other}"))),
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
        })
    }

    /// Whether a label value (empty when the label is absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal => self.value == value,
            MatchOp::NotEqual => self.value != value,
            MatchOp::Re(re) => re.is_match(value),
            MatchOp::NotRe(re) => !re.is_match(value),
        }
    }

    /// Whether a series with these labels is selected.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name))
    }
}

/// Compiles a PromQL regex: anchored at both ends, `.` matching newlines (Prometheus 3).
pub fn anchored_regex(pattern: &str) -> Result<Regex, QueryError> {
    Regex::new(&format!("^(?s:{pattern})$"))
        .map_err(|e| QueryError::Parse(format!("invalid regular expression {pattern:?}: {e}")))
}

/// One selector alternative and the time range an evaluation reads it over.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Matchers that must all hold.
    pub matchers: Vec<Matcher>,
    /// Oldest time read, ms.
    pub from_ms: i64,
    /// Newest time read, ms.
    pub to_ms: i64,
}

/// A store of series the engine can query. Implemented by probewatch's store adapter and by
/// [`MemorySource`].
pub trait SeriesSource {
    /// Every series matching all `matchers`, with its samples in `[from_ms, to_ms]` oldest
    /// first (series with no samples there may be left out). Fails with
    /// [`QueryError::TooManySamples`] rather than hold more than `max_samples` samples.
    fn select(
        &self,
        matchers: &[Matcher],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<Series>, QueryError>;

    /// A hint: the selections about to be made (a rule group's, before it is evaluated).
    /// A source whose every read is a round trip may read them all at once and answer the
    /// `select`s that follow from what it read; an empty list ends the hint. Errors are
    /// not reported here: a `select` the hint could not serve reads as usual.
    fn prefetch(&self, _selections: &[Selection]) {}

    /// The label sets of every series matching all `matchers` that has samples in
    /// `[from_ms, to_ms]` (for `/api/v1/series` and label listings).
    fn series(
        &self,
        matchers: &[Matcher],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        Ok(self
            .select(matchers, from_ms, to_ms, usize::MAX)?
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .map(|s| s.labels)
            .collect())
    }
}

/// Series held in memory, for tests, `rules test` and the PromQL conformance runner.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    series: Vec<Series>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> MemorySource {
        MemorySource::default()
    }

    /// Adds samples to a series (created if new); samples are kept sorted and a repeated
    /// timestamp replaces the earlier value.
    pub fn add(&mut self, labels: &Labels, points: impl IntoIterator<Item = (i64, f64)>) {
        let index = match self.series.iter().position(|s| &s.labels == labels) {
            Some(i) => i,
            None => {
                self.series.push(Series {
                    labels: labels.clone(),
                    points: Vec::new(),
                    drop_name: false,
                });
                self.series.len() - 1
            }
        };
        let series = &mut self.series[index];
        for (t, v) in points {
            put(&mut series.points, t, v);
        }
    }

    /// Removes every series.
    pub fn clear(&mut self) {
        self.series.clear();
    }
}

impl SeriesSource for MemorySource {
    fn select(
        &self,
        matchers: &[Matcher],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<Series>, QueryError> {
        let mut out = Vec::new();
        let mut held = 0usize;
        for s in &self.series {
            if !matchers.iter().all(|m| m.matches_labels(&s.labels)) {
                continue;
            }
            let points = points_within(&s.points, from_ms, to_ms);
            if points.is_empty() {
                continue;
            }
            held += points.len();
            if held > max_samples {
                return Err(QueryError::TooManySamples);
            }
            out.push(Series {
                labels: s.labels.clone(),
                points: points.to_vec(),
                drop_name: false,
            });
        }
        Ok(out)
    }
}

/// The points of a time-ordered slice that lie in `[from_ms, to_ms]`.
pub fn points_within(points: &[(i64, f64)], from_ms: i64, to_ms: i64) -> &[(i64, f64)] {
    let lo = points.partition_point(|p| p.0 < from_ms);
    let hi = points.partition_point(|p| p.0 <= to_ms);
    &points[lo..hi.max(lo)]
}

/// Puts a sample into points kept in time order; a sample at the same time is replaced.
fn put(points: &mut Vec<(i64, f64)>, t: i64, v: f64) {
    match points.binary_search_by_key(&t, |p| p.0) {
        Ok(i) => points[i].1 = v,
        Err(i) => points.insert(i, (t, v)),
    }
}

/// Samples laid over another source: what a group's recording rules wrote earlier in the
/// same evaluation, seen by the rules after them before the store has them (Prometheus
/// evaluates a group's rules in order, each seeing the results of the ones before).
pub struct Overlay<'a> {
    base: &'a dyn SeriesSource,
    extra: MemorySource,
}

impl<'a> Overlay<'a> {
    /// Nothing laid over `base` yet.
    pub fn new(base: &'a dyn SeriesSource) -> Overlay<'a> {
        Overlay {
            base,
            extra: MemorySource::new(),
        }
    }

    /// Lays a sample over the base (replacing one at the same time).
    pub fn add(&mut self, labels: &Labels, t_ms: i64, value: f64) {
        self.extra.add(labels, [(t_ms, value)]);
    }
}

impl SeriesSource for Overlay<'_> {
    fn prefetch(&self, selections: &[Selection]) {
        self.base.prefetch(selections);
    }

    fn select(
        &self,
        matchers: &[Matcher],
        from_ms: i64,
        to_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<Series>, QueryError> {
        let mut out = self.base.select(matchers, from_ms, to_ms, max_samples)?;
        for laid in self.extra.select(matchers, from_ms, to_ms, max_samples)? {
            match out.iter_mut().find(|s| s.labels == laid.labels) {
                Some(series) => {
                    for (t, v) in laid.points {
                        put(&mut series.points, t, v);
                    }
                }
                None => out.push(laid),
            }
        }
        Ok(out)
    }
}
