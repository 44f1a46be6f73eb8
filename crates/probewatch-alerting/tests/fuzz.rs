//! Rule files, templates and promtool test files against mutated and generated input: each
//! must load or fail with an error naming what is wrong, never panic, overflow the stack or
//! take unbounded memory or time. Runs briefly in every `cargo test`.

use std::collections::BTreeMap;
use std::path::Path;

use probewatch_alerting::rulefile;
use probewatch_alerting::template::Template;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const RULES: &str = include_str!("../../../examples/rules/probes.yml");
const TESTS: &str = include_str!("../../../examples/rules/probes_test.yml");

/// Text pieces that matter to YAML, PromQL and Go templates.
const PIECES: &[&str] = &[
    "\n",
    "  ",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "#",
    "&a",
    "*a",
    "!!str",
    "|",
    ">",
    "groups:",
    "rules:",
    "- alert: X",
    "- record: r",
    "expr: up",
    "for: 5m",
    "for: -1s",
    "interval: 0s",
    "keep_firing_for: 1y",
    "labels:",
    "annotations:",
    "{{ $value }}",
    "{{ $labels.x }}",
    "{{ humanize $value }}",
    "{{",
    "}}",
    "{{ printf \"%s\" }}",
    "(((((",
    ")))))",
    "1e400",
    "NaN",
    "\u{202E}",
    "\u{0}",
    "~",
    "null",
    "interval: 1ms",
    "eval_time: 100000000d",
    "values: '1+1x99999999999'",
    "values: '_x1000000000'",
    "input_series:",
    "exp_alerts:",
    "exp_samples:",
];

fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (any::<usize>(), prop::sample::select(PIECES), any::<bool>()),
        1..10,
    )
    .prop_map(move |edits| {
        let mut text = base.to_string();
        for (at, piece, insert) in edits {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if insert {
                text.insert_str(at, piece);
            } else {
                let mut end = (at + piece.len()).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, piece);
            }
        }
        text
    })
}

/// Runs on a thread with the PromQL engine's stack, as the daemon and the CLI do.
fn run(cases: u32, strategy: impl Strategy<Value = String> + Send + 'static, check: fn(&str)) {
    std::thread::Builder::new()
        .stack_size(probewatch_promql::limits::STACK_BYTES)
        .spawn(move || {
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(cases);
            TestRunner::new(Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            })
            .run(&strategy, |text| {
                check(&text);
                Ok(())
            })
            .expect("never panics");
        })
        .expect("spawn")
        .join()
        .expect("runner thread");
}

#[test]
fn mutated_rule_files_load_or_say_why() {
    run(500, mutated(RULES), |text| {
        if let Err(err) = rulefile::parse(Path::new("rules.yml"), text, 15_000) {
            assert!(
                err.to_string().contains("rules.yml"),
                "names the file: {err}"
            );
        }
    });
}

#[test]
fn templates_parse_and_render_or_say_why() {
    let strategy = prop_oneof![
        proptest::collection::vec(prop::sample::select(PIECES), 0..12).prop_map(|p| p.concat()),
        any::<String>(),
    ];
    run(1_000, strategy, |text| {
        if let Ok(template) = Template::parse(text) {
            let labels = BTreeMap::from([("x".to_string(), "\u{202E}y".to_string())]);
            for value in [0.0, f64::NAN, f64::INFINITY, -1e300, 1e300] {
                let _ = template.render(&labels, value);
            }
        }
    });
}

#[test]
fn mutated_promtool_test_files_finish_or_say_why() {
    run(150, mutated(TESTS), |text| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("probes.yml"), RULES).expect("rules");
        let path = dir.path().join("probes_test.yml");
        std::fs::write(&path, text).expect("tests");
        let _ = probewatch_alerting::unittest::run_file(&path);
    });
}

#[test]
fn promtool_tests_that_ask_for_unbounded_work_are_refused() {
    for (values, eval_time, interval, says) in [
        ("1+1x99999999999", "1m", "15s", "past 10000000 values"),
        ("_x99999999999", "1m", "15s", "past 10000000 values"),
        (
            "1 2 3",
            "100000d",
            "1ms",
            "rule evaluations; at most 1000000",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("probes.yml"), RULES).expect("rules");
        let path = dir.path().join("t.yml");
        std::fs::write(
            &path,
            format!(
                "rule_files: [probes.yml]\nevaluation_interval: {interval}\ntests:\n  - interval: 1m\n    \
                 input_series:\n      - series: 'up'\n        values: '{values}'\n    \
                 promql_expr_test:\n      - expr: up\n        eval_time: {eval_time}\n        exp_samples: []\n"
            ),
        )
        .expect("write");
        let started = std::time::Instant::now();
        let report = probewatch_alerting::unittest::run_file(&path);
        let text = format!("{report:?}");
        assert!(text.contains(says), "{values} {eval_time}: {text}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
