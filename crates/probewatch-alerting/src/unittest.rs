//! `probewatch rules test`: rule unit tests in promtool's test-file format (`rule_files`,
//! `evaluation_interval`, `tests` with `input_series`, `alert_rule_test` and
//! `promql_expr_test`), so existing tests run unchanged. Input series are loaded into memory,
//! the rules are evaluated at every evaluation interval from 0 up to the last `eval_time`
//! (recording rules feeding later evaluations), and the firing alerts and expression results
//! are compared with the expectations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use probewatch_promql::notation::{parse_labels, parse_values};
use probewatch_promql::{Labels, MemorySource, Query, QueryOptions, Value};
use probewatch_store::AlertState;
use serde::Deserialize;

use std::sync::{Arc, RwLock};

use crate::engine::{Engine, EngineConfig};
use crate::template::{QuerySamples, TemplateEnv, TemplateQuery};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default, deserialize_with = "null_as_default")]
    rule_files: Vec<String>,
    evaluation_interval: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    group_eval_order: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    tests: Vec<TestGroup>,
    #[serde(default)]
    fuzzy_compare: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    name: Option<String>,
    interval: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    input_series: Vec<InputSeries>,
    #[serde(default, deserialize_with = "null_as_default")]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default, deserialize_with = "null_as_default")]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default, deserialize_with = "null_as_default")]
    external_labels: BTreeMap<String, String>,
    external_url: Option<String>,
    start_timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: Option<String>,
    #[serde(default)]
    alertname: String,
    #[serde(default, deserialize_with = "null_as_default")]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default, deserialize_with = "null_as_default")]
    exp_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    #[serde(default)]
    value: f64,
    histogram: Option<String>,
}

/// A list or map written with nothing under it (`input_series:` followed only by a
/// comment) is empty, as promtool reads it.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The outcome of one test file: the failures, each naming the test and what differed.
#[derive(Debug, Default)]
pub struct TestReport {
    /// Tests run.
    pub tests: usize,
    /// Failure messages.
    pub failures: Vec<String>,
}

fn duration(text: &str) -> Result<i64, String> {
    probewatch_promql::parse_duration_ms(text).map_err(|e| e.to_string())
}

/// An optional `eval_time`: promtool's default is 0.
fn eval_time(text: &Option<String>) -> Result<i64, String> {
    text.as_deref().map_or(Ok(0), duration)
}

/// Most rule evaluations one test may need (its last `eval_time` over the evaluation
/// interval).
pub const MAX_EVALUATIONS: i64 = 1_000_000;

/// `rule_files` as promtool resolves them: relative to the test file, globs expanded
/// (a pattern that matches nothing is skipped, as promtool skips it with a warning).
fn rule_files(base: &Path, patterns: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for pattern in patterns {
        let path = if Path::new(pattern).is_relative() {
            base.join(pattern)
        } else {
            PathBuf::from(pattern)
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(['*', '?', '[']) {
            out.push(path);
            continue;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        // A pattern that does not compile matches nothing, as an unmatched one does.
        let Ok(glob) = globset::Glob::new(&name).map(|g| g.compile_matcher()) else {
            continue;
        };
        let mut matched: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| glob.is_match(n)))
            .collect();
        matched.sort();
        out.extend(matched);
    }
    out
}

/// Runs the tests in `path`.
pub fn run_file(path: &Path) -> Result<TestReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: TestFile =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rule_files = rule_files(base, &file.rule_files);
    let eval_interval = match &file.evaluation_interval {
        Some(t) => duration(t)?,
        None => 60_000,
    };
    let mut groups =
        crate::rulefile::load(&rule_files, eval_interval).map_err(|e| e.to_string())?;
    // group_eval_order: the named groups first, in that order (a name given twice is an
    // error, as in promtool); the rest after them, in file order.
    let mut order: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in file.group_eval_order.iter().enumerate() {
        if order.insert(name, i).is_some() {
            return Err(format!(
                "{}: group name repeated in evaluation order: {name}",
                path.display()
            ));
        }
    }
    groups.sort_by_key(|g| order.get(g.name.as_str()).copied().unwrap_or(usize::MAX));
    let mut report = TestReport::default();
    for (n, test) in file.tests.iter().enumerate() {
        report.tests += 1;
        let name = test.name.clone().unwrap_or_else(|| format!("unnamed#{n}"));
        let interval = match &test.interval {
            Some(t) => duration(t)?,
            None => eval_interval,
        };
        if let Err(failures) = run_test(test, &groups, eval_interval, interval, file.fuzzy_compare)
        {
            for f in failures {
                report
                    .failures
                    .push(format!("{}: {name}: {f}", path.display()));
            }
        }
    }
    Ok(report)
}

/// `query` in the templates of a rule unit test: the test's series and what its rules
/// recorded so far.
struct TestQuery(Arc<RwLock<Arc<MemorySource>>>);

impl TemplateQuery for TestQuery {
    fn query(&self, expr: &str, at_ms: i64) -> Result<QuerySamples, String> {
        let source = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        let value = Query::parse(expr)
            .and_then(|q| q.instant(source.as_ref(), at_ms, &QueryOptions::default()))
            .map_err(|e| e.to_string())?;
        crate::template::query_samples(value)
    }
}

/// `start_timestamp`: RFC 3339 or Unix seconds.
fn start_time(text: Option<&str>) -> Result<i64, String> {
    let Some(text) = text else {
        return Ok(0);
    };
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => Ok((seconds * 1000.0).round() as i64),
        _ => probewatch_core::parse_time_ms(text)
            .ok_or_else(|| format!("start_timestamp {text:?} is not a time")),
    }
}

fn run_test(
    test: &TestGroup,
    groups: &[crate::Group],
    eval_interval: i64,
    interval: i64,
    fuzzy: bool,
) -> Result<(), Vec<String>> {
    let fail = |m: String| vec![m];
    let start = start_time(test.start_timestamp.as_deref()).map_err(fail)?;
    let mut loaded = MemorySource::new();
    for input in &test.input_series {
        let labels = parse_labels(&input.series).map_err(fail)?;
        let values = parse_values(&input.values).map_err(fail)?;
        loaded.add(
            &labels,
            values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (start + i as i64 * interval, v))),
        );
    }
    let source = Arc::new(RwLock::new(Arc::new(loaded)));
    // Checks sorted by time; rules evaluated at every interval up to each.
    let mut checks: Vec<(i64, Check<'_>)> = Vec::new();
    for a in &test.alert_rule_test {
        if a.alertname.is_empty() {
            return Err(fail(format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}",
                a.eval_time.as_deref().unwrap_or("0s")
            )));
        }
        checks.push((eval_time(&a.eval_time).map_err(fail)?, Check::Alert(a)));
    }
    for e in &test.promql_expr_test {
        checks.push((eval_time(&e.eval_time).map_err(fail)?, Check::Expr(e)));
    }
    checks.sort_by_key(|(t, _)| *t);
    // Rules run at least once, at the start, even with nothing to check: promtool does, so
    // a rule that fails to evaluate fails the test.
    if checks.is_empty() {
        checks.push((0, Check::Nothing));
    }
    // Rules run at every evaluation interval up to the last check: bound how many runs that
    // is, so a tiny interval and a far eval_time cannot spin for ever.
    if let Some((last, _)) = checks.last() {
        let runs = (last / eval_interval.max(1)).saturating_add(1);
        if eval_interval <= 0 || runs > MAX_EVALUATIONS {
            return Err(fail(format!(
                "eval_time {last} ms at an evaluation interval of {eval_interval} ms needs {runs} \
                 rule evaluations; at most {MAX_EVALUATIONS} are run"
            )));
        }
    }
    let config = EngineConfig {
        templates: TemplateEnv {
            external_labels: test.external_labels.clone(),
            external_url: test.external_url.clone().unwrap_or_default(),
            query: Some(Arc::new(TestQuery(source.clone()))),
        },
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(groups.to_vec(), config, Vec::new());
    let mut next_eval = 0i64;
    let mut failures = Vec::new();
    for (at, check) in checks {
        while next_eval <= at {
            let t = start + next_eval;
            for g in 0..engine.groups().len() {
                let current = source.read().unwrap_or_else(|e| e.into_inner()).clone();
                let mut outcome = engine.evaluate(g, t, current.as_ref(), &[]);
                drop(current);
                engine.apply(std::mem::take(&mut outcome.staged), t);
                let mut guard = source.write().unwrap_or_else(|e| e.into_inner());
                let writable = Arc::make_mut(&mut guard);
                for s in outcome.recorded {
                    let mut labels = Labels::from_pairs(
                        probewatch_core::labels::parse_canonical(&s.labels).unwrap_or_default(),
                    );
                    labels.set(probewatch_promql::labels::METRIC_NAME, s.metric.clone());
                    writable.add(&labels, [(s.time_ms, s.value)]);
                }
            }
            // promtool stops a test at the first rule that fails to evaluate.
            let errors: Vec<String> = engine
                .groups()
                .iter()
                .flat_map(|g| g.rules.iter())
                .filter_map(|r| {
                    let health = engine.health(&r.key);
                    let error = health
                        .last_error
                        .filter(|_| health.last_evaluation_ms == Some(t))?;
                    Some(format!(
                        "rule: {}, time: {}, err: {error}",
                        r.name,
                        probewatch_promql::format_duration_ms(next_eval)
                    ))
                })
                .collect();
            if !errors.is_empty() {
                failures.extend(errors);
                return Err(failures);
            }
            next_eval += eval_interval;
        }
        let result = match check {
            Check::Nothing => Ok(()),
            Check::Alert(a) => check_alerts(&engine, a),
            Check::Expr(e) => {
                let current = source.read().unwrap_or_else(|e| e.into_inner()).clone();
                check_expr(current.as_ref(), e, start + at, fuzzy)
            }
        };
        if let Err(f) = result {
            failures.push(f);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

enum Check<'a> {
    Nothing,
    Alert(&'a AlertTest),
    Expr(&'a ExprTest),
}

fn check_alerts(engine: &Engine, test: &AlertTest) -> Result<(), String> {
    let mut got: Vec<(BTreeMap<String, String>, BTreeMap<String, String>)> = engine
        .groups()
        .iter()
        .flat_map(|g| g.rules.iter())
        .filter(|r| r.name == test.alertname)
        .flat_map(|r| engine.alerts(&r.key))
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| (a.labels.clone(), a.annotations.clone()))
        .collect();
    let mut want: Vec<(BTreeMap<String, String>, BTreeMap<String, String>)> = test
        .exp_alerts
        .iter()
        .map(|e| {
            let mut labels = e.exp_labels.clone();
            labels.insert("alertname".into(), test.alertname.clone());
            (labels, e.exp_annotations.clone())
        })
        .collect();
    got.sort();
    want.sort();
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "alertname: {}, time: {}\n    exp: {want:?}\n    got: {got:?}",
            test.alertname,
            test.eval_time.as_deref().unwrap_or("0s")
        ))
    }
}

fn check_expr(source: &MemorySource, test: &ExprTest, at: i64, fuzzy: bool) -> Result<(), String> {
    let query = Query::parse(&test.expr).map_err(|e| format!("expr {:?}: {e}", test.expr))?;
    let value = query
        .instant(source, at, &QueryOptions::default())
        .map_err(|e| {
            format!(
                "expr {:?} at {}: {e}",
                test.expr,
                test.eval_time.as_deref().unwrap_or("0s")
            )
        })?;
    let mut got: Vec<(Labels, f64)> = match value {
        Value::Vector(v) => v.into_iter().map(|s| (s.labels, s.v)).collect(),
        Value::Scalar(_, v) => vec![(Labels::default(), v)],
        other => {
            return Err(format!(
                "expr {:?}: a {} cannot be compared with samples",
                test.expr,
                other.type_name()
            ));
        }
    };
    let mut want: Vec<(Labels, f64)> = Vec::new();
    for s in &test.exp_samples {
        if s.histogram.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(format!(
                "expr {:?}: native histogram samples are not supported",
                test.expr
            ));
        }
        let labels = if s.labels.trim().is_empty() {
            "{}"
        } else {
            s.labels.as_str()
        };
        want.push((parse_labels(labels)?, s.value));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let same = got.len() == want.len()
        && got.iter().zip(&want).all(|(g, w)| {
            // Exact, or one step apart under fuzzy_compare, as promtool compares; and a
            // last-digit difference of our own arithmetic (1e-12 relative) is not a failure.
            let close = if fuzzy {
                (g.1 - w.1).abs() <= (w.1.abs() * f64::EPSILON).max(f64::MIN_POSITIVE)
            } else {
                false
            };
            g.0 == w.0
                && (g.1 == w.1
                    || close
                    || (g.1.is_nan() && w.1.is_nan())
                    || (g.1 - w.1).abs() <= 1e-12 * w.1.abs().max(1.0))
        });
    if same {
        Ok(())
    } else {
        let show = |v: &[(Labels, f64)]| -> Vec<String> {
            v.iter().map(|(l, x)| format!("{l} {x}")).collect()
        };
        Err(format!(
            "expr: {:?}, time: {}\n    exp: {:?}\n    got: {:?}",
            test.expr,
            test.eval_time.as_deref().unwrap_or("0s"),
            show(&want),
            show(&got)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rule_files` patterns match in the test file's directory, as promtool's globs do; a
    /// plain name is taken as it is.
    #[test]
    fn rule_file_patterns_match_beside_the_test_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["r1.yml", "r2.yml", "other.yml"] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let found = rule_files(dir.path(), &["r[0-9].yml".into(), "other.yml".into()]);
        assert_eq!(
            found,
            [
                dir.path().join("r1.yml"),
                dir.path().join("r2.yml"),
                dir.path().join("other.yml")
            ]
        );
        assert!(rule_files(dir.path(), &["none*.yml".into()]).is_empty());
    }
}
