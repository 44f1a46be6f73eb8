//! probewatch's PromQL engine: parses with promql-parser, lowers the AST into its own tree
//! ([`plan`]), and evaluates it over any [`SeriesSource`] with Prometheus 3 semantics
//! (left-open windows, 5-minute lookback, staleness markers, `offset`, `@`, subqueries).
//!
//! Instant queries evaluate at one time; range queries evaluate the same tree at every step
//! over data fetched once per selector. Unsupported syntax is refused when the query is
//! planned, never answered approximately.

mod aggregate;
mod binary;
mod eval;
mod functions;
mod histogram;
pub mod labels;
pub mod limits;
mod math;
pub mod notation;
mod plan;
pub mod source;
pub mod value;

use std::collections::HashMap;

pub use labels::Labels;
pub use limits::Guard;
pub use math::format_value;
pub use source::{MatchOp, Matcher, MemorySource, Overlay, Selection, SeriesSource};
pub use value::{Sample, Series, Value};

/// Why a query failed. The variant is what the HTTP API reports as `errorType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query does not parse, or names something invalid (`bad_data`).
    #[error("parse error: {0}")]
    Parse(String),
    /// Valid PromQL that this engine does not evaluate (`bad_data`).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Evaluation failed, e.g. many-to-many matching (`execution`).
    #[error("{0}")]
    Execution(String),
    /// Reading samples failed (`internal`).
    #[error("storage: {0}")]
    Storage(String),
    /// The store cannot be reached now; worth trying again shortly (`unavailable`).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The query is too large or too deeply nested to evaluate safely (`bad_data`).
    #[error("query too complex: {0}")]
    TooComplex(String),
    /// The query would hold more samples in memory than allowed (`execution`).
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The query ran past its timeout (`timeout`).
    #[error("query timed out in query execution")]
    Timeout,
    /// The query was cancelled: its client went away, or the server is stopping
    /// (`canceled`).
    #[error("query was canceled in query execution")]
    Canceled,
}

fn collect_names(node: &plan::Node, out: &mut Vec<String>) -> bool {
    use plan::Node;
    let selector = |sel: &plan::Selector, out: &mut Vec<String>| {
        sel.matchers.iter().all(|alternative| {
            match alternative
                .iter()
                .find(|m| m.name == labels::METRIC_NAME && matches!(m.op, source::MatchOp::Equal))
            {
                Some(m) => {
                    out.push(m.value.clone());
                    true
                }
                None => false,
            }
        })
    };
    match node {
        Node::Number(_) | Node::Str(_) => true,
        Node::Vector(sel) | Node::Matrix(sel, _) => selector(sel, out),
        Node::Subquery { expr, .. } | Node::Neg(expr) => collect_names(expr, out),
        Node::Call { args, .. } => args.iter().all(|a| collect_names(a, out)),
        Node::Aggregate { expr, param, .. } => {
            collect_names(expr, out) && param.as_ref().is_none_or(|p| collect_names(p, out))
        }
        Node::Binary { lhs, rhs, .. } => collect_names(lhs, out) && collect_names(rhs, out),
    }
}

/// Removes the metric name where evaluation dropped it, then refuses duplicate label sets,
/// which can only now appear.
fn finish(mut v: Vec<Sample>) -> Result<Vec<Sample>, QueryError> {
    let mut dropped = false;
    for s in &mut v {
        if s.drop_name {
            s.labels.remove(labels::METRIC_NAME);
            s.drop_name = false;
            dropped = true;
        }
    }
    if dropped {
        eval::check_unique_samples(&v)?;
    }
    Ok(v)
}

/// A duration as Prometheus writes one (`90d`, `1h30m`, `15s`, `500ms`, `0s`): days, hours,
/// minutes, seconds and milliseconds, largest first, zero parts left out.
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let (sign, mut rest) = if ms < 0 {
        ("-", -(ms as i128))
    } else {
        ("", ms as i128)
    };
    let mut out = String::from(sign);
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// Parses a Prometheus duration (`90s`, `1h30m`, `0s`) or a number of seconds (`15`,
/// `0.5`) into milliseconds, as the HTTP API's `step` and rule files' `for` accept them.
pub fn parse_duration_ms(text: &str) -> Result<i64, QueryError> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(QueryError::Parse(format!("invalid duration {text:?}")));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    if !text.is_empty()
        && text
            .trim_start_matches('0')
            .chars()
            .all(|c| c.is_ascii_alphabetic())
    {
        return Ok(0); // `0s`, `0m`: promql-parser refuses zero durations
    }
    let d = promql_parser::util::parse_duration(text)
        .map_err(|e| QueryError::Parse(format!("invalid duration {text:?}: {e}")))?;
    i64::try_from(d.as_millis())
        .map_err(|_| QueryError::Parse(format!("duration {text:?} too long")))
}

/// The query laid out as Prometheus's `/api/v1/format_query` lays it out (promql-parser's
/// prettifier follows Prometheus's: one line when it fits in 100 columns, else one operand
/// per indented line). The text is checked against the query limits first.
pub fn format_query(text: &str) -> Result<String, QueryError> {
    limits::check_shape(text)?;
    let expr = promql_parser::parser::parse(text).map_err(QueryError::Parse)?;
    Ok(expr.prettify())
}

/// Parses a series selector (`up{job="api"}`) as `/api/v1/series` takes it in `match[]`:
/// alternatives (for `or` inside braces), each a list of matchers that must all hold.
pub fn parse_selector(text: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    match plan::plan(text)?.0 {
        plan::Node::Vector(sel) => Ok(sel.matchers),
        _ => Err(QueryError::Parse(format!(
            "{text:?} is not a series selector"
        ))),
    }
}

/// Engine settings; the defaults are Prometheus's.
#[derive(Debug, Clone, Copy)]
pub struct QueryOptions {
    /// How far back an instant selector looks for a sample (default 5 minutes).
    pub lookback_ms: i64,
    /// Step of a subquery written without one (default 1 minute; rule groups use their
    /// interval).
    pub subquery_step_ms: i64,
    /// Most samples one query may hold in memory at once (default 50 million, as
    /// Prometheus's `query.max-samples`).
    pub max_samples: usize,
    /// How long one evaluation may run (default 2 minutes, as Prometheus's
    /// `query.timeout`); `None`: no limit.
    pub timeout: Option<std::time::Duration>,
}

impl Default for QueryOptions {
    fn default() -> QueryOptions {
        QueryOptions {
            lookback_ms: 5 * 60 * 1000,
            subquery_step_ms: 60 * 1000,
            max_samples: 50_000_000,
            timeout: Some(std::time::Duration::from_secs(120)),
        }
    }
}

impl QueryOptions {
    /// A guard with these options' sample budget and timeout, starting now.
    pub fn guard(&self) -> Guard {
        Guard::new(self.max_samples).with_timeout(self.timeout)
    }
}

/// A parsed, planned query, reusable across evaluations (rules evaluate the same query
/// every interval).
#[derive(Debug, Clone)]
pub struct Query {
    node: plan::Node,
    selectors: usize,
}

impl Query {
    /// Parses and plans `text`.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let (node, selectors) = plan::plan(text)?;
        Ok(Query { node, selectors })
    }

    /// The metric names the query's selectors name, or `None` if some selector matches
    /// metric names by regex or not at all (then any new sample may change the result).
    pub fn metric_names(&self) -> Option<Vec<String>> {
        let mut names = Vec::new();
        if collect_names(&self.node, &mut names) {
            names.sort();
            names.dedup();
            Some(names)
        } else {
            None
        }
    }

    /// What an instant evaluation at `t_ms` will ask its source for: each selector
    /// alternative with the time range it reads (for [`SeriesSource::prefetch`]).
    pub fn selections(&self, t_ms: i64, options: &QueryOptions) -> Vec<Selection> {
        let ctx = eval::Ctx::frame((t_ms, t_ms, 0), options, Guard::new(0));
        let (ranges, sels) = ctx.selector_ranges(&self.node, self.selectors);
        let mut out = Vec::new();
        for (range, sel) in ranges.into_iter().zip(sels) {
            if let (Some((from_ms, to_ms)), Some(sel)) = (range, sel) {
                out.extend(sel.matchers.iter().map(|matchers| Selection {
                    matchers: matchers.clone(),
                    from_ms,
                    to_ms,
                }));
            }
        }
        out
    }

    /// Evaluates the query at `t_ms` under `options`' sample budget and timeout.
    pub fn instant(
        &self,
        source: &dyn SeriesSource,
        t_ms: i64,
        options: &QueryOptions,
    ) -> Result<Value, QueryError> {
        self.instant_guarded(source, t_ms, options, options.guard())
    }

    /// Evaluates the query at `t_ms` under `guard` (which may also carry a cancel flag).
    pub fn instant_guarded(
        &self,
        source: &dyn SeriesSource,
        t_ms: i64,
        options: &QueryOptions,
        guard: Guard,
    ) -> Result<Value, QueryError> {
        let t_ms = limits::check_time("the evaluation time", t_ms)?;
        let ctx = eval::Ctx::load(
            source,
            &self.node,
            self.selectors,
            (t_ms, t_ms, 0),
            options,
            guard,
        )?;
        Ok(match ctx.eval(&self.node, t_ms)? {
            eval::Val::Scalar(v) => Value::Scalar(t_ms, v),
            eval::Val::Str(s) => Value::String(t_ms, s),
            eval::Val::Vector(v) => Value::Vector(
                finish(v)?
                    .into_iter()
                    .map(|mut s| {
                        s.t = t_ms;
                        s
                    })
                    .collect(),
            ),
            eval::Val::Matrix(m) => Value::Matrix(
                m.into_iter()
                    .map(|mut s| {
                        if s.drop_name {
                            s.labels.remove(labels::METRIC_NAME);
                            s.drop_name = false;
                        }
                        s
                    })
                    .collect(),
            ),
        })
    }

    /// Evaluates the query at every step from `start_ms` to `end_ms`; the result is a
    /// matrix, one series per label set, sorted by labels.
    pub fn range(
        &self,
        source: &dyn SeriesSource,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        options: &QueryOptions,
    ) -> Result<Value, QueryError> {
        self.range_guarded(
            source,
            (start_ms, end_ms, step_ms),
            options,
            options.guard(),
        )
    }

    /// [`Query::range`] under `guard` (which may also carry a cancel flag).
    pub fn range_guarded(
        &self,
        source: &dyn SeriesSource,
        (start_ms, end_ms, step_ms): (i64, i64, i64),
        options: &QueryOptions,
        guard: Guard,
    ) -> Result<Value, QueryError> {
        let start_ms = limits::check_time("start", start_ms)?;
        let end_ms = limits::check_time("end", end_ms)?;
        if step_ms <= 0 {
            return Err(QueryError::Parse(
                "zero or negative query resolution step widths are not accepted".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::Parse(
                "end timestamp must not be before start time".into(),
            ));
        }
        let ctx = eval::Ctx::load(
            source,
            &self.node,
            self.selectors,
            (start_ms, end_ms, step_ms),
            options,
            guard,
        )?;
        let mut series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let mut t = start_ms;
        while t <= end_ms {
            ctx.guard.check()?;
            match ctx.eval(&self.node, t)? {
                eval::Val::Scalar(v) => {
                    ctx.guard.charge(1)?;
                    series.entry(Labels::default()).or_default().push((t, v))
                }
                eval::Val::Vector(v) => {
                    ctx.guard.charge(v.len())?;
                    for s in finish(v)? {
                        series.entry(s.labels).or_default().push((t, s.v));
                    }
                }
                other => {
                    return Err(QueryError::Execution(format!(
                        "invalid expression type \"{}\" for range query, must be scalar or \
                         instant vector",
                        other.type_name()
                    )));
                }
            }
            // A step so large that the next time passes i64 ends the range.
            match t.checked_add(step_ms) {
                Some(next) => t = next,
                None => break,
            }
        }
        let mut out: Vec<Series> = series
            .into_iter()
            .map(|(labels, points)| Series {
                labels,
                points,
                drop_name: false,
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Value::Matrix(out))
    }
}
