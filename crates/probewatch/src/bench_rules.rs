//! `probewatch bench-rules`: how long one evaluation cycle of many alert rules takes over
//! many series, on a real SQLite store.
//!
//! It stores `--series` check-status and duration series (probes × checks, a sample every
//! 10 s for the last 30 minutes), generates `--rules` alert rules of five shapes in groups of
//! 50, and times full cycles (every group evaluated once), `--repeat` times, each after the
//! next 10-second step of samples is stored (untimed), as probes go on writing between
//! cycles (`--idle`: nothing is written, the cycles 60 s apart). The baseline, measured in
//! the same invocation, is reading the last 5 minutes of every series once.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use probewatch_alerting::{Engine, EngineConfig};
use probewatch_core::SeriesSample;
use probewatch_promql::SeriesSource;
use probewatch_store::{SeriesIndex, Store, StoreLocation, StoreOptions, StoreSource, open_store};

/// `probewatch bench-rules` options.
#[derive(Debug, Args, Clone)]
pub struct BenchRulesArgs {
    /// Series (half check status, half check duration).
    #[arg(long, default_value_t = 10_000)]
    pub series: u64,
    /// Alert rules.
    #[arg(long, default_value_t = 1_000)]
    pub rules: u64,
    /// Cycles to time; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Where to make the temporary store (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write nothing between cycles (the store as the load left it, cycles 60 s apart):
    /// the cost of rules over a store that is not ingesting.
    #[arg(long)]
    pub idle: bool,
    /// Also measure on PostgreSQL: a URL whose user may create databases (a fresh one is
    /// made and dropped after).
    #[arg(long)]
    pub postgres: Option<String>,
}

const CHECKS: u64 = 10;

/// The generated rule file: five shapes, rotating, in groups of 50.
fn rules_yaml(rules: u64, probes: u64) -> String {
    let mut out = String::from("groups:\n");
    for i in 0..rules {
        if i % 50 == 0 {
            out.push_str(&format!("  - name: g{}\n    rules:\n", i / 50));
        }
        let p = i % probes;
        let expr = match i % 5 {
            0 => format!("probe_check_status{{probe=\"p{p}\"}} == 2"),
            1 => format!("avg_over_time(probe_check_duration_seconds{{probe=\"p{p}\"}}[5m]) > 1"),
            2 => format!("changes(probe_check_status{{probe=\"p{p}\", check=\"c1\"}}[30m]) > 6"),
            3 => format!("absent_over_time(probe_check_status{{probe=\"p{p}\"}}[5m])"),
            _ => format!(
                "probe_check_status{{probe=\"p{p}\", check=\"c0\"}} == 2 and on (probe, host) probe_check_status{{probe=\"p{p}\", check=\"c1\"}} == 2"
            ),
        };
        out.push_str(&format!(
            "      - alert: A{i}\n        expr: '{expr}'\n        for: 1m\n        labels:\n          severity: page\n"
        ));
    }
    out
}

/// Runs the benchmark and prints the figures.
pub fn run(args: &BenchRulesArgs) -> anyhow::Result<std::process::ExitCode> {
    let dir = crate::bench::temp_work_dir(args.dir.as_deref())?;
    let sqlite = open_store(
        &StoreLocation::Sqlite(dir.path().to_path_buf()),
        &StoreOptions::default(),
    )?;
    let (s_base, s_cycle) = measure(&*sqlite, args, dir.path(), "sqlite")?;
    let Some(admin) = &args.postgres else {
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let (p_base, p_cycle) = crate::bench_store::on_fresh_postgres(
        admin,
        "bench_rules",
        &StoreOptions::default(),
        |store| measure(&*store, args, dir.path(), "postgresql"),
    )?;
    println!(
        "  postgresql / sqlite, same run: baseline {:.2}x, one cycle {:.2}x",
        p_base / s_base,
        p_cycle / s_cycle
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// Stores one time step of every series at `t`: check statuses (a few flipping to 2 for
/// 10 steps in 20) and durations.
fn store_step(store: &dyn Store, probes: u64, step: i64, t: i64) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for p in 0..probes {
        for c in 0..CHECKS {
            let labels = format!(r#"{{check="c{c}",host="h1",probe="p{p}"}}"#);
            let flip = (p + c) % 17 == 0 && step % 20 < 10;
            samples.push(SeriesSample {
                metric: "probe_check_status".into(),
                labels: labels.clone(),
                time_ms: t,
                value: if flip { 2.0 } else { 0.0 },
            });
            samples.push(SeriesSample {
                metric: "probe_check_duration_seconds".into(),
                labels,
                time_ms: t,
                value: 0.1 + ((p * 7 + c) % 13) as f64 / 10.0,
            });
        }
    }
    crate::bench::store_samples(store, u64::try_from(step).unwrap_or(0), samples, 100_000)
}

/// Loads the series into `store`, then times the baseline and full cycles; returns both
/// medians (ms).
fn measure(
    store: &dyn Store,
    args: &BenchRulesArgs,
    dir: &std::path::Path,
    backend: &str,
) -> anyhow::Result<(f64, f64)> {
    let probes = (args.series / 2 / CHECKS).max(1);
    let now = crate::ingest::now_ms();
    let loaded = Instant::now();
    // 30 minutes of samples every 10 s, one transaction per time step.
    for step in 0..180i64 {
        let t = now - (179 - step) * 10_000;
        store_step(store, probes, step, t)?;
    }
    let rules_path = dir.join("rules.yml");
    std::fs::write(&rules_path, rules_yaml(args.rules, probes))?;
    let groups = probewatch_alerting::rulefile::load(&[rules_path], 15_000)?;
    let group_count = groups.len();
    println!(
        "bench-rules on {backend}: {} series ({probes} probes x {CHECKS} checks x 2 metrics, \
         180 samples each), {} rules in {group_count} groups; loaded in {:.1} s",
        probes * CHECKS * 2,
        args.rules,
        loaded.elapsed().as_secs_f64()
    );
    let index = SeriesIndex::new();
    let source = StoreSource::new(store, &index);
    let ids: Vec<i64> = store.series_after(0)?.iter().map(|s| s.id).collect();
    let mut baseline = Vec::new();
    for _ in 0..args.repeat {
        let t = Instant::now();
        store.read_samples(&ids, now - 300_000, now, usize::MAX)?;
        baseline.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let base = crate::bench::median(&mut baseline);
    println!(
        "  {:<52} median {base:8.1} ms",
        "read 5 minutes of every series (baseline)"
    );
    let mut engine = Engine::new(groups, EngineConfig::default(), Vec::new());
    let mut cycles = Vec::new();
    let mut firing = 0;
    for run in 0..args.repeat {
        // As in production, the probes go on writing between cycles: each cycle first
        // stores the next step (untimed), then evaluates at its time, so that every cycle
        // reads the same 30 minutes and the freshest head, however many cycles are timed.
        let run = i64::try_from(run).unwrap_or(0);
        let at = if args.idle {
            now + run * 60_000
        } else {
            let at = now + (run + 1) * 10_000;
            store_step(store, probes, 180 + run, at)?;
            at
        };
        let t = Instant::now();
        // As the daemon does: one hint for every group due, then each group in turn.
        let hint: Vec<_> = (0..group_count)
            .flat_map(|g| engine.selections(g, at))
            .collect();
        source.prefetch(&hint);
        for g in 0..group_count {
            let outcome = engine.evaluate(g, at, &source, &[]);
            engine.apply(outcome.staged, at);
        }
        cycles.push(t.elapsed().as_secs_f64() * 1e3);
        firing = engine
            .groups()
            .iter()
            .flat_map(|g| g.rules.iter())
            .map(|r| engine.alerts(&r.key).len())
            .sum();
    }
    let cycle = crate::bench::median(&mut cycles);
    println!(
        "  {:<52} median {cycle:8.1} ms  ({:.2}x baseline; {firing} active alerts)",
        format!("one cycle: {} rules", args.rules),
        cycle / base
    );
    Ok((base, cycle))
}
