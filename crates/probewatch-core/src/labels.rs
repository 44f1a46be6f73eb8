//! Label sets and Prometheus naming rules.
//!
//! A [`Labels`] value is sorted by name and holds only valid names, so two equal label sets
//! always have the same canonical text ([`Labels::canonical`]), which is what the store keys
//! series on.

use std::fmt::Write as _;

/// Why a name or label set is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    /// The metric name breaks `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    MetricName(String),
    /// The label name breaks `[a-zA-Z_][a-zA-Z0-9_]*` or starts with the reserved `__`.
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")]
    LabelName(String),
    /// The same label name appears twice.
    #[error("duplicate label {0:?}")]
    Duplicate(String),
}

/// True when `name` is a valid Prometheus metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// True when `name` is a valid label name that a user may set (not `__reserved`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    !name.starts_with("__") && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A sorted set of `name=value` pairs with valid, unique names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// An empty set.
    pub fn new() -> Labels {
        Labels(Vec::new())
    }

    /// Builds a set from pairs, checking every name and refusing duplicates.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Labels, LabelsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut labels = Labels::new();
        for (k, v) in pairs {
            labels.insert(k.into(), v.into())?;
        }
        Ok(labels)
    }

    /// Adds a pair, keeping the set sorted; refuses invalid or duplicate names.
    pub fn insert(&mut self, name: String, value: String) -> Result<(), LabelsError> {
        if !is_valid_label_name(&name) {
            return Err(LabelsError::LabelName(name));
        }
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(_) => Err(LabelsError::Duplicate(name)),
            Err(at) => {
                self.0.insert(at, (name, value));
                Ok(())
            }
        }
    }

    /// Sets a label that the system owns (probe, host, a spool's static labels): if the set
    /// already has this name, the existing value is kept under `exported_<name>`, as
    /// Prometheus does with target labels (`honor_labels: false`).
    pub fn set_owned(&mut self, name: &str, value: &str) {
        if let Ok(at) = self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            let (_, old) = self.0.remove(at);
            let exported = format!("exported_{name}");
            // An `exported_` name can itself collide; the later one is dropped rather than
            // looping, which matches Prometheus (it only renames once).
            if let Err(at) = self.0.binary_search_by(|(k, _)| k.as_str().cmp(&exported)) {
                self.0.insert(at, (exported, old));
            }
        }
        let at = match self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(at) | Err(at) => at,
        };
        self.0.insert(at, (name.to_string(), value.to_string()));
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|at| self.0[at].1.as_str())
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical text this set would have after [`Labels::set_owned`] of every pair in
    /// `owned`, in order. When no name occurs twice (the usual case) the text is written
    /// directly, without building the combined set: this runs for every sample ingested.
    pub fn canonical_with_owned(&self, owned: &[(&str, &str)]) -> String {
        let mut sorted: Vec<(&str, &str)> = owned.to_vec();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let collides = sorted.windows(2).any(|w| w[0].0 == w[1].0)
            || sorted.iter().any(|(name, _)| self.get(name).is_some());
        if collides {
            let mut labels = self.clone();
            for (name, value) in owned {
                labels.set_owned(name, value);
            }
            return labels.canonical();
        }
        let mut out = String::with_capacity(64);
        out.push('{');
        let mut mine = self.iter().peekable();
        let mut theirs = sorted.into_iter().peekable();
        let mut first = true;
        while let Some((name, value)) = match (mine.peek(), theirs.peek()) {
            (Some(a), Some(b)) if a.0 < b.0 => mine.next(),
            (Some(_), None) => mine.next(),
            _ => theirs.next(),
        } {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(name);
            out.push_str("=\"");
            escape_label_value(value, &mut out);
            out.push('"');
        }
        out.push('}');
        out
    }

    /// Canonical text, `{a="1",b="x\"y"}`: Prometheus's exposition syntax with sorted names,
    /// so equal sets give equal strings. The empty set is `{}`.
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(2 + self.0.len() * 16);
        out.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"");
            escape_label_value(v, &mut out);
            out.push('"');
        }
        out.push('}');
        out
    }
}

/// Appends `value` escaped as in Prometheus's text format (`\\`, `\"`, `\n`).
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Reads canonical label text (`{a="1",b="x\"y"}`, as [`Labels::canonical`] writes it)
/// back into pairs; `None` if the text is not in that form.
pub fn parse_canonical(text: &str) -> Option<Vec<(String, String)>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut pairs = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        pairs.push((name.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_reads_back() {
        let labels =
            Labels::from_pairs([("b", "x\"y,z=\"w"), ("a", "line\nnext\\")]).expect("valid");
        let pairs = parse_canonical(&labels.canonical()).expect("parses");
        let back: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(back, labels.iter().collect::<Vec<_>>());
        assert_eq!(parse_canonical("{}"), Some(Vec::new()));
        assert_eq!(parse_canonical("{a=\"unterminated}"), None);
    }

    #[test]
    fn names() {
        assert!(is_valid_metric_name("online_users"));
        assert!(is_valid_metric_name("job:rate5m"));
        assert!(!is_valid_metric_name("online users"));
        assert!(!is_valid_metric_name("9lives"));
        assert!(!is_valid_metric_name(""));
        assert!(is_valid_label_name("queue"));
        assert!(!is_valid_label_name("__name__"));
        assert!(!is_valid_label_name("a-b"));
    }

    #[test]
    fn sorted_and_canonical() {
        let labels = Labels::from_pairs([("z", "1"), ("a", "x\"y\\\n")]).expect("valid");
        assert_eq!(labels.canonical(), r#"{a="x\"y\\\n",z="1"}"#);
        assert_eq!(Labels::new().canonical(), "{}");
        assert_eq!(
            Labels::from_pairs([("a", "1"), ("a", "2")]),
            Err(LabelsError::Duplicate("a".into()))
        );
    }

    #[test]
    fn canonical_with_owned_matches_set_owned() {
        let sets = [
            Labels::new(),
            Labels::from_pairs([("queue", "q\"1")]).expect("valid"),
            Labels::from_pairs([("a", "1"), ("probe", "mine"), ("z", "2")]).expect("valid"),
        ];
        let owned: [&[(&str, &str)]; 4] = [
            &[("probe", "p"), ("host", "h")],
            &[("check", "c"), ("probe", "p"), ("env", "prod")],
            &[("probe", "p"), ("probe", "extra")],
            &[],
        ];
        for labels in &sets {
            for pairs in owned {
                let mut slow = labels.clone();
                for (name, value) in pairs {
                    slow.set_owned(name, value);
                }
                assert_eq!(
                    labels.canonical_with_owned(pairs),
                    slow.canonical(),
                    "{labels:?} {pairs:?}"
                );
            }
        }
    }

    #[test]
    fn owned_labels_win_and_export_the_old_value() {
        let mut labels = Labels::from_pairs([("probe", "fake"), ("queue", "q")]).expect("valid");
        labels.set_owned("probe", "real");
        assert_eq!(labels.get("probe"), Some("real"));
        assert_eq!(labels.get("exported_probe"), Some("fake"));
        labels.set_owned("host", "h1");
        assert_eq!(
            labels.canonical(),
            r#"{exported_probe="fake",host="h1",probe="real",queue="q"}"#
        );
    }
}
