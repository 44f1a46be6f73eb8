//! Why a result file was refused, precisely enough for a probe author to fix the probe.

use std::fmt;

/// The category of a rejection; stable names used in metrics and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// The file has no bytes.
    Empty,
    /// The file is larger than the configured limit.
    TooLarge,
    /// The bytes are not valid UTF-8.
    Encoding,
    /// The XML is not well formed (including truncated files).
    Syntax,
    /// A DTD or a non-predefined entity: refused so nothing is ever expanded or fetched.
    Dtd,
    /// Well-formed, but not a probewatch result (wrong elements, missing attributes, …).
    Schema,
    /// A value that does not parse: status, number, time, duration, name.
    Value,
    /// The file could not be read (permissions, vanished, not a regular file).
    Io,
    /// The sender may not write this result: an agent's file names a host outside the
    /// hosts its token may write for.
    Forbidden,
}

impl RejectKind {
    /// Short snake_case name, e.g. `syntax`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Empty => "empty",
            RejectKind::TooLarge => "too_large",
            RejectKind::Encoding => "encoding",
            RejectKind::Syntax => "syntax",
            RejectKind::Dtd => "dtd",
            RejectKind::Schema => "schema",
            RejectKind::Value => "value",
            RejectKind::Io => "io",
            RejectKind::Forbidden => "forbidden",
        }
    }
}

/// A rejection: its kind, where in the file (1-based line and column, when it applies) and a
/// sentence saying what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Category.
    pub kind: RejectKind,
    /// 1-based line, when the problem has a position.
    pub line: Option<u32>,
    /// 1-based column (in characters), when the problem has a position.
    pub column: Option<u32>,
    /// What was wrong, in words.
    pub detail: String,
}

impl Reject {
    /// A rejection that has no position in the file.
    pub fn new(kind: RejectKind, detail: impl Into<String>) -> Reject {
        Reject {
            kind,
            line: None,
            column: None,
            detail: detail.into(),
        }
    }

    /// A rejection at byte `offset` of `input`; line and column are computed from it.
    pub fn at(kind: RejectKind, input: &[u8], offset: usize, detail: impl Into<String>) -> Reject {
        let (line, column) = line_column(input, offset);
        Reject {
            kind,
            line: Some(line),
            column: Some(column),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "line {line}, column {column}: {}", self.detail)
            }
            _ => f.write_str(&self.detail),
        }
    }
}

impl std::error::Error for Reject {}

/// 1-based line and column (counting characters, not bytes) of byte `offset` in `input`.
pub fn line_column(input: &[u8], offset: usize) -> (u32, u32) {
    let offset = offset.min(input.len());
    let before = &input[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        assert_eq!(line_column(b"", 0), (1, 1));
        assert_eq!(line_column(b"ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx".as_bytes(), 2), (1, 2));
        let r = Reject::at(RejectKind::Value, b"a\nbc", 3, "bad");
        assert_eq!(r.to_string(), "line 2, column 2: bad");
    }
}
