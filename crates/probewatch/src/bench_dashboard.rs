//! `probewatch bench-dashboard`: how long the dashboard's heaviest pages take to render on
//! the server, over HTTP, against a real SQLite store.
//!
//! It stores `--checks` checks (default 1,000) with a result every 5 minutes for the last
//! 24 hours (a tenth of them flapping on every result, so the overview's status strips have
//! many intervals), plus one check with a result every `--interval` seconds (default 10)
//! for the last `--days` days (default 30). It then serves the dashboard on a loopback port
//! and times, `--repeat` times each: `/healthz` (the baseline: HTTP plus one store read),
//! the overview, the long check's page over 30 days, and its 30-day duration chart data.
//! Medians are reported, with each one's ratio to the baseline from the same invocation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use probewatch_core::{CheckResult, Labels, ProbeResult, Status, TimeSource};
use probewatch_store::{IngestItem, Store, StoreLocation, StoreOptions, open_store};

/// `probewatch bench-dashboard` options.
#[derive(Debug, Args, Clone)]
pub struct BenchDashboardArgs {
    /// Checks on the overview.
    #[arg(long, default_value_t = 1000)]
    pub checks: usize,
    /// Hours of history of the overview's checks (a result every 5 minutes).
    #[arg(long, default_value_t = 24)]
    pub hours: i64,
    /// Days of history of the long check.
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// Seconds between the long check's results.
    #[arg(long, default_value_t = 10)]
    pub interval: i64,
    /// Runs of each measurement; medians are reported.
    #[arg(long, default_value_t = 9)]
    pub repeat: usize,
    /// Where to make the temporary store (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also measure on PostgreSQL: a URL whose user may create databases (a fresh one is
    /// made and dropped after).
    #[arg(long)]
    pub postgres: Option<String>,
    /// Also measure in a real headless Chromium (Debian's chromium and chromium-driver):
    /// how long the overview blocks the browser's main thread on load and on each live
    /// refresh while results change.
    #[arg(long)]
    pub browser: bool,
}

/// Items per transaction while filling the store.
const BATCH: usize = 1000;

fn item(n: u64, result: ProbeResult) -> IngestItem {
    let samples = result.series_samples(&Labels::default());
    crate::bench::synthetic_item(n, vec![result], samples)
}

fn result(
    probe: &str,
    host: &str,
    time_ms: i64,
    interval_ms: i64,
    checks: Vec<CheckResult>,
) -> ProbeResult {
    ProbeResult {
        probe: probe.into(),
        host: host.into(),
        time_ms,
        time_source: TimeSource::Declared,
        interval_ms: Some(interval_ms),
        checks,
        metrics: Vec::new(),
    }
}

fn check(name: String, status: Status, duration: f64) -> CheckResult {
    CheckResult {
        name,
        status,
        duration_seconds: Some(duration),
        message: format!("{} in {duration:.3} s", status.as_str()),
    }
}

/// Commits `items` in batches, compacting as the ingest writer would.
fn commit(store: &dyn Store, items: Vec<IngestItem>) -> anyhow::Result<()> {
    for chunk in items.chunks(BATCH) {
        store.commit_batch(chunk, false)?;
        while store.compact(50_000)?.more() {}
    }
    Ok(())
}

fn fill(store: &dyn Store, args: &BenchDashboardArgs, now: i64) -> anyhow::Result<()> {
    let mut n = 0u64;
    // The overview's checks: 10 per probe, a result every 5 minutes for 24 hours.
    let step = 5 * 60_000;
    let mut items = Vec::new();
    for t in (0..args.hours * 12).rev() {
        let time_ms = now - t * step;
        for p in 0..args.checks.div_ceil(10) {
            let checks = (0..10)
                .filter(|c| p * 10 + c < args.checks)
                .map(|c| {
                    let i = p * 10 + c;
                    let status = if i % 10 == 0 {
                        // Flapping: a new interval on every result.
                        if t % 2 == 0 {
                            Status::Ok
                        } else {
                            Status::Critical
                        }
                    } else if (t + i as i64) % 97 == 0 {
                        Status::Warning
                    } else {
                        Status::Ok
                    };
                    check(format!("check-{c}"), status, 0.05 + (i % 7) as f64 / 100.0)
                })
                .collect();
            n += 1;
            items.push(item(
                n,
                result(
                    &format!("probe-{p:03}"),
                    &format!("host-{}", p % 17),
                    time_ms,
                    step,
                    checks,
                ),
            ));
        }
        if items.len() >= BATCH {
            commit(store, std::mem::take(&mut items))?;
        }
    }
    commit(store, std::mem::take(&mut items))?;
    // The long check.
    let step = args.interval * 1000;
    let count = args.days * 86_400_000 / step;
    for k in (0..count).rev() {
        let time_ms = now - k * step;
        let status = if k % 5000 < 30 {
            Status::Critical
        } else {
            Status::Ok
        };
        let duration = 0.2 + ((k * 7919) % 200) as f64 / 1000.0;
        n += 1;
        items.push(item(
            n,
            result(
                "long",
                "h1",
                time_ms,
                step,
                vec![check("login".into(), status, duration)],
            ),
        ));
        if items.len() >= BATCH {
            commit(store, std::mem::take(&mut items))?;
        }
    }
    commit(store, items)?;
    Ok(())
}

/// Runs the benchmark and prints the figures.
pub fn run(args: &BenchDashboardArgs) -> anyhow::Result<std::process::ExitCode> {
    let dir = crate::bench::temp_work_dir(args.dir.as_deref())?;
    let sqlite = open_store(
        &StoreLocation::Sqlite(dir.path().to_path_buf()),
        &StoreOptions::default(),
    )?;
    let on_sqlite = measure(sqlite, args, "sqlite", || Ok(()))?;
    let Some(admin) = &args.postgres else {
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let name = format!("probewatch_bench_dashboard_{}", std::process::id());
    let on_pg = crate::bench_store::in_fresh_database(admin, &name, |url| {
        let store = open_store(
            &StoreLocation::Postgres(url.to_string()),
            &StoreOptions::default(),
        )?;
        // The pages are timed as a running server serves them, after autovacuum has
        // analyzed what the load wrote (it does within a minute). Right after the 30-day
        // backfill, the stale statistics of the partition holding it made the planner sort
        // every result of the long check: its page took 48-99 ms instead of 2-3.
        measure(store, args, "postgresql", || {
            let mut client = postgres::Client::connect(url, postgres::NoTls)?;
            client.batch_execute("ANALYZE")?;
            Ok(())
        })
    })?;
    crate::bench_store::print_ratios(&on_sqlite, &on_pg, 62);
    Ok(std::process::ExitCode::SUCCESS)
}

/// Fills `store`, runs `settle` (PostgreSQL: ANALYZE), serves it on loopback and times
/// each page; returns each page's label and median (ms).
fn measure(
    store: Arc<dyn Store>,
    args: &BenchDashboardArgs,
    backend: &str,
    settle: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<(String, f64)>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let loaded = Instant::now();
    fill(&*store, args, now)?;
    settle()?;
    let long_results = args.days * 86_400 / args.interval;
    let ledger_rows = args.hours * 12 * args.checks.div_ceil(10) as i64 + long_results;
    println!(
        "bench-dashboard on {backend}: {} checks x {} results ({} h), and 1 check x {long_results} results \
         ({} d every {} s), stored in {:.1} s",
        args.checks,
        args.hours * 12,
        args.hours,
        args.days,
        args.interval,
        loaded.elapsed().as_secs_f64()
    );

    let server = crate::bench_http::LoopbackServer::start(store.clone())?;
    let mut out = Vec::new();
    let base = server.base.clone();
    let client = reqwest::blocking::Client::new();
    let time =
        |path: &str| crate::bench_http::time_get(&client, &format!("{base}{path}"), args.repeat);
    let (base_ms, _) = time("/healthz").context("baseline")?;
    println!(
        "  {:<62} median {base_ms:7.2} ms",
        "GET /healthz (baseline)"
    );
    out.push(("GET /healthz (baseline)".to_string(), base_ms));
    let range = format!("from={}&to={}", now - args.days * 86_400_000, now + 60_000);
    let days = format!("{} d", args.days);
    let pages = [
        (
            "/".to_string(),
            format!(
                "overview, {} checks (a page of {}, 24 h strips)",
                args.checks + 1,
                probewatch_web::OVERVIEW_PAGE
            ),
        ),
        (
            "/?fragment=1".to_string(),
            "overview refresh fragment".to_string(),
        ),
        (
            "/?status=problem".to_string(),
            "overview, problems only".to_string(),
        ),
        (
            format!("/check?probe=long&host=h1&check=login&{range}"),
            format!("check page, {days} ({long_results} results)"),
        ),
        (
            format!("/api/v1/checks/durations?probe=long&host=h1&check=login&{range}&width=1200"),
            format!("{days} duration chart data ({long_results} samples -> 1200 columns)"),
        ),
        (
            "/check?probe=probe-000&host=host-0&check=check-0&range=24h".to_string(),
            "check page, flapping check, 24 h".to_string(),
        ),
        (
            "/ingest".to_string(),
            format!("ingest page ({} ledger rows)", ledger_rows),
        ),
    ];
    for (path, label) in pages {
        let (ms, bytes) = time(&path)?;
        println!(
            "  {label:<62} median {ms:7.2} ms  ({:.1}x baseline, {} KiB)",
            ms / base_ms,
            bytes / 1024
        );
        out.push((label, ms));
    }
    if args.browser && backend == "sqlite" {
        in_browser(&*store, args, &server.base, now)?;
    }
    drop(server);
    Ok(out)
}

/// The overview in a real browser: its load, then `--repeat` live refreshes, each after
/// every probe reported a changed status (the worst case: every row is new).
fn in_browser(
    store: &dyn Store,
    args: &BenchDashboardArgs,
    base: &str,
    now: i64,
) -> anyhow::Result<()> {
    let probes = args.checks.div_ceil(10);
    let mut n = 1u64 << 40;
    let mut change = |round: usize| -> anyhow::Result<()> {
        let mut items = Vec::new();
        for p in 0..probes {
            let status = if round.is_multiple_of(2) {
                Status::Critical
            } else {
                Status::Ok
            };
            let checks = (0..10)
                .filter(|c| p * 10 + c < args.checks)
                .map(|c| check(format!("check-{c}"), status, 0.1))
                .collect();
            n += 1;
            items.push(item(
                n,
                result(
                    &format!("probe-{p:03}"),
                    &format!("host-{}", p % 17),
                    now + (round as i64 + 1) * 1000,
                    5 * 60_000,
                    checks,
                ),
            ));
        }
        commit(store, items)
    };
    let (loads, refreshes) = crate::bench_browser::overview(
        &crate::bench_browser::debian_paths(),
        &format!("{base}/"),
        args.repeat,
        &mut change,
    )?;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mut ready: Vec<f64> = loads.iter().map(|l| l.wall_ms).collect();
    let mut load_frames: Vec<f64> = loads.iter().map(|l| l.longest_frame_ms).collect();
    let load_max = max(&load_frames);
    let load_blocking = max(&loads
        .iter()
        .map(|l| l.frame_blocking_ms)
        .collect::<Vec<_>>());
    println!(
        "  browser: {} loads of the overview, {} rows: DOM ready median {:.1} ms after the \
         response; longest animation frame median {:.1} ms (max {load_max:.1}, blocking \
         {load_blocking:.1} ms); {} long tasks over 50 ms",
        loads.len(),
        loads.first().map_or(0, |l| l.rows),
        crate::bench::median(&mut ready),
        crate::bench::median(&mut load_frames),
        loads.iter().map(|l| l.long_tasks.len()).sum::<usize>(),
    );
    let patched: Vec<&crate::bench_browser::MainThread> =
        refreshes.iter().filter(|r| r.status == 200).collect();
    if patched.is_empty() {
        anyhow::bail!("no refresh brought new rows: the page's own timer fetched them first");
    }
    let mut blocks: Vec<f64> = patched.iter().map(|r| r.longest_block_ms).collect();
    let mut frames: Vec<f64> = patched.iter().map(|r| r.longest_frame_ms).collect();
    let mut walls: Vec<f64> = patched.iter().map(|r| r.wall_ms).collect();
    let long_tasks: usize = patched.iter().map(|r| r.long_tasks.len()).sum();
    let (max_block, max_frame) = (max(&blocks), max(&frames));
    println!(
        "  browser: {} live refreshes, every row changed ({} rows patched in): longest \
         main-thread block median {:.1} ms (max {max_block:.1}); longest animation frame \
         median {:.1} ms (max {max_frame:.1}); refresh median {:.1} ms; {long_tasks} long \
         tasks over 50 ms",
        patched.len(),
        patched[0].rows,
        crate::bench::median(&mut blocks),
        crate::bench::median(&mut frames),
        crate::bench::median(&mut walls),
    );
    Ok(())
}
