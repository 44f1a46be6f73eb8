//! Lowers promql-parser's AST into the engine's own tree: operators as enums, durations in
//! milliseconds, regexes compiled the Prometheus 3 way, every selector numbered so its data
//! is fetched once per query. Anything the engine does not evaluate is refused here with a
//! clear error, so it can never produce a wrong answer later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as ParsedOp;
use promql_parser::parser::{
    self, AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality,
};

use crate::QueryError;
use crate::source::{Matcher, anchored_regex};

/// An `@` modifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum At {
    /// A fixed time in ms.
    Time(i64),
    /// The query's start.
    Start,
    /// The query's end.
    End,
}

/// A vector selector: what series, shifted how in time.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    /// Index into the query's fetched data.
    pub id: usize,
    /// Alternatives (`or` inside braces), each a list of matchers that must all hold.
    pub matchers: Vec<Vec<Matcher>>,
    pub offset: i64,
    pub at: Option<At>,
}

/// Aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }

    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// How the two sides of a vector binary operation are matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Card {
    OneToOne,
    /// `group_left(labels)`: many on the left.
    ManyToOne(Vec<String>),
    /// `group_right(labels)`: many on the right.
    OneToMany(Vec<String>),
    ManyToMany,
}

/// `on(...)` (include = true) or `ignoring(...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Matching {
    pub on: bool,
    pub labels: Vec<String>,
}

/// The engine's expression tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Number(f64),
    Str(String),
    Vector(Selector),
    Matrix(Selector, i64),
    Subquery {
        expr: Box<Node>,
        range: i64,
        step: Option<i64>,
        offset: i64,
        at: Option<At>,
    },
    Call {
        func: &'static str,
        args: Vec<Node>,
    },
    Aggregate {
        op: AggOp,
        expr: Box<Node>,
        param: Option<Box<Node>>,
        /// `by` (true) or `without` (false) and the labels; `None` groups everything.
        grouping: Option<(bool, Vec<String>)>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
        card: Card,
        matching: Option<Matching>,
        return_bool: bool,
    },
    Neg(Box<Node>),
}

/// The functions the engine evaluates.
pub(crate) const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
    "first_over_time",
    "ts_of_first_over_time",
    "ts_of_last_over_time",
    "ts_of_min_over_time",
    "ts_of_max_over_time",
    "mad_over_time",
    "double_exponential_smoothing",
    "start",
    "end",
    "range",
    "step",
    "min_of",
    "max_of",
    "sort_by_label",
    "sort_by_label_desc",
];

/// Parses and lowers a query.
pub(crate) fn plan(query: &str) -> Result<(Node, usize), QueryError> {
    crate::limits::check_shape(query)?;
    let expr = parser::parse(query).map_err(QueryError::Parse)?;
    let mut planner = Planner { selectors: 0 };
    let node = planner.lower(&expr)?;
    Ok((node, planner.selectors))
}

struct Planner {
    selectors: usize,
}

/// A duration in ms, refused beyond [`crate::limits::MAX_DURATION_MS`] so that sums of
/// times and durations stay far inside `i64`.
fn ms(what: &str, d: &Duration) -> Result<i64, QueryError> {
    crate::limits::check_duration(what, i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn offset_ms(offset: &Option<Offset>) -> Result<i64, QueryError> {
    Ok(match offset {
        None => 0,
        Some(Offset::Pos(d)) => ms("offset", d)?,
        Some(Offset::Neg(d)) => -ms("offset", d)?,
    })
}

fn at(at: &Option<AtModifier>) -> Result<Option<At>, QueryError> {
    at.as_ref()
        .map(|a| {
            Ok(match a {
                AtModifier::Start => At::Start,
                AtModifier::End => At::End,
                AtModifier::At(t) => At::Time(system_time_ms(*t)?),
            })
        })
        .transpose()
}

fn system_time_ms(t: SystemTime) -> Result<i64, QueryError> {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    };
    crate::limits::check_time("the @ time", ms)
}

fn labels(l: &promql_parser::label::Labels) -> Vec<String> {
    l.labels.clone()
}

impl Planner {
    fn selector(&mut self, vs: &parser::VectorSelector) -> Result<Selector, QueryError> {
        let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, QueryError> {
            ms.iter()
                .map(|m| {
                    let op = match &m.op {
                        ParsedOp::Equal => crate::source::MatchOp::Equal,
                        ParsedOp::NotEqual => crate::source::MatchOp::NotEqual,
                        ParsedOp::Re(_) => crate::source::MatchOp::Re(anchored_regex(&m.value)?),
                        ParsedOp::NotRe(_) => {
                            crate::source::MatchOp::NotRe(anchored_regex(&m.value)?)
                        }
                    };
                    Ok(Matcher {
                        name: m.name.clone(),
                        op,
                        value: m.value.clone(),
                    })
                })
                .collect()
        };
        let mut base = convert(&vs.matchers.matchers)?;
        if let Some(name) = &vs.name
            && !base.iter().any(|m| m.name == crate::labels::METRIC_NAME)
        {
            base.push(Matcher::new(crate::labels::METRIC_NAME, "=", name)?);
        }
        let matchers = if vs.matchers.or_matchers.is_empty() {
            vec![base]
        } else {
            let mut alternatives = Vec::new();
            for alt in &vs.matchers.or_matchers {
                let mut list = base.clone();
                list.extend(convert(alt)?);
                alternatives.push(list);
            }
            alternatives
        };
        let id = self.selectors;
        self.selectors += 1;
        Ok(Selector {
            id,
            matchers,
            offset: offset_ms(&vs.offset)?,
            at: at(&vs.at)?,
        })
    }

    fn lower(&mut self, expr: &Expr) -> Result<Node, QueryError> {
        Ok(match expr {
            Expr::NumberLiteral(n) => Node::Number(n.val),
            Expr::StringLiteral(s) => Node::Str(s.val.clone()),
            Expr::Paren(p) => self.lower(&p.expr)?,
            Expr::VectorSelector(vs) => Node::Vector(self.selector(vs)?),
            Expr::MatrixSelector(m) => {
                let range = ms("range", &m.range)?;
                Node::Matrix(self.selector(&m.vs)?, range)
            }
            Expr::Subquery(sq) => Node::Subquery {
                expr: Box::new(self.lower(&sq.expr)?),
                range: ms("subquery range", &sq.range)?,
                step: sq
                    .step
                    .as_ref()
                    .map(|d| ms("subquery step", d))
                    .transpose()?
                    .filter(|s| *s > 0),
                offset: offset_ms(&sq.offset)?,
                at: at(&sq.at)?,
            },
            Expr::Unary(u) => Node::Neg(Box::new(self.lower(&u.expr)?)),
            Expr::Call(call) => {
                let name = call.func.name;
                let Some(func) = FUNCTIONS.iter().find(|f| **f == name) else {
                    return Err(QueryError::Unsupported(format!(
                        "function {name}() is not supported by probewatch's PromQL engine"
                    )));
                };
                let args = call
                    .args
                    .args
                    .iter()
                    .map(|a| self.lower(a))
                    .collect::<Result<_, _>>()?;
                Node::Call { func, args }
            }
            Expr::Aggregate(agg) => {
                let name = agg.op.to_string();
                let op = match name.as_str() {
                    "sum" => AggOp::Sum,
                    "avg" => AggOp::Avg,
                    "min" => AggOp::Min,
                    "max" => AggOp::Max,
                    "count" => AggOp::Count,
                    "group" => AggOp::Group,
                    "stddev" => AggOp::Stddev,
                    "stdvar" => AggOp::Stdvar,
                    "topk" => AggOp::Topk,
                    "bottomk" => AggOp::Bottomk,
                    "quantile" => AggOp::Quantile,
                    "count_values" => AggOp::CountValues,
                    other => {
                        return Err(QueryError::Unsupported(format!(
                            "aggregation {other} is not supported by probewatch's PromQL engine"
                        )));
                    }
                };
                let grouping = agg.modifier.as_ref().map(|m| match m {
                    LabelModifier::Include(l) => (true, labels(l)),
                    LabelModifier::Exclude(l) => (false, labels(l)),
                });
                Node::Aggregate {
                    op,
                    expr: Box::new(self.lower(&agg.expr)?),
                    param: match &agg.param {
                        Some(p) => Some(Box::new(self.lower(p)?)),
                        None => None,
                    },
                    grouping,
                }
            }
            Expr::Binary(b) => {
                let name = b.op.to_string();
                let op = match name.as_str() {
                    "+" => BinOp::Add,
                    "-" => BinOp::Sub,
                    "*" => BinOp::Mul,
                    "/" => BinOp::Div,
                    "%" => BinOp::Mod,
                    "^" => BinOp::Pow,
                    "atan2" => BinOp::Atan2,
                    "==" => BinOp::Eq,
                    "!=" => BinOp::Ne,
                    ">" => BinOp::Gt,
                    "<" => BinOp::Lt,
                    ">=" => BinOp::Ge,
                    "<=" => BinOp::Le,
                    "and" => BinOp::And,
                    "or" => BinOp::Or,
                    "unless" => BinOp::Unless,
                    other => {
                        return Err(QueryError::Unsupported(format!(
                            "binary operator {other} is not supported"
                        )));
                    }
                };
                let (card, matching, return_bool) = match &b.modifier {
                    None => (
                        if op.is_set() {
                            Card::ManyToMany
                        } else {
                            Card::OneToOne
                        },
                        None,
                        false,
                    ),
                    Some(m) => {
                        if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                            return Err(QueryError::Unsupported(
                                "fill() modifiers are not supported".into(),
                            ));
                        }
                        let card = match &m.card {
                            VectorMatchCardinality::OneToOne => Card::OneToOne,
                            VectorMatchCardinality::ManyToOne(l) => Card::ManyToOne(labels(l)),
                            VectorMatchCardinality::OneToMany(l) => Card::OneToMany(labels(l)),
                            VectorMatchCardinality::ManyToMany => Card::ManyToMany,
                        };
                        let card = if op.is_set() { Card::ManyToMany } else { card };
                        let matching = m.matching.as_ref().map(|lm| match lm {
                            LabelModifier::Include(l) => Matching {
                                on: true,
                                labels: labels(l),
                            },
                            LabelModifier::Exclude(l) => Matching {
                                on: false,
                                labels: labels(l),
                            },
                        });
                        (card, matching, m.return_bool)
                    }
                };
                Node::Binary {
                    op,
                    lhs: Box::new(self.lower(&b.lhs)?),
                    rhs: Box::new(self.lower(&b.rhs)?),
                    card,
                    matching,
                    return_bool,
                }
            }
            Expr::Extension(_) => {
                return Err(QueryError::Unsupported("extension expressions".into()));
            }
        })
    }
}
