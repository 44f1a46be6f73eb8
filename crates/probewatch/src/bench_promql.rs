//! `probewatch bench-promql`: PromQL over many series, probewatch beside Prometheus on the
//! same samples. N series of one counter (`bench_metric{group, instance}`, 100 groups) get a
//! sample every `--step` seconds for `--minutes`; probewatch stores them in a fresh SQLite
//! store, and where Debian's `prometheus` and `promtool` are installed the same samples go
//! through `promtool tsdb create-blocks-from openmetrics` into a TSDB that a real Prometheus
//! serves. Both answer the same HTTP requests; the medians and their ratio are printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use probewatch_core::SeriesSample;
use probewatch_store::{SqliteStore, Store};

/// `probewatch bench-promql` options.
#[derive(Debug, Args)]
pub struct BenchPromqlArgs {
    /// Series of the counter.
    #[arg(long, default_value_t = 20_000)]
    pub series: usize,
    /// Minutes of samples.
    #[arg(long, default_value_t = 60)]
    pub minutes: i64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 15)]
    pub step: i64,
    /// Runs of each request; medians are reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Where to make the temporary stores (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Prometheus to compare with (skipped when absent).
    #[arg(long, default_value = "/usr/bin/prometheus")]
    pub prometheus: PathBuf,
    /// The promtool that builds its TSDB.
    #[arg(long, default_value = "/usr/bin/promtool")]
    pub promtool: PathBuf,
    /// Also measure on PostgreSQL: a URL whose user may create databases (a fresh one is
    /// made and dropped after).
    #[arg(long)]
    pub postgres: Option<String>,
}

/// The value of series `i` at sample `k`: a counter rising by `i % 10 + 1` a sample.
fn value(i: usize, k: i64) -> f64 {
    (i as f64) + (k as f64) * ((i % 10) as f64 + 1.0)
}

fn labels(i: usize) -> String {
    format!("{{group=\"g{:02}\",instance=\"i{i:06}\"}}", i % 100)
}

/// Writes the samples into a fresh store, in batches, compacting as ingest would.
fn fill_store(store: &dyn Store, args: &BenchPromqlArgs, start_ms: i64) -> anyhow::Result<()> {
    let samples = args.minutes * 60 / args.step;
    let mut batch = Vec::with_capacity(200_000);
    for k in 0..samples {
        let time_ms = start_ms + k * args.step * 1000;
        for i in 0..args.series {
            batch.push(SeriesSample {
                metric: "bench_metric".into(),
                labels: labels(i),
                time_ms,
                value: value(i, k),
            });
            if batch.len() >= 200_000 {
                store.write_samples(&batch)?;
                batch.clear();
                while store.compact(200_000)?.more() {}
            }
        }
    }
    store.write_samples(&batch)?;
    while store.compact(200_000)?.more() {}
    Ok(())
}

/// Writes the same samples as OpenMetrics text for `promtool tsdb create-blocks-from`.
fn write_openmetrics(path: &Path, args: &BenchPromqlArgs, start_ms: i64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let samples = args.minutes * 60 / args.step;
    for i in 0..args.series {
        let labels = labels(i);
        for k in 0..samples {
            let t = start_ms / 1000 + k * args.step;
            writeln!(out, "bench_metric{labels} {} {t}", value(i, k))?;
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(())
}

/// A real Prometheus serving a TSDB built from the same samples; killed when dropped.
struct Peer {
    child: std::process::Child,
    base: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus on a TSDB of the same samples; also returns the TSDB's bytes on disk as
/// promtool wrote them (blocks and their index; no write-ahead log).
fn start_peer(
    args: &BenchPromqlArgs,
    dir: &Path,
    start_ms: i64,
) -> anyhow::Result<Option<(Peer, u64)>> {
    if !args.prometheus.exists() || !args.promtool.exists() {
        println!(
            "  (no {} or {}: Prometheus is not compared; Debian package prometheus)",
            args.prometheus.display(),
            args.promtool.display()
        );
        return Ok(None);
    }
    let t = Instant::now();
    let om = dir.join("samples.om");
    write_openmetrics(&om, args, start_ms)?;
    let tsdb = dir.join("prometheus-data");
    let built = std::process::Command::new(&args.promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .output()
        .context("running promtool")?;
    anyhow::ensure!(
        built.status.success(),
        "promtool create-blocks-from: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let _ = std::fs::remove_file(&om);
    let bytes = dir_bytes(&tsdb)?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new(&args.prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=30d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting prometheus")?;
    let peer = Peer {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while reqwest::blocking::get(format!("{}/-/ready", peer.base))
        .map_or(true, |r| !r.status().is_success())
    {
        anyhow::ensure!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "  Prometheus ({}) ready on the same samples in {:.1} s",
        args.prometheus.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(Some((peer, bytes)))
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry?;
        if entry.file_type().is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Runs the benchmark and prints the figures.
pub fn run(args: &BenchPromqlArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        args.series > 0 && args.step > 0 && args.minutes * 60 >= args.step * 2,
        "need at least one series and two samples"
    );
    let dir = crate::bench::temp_work_dir(args.dir.as_deref())?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    // Whole seconds, the last sample a minute ago.
    let end_ms = (now_ms / 1000 - 60) * 1000;
    let start_ms = end_ms - (args.minutes * 60 / args.step - 1) * args.step * 1000;
    let t = Instant::now();
    let store_dir = dir.path().join("probewatch");
    std::fs::create_dir_all(&store_dir)?;
    let store = SqliteStore::open(&store_dir)?;
    fill_store(&store, args, start_ms)?;
    let samples = args.series as i64 * (args.minutes * 60 / args.step);
    println!(
        "bench-promql: {} series x {} samples ({} min every {} s) = {samples} samples; \
         probewatch stored them in {:.1} s",
        args.series,
        args.minutes * 60 / args.step,
        args.minutes,
        args.step,
        t.elapsed().as_secs_f64()
    );
    store.compact_all()?;
    let usage = store.disk_usage()?;
    let peer = start_peer(args, dir.path(), start_ms)?;
    let per_sample = |bytes: u64| bytes as f64 / samples as f64;
    let used = usage.file_bytes - usage.free_bytes;
    print!(
        "  on disk: probewatch {:.2} bytes/sample ({} bytes in use of a {}-byte file; sample \
         chunks alone {:.2} bytes/sample)",
        per_sample(used),
        used,
        usage.file_bytes,
        per_sample(usage.chunk_data_bytes)
    );
    match &peer {
        Some((_, bytes)) => println!(
            ", Prometheus {:.2} bytes/sample ({bytes} bytes of blocks): ratio {:.2}",
            per_sample(*bytes),
            used as f64 / *bytes as f64
        ),
        None => println!(),
    }
    let peer = peer.map(|(peer, _)| peer);
    let store: Arc<dyn Store> = Arc::new(store);
    let ours = crate::bench_http::LoopbackServer::start(store)?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let at = end_ms / 1000;
    let range = format!("start={}&end={at}&step=60", start_ms / 1000 + 300);
    let enc = |q: &str| form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>();
    let requests: Vec<(String, String)> = vec![
        (
            "count(bench_metric)".into(),
            format!(
                "/api/v1/query?time={at}&query={}",
                enc("count(bench_metric)")
            ),
        ),
        (
            "sum by (group) (rate(bench_metric[5m]))".into(),
            format!(
                "/api/v1/query?time={at}&query={}",
                enc("sum by (group) (rate(bench_metric[5m]))")
            ),
        ),
        (
            format!("sum(max_over_time(bench_metric[{}m]))", args.minutes),
            format!(
                "/api/v1/query?time={at}&query={}",
                enc(&format!(
                    "sum(max_over_time(bench_metric[{}m]))",
                    args.minutes
                ))
            ),
        ),
        (
            "range: sum(rate(bench_metric[5m])), step 60 s".into(),
            format!(
                "/api/v1/query_range?{range}&query={}",
                enc("sum(rate(bench_metric[5m]))")
            ),
        ),
        (
            "label values of instance, with start/end".into(),
            format!(
                "/api/v1/label/instance/values?start={}&end={at}",
                start_ms / 1000
            ),
        ),
        (
            "label values of group, with start/end".into(),
            format!(
                "/api/v1/label/group/values?start={}&end={at}",
                start_ms / 1000
            ),
        ),
        (
            "label names, with start/end".into(),
            format!("/api/v1/labels?start={}&end={at}", start_ms / 1000),
        ),
        (
            "series of one group, with start/end".into(),
            format!(
                "/api/v1/series?start={}&end={at}&match%5B%5D={}",
                start_ms / 1000,
                enc("bench_metric{group=\"g07\"}")
            ),
        ),
        // Without a time range: every series ever stored (Prometheus: its whole retention).
        (
            "label values of instance, no time range".into(),
            "/api/v1/label/instance/values".into(),
        ),
        ("label names, no time range".into(), "/api/v1/labels".into()),
        (
            "series of one group, no time range".into(),
            format!(
                "/api/v1/series?match%5B%5D={}",
                enc("bench_metric{group=\"g07\"}")
            ),
        ),
    ];
    println!(
        "  {:<48} {:>14} {:>14} {:>8}",
        "request (median of runs)", "probewatch", "Prometheus", "ratio"
    );
    let mut on_sqlite = Vec::new();
    for (label, path) in &requests {
        let (mine, _) =
            crate::bench_http::time_get(&client, &format!("{}{path}", ours.base), args.repeat)
                .with_context(|| label.clone())?;
        on_sqlite.push((label.clone(), mine));
        match &peer {
            Some(peer) => {
                let (theirs, _) = crate::bench_http::time_get(
                    &client,
                    &format!("{}{path}", peer.base),
                    args.repeat,
                )
                .with_context(|| format!("prometheus: {label}"))?;
                println!(
                    "  {label:<48} {mine:>11.1} ms {theirs:>11.1} ms {:>7.2}x",
                    mine / theirs
                );
            }
            None => println!("  {label:<48} {mine:>11.1} ms {:>14} {:>8}", "-", "-"),
        }
    }
    drop(ours);
    if let Some(admin) = &args.postgres {
        let on_pg = crate::bench_store::on_fresh_postgres(
            admin,
            "bench_promql",
            &probewatch_store::StoreOptions::default(),
            |store| {
                let t = Instant::now();
                fill_store(&*store, args, start_ms)?;
                println!(
                    "  on postgresql: the same samples stored in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
                let server = crate::bench_http::LoopbackServer::start(store)?;
                let mut times = Vec::new();
                for (label, path) in &requests {
                    let (took, _) = crate::bench_http::time_get(
                        &client,
                        &format!("{}{path}", server.base),
                        args.repeat,
                    )
                    .with_context(|| format!("postgresql: {label}"))?;
                    println!("  {label:<48} {took:>11.1} ms");
                    times.push((label.clone(), took));
                }
                Ok(times)
            },
        )?;
        crate::bench_store::print_ratios(&on_sqlite, &on_pg, 48);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
