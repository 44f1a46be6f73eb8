//! Aggregation operators (`sum by (job) (...)` and friends).

use std::collections::HashMap;

use crate::QueryError;
use crate::eval::{Ctx, Val};
use crate::labels::{Labels, METRIC_NAME};
use crate::math::{KahanSum, format_value, quantile};
use crate::plan::{AggOp, Node};
use crate::value::Sample;

pub(crate) fn aggregate(
    ctx: &Ctx,
    op: AggOp,
    expr: &Node,
    param: Option<&Node>,
    grouping: &Option<(bool, Vec<String>)>,
    t: i64,
) -> Result<Val, QueryError> {
    let param = match param {
        Some(p) => Some(ctx.eval(p, t)?),
        None => None,
    };
    let input = match ctx.eval(expr, t)? {
        Val::Vector(v) => v,
        other => {
            return Err(QueryError::Execution(format!(
                "aggregation over a {} is not defined",
                other.type_name()
            )));
        }
    };
    let scalar_param = || match &param {
        Some(Val::Scalar(v)) => Ok(*v),
        _ => Err(QueryError::Execution(
            "expected a scalar parameter for the aggregation".into(),
        )),
    };
    if matches!(op, AggOp::Topk | AggOp::Bottomk) && scalar_param()?.is_nan() {
        return Err(QueryError::Execution("Parameter value is NaN".into()));
    }
    let count_label = match (&op, &param) {
        (AggOp::CountValues, Some(Val::Str(s))) => {
            if !crate::functions::valid_label_name(s) {
                return Err(QueryError::Execution(format!("invalid label name {s:?}")));
            }
            s.clone()
        }
        (AggOp::CountValues, _) => {
            return Err(QueryError::Execution(
                "count_values needs a string parameter".into(),
            ));
        }
        _ => String::new(),
    };
    let mut counted: Vec<(Labels, f64)> = Vec::new();
    // Group the input, keeping the order in which groups first appear.
    let mut groups: Vec<(Labels, Vec<Sample>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let without_names: Vec<String> = match grouping {
        Some((false, names)) => {
            let mut all = names.clone();
            all.push(METRIC_NAME.to_string());
            all
        }
        _ => Vec::new(),
    };
    for s in input {
        // The key first; the group's labels are built only for a new group.
        let key = match grouping {
            None => String::new(),
            Some((true, names)) => s.labels.group_key(names, true),
            Some((false, _)) => s.labels.group_key(&without_names, false),
        };
        match index.get(&key) {
            Some(&i) => groups[i].1.push(s),
            None => {
                let labels = match grouping {
                    None => Labels::default(),
                    Some((true, names)) => {
                        let mut l = s.labels.clone();
                        l.retain(|n| names.iter().any(|x| x == n));
                        l
                    }
                    Some((false, _)) => {
                        let mut l = s.labels.clone();
                        l.retain(|n| !without_names.iter().any(|x| x == n));
                        l
                    }
                };
                index.insert(key, groups.len());
                groups.push((labels, vec![s]));
            }
        }
    }
    let mut out = Vec::new();
    for (labels, samples) in groups {
        let values = || samples.iter().map(|s| s.v);
        // Grouping by __name__ keeps it, unless an input was to lose it.
        let drop_name = samples.iter().any(|s| s.drop_name);
        let single = |v: f64| Sample {
            labels: labels.clone(),
            t,
            v,
            drop_name,
        };
        match op {
            AggOp::Sum => {
                let mut sum = KahanSum::default();
                values().for_each(|v| sum.add(v));
                out.push(single(sum.value()));
            }
            AggOp::Avg => out.push(single(crate::math::mean(values()))),
            AggOp::Count => out.push(single(samples.len() as f64)),
            AggOp::Group => out.push(single(1.0)),
            AggOp::Min | AggOp::Max => {
                let mut acc = f64::NAN;
                for v in values() {
                    let better = if op == AggOp::Min { acc > v } else { acc < v };
                    if better || acc.is_nan() {
                        acc = v;
                    }
                }
                out.push(single(acc));
            }
            AggOp::Stddev | AggOp::Stdvar => {
                let var = crate::math::variance(values());
                out.push(single(if op == AggOp::Stddev { var.sqrt() } else { var }));
            }
            AggOp::Quantile => {
                let q = scalar_param()?;
                let mut vs: Vec<f64> = values().collect();
                out.push(single(quantile(q, &mut vs)));
            }
            AggOp::Topk | AggOp::Bottomk => {
                let k = scalar_param()?;
                if k < 1.0 {
                    continue;
                }
                let k = if k >= samples.len() as f64 {
                    samples.len()
                } else {
                    k as usize
                };
                let mut sorted = samples;
                // NaN counts as the smallest value for topk and the largest for bottomk.
                let top = op == AggOp::Topk;
                sorted.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    (false, false) => {
                        let o = a.v.partial_cmp(&b.v).unwrap_or(std::cmp::Ordering::Equal);
                        if top { o.reverse() } else { o }
                    }
                });
                for mut s in sorted.into_iter().take(k) {
                    s.t = t;
                    out.push(s);
                }
            }
            AggOp::CountValues => {
                // Counted by the output labels, so groups that become equal once the value
                // label is set (it may overwrite a grouping label) are counted together.
                for s in samples {
                    let mut l = labels.clone();
                    l.set(&count_label, format_value(s.v));
                    match counted.iter_mut().find(|(x, _)| *x == l) {
                        Some(c) => c.1 += 1.0,
                        None => counted.push((l, 1.0)),
                    }
                }
            }
        }
    }
    for (labels, n) in counted {
        out.push(Sample {
            labels,
            t,
            v: n,
            drop_name: false,
        });
    }
    Ok(Val::Vector(out))
}
