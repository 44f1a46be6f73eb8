//! Result JSON: the XML model as JSON, one result object or an array of them
//! (docs/format-json.md, schema in docs/result.schema.json).
//!
//! Parsed with serde into typed structs whose fields check themselves while they are read,
//! so every error has the line and column serde_json reports and the JSON path
//! serde_path_to_error tracks (`[1].checks[0].status`). Unknown fields are refused, as the
//! XML parser refuses unknown attributes: a typo must not silently drop data.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{FileContext, ParseLimits};
use crate::labels::{Labels, is_valid_metric_name};
use crate::model::{CheckResult, Metric, ProbeResult, Status, TimeSource};
use crate::reject::{Reject, RejectKind};
use crate::time::parse_time_ms;

/// One result object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonResult {
    probe: Name,
    #[serde(default)]
    host: Name,
    #[serde(default)]
    time: Option<Time>,
    #[serde(default)]
    interval: Option<Interval>,
    #[serde(default)]
    checks: Vec<JsonCheck>,
    #[serde(default)]
    metrics: Vec<JsonMetric>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCheck {
    name: Name,
    status: JsonStatus,
    #[serde(default)]
    duration: Option<Duration>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonMetric {
    name: MetricName,
    value: Value,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A probe, host or check name: no control characters (they are shown everywhere).
#[derive(Default)]
struct Name(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let text = String::deserialize(d)?;
        if text.chars().any(char::is_control) {
            return Err(de::Error::custom(format!(
                "{text:?} contains control characters"
            )));
        }
        Ok(Name(text))
    }
}

struct MetricName(String);

impl<'de> Deserialize<'de> for MetricName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MetricName, D::Error> {
        let text = String::deserialize(d)?;
        if !is_valid_metric_name(&text) {
            return Err(de::Error::custom(format!(
                "invalid metric name {text:?}: metric names must match \
                 [a-zA-Z_:][a-zA-Z0-9_:]* (no spaces, dots or dashes)"
            )));
        }
        Ok(MetricName(text))
    }
}

/// `"ok"`, `"WARNING"`, `"2"` or `2`.
struct JsonStatus(Status);

impl<'de> Deserialize<'de> for JsonStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonStatus, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = JsonStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status: ok, warning, critical, unknown or 0-3")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonStatus, E> {
                Status::parse(v).map(JsonStatus).ok_or_else(|| {
                    E::custom(format!(
                        "unknown status {v:?}: expected ok, warning, critical, unknown or 0-3"
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonStatus, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonStatus, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// RFC 3339 (`"2026-11-23T18:00:00+08:00"`) or Unix seconds (`1763892000.5` or as a string).
struct Time(i64);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Time;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp with a UTC offset or Unix seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Time, E> {
                parse_time_ms(v).map(Time).ok_or_else(|| {
                    E::custom(format!(
                        "time {v:?} is neither an RFC 3339 timestamp with a UTC offset \
                         (2026-11-23T18:00:00+08:00) nor Unix seconds"
                    ))
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Time, E> {
                if v.is_finite() && v >= 0.0 {
                    self.visit_str(&format!("{v}"))
                } else {
                    Err(E::custom(format!("time {v} is not Unix seconds")))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Time, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Time, E> {
                Err(E::custom(format!("time {v} is before 1970")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"60s"`, `"5m"` or a number of seconds.
struct Interval(i64);

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Interval, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Interval;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive duration such as \"60s\", or seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Interval, E> {
                humantime::parse_duration(v.trim())
                    .ok()
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .filter(|ms| *ms > 0)
                    .map(Interval)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "interval {v:?} is not a positive duration such as 60s or 5m"
                        ))
                    })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Interval, E> {
                let ms = (v * 1000.0).round();
                if v.is_finite() && ms >= 1.0 && ms < i64::MAX as f64 {
                    Ok(Interval(ms as i64))
                } else {
                    Err(E::custom(format!(
                        "interval {v} is not a positive number of seconds"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Interval, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Interval, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

/// Seconds, finite and not negative.
struct Duration(f64);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() && v >= 0.0 {
            Ok(Duration(v))
        } else {
            Err(de::Error::custom(format!(
                "duration {v} is not a number of seconds >= 0"
            )))
        }
    }
}

/// A number, or `"NaN"`, `"+Inf"`, `"-Inf"` (JSON has no literal for them).
struct Value(f64);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, or \"NaN\", \"+Inf\" or \"-Inf\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                super::xml::parse_float(v).map(Value).ok_or_else(|| {
                    E::custom(format!(
                        "value {v:?} is not a number (write numbers bare; only NaN, +Inf and \
                         -Inf as strings)"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn parse(
    input: &[u8],
    file: FileContext<'_>,
    limits: &ParseLimits,
) -> Result<Vec<ProbeResult>, Reject> {
    let text = super::utf8(input)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.trim_start().chars().next();
    // The two shapes are read each by its own type (an untagged enum would lose the error's
    // place and path).
    let (results, array) = match first {
        None => return Err(Reject::new(RejectKind::Empty, "the file is empty")),
        Some('[') => (read::<Vec<JsonResult>>(text)?, true),
        Some('{') => (vec![read::<JsonResult>(text)?], false),
        Some(other) => {
            return Err(Reject::at(
                RejectKind::Syntax,
                input,
                input.len() - text.trim_start().len(),
                format!("expected a JSON object or array, found {other:?}"),
            ));
        }
    };
    if results.len() > limits.max_probes {
        return Err(Reject::new(
            RejectKind::TooLarge,
            format!("more than {} results in one file", limits.max_probes),
        ));
    }
    let items: usize = results
        .iter()
        .map(|r| r.checks.len() + r.metrics.len())
        .sum();
    if items > limits.max_items {
        return Err(Reject::new(
            RejectKind::TooLarge,
            format!(
                "more than {} checks and metrics in one file",
                limits.max_items
            ),
        ));
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let prefix = if array {
                format!("[{i}].")
            } else {
                String::new()
            };
            convert(&prefix, r, file, limits)
        })
        .collect()
}

/// Reads `T` from `text`; an error names the line, the column and the JSON path.
fn read<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, Reject> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        // `?` stands for a place the path could not name (inside a value cut short).
        let path = err.path().to_string();
        let path = path.trim_end_matches('?').trim_end_matches('.');
        reject(&err.into_inner(), path)
    })?;
    // Nothing but white space may follow the document.
    de.end().map_err(|err| reject(&err, ""))?;
    Ok(value)
}

/// A serde_json error as a rejection: its kind, line and column, and the path in front.
fn reject(err: &serde_json::Error, path: &str) -> Reject {
    let kind = match err.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            RejectKind::Syntax
        }
        serde_json::error::Category::Data => RejectKind::Schema,
        serde_json::error::Category::Io => RejectKind::Io,
    };
    // serde_json's message ends with " at line L column C"; the reject carries those.
    let message = err.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m)
        .to_string();
    let detail = if path.is_empty() || path == "." {
        message
    } else {
        format!("{path}: {message}")
    };
    // At the end of a line (a file cut short) serde_json says column 0.
    let line = u32::try_from(err.line()).ok().filter(|l| *l > 0);
    Reject {
        kind,
        line,
        column: line.map(|_| u32::try_from(err.column()).unwrap_or(0).max(1)),
        detail,
    }
}

fn convert(
    prefix: &str,
    r: JsonResult,
    file: FileContext<'_>,
    limits: &ParseLimits,
) -> Result<ProbeResult, Reject> {
    let at = |field: String, detail: String| {
        Reject::new(RejectKind::Schema, format!("{field}: {detail}"))
    };
    let (time_ms, time_source) = match r.time {
        Some(Time(ms)) => (ms, TimeSource::Declared),
        None => (file.mtime_ms, TimeSource::FileMtime),
    };
    let mut result = ProbeResult {
        probe: r.probe.0,
        host: r.host.0,
        time_ms,
        time_source,
        interval_ms: r.interval.map(|i| i.0),
        checks: Vec::with_capacity(r.checks.len()),
        metrics: Vec::with_capacity(r.metrics.len()),
    };
    if result.probe.is_empty() {
        return Err(at(format!("{prefix}probe"), "is empty".into()));
    }
    for (i, c) in r.checks.into_iter().enumerate() {
        result
            .push_check(CheckResult {
                name: c.name.0,
                status: c.status.0,
                duration_seconds: c.duration.map(|d| d.0),
                message: c.message,
            })
            .map_err(|message| at(format!("{prefix}checks[{i}].name"), message))?;
    }
    for (i, m) in r.metrics.into_iter().enumerate() {
        if m.labels.len() > limits.max_labels {
            return Err(Reject::new(
                RejectKind::TooLarge,
                format!(
                    "{prefix}metrics[{i}].labels: more than {} labels",
                    limits.max_labels
                ),
            ));
        }
        let labels = Labels::from_pairs(m.labels).map_err(|err| {
            Reject::new(
                RejectKind::Value,
                format!("{prefix}metrics[{i}].labels: {err}"),
            )
        })?;
        if labels.iter().any(|(_, v)| v.len() > limits.max_value_bytes) {
            return Err(Reject::new(
                RejectKind::TooLarge,
                format!(
                    "{prefix}metrics[{i}].labels: a value is longer than {} bytes",
                    limits.max_value_bytes
                ),
            ));
        }
        let metric = Metric {
            name: m.name.0,
            labels,
            value: m.value.0,
        };
        result
            .push_metric(metric)
            .map_err(|message| at(format!("{prefix}metrics[{i}]"), message))?;
    }
    Ok(result)
}
