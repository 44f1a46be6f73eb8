//! Any XML (or JSON) through a mapping: a spool's `[spool.mapping]` says, with XPath
//! selectors, where a probe's name, host, time, checks and metrics are in its own schema,
//! so probes that write their own XML or JSON need no change (docs/format-mapping.md). For
//! JSON the same selectors are paths of keys (`/report/items`, `id`), as JSON pointers are.
//!
//! The document is read by roxmltree (a maintained read-only tree; DTDs refused, as our XML
//! parser refuses them). The selectors are the XPath 1.0 location paths such mappings use,
//! evaluated here: absolute (`/report/item`) and relative (`@id`, `status`, `.`, `..`)
//! paths, `//` for descendants, `*`, `text()`, and predicates `[n]`, `[@a]`, `[@a='v']`,
//! `[name='v']`. Anything else is refused when the configuration is read, naming the
//! selector. A selector for one value must find exactly one node (optional fields: at most
//! one); an error names the file, the selector and what it found.

use std::collections::BTreeMap;
use std::fmt;

use super::{FileContext, ParseLimits};
use crate::labels::{Labels, is_valid_metric_name};
use crate::model::{CheckResult, Metric, ProbeResult, Status, TimeSource};
use crate::reject::{Reject, RejectKind};
use crate::time::parse_time_ms;

/// A compiled selector, and the text it came from (for errors).
#[derive(Clone)]
pub struct Selector {
    text: String,
    absolute: bool,
    steps: Vec<Step>,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

#[derive(Clone, Debug)]
struct Step {
    /// `//` before it: any descendant (or self) first.
    descendants: bool,
    test: Test,
    predicates: Vec<Predicate>,
}

#[derive(Clone, Debug)]
enum Test {
    /// `.`
    Current,
    /// `..`
    Parent,
    /// An element name, or `*`.
    Element(Option<String>),
    /// `@name`
    Attribute(String),
    /// `text()`
    Text,
}

#[derive(Clone, Debug)]
enum Predicate {
    /// `[n]`, 1-based.
    Position(usize),
    /// `[@a]`
    HasAttribute(String),
    /// `[@a='v']`
    AttributeIs(String, String),
    /// `[name='v']`: a child element with this text.
    ChildIs(String, String),
}

impl Selector {
    /// Compiles `text`, or says what in it is not supported.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("an empty selector".into());
        }
        let absolute = trimmed.starts_with('/');
        let mut steps = Vec::new();
        let mut rest = trimmed;
        let mut first = true;
        while !rest.is_empty() {
            let descendants = if let Some(r) = rest.strip_prefix("//") {
                rest = r;
                true
            } else if let Some(r) = rest.strip_prefix('/') {
                rest = r;
                false
            } else if first {
                false
            } else {
                return Err(format!("{text:?}: expected '/' at {rest:?}"));
            };
            first = false;
            let end = step_end(rest);
            let (step, after) = rest.split_at(end);
            steps.push(parse_step(step, descendants).map_err(|e| format!("{text:?}: {e}"))?);
            rest = after;
        }
        if steps.is_empty() {
            return Err(format!("{text:?}: a path with no step"));
        }
        Ok(Selector {
            text: text.to_string(),
            absolute,
            steps,
        })
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Where the step starting `rest` ends: the next `/` outside a predicate.
fn step_end(rest: &str) -> usize {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth = depth.saturating_sub(1),
            (None, '/') if depth == 0 => return i,
            _ => {}
        }
    }
    rest.len()
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        && !s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
}

fn parse_step(step: &str, descendants: bool) -> Result<Step, String> {
    let (head, mut preds) = match step.find('[') {
        Some(i) => (&step[..i], &step[i..]),
        None => (step, ""),
    };
    let test = match head {
        "." => Test::Current,
        ".." => Test::Parent,
        "*" => Test::Element(None),
        "text()" => Test::Text,
        h if h.starts_with('@') && is_name(&h[1..]) => Test::Attribute(h[1..].to_string()),
        h if is_name(h) => Test::Element(Some(h.to_string())),
        h => {
            return Err(format!(
                "{h:?} is not a step this evaluator knows (name, *, @name, ., .., text())"
            ));
        }
    };
    let mut predicates = Vec::new();
    while !preds.is_empty() {
        let Some(inner_end) = preds.find(']') else {
            return Err(format!("unclosed predicate in {step:?}"));
        };
        let inner = preds[1..inner_end].trim();
        preds = &preds[inner_end + 1..];
        predicates.push(parse_predicate(inner)?);
    }
    Ok(Step {
        descendants,
        test,
        predicates,
    })
}

fn literal(text: &str) -> Option<String> {
    let text = text.trim();
    let q = text.chars().next()?;
    if (q == '\'' || q == '"') && text.len() >= 2 && text.ends_with(q) {
        Some(text[1..text.len() - 1].to_string())
    } else {
        None
    }
}

fn parse_predicate(inner: &str) -> Result<Predicate, String> {
    if let Ok(n) = inner.parse::<usize>() {
        return if n >= 1 {
            Ok(Predicate::Position(n))
        } else {
            Err("positions start at 1".into())
        };
    }
    if let Some((left, right)) = inner.split_once('=') {
        let value =
            literal(right).ok_or_else(|| format!("[{inner}]: compare with a quoted string"))?;
        let left = left.trim();
        return match left.strip_prefix('@') {
            Some(a) if is_name(a) => Ok(Predicate::AttributeIs(a.to_string(), value)),
            None if is_name(left) => Ok(Predicate::ChildIs(left.to_string(), value)),
            _ => Err(format!("[{inner}] is not a predicate this evaluator knows")),
        };
    }
    match inner.strip_prefix('@') {
        Some(a) if is_name(a) => Ok(Predicate::HasAttribute(a.to_string())),
        _ => Err(format!(
            "[{inner}] is not a predicate this evaluator knows ([n], [@a], [@a='v'], [name='v'])"
        )),
    }
}

/// What a selector finds: elements (and the document), or attribute and text values.
#[derive(Clone)]
enum Item<'a, 'i> {
    Node(roxmltree::Node<'a, 'i>),
    Value(String),
}

impl Item<'_, '_> {
    fn string(&self) -> String {
        match self {
            Item::Value(v) => v.clone(),
            Item::Node(n) => n
                .descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Item::Value(v) => format!("{v:?}"),
            Item::Node(n) if n.is_element() => format!("<{}>", n.tag_name().name()),
            Item::Node(_) => "a node".into(),
        }
    }
}

fn child_text_is(node: roxmltree::Node<'_, '_>, name: &str, value: &str) -> bool {
    node.children().any(|c| {
        c.is_element() && c.tag_name().name() == name && Item::Node(c).string().trim() == value
    })
}

fn evaluate<'a, 'i>(selector: &Selector, context: roxmltree::Node<'a, 'i>) -> Vec<Item<'a, 'i>> {
    let start = if selector.absolute {
        context.document().root()
    } else {
        context
    };
    let mut items = vec![Item::Node(start)];
    for step in &selector.steps {
        let mut next = Vec::new();
        for item in &items {
            let Item::Node(node) = item else { continue };
            let bases: Vec<roxmltree::Node<'a, 'i>> = if step.descendants {
                node.descendants().collect()
            } else {
                vec![*node]
            };
            let mut found: Vec<Item<'a, 'i>> = Vec::new();
            for base in bases {
                match &step.test {
                    Test::Current => found.push(Item::Node(base)),
                    Test::Parent => {
                        if let Some(p) = base.parent() {
                            found.push(Item::Node(p));
                        }
                    }
                    Test::Element(name) => found.extend(
                        base.children()
                            .filter(|c| c.is_element())
                            .filter(|c| name.as_ref().is_none_or(|n| c.tag_name().name() == n))
                            .map(Item::Node),
                    ),
                    Test::Attribute(name) => {
                        if let Some(v) = base.attribute(name.as_str()) {
                            found.push(Item::Value(v.to_string()));
                        }
                    }
                    Test::Text => found.extend(
                        base.children()
                            .filter(|c| c.is_text())
                            .filter_map(|c| c.text())
                            .map(|t| Item::Value(t.to_string())),
                    ),
                }
            }
            for predicate in &step.predicates {
                found = match predicate {
                    Predicate::Position(n) => found.into_iter().nth(n - 1).into_iter().collect(),
                    Predicate::HasAttribute(a) => found
                        .into_iter()
                        .filter(|i| matches!(i, Item::Node(n) if n.attribute(a.as_str()).is_some()))
                        .collect(),
                    Predicate::AttributeIs(a, v) => found
                        .into_iter()
                        .filter(|i| matches!(i, Item::Node(n) if n.attribute(a.as_str()) == Some(v.as_str())))
                        .collect(),
                    Predicate::ChildIs(c, v) => found
                        .into_iter()
                        .filter(|i| matches!(i, Item::Node(n) if child_text_is(*n, c, v)))
                        .collect(),
                };
            }
            next.extend(found);
        }
        // A node reached twice (through `//` or `..`) counts once.
        let mut seen = std::collections::HashSet::new();
        next.retain(|i| match i {
            Item::Node(n) => seen.insert(n.id()),
            Item::Value(_) => true,
        });
        items = next;
    }
    items
}

/// Where each part of a result is, in a spool's own XML schema.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// The probe's name (one value).
    pub probe: Selector,
    /// The host (at most one value).
    pub host: Option<Selector>,
    /// The time (RFC 3339 or Unix seconds; absent: the file's mtime).
    pub time: Option<Selector>,
    /// How often the probe reports (a duration such as 60s).
    pub interval: Option<Selector>,
    /// The check nodes; the check fields below are relative to each.
    pub checks: Option<Selector>,
    /// A check's name.
    pub check_name: Option<Selector>,
    /// A check's status, through `status_map`, else as a status word or 0–3.
    pub check_status: Option<Selector>,
    /// A check's message.
    pub check_message: Option<Selector>,
    /// A check's duration in seconds.
    pub check_duration: Option<Selector>,
    /// The probe's own status words: `{ "PASS" = "ok", "FAIL" = "critical" }`.
    pub status_map: BTreeMap<String, Status>,
    /// The metric nodes; the metric fields below are relative to each.
    pub metrics: Option<Selector>,
    /// A metric's name.
    pub metric_name: Option<Selector>,
    /// A metric's value.
    pub metric_value: Option<Selector>,
    /// A metric's labels: label name → selector of its value.
    pub metric_labels: BTreeMap<String, Selector>,
}

impl Mapping {
    /// Checks that what one field needs comes with it (a check needs a name and a status,
    /// a metric a name and a value).
    pub fn validate(&self) -> Result<(), String> {
        if self.checks.is_some() && (self.check_name.is_none() || self.check_status.is_none()) {
            return Err("checks needs check_name and check_status".into());
        }
        if self.metrics.is_some() && (self.metric_name.is_none() || self.metric_value.is_none()) {
            return Err("metrics needs metric_name and metric_value".into());
        }
        if self.checks.is_none() && self.metrics.is_none() {
            return Err("a mapping needs checks or metrics (or both)".into());
        }
        Ok(())
    }
}

/// What a selector found: a node to go on from, or a value.
enum Found<N> {
    Node(N),
    Value(String),
}

/// A document the selectors run over: XML (roxmltree) or JSON (serde_json).
trait Tree {
    type Node: Copy;
    fn root(&self) -> Self::Node;
    fn eval(&self, selector: &Selector, context: Self::Node) -> Vec<Found<Self::Node>>;
    /// A node's value (its text; a JSON scalar as written).
    fn string(&self, node: Self::Node) -> String;
    /// A node as an error shows it.
    fn describe(&self, node: Self::Node) -> String;
}

struct XmlTree<'a, 'i>(&'a roxmltree::Document<'i>);

impl<'a, 'i> Tree for XmlTree<'a, 'i> {
    type Node = roxmltree::Node<'a, 'i>;
    fn root(&self) -> Self::Node {
        self.0.root()
    }
    fn eval(&self, selector: &Selector, context: Self::Node) -> Vec<Found<Self::Node>> {
        evaluate(selector, context)
            .into_iter()
            .map(|i| match i {
                Item::Node(n) => Found::Node(n),
                Item::Value(v) => Found::Value(v),
            })
            .collect()
    }
    fn string(&self, node: Self::Node) -> String {
        Item::Node(node).string()
    }
    fn describe(&self, node: Self::Node) -> String {
        Item::Node(node).describe()
    }
}

/// JSON under the same selectors: a step is an object's key (`name` or `@name`), `*` every
/// value, `[n]` the n-th of what a step found, `[@k='v']`/`[k='v']` objects whose key `k`
/// is `v`; an array met by a step stands for its elements. `..` is not available (a JSON
/// value does not know its parent).
struct JsonTree<'v>(&'v serde_json::Value);

fn json_scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Null => Some(String::new()),
        _ => None,
    }
}

/// `v`, or its elements when it is an array.
fn spread(v: &serde_json::Value) -> Vec<&serde_json::Value> {
    match v {
        serde_json::Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

impl<'v> Tree for JsonTree<'v> {
    type Node = &'v serde_json::Value;
    fn root(&self) -> Self::Node {
        self.0
    }
    fn eval(&self, selector: &Selector, context: Self::Node) -> Vec<Found<Self::Node>> {
        let start = if selector.absolute { self.0 } else { context };
        let mut nodes: Vec<&'v serde_json::Value> = spread(start);
        for step in &selector.steps {
            let mut found: Vec<&'v serde_json::Value> = Vec::new();
            for node in &nodes {
                let bases: Vec<&'v serde_json::Value> = if step.descendants {
                    let mut all = Vec::new();
                    let mut stack = vec![*node];
                    while let Some(v) = stack.pop() {
                        all.push(v);
                        match v {
                            serde_json::Value::Object(map) => stack.extend(map.values()),
                            serde_json::Value::Array(items) => stack.extend(items.iter()),
                            _ => {}
                        }
                    }
                    all
                } else {
                    vec![*node]
                };
                for base in bases {
                    match (&step.test, base) {
                        (Test::Current | Test::Text, v) => found.push(v),
                        (
                            Test::Element(Some(k)) | Test::Attribute(k),
                            serde_json::Value::Object(map),
                        ) => {
                            if let Some(v) = map.get(k.as_str()) {
                                found.extend(spread(v));
                            }
                        }
                        (Test::Element(None), serde_json::Value::Object(map)) => {
                            found.extend(map.values().flat_map(spread));
                        }
                        _ => {}
                    }
                }
            }
            for predicate in &step.predicates {
                let key_is = |v: &serde_json::Value, k: &str, want: Option<&str>| {
                    v.as_object()
                        .and_then(|m| m.get(k))
                        .is_some_and(|x| want.is_none_or(|w| json_scalar(x).as_deref() == Some(w)))
                };
                found = match predicate {
                    Predicate::Position(n) => found.into_iter().nth(n - 1).into_iter().collect(),
                    Predicate::HasAttribute(a) => {
                        found.into_iter().filter(|v| key_is(v, a, None)).collect()
                    }
                    Predicate::AttributeIs(a, w) | Predicate::ChildIs(a, w) => found
                        .into_iter()
                        .filter(|v| key_is(v, a, Some(w)))
                        .collect(),
                };
            }
            nodes = found;
        }
        nodes.into_iter().map(Found::Node).collect()
    }
    fn string(&self, node: Self::Node) -> String {
        json_scalar(node).unwrap_or_else(|| node.to_string())
    }
    fn describe(&self, node: Self::Node) -> String {
        match json_scalar(node) {
            Some(s) => format!("{s:?}"),
            None if node.is_object() => "an object".into(),
            None => "an array".into(),
        }
    }
}

pub(super) fn parse(
    input: &[u8],
    file: FileContext<'_>,
    limits: &ParseLimits,
) -> Result<Vec<ProbeResult>, Reject> {
    let Some(mapping) = file.mapping else {
        return Err(Reject::new(
            RejectKind::Schema,
            "format \"mapping\" needs a [spool.mapping] table",
        ));
    };
    let text = super::utf8(input)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(Reject::new(RejectKind::Empty, "the file is empty"));
    }
    // JSON documents are read through the same selectors, as paths of keys.
    if text.trim_start().starts_with(['{', '[']) {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|err| Reject {
            kind: RejectKind::Syntax,
            line: u32::try_from(err.line()).ok().filter(|l| *l > 0),
            column: u32::try_from(err.column()).ok().map(|c| c.max(1)),
            detail: err
                .to_string()
                .rsplit_once(" at line ")
                .map_or_else(|| err.to_string(), |(m, _)| m.to_string()),
        })?;
        return read_result(&JsonTree(&value), mapping, file, limits).map(|r| vec![r]);
    }
    let doc = roxmltree::Document::parse(text).map_err(|err| {
        let pos = err.pos();
        let kind = match err {
            roxmltree::Error::DtdDetected => RejectKind::Dtd,
            _ => RejectKind::Syntax,
        };
        Reject {
            kind,
            line: Some(pos.row),
            column: Some(pos.col),
            detail: err.to_string(),
        }
    })?;
    read_result(&XmlTree(&doc), mapping, file, limits).map(|r| vec![r])
}

/// What a selector finds from `node`, as (value, how an error shows it) pairs.
fn values<T: Tree>(tree: &T, selector: &Selector, node: T::Node) -> Vec<(String, String)> {
    tree.eval(selector, node)
        .into_iter()
        .map(|f| match f {
            Found::Node(n) => (tree.string(n), tree.describe(n)),
            Found::Value(v) => (v.clone(), format!("{v:?}")),
        })
        .collect()
}

/// The nodes a selector finds (values are not nodes: a check or metric is a node).
fn nodes<T: Tree>(tree: &T, selector: &Option<Selector>) -> Vec<T::Node> {
    selector
        .as_ref()
        .map(|s| {
            tree.eval(s, tree.root())
                .into_iter()
                .filter_map(|f| match f {
                    Found::Node(n) => Some(n),
                    Found::Value(_) => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read_result<T: Tree>(
    tree: &T,
    mapping: &Mapping,
    file: FileContext<'_>,
    limits: &ParseLimits,
) -> Result<ProbeResult, Reject> {
    let root = tree.root();
    let probe = one(
        mapping.probe.as_str(),
        &values(tree, &mapping.probe, root),
        "the probe's name",
    )?;
    let optional = |sel: &Option<Selector>, what: &str| -> Result<Option<String>, Reject> {
        match sel {
            None => Ok(None),
            Some(s) => at_most_one(s.as_str(), &values(tree, s, root), what),
        }
    };
    let host = optional(&mapping.host, "the host")?.unwrap_or_default();
    let (time_ms, time_source) = match optional(&mapping.time, "the time")? {
        Some(t) => (
            parse_time_ms(&t).ok_or_else(|| {
                Reject::new(
                    RejectKind::Value,
                    format!(
                        "time {t:?} (selector {:?}) is neither RFC 3339 nor Unix seconds",
                        mapping.time.as_ref().map_or("", |s| s.as_str())
                    ),
                )
            })?,
            TimeSource::Declared,
        ),
        None => (file.mtime_ms, TimeSource::FileMtime),
    };
    let interval_ms = match optional(&mapping.interval, "the interval")? {
        Some(i) => Some(
            humantime::parse_duration(i.trim())
                .ok()
                .and_then(|d| i64::try_from(d.as_millis()).ok())
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    Reject::new(
                        RejectKind::Value,
                        format!("interval {i:?} is not a duration"),
                    )
                })?,
        ),
        None => None,
    };
    let mut result = ProbeResult {
        probe: probe.trim().to_string(),
        host: host.trim().to_string(),
        time_ms,
        time_source,
        interval_ms,
        checks: Vec::new(),
        metrics: Vec::new(),
    };
    let check_nodes = nodes(tree, &mapping.checks);
    let metric_nodes = nodes(tree, &mapping.metrics);
    if check_nodes.len() + metric_nodes.len() > limits.max_items {
        return Err(Reject::new(
            RejectKind::TooLarge,
            format!(
                "more than {} checks and metrics in one file",
                limits.max_items
            ),
        ));
    }
    for (i, node) in check_nodes.into_iter().enumerate() {
        let field = |sel: &Option<Selector>, what: &str| -> Result<Option<String>, Reject> {
            match sel {
                None => Ok(None),
                Some(s) => at_most_one(
                    s.as_str(),
                    &values(tree, s, node),
                    &format!("check {}: {what}", i + 1),
                ),
            }
        };
        let name = field(&mapping.check_name, "its name")?.map(|n| n.trim().to_string());
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Err(Reject::new(
                RejectKind::Schema,
                format!(
                    "check {}: selector {:?} found no name",
                    i + 1,
                    mapping.check_name.as_ref().map_or("", |s| s.as_str())
                ),
            ));
        };
        let status_text = field(&mapping.check_status, "its status")?.unwrap_or_default();
        let status_text = status_text.trim();
        let status = mapping
            .status_map
            .get(status_text)
            .copied()
            .or_else(|| Status::parse(status_text))
            .ok_or_else(|| {
                Reject::new(
                    RejectKind::Value,
                    format!(
                        "check {name:?}: status {status_text:?} (selector {:?}) is not in \
                         status_map and not ok, warning, critical, unknown or 0-3",
                        mapping.check_status.as_ref().map_or("", |s| s.as_str())
                    ),
                )
            })?;
        let message = field(&mapping.check_message, "its message")?
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        let duration_seconds = match field(&mapping.check_duration, "its duration")? {
            Some(d) => Some(
                super::xml::parse_float(&d)
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| {
                        Reject::new(
                            RejectKind::Value,
                            format!("check {name:?}: duration {d:?} is not seconds >= 0"),
                        )
                    })?,
            ),
            None => None,
        };
        result
            .push_check(CheckResult {
                name,
                status,
                duration_seconds,
                message,
            })
            .map_err(|message| Reject::new(RejectKind::Schema, message))?;
    }
    let (Some(name_sel), Some(value_sel)) = (&mapping.metric_name, &mapping.metric_value) else {
        return finish(result);
    };
    for (i, node) in metric_nodes.into_iter().enumerate() {
        let field = |s: &Selector, what: &str| {
            at_most_one(
                s.as_str(),
                &values(tree, s, node),
                &format!("metric {}: {what}", i + 1),
            )
        };
        let name = field(name_sel, "its name")?
            .unwrap_or_default()
            .trim()
            .to_string();
        if !is_valid_metric_name(&name) {
            return Err(Reject::new(
                RejectKind::Value,
                format!(
                    "metric {}: name {name:?} (selector {:?}) is not a Prometheus metric name",
                    i + 1,
                    name_sel.as_str()
                ),
            ));
        }
        let value_text = field(value_sel, "its value")?.unwrap_or_default();
        let value = super::xml::parse_float(&value_text).ok_or_else(|| {
            Reject::new(
                RejectKind::Value,
                format!(
                    "metric {name}: value {value_text:?} (selector {:?}) is not a number",
                    value_sel.as_str()
                ),
            )
        })?;
        let mut labels = Labels::new();
        for (label, sel) in &mapping.metric_labels {
            if let Some(v) = field(sel, &format!("label {label}"))? {
                labels
                    .insert(label.clone(), v.trim().to_string())
                    .map_err(|e| Reject::new(RejectKind::Value, format!("metric {name}: {e}")))?;
            }
        }
        result
            .push_metric(Metric {
                name,
                labels,
                value,
            })
            .map_err(|message| Reject::new(RejectKind::Schema, message))?;
    }
    finish(result)
}

fn finish(result: ProbeResult) -> Result<ProbeResult, Reject> {
    if result.probe.is_empty() {
        return Err(Reject::new(RejectKind::Schema, "the probe's name is empty"));
    }
    Ok(result)
}

/// The one value a selector must find.
fn one(selector: &str, found: &[(String, String)], what: &str) -> Result<String, Reject> {
    at_most_one(selector, found, what)?.ok_or_else(|| {
        Reject::new(
            RejectKind::Schema,
            format!("{what}: selector {selector:?} found nothing"),
        )
    })
}

/// The value a selector finds, if any; several is an error that lists what was found.
fn at_most_one(
    selector: &str,
    found: &[(String, String)],
    what: &str,
) -> Result<Option<String>, Reject> {
    match found {
        [] => Ok(None),
        [(value, _)] => Ok(Some(value.clone())),
        many => {
            let shown: Vec<&str> = many.iter().take(3).map(|(_, d)| d.as_str()).collect();
            Err(Reject::new(
                RejectKind::Schema,
                format!(
                    "{what}: selector {selector:?} found {} nodes ({}{}), expected one",
                    many.len(),
                    shown.join(", "),
                    if many.len() > 3 { ", …" } else { "" }
                ),
            ))
        }
    }
}
