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

impl ProbeResult {
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
