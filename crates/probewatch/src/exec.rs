//! `probewatch exec`: runs any Nagios plugin (or any command that follows the plugin
//! guidelines) with a timeout and writes its result into a spool, atomically (a dotfile
//! first, then a rename), as a probewatch result file the spool reads like any other.
//!
//! Exit code → status (0–3; anything else, a signal or a timeout: unknown), the first
//! line → the message (the long output kept after it), performance data → metrics with
//! units normalised (`probewatch_core::format::nagios`). The plugin's output is read up to
//! a bound and the rest discarded, so a plugin that writes 100 MB costs nothing but time,
//! and one that hangs is killed with its whole process group at the timeout.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use probewatch_core::Status;
use probewatch_core::format::nagios::{parse_plugin_output, status_of_exit};

/// `probewatch exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The probe's name in the result.
    #[arg(long)]
    pub probe: String,
    /// The check's name in the result.
    #[arg(long)]
    pub check: String,
    /// The spool directory the result is written into.
    #[arg(long)]
    pub spool: PathBuf,
    /// The host (default: none; a spool's or an agent's host applies).
    #[arg(long)]
    pub host: Option<String>,
    /// How long the plugin may run; then it is killed and the result is unknown.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    /// How often this runs (e.g. 60s): tells probewatch when the check is overdue.
    #[arg(long)]
    pub interval: Option<String>,
    /// Most bytes of the plugin's output kept.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_output_bytes: usize,
    /// The plugin and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// What a run of the plugin gave.
struct Outcome {
    status: Status,
    message: String,
    metrics: Vec<probewatch_core::Metric>,
    duration: Duration,
}

/// Entry point of `probewatch exec`: 0 once the result is in the spool (whatever the
/// plugin's status), 1 when it could not be written.
pub fn exec_command(args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let timeout = humantime::parse_duration(&args.timeout)
        .with_context(|| format!("--timeout {:?} is not a duration", args.timeout))?;
    if let Some(interval) = &args.interval {
        humantime::parse_duration(interval)
            .with_context(|| format!("--interval {interval:?} is not a duration"))?;
    }
    let started_at = crate::ingest::now_ms();
    let outcome = run(args, timeout);
    let path = write_result(args, &outcome, started_at)?;
    println!(
        "{} {}: {} ({} metrics) -> {}",
        args.probe,
        args.check,
        outcome.status,
        outcome.metrics.len(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run(args: &ExecArgs, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let unknown = |message: String| Outcome {
        status: Status::Unknown,
        message,
        metrics: Vec::new(),
        duration: start.elapsed(),
    };
    let Some((program, rest)) = args.command.split_first() else {
        return unknown("no command given".into());
    };
    let mut child = match Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return unknown(format!("cannot run {program}: {err}")),
    };
    let max = args.max_output_bytes;
    let read_bounded = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            let mut total = 0usize;
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n;
                        let room = max.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            (kept, total)
        })
    };
    let stdout = child
        .stdout
        .take()
        .map(|s| read_bounded(Box::new(s) as Box<dyn Read + Send>));
    let stderr = child
        .stderr
        .take()
        .map(|s| read_bounded(Box::new(s) as Box<dyn Read + Send>));
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                // The whole group: a shell script's children too.
                let _ = rustix::process::kill_process_group(
                    rustix::process::Pid::from_child(&child),
                    rustix::process::Signal::KILL,
                );
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let duration = start.elapsed();
    let (out, out_total) = stdout.and_then(|h| h.join().ok()).unwrap_or_default();
    let (err, _) = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let Some(status) = status else {
        return Outcome {
            duration,
            ..unknown(format!(
                "plugin timed out after {} and was killed",
                humantime::format_duration(timeout)
            ))
        };
    };
    let text = String::from_utf8_lossy(&out);
    let mut output = parse_plugin_output(&text);
    if output.summary.is_empty() {
        // Nothing on standard output: what it said on standard error is the best message.
        let err = String::from_utf8_lossy(&err);
        output.summary = err.lines().next().unwrap_or("").trim().to_string();
        if output.summary.is_empty() {
            output.summary = "(no output)".into();
        }
    }
    let mut message = output.message();
    if out_total > out.len() {
        message.push_str(&format!(
            "\n(output cut at {} of {out_total} bytes)",
            out.len()
        ));
    }
    match (status.code(), status.signal()) {
        (Some(code), _) if !(0..=3).contains(&code) => {
            message.push_str(&format!("\n(exit code {code}: not a plugin status)"));
        }
        (None, Some(signal)) => message.push_str(&format!("\n(killed by signal {signal})")),
        _ => {}
    }
    Outcome {
        status: status_of_exit(status.code()),
        message,
        metrics: output.metrics,
        duration,
    }
}

/// The result file's name: probe and check, with anything but letters, digits, `-`, `_`
/// and `.` replaced.
fn file_name(probe: &str, check: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}--{}.xml", clean(probe), clean(check))
}

/// XML text with what XML 1.0 cannot hold (control characters but tab and newline)
/// replaced, and the markup characters escaped.
fn xml_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Writes the result into the spool: a dotfile (which spools skip), fsynced, then renamed
/// over the check's file, so a reader sees the old result or the new one, never half.
fn write_result(args: &ExecArgs, o: &Outcome, started_at: i64) -> anyhow::Result<PathBuf> {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    xml.push_str(&format!(
        "<probe name=\"{}\" time=\"{}.{:03}\"",
        xml_text(&args.probe),
        started_at / 1000,
        started_at % 1000
    ));
    if let Some(host) = &args.host {
        xml.push_str(&format!(" host=\"{}\"", xml_text(host)));
    }
    if let Some(interval) = &args.interval {
        xml.push_str(&format!(" interval=\"{}\"", xml_text(interval)));
    }
    xml.push_str(">\n");
    xml.push_str(&format!(
        "  <check name=\"{}\" status=\"{}\" duration=\"{:.6}\">{}</check>\n",
        xml_text(&args.check),
        o.status,
        o.duration.as_secs_f64(),
        xml_text(&o.message)
    ));
    for m in &o.metrics {
        xml.push_str(&format!(
            "  <metric name=\"{}\" value=\"{}\">",
            m.name, m.value
        ));
        for (k, v) in m.labels.iter() {
            xml.push_str(&format!("<label name=\"{k}\" value=\"{}\"/>", xml_text(v)));
        }
        xml.push_str("</metric>\n");
    }
    xml.push_str("</probe>\n");
    std::fs::create_dir_all(&args.spool)
        .with_context(|| format!("creating spool {}", args.spool.display()))?;
    let name = file_name(&args.probe, &args.check);
    let target = args.spool.join(&name);
    let tmp = args
        .spool
        .join(format!(".{name}.{}.tmp", std::process::id()));
    let write = |path: &Path| -> std::io::Result<()> {
        let mut file = std::fs::File::create(path)?;
        file.write_all(xml.as_bytes())?;
        file.sync_all()
    };
    write(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &target).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming into {}", target.display())
    })?;
    Ok(target)
}
