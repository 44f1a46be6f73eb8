//! Nagios plugin output: the text a plugin prints (`TEXT | perfdata`, long output on the
//! lines after, more perfdata after a `|` there) and its exit code, as the Nagios plugin
//! guidelines define them. Used by `probewatch exec`, which runs a plugin and writes its
//! result into a spool, and by the `nagios` format: the check result files Nagios Core
//! keeps in its `check_result_path` (`key=value` lines, one record per blank-line-separated
//! block), so a passive-check feed can point at probewatch.
//!
//! Performance data (`'label'=value[UOM];warn;crit;min;max`) becomes metrics with units
//! normalised — seconds for `s`, `ms`, `us`; bytes for `B`, `KB`, `MB`, `GB`, `TB` (powers
//! of 1024, as the plugins mean them); `%` and `c` kept as `percent` and `count` — named
//! `nagios_perf_value` and, when given, `nagios_perf_warning`, `_critical`, `_min`, `_max`,
//! each with the labels `perf` (the plugin's label) and `unit`. An item that does not parse
//! is skipped and counted, never fatal: a plugin's status must not be lost to its perfdata.

use super::{FileContext, ParseLimits};
use crate::labels::Labels;
use crate::model::{CheckResult, Metric, ProbeResult, Status, TimeSource};
use crate::reject::{Reject, RejectKind};

/// A plugin's output, read.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginOutput {
    /// The first line's text (before any `|`), trimmed.
    pub summary: String,
    /// The long output (the lines after the first, their perfdata removed).
    pub long_output: String,
    /// Every perfdata item that parsed, as metrics.
    pub metrics: Vec<Metric>,
    /// Perfdata items that did not parse (skipped).
    pub bad_perfdata: Vec<String>,
}

impl PluginOutput {
    /// The message a check result keeps: the summary, then the long output.
    pub fn message(&self) -> String {
        let mut message = self.summary.clone();
        if !self.long_output.is_empty() {
            message.push('\n');
            message.push_str(&self.long_output);
        }
        if !self.bad_perfdata.is_empty() {
            message.push_str(&format!(
                "\n(perfdata not understood, skipped: {})",
                self.bad_perfdata.join(" ")
            ));
        }
        message
    }
}

/// A plugin's exit code as a status: 0 ok, 1 warning, 2 critical, 3 unknown, anything else
/// (or none: killed by a signal) unknown.
pub fn status_of_exit(code: Option<i32>) -> Status {
    match code {
        Some(0) => Status::Ok,
        Some(1) => Status::Warning,
        Some(2) => Status::Critical,
        _ => Status::Unknown,
    }
}

/// Reads a plugin's standard output.
pub fn parse_plugin_output(text: &str) -> PluginOutput {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let (summary, first_perf) = match first.split_once('|') {
        Some((s, p)) => (s.trim(), p),
        None => (first.trim(), ""),
    };
    let mut perf = String::from(first_perf);
    let mut long = Vec::new();
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf.push(' ');
            perf.push_str(line);
            continue;
        }
        match line.split_once('|') {
            Some((text, p)) => {
                long.push(text.trim_end().to_string());
                perf.push(' ');
                perf.push_str(p);
                in_perf = true;
            }
            None => long.push(line.trim_end().to_string()),
        }
    }
    while long.last().is_some_and(String::is_empty) {
        long.pop();
    }
    let (metrics, bad_perfdata) = parse_perfdata(&perf);
    PluginOutput {
        summary: summary.to_string(),
        long_output: long.join("\n"),
        metrics,
        bad_perfdata,
    }
}

/// Splits perfdata into items (a quoted label may hold spaces; `''` is a quote in it).
fn items(perf: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = perf.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if quoted && chars.peek() == Some(&'\'') => {
                current.push('\'');
                chars.next();
            }
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Perfdata items as metrics, and the items that did not parse.
pub fn parse_perfdata(perf: &str) -> (Vec<Metric>, Vec<String>) {
    let mut metrics = Vec::new();
    let mut bad = Vec::new();
    for item in items(perf) {
        match perf_item(&item) {
            Some(mut m) => {
                // The same label twice: the first one counts.
                m.retain(|x| {
                    !metrics
                        .iter()
                        .any(|y: &Metric| y.name == x.name && y.labels == x.labels)
                });
                metrics.extend(m);
            }
            None => bad.push(item),
        }
    }
    (metrics, bad)
}

fn perf_item(item: &str) -> Option<Vec<Metric>> {
    let (label, rest) = item.rsplit_once('=')?;
    let label = match label.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')) {
        Some(quoted) => quoted.to_string(),
        None => label.to_string(),
    };
    if label.is_empty() || label.chars().any(char::is_control) {
        return None;
    }
    let mut fields = rest.split(';');
    let value_uom = fields.next()?;
    let split = value_uom
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(value_uom.len());
    let (value_text, uom) = value_uom.split_at(split);
    let value: f64 = value_text.parse().ok().filter(|v: &f64| v.is_finite())?;
    let (unit, factor) = match uom {
        "" => ("", 1.0),
        "s" => ("seconds", 1.0),
        "ms" => ("seconds", 1e-3),
        "us" => ("seconds", 1e-6),
        "%" => ("percent", 1.0),
        "B" => ("bytes", 1.0),
        "KB" => ("bytes", 1024.0),
        "MB" => ("bytes", 1024.0 * 1024.0),
        "GB" => ("bytes", 1024.0 * 1024.0 * 1024.0),
        "TB" => ("bytes", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        "c" => ("count", 1.0),
        _ => return None,
    };
    let labels = Labels::from_pairs([("perf", label.as_str()), ("unit", unit)]).ok()?;
    let mut out = vec![Metric {
        name: "nagios_perf_value".into(),
        labels: labels.clone(),
        value: value * factor,
    }];
    for name in [
        "nagios_perf_warning",
        "nagios_perf_critical",
        "nagios_perf_min",
        "nagios_perf_max",
    ] {
        let Some(field) = fields.next() else { break };
        if let Some(v) = threshold(field) {
            out.push(Metric {
                name: name.into(),
                labels: labels.clone(),
                value: v * factor,
            });
        }
    }
    Some(out)
}

/// A threshold's number: a plain value, or the upper end of a range (`10:20` → 20, `@5:10`
/// → 10, `10:` → 10, `~:5` → 5). Empty or unreadable: none.
fn threshold(field: &str) -> Option<f64> {
    let field = field.trim().trim_start_matches('@');
    if field.is_empty() {
        return None;
    }
    let number = match field.split_once(':') {
        Some((low, "")) => low,
        Some((_, high)) => high,
        None => field,
    };
    number.parse().ok().filter(|v: &f64| v.is_finite())
}

/// Nagios Core check result files: each record's `host_name`, `service_description` (absent
/// for a host check), `return_code`, `output` (newlines escaped as `\n`), `start_time` and
/// `finish_time`. A record becomes a result of probe `nagios` on its host, its check named
/// after the service (`host` for a host check, whose non-zero codes are down: critical).
pub(super) fn parse_check_results(
    input: &[u8],
    file: FileContext<'_>,
    limits: &ParseLimits,
) -> Result<Vec<ProbeResult>, Reject> {
    let text = super::utf8(input)?;
    let mut results = Vec::new();
    let mut record: Vec<(&str, &str, usize)> = Vec::new();
    let mut file_time: Option<f64> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n').chain(std::iter::once("")) {
        let at = offset;
        offset += line.len();
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            if !record.is_empty() {
                results.push(check_record(&record, file_time, file, input)?);
                record.clear();
                if results.len() > limits.max_probes {
                    return Err(Reject::new(
                        RejectKind::TooLarge,
                        format!("more than {} check results in one file", limits.max_probes),
                    ));
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Reject::at(
                RejectKind::Syntax,
                input,
                at,
                format!("expected key=value, found {line:?}"),
            ));
        };
        if key == "file_time" && record.is_empty() {
            file_time = value.trim().parse().ok();
            continue;
        }
        record.push((key.trim(), value, at));
    }
    if results.is_empty() {
        return Err(Reject::new(
            RejectKind::Empty,
            "no check result in the file (a record needs host_name and return_code)",
        ));
    }
    Ok(results)
}

fn check_record(
    record: &[(&str, &str, usize)],
    file_time: Option<f64>,
    file: FileContext<'_>,
    input: &[u8],
) -> Result<ProbeResult, Reject> {
    let get = |key: &str| {
        record
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, _)| *v)
    };
    // Where a key's line starts, for errors about its value.
    let line_of = |key: &str| {
        record
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or(0, |(_, _, at)| *at)
    };
    let first = record.first().map_or(0, |r| r.2);
    let host = get("host_name")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Reject::at(
                RejectKind::Schema,
                input,
                first,
                "a check result without host_name",
            )
        })?;
    let service = get("service_description")
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let code_text = get("return_code").ok_or_else(|| {
        Reject::at(
            RejectKind::Schema,
            input,
            first,
            "a check result without return_code",
        )
    })?;
    let code: i32 = code_text.trim().parse().map_err(|_| {
        Reject::at(
            RejectKind::Value,
            input,
            line_of("return_code"),
            format!("return_code {code_text:?} is not a number"),
        )
    })?;
    let status = match (service, code) {
        (None, 0) => Status::Ok,
        (None, _) => Status::Critical,
        (Some(_), code) => status_of_exit(Some(code)),
    };
    let seconds = |key: &str| -> Result<Option<f64>, Reject> {
        match get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Some)
                .ok_or_else(|| {
                    Reject::at(
                        RejectKind::Value,
                        input,
                        line_of(key),
                        format!("{key} {v:?} is not Unix seconds"),
                    )
                }),
        }
    };
    let start = seconds("start_time")?;
    let finish = seconds("finish_time")?;
    let (time_ms, time_source) = match finish.or(start).or(file_time) {
        Some(s) => ((s * 1000.0).round() as i64, TimeSource::Declared),
        None => (file.mtime_ms, TimeSource::FileMtime),
    };
    let output = get("output")
        .unwrap_or("")
        .replace("\\n", "\n")
        .replace("\\\\", "\\");
    let parsed = parse_plugin_output(&output);
    for name in [host, service.unwrap_or("")] {
        if name.chars().any(char::is_control) {
            return Err(Reject::at(
                RejectKind::Value,
                input,
                first,
                format!("{name:?} contains control characters"),
            ));
        }
    }
    Ok(ProbeResult {
        probe: "nagios".into(),
        host: host.to_string(),
        time_ms,
        time_source,
        interval_ms: None,
        checks: vec![CheckResult {
            name: service.unwrap_or("host").to_string(),
            status,
            duration_seconds: match (start, finish) {
                (Some(s), Some(f)) if f >= s => Some(f - s),
                _ => None,
            },
            message: parsed.message(),
        }],
        metrics: parsed.metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(out: &PluginOutput, name: &str, perf: &str) -> Option<f64> {
        out.metrics
            .iter()
            .find(|m| m.name == name && m.labels.get("perf") == Some(perf))
            .map(|m| m.value)
    }

    #[test]
    fn output_perfdata_and_long_output_as_the_guidelines_write_them() {
        let out = parse_plugin_output(
            "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n\
             / 15272 MB (77%);\n\
             /boot 68 MB (69%);\n\
             /home 69357 MB (27%);\n\
             /var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n\
             /home=69357MB;253404;253409;0;253414 \n\
             /var/log=818MB;970;975;0;980\n",
        );
        assert_eq!(out.summary, "DISK OK - free space: / 3326 MB (56%);");
        assert_eq!(
            out.long_output,
            "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%);"
        );
        assert_eq!(
            value(&out, "nagios_perf_value", "/"),
            Some(2643.0 * 1048576.0)
        );
        assert_eq!(
            value(&out, "nagios_perf_max", "/var/log"),
            Some(980.0 * 1048576.0)
        );
        assert!(out.bad_perfdata.is_empty(), "{:?}", out.bad_perfdata);
    }

    #[test]
    fn quoted_labels_units_ranges_and_garbage() {
        let out = parse_plugin_output(
            "HTTP OK|'time to first byte'=12ms;100;200 'it''s'=5c 'load 1'=0.5;@1:2;~:3;; \
             pct=99.5%;;;0;100 junk ==;; size=abcKB up=1zz",
        );
        assert_eq!(
            value(&out, "nagios_perf_value", "time to first byte"),
            Some(0.012)
        );
        assert_eq!(
            value(&out, "nagios_perf_critical", "time to first byte"),
            Some(0.2)
        );
        assert_eq!(value(&out, "nagios_perf_value", "it's"), Some(5.0));
        assert_eq!(value(&out, "nagios_perf_warning", "load 1"), Some(2.0));
        assert_eq!(value(&out, "nagios_perf_critical", "load 1"), Some(3.0));
        assert_eq!(value(&out, "nagios_perf_max", "pct"), Some(100.0));
        assert_eq!(out.bad_perfdata, ["junk", "==;;", "size=abcKB", "up=1zz"]);
        assert!(out.message().contains("perfdata not understood"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(status_of_exit(Some(0)), Status::Ok);
        assert_eq!(status_of_exit(Some(2)), Status::Critical);
        assert_eq!(status_of_exit(Some(7)), Status::Unknown);
        assert_eq!(status_of_exit(None), Status::Unknown);
    }
}
