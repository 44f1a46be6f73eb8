//! Binary operators: arithmetic, comparison (filtering or `bool`) and set operators, between
//! scalars and vectors, with `on`/`ignoring` and `group_left`/`group_right` matching.

use std::collections::{HashMap, HashSet};

use crate::QueryError;
use crate::eval::Val;
use crate::labels::{Labels, METRIC_NAME};
use crate::plan::{BinOp, Card, Matching};
use crate::value::Sample;

/// Applies `op` to two numbers: `(value, keep)`; for comparisons `keep` is the outcome and
/// the value is `a`.
pub(crate) fn apply(op: BinOp, a: f64, b: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (a + b, true),
        BinOp::Sub => (a - b, true),
        BinOp::Mul => (a * b, true),
        BinOp::Div => (a / b, true),
        BinOp::Mod => (a % b, true),
        BinOp::Pow => (a.powf(b), true),
        BinOp::Atan2 => (a.atan2(b), true),
        BinOp::Eq => (a, a == b),
        BinOp::Ne => (a, a != b),
        BinOp::Gt => (a, a > b),
        BinOp::Lt => (a, a < b),
        BinOp::Ge => (a, a >= b),
        BinOp::Le => (a, a <= b),
        BinOp::And | BinOp::Or | BinOp::Unless => (a, true),
    }
}

fn drops_name(op: BinOp, return_bool: bool) -> bool {
    return_bool || !op.is_comparison()
}

/// Evaluates a binary operation on two evaluated operands.
pub(crate) fn binary(
    op: BinOp,
    lhs: Val,
    rhs: Val,
    card: &Card,
    matching: Option<&Matching>,
    return_bool: bool,
    t: i64,
) -> Result<Val, QueryError> {
    match (lhs, rhs) {
        (Val::Scalar(a), Val::Scalar(b)) => {
            let (v, keep) = apply(op, a, b);
            if op.is_comparison() {
                Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }))
            } else {
                Ok(Val::Scalar(v))
            }
        }
        (Val::Vector(v), Val::Scalar(s)) => {
            Ok(Val::Vector(vector_scalar(op, v, s, false, return_bool, t)))
        }
        (Val::Scalar(s), Val::Vector(v)) => {
            Ok(Val::Vector(vector_scalar(op, v, s, true, return_bool, t)))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            if op.is_set() {
                Ok(Val::Vector(set_op(op, l, r, matching)))
            } else {
                vector_vector(op, l, r, card, matching, return_bool, t).map(Val::Vector)
            }
        }
        (l, r) => Err(QueryError::Execution(format!(
            "binary operator not defined between {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: BinOp,
    v: Vec<Sample>,
    s: f64,
    scalar_left: bool,
    return_bool: bool,
    t: i64,
) -> Vec<Sample> {
    let drop = drops_name(op, return_bool);
    v.into_iter()
        .filter_map(|mut sample| {
            let (a, b) = if scalar_left {
                (s, sample.v)
            } else {
                (sample.v, s)
            };
            let (value, keep) = apply(op, a, b);
            let value = if op.is_comparison() {
                if return_bool {
                    if keep { 1.0 } else { 0.0 }
                } else if !keep {
                    return None;
                } else {
                    // The vector's value, whichever side it is on.
                    sample.v
                }
            } else {
                value
            };
            sample.v = value;
            sample.t = t;
            sample.drop_name |= drop;
            Some(sample)
        })
        .collect()
}

/// The matching key of a sample: the `on` labels, or all but the `ignoring` ones and the
/// metric name.
fn signature(labels: &Labels, matching: Option<&Matching>) -> String {
    match matching {
        Some(m) if m.on => labels.group_key(&m.labels, true),
        Some(m) => {
            let mut names = m.labels.clone();
            names.push(METRIC_NAME.to_string());
            labels.group_key(&names, false)
        }
        None => labels.group_key(&[METRIC_NAME.to_string()], false),
    }
}

fn set_op(op: BinOp, l: Vec<Sample>, r: Vec<Sample>, matching: Option<&Matching>) -> Vec<Sample> {
    match op {
        BinOp::And => {
            let right: HashSet<String> = r.iter().map(|s| signature(&s.labels, matching)).collect();
            l.into_iter()
                .filter(|s| right.contains(&signature(&s.labels, matching)))
                .collect()
        }
        BinOp::Unless => {
            let right: HashSet<String> = r.iter().map(|s| signature(&s.labels, matching)).collect();
            l.into_iter()
                .filter(|s| !right.contains(&signature(&s.labels, matching)))
                .collect()
        }
        _ => {
            let left: HashSet<String> = l.iter().map(|s| signature(&s.labels, matching)).collect();
            let mut out = l;
            out.extend(
                r.into_iter()
                    .filter(|s| !left.contains(&signature(&s.labels, matching))),
            );
            out
        }
    }
}

fn vector_vector(
    op: BinOp,
    l: Vec<Sample>,
    r: Vec<Sample>,
    card: &Card,
    matching: Option<&Matching>,
    return_bool: bool,
    t: i64,
) -> Result<Vec<Sample>, QueryError> {
    // Iterate the "many" side; look up the "one" side.
    let swapped = matches!(card, Card::OneToMany(_));
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let mut one_by_sig: HashMap<String, &Sample> = HashMap::with_capacity(one.len());
    for s in &one {
        let sig = signature(&s.labels, matching);
        if one_by_sig.insert(sig, s).is_some() {
            let side = if swapped { "left" } else { "right" };
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the \
                 operation: many-to-many matching not allowed: matching labels must be unique \
                 on one side",
                s.labels
            )));
        }
    }
    let include: &[String] = match card {
        Card::ManyToOne(l) | Card::OneToMany(l) => l,
        _ => &[],
    };
    let mut matched: HashSet<String> = HashSet::new();
    let mut inserted: HashSet<Labels> = HashSet::new();
    let mut out = Vec::new();
    for m in &many {
        let sig = signature(&m.labels, matching);
        let Some(o) = one_by_sig.get(&sig) else {
            continue;
        };
        if *card == Card::OneToOne && !matched.insert(sig) {
            return Err(QueryError::Execution(format!(
                "multiple matches for labels: many-to-one matching must be explicit \
                 (group_left/group_right); duplicate series {}",
                m.labels
            )));
        }
        let (a, b) = if swapped { (o.v, m.v) } else { (m.v, o.v) };
        let (mut value, keep) = apply(op, a, b);
        if op.is_comparison() {
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
        }
        let mut labels = m.labels.clone();
        let drop_name = m.drop_name || drops_name(op, return_bool);
        match (card, matching) {
            (Card::OneToOne, Some(mt)) if mt.on => {
                labels.retain(|n| mt.labels.iter().any(|x| x == n))
            }
            (Card::OneToOne, Some(mt)) => labels.retain(|n| !mt.labels.iter().any(|x| x == n)),
            _ => {}
        }
        for name in include {
            labels.set(name, o.labels.get(name).to_string());
        }
        let mut key = labels.clone();
        if drop_name {
            key.remove(METRIC_NAME);
        }
        if !matches!(card, Card::OneToOne) && !inserted.insert(key) {
            return Err(QueryError::Execution(format!(
                "multiple matches for labels: grouping labels must ensure unique matches; \
                 duplicate series {labels}"
            )));
        }
        out.push(Sample {
            labels,
            t,
            v: value,
            drop_name,
        });
    }
    Ok(out)
}
