//! Result data as probes report it, independent of the file format it came in.

use crate::labels::Labels;

/// The outcome of one check, in Nagios's four levels.
///
/// The numeric value (0–3) is what `probe_check_status` samples carry, so PromQL rules can
/// compare against it (`probe_check_status >= 2` is "critical or unknown").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The check passed.
    Ok = 0,
    /// The check passed with a warning.
    Warning = 1,
    /// The check failed.
    Critical = 2,
    /// The check could not tell (the probe itself failed, a timeout before any answer, …).
    Unknown = 3,
}

impl Status {
    /// Reads a status word (`ok`, `warning`, `critical`, `unknown`, any case) or a Nagios
    /// exit code (`0`–`3`). Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Option<Status> {
        let text = text.trim();
        let status = match text.to_ascii_lowercase().as_str() {
            "ok" | "0" => Status::Ok,
            "warning" | "1" => Status::Warning,
            "critical" | "2" => Status::Critical,
            "unknown" | "3" => Status::Unknown,
            _ => return None,
        };
        Some(status)
    }

    /// The Nagios code, 0–3.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`Status::code`].
    pub fn from_code(code: i64) -> Option<Status> {
        match code {
            0 => Some(Status::Ok),
            1 => Some(Status::Warning),
            2 => Some(Status::Critical),
            3 => Some(Status::Unknown),
            _ => None,
        }
    }

    /// The lower-case word, as shown in the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a result's timestamp came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The probe wrote a `time` attribute.
    Declared,
    /// The probe wrote none; the file's modification time is used.
    FileMtime,
}

/// One check's result: a status, how long it took and what the probe said about it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// Name of the check within its probe (`login`, `send-message`).
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// How long the check took, if the probe measured it.
    pub duration_seconds: Option<f64>,
    /// The probe's human-readable message (may be empty).
    pub message: String,
}

/// One numeric sample a probe reported, with its own labels (not yet the probe/host ones).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Prometheus metric name.
    pub name: String,
    /// The probe's own labels for this sample.
    pub labels: Labels,
    /// The value; NaN and ±Inf are allowed.
    pub value: f64,
}

/// Everything one `<probe>` element reported at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// The probe's name (`chat-frontend`).
    pub probe: String,
    /// The host the probe ran on or tested (may be empty).
    pub host: String,
    /// When the result was taken, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Whether [`ProbeResult::time_ms`] was declared or taken from the file.
    pub time_source: TimeSource,
    /// How often the probe reports, if it said so; lets rules and the dashboard tell a silent
    /// probe from a healthy one.
    pub interval_ms: Option<i64>,
    /// The checks, in file order.
    pub checks: Vec<CheckResult>,
    /// The metrics, in file order.
    pub metrics: Vec<Metric>,
}

/// One sample as it is stored: a series (metric name + canonical label text) and a value at
/// a time.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSample {
    /// Metric name.
    pub metric: String,
    /// Canonical label text, `{a="1",b="2"}` (see [`Labels::canonical`]).
    pub labels: String,
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    /// The value.
    pub value: f64,
}

impl ProbeResult {
    /// Adds a check, refusing a second check of the same name: each format's reader says
    /// where in its file, this says what ("check \"x\" appears twice in probe \"p\"").
    pub fn push_check(&mut self, check: CheckResult) -> Result<(), String> {
        if self.checks.iter().any(|c| c.name == check.name) {
            return Err(format!(
                "check {:?} appears twice in probe {:?}",
                check.name, self.probe
            ));
        }
        self.checks.push(check);
        Ok(())
    }

    /// Adds a metric, refusing a second one with the same name and labels (it would be two
    /// values for one series at one time).
    pub fn push_metric(&mut self, metric: Metric) -> Result<(), String> {
        if self
            .metrics
            .iter()
            .any(|m| m.name == metric.name && m.labels == metric.labels)
        {
            return Err(format!(
                "metric {}{} appears twice in probe {:?}",
                metric.name,
                metric.labels.canonical(),
                self.probe
            ));
        }
        self.metrics.push(metric);
        Ok(())
    }

    /// The samples this result becomes, with `extra` (a spool's static labels) on every
    /// series:
    /// - per check, `probe_check_status{check,probe,host}` (the code 0–3) and, when measured,
    ///   `probe_check_duration_seconds{…}`;
    /// - per metric, its own name and labels plus `probe` and `host`.
    ///
    /// System-owned labels (probe, host, then `extra`) win over a probe's own label of the
    /// same name, which is kept as `exported_<name>`. An empty host adds no `host` label.
    pub fn series_samples(&self, extra: &Labels) -> Vec<SeriesSample> {
        // The system-owned labels, in the order they are applied: probe, host, then the
        // spool's. A check's series also get `check`, applied first.
        let mut owned: Vec<(&str, &str)> = Vec::with_capacity(3 + extra.len());
        owned.push(("check", ""));
        owned.push(("probe", &self.probe));
        if !self.host.is_empty() {
            owned.push(("host", &self.host));
        }
        owned.extend(extra.iter());
        let no_labels = Labels::new();
        let sample = |metric: &str, labels: String, value: f64| SeriesSample {
            metric: metric.to_string(),
            labels,
            time_ms: self.time_ms,
            value,
        };
        let mut out = Vec::with_capacity(self.sample_count());
        for check in &self.checks {
            owned[0].1 = &check.name;
            let canonical = no_labels.canonical_with_owned(&owned);
            if let Some(duration) = check.duration_seconds {
                out.push(sample(
                    "probe_check_duration_seconds",
                    canonical.clone(),
                    duration,
                ));
            }
            out.push(sample(
                "probe_check_status",
                canonical,
                f64::from(check.status.code()),
            ));
        }
        for metric in &self.metrics {
            let canonical = metric.labels.canonical_with_owned(&owned[1..]);
            out.push(sample(&metric.name, canonical, metric.value));
        }
        out
    }

    /// Number of samples this result becomes: two per check (status and, when measured,
    /// duration) plus one per metric.
    pub fn sample_count(&self) -> usize {
        self.checks
            .iter()
            .map(|c| 1 + usize::from(c.duration_seconds.is_some()))
            .sum::<usize>()
            + self.metrics.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_series() {
        let result = ProbeResult {
            probe: "web".into(),
            host: String::new(),
            time_ms: 5,
            time_source: TimeSource::Declared,
            interval_ms: None,
            checks: vec![CheckResult {
                name: "login".into(),
                status: Status::Critical,
                duration_seconds: None,
                message: String::new(),
            }],
            metrics: vec![Metric {
                name: "users".into(),
                labels: Labels::from_pairs([("probe", "mine")]).expect("valid"),
                value: 3.0,
            }],
        };
        let extra = Labels::from_pairs([("env", "prod")]).expect("valid");
        let samples = result.series_samples(&extra);
        let rendered: Vec<String> = samples
            .iter()
            .map(|s| format!("{}{} {}@{}", s.metric, s.labels, s.value, s.time_ms))
            .collect();
        assert_eq!(
            rendered,
            [
                r#"probe_check_status{check="login",env="prod",probe="web"} 2@5"#,
                r#"users{env="prod",exported_probe="mine",probe="web"} 3@5"#,
            ]
        );
        assert_eq!(samples.len(), result.sample_count());
    }

    #[test]
    fn status_words_and_codes() {
        assert_eq!(Status::parse("OK"), Some(Status::Ok));
        assert_eq!(Status::parse(" Critical "), Some(Status::Critical));
        assert_eq!(Status::parse("3"), Some(Status::Unknown));
        assert_eq!(Status::parse("4"), None);
        assert_eq!(Status::parse("fine"), None);
        assert_eq!(Status::from_code(1), Some(Status::Warning));
        assert_eq!(Status::Warning.code(), 1);
    }
}
