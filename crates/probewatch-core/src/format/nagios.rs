//! Nagios plugin output: the text a plugin prints (`TEXT | perfdata`, long output on the
//! lines after, more perfdata after a `|` there) and its exit code, as the Nagios plugin
//! guidelines define them. Used by `probewatch exec`, which runs a plugin and writes its
//! result into a spool.
//!
//! Performance data (`'label'=value[UOM];warn;crit;min;max`) becomes metrics with units
//! normalised — seconds for `s`, `ms`, `us`; bytes for `B`, `KB`, `MB`, `GB`, `TB` (powers
//! of 1024, as the plugins mean them); `%` and `c` kept as `percent` and `count` — named
//! `nagios_perf_value` and, when given, `nagios_perf_warning`, `_critical`, `_min`, `_max`,
//! each with the labels `perf` (the plugin's label) and `unit`. An item that does not parse
//! is skipped and counted, never fatal: a plugin's status must not be lost to its perfdata.

use crate::labels::Labels;
use crate::model::{Metric, Status};

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
