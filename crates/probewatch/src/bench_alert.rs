//! `probewatch bench-alert`: latency from a failing result file being written to the webhook
//! receiving the alert, through a real `probewatch run` process.
//!
//! A webhook receiver runs in this process. For each of `--alerts` rounds the harness writes a
//! result file whose `login` check is critical for a new probe (so each round is a new alert
//! of a `for: 0s` rule) and waits for the POST naming that probe. Reported: median, p99 and max
//! over the rounds. The baseline, in the same invocation, is the bare HTTP round trip of the
//! same kind of POST from this process to the receiver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;

/// `probewatch bench-alert` options.
#[derive(Debug, Args, Clone)]
pub struct BenchAlertArgs {
    /// Alerts to time.
    #[arg(long, default_value_t = 50)]
    pub alerts: usize,
    /// Where to make the temporary spool and store (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Receives webhook POSTs; sends each body (as text) with its arrival time.
fn receiver() -> anyhow::Result<(String, Receiver<(Instant, String)>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let at = Instant::now();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send((at, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    Ok((url, rx))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark and prints the figures.
pub fn run(args: &BenchAlertArgs) -> anyhow::Result<std::process::ExitCode> {
    let work = crate::bench::temp_work_dir(args.dir.as_deref())?;
    let spool = work.path().join("spool");
    std::fs::create_dir_all(&spool)?;
    let (url, bodies) = receiver()?;
    let rules = work.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: bench\n    interval: 1h\n    rules:\n      - alert: LoginCritical\n        expr: probe_check_status{check=\"login\"} == 2\n",
    )?;
    let config = format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"bench\"\nurl = {url:?}\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        spool.display().to_string()
    );
    let daemon = crate::bench::Daemon::start_with(work.path(), &config)?;

    // Baseline: the same POST straight from here.
    let client = reqwest::blocking::Client::new();
    let mut baseline = Vec::new();
    for i in 0..args.alerts {
        let t = Instant::now();
        client
            .post(&url)
            .body(format!("{{\"baseline\": {i}}}"))
            .send()
            .context("baseline POST")?;
        let _ = bodies.recv_timeout(Duration::from_secs(5));
        baseline.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut latencies = Vec::new();
    for i in 0..args.alerts {
        let probe = format!("bench-{i}");
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let xml = format!(
            "<probe name=\"{probe}\" host=\"h\" time=\"{now}\"><check name=\"login\" status=\"critical\">down</check></probe>"
        );
        let written = Instant::now();
        std::fs::write(spool.join(format!("{probe}.xml")), xml)?;
        let needle = format!("\"probe\":\"{probe}\"");
        loop {
            let (at, body) = bodies
                .recv_timeout(Duration::from_secs(30))
                .with_context(|| format!("no notification for {probe} within 30 s"))?;
            if body.contains(&needle) {
                latencies.push((at - written).as_secs_f64() * 1e3);
                break;
            }
        }
    }
    daemon.stop();
    baseline.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    let (b50, l50) = (percentile(&baseline, 0.5), percentile(&latencies, 0.5));
    println!(
        "bench-alert: {} alerts, rule with for: 0s, webhook on loopback",
        args.alerts
    );
    println!(
        "  baseline: POST round trip       p50 {b50:7.2} ms  p99 {:7.2} ms  max {:7.2} ms",
        percentile(&baseline, 0.99),
        percentile(&baseline, 1.0)
    );
    println!(
        "  file written -> webhook received p50 {l50:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  ({:.1}x baseline p50)",
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        l50 / b50
    );
    Ok(std::process::ExitCode::SUCCESS)
}
