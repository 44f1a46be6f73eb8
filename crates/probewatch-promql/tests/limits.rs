//! The query guards end to end through the public API: trees at the depth limits evaluate
//! on a thread with the stack the engine asks for (a stack overflow would abort this test
//! binary), trees past them are refused before parsing, and runaway evaluations stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use probewatch_promql::limits::{MAX_NESTING, MAX_OPERATORS, STACK_BYTES};
use probewatch_promql::{Labels, MemorySource, Query, QueryError, QueryOptions, Value};

/// Runs `f` on a thread with the engine's stack, as the daemon's threads have.
fn on_query_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic")
}

fn scalar(query: &str) -> Result<f64, QueryError> {
    let query = query.to_string();
    on_query_stack(move || {
        let value = Query::parse(&query)?.instant(
            &MemorySource::default(),
            1_000,
            &QueryOptions::default(),
        )?;
        match value {
            Value::Scalar(_, v) => Ok(v),
            Value::Vector(v) if v.len() == 1 => Ok(v[0].v),
            other => panic!("unexpected {other:?}"),
        }
    })
}

#[test]
fn trees_at_the_limits_evaluate_and_deeper_ones_are_refused() {
    let n = MAX_NESTING;
    assert_eq!(
        scalar(&format!("{}7{}", "(".repeat(n), ")".repeat(n))),
        Ok(7.0)
    );
    let abs = format!("{}vector(-2){}", "abs(".repeat(n - 1), ")".repeat(n - 1));
    assert_eq!(scalar(&abs), Ok(2.0));
    assert_eq!(
        scalar(&vec!["1"; MAX_OPERATORS + 1].join(" + ")),
        Ok(1001.0)
    );
    assert_eq!(scalar(&format!("{}3", "-".repeat(MAX_OPERATORS))), Ok(3.0));
    assert_eq!(scalar(&vec!["1"; MAX_OPERATORS + 1].join(" ^ ")), Ok(1.0));

    for deep in [
        format!("{}1{}", "(".repeat(2_500), ")".repeat(2_500)),
        format!("{}vector(1){}", "abs(".repeat(2_000), ")".repeat(2_000)),
        vec!["1"; 100_000].join("+"),
        format!("{}1", "-".repeat(100_000)),
        // Unbalanced: never reaches the parser either.
        "(".repeat(100_000),
    ] {
        match scalar(&deep) {
            Err(QueryError::TooComplex(message)) => assert!(
                message.contains("at most"),
                "the error says the limit: {message}"
            ),
            other => panic!("{} bytes deep: {other:?}", deep.len()),
        }
    }
}

#[test]
fn runaway_subqueries_stop_at_the_sample_budget_or_the_deadline() {
    let query = Query::parse("count_over_time(vector(1)[1000d:1ms])").expect("parses");
    let options = QueryOptions {
        max_samples: 200_000,
        ..QueryOptions::default()
    };
    let started = Instant::now();
    let result = query.instant(&MemorySource::default(), 86_400_000_000, &options);
    assert_eq!(result, Err(QueryError::TooManySamples));
    assert!(started.elapsed() < Duration::from_secs(20));

    let options = QueryOptions {
        timeout: Some(Duration::from_millis(200)),
        ..QueryOptions::default()
    };
    let started = Instant::now();
    let result = query.instant(&MemorySource::default(), 86_400_000_000, &options);
    assert_eq!(result, Err(QueryError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_cancelled_query_stops() {
    let query = Query::parse("count_over_time(vector(1)[1000d:1ms])").expect("parses");
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        flag.store(true, Ordering::Relaxed);
    });
    let options = QueryOptions::default();
    let guard = options.guard().with_cancel(cancel);
    let result = query.instant_guarded(&MemorySource::default(), 86_400_000_000, &options, guard);
    assert_eq!(result, Err(QueryError::Canceled));
}

#[test]
fn times_and_durations_outside_sane_bounds_are_refused() {
    let source = MemorySource::default();
    let options = QueryOptions::default();
    let query = Query::parse("vector(1)").expect("parses");
    let err = query
        .range(
            &source,
            -9_000_000_000_000_000,
            9_000_000_000_000_000,
            1,
            &options,
        )
        .expect_err("out of range");
    assert!(err.to_string().contains("out of range"), "{err}");
    for text in [
        "up offset 1000000y",
        "rate(up[300y])",
        "up @ 1e15",
        "max_over_time(up[1d:300y])",
    ] {
        let err = Query::parse(text).expect_err(text);
        assert!(err.to_string().contains("out of range"), "{text}: {err}");
    }
    // A step so large that the next step passes i64 ends the range after one point.
    let query = Query::parse("vector(1)").expect("parses");
    match query.range(&source, 1_000, 1_000, i64::MAX, &options) {
        Ok(probewatch_promql::Value::Matrix(m)) => assert_eq!(m[0].points, [(1_000, 1.0)]),
        other => panic!("{other:?}"),
    }
    // Offsets near the limit still evaluate without overflow.
    let mut source = MemorySource::default();
    source.add(&Labels::from_pairs([("__name__", "up")]), vec![(0, 1.0)]);
    let query = Query::parse("up offset -290y").expect("parses");
    assert!(query.instant(&source, 0, &options).is_ok());
}

#[test]
fn a_selector_past_the_budget_is_refused_while_loading() {
    let mut source = MemorySource::default();
    for i in 0..10 {
        source.add(
            &Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())]),
            (0..1_000i64).map(|t| (t * 1_000, 1.0)),
        );
    }
    let options = QueryOptions {
        max_samples: 5_000,
        ..QueryOptions::default()
    };
    let query = Query::parse("count_over_time(m[1h])").expect("parses");
    assert_eq!(
        query.instant(&source, 1_000_000, &options),
        Err(QueryError::TooManySamples)
    );
    let query = Query::parse("count_over_time(m{i=\"1\"}[1h])").expect("parses");
    assert!(query.instant(&source, 1_000_000, &options).is_ok());
}
