//! Runs Prometheus's own PromQL test scripts (`../shared/peer-tests/promql/v3.14.0`, or the
//! directory in `PROBEWATCH_PROMQL_TESTS`) against the engine.
//!
//! Every `eval` is checked: its result, and (as upstream's runner does) every instant eval
//! again as a range query from t-1m to t+1m whose middle step must agree. A case that fails
//! must be listed in `tests/promql-skips.txt` with its reason; a listed case that passes is
//! an error too, so the list stays true. `PROMQL_REPORT=FILE` writes the per-file pass rates
//! (the table in docs/promql.md).
//!
//! Not compared: annotation expectations (`expect warn`/`info`), which this engine does not
//! produce, and the text of expected error messages (a failure must happen, its wording is
//! ours).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use probewatch_promql::labels::Labels;
use probewatch_promql::notation::{parse_labels, parse_values, split_series};
use probewatch_promql::{MemorySource, Query, QueryOptions, Value};

fn tests_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PROBEWATCH_PROMQL_TESTS") {
        return Some(PathBuf::from(dir));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest.join("../../../shared/peer-tests/promql/v3.14.0");
    dir.is_dir().then_some(dir)
}

/// The files the goal covers.
const GOAL_FILES: &[&str] = &[
    "aggregators",
    "at_modifier",
    "collision",
    "functions",
    "histograms",
    "literals",
    "name_label_dropping",
    "operators",
    "range_queries",
    "selectors",
    "staleness",
    "subquery",
    "trig_functions",
];

/// `1h30m`, `-10s`, `0`, `50m` → milliseconds.
fn duration_ms(text: &str) -> Result<i64, String> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let ms = if body.chars().all(|c| c.is_ascii_digit()) {
        body.parse::<i64>().map_err(|e| e.to_string())? * 1000
    } else if body.chars().all(|c| c == '0' || c.is_ascii_alphabetic()) {
        0
    } else {
        let d = promql_parser::util::parse_duration(body)?;
        i64::try_from(d.as_millis()).map_err(|e| e.to_string())?
    };
    Ok(if neg { -ms } else { ms })
}

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < 1e-6 * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < 1e-6
}

#[derive(Debug, Default)]
struct Expect {
    fail: bool,
    ordered: bool,
    string: Option<String>,
    /// `expect range vector from S to E step ST`
    range_vector: Option<(i64, i64, i64)>,
    lines: Vec<String>,
}

#[derive(Debug)]
enum Eval {
    Instant { at: i64 },
    Range { start: i64, end: i64, step: i64 },
}

#[derive(Debug)]
struct Case {
    line: usize,
    query: String,
    eval: Eval,
    expect: Expect,
}

/// Outcome of one case: `Ok(())` or why it failed.
type Outcome = Result<(), String>;

/// An expected instant result: a scalar, or the samples of a vector.
type ExpectedInstant = (Option<f64>, Vec<(Labels, f64)>);

/// An expected range result: per series, one value (or none) per step.
type ExpectedRange = Vec<(Labels, Vec<Option<f64>>)>;

fn parse_expected_instant(lines: &[String]) -> Result<ExpectedInstant, String> {
    let mut scalar = None;
    let mut vector = Vec::new();
    for line in lines {
        let (series, rest) = split_series(line);
        if rest.is_empty() {
            let v = parse_values(series)?;
            scalar = v.first().copied().flatten();
            continue;
        }
        let labels = parse_labels(series)?;
        let values = parse_values(rest)?;
        let Some(Some(v)) = values.first() else {
            return Err(format!("no value in {line:?}"));
        };
        vector.push((labels, *v));
    }
    Ok((scalar, vector))
}

fn parse_expected_range(lines: &[String]) -> Result<ExpectedRange, String> {
    lines
        .iter()
        .map(|line| {
            let (series, rest) = split_series(line);
            Ok((parse_labels(series)?, parse_values(rest)?))
        })
        .collect()
}

fn compare_matrix(
    got: &[probewatch_promql::Series],
    want: &[(Labels, Vec<Option<f64>>)],
    start: i64,
    step: i64,
) -> Outcome {
    let got_map: HashMap<&Labels, &Vec<(i64, f64)>> =
        got.iter().map(|s| (&s.labels, &s.points)).collect();
    for (labels, values) in want {
        let expected: Vec<(i64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (start + i as i64 * step, v)))
            .collect();
        if expected.is_empty() {
            continue;
        }
        let Some(points) = got_map.get(labels) else {
            return Err(format!("missing series {labels}"));
        };
        if points.len() != expected.len()
            || points
                .iter()
                .zip(&expected)
                .any(|(a, b)| a.0 != b.0 || !almost_equal(a.1, b.1))
        {
            return Err(format!(
                "series {labels}: got {points:?}, want {expected:?}"
            ));
        }
    }
    let wanted = want
        .iter()
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .count();
    let nonempty = got.iter().filter(|s| !s.points.is_empty()).count();
    if nonempty != wanted {
        let extra: Vec<String> = got
            .iter()
            .filter(|s| !want.iter().any(|(l, _)| *l == s.labels))
            .map(|s| s.labels.to_string())
            .collect();
        return Err(format!(
            "got {nonempty} series, want {wanted}; extra: {extra:?}"
        ));
    }
    Ok(())
}

fn compare_instant(value: &Value, expect: &Expect, t: i64) -> Outcome {
    if let Some(s) = &expect.string {
        return match value {
            Value::String(_, got) if got == s => Ok(()),
            other => Err(format!("want string {s:?}, got {other:?}")),
        };
    }
    if let Some((start, end, step)) = expect.range_vector {
        let Value::Matrix(m) = value else {
            return Err(format!("want a range vector, got {}", value.type_name()));
        };
        let want = parse_expected_range(&expect.lines)?;
        let _ = end;
        return compare_matrix(m, &want, start, step);
    }
    let (scalar, want) = parse_expected_instant(&expect.lines)?;
    match value {
        Value::Scalar(_, v) => match scalar {
            Some(w) if almost_equal(*v, w) => Ok(()),
            _ => Err(format!("got scalar {v}, want {:?} / {want:?}", scalar)),
        },
        Value::Vector(samples) => {
            if scalar.is_some() {
                return Err("want a scalar, got a vector".into());
            }
            if samples.len() != want.len() {
                let got: Vec<String> = samples
                    .iter()
                    .map(|s| format!("{} {}", s.labels, s.v))
                    .collect();
                return Err(format!(
                    "got {} samples {got:?}, want {}",
                    samples.len(),
                    want.len()
                ));
            }
            for (i, (labels, v)) in want.iter().enumerate() {
                let found = if expect.ordered {
                    samples.get(i).filter(|s| &s.labels == labels)
                } else {
                    samples.iter().find(|s| &s.labels == labels)
                };
                match found {
                    Some(s) if almost_equal(s.v, *v) && s.t == t => {}
                    Some(s) => return Err(format!("{labels}: got {} want {v}", s.v)),
                    None => {
                        return Err(format!(
                            "missing {labels} (ordered: {}); got {:?}",
                            expect.ordered,
                            samples
                                .iter()
                                .map(|s| s.labels.to_string())
                                .collect::<Vec<_>>()
                        ));
                    }
                }
            }
            Ok(())
        }
        other => Err(format!("unexpected result type {}", other.type_name())),
    }
}

/// The upstream runner's second check: an instant query again as a range query around `t`.
fn check_as_range(query: &Query, source: &MemorySource, t: i64, instant: &Value) -> Outcome {
    let options = QueryOptions::default();
    let Value::Matrix(m) = query
        .range(source, t - 60_000, t + 60_000, 60_000, &options)
        .map_err(|e| format!("as a range query: {e}"))?
    else {
        return Err("range query did not return a matrix".into());
    };
    let middle: Vec<(Labels, f64)> = m
        .iter()
        .filter_map(|s| {
            s.points
                .iter()
                .find(|p| p.0 == t)
                .map(|p| (s.labels.clone(), p.1))
        })
        .collect();
    let expected: Vec<(Labels, f64)> = match instant {
        Value::Scalar(_, v) => vec![(Labels::default(), *v)],
        Value::Vector(v) => v.iter().map(|s| (s.labels.clone(), s.v)).collect(),
        _ => return Ok(()),
    };
    if middle.len() != expected.len()
        || expected.iter().any(|(l, v)| {
            !middle
                .iter()
                .any(|(ml, mv)| ml == l && almost_equal(*mv, *v))
        })
    {
        return Err(format!(
            "as a range query, the middle step differs: {middle:?} vs {expected:?}"
        ));
    }
    Ok(())
}

fn run_case(case: &Case, source: &MemorySource) -> Outcome {
    let options = QueryOptions::default();
    let query = match Query::parse(&case.query) {
        Ok(q) => q,
        Err(e) if case.expect.fail => {
            let _ = e;
            return Ok(());
        }
        Err(e) => return Err(e.to_string()),
    };
    match case.eval {
        Eval::Instant { at } => {
            let result = query.instant(source, at, &options);
            match (result, case.expect.fail) {
                (Err(_), true) => Ok(()),
                (Ok(v), true) => Err(format!("expected a failure, got {v:?}")),
                (Err(e), false) => Err(e.to_string()),
                (Ok(v), false) => {
                    compare_instant(&v, &case.expect, at)?;
                    let uses_range_fns = ["start()", "end()", "range()", "step()"]
                        .iter()
                        .any(|f| case.query.contains(f));
                    if case.expect.string.is_none()
                        && case.expect.range_vector.is_none()
                        && !uses_range_fns
                    {
                        check_as_range(&query, source, at, &v)?;
                    }
                    Ok(())
                }
            }
        }
        Eval::Range { start, end, step } => {
            let result = query.range(source, start, end, step, &options);
            match (result, case.expect.fail) {
                (Err(_), true) => Ok(()),
                (Ok(v), true) => Err(format!("expected a failure, got {v:?}")),
                (Err(e), false) => Err(e.to_string()),
                (Ok(Value::Matrix(m)), false) => {
                    let want = parse_expected_range(&case.expect.lines)?;
                    compare_matrix(&m, &want, start, step)
                }
                (Ok(other), false) => Err(format!("range query gave {}", other.type_name())),
            }
        }
    }
}

/// Results of one file: (line, whether native histograms were loaded since the last
/// `clear`, outcome) per eval.
fn run_file(text: &str) -> Vec<(usize, bool, Outcome)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut source = MemorySource::new();
    let mut native = false;
    let mut results = Vec::new();
    let mut i = 0;
    // Is this line part of the command above (indented, not blank or a comment)?
    let indented = |l: &str| l.starts_with([' ', '\t']) && !l.trim().is_empty();
    while i < lines.len() {
        let line = lines[i].trim_end();
        let number = i + 1;
        i += 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut body: Vec<String> = Vec::new();
        while i < lines.len() && indented(lines[i]) {
            if !lines[i].trim_start().starts_with('#') {
                body.push(lines[i].trim().to_string());
            }
            i += 1;
        }
        if line == "clear" {
            source.clear();
            native = false;
            continue;
        }
        if line.starts_with("load_with_nhcb") || body.iter().any(|b| b.contains("{{")) {
            native = true;
        }
        // `load_with_nhcb` also makes native histograms of classic ones; this engine has
        // no native histograms, so only the classic series are loaded.
        if let Some(rest) = line
            .strip_prefix("load ")
            .or_else(|| line.strip_prefix("load_with_nhcb "))
        {
            let Ok(interval) = duration_ms(rest.trim()) else {
                continue;
            };
            for series_line in &body {
                let (series, values) = split_series(series_line);
                let (Ok(labels), Ok(values)) = (parse_labels(series), parse_values(values)) else {
                    continue;
                };
                source.add(
                    &labels,
                    values
                        .iter()
                        .enumerate()
                        .filter_map(|(n, v)| v.map(|v| (n as i64 * interval, v))),
                );
            }
            continue;
        }
        let (head, fail_alias, ordered_alias) = if let Some(r) = line.strip_prefix("eval_fail ") {
            (r, true, false)
        } else if let Some(r) = line.strip_prefix("eval_ordered ") {
            (r, false, true)
        } else if let Some(r) = line
            .strip_prefix("eval_warn ")
            .or_else(|| line.strip_prefix("eval_info "))
        {
            (r, false, false)
        } else if let Some(r) = line.strip_prefix("eval ") {
            (r, false, false)
        } else {
            results.push((number, native, Err(format!("unknown command {line:?}"))));
            continue;
        };
        let mut expect = Expect {
            fail: fail_alias,
            ordered: ordered_alias,
            ..Expect::default()
        };
        for b in &body {
            if let Some(e) = b.strip_prefix("expect ") {
                let e = e.trim();
                if e.starts_with("fail") {
                    expect.fail = true;
                } else if e == "ordered" {
                    expect.ordered = true;
                } else if let Some(s) = e.strip_prefix("string ") {
                    let s = s.trim();
                    expect.string = Some(s[1..s.len().saturating_sub(1)].to_string());
                } else if let Some(r) = e.strip_prefix("range vector from ") {
                    let parts: Vec<&str> = r.split_whitespace().collect();
                    if let [s, "to", end, "step", st] = parts[..]
                        && let (Ok(s), Ok(end), Ok(st)) =
                            (duration_ms(s), duration_ms(end), duration_ms(st))
                    {
                        expect.range_vector = Some((s, end, st));
                    }
                }
            } else {
                expect.lines.push(b.clone());
            }
        }
        let case = if let Some(r) = head.strip_prefix("instant at ") {
            let (at, query) = r.trim().split_once(' ').unwrap_or((r.trim(), ""));
            match duration_ms(at) {
                Ok(at) => Case {
                    line: number,
                    query: query.trim().to_string(),
                    eval: Eval::Instant { at },
                    expect,
                },
                Err(e) => {
                    results.push((number, native, Err(e)));
                    continue;
                }
            }
        } else if let Some(r) = head.strip_prefix("range from ") {
            let parts: Vec<&str> = r.splitn(6, ' ').collect();
            match parts[..] {
                [s, "to", e, "step", st, q] => {
                    match (duration_ms(s), duration_ms(e), duration_ms(st)) {
                        (Ok(start), Ok(end), Ok(step)) => Case {
                            line: number,
                            query: q.trim().to_string(),
                            eval: Eval::Range { start, end, step },
                            expect,
                        },
                        _ => {
                            results.push((number, native, Err(format!("bad range eval {line:?}"))));
                            continue;
                        }
                    }
                }
                _ => {
                    results.push((number, native, Err(format!("bad range eval {line:?}"))));
                    continue;
                }
            }
        } else {
            results.push((number, native, Err(format!("unknown eval {line:?}"))));
            continue;
        };
        if std::env::var("PROMQL_DEBUG").is_ok_and(|d| d == case.line.to_string()) {
            eprintln!("case {case:?}");
            if let Ok(q) = Query::parse(&case.query) {
                let end = match case.eval {
                    Eval::Instant { at } => at,
                    Eval::Range { end, .. } => end,
                };
                eprintln!(
                    "result: {:?}",
                    q.instant(&source, end, &QueryOptions::default())
                );
            }
        }
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&case, &source)))
                .unwrap_or_else(|_| Err("PANIC".into()));
        results.push((case.line, native, outcome));
    }
    results
}

/// `file:line reason` lines.
fn skips() -> BTreeMap<(String, usize), String> {
    let text = include_str!("promql-skips.txt");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, reason) = line.split_once(' ').unwrap_or((line, ""));
        if let Some((file, n)) = key.split_once(':')
            && let Ok(n) = n.parse()
        {
            out.insert((file.to_string(), n), reason.trim().to_string());
        }
    }
    out
}

#[test]
fn prometheus_promql_test_files() {
    let Some(dir) = tests_dir() else {
        eprintln!(
            "SKIPPED: Prometheus's PromQL test files were not found beside the project \
             (../shared/peer-tests/promql/v3.14.0); set PROBEWATCH_PROMQL_TESTS to run them"
        );
        return;
    };
    let skips = skips();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read test dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    let mut report =
        String::from("| file | passed | of | pass rate | in the goal |\n|---|---|---|---|---|\n");
    let mut unexpected = Vec::new();
    let mut stale_skips = Vec::new();
    let (mut goal_pass, mut goal_total) = (0usize, 0usize);
    for path in &files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).expect("read test file");
        let results = run_file(&text);
        let passed = results.iter().filter(|(_, _, o)| o.is_ok()).count();
        let in_goal = GOAL_FILES.contains(&name.as_str());
        if in_goal {
            goal_pass += passed;
            goal_total += results.len();
        }
        report.push_str(&format!(
            "| {name} | {passed} | {} | {:.1} % | {} |\n",
            results.len(),
            100.0 * passed as f64 / results.len().max(1) as f64,
            if in_goal { "yes" } else { "no" }
        ));
        for (line, native, outcome) in &results {
            let key = (format!("{name}.test"), *line);
            match (outcome, skips.contains_key(&key)) {
                (Err(e), false) => unexpected.push(format!(
                    "{name}.test:{line} {}{e}",
                    if *native { "[native data] " } else { "" }
                )),
                (Ok(()), true) => stale_skips.push(format!("{name}.test:{line}")),
                _ => {}
            }
        }
    }
    report.push_str(&format!(
        "| **goal files** | **{goal_pass}** | **{goal_total}** | **{:.1} %** | |\n",
        100.0 * goal_pass as f64 / goal_total.max(1) as f64
    ));
    eprintln!("{report}");
    if let Ok(path) = std::env::var("PROMQL_REPORT") {
        std::fs::write(path, &report).expect("write report");
    }
    if let Ok(path) = std::env::var("PROMQL_FAILURES") {
        std::fs::write(path, unexpected.join("\n")).expect("write failures");
    }
    assert!(
        unexpected.is_empty(),
        "{} cases fail and are not in tests/promql-skips.txt:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        stale_skips.is_empty(),
        "these skipped cases pass now; remove them from tests/promql-skips.txt:\n{}",
        stale_skips.join("\n")
    );
}
