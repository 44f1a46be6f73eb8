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

use crate::engine::{Engine, EngineConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    name: Option<String>,
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    external_url: Option<String>,
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
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    labels: String,
    value: f64,
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

/// Most rule evaluations one test may need (its last `eval_time` over the evaluation
/// interval).
pub const MAX_EVALUATIONS: i64 = 1_000_000;

/// Runs the tests in `path`.
pub fn run_file(path: &Path) -> Result<TestReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: TestFile =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if !file.group_eval_order.is_empty() {
        return Err(format!(
            "{}: group_eval_order is not supported",
            path.display()
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let rule_files: Vec<PathBuf> = file
        .rule_files
        .iter()
        .map(|f| {
            let p = Path::new(f);
            if p.is_relative() {
                base.join(p)
            } else {
                p.to_path_buf()
            }
        })
        .collect();
    let eval_interval = match &file.evaluation_interval {
        Some(t) => duration(t)?,
        None => 60_000,
    };
    let groups = crate::rulefile::load(&rule_files, eval_interval).map_err(|e| e.to_string())?;
    let mut report = TestReport::default();
    for (n, test) in file.tests.iter().enumerate() {
        report.tests += 1;
        let name = test
            .name
            .clone()
            .unwrap_or_else(|| format!("test {}", n + 1));
        if let Err(failures) = run_test(test, &groups, eval_interval) {
            for f in failures {
                report
                    .failures
                    .push(format!("{}: {name}: {f}", path.display()));
            }
        }
    }
    Ok(report)
}

fn run_test(
    test: &TestGroup,
    groups: &[crate::Group],
    eval_interval: i64,
) -> Result<(), Vec<String>> {
    let fail = |m: String| vec![m];
    if !test.external_labels.is_empty() || test.external_url.is_some() {
        return Err(fail(
            "external_labels and external_url are not supported".into(),
        ));
    }
    let interval = match &test.interval {
        Some(t) => duration(t).map_err(fail)?,
        None => 60_000,
    };
    let mut source = MemorySource::new();
    for input in &test.input_series {
        let labels = parse_labels(&input.series).map_err(fail)?;
        let values = parse_values(&input.values).map_err(fail)?;
        source.add(
            &labels,
            values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as i64 * interval, v))),
        );
    }
    // Checks sorted by time; rules evaluated at every interval up to each.
    let mut checks: Vec<(i64, Check<'_>)> = Vec::new();
    for a in &test.alert_rule_test {
        checks.push((duration(&a.eval_time).map_err(fail)?, Check::Alert(a)));
    }
    for e in &test.promql_expr_test {
        checks.push((duration(&e.eval_time).map_err(fail)?, Check::Expr(e)));
    }
    checks.sort_by_key(|(t, _)| *t);
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
    let mut engine = Engine::new(groups.to_vec(), EngineConfig::default(), Vec::new());
    let mut next_eval = 0i64;
    let mut failures = Vec::new();
    for (at, check) in checks {
        while next_eval <= at {
            for g in 0..engine.groups().len() {
                let mut outcome = engine.evaluate(g, next_eval, &source, &[]);
                engine.apply(std::mem::take(&mut outcome.staged), next_eval);
                for s in outcome.recorded {
                    let mut labels = Labels::from_pairs(
                        probewatch_core::labels::parse_canonical(&s.labels).unwrap_or_default(),
                    );
                    labels.set(probewatch_promql::labels::METRIC_NAME, s.metric.clone());
                    source.add(&labels, [(s.time_ms, s.value)]);
                }
            }
            next_eval += eval_interval;
        }
        let result = match check {
            Check::Alert(a) => check_alerts(&engine, a),
            Check::Expr(e) => check_expr(&source, e, at),
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
            test.alertname, test.eval_time
        ))
    }
}

fn check_expr(source: &MemorySource, test: &ExprTest, at: i64) -> Result<(), String> {
    let query = Query::parse(&test.expr).map_err(|e| format!("expr {:?}: {e}", test.expr))?;
    let value = query
        .instant(source, at, &QueryOptions::default())
        .map_err(|e| format!("expr {:?} at {}: {e}", test.expr, test.eval_time))?;
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
        want.push((parse_labels(&s.labels)?, s.value));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let same = got.len() == want.len()
        && got.iter().zip(&want).all(|(g, w)| {
            g.0 == w.0
                && (g.1 == w.1
                    || (g.1.is_nan() && w.1.is_nan())
                    || (g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0))
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
            test.eval_time,
            show(&want),
            show(&got)
        ))
    }
}
