//! `probewatch bench-formats`: how fast each result format parses, beside XML, in one run.
//!
//! The same content in each format (`bench::bench_file`): the ingest bench's file (2
//! checks, 10 metrics with a label) as XML and as JSON; as Prometheus text, its 10 metrics
//! plus the 2 checks' statuses as gauges (the format has no checks). Each set is parsed whole `--repeat` times; the
//! median gives MB/s and files/s, and the ratio to XML.

use std::time::Instant;

use clap::Args;
use probewatch_core::format::FileContext;
use probewatch_core::{Format, ParseLimits, parse};

use crate::bench::median;

/// `probewatch bench-formats` options.
#[derive(Debug, Args, Clone)]
pub struct BenchFormatsArgs {
    /// Files per format.
    #[arg(long, default_value_t = 20_000)]
    pub files: u64,
    /// Runs of each; medians are reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

/// Median seconds to parse every file of `files` as `format`.
fn time_parse(format: Format, name: &str, files: &[String], repeat: usize) -> anyhow::Result<f64> {
    let limits = ParseLimits::default();
    let mut runs = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        for (i, f) in files.iter().enumerate() {
            parse(
                format,
                f.as_bytes(),
                FileContext {
                    mtime_ms: 0,
                    name,
                    mapping: None,
                },
                &limits,
            )
            .map_err(|r| anyhow::anyhow!("bench file {i} ({}): {r}", format.as_str()))?;
        }
        runs.push(start.elapsed().as_secs_f64());
    }
    Ok(median(&mut runs))
}

/// Entry point of `probewatch bench-formats`.
pub fn run(args: &BenchFormatsArgs) -> anyhow::Result<std::process::ExitCode> {
    let sets: [(Format, &str, Vec<String>); 3] = [
        (
            Format::Xml,
            "r.xml",
            (0..args.files)
                .map(|n| crate::bench::result_file(n, 1000))
                .collect(),
        ),
        (
            Format::Json,
            "r.json",
            (0..args.files)
                .map(|n| crate::bench::json_file(n, 1000))
                .collect(),
        ),
        (
            Format::Prometheus,
            "r.prom",
            (0..args.files)
                .map(|n| crate::bench::prometheus_file(n, 1000))
                .collect(),
        ),
    ];
    println!(
        "bench-formats: {} files per format, median of {} runs",
        args.files, args.repeat
    );
    println!(
        "{:<12} {:>10} {:>10} {:>12} {:>12}",
        "format", "bytes/file", "MB/s", "files/s", "files/s ÷ xml"
    );
    let mut xml_rate = f64::NAN;
    for (format, name, files) in &sets {
        let bytes: usize = files.iter().map(String::len).sum();
        let secs = time_parse(*format, name, files, args.repeat)?;
        let rate = files.len() as f64 / secs;
        if *format == Format::Xml {
            xml_rate = rate;
        }
        println!(
            "{:<12} {:>10} {:>10.1} {:>12.0} {:>12.2}",
            format.as_str(),
            bytes / files.len().max(1),
            bytes as f64 / secs / 1e6,
            rate,
            rate / xml_rate
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
