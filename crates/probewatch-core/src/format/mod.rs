//! Result-file formats behind one entry point, [`parse`].
//!
//! Every format turns bytes into [`ProbeResult`]s or a [`Reject`]; no format does IO, so the
//! ingest path can read the file once, hash it, and hand the same bytes here.

mod xml;

use crate::model::ProbeResult;
use crate::reject::Reject;

/// The formats probewatch reads. Only XML exists today; JSON, Prometheus text and Nagios
/// plugin output are planned and will be variants here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// probewatch result XML v1 (docs/format.md).
    #[default]
    Xml,
}

impl Format {
    /// Reads a format name as written in the config (`xml`).
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "xml" => Some(Format::Xml),
            _ => None,
        }
    }

    /// The config name of the format.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Xml => "xml",
        }
    }
}

/// Bounds on what one file may contain, so hostile files cost bounded time and memory.
///
/// The file-size limit is enforced before parsing, by whoever reads the file.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Maximum number of `<probe>` elements in one file.
    pub max_probes: usize,
    /// Maximum number of checks plus metrics in one file.
    pub max_items: usize,
    /// Maximum number of labels on one metric.
    pub max_labels: usize,
    /// Maximum length of a name or label value, in bytes.
    pub max_value_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> ParseLimits {
        ParseLimits {
            max_probes: 10_000,
            max_items: 200_000,
            max_labels: 64,
            max_value_bytes: 4096,
        }
    }
}

/// What the parser needs to know about the file beyond its bytes.
#[derive(Debug, Clone, Copy)]
pub struct FileContext {
    /// The file's modification time in milliseconds since the epoch; the timestamp of
    /// results that declare none.
    pub mtime_ms: i64,
}

/// Parses one result file. Never panics; every failure is a [`Reject`] with a position where
/// one applies.
pub fn parse(
    format: Format,
    input: &[u8],
    file: FileContext,
    limits: &ParseLimits,
) -> Result<Vec<ProbeResult>, Reject> {
    match format {
        Format::Xml => xml::parse(input, file, limits),
    }
}
