//! `probewatch bench-query`: how long PromQL queries over one long series take, measured on a
//! real SQLite store and, with `--postgres`, on a PostgreSQL one in the same invocation.
//!
//! It stores one series of N samples (default 1,000,000, every 10 s: 116 days) through the
//! normal ingest API, compacts it into chunks, and then times, `--repeat` times each, a raw
//! read of every sample (the baseline: storage alone) and several PromQL queries over the
//! whole range at the API's finest resolution (11,000 steps). Medians are reported, with each
//! query's ratio to the baseline measured in the same invocation.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use probewatch_core::SeriesSample;
use probewatch_promql::{Query, QueryOptions, Value};
use probewatch_store::{SeriesIndex, Store, StoreLocation, StoreOptions, StoreSource, open_store};

/// `probewatch bench-query` options.
#[derive(Debug, Args, Clone)]
pub struct BenchQueryArgs {
    /// Samples in the series.
    #[arg(long, default_value_t = 1_000_000)]
    pub samples: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
    /// Runs of each measurement; medians are reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Where to make the temporary store (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also measure on PostgreSQL: a URL whose user may create databases (a fresh one is
    /// made and dropped after).
    #[arg(long)]
    pub postgres: Option<String>,
}

const METRIC: &str = "bench_latency_seconds";
const LABELS: &str = r#"{host="h1",probe="bench"}"#;

/// Runs the benchmark and prints the figures.
pub fn run(args: &BenchQueryArgs) -> anyhow::Result<std::process::ExitCode> {
    let dir = crate::bench::temp_work_dir(args.dir.as_deref())?;
    let options = StoreOptions {
        // Every sample into chunks as soon as it is written.
        head_max_samples: Some(1),
        ..StoreOptions::default()
    };
    let sqlite = open_store(&StoreLocation::Sqlite(dir.path().to_path_buf()), &options)?;
    let on_sqlite = measure(&*sqlite, args, "sqlite")?;
    let Some(admin) = &args.postgres else {
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let on_pg = crate::bench_store::on_fresh_postgres(admin, "bench_query", &options, |store| {
        measure(&*store, args, "postgresql")
    })?;
    crate::bench_store::print_ratios(&on_sqlite, &on_pg, 58);
    Ok(std::process::ExitCode::SUCCESS)
}

/// Loads the series into `store` and times the baseline and the queries; returns each
/// measurement's label and median (ms).
fn measure(
    store: &dyn Store,
    args: &BenchQueryArgs,
    backend: &str,
) -> anyhow::Result<Vec<(String, f64)>> {
    let start_ms: i64 = 1_700_000_000_000;
    let step_ms = i64::try_from(args.interval * 1000).context("interval")?;
    let loaded = Instant::now();
    load(store, args.samples, start_ms, step_ms)?;
    while store.compact(100_000)?.more() {}
    println!(
        "bench-query on {backend}: 1 series, {} samples every {} s, stored and compacted in {:.1} s",
        args.samples,
        args.interval,
        loaded.elapsed().as_secs_f64()
    );
    let mut out = Vec::new();

    let end_ms = start_ms + (i64::try_from(args.samples).context("samples")? - 1) * step_ms;
    let index = SeriesIndex::new();
    let source = StoreSource::new(store, &index);
    let ids: Vec<i64> = store.series_after(0)?.iter().map(|s| s.id).collect();
    // The API's finest resolution: 11,000 points over the range.
    let range_step = ((end_ms - start_ms) / 10_999).max(1);
    let options = QueryOptions::default();

    let mut baseline = Vec::new();
    for _ in 0..args.repeat {
        let t = Instant::now();
        let read = store.read_samples(&ids, start_ms, end_ms, usize::MAX)?;
        baseline.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            read.first().map(Vec::len) == Some(args.samples as usize),
            "read back {} samples",
            read.first().map_or(0, Vec::len)
        );
    }
    let base = crate::bench::median(&mut baseline);
    let label = "raw read of every sample (baseline)".to_string();
    println!("  {label:<58} median {base:8.1} ms");
    out.push((label, base));
    let queries = [
        (METRIC.to_string(), true),
        (format!("rate({METRIC}[5m])"), true),
        (format!("max_over_time({METRIC}[1h])"), true),
        (format!("avg_over_time({METRIC}[30d])"), false),
    ];
    for (text, range) in queries {
        let query = Query::parse(&text)?;
        let mut times = Vec::new();
        let mut points = 0;
        for _ in 0..args.repeat {
            let t = Instant::now();
            let value = if range {
                query.range(&source, start_ms, end_ms, range_step, &options)?
            } else {
                query.instant(&source, end_ms, &options)?
            };
            times.push(t.elapsed().as_secs_f64() * 1e3);
            points = match value {
                Value::Matrix(m) => m.iter().map(|s| s.points.len()).sum(),
                Value::Vector(v) => v.len(),
                _ => 1,
            };
        }
        let m = crate::bench::median(&mut times);
        let label = if range {
            format!("query_range {text} (11,000 steps)")
        } else {
            format!("query {text} (instant)")
        };
        println!(
            "  {label:<58} median {m:8.1} ms  ({:.2}x baseline, {points} points)",
            m / base
        );
        out.push((label, m));
    }
    Ok(out)
}

/// Stores `n` samples of one series through `commit_batch`, as ingest would, 10,000 per
/// transaction, compacting as the ingest writer does.
fn load(store: &dyn Store, n: u64, start_ms: i64, step_ms: i64) -> anyhow::Result<()> {
    let mut value = 0.25f64;
    let mut written = 0u64;
    let mut batch = 0u64;
    while written < n {
        let count = (n - written).min(10_000);
        let samples: Vec<SeriesSample> = (0..count)
            .map(|i| {
                let k = written + i;
                // A latency-like random walk, so values do not compress to nothing.
                value = (value + ((k * 7919 % 200) as f64 - 99.5) / 10_000.0).abs();
                SeriesSample {
                    metric: METRIC.to_string(),
                    labels: LABELS.to_string(),
                    time_ms: start_ms + i64::try_from(k).unwrap_or(i64::MAX) * step_ms,
                    value,
                }
            })
            .collect();
        crate::bench::store_samples(store, batch, samples, 30_000)?;
        written += count;
        batch += 1;
    }
    Ok(())
}
