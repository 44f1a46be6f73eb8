//! The PromQL engine against generated queries: sequences of real PromQL tokens (so most
//! reach the planner and the evaluator, not only the parser) and arbitrary text. Whatever
//! the query, parsing, planning and evaluating must end in a value or a `QueryError` — never
//! a panic, a stack overflow or unbounded memory (the guard's budget and deadline hold).
//! Runs on a thread with the stack the engine asks for, as the daemon's threads have.

use std::time::Duration;

use probewatch_promql::limits::STACK_BYTES;
use probewatch_promql::{Labels, MemorySource, Query, QueryOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const TOKENS: &[&str] = &[
    "up",
    "m",
    "up{job=\"a\"}",
    "m{a=~\"x|y\"}",
    "{__name__=~\".+\"}",
    "(",
    ")",
    "(",
    ")",
    "[5m]",
    "[1m:10s]",
    "[1h:]",
    "[0s]",
    "offset 1m",
    "offset -5m",
    "@ 100",
    "@ start()",
    "@ end()",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    "!=",
    ">",
    "<",
    ">=",
    "<=",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "on (a)",
    "ignoring (a)",
    "group_left",
    "group_right (b)",
    "by (a)",
    "without (a)",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "rate",
    "irate",
    "increase",
    "delta",
    "deriv",
    "predict_linear",
    "abs",
    "ceil",
    "clamp",
    "clamp_max",
    "histogram_quantile",
    "label_replace",
    "label_join",
    "absent",
    "absent_over_time",
    "changes",
    "resets",
    "sort",
    "sort_desc",
    "sort_by_label",
    "scalar",
    "vector",
    "time()",
    "timestamp",
    "day_of_week",
    "last_over_time",
    "quantile_over_time",
    "double_exponential_smoothing",
    "max_over_time",
    "count_over_time",
    "mad_over_time",
    "1",
    "0",
    "0.5",
    "-1",
    "1e308",
    "-Inf",
    "Inf",
    "NaN",
    "9e99",
    "0x10",
    "\"a\"",
    "\"$1\"",
    "\"(.*)\"",
    ",",
    "5m",
    "[",
    "]",
    "{",
    "}",
    ":",
    "a=\"b\"",
];

fn series_source() -> MemorySource {
    let mut source = MemorySource::default();
    for (name, a, b) in [
        ("up", "x", "1"),
        ("up", "y", "2"),
        ("m", "x", "1"),
        ("m", "z", "3"),
    ] {
        let labels = Labels::from_pairs([
            ("__name__", name.to_string()),
            ("a", a.to_string()),
            ("b", b.to_string()),
            ("job", "a".to_string()),
        ]);
        let points = (0..60i64).map(|i| {
            let v = match i % 13 {
                0 => f64::NAN,
                5 => -1.0,
                _ => (i * 7 % 11) as f64,
            };
            (i * 10_000, v)
        });
        source.add(&labels, points);
    }
    source
}

/// Parses, plans and evaluates `query` (instant and range) under a small budget.
fn evaluate(query: &str, source: &MemorySource) {
    let options = QueryOptions {
        max_samples: 200_000,
        timeout: Some(Duration::from_secs(2)),
        ..QueryOptions::default()
    };
    let Ok(parsed) = Query::parse(query) else {
        return;
    };
    let _ = parsed.metric_names();
    let _ = parsed.instant(source, 300_000, &options);
    let _ = parsed.range(source, 0, 600_000, 15_000, &options);
}

/// Runs the property on a thread with the engine's stack.
fn run<S: Strategy<Value = String> + 'static>(cases: u32, make: fn() -> S) {
    std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let strategy = make();
            let source = series_source();
            // PROPTEST_CASES asks for a longer run.
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(cases);
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            });
            runner
                .run(&strategy, |query| {
                    evaluate(&query, &source);
                    Ok(())
                })
                .expect("no query panics");
        })
        .expect("spawn")
        .join()
        .expect("the runner thread");
}

fn token_query() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop::sample::select(TOKENS), 1..24).prop_map(|t| t.join(" "))
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> + Clone {
    prop::sample::select(options)
}

/// Mostly valid PromQL, built from its grammar, so that planning and evaluation (not only
/// the parser) meet every kind of node, nested.
fn grammar_query() -> impl Strategy<Value = String> {
    const SELECTORS: &[&str] = &[
        "up",
        "m",
        "up{job=\"a\"}",
        "m{a=~\"x|y\"}",
        "{__name__=~\".+\"}",
        "up offset 1m",
        "m @ 100",
        "up{a!=\"x\"}",
        "nothing",
        "up offset -10m",
    ];
    const NUMBERS: &[&str] = &["1", "0", "-1", "0.5", "1e308", "Inf", "-Inf", "NaN", "9e99"];
    const RANGES: &[&str] = &["[5m]", "[1m]", "[30s]", "[1h]", "[0s]", "[10s] offset 1m"];
    const SUBQUERIES: &[&str] = &[
        "[5m:1m]",
        "[1m:]",
        "[10m:7s]",
        "[2m:1m] offset 30s",
        "[1h:5m] @ 300",
    ];
    const SIMPLE: &[&str] = &[
        "abs",
        "ceil",
        "floor",
        "sort",
        "sort_desc",
        "timestamp",
        "sgn",
        "exp",
        "ln",
        "sqrt",
        "absent",
        "scalar",
        "-",
        "day_of_week",
        "deg",
        "rad",
    ];
    const OVER_TIME: &[&str] = &[
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "changes",
        "resets",
        "max_over_time",
        "count_over_time",
        "last_over_time",
        "mad_over_time",
        "stddev_over_time",
        "absent_over_time",
        "present_over_time",
        "first_over_time",
        "ts_of_max_over_time",
    ];
    const AGGS: &[&str] = &[
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    ];
    const GROUPING: &[&str] = &["", " by (a)", " without (a)", " by ()", " by (__name__)"];
    const BINOPS: &[&str] = &[
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "==",
        "!=",
        "> bool",
        "<=",
        "and",
        "or",
        "unless",
        "atan2",
        "+ on (a)",
        "* ignoring (b)",
        "/ on (a) group_left",
        "- on (a) group_right (b)",
        "== bool on (job)",
        "or on ()",
    ];
    let leaf = prop_oneof![
        pick(SELECTORS).prop_map(String::from),
        pick(NUMBERS).prop_map(String::from),
        Just("vector(1)".to_string()),
        Just("time()".to_string()),
        (pick(OVER_TIME), pick(SELECTORS), pick(RANGES))
            .prop_map(|(f, s, r)| format!("{f}({s}{r})")),
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        prop_oneof![
            (pick(SIMPLE), inner.clone()).prop_map(|(f, e)| format!("{f}({e})")),
            (pick(OVER_TIME), inner.clone(), pick(SUBQUERIES))
                .prop_map(|(f, e, r)| format!("{f}(({e}){r})")),
            (pick(AGGS), pick(GROUPING), inner.clone())
                .prop_map(|(a, g, e)| format!("{a}{g} ({e})")),
            (
                pick(&["topk", "bottomk", "quantile", "limitk"]),
                pick(NUMBERS),
                inner.clone()
            )
                .prop_map(|(a, n, e)| format!("{a}({n}, {e})")),
            (inner.clone(), pick(BINOPS), inner.clone())
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|e| format!("({e})")),
            inner
                .clone()
                .prop_map(|e| format!("histogram_quantile(0.9, {e})")),
            inner
                .clone()
                .prop_map(|e| format!("label_replace({e}, \"dst\", \"$1\", \"a\", \"(.*)\")")),
            inner
                .clone()
                .prop_map(|e| format!("label_join({e}, \"d\", \",\", \"a\", \"b\")")),
            inner.clone().prop_map(|e| format!("clamp({e}, 0, 1)")),
            inner
                .clone()
                .prop_map(|e| format!("count_values(\"v\", {e})")),
            inner.clone().prop_map(|e| format!("vector(scalar({e}))")),
            inner
                .clone()
                .prop_map(|e| format!("sort_by_label({e}, \"a\")")),
            inner
                .clone()
                .prop_map(|e| format!("quantile_over_time(0.5, ({e})[5m:1m])")),
            inner
                .clone()
                .prop_map(|e| format!("predict_linear(({e})[5m:1m], 60)")),
            inner
                .clone()
                .prop_map(|e| format!("double_exponential_smoothing(({e})[5m:1m], 0.5, 0.5)")),
        ]
    })
}

#[test]
fn grammar_generated_queries_never_panic() {
    // About a third plan (the rest mix types PromQL refuses); those reach evaluation.
    run(1_500, grammar_query);
}

#[test]
fn token_sequences_never_panic() {
    run(1_000, token_query);
}

#[test]
fn arbitrary_text_never_panics() {
    run(1_000, any::<String>);
}

#[test]
fn deep_and_long_generated_queries_never_overflow() {
    run(200, || {
        (
            prop::sample::select(vec!["(", "abs(", "sum(", "-(", "rate("]),
            1usize..400,
        )
            .prop_map(|(open, depth)| format!("{}up{}", open.repeat(depth), ")".repeat(depth)))
    });
    run(100, || {
        (
            prop::sample::select(vec!["+", "or", "*", "^", "and on(a)"]),
            1usize..3_000,
        )
            .prop_map(|(op, n)| vec!["up"; n].join(&format!(" {op} ")))
    });
}
