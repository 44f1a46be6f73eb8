//! `probewatch bench`: a load generator and measurement harness for the ingest path.
//!
//! It writes N result files (2 checks and 10 metrics each) into a fresh spool at a given rate
//! or flat out, in one of three writer styles, while a real `probewatch run` process ingests
//! them; then it reads the ledger to measure each file's latency from close (or rename) to
//! the commit of its batch, and reads /proc for the daemon's CPU time and peak memory.
//!
//! `--baseline` first runs the same load against a bare inotify → quick-xml → batched-SQLite
//! loop inside this process (no ledger, no hashing, no dedup), so results are reported as a
//! ratio against a baseline measured in the same invocation on the same noisy machine.
//! `--repeat K` runs everything K times and reports medians.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// How the load generator writes each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Style {
    /// One write(2), then close.
    Single,
    /// Three writes with 1 ms pauses between them, then close.
    Chunked,
    /// Write `name.xml.tmp`, close, rename to `name.xml`.
    Rename,
}

/// `probewatch bench` options.
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// The files' format: xml, json or prometheus (the same content in each; the
    /// Prometheus files carry the checks' statuses as gauges).
    #[arg(long, default_value = "xml")]
    pub format: String,
    /// Number of result files.
    #[arg(long, default_value_t = 20_000)]
    pub files: u64,
    /// Files per second (0: as fast as the writers can).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Distinct checks the files report (each file is one probe with 2 checks and 10
    /// metrics, so about 7 series per check). Default: 700 (50 probes on 7 hosts).
    #[arg(long, default_value_t = 700)]
    pub checks: u64,
    /// Writer style.
    #[arg(long, value_enum, default_value_t = Style::Single)]
    pub style: Style,
    /// Writer threads.
    #[arg(long, default_value_t = 1)]
    pub writers: u64,
    /// Write every file before starting the daemon, then time the catch-up.
    #[arg(long)]
    pub backlog: bool,
    /// With --backlog: first ingest one file per probe (every check and series is then
    /// known) and stop, then time the backlog on that store: a restart of a fleet's server
    /// rather than its first sight of every check.
    #[arg(long, requires = "backlog")]
    pub warm: bool,
    /// Seconds the daemon keeps running after the last file is committed before its CPU and
    /// peak RSS are read: what a server holds once its rules thread and sweeps have run.
    #[arg(long, default_value_t = 0)]
    pub idle: u64,
    /// Delete files after ingest (durable commits before each delete).
    #[arg(long)]
    pub delete: bool,
    /// Also run the bare-loop baseline, in the same invocation.
    #[arg(long)]
    pub baseline: bool,
    /// Runs of each; medians are reported.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Where to make the temporary spools (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The probewatch binary to run as the daemon (default: this one), to compare builds with
    /// the same harness in one invocation.
    #[arg(long)]
    pub daemon: Option<PathBuf>,
    /// Loops of heavy PromQL queries (over HTTP, back to back) against the daemon while it
    /// ingests. Each run is then made twice, without and with them, to show what queries
    /// cost ingest latency.
    #[arg(long, default_value_t = 0)]
    pub query_load: usize,
    /// Run the daemon on PostgreSQL instead of SQLite: a URL whose user may create
    /// databases (each run gets a fresh one, dropped after).
    #[arg(long)]
    pub postgres: Option<String>,
}

/// One run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct RunResult {
    files_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    lost: u64,
    /// How fast the load generator itself wrote (an upper bound on what can be ingested live).
    writer_files_per_sec: f64,
    /// Queries the query loops had answered (200) while the run lasted.
    queries: u64,
    /// Queries answered with an error (timeouts included).
    query_errors: u64,
}

/// Heavy queries over everything the bench writes (its results are stamped from
/// 1,700,000,000 s on, [`file_time_s`]): a range query over all series at a 5 s step (wider
/// where that would pass Prometheus's 11,000 points per series), an instant query over an
/// hour of every series, and a subquery.
fn heavy_queries(files: u64, checks: u64) -> Vec<String> {
    let start = file_time_s(0, checks);
    let end = file_time_s(files, checks).max(start + 60);
    let step = ((end - start) / 10_000).max(5);
    let enc = |q: &str| -> String { form_urlencoded::byte_serialize(q.as_bytes()).collect() };
    vec![
        format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
            enc("sum by (probe) (rate({__name__=~\".+\"}[5m]))")
        ),
        format!(
            "/api/v1/query?query={}&time={end}",
            enc("sum by (__name__) (last_over_time({__name__=~\".+\"}[1h]))")
        ),
        format!(
            "/api/v1/query?query={}&time={end}",
            enc("max_over_time(sum(rate({__name__=~\"bench_.+\"}[1m]))[30m:5s])")
        ),
    ]
}

/// `n` threads sending [`heavy_queries`] back to back until stopped.
struct QueryLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, u64, Option<String>)>>,
}

impl QueryLoad {
    fn start(base: &str, n: usize, files: u64, checks: u64) -> QueryLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let (stop, base) = (stop.clone(), base.to_string());
                let queries = heavy_queries(files, checks);
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    let (mut ok, mut failed, mut first_error) = (0, 0, None);
                    let mut k = i;
                    while !stop.load(Ordering::Relaxed) {
                        let url = format!("{base}{}", queries[k % queries.len()]);
                        match client.get(&url).send() {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes();
                                ok += 1;
                            }
                            Ok(r) => {
                                failed += 1;
                                let status = r.status();
                                let body = r.text().unwrap_or_default();
                                first_error.get_or_insert_with(|| format!("{status} {body}"));
                            }
                            Err(e) => {
                                failed += 1;
                                first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                        k += 1;
                    }
                    (ok, failed, first_error)
                })
            })
            .collect();
        QueryLoad { stop, threads }
    }

    /// Stops the loops; returns (answered, failed), and says why the first failure failed.
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut totals = (0, 0);
        for (ok, failed, error) in self.threads.into_iter().filter_map(|t| t.join().ok()) {
            totals = (totals.0 + ok, totals.1 + failed);
            if let Some(error) = error {
                eprintln!("    a query failed: {error}");
            }
        }
        totals
    }
}

/// Rows one bench file becomes: 14 samples, 2 check results and its ledger row.
const ROWS_PER_FILE: f64 = 17.0;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// File `n` of the bench in `format` (`xml`, `json`, `prometheus`): its extension and
/// content, the same content whatever the format (the Prometheus text has no checks; their
/// statuses are gauges there).
pub(crate) fn bench_file(format: &str, n: u64, checks: u64) -> (&'static str, String) {
    match format {
        "json" => ("json", json_file(n, checks)),
        "prometheus" => ("prom", prometheus_file(n, checks)),
        _ => ("xml", result_file(n, checks)),
    }
}

/// How many probes the bench files take turns among: each reports two checks.
pub(crate) fn probes_of(checks: u64) -> u64 {
    (checks / 2).max(1)
}

/// The time (seconds) of file `n`: each probe reports every 60 s, its declared interval,
/// the probes of one round spread over the minute, so every file has a time of its own.
/// (Until 2026-11-28 file `n` was at second `n`: a probe's results came `checks / 2`
/// seconds apart, over three of its 60 s intervals from 360 checks up, so every result
/// followed a silence and ended its check's run — each a status interval row, a cost no
/// probe keeping to its interval makes.)
pub(crate) fn file_time_s(n: u64, checks: u64) -> u64 {
    let probes = probes_of(checks);
    1_700_000_000 + (n / probes) * 60 + (n % probes) * 60 / probes
}

/// Whether file `n`'s `login` check is critical: one round in ten for each probe, the
/// probes taking turns, so that statuses change (and runs end) as a flapping service's do.
fn login_critical(n: u64, checks: u64) -> bool {
    let probes = probes_of(checks);
    (n / probes + n % probes).is_multiple_of(10)
}

/// [`result_file`] as result JSON.
pub(crate) fn json_file(n: u64, checks: u64) -> String {
    let probe = n % probes_of(checks);
    let metrics: Vec<String> = (0..10)
        .map(|m| {
            format!(
                r#"{{"name": "bench_metric_{m}", "value": {}, "labels": {{"shard": "s{}"}}}}"#,
                n * 3 + m,
                m % 3
            )
        })
        .collect();
    format!(
        r#"{{"probe": "bench-{}", "host": "host-{}", "time": {}, "interval": "60s",
 "checks": [{{"name": "login", "status": "{}", "duration": 0.0{}, "message": "logged in"}},
            {{"name": "search", "status": "ok", "duration": 0.120, "message": "42 hits"}}],
 "metrics": [{}]}}"#,
        probe / 7,
        probe % 7,
        file_time_s(n, checks),
        if login_critical(n, checks) {
            "critical"
        } else {
            "ok"
        },
        n % 97,
        metrics.join(", ")
    )
}

/// [`result_file`]'s metrics as Prometheus text, with its checks' statuses as gauges. Every
/// sample carries the probe (a common `probe` label names the file's probe) and the host,
/// so the files take turns among the same probes and series as the XML ones.
pub(crate) fn prometheus_file(n: u64, checks: u64) -> String {
    let probe = n % probes_of(checks);
    let who = format!("probe=\"bench-{}\",host=\"host-{}\"", probe / 7, probe % 7);
    let at = file_time_s(n, checks) * 1000;
    let mut text = String::from("# TYPE bench_check_status gauge\n");
    text.push_str(&format!(
        "bench_check_status{{{who},check=\"login\"}} {} {at}\nbench_check_status{{{who},check=\"search\"}} 0 {at}\n",
        if login_critical(n, checks) { 2 } else { 0 },
    ));
    for m in 0..10 {
        text.push_str(&format!(
            "bench_metric_{m}{{{who},shard=\"s{}\"}} {} {at}\n",
            m % 3,
            n * 3 + m,
        ));
    }
    text
}

/// The result file for number `n`: 2 checks and 10 metrics, at [`file_time_s`]. Files take
/// turns among `checks / 2` probes (a probe is a name and a host).
pub(crate) fn result_file(n: u64, checks: u64) -> String {
    let probe = n % probes_of(checks);
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<probe name=\"bench-{}\" host=\"host-{}\" time=\"{}\" interval=\"60s\">\n",
        probe / 7,
        probe % 7,
        file_time_s(n, checks)
    );
    xml.push_str(&format!(
        "  <check name=\"login\" status=\"{}\" duration=\"0.0{}\">logged in</check>\n",
        if login_critical(n, checks) {
            "critical"
        } else {
            "ok"
        },
        n % 97
    ));
    xml.push_str("  <check name=\"search\" status=\"ok\" duration=\"0.120\">42 hits</check>\n");
    for m in 0..10 {
        xml.push_str(&format!(
            "  <metric name=\"bench_metric_{m}\" value=\"{}\"><label name=\"shard\" value=\"s{}\"/></metric>\n",
            n * 3 + m,
            m % 3
        ));
    }
    xml.push_str("</probe>\n");
    xml
}

/// Writes the files; returns each file's name and the time (µs) it became complete.
fn generate(spool: &Path, args: &BenchArgs) -> anyhow::Result<Vec<(String, i64)>> {
    generate_range(spool, args, 0..args.files)
}

/// Writes files number `range.start` to `range.end` (exclusive), as [`generate`] does.
fn generate_range(
    spool: &Path,
    args: &BenchArgs,
    range: std::ops::Range<u64>,
) -> anyhow::Result<Vec<(String, i64)>> {
    let writers = args.writers.max(1);
    let start = Instant::now();
    let results: Vec<anyhow::Result<Vec<(String, i64)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                scope.spawn(move || -> anyhow::Result<Vec<(String, i64)>> {
                    let mut done = Vec::new();
                    let mut n = range.start + w;
                    while n < range.end {
                        if args.rate > 0 {
                            let due = start
                                + Duration::from_secs_f64(
                                    (n - range.start) as f64 / args.rate as f64,
                                );
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let (ext, content) = bench_file(&args.format, n, args.checks);
                        let name = format!("r{n:08}.{ext}");
                        let path = spool.join(&name);
                        match args.style {
                            Style::Single => std::fs::write(&path, &content)?,
                            Style::Chunked => {
                                let mut f = std::fs::File::create(&path)?;
                                for chunk in content.as_bytes().chunks(content.len().div_ceil(3)) {
                                    f.write_all(chunk)?;
                                    std::thread::sleep(Duration::from_millis(1));
                                }
                            }
                            Style::Rename => {
                                let tmp = spool.join(format!("{name}.tmp"));
                                std::fs::write(&tmp, &content)?;
                                std::fs::rename(&tmp, &path)?;
                            }
                        }
                        done.push((name, now_us()));
                        n += writers;
                    }
                    Ok(done)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("writer panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(usize::try_from(args.files).unwrap_or(0));
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Latency and throughput from close times and commit times (both µs, by file name).
fn summarize(
    closed: &[(String, i64)],
    committed: &HashMap<String, i64>,
    first_us: i64,
) -> anyhow::Result<RunResult> {
    let mut latencies = Vec::with_capacity(closed.len());
    let mut last_commit = 0;
    let mut lost = 0;
    for (name, close_us) in closed {
        let Some(commit_us) = committed.get(name) else {
            lost += 1;
            continue;
        };
        latencies.push((commit_us - close_us).max(0) as f64 / 1000.0);
        last_commit = last_commit.max(*commit_us);
    }
    latencies.sort_by(f64::total_cmp);
    let seconds = (last_commit - first_us).max(1) as f64 / 1e6;
    let last_close = closed.iter().map(|(_, at)| *at).max().unwrap_or(first_us);
    let writer_seconds = (last_close - first_us).max(1) as f64 / 1e6;
    Ok(RunResult {
        files_per_sec: latencies.len() as f64 / seconds,
        writer_files_per_sec: closed.len() as f64 / writer_seconds,
        lost,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        ..RunResult::default()
    })
}

/// CPU seconds (user + system) and peak RSS of a process, from /proc.
pub(crate) fn proc_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), indices 11 and 12 here; USER_HZ is
    // 100 on every Linux architecture Rust targets.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kib / 1024.0)
}

/// A `probewatch run` child process on `work/spool` and `work/data`.
pub(crate) struct Daemon {
    child: Child,
    log: Arc<std::sync::Mutex<String>>,
    /// `http://127.0.0.1:PORT`, from the start-up banner.
    pub(crate) base: String,
}

impl Daemon {
    /// Starts the daemon on `work`'s spool, its store on `postgres` (a URL) or SQLite in
    /// `work`.
    fn start(work: &Path, args: &BenchArgs, postgres: Option<&str>) -> anyhow::Result<Daemon> {
        let after = if args.delete { "delete" } else { "keep" };
        let store = postgres.map_or(String::new(), |url| format!("store = {url:?}\n"));
        Daemon::start_binary(
            args.daemon.as_deref(),
            work,
            &format!(
                "{store}[[spool]]\npath = {:?}\nafter_ingest = \"{after}\"\nformat = {:?}\n",
                work.join("spool").display().to_string(),
                args.format
            ),
        )
    }

    /// Starts the daemon with `config` as its configuration file; returns once its startup
    /// scan has finished.
    pub(crate) fn start_with(work: &Path, config_text: &str) -> anyhow::Result<Daemon> {
        Daemon::start_binary(None, work, config_text)
    }

    /// [`Daemon::start_with`] running `binary` (default: this executable).
    fn start_binary(
        binary: Option<&Path>,
        work: &Path,
        config_text: &str,
    ) -> anyhow::Result<Daemon> {
        let config = work.join("bench.toml");
        std::fs::write(&config, config_text)?;
        let exe = match binary {
            Some(path) => path.to_path_buf(),
            None => std::env::current_exe().context("finding the probewatch binary")?,
        };
        let mut child = Command::new(exe)
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(work.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting probewatch run")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (base_tx, base_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default();
                    let _ = base_tx.send(format!("http://{addr}"));
                }
            }
        });
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("startup scan finished") {
                    let _ = tx.send(());
                }
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(600)).is_err() {
            let _ = child.kill();
            bail!(
                "probewatch did not start:\n{}",
                log.lock().map(|l| l.clone()).unwrap_or_default()
            );
        }
        let base = base_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        Ok(Daemon { child, log, base })
    }

    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Waits until the ledger holds `n` rows; returns file name → commit time (µs). Reads
/// through the store's API (opened beside the daemon), not the database's tables.
pub(crate) fn wait_committed(
    location: &probewatch_store::StoreLocation,
    n: u64,
    timeout: Duration,
) -> anyhow::Result<HashMap<String, i64>> {
    let deadline = Instant::now() + timeout;
    let store = loop {
        match probewatch_store::open_store(location, &probewatch_store::StoreOptions::default()) {
            Ok(store) => break store,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.into()),
        }
    };
    loop {
        // The running totals, not a count: polling must not steal CPU from the daemon.
        let count = store
            .stats()
            .map_or(0, |s| s.files_ingested + s.files_rejected);
        if count >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {count} of {n} files committed before the timeout");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut committed = HashMap::new();
    for (path, at) in store.file_commits(usize::try_from(n).unwrap_or(usize::MAX))? {
        let name = Path::new(std::ffi::OsStr::from_bytes(&path))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        committed.insert(name, at);
    }
    Ok(committed)
}

fn fresh_dir(base: &Path, label: &str) -> anyhow::Result<PathBuf> {
    let dir = base.join(format!("probewatch-bench-{label}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(dir.join("spool"))?;
    Ok(dir)
}

/// One run of the daemon, on a fresh PostgreSQL database with `--postgres`.
fn run_probewatch(base: &Path, args: &BenchArgs, query_load: usize) -> anyhow::Result<RunResult> {
    match &args.postgres {
        Some(admin) => crate::bench_store::in_fresh_database(
            admin,
            &format!("probewatch_bench_{}", std::process::id()),
            |url| run_probewatch_on(base, args, query_load, Some(url)),
        ),
        None => run_probewatch_on(base, args, query_load, None),
    }
}

fn run_probewatch_on(
    base: &Path,
    args: &BenchArgs,
    query_load: usize,
    postgres: Option<&str>,
) -> anyhow::Result<RunResult> {
    let work = fresh_dir(base, "probewatch")?;
    let location = match postgres {
        Some(url) => probewatch_store::StoreLocation::Postgres(url.to_string()),
        None => probewatch_store::StoreLocation::Sqlite(work.join("data")),
    };
    let spool = work.join("spool");
    let timeout = Duration::from_secs(600);
    let mut load = None;
    let warm = if args.warm {
        (args.checks / 2).max(1)
    } else {
        0
    };
    if warm > 0 {
        let written = generate_range(&spool, args, 0..warm)?;
        let daemon = Daemon::start(&work, args, postgres)?;
        let done = wait_committed(&location, warm, timeout);
        daemon.stop();
        done?;
        for (name, _) in written {
            std::fs::remove_file(spool.join(name))?;
        }
    }
    let (closed, daemon, first_us) = if args.backlog {
        let closed = generate_range(&spool, args, warm..warm + args.files)?;
        // From the moment the daemon is started: its startup and scan count too.
        let start = now_us();
        (closed, Daemon::start(&work, args, postgres)?, start)
    } else {
        let daemon = Daemon::start(&work, args, postgres)?;
        // Started before the files, so queries overlap the whole live run; their data grows
        // as the files arrive.
        load = (query_load > 0)
            .then(|| QueryLoad::start(&daemon.base, query_load, args.files, args.checks));
        let start = now_us();
        (generate(&spool, args)?, daemon, start)
    };
    let committed = wait_committed(&location, warm + args.files, timeout);
    let (queries, query_errors) = load.map_or((0, 0), QueryLoad::finish);
    let committed = match committed {
        Ok(committed) => committed,
        Err(err) => {
            let log = daemon.log.lock().map(|l| l.clone()).unwrap_or_default();
            daemon.stop();
            bail!("{err}\n{log}");
        }
    };
    std::thread::sleep(Duration::from_secs(args.idle));
    let (cpu_seconds, peak_rss_mib) = proc_usage(daemon.child.id());
    daemon.stop();
    let mut result = if args.backlog {
        // Latency is meaningless for a backlog; throughput counts from the daemon's start.
        let last = committed.values().copied().max().unwrap_or(first_us);
        RunResult {
            files_per_sec: args.files as f64 / ((last - first_us).max(1) as f64 / 1e6),
            ..RunResult::default()
        }
    } else {
        summarize(&closed, &committed, first_us)?
    };
    result.cpu_seconds = cpu_seconds;
    result.peak_rss_mib = peak_rss_mib;
    result.queries = queries;
    result.query_errors = query_errors;
    let _ = std::fs::remove_dir_all(&work);
    Ok(result)
}

/// The bare loop: inotify → read → quick-xml → batched SQLite inserts, nothing else.
/// The baseline's parse: every element's `name` and `value` attributes.
fn baseline_rows(path: &Path) -> anyhow::Result<Vec<(String, f64)>> {
    let bytes = std::fs::read(path)?;
    let text = std::str::from_utf8(&bytes)?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut rows = Vec::new();
    loop {
        match reader.read_event()? {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let mut key = String::new();
                let mut value = 0.0;
                for attr in e.attributes().flatten() {
                    match attr.key.as_ref() {
                        "name" => key = attr.value.to_string(),
                        "value" => value = attr.value.parse().unwrap_or(0.0),
                        _ => {}
                    }
                }
                rows.push((key, value));
            }
            _ => {}
        }
    }
    anyhow::ensure!(
        text.trim_end().ends_with("</probe>"),
        "{}: incomplete",
        path.display()
    );
    Ok(rows)
}

fn run_baseline(base: &Path, args: &BenchArgs) -> anyhow::Result<RunResult> {
    use inotify::{Inotify, WatchMask};
    let work = fresh_dir(base, "baseline")?;
    let spool = work.join("spool");
    let db_path = work.join("baseline.db");
    let stop = Arc::new(AtomicBool::new(false));
    let mut inotify = Inotify::init()?;
    inotify
        .watches()
        .add(&spool, WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO)?;
    let loop_stop = stop.clone();
    let loop_spool = spool.clone();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let loop_done = done.clone();
    let handle = std::thread::spawn(move || -> anyhow::Result<HashMap<String, i64>> {
        let mut conn = rusqlite::Connection::open(&db_path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch("CREATE TABLE rows (file TEXT, name TEXT, value REAL)")?;
        let mut committed = HashMap::new();
        let mut buffer = vec![0u8; 256 * 1024];
        // The loop loses nothing, so the comparison is fair: a queue overflow, and every
        // 500 ms of quiet, rescans the spool for files it has not committed.
        let mut rescan = false;
        let mut last_rescan = Instant::now();
        while !loop_stop.load(Ordering::Relaxed) {
            let names: Vec<String> = match inotify.read_events(&mut buffer) {
                Ok(events) => events
                    .filter_map(|e| {
                        if e.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                            rescan = true;
                        }
                        e.name.map(|n| n.to_string_lossy().into_owned())
                    })
                    .filter(|n| n.ends_with(".xml") && !committed.contains_key(n))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if rescan || last_rescan.elapsed() > Duration::from_millis(500) {
                        rescan = false;
                        last_rescan = Instant::now();
                        std::fs::read_dir(&loop_spool)?
                            .filter_map(|entry| entry.ok())
                            .map(|entry| entry.file_name().to_string_lossy().into_owned())
                            .filter(|n| n.ends_with(".xml") && !committed.contains_key(n))
                            .collect()
                    } else {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let tx = conn.transaction()?;
            let mut stored = Vec::with_capacity(names.len());
            {
                let mut insert = tx.prepare_cached("INSERT INTO rows VALUES (?1, ?2, ?3)")?;
                for name in names {
                    // A file a rescan finds may still be being written: skipped until its
                    // close-write event or the next rescan.
                    let Ok(rows) = baseline_rows(&loop_spool.join(&name)) else {
                        continue;
                    };
                    for (key, value) in rows {
                        insert.execute(rusqlite::params![name, key, value])?;
                    }
                    stored.push(name);
                }
            }
            tx.commit()?;
            let at = now_us();
            loop_done.fetch_add(stored.len() as u64, Ordering::SeqCst);
            for name in stored {
                committed.insert(name, at);
            }
        }
        Ok(committed)
    });
    let start = now_us();
    let closed = generate(&spool, args)?;
    // Wait for every file, or until nothing has arrived for 2 s.
    let mut last = (done.load(Ordering::SeqCst), Instant::now());
    while done.load(Ordering::SeqCst) < args.files && last.1.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
        let now = done.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    stop.store(true, Ordering::SeqCst);
    let committed = handle
        .join()
        .map_err(|_| anyhow::anyhow!("baseline loop panicked"))??;
    let result = summarize(&closed, &committed, start)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(result)
}

/// The median of some measurements (sorts them).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        f64::NAN
    } else {
        values[values.len() / 2]
    }
}

fn medians(runs: &[RunResult]) -> RunResult {
    let pick = |f: fn(&RunResult) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    RunResult {
        files_per_sec: pick(|r| r.files_per_sec),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        max_ms: pick(|r| r.max_ms),
        cpu_seconds: pick(|r| r.cpu_seconds),
        peak_rss_mib: pick(|r| r.peak_rss_mib),
        lost: runs.iter().map(|r| r.lost).max().unwrap_or(0),
        writer_files_per_sec: pick(|r| r.writer_files_per_sec),
        queries: runs.iter().map(|r| r.queries).sum(),
        query_errors: runs.iter().map(|r| r.query_errors).sum(),
    }
}

/// Entry point of `probewatch bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    if !matches!(args.format.as_str(), "xml" | "json" | "prometheus") {
        bail!(
            "--format {:?}: expected xml, json or prometheus",
            args.format
        );
    }
    if args.baseline && args.format != "xml" {
        bail!("--baseline reads XML; run it with --format xml");
    }
    if args.baseline && args.backlog {
        bail!("--baseline measures live ingest; it cannot be combined with --backlog");
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let rate = if args.rate == 0 {
        "flat out".to_string()
    } else {
        format!("{}/s", args.rate)
    };
    println!(
        "bench: {} files, {rate}, style {:?}, {} writer(s){}{}, {} run(s), store {}",
        args.files,
        args.style,
        args.writers,
        match (args.backlog, args.warm) {
            (true, true) => ", backlog on a store that knows every check",
            (true, false) => ", backlog",
            _ => "",
        },
        if args.delete {
            ", delete after ingest"
        } else {
            ""
        },
        args.repeat,
        args.postgres
            .as_deref()
            .map_or("SQLite".to_string(), |url| format!(
                "PostgreSQL at {}",
                probewatch_store::postgres::redact_url(url)
            ))
    );
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    let mut loaded = Vec::new();
    for i in 0..args.repeat.max(1) {
        if args.baseline {
            let r = run_baseline(&base, args)?;
            println!(
                "  run {i} baseline  : {:>9.0} files/s  p50 {:>7.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  lost {}  (writer {:.0} files/s)",
                r.files_per_sec, r.p50_ms, r.p99_ms, r.max_ms, r.lost, r.writer_files_per_sec
            );
            bare.push(r);
        }
        let r = run_probewatch(&base, args, 0)?;
        println!(
            "  run {i} probewatch: {:>9.0} files/s  p50 {:>7.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  lost {}  cpu {:.2} s  peak rss {:.1} MiB  (writer {:.0} files/s)",
            r.files_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.lost,
            r.cpu_seconds,
            r.peak_rss_mib,
            r.writer_files_per_sec
        );
        ours.push(r);
        if args.query_load > 0 {
            let r = run_probewatch(&base, args, args.query_load)?;
            println!(
                "  run {i} + {} query loops: {:>9.0} files/s  p50 {:>7.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  lost {}  cpu {:.2} s  ({} queries answered, {} failed)",
                args.query_load,
                r.files_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.lost,
                r.cpu_seconds,
                r.queries,
                r.query_errors
            );
            loaded.push(r);
        }
    }
    let m = medians(&ours);
    println!(
        "median probewatch: {:.0} files/s ({:.0} rows/s), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, cpu {:.2} s, peak rss {:.1} MiB",
        m.files_per_sec,
        m.files_per_sec * ROWS_PER_FILE,
        m.p50_ms,
        m.p99_ms,
        m.max_ms,
        m.cpu_seconds,
        m.peak_rss_mib
    );
    if args.query_load > 0 {
        let q = medians(&loaded);
        println!(
            "median with {} query loops: {:.0} files/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
             p99 with/without queries = {:.2}; {} queries answered, {} failed",
            args.query_load,
            q.files_per_sec,
            q.p50_ms,
            q.p99_ms,
            q.max_ms,
            q.p99_ms / m.p99_ms,
            q.queries,
            q.query_errors
        );
    }
    if args.baseline {
        let b = medians(&bare);
        println!(
            "median baseline:   {:.0} files/s, p50 {:.2} ms, p99 {:.2} ms, lost up to {}; probewatch/baseline throughput = {:.2}",
            b.files_per_sec,
            b.p50_ms,
            b.p99_ms,
            b.lost,
            m.files_per_sec / b.files_per_sec
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A temporary directory inside `dir` (default: the system temp directory), removed on drop.
pub(crate) fn temp_work_dir(dir: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    match dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("creating a temporary directory")
}

/// Synthetic file `n` (no file on disk) carrying `results` and `samples`, as the ingest
/// pipeline would hand it to the store: how benchmarks fill a store without writing files.
pub(crate) fn synthetic_item(
    n: u64,
    results: Vec<probewatch_core::ProbeResult>,
    samples: Vec<probewatch_core::SeriesSample>,
) -> probewatch_store::IngestItem {
    use probewatch_store::{FileMeta, IngestItem, ItemContent};
    IngestItem {
        file: FileMeta {
            spool: Arc::from("bench"),
            path: format!("/bench/{n}.xml").into_bytes(),
            size: 0,
            mtime_ns: 0,
            inode: n,
            version_hash: [0; 32],
        },
        content: ItemContent::Parsed {
            results,
            samples,
            clock_skew: false,
        },
    }
}

/// Commits `samples` as one synthetic file `n` (no checks) through the normal ingest API and
/// compacts as the ingest writer would, `step` samples at a time: how the query and rule
/// benchmarks fill a store without writing files.
pub(crate) fn store_samples(
    store: &dyn probewatch_store::Store,
    n: u64,
    samples: Vec<probewatch_core::SeriesSample>,
    step: usize,
) -> anyhow::Result<()> {
    store.commit_batch(&[synthetic_item(n, Vec::new(), samples)], false)?;
    while store.compact(step)?.more() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{file_time_s, login_critical, probes_of};

    /// The bench's probes keep to their declared 60 s interval (no result follows a silence,
    /// which would end its check's run), and their `login` check changes status now and then.
    #[test]
    fn bench_probes_report_at_their_interval() {
        for checks in [2, 1_000, 100_000] {
            let probes = probes_of(checks);
            for n in [0, 1, probes / 2, probes * 3 + 7] {
                assert_eq!(
                    file_time_s(n + probes, checks) - file_time_s(n, checks),
                    60,
                    "{checks} checks, file {n}"
                );
            }
            let statuses: Vec<bool> = (0..20)
                .map(|round| login_critical(round * probes, checks))
                .collect();
            assert_eq!(
                statuses.iter().filter(|c| **c).count(),
                2,
                "{checks} checks"
            );
        }
        // Files of one round are spread over the minute, in order.
        assert!(file_time_s(499, 1_000) > file_time_s(0, 1_000));
        assert!(file_time_s(499, 1_000) < file_time_s(500, 1_000));
    }
}
