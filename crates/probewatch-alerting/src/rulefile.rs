//! Prometheus rule files: YAML with `groups`, each with `name`, optional `interval` and
//! `rules` (alerting rules with `alert`, `expr`, `for`, `keep_firing_for`, `labels`,
//! `annotations`; recording rules with `record`, `expr`, `labels`). Loading checks every
//! expression and template, and names the file, group and rule of anything wrong.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use probewatch_promql::Query;
use serde::Deserialize;

use crate::template::Template;

/// A rule file. Empty ones (`null`, `{}`, `groups:` or `rules:` with nothing under them)
/// are valid, as promtool takes them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileYaml {
    #[serde(default)]
    groups: Option<Vec<GroupYaml>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupYaml {
    name: String,
    interval: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    query_offset: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rules: Option<Vec<RuleYaml>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleYaml {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// What a rule does with its expression's result.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// An alerting rule.
    Alert {
        /// How long the condition must hold before the alert fires.
        for_ms: i64,
        /// How long the alert keeps firing after the condition stops holding.
        keep_firing_for_ms: i64,
        /// Annotation templates.
        annotations: Vec<(String, Template)>,
    },
    /// A recording rule: its result is stored as a new series named after the rule.
    Record,
}

/// One rule, checked and ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable identity for persisted state: group, name and position.
    pub key: String,
    /// `alert` or `record` name.
    pub name: String,
    /// The expression as written.
    pub expr: String,
    /// The planned expression.
    pub query: Query,
    /// Label templates added to the result (rule labels over group labels).
    pub labels: Vec<(String, Template)>,
    /// Alerting or recording.
    pub kind: RuleKind,
}

/// A rule group: rules evaluated in order, on one interval.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's name (unique within its file).
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Evaluation interval.
    pub interval_ms: i64,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// Metric names its rules read, or `None` when some rule may read any metric; used to
    /// evaluate the group as soon as ingest writes one of them.
    pub reads: Option<HashSet<String>>,
}

/// A rule file problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct RuleFileError {
    /// The file.
    pub file: String,
    /// What is wrong and where in the file.
    pub message: String,
}

fn valid_metric_name(name: &str) -> bool {
    probewatch_core::labels::is_valid_metric_name(name)
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses one rule file's text; `default_interval_ms` applies to groups without one.
pub fn parse(
    file: &Path,
    text: &str,
    default_interval_ms: i64,
) -> Result<Vec<Group>, RuleFileError> {
    let fail = |message: String| RuleFileError {
        file: file.display().to_string(),
        message,
    };
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    let parsed: FileYaml = if blank {
        FileYaml::default()
    } else {
        // Only the first YAML document counts, as in Prometheus (which warns about the rest).
        let mut documents = serde_saphyr::from_str_multiple::<FileYaml, Vec<FileYaml>>(text)
            .map_err(|e| fail(e.to_string()))?;
        if documents.len() > 1 {
            tracing::warn!(file = %file.display(),
                "rule file has several YAML documents; only the first is used, as in Prometheus");
        }
        documents.drain(..).next().unwrap_or_default()
    };
    let mut names = HashSet::new();
    let mut groups = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut cursor = 0usize;
    for g in parsed.groups.unwrap_or_default() {
        if g.name.is_empty() {
            return Err(fail("a group has an empty name".into()));
        }
        if !names.insert(g.name.clone()) {
            return Err(fail(format!("group {:?} is defined twice", g.name)));
        }
        if g.limit.is_some_and(|l| l > 0) || g.query_offset.is_some() {
            return Err(fail(format!(
                "group {:?}: limit and query_offset are not supported",
                g.name
            )));
        }
        let interval_ms = match &g.interval {
            Some(text) => probewatch_promql::parse_duration_ms(text)
                .map_err(|e| fail(format!("group {:?}: interval: {e}", g.name)))?,
            None => default_interval_ms,
        };
        if interval_ms <= 0 {
            return Err(fail(format!(
                "group {:?}: interval must be positive",
                g.name
            )));
        }
        let mut rules = Vec::new();
        let mut reads: Option<HashSet<String>> = Some(HashSet::new());
        for (i, r) in g.rules.unwrap_or_default().into_iter().enumerate() {
            // Where the rule is in the file, for messages: its `alert:`/`record:` line, and
            // its `expr:` line (PromQL errors carry no position of their own).
            let rule_line = r
                .alert
                .as_deref()
                .map(|n| ("alert", n))
                .or(r.record.as_deref().map(|n| ("record", n)))
                .and_then(|(key, n)| find_line(&lines, cursor, |l| is_key_line(l, key, n)));
            if let Some(line) = rule_line {
                cursor = line;
            }
            let is_expr = |l: &str| l.trim_start().trim_start_matches("- ").starts_with("expr:");
            let expr_line = rule_line.and_then(|start| {
                // `- expr:` just above the name (expr written first), else the next `expr:`.
                let above = start.checked_sub(2).and_then(|i| lines.get(i));
                match above {
                    Some(l) if l.trim_start().starts_with("- ") && is_expr(l) => Some(start - 1),
                    _ => find_line(&lines, start, is_expr),
                }
            });
            let (name, alert) = match (&r.alert, &r.record) {
                (Some(a), None) => (a.clone(), true),
                (None, Some(rec)) => (rec.clone(), false),
                _ => {
                    return Err(fail(format!(
                        "group {:?}, rule {}: exactly one of alert and record must be set",
                        g.name,
                        i + 1
                    )));
                }
            };
            let at = |what: String| {
                let line = if what.starts_with("expr") {
                    expr_line.or(rule_line)
                } else {
                    rule_line
                };
                let place = line.map(|l| format!("line {l}: ")).unwrap_or_default();
                fail(format!(
                    "{place}group {:?}, rule {} ({name}): {what}",
                    g.name,
                    i + 1
                ))
            };
            if alert && name.is_empty() {
                return Err(at("the alert name is empty".into()));
            }
            if !alert && !valid_metric_name(&name) {
                return Err(at(format!("invalid recording rule name {name:?}")));
            }
            let query = Query::parse(&r.expr).map_err(|e| at(format!("expr: {e}")))?;
            match (query.metric_names(), &mut reads) {
                (Some(names), Some(all)) => all.extend(names),
                (None, _) => reads = None,
                _ => {}
            }
            let mut label_map = g.labels.clone();
            label_map.extend(r.labels);
            let mut labels = Vec::new();
            for (k, v) in label_map {
                if !valid_label_name(&k) || k == "__name__" {
                    return Err(at(format!("invalid label name {k:?}")));
                }
                // Only an alerting rule's labels are templates; a recording rule's are
                // taken as written (Prometheus does not expand them).
                let value = if alert {
                    Template::parse(&v).map_err(|e| at(format!("label {k}: {e}")))?
                } else {
                    Template::literal(&v)
                };
                labels.push((k.clone(), value));
            }
            let duration = |field: &str, text: &Option<String>| -> Result<i64, RuleFileError> {
                match text {
                    Some(t) => probewatch_promql::parse_duration_ms(t)
                        .map_err(|e| at(format!("{field}: {e}"))),
                    None => Ok(0),
                }
            };
            let kind = if alert {
                let mut annotations = Vec::new();
                for (k, v) in r.annotations {
                    annotations.push((
                        k.clone(),
                        Template::parse(&v).map_err(|e| at(format!("annotation {k}: {e}")))?,
                    ));
                }
                RuleKind::Alert {
                    for_ms: duration("for", &r.for_)?,
                    keep_firing_for_ms: duration("keep_firing_for", &r.keep_firing_for)?,
                    annotations,
                }
            } else {
                if r.for_.is_some() || r.keep_firing_for.is_some() || !r.annotations.is_empty() {
                    return Err(at(
                        "for, keep_firing_for and annotations belong to alerting rules".into(),
                    ));
                }
                RuleKind::Record
            };
            rules.push(Rule {
                key: format!("{}\u{0}{name}\u{0}{i}", g.name),
                name,
                expr: r.expr,
                query,
                labels,
                kind,
            });
        }
        groups.push(Group {
            name: g.name,
            file: file.to_path_buf(),
            interval_ms,
            rules,
            reads,
        });
    }
    Ok(groups)
}

/// The 1-based number of the first line at or after line `from` (1-based) that `test`
/// accepts.
fn find_line(lines: &[&str], from: usize, test: impl Fn(&str) -> bool) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| test(l))
        .map(|(i, _)| i + 1)
}

/// Whether `line` is `key: name` (a list item or not, the name quoted or not).
fn is_key_line(line: &str, key: &str, name: &str) -> bool {
    let rest = line.trim_start().trim_start_matches("- ").trim_start();
    let Some(value) = rest
        .strip_prefix(key)
        .and_then(|r| r.trim_start().strip_prefix(':'))
    else {
        return false;
    };
    let value = value.split(" #").next().unwrap_or("").trim();
    value.trim_matches(|c| c == '"' || c == '\'') == name
}

/// Reads and parses rule files; group names must be unique across them.
pub fn load(files: &[PathBuf], default_interval_ms: i64) -> Result<Vec<Group>, RuleFileError> {
    let mut groups: Vec<Group> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| RuleFileError {
            file: file.display().to_string(),
            message: e.to_string(),
        })?;
        for g in parse(file, &text, default_interval_ms)? {
            if let Some(other) = groups.iter().find(|o| o.name == g.name) {
                return Err(RuleFileError {
                    file: file.display().to_string(),
                    message: format!(
                        "group {:?} is also defined in {}",
                        g.name,
                        other.file.display()
                    ),
                });
            }
            groups.push(g);
        }
    }
    Ok(groups)
}

/// Rule files with nothing to evaluate that promtool accepts.
pub const EMPTY_RULE_FILES: &[&str] = &[
    "",
    "# only a comment\n",
    "null\n",
    "~\n",
    "{}\n",
    "groups:\n",
    "groups: []\n",
    "groups:\n  - name: empty\n    rules:\n",
    "groups:\n  - name: empty\n    rules: []\n",
    "groups:\n  - name: empty\n",
];

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
groups:
  - name: probes
    interval: 30s
    rules:
      - alert: CheckCritical
        expr: probe_check_status == 2
        for: 3m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.probe }} {{ $labels.check }} is critical"
      - record: probe:check_status:max
        expr: max by (probe) (probe_check_status)
"#;

    #[test]
    fn loads_groups_and_rules() {
        let groups = parse(Path::new("r.yml"), GOOD, 15_000).expect("valid");
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!((g.interval_ms, g.rules.len()), (30_000, 2));
        assert!(matches!(
            g.rules[0].kind,
            RuleKind::Alert {
                for_ms: 180_000,
                ..
            }
        ));
        assert_eq!(
            g.reads.as_ref().map(|r| r.contains("probe_check_status")),
            Some(true)
        );
    }

    #[test]
    fn errors_name_the_place() {
        let cases = [
            (
                "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(\n",
                "line 5: group \"g\", rule 1 (A): expr",
            ),
            (
                "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        fro: 1m\n",
                "fro",
            ),
            (
                "groups:\n  - name: g\n    rules:\n      - record: bad-name\n        expr: up\n",
                "invalid recording rule name",
            ),
            (
                "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations:\n          s: \"{{ if 1 }}\"\n",
                "annotation s",
            ),
            ("groups:\n  - name: g\n  - name: g\n", "defined twice"),
        ];
        for (text, expected) in cases {
            let err = parse(Path::new("r.yml"), text, 15_000).expect_err(text);
            assert!(
                err.to_string().contains(expected),
                "{err} should mention {expected}"
            );
            assert!(err.to_string().starts_with("r.yml: "), "{err}");
        }
    }

    /// Empty rule files load, as promtool takes them (the e2e test runs promtool on the
    /// same texts).
    #[test]
    fn empty_rule_files_load() {
        for text in EMPTY_RULE_FILES {
            let groups = parse(Path::new("empty.yml"), text, 15_000)
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
            assert_eq!(rules, 0, "{text:?}");
        }
    }
}
