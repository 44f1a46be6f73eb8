//! Result-file formats behind one entry point, [`parse`].
//!
//! Every format turns bytes into [`ProbeResult`]s or a [`Reject`]; no format does IO, so the
//! ingest path can read the file once, hash it, and hand the same bytes here.

mod json;
pub mod mapping;
pub mod nagios;
pub mod prometheus;
mod xml;

use crate::model::ProbeResult;
use crate::reject::Reject;

/// The formats probewatch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// probewatch result XML v1 (docs/format.md).
    #[default]
    Xml,
    /// The same model as JSON (docs/format-json.md).
    Json,
    /// Prometheus text format 0.0.4 or OpenMetrics 1.0: a node_exporter textfile
    /// (docs/format-prometheus.md).
    Prometheus,
    /// Nagios Core check result files, as in its `check_result_path`
    /// (docs/format-nagios.md).
    Nagios,
    /// Any XML, through the spool's mapping of XPath selectors (docs/format-mapping.md).
    Mapping,
    /// By the file's extension (`.xml`, `.json`, `.prom` or `.txt`), else by its content:
    /// a Nagios check result file by its header, XML when it starts with `<`, JSON with `{`
    /// or `[`, Prometheus text otherwise.
    Auto,
}

impl Format {
    /// Reads a format name as written in the config (`xml`).
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "xml" => Some(Format::Xml),
            "json" => Some(Format::Json),
            "prometheus" | "openmetrics" | "prom" => Some(Format::Prometheus),
            "nagios" => Some(Format::Nagios),
            "mapping" => Some(Format::Mapping),
            "auto" => Some(Format::Auto),
            _ => None,
        }
    }

    /// The config name of the format.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Xml => "xml",
            Format::Json => "json",
            Format::Prometheus => "prometheus",
            Format::Nagios => "nagios",
            Format::Mapping => "mapping",
            Format::Auto => "auto",
        }
    }

    /// The file names a spool of this format reads unless told otherwise.
    pub fn default_include(self) -> &'static [&'static str] {
        match self {
            Format::Xml => &["*.xml"],
            Format::Json => &["*.json"],
            Format::Prometheus => &["*.prom"],
            // Nagios names them cXXXXXX; the `.ok` markers beside them are excluded.
            Format::Nagios => &["c*"],
            Format::Mapping => &["*.xml", "*.json"],
            Format::Auto => &["*.xml", "*.json", "*.prom"],
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
#[derive(Debug, Clone, Copy, Default)]
pub struct FileContext<'a> {
    /// The file's modification time in milliseconds since the epoch; the timestamp of
    /// results that declare none.
    pub mtime_ms: i64,
    /// The file's name (no directory; empty when there is none): `auto` looks at its
    /// extension, and a Prometheus textfile's probe is named after it.
    pub name: &'a str,
    /// The spool's mapping, for format `mapping`.
    pub mapping: Option<&'a mapping::Mapping>,
}

/// Parses one result file. Never panics; every failure is a [`Reject`] with a position where
/// one applies.
pub fn parse(
    format: Format,
    input: &[u8],
    file: FileContext<'_>,
    limits: &ParseLimits,
) -> Result<Vec<ProbeResult>, Reject> {
    match format {
        Format::Xml => xml::parse(input, file, limits),
        Format::Json => json::parse(input, file, limits),
        Format::Prometheus => prometheus::parse(input, file, limits),
        Format::Nagios => nagios::parse_check_results(input, file, limits),
        Format::Mapping => mapping::parse(input, file, limits),
        Format::Auto => {
            let by_name = match file.name.rsplit_once('.').map(|(_, e)| e) {
                Some("xml") => Some(Format::Xml),
                Some("json") => Some(Format::Json),
                Some("prom" | "txt") => Some(Format::Prometheus),
                _ => None,
            };
            match by_name.or_else(|| sniff(input)) {
                Some(Format::Json) => json::parse(input, file, limits),
                Some(Format::Prometheus) => prometheus::parse(input, file, limits),
                Some(Format::Nagios) => nagios::parse_check_results(input, file, limits),
                _ => xml::parse(input, file, limits),
            }
        }
    }
}

/// The probe a file that was refused says it is from, if its first 64 KiB show it
/// plainly: the `name` of an XML `<probe>` element, or a JSON `"probe": "…"` member. It
/// lets a rejection be shown on that probe's checks ("last file rejected: …").
pub fn sniff_probe(input: &[u8]) -> Option<String> {
    let head = &input[..input.len().min(64 * 1024)];
    let text = String::from_utf8_lossy(head);
    let value = |rest: &str, quotes: &[char]| -> Option<String> {
        let rest = rest.trim_start();
        let quote = rest.chars().next().filter(|c| quotes.contains(c))?;
        let body = &rest[1..];
        let end = body.find(quote)?;
        let name = &body[..end];
        // Escapes and entities are not decoded here: such a name is left unsniffed.
        (!name.is_empty() && name.len() <= 256 && !name.contains(['&', '\\', '<']))
            .then(|| name.to_string())
    };
    if let Some(at) = text.find("<probe") {
        let tag = &text[at + "<probe".len()..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let mut from = 0;
        while let Some(i) = tag[from..].find("name") {
            let start = from + i;
            let before_ok = start == 0 || tag[..start].ends_with(char::is_whitespace);
            let rest = tag[start + 4..].trim_start();
            if before_ok && let Some(rest) = rest.strip_prefix('=') {
                return value(rest, &['"', '\'']);
            }
            from = start + 4;
        }
        return None;
    }
    let at = text.find("\"probe\"")?;
    let rest = text[at + "\"probe\"".len()..]
        .trim_start()
        .strip_prefix(':')?;
    value(rest, &['"'])
}

/// A file's bytes as text, or the rejection that says where they stop being UTF-8 (the
/// JSON, Prometheus, Nagios and mapping readers share it; XML words its own).
fn utf8(input: &[u8]) -> Result<&str, Reject> {
    std::str::from_utf8(input).map_err(|err| {
        Reject::at(
            crate::reject::RejectKind::Encoding,
            input,
            err.valid_up_to(),
            "the file is not valid UTF-8",
        )
    })
}

/// The format a file's content says: a Nagios check result file by its header or its
/// `host_name=` line; else by the first significant byte (after a byte-order mark and white
/// space): `<` is XML, `{` or `[` is JSON, a letter, `_`, `:` or `#` is Prometheus text;
/// anything else is left to the XML parser, whose errors say what it found.
fn sniff(input: &[u8]) -> Option<Format> {
    let input = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    let head = &input[..input.len().min(4096)];
    let nagios = head
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .find(|l| !l.is_empty())
        .is_some_and(|l| {
            (l.starts_with(b"###") && l.ends_with(b"###"))
                || l.starts_with(b"host_name=")
                || l.starts_with(b"file_time=")
        });
    if nagios {
        return Some(Format::Nagios);
    }
    match input.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{' | b'[') => Some(Format::Json),
        Some(b) if b.is_ascii_alphabetic() || matches!(b, b'_' | b':' | b'#') => {
            Some(Format::Prometheus)
        }
        Some(_) => Some(Format::Xml),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::sniff_probe;

    #[test]
    fn a_refused_files_probe_is_read_where_it_is_plain() {
        let xml = br#"<?xml version="1.0"?><probe host="h" name="chat-frontend" time="x"><check"#;
        assert_eq!(sniff_probe(xml).as_deref(), Some("chat-frontend"));
        assert_eq!(
            sniff_probe(b"<probe hostname='a' name = 'web'>").as_deref(),
            Some("web")
        );
        assert_eq!(
            sniff_probe(br#"{"host": "h", "probe" : "api", "checks": 3}"#).as_deref(),
            Some("api")
        );
        assert_eq!(
            sniff_probe(b"<probe name=\"a&amp;b\">"),
            None,
            "entities are not decoded"
        );
        assert_eq!(sniff_probe(b"<probe host=\"h\">"), None);
        assert_eq!(sniff_probe(b"garbage"), None);
    }
}
