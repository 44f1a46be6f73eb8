//! What queries return: scalars, strings, instant vectors and range vectors (matrices).

use crate::labels::Labels;

/// The bit pattern Prometheus uses for a staleness marker: a NaN that says "this series
/// ended here", distinct from an ordinary NaN sample.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is a staleness marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: Labels,
    /// Milliseconds: the sample's own time when it came straight from a selector (what
    /// `timestamp()` reports), otherwise the evaluation time.
    pub t: i64,
    /// The value.
    pub v: f64,
    /// The metric name is to be removed when evaluation ends (Prometheus's delayed name
    /// removal: a function or operator dropped it, but `label_replace` may still read or
    /// restore it, and `by (__name__)` may still group on it).
    pub drop_name: bool,
}

/// One series of a range vector, or of a range query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: Labels,
    /// (milliseconds, value), oldest first.
    pub points: Vec<(i64, f64)>,
    /// See [`Sample::drop_name`]; sources set it to false.
    pub drop_name: bool,
}

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number at the evaluation time (ms).
    Scalar(i64, f64),
    /// A string at the evaluation time (ms).
    String(i64, String),
    /// An instant vector.
    Vector(Vec<Sample>),
    /// A range vector (from an instant query) or the result of a range query.
    Matrix(Vec<Series>),
}

impl Value {
    /// The PromQL type name, as the HTTP API reports it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(..) => "scalar",
            Value::String(..) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}
