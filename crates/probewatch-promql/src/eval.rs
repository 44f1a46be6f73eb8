//! The evaluator: fetches every selector's data once per query, then evaluates the tree at
//! each evaluation time. Range queries evaluate step by step over the fetched data.

use std::collections::{HashMap, HashSet};

use crate::QueryError;
use crate::labels::Labels;
use crate::limits::Guard;
use crate::plan::{At, Node, Selector};
use crate::source::SeriesSource;
use crate::value::{Sample, Series, is_stale};

/// An intermediate value.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

/// Per selector id: the time range it reads and the selector (`None` for unused ids).
pub(crate) type SelectorRanges<'n> = (Vec<Option<(i64, i64)>>, Vec<Option<&'n Selector>>);

/// Everything evaluation needs: the query's time frame and the fetched series.
pub(crate) struct Ctx {
    pub start: i64,
    pub end: i64,
    /// The range query's step (0 for an instant query).
    pub step: i64,
    pub lookback: i64,
    pub subquery_step: i64,
    /// Per selector id, its series over the whole time the query can look at.
    pub data: Vec<Vec<Series>>,
    /// The deadline, cancel flag and sample budget this evaluation runs under.
    pub guard: Guard,
    /// Per selector id and series, where its last window started and ended: a range query
    /// moves forward step by step, so the next window is found by walking on from there
    /// (memory already in cache) instead of two binary searches over every series.
    cursors: std::cell::RefCell<Vec<Vec<(usize, usize)>>>,
}

/// The first index at or after `from` whose time is above `bound` (points sorted by time):
/// a galloping search from `from`, so a short step forward costs a few comparisons; when
/// `bound` lies before `from`, a binary search over the whole slice.
fn seek(points: &[(i64, f64)], from: usize, bound: i64) -> usize {
    let from = from.min(points.len());
    if from > 0 && points[from - 1].0 > bound {
        return points.partition_point(|p| p.0 <= bound);
    }
    let mut step = 1;
    let mut lo = from;
    let mut hi = from;
    while hi < points.len() && points[hi].0 <= bound {
        lo = hi + 1;
        hi = (hi + step).min(points.len());
        step *= 2;
    }
    lo + points[lo..hi].partition_point(|p| p.0 <= bound)
}

impl Ctx {
    /// Fetches the data for every selector of `node`, for evaluation times in
    /// `[start, end]`.
    pub fn load(
        source: &dyn SeriesSource,
        node: &Node,
        selectors: usize,
        (start, end, step): (i64, i64, i64),
        options: &crate::QueryOptions,
        guard: Guard,
    ) -> Result<Ctx, QueryError> {
        let mut ctx = Ctx::frame((start, end, step), options, guard);
        let (ranges, sels) = ctx.selector_ranges(node, selectors);
        for (range, sel) in ranges.iter().zip(&sels) {
            let (Some((lo, hi)), Some(sel)) = (range, sel) else {
                ctx.data.push(Vec::new());
                continue;
            };
            ctx.guard.check()?;
            let mut series: Vec<Series> = Vec::new();
            // Alternatives (`or` inside braces) may select a series twice; one cannot.
            let mut seen: HashSet<Labels> = HashSet::new();
            let several = sel.matchers.len() > 1;
            for alternative in &sel.matchers {
                for s in source.select(alternative, *lo, *hi, ctx.guard.remaining())? {
                    if several && !seen.insert(s.labels.clone()) {
                        continue;
                    }
                    ctx.guard.charge(s.points.len())?;
                    series.push(s);
                }
            }
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            ctx.data.push(series);
        }
        *ctx.cursors.borrow_mut() = ctx.data.iter().map(|d| vec![(0, 0); d.len()]).collect();
        Ok(ctx)
    }

    /// A context for evaluation times in `[start, end]`, with nothing fetched yet.
    pub fn frame(
        (start, end, step): (i64, i64, i64),
        options: &crate::QueryOptions,
        guard: Guard,
    ) -> Ctx {
        Ctx {
            start,
            end,
            step,
            lookback: options.lookback_ms,
            subquery_step: options.subquery_step_ms,
            data: Vec::new(),
            guard,
            cursors: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Per selector id, the time range it needs over this frame and the selector (`None`
    /// for ids `node` does not use).
    pub fn selector_ranges<'n>(&self, node: &'n Node, selectors: usize) -> SelectorRanges<'n> {
        let mut ranges: Vec<Option<(i64, i64)>> = vec![None; selectors];
        let mut sels: Vec<Option<&Selector>> = vec![None; selectors];
        self.ranges(node, self.start, self.end, &mut ranges, &mut sels);
        (ranges, sels)
    }

    fn at_time(&self, at: At) -> i64 {
        match at {
            At::Time(t) => t,
            At::Start => self.start,
            At::End => self.end,
        }
    }

    /// The reference time of a selector or subquery evaluated at `t`.
    pub fn ref_time(&self, at: Option<At>, offset: i64, t: i64) -> i64 {
        at.map_or(t, |a| self.at_time(a)).saturating_sub(offset)
    }

    /// Records the time range each selector needs when `node` is evaluated at times in
    /// `[lo, hi]`.
    fn ranges<'n>(
        &self,
        node: &'n Node,
        lo: i64,
        hi: i64,
        out: &mut [Option<(i64, i64)>],
        sels: &mut [Option<&'n Selector>],
    ) {
        let mut widen = |sel: &'n Selector, window: i64| {
            let (a, b) = match sel.at {
                Some(at) => (self.at_time(at), self.at_time(at)),
                None => (lo, hi),
            };
            let (a, b) = (
                a.saturating_sub(sel.offset).saturating_sub(window),
                b.saturating_sub(sel.offset),
            );
            let slot = &mut out[sel.id];
            *slot = Some(match slot {
                Some((x, y)) => ((*x).min(a), (*y).max(b)),
                None => (a, b),
            });
            sels[sel.id] = Some(sel);
        };
        match node {
            Node::Number(_) | Node::Str(_) => {}
            Node::Vector(sel) => widen(sel, self.lookback),
            Node::Matrix(sel, range) => widen(sel, *range),
            Node::Subquery {
                expr,
                range,
                offset,
                at,
                ..
            } => {
                let (a, b) = match at {
                    Some(at) => (self.at_time(*at), self.at_time(*at)),
                    None => (lo, hi),
                };
                self.ranges(
                    expr,
                    a.saturating_sub(*offset).saturating_sub(*range),
                    b.saturating_sub(*offset),
                    out,
                    sels,
                );
            }
            Node::Call { args, .. } => {
                for a in args {
                    self.ranges(a, lo, hi, out, sels);
                }
            }
            Node::Aggregate { expr, param, .. } => {
                self.ranges(expr, lo, hi, out, sels);
                if let Some(p) = param {
                    self.ranges(p, lo, hi, out, sels);
                }
            }
            Node::Binary { lhs, rhs, .. } => {
                self.ranges(lhs, lo, hi, out, sels);
                self.ranges(rhs, lo, hi, out, sels);
            }
            Node::Neg(e) => self.ranges(e, lo, hi, out, sels),
        }
    }

    /// Evaluates `node` at time `t` (ms).
    pub fn eval(&self, node: &Node, t: i64) -> Result<Val, QueryError> {
        self.guard.check()?;
        match node {
            Node::Number(n) => Ok(Val::Scalar(*n)),
            Node::Str(s) => Ok(Val::Str(s.clone())),
            Node::Vector(sel) => Ok(Val::Vector(self.instant(sel, t))),
            Node::Matrix(sel, range) => Ok(Val::Matrix(self.window(sel, *range, t))),
            Node::Subquery {
                expr,
                range,
                step,
                offset,
                at,
            } => self.subquery(
                expr,
                *range,
                step.unwrap_or(self.subquery_step),
                *offset,
                *at,
                t,
            ),
            Node::Call { func, args } => {
                let v = crate::functions::call(self, func, args, t)?;
                // Only these rewrite labels; every other function keeps a subset of each
                // input's labels (the name is dropped at the end, where `finish` checks),
                // so its output is as unique as its input.
                if matches!(&**func, "label_replace" | "label_join") {
                    check_unique(&v)?;
                }
                Ok(v)
            }
            Node::Aggregate {
                op,
                expr,
                param,
                grouping,
            } => crate::aggregate::aggregate(self, *op, expr, param.as_deref(), grouping, t),
            Node::Binary {
                op,
                lhs,
                rhs,
                card,
                matching,
                return_bool,
            } => {
                let l = self.eval(lhs, t)?;
                let r = self.eval(rhs, t)?;
                let v = crate::binary::binary(*op, l, r, card, matching.as_ref(), *return_bool, t)?;
                check_unique(&v)?;
                Ok(v)
            }
            Node::Neg(e) => match self.eval(e, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(mut v) => {
                    for s in &mut v {
                        s.v = -s.v;
                        s.t = t;
                        s.drop_name = true;
                    }
                    let v = Val::Vector(v);
                    check_unique(&v)?;
                    Ok(v)
                }
                other => Err(QueryError::Execution(format!(
                    "unary minus is not defined on a {}",
                    other.type_name()
                ))),
            },
        }
    }

    /// An instant vector selector at `t`: each series' newest sample in the lookback window
    /// `(ref - lookback, ref]`, unless that sample is a staleness marker.
    pub fn instant(&self, sel: &Selector, t: i64) -> Vec<Sample> {
        let reference = self.ref_time(sel.at, sel.offset, t);
        let mut out = Vec::new();
        let mut cursors = self.cursors.borrow_mut();
        let cursors = &mut cursors[sel.id];
        for (s, cursor) in self.data[sel.id].iter().zip(cursors.iter_mut()) {
            let i = seek(&s.points, cursor.1, reference);
            cursor.1 = i;
            if i == 0 {
                continue;
            }
            let (pt, pv) = s.points[i - 1];
            if pt <= reference - self.lookback || is_stale(pv) {
                continue;
            }
            out.push(Sample {
                labels: s.labels.clone(),
                t: pt,
                v: pv,
                drop_name: s.drop_name,
            });
        }
        out
    }

    /// A range vector selector at `t` as a range function reads it: each series' samples in
    /// `(ref - range, ref]`, borrowed from the loaded data (copied only when staleness
    /// markers must be left out); series with none are dropped. Unlike
    /// [`Ctx::window`] it allocates no sample vector per series, which is what a range
    /// query over many series and steps spends its time on otherwise.
    pub fn windows(&self, sel: &Selector, range: i64, t: i64) -> Vec<SeriesWindow<'_>> {
        let reference = self.ref_time(sel.at, sel.offset, t);
        let mut out = Vec::new();
        let mut cursors = self.cursors.borrow_mut();
        let cursors = &mut cursors[sel.id];
        for (s, cursor) in self.data[sel.id].iter().zip(cursors.iter_mut()) {
            let lo = seek(&s.points, cursor.0, reference - range);
            let hi = seek(&s.points, cursor.1.max(lo), reference);
            *cursor = (lo, hi);
            let slice = &s.points[lo..hi];
            let points = if slice.iter().any(|p| is_stale(p.1)) {
                std::borrow::Cow::Owned(slice.iter().copied().filter(|p| !is_stale(p.1)).collect())
            } else {
                std::borrow::Cow::Borrowed(slice)
            };
            if !points.is_empty() {
                out.push(SeriesWindow {
                    labels: s.labels.clone(),
                    points,
                    drop_name: s.drop_name,
                });
            }
        }
        out
    }

    /// A range vector selector at `t`: the samples in `(ref - range, ref]`, staleness
    /// markers left out; series with none are dropped.
    pub fn window(&self, sel: &Selector, range: i64, t: i64) -> Vec<Series> {
        let reference = self.ref_time(sel.at, sel.offset, t);
        let mut out = Vec::new();
        for s in &self.data[sel.id] {
            let lo = s.points.partition_point(|p| p.0 <= reference - range);
            let hi = s.points.partition_point(|p| p.0 <= reference);
            let points: Vec<(i64, f64)> = s.points[lo..hi]
                .iter()
                .copied()
                .filter(|p| !is_stale(p.1))
                .collect();
            if !points.is_empty() {
                out.push(Series {
                    labels: s.labels.clone(),
                    points,
                    drop_name: s.drop_name,
                });
            }
        }
        out
    }

    fn subquery(
        &self,
        expr: &Node,
        range: i64,
        step: i64,
        offset: i64,
        at: Option<At>,
        t: i64,
    ) -> Result<Val, QueryError> {
        let reference = self.ref_time(at, offset, t);
        let window_start = reference.saturating_sub(range);
        // Steps are aligned to multiples of the step; the window is open on the left.
        let mut ts = window_start.div_euclid(step) * step;
        if ts <= window_start {
            ts += step;
        }
        let mut gathered = Gathered::default();
        // The points gathered here count against the budget while they are gathered, and are
        // given back when this returns (the caller uses them at once).
        let result = self.gather(expr, ts, reference, step, &mut gathered);
        self.guard.release(gathered.held);
        result?;
        let Gathered {
            mut series, order, ..
        } = gathered;
        let mut out: Vec<Series> = order
            .into_iter()
            .filter_map(|labels| {
                let (points, drop_name) = series.remove(&labels)?;
                Some(Series {
                    labels,
                    points,
                    drop_name,
                })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Val::Matrix(out))
    }
}

impl Ctx {
    /// Evaluates a subquery's `expr` at every step from `ts` to `reference`.
    fn gather(
        &self,
        expr: &Node,
        mut ts: i64,
        reference: i64,
        step: i64,
        out: &mut Gathered,
    ) -> Result<(), QueryError> {
        while ts <= reference {
            match self.eval(expr, ts)? {
                Val::Vector(v) => {
                    out.held += v.len();
                    self.guard.charge(v.len())?;
                    for s in v {
                        if !out.series.contains_key(&s.labels) {
                            out.order.push(s.labels.clone());
                        }
                        let entry = out.series.entry(s.labels).or_default();
                        entry.0.push((ts, s.v));
                        entry.1 |= s.drop_name;
                    }
                }
                Val::Scalar(v) => {
                    out.held += 1;
                    self.guard.charge(1)?;
                    let labels = Labels::default();
                    if !out.series.contains_key(&labels) {
                        out.order.push(labels.clone());
                    }
                    out.series.entry(labels).or_default().0.push((ts, v));
                }
                other => {
                    return Err(QueryError::Execution(format!(
                        "subquery of a {} is not allowed",
                        other.type_name()
                    )));
                }
            }
            match ts.checked_add(step) {
                Some(next) => ts = next,
                None => break,
            }
        }
        Ok(())
    }
}

/// One series' samples in a range function's window, borrowed where possible.
pub struct SeriesWindow<'a> {
    /// The series' labels.
    pub labels: Labels,
    /// Its samples in the window, oldest first, without staleness markers.
    pub points: std::borrow::Cow<'a, [(i64, f64)]>,
    /// Whether the metric name is to be dropped.
    pub drop_name: bool,
}

/// A subquery's points while they are gathered, per label set in order of appearance.
#[derive(Default)]
struct Gathered {
    series: HashMap<Labels, (Vec<(i64, f64)>, bool)>,
    order: Vec<Labels>,
    /// Points charged to the guard.
    held: usize,
}

/// Fails when a vector holds two samples with the same labels (possible after the metric
/// name is dropped), as Prometheus does.
pub(crate) fn check_unique(v: &Val) -> Result<(), QueryError> {
    match v {
        Val::Vector(samples) => check_unique_samples(samples),
        _ => Ok(()),
    }
}

/// [`check_unique`] over samples.
pub(crate) fn check_unique_samples(samples: &[Sample]) -> Result<(), QueryError> {
    if samples.len() > 1 {
        let mut seen = std::collections::HashSet::with_capacity(samples.len());
        for s in samples {
            if !seen.insert(&s.labels) {
                return Err(QueryError::Execution(
                    "vector cannot contain metrics with the same labelset".into(),
                ));
            }
        }
    }
    Ok(())
}
