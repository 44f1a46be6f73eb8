//! Prometheus text exposition format 0.0.4 and OpenMetrics 1.0 text, as node_exporter's
//! textfile collector reads them (docs/format-prometheus.md): one file is one probe's
//! current metrics.
//!
//! Our own parser (the format is small, and the crates for it are either unmaintained or
//! pull in a client library): `# HELP`, `# TYPE`, `# UNIT` and `# EOF` lines, samples with
//! escaped label values, `NaN`/`±Inf`, explicit timestamps (milliseconds in 0.0.4, seconds
//! in OpenMetrics, which a file ending in `# EOF` is), exemplars tolerated and dropped. What
//! Prometheus's own parser refuses is refused here with the line and the reason: a bad
//! name, an unknown escape, a duplicate label or series, a second `TYPE` for a metric or one
//! after its samples, anything after `# EOF`.

use std::collections::{HashMap, HashSet};

use super::{FileContext, ParseLimits};
use crate::labels::{Labels, is_valid_metric_name};
use crate::model::{Metric, ProbeResult, TimeSource};
use crate::reject::{Reject, RejectKind};

const TYPES: &[&str] = &[
    "counter",
    "gauge",
    "histogram",
    "summary",
    "untyped",
    "unknown",
    "gaugehistogram",
    "stateset",
    "info",
];

/// One sample line, read.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    time_ms: Option<i64>,
}

pub(super) fn parse(
    input: &[u8],
    file: FileContext<'_>,
    limits: &ParseLimits,
) -> Result<Vec<ProbeResult>, Reject> {
    let text = super::utf8(input)?;
    if text.trim().is_empty() {
        return Err(Reject::new(RejectKind::Empty, "the file is empty"));
    }
    let openmetrics = text.trim_end().ends_with("# EOF");
    let mut types: HashMap<String, usize> = HashMap::new();
    let mut sampled: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, String)> = HashSet::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut eof = false;
    let mut offset = 0usize;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let line = line.trim_end_matches(['\n', '\r']);
        let reject = |kind, detail: String| Reject::at(kind, input, at, detail);
        if eof {
            if line.trim().is_empty() {
                continue;
            }
            return Err(reject(
                RejectKind::Syntax,
                "content after \"# EOF\"".to_string(),
            ));
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, [' ', '\t']);
            match words.next() {
                Some("EOF") if comment.trim() == "EOF" => eof = true,
                Some("TYPE") => {
                    let name = words.next().unwrap_or("");
                    let kind = words.next().unwrap_or("").trim();
                    if !is_valid_metric_name(name) {
                        return Err(reject(
                            RejectKind::Value,
                            format!("# TYPE: invalid metric name {name:?}"),
                        ));
                    }
                    if !TYPES.contains(&kind) {
                        return Err(reject(
                            RejectKind::Value,
                            format!(
                                "# TYPE {name}: unknown type {kind:?} (expected counter, gauge, \
                                 histogram, summary or untyped)"
                            ),
                        ));
                    }
                    if types.insert(name.to_string(), at).is_some() {
                        return Err(reject(
                            RejectKind::Schema,
                            format!("second # TYPE line for metric {name}"),
                        ));
                    }
                    if sampled.contains(name) {
                        return Err(reject(
                            RejectKind::Schema,
                            format!("# TYPE line for metric {name} after its samples"),
                        ));
                    }
                }
                Some("HELP" | "UNIT") => {
                    let name = words.next().unwrap_or("");
                    if !is_valid_metric_name(name) {
                        return Err(reject(
                            RejectKind::Value,
                            format!("# HELP/UNIT: invalid metric name {name:?}"),
                        ));
                    }
                }
                // Any other comment is a comment.
                _ => {}
            }
            continue;
        }
        let sample =
            sample(line, openmetrics, limits).map_err(|d| reject(RejectKind::Syntax, d))?;
        if !is_valid_metric_name(&sample.name) {
            return Err(reject(
                RejectKind::Value,
                format!("invalid metric name {:?}", sample.name),
            ));
        }
        let key = {
            let mut labels = sample.labels.clone();
            labels.sort();
            (sample.name.clone(), format!("{labels:?}"))
        };
        if !series.insert(key) {
            return Err(reject(
                RejectKind::Schema,
                format!("duplicate series {}{}", sample.name, render(&sample.labels)),
            ));
        }
        if samples.len() >= limits.max_items {
            return Err(reject(
                RejectKind::TooLarge,
                format!("more than {} samples in one file", limits.max_items),
            ));
        }
        // A family's samples (a histogram's _bucket, _sum, _count) count for its TYPE.
        for suffix in [
            "", "_bucket", "_sum", "_count", "_total", "_created", "_info",
        ] {
            if let Some(family) = sample.name.strip_suffix(suffix) {
                sampled.insert(family.to_string());
            }
        }
        samples.push(sample);
    }
    if samples.is_empty() {
        return Err(Reject::new(
            RejectKind::Schema,
            "no samples: the file has only comments",
        ));
    }
    results(samples, file)
}

/// The samples as results of one probe, one result per distinct timestamp.
fn results(samples: Vec<Sample>, file: FileContext<'_>) -> Result<Vec<ProbeResult>, Reject> {
    // The probe: a `probe` label every sample carries alike, else the file's name.
    let common_probe = samples
        .first()
        .and_then(|s| label(&s.labels, "probe"))
        .filter(|p| {
            samples
                .iter()
                .all(|s| label(&s.labels, "probe") == Some(*p))
        })
        .map(str::to_string);
    let probe = match &common_probe {
        Some(p) => p.clone(),
        None => {
            let stem = file.name.rsplit_once('.').map_or(file.name, |(s, _)| s);
            if stem.is_empty() {
                "textfile".to_string()
            } else {
                stem.to_string()
            }
        }
    };
    let mut by_time: Vec<(Option<i64>, Vec<Metric>)> = Vec::new();
    for s in samples {
        let mut labels = Labels::new();
        for (k, v) in s.labels {
            if common_probe.is_some() && k == "probe" {
                continue;
            }
            labels
                .insert(k, v)
                .map_err(|e| Reject::new(RejectKind::Value, format!("{}: {e}", s.name)))?;
        }
        let metric = Metric {
            name: s.name,
            labels,
            value: s.value,
        };
        match by_time.iter_mut().find(|(t, _)| *t == s.time_ms) {
            Some((_, metrics)) => metrics.push(metric),
            None => by_time.push((s.time_ms, vec![metric])),
        }
    }
    Ok(by_time
        .into_iter()
        .map(|(time, metrics)| ProbeResult {
            probe: probe.clone(),
            host: String::new(),
            time_ms: time.unwrap_or(file.mtime_ms),
            time_source: if time.is_some() {
                TimeSource::Declared
            } else {
                TimeSource::FileMtime
            },
            interval_ms: None,
            checks: Vec::new(),
            metrics,
        })
        .collect())
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn render(labels: &[(String, String)]) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// One sample line: `name{labels} value [timestamp] [# exemplar]`.
fn sample(line: &str, openmetrics: bool, limits: &ParseLimits) -> Result<Sample, String> {
    let line = line.trim_start();
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("expected a metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels, limits)?;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(format!("expected a space and a value after {name}"));
    }
    // An exemplar (OpenMetrics) follows " # "; it is dropped.
    let rest = rest.split(" # ").next().unwrap_or("").trim();
    let mut fields = rest.split_ascii_whitespace();
    let value_text = fields.next().ok_or_else(|| format!("{name}: no value"))?;
    let value = super::xml::parse_float(value_text)
        .ok_or_else(|| format!("{name}: value {value_text:?} is not a number"))?;
    let time_ms = match fields.next() {
        None => None,
        Some(t) if openmetrics => {
            let seconds: f64 = t
                .parse()
                .map_err(|_| format!("{name}: timestamp {t:?} is not a number of seconds"))?;
            let ms = (seconds * 1000.0).round();
            if !(0.0..=253_402_300_799_999.0).contains(&ms) {
                return Err(format!("{name}: timestamp {t:?} is out of range"));
            }
            Some(ms as i64)
        }
        Some(t) => {
            let ms: i64 = t
                .parse()
                .map_err(|_| format!("{name}: timestamp {t:?} is not milliseconds"))?;
            if !(0..=253_402_300_799_999).contains(&ms) {
                return Err(format!("{name}: timestamp {t:?} is out of range"));
            }
            Some(ms)
        }
    };
    if let Some(extra) = fields.next() {
        return Err(format!("{name}: unexpected {extra:?} after the timestamp"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        time_ms,
    })
}

/// Reads `name="value",…}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
    limits: &ParseLimits,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| "a label without '=' (or a missing '}')".to_string())?;
        let name = rest[..eq].trim();
        if !crate::labels::is_valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        if labels.iter().any(|(k, _)| k == name) {
            return Err(format!("label {name} appears twice"));
        }
        rest = rest[eq + 1..].trim_start();
        let Some(after_quote) = rest.strip_prefix('"') else {
            return Err(format!("label {name}: the value must be in double quotes"));
        };
        let mut value = String::new();
        let mut chars = after_quote.char_indices();
        let end = loop {
            match chars.next() {
                None => {
                    return Err(format!(
                        "label {name}: the value's closing quote is missing"
                    ));
                }
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => {
                        return Err(format!("label {name}: invalid escape \\{c} in its value"));
                    }
                    None => return Err(format!("label {name}: the value ends in a backslash")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if value.len() > limits.max_value_bytes {
            return Err(format!(
                "label {name}: the value is longer than {} bytes",
                limits.max_value_bytes
            ));
        }
        labels.push((name.to_string(), value));
        if labels.len() > limits.max_labels {
            return Err(format!(
                "more than {} labels on one sample",
                limits.max_labels
            ));
        }
        rest = after_quote[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name}"));
        }
    }
}

/// A metric family's `# TYPE`, `# HELP` and `# UNIT`, as a textfile declares them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `counter`, `gauge`, `histogram`, `summary`, `untyped`… (empty: not declared).
    pub kind: String,
    /// The help text, unescaped.
    pub help: String,
    /// The unit (OpenMetrics).
    pub unit: String,
}

/// The metadata a Prometheus text file declares, by family name (for `/api/v1/metadata`).
/// Read from a file [`super::parse`] accepted; malformed comment lines are skipped.
pub fn metadata(input: &[u8]) -> Vec<(String, Metadata)> {
    let Ok(text) = std::str::from_utf8(input) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Metadata)> = Vec::new();
    for line in text.lines() {
        let Some(comment) = line.strip_prefix('#') else {
            continue;
        };
        let mut words = comment.trim_start().splitn(3, [' ', '\t']);
        let (Some(keyword), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if !matches!(keyword, "TYPE" | "HELP" | "UNIT") || !is_valid_metric_name(name) {
            continue;
        }
        let value = words.next().unwrap_or("").trim();
        let at = match out.iter().position(|(n, _)| n == name) {
            Some(at) => at,
            None => {
                out.push((name.to_string(), Metadata::default()));
                out.len() - 1
            }
        };
        let entry = &mut out[at].1;
        match keyword {
            "TYPE" => entry.kind = value.to_string(),
            "HELP" => entry.help = value.replace("\\n", "\n").replace("\\\\", "\\"),
            _ => entry.unit = value.to_string(),
        }
    }
    out
}
