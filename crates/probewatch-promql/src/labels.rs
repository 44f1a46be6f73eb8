//! Label sets as PromQL sees them: sorted (name, value) pairs, the metric name stored as the
//! `__name__` label.

use std::fmt;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A series' identity: label pairs sorted by name, names unique, no empty values.
///
/// Shared behind an `Arc`: evaluation hands the same label set to every step and every
/// intermediate vector, so a clone is a reference count, and only a change copies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(std::sync::Arc<Vec<(String, String)>>);

impl Labels {
    /// Builds a label set from pairs in any order; later pairs win, empty values are dropped.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Labels {
        let mut labels = Labels::default();
        for (n, v) in pairs {
            labels.set(&n.into(), v.into());
        }
        labels
    }

    /// The pairs, sorted by name.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The value of `name`, or `""` when absent (PromQL treats the two alike).
    pub fn get(&self, name: &str) -> &str {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => &self.0[i].1,
            Err(_) => "",
        }
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: String) {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                std::sync::Arc::make_mut(&mut self.0).remove(i);
            }
            Ok(i) if self.0[i].1 == value => {}
            Ok(i) => std::sync::Arc::make_mut(&mut self.0)[i].1 = value,
            Err(_) if value.is_empty() => {}
            Err(i) => std::sync::Arc::make_mut(&mut self.0).insert(i, (name.to_string(), value)),
        }
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            std::sync::Arc::make_mut(&mut self.0).remove(i);
        }
    }

    /// The metric name, if any.
    pub fn metric_name(&self) -> Option<&str> {
        Some(self.get(METRIC_NAME)).filter(|n| !n.is_empty())
    }

    /// The same labels without the metric name.
    pub fn without_name(&self) -> Labels {
        let mut l = self.clone();
        l.remove(METRIC_NAME);
        l
    }

    /// Keeps only the labels `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        if self.0.iter().all(|(n, _)| keep(n)) {
            return;
        }
        std::sync::Arc::make_mut(&mut self.0).retain(|(n, _)| keep(n));
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A key for grouping: the values of the labels `include` selects (all others when
    /// `include` is false), each name and value followed by a separator byte that cannot
    /// occur in UTF-8 text.
    pub fn group_key(&self, names: &[String], include: bool) -> String {
        let mut key = String::new();
        for (n, v) in self.0.iter() {
            if names.iter().any(|x| x == n) == include {
                key.push_str(n);
                key.push('\u{ffff}');
                key.push_str(v);
                key.push('\u{ffff}');
            }
        }
        key
    }
}

impl fmt::Display for Labels {
    /// `name{a="b", c="d"}` as Prometheus prints a series.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for (n, v) in self.0.iter() {
            if n == METRIC_NAME {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_order_and_empty_removes() {
        let mut l = Labels::from_pairs([("b", "2"), ("a", "1"), (METRIC_NAME, "m")]);
        assert_eq!(l.to_string(), r#"m{a="1", b="2"}"#);
        l.set("a", String::new());
        l.set("c", "3".into());
        assert_eq!(l.to_string(), r#"m{b="2", c="3"}"#);
        assert_eq!(l.get("zz"), "");
        assert_eq!(l.without_name().to_string(), r#"{b="2", c="3"}"#);
    }
}
