//! PromQL functions.

use crate::QueryError;
use crate::eval::{Ctx, SeriesWindow, Val};
use crate::labels::{Labels, METRIC_NAME};
use crate::math::{KahanSum, go_max, go_min, linear_regression, quantile, variance};
use crate::plan::{Node, Selector};
use crate::source::MatchOp;
use crate::value::Sample;

/// Whether `name` is a valid label name.
pub(crate) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn arg<'a>(args: &'a [Node], i: usize, func: &str) -> Result<&'a Node, QueryError> {
    args.get(i)
        .ok_or_else(|| QueryError::Execution(format!("{func}() is missing argument {}", i + 1)))
}

fn vector(ctx: &Ctx, node: &Node, t: i64) -> Result<Vec<Sample>, QueryError> {
    match ctx.eval(node, t)? {
        Val::Vector(v) => Ok(v),
        other => Err(QueryError::Execution(format!(
            "expected an instant vector, got a {}",
            other.type_name()
        ))),
    }
}

fn scalar(ctx: &Ctx, node: &Node, t: i64) -> Result<f64, QueryError> {
    match ctx.eval(node, t)? {
        Val::Scalar(v) => Ok(v),
        other => Err(QueryError::Execution(format!(
            "expected a scalar, got a {}",
            other.type_name()
        ))),
    }
}

fn string(ctx: &Ctx, node: &Node, t: i64) -> Result<String, QueryError> {
    match ctx.eval(node, t)? {
        Val::Str(s) => Ok(s),
        other => Err(QueryError::Execution(format!(
            "expected a string, got a {}",
            other.type_name()
        ))),
    }
}

/// A range-vector argument with the window it covers: `(series, window start, window end)`.
/// A range selector's samples are borrowed from the loaded data; a subquery's are its own.
fn matrix<'a>(
    ctx: &'a Ctx,
    node: &Node,
    t: i64,
) -> Result<(Vec<SeriesWindow<'a>>, i64, i64), QueryError> {
    if let Node::Matrix(sel, range) = node {
        let end = ctx.ref_time(sel.at, sel.offset, t);
        return Ok((ctx.windows(sel, *range, t), end - range, end));
    }
    let (range, offset, at) = match node {
        Node::Matrix(sel, range) => (*range, sel.offset, sel.at),
        Node::Subquery {
            range, offset, at, ..
        } => (*range, *offset, *at),
        _ => {
            return Err(QueryError::Execution(
                "expected a range vector argument".into(),
            ));
        }
    };
    let end = ctx.ref_time(at, offset, t);
    match ctx.eval(node, t)? {
        Val::Matrix(m) => Ok((
            m.into_iter()
                .map(|s| SeriesWindow {
                    labels: s.labels,
                    points: std::borrow::Cow::Owned(s.points),
                    drop_name: s.drop_name,
                })
                .collect(),
            end - range,
            end,
        )),
        other => Err(QueryError::Execution(format!(
            "expected a range vector, got a {}",
            other.type_name()
        ))),
    }
}

/// Applies `f` to every sample's value, dropping the metric name.
fn map_values(v: Vec<Sample>, t: i64, f: impl Fn(f64) -> f64) -> Val {
    Val::Vector(
        v.into_iter()
            .map(|mut s| {
                s.v = f(s.v);
                s.t = t;
                s.drop_name = true;
                s
            })
            .collect(),
    )
}

/// One output sample per input series from `f` over its points (when `f` gives a value).
fn over_time(
    m: Vec<SeriesWindow<'_>>,
    t: i64,
    keep_name: bool,
    f: impl Fn(&[(i64, f64)]) -> Option<f64>,
) -> Val {
    Val::Vector(
        m.into_iter()
            .filter_map(|s| {
                let v = f(&s.points)?;
                Some(Sample {
                    labels: s.labels,
                    t,
                    v,
                    drop_name: s.drop_name || !keep_name,
                })
            })
            .collect(),
    )
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated towards the
/// window's edges the way Prometheus does.
fn extrapolated(
    points: &[(i64, f64)],
    start: i64,
    end: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for &(_, v) in &points[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (first.0 - start) as f64 / 1e3;
    let mut to_end = (end - last.0) as f64 / 1e3;
    let sampled = (last.0 - first.0) as f64 / 1e3;
    let average = sampled / (points.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if counter && result > 0.0 && first.1 >= 0.0 {
        // A counter cannot have been below zero: extrapolate no further back than zero.
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= (end - start) as f64 / 1e3;
    }
    Some(result * factor)
}

fn instant_delta(points: &[(i64, f64)], rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (prev, last) = (points[points.len() - 2], points[points.len() - 1]);
    let mut result = if rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1e3;
    }
    Some(result)
}

/// The labels `absent()` gives its result: the selector's equality matchers, except the
/// metric name and labels matched more than once.
fn absent_labels(node: &Node) -> Labels {
    let sel: &Selector = match node {
        Node::Vector(sel) | Node::Matrix(sel, _) => sel,
        _ => return Labels::default(),
    };
    let Some(matchers) = sel.matchers.first().filter(|_| sel.matchers.len() == 1) else {
        return Labels::default();
    };
    let mut labels = Labels::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut ambiguous: Vec<&str> = Vec::new();
    for m in matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if seen.contains(&m.name.as_str()) {
            ambiguous.push(&m.name);
            continue;
        }
        seen.push(&m.name);
        if matches!(m.op, MatchOp::Equal) {
            labels.set(&m.name, m.value.clone());
        }
    }
    for name in ambiguous {
        labels.remove(name);
    }
    labels
}

/// Holt's linear (double exponential) smoothing of a series' values; `None` for fewer
/// than two points.
fn smooth(p: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (mut s0, mut s1, mut b) = (0.0, p[0].1, p[1].1 - p[0].1);
    for (i, &(_, v)) in p.iter().enumerate().skip(1) {
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let next = sf * v + (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, next);
    }
    Some(s1)
}

/// Orders strings with runs of digits compared as numbers (`a2` < `a10`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.len() - a.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let db = b.len() - b.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let (na, nb) = (
                    a[..da].trim_start_matches('0'),
                    b[..db].trim_start_matches('0'),
                );
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord.is_ne() {
                    return ord;
                }
                (a, b) = (&a[da..], &b[db..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
            }
        }
    }
}

/// Civil date (year, month 1–12, day 1–31) of a day count since 1970-01-01.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn date_part(func: &str, seconds: f64) -> f64 {
    if !seconds.is_finite() {
        return f64::NAN;
    }
    let secs = seconds as i64;
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    match func {
        "minute" => ((in_day / 60) % 60) as f64,
        "hour" => (in_day / 3600) as f64,
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            let before: i64 = (1..m).map(|mm| days_in_month(y, mm)).sum();
            (before + d) as f64
        }
        "days_in_month" => days_in_month(y, m) as f64,
        "month" => m as f64,
        _ => y as f64,
    }
}

/// Evaluates the function `func` at `t`.
pub(crate) fn call(ctx: &Ctx, func: &str, args: &[Node], t: i64) -> Result<Val, QueryError> {
    let a0 = || arg(args, 0, func);
    let a1 = || arg(args, 1, func);
    Ok(match func {
        "time" => Val::Scalar(t as f64 / 1e3),
        "pi" => Val::Scalar(std::f64::consts::PI),
        "vector" => Val::Vector(vec![Sample {
            labels: Labels::default(),
            t,
            v: scalar(ctx, a0()?, t)?,
            drop_name: false,
        }]),
        "scalar" => {
            let v = vector(ctx, a0()?, t)?;
            Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN })
        }
        "timestamp" => {
            let v = vector(ctx, a0()?, t)?;
            Val::Vector(
                v.into_iter()
                    .map(|mut s| {
                        s.v = s.t as f64 / 1e3;
                        s.t = t;
                        s.drop_name = true;
                        s
                    })
                    .collect(),
            )
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "sin"
        | "cos" | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh"
        | "acosh" | "atanh" | "deg" | "rad" => {
            let f: fn(f64) -> f64 = match func {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |v| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else {
                        v
                    }
                },
                "sin" => f64::sin,
                "cos" => f64::cos,
                "tan" => f64::tan,
                "asin" => f64::asin,
                "acos" => f64::acos,
                "atan" => f64::atan,
                "sinh" => f64::sinh,
                "cosh" => f64::cosh,
                "tanh" => f64::tanh,
                "asinh" => f64::asinh,
                "acosh" => f64::acosh,
                "atanh" => f64::atanh,
                "deg" => f64::to_degrees,
                _ => f64::to_radians,
            };
            map_values(vector(ctx, a0()?, t)?, t, f)
        }
        "round" => {
            let to = match args.get(1) {
                Some(n) => scalar(ctx, n, t)?,
                None => 1.0,
            };
            let inverse = 1.0 / to;
            map_values(vector(ctx, a0()?, t)?, t, |v| {
                (v * inverse + 0.5).floor() / inverse
            })
        }
        "clamp" => {
            let v = vector(ctx, a0()?, t)?;
            let (lo, hi) = (scalar(ctx, a1()?, t)?, scalar(ctx, arg(args, 2, func)?, t)?);
            if hi < lo {
                Val::Vector(Vec::new())
            } else {
                map_values(v, t, |x| go_max(lo, go_min(hi, x)))
            }
        }
        "clamp_min" => {
            let lo = scalar(ctx, a1()?, t)?;
            map_values(vector(ctx, a0()?, t)?, t, |x| go_max(lo, x))
        }
        "clamp_max" => {
            let hi = scalar(ctx, a1()?, t)?;
            map_values(vector(ctx, a0()?, t)?, t, |x| go_min(hi, x))
        }
        "minute" | "hour" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "month" | "year" => match args.first() {
            None => Val::Vector(vec![Sample {
                labels: Labels::default(),
                t,
                v: date_part(func, t as f64 / 1e3),
                drop_name: false,
            }]),
            Some(node) => map_values(vector(ctx, node, t)?, t, |v| date_part(func, v)),
        },
        "rate" | "increase" | "delta" => {
            let (m, start, end) = matrix(ctx, a0()?, t)?;
            let counter = func != "delta";
            let rate = func == "rate";
            over_time(m, t, false, |p| extrapolated(p, start, end, counter, rate))
        }
        "irate" | "idelta" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            let rate = func == "irate";
            over_time(m, t, false, |p| instant_delta(p, rate))
        }
        "deriv" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            over_time(m, t, false, |p| {
                (p.len() >= 2).then(|| linear_regression(p, p[0].0).0)
            })
        }
        "predict_linear" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            let ahead = scalar(ctx, a1()?, t)?;
            over_time(m, t, false, |p| {
                (p.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(p, t);
                    slope * ahead + intercept
                })
            })
        }
        "avg_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            over_time(m, t, false, |p| {
                Some(crate::math::mean(p.iter().map(|x| x.1)))
            })
        }
        "sum_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            over_time(m, t, false, |p| {
                let mut s = KahanSum::default();
                p.iter().for_each(|x| s.add(x.1));
                Some(s.value())
            })
        }
        "count_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            over_time(m, t, false, |p| Some(p.len() as f64))
        }
        "min_over_time" | "max_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            let min = func == "min_over_time";
            over_time(m, t, false, |p| {
                let mut acc = p[0].1;
                for &(_, v) in &p[1..] {
                    if (if min { v < acc } else { v > acc }) || acc.is_nan() {
                        acc = v;
                    }
                }
                Some(acc)
            })
        }
        "first_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            over_time(m, t, true, |p| p.first().map(|x| x.1))
        }
        "ts_of_first_over_time" | "ts_of_last_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            let first = func == "ts_of_first_over_time";
            over_time(m, t, false, |p| {
                let point = if first { p.first() } else { p.last() };
                point.map(|x| x.0 as f64 / 1e3)
            })
        }
        "ts_of_min_over_time" | "ts_of_max_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            let min = func == "ts_of_min_over_time";
            over_time(m, t, false, |p| {
                let mut best = p[0];
                for &x in &p[1..] {
                    let better = if min { x.1 <= best.1 } else { x.1 >= best.1 };
                    if better || best.1.is_nan() {
                        best = x;
                    }
                }
                Some(best.0 as f64 / 1e3)
            })
        }
        "mad_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            over_time(m, t, false, |p| {
                if p.iter().any(|x| x.1.is_nan()) {
                    return Some(f64::NAN);
                }
                let mut vs: Vec<f64> = p.iter().map(|x| x.1).collect();
                let median = quantile(0.5, &mut vs);
                let mut dev: Vec<f64> = vs.iter().map(|v| (v - median).abs()).collect();
                Some(quantile(0.5, &mut dev))
            })
        }
        "double_exponential_smoothing" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            let sf = scalar(ctx, a1()?, t)?;
            let tf = scalar(ctx, arg(args, 2, func)?, t)?;
            for (name, f) in [("smoothing", sf), ("trend", tf)] {
                if f <= 0.0 || f >= 1.0 || f.is_nan() {
                    return Err(QueryError::Execution(format!(
                        "invalid {name} factor. Expected: 0 < {name} factor < 1, got: {f}"
                    )));
                }
            }
            over_time(m, t, false, |p| smooth(p, sf, tf))
        }
        "start" => Val::Scalar(ctx.start as f64 / 1e3),
        "end" => Val::Scalar(ctx.end as f64 / 1e3),
        "range" => Val::Scalar((ctx.end - ctx.start) as f64 / 1e3),
        "step" => Val::Scalar(ctx.step as f64 / 1e3),
        "min_of" | "max_of" => {
            let (a, b) = (scalar(ctx, a0()?, t)?, scalar(ctx, a1()?, t)?);
            Val::Scalar(if func == "min_of" {
                go_min(a, b)
            } else {
                go_max(a, b)
            })
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut v = vector(ctx, a0()?, t)?;
            let mut names = Vec::new();
            for node in &args[1.min(args.len())..] {
                names.push(string(ctx, node, t)?);
            }
            let desc = func == "sort_by_label_desc";
            v.sort_by(|a, b| {
                let mut ord = std::cmp::Ordering::Equal;
                for n in &names {
                    ord = natural_cmp(a.labels.get(n), b.labels.get(n));
                    if ord.is_ne() {
                        break;
                    }
                }
                if ord.is_eq() {
                    ord = a.labels.cmp(&b.labels);
                }
                if desc { ord.reverse() } else { ord }
            });
            for s in &mut v {
                s.t = t;
            }
            Val::Vector(v)
        }
        "last_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            over_time(m, t, true, |p| p.last().map(|x| x.1))
        }
        "present_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            over_time(m, t, false, |_| Some(1.0))
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            let dev = func == "stddev_over_time";
            over_time(m, t, false, |p| {
                let var = variance(p.iter().map(|x| x.1));
                Some(if dev { var.sqrt() } else { var })
            })
        }
        "quantile_over_time" => {
            let q = scalar(ctx, a0()?, t)?;
            let (m, _, _) = matrix(ctx, a1()?, t)?;
            over_time(m, t, false, |p| {
                let mut vs: Vec<f64> = p.iter().map(|x| x.1).collect();
                Some(quantile(q, &mut vs))
            })
        }
        "changes" | "resets" => {
            let (m, _, _) = matrix(ctx, a0()?, t)?;
            let changes = func == "changes";
            over_time(m, t, false, |p| {
                let mut n = 0.0;
                for w in p.windows(2) {
                    let (prev, cur) = (w[0].1, w[1].1);
                    let hit = if changes {
                        !(cur == prev || (cur.is_nan() && prev.is_nan()))
                    } else {
                        cur < prev
                    };
                    if hit {
                        n += 1.0;
                    }
                }
                Some(n)
            })
        }
        "absent" => {
            let node = a0()?;
            if vector(ctx, node, t)?.is_empty() {
                Val::Vector(vec![Sample {
                    labels: absent_labels(node),
                    t,
                    v: 1.0,
                    drop_name: false,
                }])
            } else {
                Val::Vector(Vec::new())
            }
        }
        "absent_over_time" => {
            let node = a0()?;
            let (m, _, _) = matrix(ctx, node, t)?;
            if m.is_empty() {
                Val::Vector(vec![Sample {
                    labels: absent_labels(node),
                    t,
                    v: 1.0,
                    drop_name: false,
                }])
            } else {
                Val::Vector(Vec::new())
            }
        }
        "sort" | "sort_desc" => {
            let mut v = vector(ctx, a0()?, t)?;
            let desc = func == "sort_desc";
            v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => {
                    let o = a.v.partial_cmp(&b.v).unwrap_or(std::cmp::Ordering::Equal);
                    if desc { o.reverse() } else { o }
                }
            });
            for s in &mut v {
                s.t = t;
            }
            Val::Vector(v)
        }
        "label_replace" => {
            let v = vector(ctx, a0()?, t)?;
            let dst = string(ctx, a1()?, t)?;
            let replacement = string(ctx, arg(args, 2, func)?, t)?;
            let src = string(ctx, arg(args, 3, func)?, t)?;
            let pattern = string(ctx, arg(args, 4, func)?, t)?;
            let re = crate::source::anchored_regex(&pattern)?;
            if !valid_label_name(&dst) {
                return Err(QueryError::Execution(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            Val::Vector(
                v.into_iter()
                    .map(|mut s| {
                        if let Some(caps) = re.captures(s.labels.get(&src)) {
                            let mut value = String::new();
                            caps.expand(&replacement, &mut value);
                            s.labels.set(&dst, value);
                            if dst == METRIC_NAME {
                                s.drop_name = false;
                            }
                        }
                        s.t = t;
                        s
                    })
                    .collect(),
            )
        }
        "label_join" => {
            let v = vector(ctx, a0()?, t)?;
            let dst = string(ctx, a1()?, t)?;
            let sep = string(ctx, arg(args, 2, func)?, t)?;
            let mut sources = Vec::new();
            for node in &args[3.min(args.len())..] {
                sources.push(string(ctx, node, t)?);
            }
            if !valid_label_name(&dst) {
                return Err(QueryError::Execution(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            Val::Vector(
                v.into_iter()
                    .map(|mut s| {
                        let joined: Vec<&str> = sources.iter().map(|n| s.labels.get(n)).collect();
                        let joined = joined.join(&sep);
                        s.labels.set(&dst, joined);
                        if dst == METRIC_NAME {
                            s.drop_name = false;
                        }
                        s.t = t;
                        s
                    })
                    .collect(),
            )
        }
        "histogram_quantile" => {
            let q = scalar(ctx, a0()?, t)?;
            let v = vector(ctx, a1()?, t)?;
            crate::histogram::quantile(q, v, t)
        }
        other => {
            return Err(QueryError::Unsupported(format!(
                "function {other}() is not supported"
            )));
        }
    })
}
