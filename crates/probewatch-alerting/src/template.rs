//! Rule label and annotation templates as Prometheus expands them: Go's `text/template`
//! (through the `gotmpl` crate, a port that keeps Go's syntax and output) with Prometheus's
//! data and functions.
//!
//! A template sees `.Labels`, `.ExternalLabels`, `.ExternalURL` and `.Value`, and the
//! variables `$labels`, `$externalLabels`, `$externalURL` and `$value` that Prometheus
//! defines before the text. Besides Go's builtins (`printf`, `if`, `range`, `with`, `len`,
//! `index`, comparisons, …) it has Prometheus's functions: `query` (PromQL through our engine
//! at the evaluation time), `first`, `label`, `value`, `strvalue`, `sortByLabel`, `args`,
//! `humanize`, `humanize1024`, `humanizeDuration`, `humanizePercentage`,
//! `humanizeTimestamp`, `toTime`, `toDuration`, `now`, `parseDuration`, `title`, `toUpper`,
//! `toLower`, `match`, `reReplaceAll`, `safeHtml`, `stripPort`, `stripDomain`, `graphLink`,
//! `tableLink`, `urlQueryEscape`, `externalURL`, `pathPrefix`.
//!
//! Templates are parsed once, when the rule file loads (a syntax error or an unknown
//! function refuses the file, as promtool does). A template that fails while rendering gives
//! `<error expanding template: …>`, as in Prometheus. The functions that depend on the
//! evaluation (`query`, `now`, `externalURL`, `pathPrefix`) read it from a per-thread
//! [`RenderEnv`] set for the duration of one render.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{MissingKey, Value};

/// A query result as templates see it: each sample's labels (with `__name__`) and value.
pub type QuerySamples = Vec<(BTreeMap<String, String>, f64)>;

/// Runs a PromQL query for the template function `query`: the result's samples (labels with
/// `__name__`, value) at `at_ms`.
pub trait TemplateQuery: Send + Sync {
    /// Evaluates `expr` at `at_ms`; a range or string result is an error.
    fn query(&self, expr: &str, at_ms: i64) -> Result<QuerySamples, String>;
}

/// A PromQL result as templates see it: Prometheus's rule query function turns a scalar
/// into one sample without labels and refuses anything but a vector or a scalar.
pub fn query_samples(value: probewatch_promql::Value) -> Result<QuerySamples, String> {
    match value {
        probewatch_promql::Value::Vector(v) => Ok(v
            .into_iter()
            .map(|s| {
                let labels = s
                    .labels
                    .pairs()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (labels, s.v)
            })
            .collect()),
        probewatch_promql::Value::Scalar(_, v) => Ok(vec![(BTreeMap::new(), v)]),
        other => Err(format!(
            "rule result is not a vector or scalar but a {}",
            other.type_name()
        )),
    }
}

/// `query` over the store, for the daemon's rules.
pub struct StoreQuery {
    /// The store.
    pub store: Arc<dyn probewatch_store::Store>,
    /// The shared series index.
    pub index: Arc<probewatch_store::SeriesIndex>,
}

impl TemplateQuery for StoreQuery {
    fn query(&self, expr: &str, at_ms: i64) -> Result<QuerySamples, String> {
        let source = probewatch_store::StoreSource::new(self.store.as_ref(), &self.index);
        let value = probewatch_promql::Query::parse(expr)
            .and_then(|q| q.instant(&source, at_ms, &probewatch_promql::QueryOptions::default()))
            .map_err(|e| e.to_string())?;
        query_samples(value)
    }
}

/// What a render may read besides the alert: the configuration's external labels and URL,
/// and where `query` runs.
#[derive(Clone, Default)]
pub struct TemplateEnv {
    /// `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// `$externalURL`.
    pub external_url: String,
    /// Where `query` runs (none: `query` fails with an error saying so).
    pub query: Option<Arc<dyn TemplateQuery>>,
}

impl std::fmt::Debug for TemplateEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateEnv")
            .field("external_labels", &self.external_labels)
            .field("external_url", &self.external_url)
            .field("query", &self.query.is_some())
            .finish()
    }
}

/// The environment of the render in progress on this thread.
struct RenderEnv {
    env: TemplateEnv,
    at_ms: i64,
}

thread_local! {
    static CURRENT: RefCell<Option<RenderEnv>> = const { RefCell::new(None) };
}

/// What Prometheus puts before every rule template.
const DEFINITIONS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}\
                           {{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// Most `range` iterations one render may run (all loops together).
const MAX_RANGE_ITERATIONS: u64 = 100_000;

/// Most bytes a render may produce; longer output is an error.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// A parsed template.
#[derive(Clone)]
pub struct Template {
    source: String,
    /// `None` when the text has no action: it renders as itself.
    parsed: Option<Arc<gotmpl::Template>>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Template) -> bool {
        self.source == other.source
    }
}

impl Template {
    /// `text` as it is, never expanded (a recording rule's label value).
    pub fn literal(text: &str) -> Template {
        Template {
            source: text.to_string(),
            parsed: None,
        }
    }

    /// Parses `text`; the error says what is wrong where (Go's parser messages, and an
    /// unknown function named, as Go's parser names it).
    pub fn parse(text: &str) -> Result<Template, String> {
        if !text.contains("{{") {
            return Ok(Template {
                source: text.to_string(),
                parsed: None,
            });
        }
        let full = format!("{DEFINITIONS}{text}");
        let fail = |e: String| format!("template {text:?}: {e}");
        check_blocks(text).map_err(fail)?;
        let (mut body, defines) =
            gotmpl::parse::Parser::with_name(Some("__alert"), &full, "{{", "}}")
                .and_then(gotmpl::parse::Parser::parse)
                .map_err(|e| fail(e.to_string()))?;
        let known = known_functions();
        let mut trees: Vec<(String, gotmpl::parse::ListNode)> = vec![("__body".into(), {
            tree::prepare(&mut body, &known).map_err(fail)?;
            body
        })];
        for mut define in defines {
            tree::prepare(&mut define.body, &known).map_err(fail)?;
            trees.push((define.name.to_string(), define.body));
        }
        let mut parsed = gotmpl::Template::new("__alert")
            .funcs(functions())
            .missing_key(MissingKey::ZeroValue)
            .max_range_iters(MAX_RANGE_ITERATIONS)
            .parse("{{template \"__body\" .}}")
            .map_err(|e| fail(e.to_string()))?;
        for (name, tree) in trees {
            parsed = parsed.add_parse_tree(&name, tree);
        }
        Ok(Template {
            source: text.to_string(),
            parsed: Some(Arc::new(parsed)),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders with an alert's labels and value, no external labels and no `query`; what
    /// does not render gives Prometheus's `<error expanding template: …>`.
    pub fn render(&self, labels: &BTreeMap<String, String>, value: f64) -> String {
        self.render_in(labels, value, &TemplateEnv::default(), 0)
    }

    /// Renders at evaluation time `at_ms` in `env`; an error gives Prometheus's
    /// `<error expanding template: …>` text.
    pub fn render_in(
        &self,
        labels: &BTreeMap<String, String>,
        value: f64,
        env: &TemplateEnv,
        at_ms: i64,
    ) -> String {
        self.expand(labels, value, env, at_ms)
            .unwrap_or_else(|e| format!("<error expanding template: {e}>"))
    }

    /// Renders, or says why it could not.
    pub fn expand(
        &self,
        labels: &BTreeMap<String, String>,
        value: f64,
        env: &TemplateEnv,
        at_ms: i64,
    ) -> Result<String, String> {
        let Some(parsed) = &self.parsed else {
            return Ok(self.source.clone());
        };
        let data = map([
            ("Labels", string_map(labels)),
            ("ExternalLabels", string_map(&env.external_labels)),
            (
                "ExternalURL",
                Value::String(env.external_url.as_str().into()),
            ),
            ("Value", Value::Float(value)),
        ]);
        self.execute(parsed, &data, env, at_ms)
    }

    /// Renders a notification template (a templated webhook's body or header) with the
    /// notification as its data, as Alertmanager's templates see it: `.Status`,
    /// `.Receiver`, `.GroupLabels`, `.CommonLabels`, `.CommonAnnotations`, `.ExternalURL`
    /// and `.Alerts` (each with `.Status`, `.Labels`, `.Annotations`, `.StartsAt`,
    /// `.EndsAt`, `.GeneratorURL`, `.Fingerprint`).
    pub fn expand_notification(
        &self,
        payload: &crate::payload::GroupPayload,
    ) -> Result<String, String> {
        let Some(parsed) = &self.parsed else {
            return Ok(self.source.clone());
        };
        let alerts: Vec<Value> = payload
            .alerts
            .iter()
            .map(|a| {
                map([
                    ("Status", Value::String(a.status.as_str().into())),
                    ("Labels", string_map(&a.labels)),
                    ("Annotations", string_map(&a.annotations)),
                    ("StartsAt", Value::String(a.starts_at.as_str().into())),
                    ("EndsAt", Value::String(a.ends_at.as_str().into())),
                    (
                        "GeneratorURL",
                        Value::String(a.generator_url.as_str().into()),
                    ),
                    ("Fingerprint", Value::String(a.fingerprint.as_str().into())),
                ])
            })
            .collect();
        let data = map([
            ("Status", Value::String(payload.status.as_str().into())),
            ("Receiver", Value::String(payload.receiver.as_str().into())),
            ("GroupLabels", string_map(&payload.group_labels)),
            ("CommonLabels", string_map(&payload.common_labels)),
            ("CommonAnnotations", string_map(&payload.common_annotations)),
            (
                "ExternalURL",
                Value::String(payload.external_url.as_str().into()),
            ),
            ("Alerts", Value::List(Arc::from(alerts))),
        ]);
        let env = TemplateEnv {
            external_url: payload.external_url.clone(),
            ..TemplateEnv::default()
        };
        self.execute(parsed, &data, &env, 0)
    }

    /// Runs the parsed template over `data` in `env`, bounded in output.
    fn execute(
        &self,
        parsed: &gotmpl::Template,
        data: &Value,
        env: &TemplateEnv,
        at_ms: i64,
    ) -> Result<String, String> {
        let previous = CURRENT.with(|c| {
            c.borrow_mut().replace(RenderEnv {
                env: env.clone(),
                at_ms,
            })
        });
        let mut out = LimitedWriter::default();
        let result = parsed.execute_fmt(&mut out, data);
        CURRENT.with(|c| *c.borrow_mut() = previous);
        match result {
            Ok(()) => Ok(out.text),
            Err(_) if out.overflowed => Err(format!(
                "the expansion is longer than {MAX_OUTPUT_BYTES} bytes"
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Checks that every `if`, `range`, `with`, `define` and `block` has its `end` and every
/// `end` its opening, as Go's parser does (gotmpl 0.6 lets an unclosed block through).
fn check_blocks(text: &str) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let inner = &rest[start + 2..];
        // The action ends at the first `}}` outside a string or raw string.
        let (mut quote, mut escaped, mut end) = (None::<char>, false, None);
        let bytes: Vec<char> = inner.chars().collect();
        let mut offset = 0;
        for (i, c) in bytes.iter().enumerate() {
            match quote {
                Some(q) => {
                    if escaped {
                        escaped = false;
                    } else if *c == '\\' && q == '"' {
                        escaped = true;
                    } else if *c == q {
                        quote = None;
                    }
                }
                None if *c == '"' || *c == '`' || *c == '\'' => quote = Some(*c),
                None if *c == '}' && bytes.get(i + 1) == Some(&'}') => {
                    end = Some(offset);
                    break;
                }
                None => {}
            }
            offset += c.len_utf8();
        }
        let Some(end) = end else {
            return Err("unclosed action".into());
        };
        let action = inner[..end]
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        if !action.starts_with("/*") {
            let word = action
                .split(|c: char| c.is_whitespace() || c == '(')
                .next()
                .unwrap_or_default();
            match word {
                "if" | "range" | "with" | "define" | "block" => open.push(word),
                "end" if open.pop().is_none() => {
                    return Err("unexpected {{end}}".into());
                }
                _ => {}
            }
        }
        rest = &inner[end + 2..];
    }
    match open.last() {
        Some(word) => Err(format!("unexpected EOF: {{{{{word}}}}} has no {{{{end}}}}")),
        None => Ok(()),
    }
}

/// The names a template may call: Go's builtins and Prometheus's functions.
fn known_functions() -> std::collections::BTreeSet<String> {
    const GO_BUILTINS: [&str; 20] = [
        "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
        "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne", "break",
    ];
    GO_BUILTINS
        .iter()
        .map(|s| s.to_string())
        .chain(functions().into_keys())
        .collect()
}

/// What is done to a parsed template before it runs.
mod tree {
    use std::collections::BTreeSet;

    use gotmpl::parse::{CommandNode, Expr, ListNode, Node, PipeNode};

    /// The function every printed value goes through, so numbers print as Go prints them.
    pub(super) const PRINT: &str = "__goprint";

    /// Checks that every function and variable exists (Go's parser refuses unknown ones;
    /// gotmpl finds out only when it runs), and routes every printing action through
    /// [`PRINT`].
    pub(super) fn prepare(list: &mut ListNode, known: &BTreeSet<String>) -> Result<(), String> {
        walk(list, known, &mut vec!["$".to_string()])
    }

    /// `vars`: the variables in scope; a declaration adds to it until the end of the
    /// enclosing block, as in Go.
    fn walk(
        list: &mut ListNode,
        known: &BTreeSet<String>,
        vars: &mut Vec<String>,
    ) -> Result<(), String> {
        let depth = vars.len();
        for node in &mut list.nodes {
            match node {
                Node::Action(action) => {
                    check_pipe(&action.pipe, known, vars)?;
                    declare(&action.pipe, vars);
                    if action.pipe.decl.is_empty() {
                        let pos = action.pipe.pos;
                        action.pipe.commands.push(CommandNode {
                            pos,
                            args: vec![Expr::Identifier(pos, PRINT.into())],
                        });
                    }
                }
                Node::If(branch) | Node::Range(branch) | Node::With(branch) => {
                    check_pipe(&branch.pipe, known, vars)?;
                    let outer = vars.len();
                    declare(&branch.pipe, vars);
                    walk(&mut branch.body, known, vars)?;
                    if let Some(other) = &mut branch.else_body {
                        walk(other, known, vars)?;
                    }
                    vars.truncate(outer);
                }
                Node::Template(call) => {
                    if let Some(pipe) = &call.pipe {
                        check_pipe(pipe, known, vars)?;
                    }
                }
                Node::Define(define) => walk(&mut define.body, known, &mut vec!["$".into()])?,
                Node::List(inner) => walk(inner, known, vars)?,
                Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
            }
        }
        vars.truncate(depth);
        Ok(())
    }

    fn declare(pipe: &PipeNode, vars: &mut Vec<String>) {
        if !pipe.is_assign {
            vars.extend(pipe.decl.iter().map(|d| d.to_string()));
        }
    }

    fn check_pipe(
        pipe: &PipeNode,
        known: &BTreeSet<String>,
        vars: &[String],
    ) -> Result<(), String> {
        if pipe.is_assign
            && let Some(name) = pipe
                .decl
                .iter()
                .find(|d| !vars.iter().any(|v| v == d.as_str()))
        {
            return Err(format!("undefined variable {:?}", name.as_str()));
        }
        pipe.commands
            .iter()
            .flat_map(|c| c.args.iter())
            .try_for_each(|e| check_expr(e, known, vars))
    }

    fn check_expr(expr: &Expr, known: &BTreeSet<String>, vars: &[String]) -> Result<(), String> {
        match expr {
            Expr::Identifier(_, name) if !known.contains(name.as_str()) => {
                Err(format!("function {:?} not defined", name.as_str()))
            }
            Expr::Variable(_, name, _) if !vars.iter().any(|v| v == name.as_str()) => {
                Err(format!("undefined variable {:?}", name.as_str()))
            }
            Expr::Pipe(_, pipe) => check_pipe(pipe, known, vars),
            Expr::Chain(_, inner, _) => check_expr(inner, known, vars),
            _ => Ok(()),
        }
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(v, 'g', -1, 64)`): the shortest digits,
/// in exponent form when the exponent is below -4 or at least 6 (checked against promtool).
pub fn go_float(v: f64) -> String {
    if let Some(special) = go_special(v) {
        return special;
    }
    let e_form = format!("{v:e}");
    let (mantissa, exponent) = split_exponent(&e_form);
    if !(-4..6).contains(&exponent) {
        return go_exponent_form(mantissa, exponent);
    }
    format!("{v}")
}

/// How Go prints NaN, the infinities and the zeros.
fn go_special(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 { "+Inf" } else { "-Inf" }.into())
    } else if v == 0.0 {
        Some(if v.is_sign_negative() { "-0" } else { "0" }.into())
    } else {
        None
    }
}

/// Rust's `1.5e6` split into mantissa and exponent.
fn split_exponent(e_form: &str) -> (&str, i32) {
    let (mantissa, exponent) = e_form.split_once('e').unwrap_or((e_form, "0"));
    (mantissa, exponent.parse().unwrap_or(0))
}

/// Go's exponent form: `1.5e+06`, `1e-05` (at least two exponent digits).
fn go_exponent_form(mantissa: &str, exponent: i32) -> String {
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// Collects output up to [`MAX_OUTPUT_BYTES`], then fails the render; prints missing label
/// values as Go does for Prometheus's string maps.
#[derive(Default)]
struct LimitedWriter {
    text: String,
    overflowed: bool,
}

impl std::fmt::Write for LimitedWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // gotmpl prints a missing map key as Go prints a nil interface, `<no value>` (one
        // write of its own). Every map a Prometheus template reads is a Go
        // map[string]string, whose missing key is "" under missingkey=zero: print that.
        if s == "<no value>" {
            return Ok(());
        }
        if self.text.len() + s.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Map(Arc::new(
        entries
            .into_iter()
            .map(|(k, v)| (Arc::from(k), v))
            .collect(),
    ))
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(Arc::new(
        m.iter()
            .map(|(k, v)| (Arc::from(k.as_str()), Value::String(v.as_str().into())))
            .collect(),
    ))
}

fn sample_value(labels: BTreeMap<String, String>, value: f64) -> Value {
    map([
        ("Labels", string_map(&labels)),
        ("Value", Value::Float(value)),
    ])
}

type FnResult = gotmpl::Result<Value>;

fn err(message: impl Into<String>) -> gotmpl::TemplateError {
    gotmpl::TemplateError::Exec(message.into())
}

fn arg<'a>(name: &str, args: &'a [Value], i: usize) -> gotmpl::Result<&'a Value> {
    args.get(i)
        .ok_or_else(|| err(format!("wrong number of args for {name}: want {}", i + 1)))
}

fn text_arg(name: &str, args: &[Value], i: usize) -> gotmpl::Result<String> {
    match arg(name, args, i)? {
        Value::String(s) => Ok(s.to_string()),
        other => Err(err(format!(
            "{name}: argument {} is a {}, not a string",
            i + 1,
            other.type_name()
        ))),
    }
}

/// Prometheus's `ConvertToFloat`: numbers, and strings that parse as one.
fn to_float(name: &str, v: &Value) -> gotmpl::Result<f64> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Uint(u) => Ok(*u as f64),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .or_else(|_| go_special_float(s))
            .map_err(|_| err(format!("{name}: cannot convert {s:?} to a number"))),
        other => Err(err(format!(
            "{name}: cannot convert a {} to a number",
            other.type_name()
        ))),
    }
}

fn go_special_float(s: &str) -> Result<f64, ()> {
    match s.trim().to_ascii_lowercase().as_str() {
        "nan" => Ok(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
        "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
        _ => Err(()),
    }
}

/// A sample value (`query`'s elements) as a map, or an error naming the function.
fn sample_arg<'a>(name: &str, v: &'a Value) -> gotmpl::Result<&'a BTreeMap<Arc<str>, Value>> {
    match v {
        Value::Map(m) if m.contains_key("Labels") => Ok(m),
        other => Err(err(format!(
            "{name}: expected a sample (an element of a query result), got a {}",
            other.type_name()
        ))),
    }
}

fn sample_label(sample: &BTreeMap<Arc<str>, Value>, label: &str) -> String {
    match sample.get("Labels") {
        Some(Value::Map(labels)) => labels
            .get(label)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

fn with_env<T>(f: impl FnOnce(&RenderEnv) -> T) -> Option<T> {
    CURRENT.with(|c| c.borrow().as_ref().map(f))
}

/// Every function Prometheus gives templates (Go's builtins come with gotmpl).
fn functions() -> gotmpl::FuncMap {
    let mut m = gotmpl::FuncMap::new();
    let mut add = |name: &str, f: fn(&[Value]) -> FnResult| {
        m.insert(name.to_string(), Arc::new(f));
    };
    add(tree::PRINT, |args| match args.last() {
        Some(Value::Float(v)) => Ok(Value::String(go_float(*v).into())),
        Some(other) => Ok(other.clone()),
        None => Ok(Value::Nil),
    });
    add("query", |args| {
        let expr = text_arg("query", args, 0)?;
        let result = with_env(|r| match &r.env.query {
            Some(q) => q.query(&expr, r.at_ms),
            None => Err("query is not available here".to_string()),
        })
        .unwrap_or_else(|| Err("query is not available here".to_string()))
        .map_err(|e| err(format!("query {expr:?}: {e}")))?;
        Ok(Value::List(
            result
                .into_iter()
                .map(|(labels, v)| sample_value(labels, v))
                .collect(),
        ))
    });
    add("first", |args| match arg("first", args, 0)? {
        Value::List(items) => items
            .first()
            .cloned()
            .ok_or_else(|| err("first() called on vector with no elements")),
        other => Err(err(format!(
            "first: expected a query result, got a {}",
            other.type_name()
        ))),
    });
    add("label", |args| {
        let label = text_arg("label", args, 0)?;
        let sample = sample_arg("label", arg("label", args, 1)?)?;
        Ok(Value::String(sample_label(sample, &label).into()))
    });
    add("value", |args| {
        let sample = sample_arg("value", arg("value", args, 0)?)?;
        Ok(sample.get("Value").cloned().unwrap_or(Value::Nil))
    });
    add("strvalue", |args| {
        let sample = sample_arg("strvalue", arg("strvalue", args, 0)?)?;
        Ok(Value::String(sample_label(sample, "__value__").into()))
    });
    add("sortByLabel", |args| {
        let label = text_arg("sortByLabel", args, 0)?;
        match arg("sortByLabel", args, 1)? {
            Value::List(items) => {
                let mut sorted: Vec<Value> = items.to_vec();
                sorted.sort_by_key(|s| match s {
                    Value::Map(m) => sample_label(m, &label),
                    _ => String::new(),
                });
                Ok(Value::List(sorted.into()))
            }
            other => Err(err(format!(
                "sortByLabel: expected a query result, got a {}",
                other.type_name()
            ))),
        }
    });
    add("args", |args| {
        Ok(Value::Map(Arc::new(
            args.iter()
                .enumerate()
                .map(|(i, a)| (Arc::from(format!("arg{i}").as_str()), a.clone()))
                .collect(),
        )))
    });
    add("reReplaceAll", |args| {
        let pattern = text_arg("reReplaceAll", args, 0)?;
        let replacement = text_arg("reReplaceAll", args, 1)?;
        let text = text_arg("reReplaceAll", args, 2)?;
        let re = regex::Regex::new(&pattern)
            .map_err(|e| err(format!("reReplaceAll: pattern {pattern:?}: {e}")))?;
        Ok(Value::String(
            re.replace_all(&text, replacement.as_str()).as_ref().into(),
        ))
    });
    add("match", |args| {
        let pattern = text_arg("match", args, 0)?;
        let text = text_arg("match", args, 1)?;
        let re = regex::Regex::new(&pattern)
            .map_err(|e| err(format!("match: pattern {pattern:?}: {e}")))?;
        Ok(Value::Bool(re.is_match(&text)))
    });
    add("safeHtml", |args| {
        Ok(Value::String(text_arg("safeHtml", args, 0)?.into()))
    });
    add("title", |args| {
        Ok(Value::String(title(&text_arg("title", args, 0)?).into()))
    });
    add("toUpper", |args| {
        Ok(Value::String(
            text_arg("toUpper", args, 0)?.to_uppercase().into(),
        ))
    });
    add("toLower", |args| {
        Ok(Value::String(
            text_arg("toLower", args, 0)?.to_lowercase().into(),
        ))
    });
    add("graphLink", |args| {
        let expr = text_arg("graphLink", args, 0)?;
        Ok(Value::String(
            format!("/graph?g0.expr={}&g0.tab=0", query_escape(&expr)).into(),
        ))
    });
    add("tableLink", |args| {
        let expr = text_arg("tableLink", args, 0)?;
        Ok(Value::String(
            format!("/graph?g0.expr={}&g0.tab=1", query_escape(&expr)).into(),
        ))
    });
    add("urlQueryEscape", |args| {
        Ok(Value::String(
            query_escape(&text_arg("urlQueryEscape", args, 0)?).into(),
        ))
    });
    add("stripPort", |args| {
        let text = text_arg("stripPort", args, 0)?;
        Ok(Value::String(
            split_host_port(&text)
                .map_or(text.clone(), |(h, _)| h)
                .into(),
        ))
    });
    add("stripDomain", |args| {
        let text = text_arg("stripDomain", args, 0)?;
        let (host, port) = split_host_port(&text).unwrap_or((text.clone(), String::new()));
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(Value::String(text.into()));
        }
        let short = host.split('.').next().unwrap_or_default().to_string();
        Ok(Value::String(
            if port.is_empty() {
                short
            } else if short.contains(':') {
                format!("[{short}]:{port}")
            } else {
                format!("{short}:{port}")
            }
            .into(),
        ))
    });
    add("humanize", |args| {
        Ok(Value::String(
            humanize(to_float("humanize", arg("humanize", args, 0)?)?).into(),
        ))
    });
    add("humanize1024", |args| {
        Ok(Value::String(
            humanize1024(to_float("humanize1024", arg("humanize1024", args, 0)?)?).into(),
        ))
    });
    add("humanizeDuration", |args| {
        Ok(Value::String(
            humanize_duration(to_float(
                "humanizeDuration",
                arg("humanizeDuration", args, 0)?,
            )?)
            .into(),
        ))
    });
    add("humanizePercentage", |args| {
        let v = to_float("humanizePercentage", arg("humanizePercentage", args, 0)?)?;
        Ok(Value::String(format!("{}%", go_g4(v * 100.0)).into()))
    });
    add("humanizeTimestamp", |args| {
        let v = to_float("humanizeTimestamp", arg("humanizeTimestamp", args, 0)?)?;
        if !v.is_finite() {
            return Ok(Value::String(go_g4(v).into()));
        }
        Ok(Value::String(go_time(v)?.into()))
    });
    add("toTime", |args| {
        let v = to_float("toTime", arg("toTime", args, 0)?)?;
        if !v.is_finite() {
            return Err(err("toTime: value is NaN or Inf"));
        }
        Ok(Value::String(go_time(v)?.into()))
    });
    add("toDuration", |args| {
        let v = to_float("toDuration", arg("toDuration", args, 0)?)?;
        Ok(Value::String(go_duration(v).into()))
    });
    add("now", |_| {
        Ok(Value::Float(
            with_env(|r| r.at_ms as f64 / 1000.0).unwrap_or(0.0),
        ))
    });
    add("externalURL", |_| {
        Ok(Value::String(
            with_env(|r| r.env.external_url.clone())
                .unwrap_or_default()
                .into(),
        ))
    });
    add("pathPrefix", |_| {
        let url = with_env(|r| r.env.external_url.clone()).unwrap_or_default();
        // Go's url.URL.Path: what follows the host ("" when nothing does).
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        Ok(Value::String(path.into()))
    });
    add("parseDuration", |args| {
        let text = text_arg("parseDuration", args, 0)?;
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let ms = probewatch_promql::parse_duration_ms(body)
            .map_err(|e| err(format!("parseDuration: {e}")))?;
        let seconds = ms as f64 / 1000.0;
        Ok(Value::Float(if negative { -seconds } else { seconds }))
    });
    m
}

/// Go's `net.SplitHostPort`, for `stripPort` and `stripDomain`.
fn split_host_port(text: &str) -> Option<(String, String)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host.to_string(), port.to_string()));
    }
    let (host, port) = text.rsplit_once(':')?;
    if host.contains(':') {
        return None; // an IPv6 address without brackets has no port
    }
    Some((host.to_string(), port.to_string()))
}

/// Go's `url.QueryEscape`.
fn query_escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Title case as Prometheus's `title` does it (the first letter of each word upper-cased,
/// the rest left alone).
fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at_start = true;
    for c in text.chars() {
        if at_start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_start = !(c.is_alphanumeric() || c == '\'' || c == '_');
    }
    out
}

/// Go's `%.4g`: four significant digits, exponent form outside 1e-4 ≤ |v| < 1e4.
pub fn go_g4(v: f64) -> String {
    if let Some(special) = go_special(v) {
        return special;
    }
    // Round to 4 significant digits first: the exponent is the rounded value's.
    let formatted = format!("{v:.3e}");
    let (mantissa, exponent) = split_exponent(&formatted);
    if !(-4..4).contains(&exponent) {
        return go_exponent_form(&trim_zeros(mantissa), exponent);
    }
    let decimals = usize::try_from(3 - exponent).unwrap_or(0);
    trim_zeros(&format!("{v:.decimals$}"))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g4(v);
    }
    let mut x = v;
    if x.abs() >= 1.0 {
        let mut prefix = "";
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if x.abs() < 1000.0 {
                break;
            }
            prefix = p;
            x /= 1000.0;
        }
        return format!("{}{prefix}", go_g4(x));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if x.abs() >= 1.0 {
            break;
        }
        prefix = p;
        x *= 1000.0;
    }
    format!("{}{prefix}", go_g4(x))
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_g4(v);
    }
    let mut x = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if x.abs() < 1024.0 {
            break;
        }
        prefix = p;
        x /= 1024.0;
    }
    format!("{}{prefix}", go_g4(x))
}

/// prometheus/common's `HumanizeDuration`.
fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_g4(v);
    }
    if v == 0.0 {
        return format!("{}s", go_g4(v));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let whole = v as i64;
        let (days, hours, minutes, seconds) = (
            whole / 86_400,
            whole / 3600 % 24,
            whole / 60 % 60,
            whole % 60,
        );
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", go_g4(v))
        };
    }
    let mut x = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if x.abs() >= 1.0 {
            break;
        }
        prefix = p;
        x *= 1000.0;
    }
    format!("{}{prefix}s", go_g4(x))
}

/// Go's `time.Time.String()` in UTC for Unix seconds `v`: `2006-01-02 15:04:05.5 +0000 UTC`.
fn go_time(v: f64) -> gotmpl::Result<String> {
    let nanos = v * 1e9;
    if !(i64::MIN as f64..=i64::MAX as f64).contains(&nanos) {
        return Err(err(format!(
            "{v} cannot be represented as a nanoseconds timestamp since it overflows int64"
        )));
    }
    let t = jiff::Timestamp::from_nanosecond(nanos as i128)
        .map_err(|e| err(format!("time {v}: {e}")))?;
    let dt = jiff::tz::Offset::UTC.to_datetime(t);
    let mut out = dt.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let frac = dt.subsec_nanosecond();
    if frac != 0 {
        out.push_str(format!(".{frac:09}").trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    Ok(out)
}

/// Go's `time.Duration.String()` for `v` seconds: `1h2m3.5s`, `500ms`, `0s`.
fn go_duration(v: f64) -> String {
    let nanos = (v * 1e9) as i128;
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, size) = if n < 1_000 {
            ("ns", 1u128)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        let whole = n / size;
        let frac = n % size;
        let digits = format!("{frac:0width$}", width = (size.ilog10()) as usize);
        let frac = digits.trim_end_matches('0');
        return if frac.is_empty() {
            format!("{sign}{whole}{unit}")
        } else {
            format!("{sign}{whole}.{frac}{unit}")
        };
    }
    let seconds_total = n / 1_000_000_000;
    let frac = n % 1_000_000_000;
    let (h, m, s) = (
        seconds_total / 3600,
        seconds_total / 60 % 60,
        seconds_total % 60,
    );
    let mut out = String::from(sign);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    let frac = format!("{frac:09}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        out.push_str(&format!("{s}s"));
    } else {
        out.push_str(&format!("{s}.{frac}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, value: f64) -> String {
        let labels = BTreeMap::from([
            ("probe".to_string(), "chat".to_string()),
            ("check".to_string(), "login".to_string()),
            ("instance".to_string(), "web-1.example.com:9100".to_string()),
        ]);
        Template::parse(t)
            .expect("parses")
            .expand(&labels, value, &TemplateEnv::default(), 90_000)
            .unwrap_or_else(|e| format!("ERROR {e}"))
    }

    #[test]
    fn renders_labels_values_and_pipelines() {
        assert_eq!(
            render("{{ $labels.probe }}/{{$labels.check}} is {{ $value }}", 2.0),
            "chat/login is 2"
        );
        assert_eq!(render("{{ .Labels.probe }} {{ .Value }}", 0.5), "chat 0.5");
        assert_eq!(render("{{ $value | humanize }}", 1_234_567.0), "1.235M");
        assert_eq!(render("{{ humanize $value }}", 0.0123), "12.3m");
        assert_eq!(render("{{ $value | humanizePercentage }}", 0.256), "25.6%");
        assert_eq!(render("{{ printf \"%.2f\" $value }}", 1.23456), "1.23");
        assert_eq!(render("{{ $value | printf \"%.1f s\" }}", 2.26), "2.3 s");
        assert_eq!(
            render("{{ $value | humanizeDuration }}", 3725.0),
            "1h 2m 5s"
        );
        assert_eq!(render("{{ $value | humanizeDuration }}", 2.5), "2.5s");
        assert_eq!(render("{{ $value | humanize1024 }}", 2048.0), "2ki");
        assert_eq!(render("{{ $labels.missing }}", 1.0), "");
        assert_eq!(render("no actions", 1.0), "no actions");
        assert_eq!(render("{{ $value }}", 1e6), "1e+06");
    }

    #[test]
    fn go_control_flow_variables_and_whole_maps() {
        assert_eq!(
            render("{{ if gt $value 1.0 }}high{{ else }}low{{ end }}", 2.0),
            "high"
        );
        assert_eq!(
            render("{{ with $labels.probe }}probe {{ . }}{{ end }}", 0.0),
            "probe chat"
        );
        assert_eq!(
            render(
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                0.0
            ),
            "check=login;instance=web-1.example.com:9100;probe=chat;"
        );
        assert_eq!(
            render(
                "{{ $x := printf \"%s-%s\" $labels.probe $labels.check }}{{ $x }}",
                0.0
            ),
            "chat-login"
        );
        assert_eq!(
            render("{{ $labels }}", 0.0),
            "map[check:login instance:web-1.example.com:9100 probe:chat]"
        );
        assert_eq!(
            render("{{ $labels.instance | stripPort }}", 0.0),
            "web-1.example.com"
        );
        assert_eq!(
            render("{{ $labels.instance | stripDomain }}", 0.0),
            "web-1:9100"
        );
        assert_eq!(render("{{ title \"hello world\" }}", 0.0), "Hello World");
        assert_eq!(
            render(
                "{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}",
                0.0
            ),
            "web-1.example.com"
        );
        assert_eq!(
            render("{{ if match \"^web\" $labels.instance }}yes{{ end }}", 0.0),
            "yes"
        );
        assert_eq!(
            render("{{ tableLink \"up == 0\" }}", 0.0),
            "/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
        );
        assert_eq!(render("{{ (args 1 \"a\").arg1 }}", 0.0), "a");
        assert_eq!(
            render("{{ 1700000000.5 | humanizeTimestamp }}", 0.0),
            "2023-11-14 22:13:20.5 +0000 UTC"
        );
        assert_eq!(render("{{ 90.5 | toDuration }}", 0.0), "1m30.5s");
        assert_eq!(render("{{ now }}", 0.0), "90");
        assert_eq!(render("{{ parseDuration \"1h30m\" }}", 0.0), "5400");
    }

    #[test]
    fn query_runs_through_the_environment() {
        struct Fixed;
        impl TemplateQuery for Fixed {
            fn query(&self, expr: &str, at_ms: i64) -> Result<QuerySamples, String> {
                if expr == "bad(" {
                    return Err("parse error".into());
                }
                Ok(vec![
                    (BTreeMap::from([("job".into(), "b".into())]), at_ms as f64),
                    (BTreeMap::from([("job".into(), "a".into())]), 1.5),
                ])
            }
        }
        let env = TemplateEnv {
            external_labels: BTreeMap::from([("dc".into(), "eu1".into())]),
            external_url: "https://pw.example.com/probes".into(),
            query: Some(Arc::new(Fixed)),
        };
        let t = |text: &str| {
            Template::parse(text)
                .expect("parses")
                .render_in(&BTreeMap::new(), 0.0, &env, 42)
        };
        assert_eq!(t("{{ query \"up\" | first | value }}"), "42");
        assert_eq!(
            t(
                "{{ range query \"up\" | sortByLabel \"job\" }}{{ .Labels.job }}={{ .Value }} {{ end }}"
            ),
            "a=1.5 b=42 "
        );
        assert_eq!(
            t("{{ with query \"up\" }}{{ . | first | label \"job\" }}{{ end }}"),
            "b"
        );
        assert_eq!(
            t("{{ $externalLabels.dc }} {{ $externalURL }}"),
            "eu1 https://pw.example.com/probes"
        );
        assert_eq!(t("{{ pathPrefix }}"), "/probes");
        assert!(t("{{ query \"bad(\" }}").starts_with("<error expanding template: "));
    }

    #[test]
    fn refuses_what_does_not_parse_and_bounds_what_runs() {
        for bad in [
            "{{ $value",
            "{{ nosuchfunction $value }}",
            "{{ if }}",
            "{{ if 1 }}",
            "{{ end }}",
            "{{ range $labels }}{{ if . }}x{{ end }}",
            "{{ $label.instance }}",
            "{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let huge = Template::parse("{{ range $i, $x := $labels }}{{ end }}").expect("parses");
        assert_eq!(huge.render(&BTreeMap::new(), 0.0), "");
        let err = render("{{ first (args) }}", 0.0);
        assert!(err.starts_with("ERROR"), "{err}");
    }

    #[test]
    fn go_number_formatting() {
        for (v, want) in [
            (1234.5, "1234"),
            (12345.0, "1.234e+04"),
            (0.0001234, "0.0001234"),
            (0.00001234, "1.234e-05"),
            (1.0, "1"),
            (999.96, "1000"),
            (9999.6, "1e+04"),
        ] {
            assert_eq!(go_g4(v), want, "{v}");
        }
    }
}
