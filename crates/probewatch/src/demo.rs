//! `probewatch demo`: everything running on a temporary data directory, with built-in example
//! probes that write realistic result files every few seconds (a check that fails and
//! recovers, one that flaps, one probe that goes silent) and rules that alert on them, so a
//! newcomer sees a live dashboard with alerts within a minute.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::config::{Config, ConfigFile, Overrides, SpoolFile};

/// Seconds between two rounds of probe results.
const ROUND_SECONDS: u64 = 3;

/// After this long the `batch-report` probe stops reporting.
const SILENT_AFTER: Duration = Duration::from_secs(45);

const RULES: &str = r#"groups:
  - name: demo
    interval: 5s
    rules:
      - alert: CheckCritical
        expr: probe_check_status == 2
        for: 10s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.probe }} on {{ $labels.host }}: {{ $labels.check }} is critical"
      - alert: ProbeSilent
        expr: absent_over_time(probe_check_status{probe="batch-report"}[30s])
        labels:
          severity: ticket
        annotations:
          summary: "batch-report has not reported for 30 s"
      - alert: CheckFlapping
        expr: changes(probe_check_status[2m]) > 6
        labels:
          severity: ticket
        annotations:
          summary: "{{ $labels.probe }} {{ $labels.check }} changed status {{ $value }} times in 2m"
      - record: probe:checks_failing:count
        expr: count by (probe) (probe_check_status > 0)
"#;

/// Writes `content` as `dir/name` the way a careful probe does: a temporary name, then rename.
fn publish(dir: &Path, name: &str, content: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// One round of results; `round` counts from 0.
fn write_round(spool: &Path, round: u64, started: Instant) -> std::io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // send-message fails for 30 s out of every 90 s.
    let send = if round % 30 >= 20 { "critical" } else { "ok" };
    let users = 1200 + (round * 37) % 300;
    publish(
        spool,
        &format!("chat-frontend-{round}.xml"),
        &format!(
            r#"<probe name="chat-frontend" host="web-1" time="{now}" interval="{ROUND_SECONDS}s">
  <check name="login" status="ok" duration="0.0{}">logged in as probe user</check>
  <check name="send-message" status="{send}" duration="{}">{}</check>
  <metric name="online_users" value="{users}"/>
</probe>"#,
            10 + round % 80,
            if send == "ok" { "0.3" } else { "5.0" },
            if send == "ok" {
                "delivered"
            } else {
                "timeout after 5s"
            },
        ),
    )?;
    let slow = round % 10 == 7;
    publish(
        spool,
        &format!("shop-api-{round}.xml"),
        &format!(
            r#"<probe name="shop-api" host="web-2" time="{now}" interval="{ROUND_SECONDS}s">
  <check name="checkout" status="{}" duration="{}">{}</check>
  <metric name="queue_depth" value="{}"><label name="queue" value="orders"/></metric>
</probe>"#,
            if slow { "warning" } else { "ok" },
            if slow { "2.4" } else { "0.18" },
            if slow { "slow: 2.4 s" } else { "order placed" },
            (round * 7) % 23,
        ),
    )?;
    // The search check flaps: a different status every round.
    publish(
        spool,
        &format!("search-{round}.xml"),
        &format!(
            r#"<probe name="search" host="web-3" time="{now}" interval="{ROUND_SECONDS}s">
  <check name="query" status="{}" duration="0.2">{}</check>
</probe>"#,
            if round.is_multiple_of(2) {
                "ok"
            } else {
                "critical"
            },
            if round.is_multiple_of(2) {
                "42 hits"
            } else {
                "index unavailable"
            },
        ),
    )?;
    if started.elapsed() < SILENT_AFTER {
        publish(
            spool,
            &format!("batch-report-{round}.xml"),
            &format!(
                r#"<probe name="batch-report" host="batch-1" time="{now}" interval="{ROUND_SECONDS}s">
  <check name="export" status="ok" duration="1.5">exported 1000 rows</check>
</probe>"#
            ),
        )?;
    }
    Ok(())
}

/// Minutes between two results of the day of history written at start.
const HISTORY_STEP_MINUTES: u64 = 5;

/// The probes' last 24 hours, as one file of results every 5 minutes, so the overview's
/// strips, the check pages and the charts have something to show from the first second:
/// chat-frontend's send-message failed for 40 minutes five hours ago, checkout is slow now
/// and then, search flapped for an hour in the night, and durations follow the day.
fn history(now: u64) -> String {
    let mut xml = String::from("<results>\n");
    let steps = 24 * 60 / HISTORY_STEP_MINUTES;
    // Every 5 minutes, then one result a round before now, so the live results join on.
    let times = (1..=steps)
        .rev()
        .map(|k| now - k * HISTORY_STEP_MINUTES * 60)
        .chain([now - ROUND_SECONDS]);
    for (k, t) in times.enumerate().map(|(i, t)| (steps - i as u64, t)) {
        let minutes_ago = (now - t) / 60;
        // A daily wave in the durations: slowest in the afternoon.
        let wave = ((t % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU).sin();
        let interval = HISTORY_STEP_MINUTES * 60;
        let send_failed = (280..320).contains(&minutes_ago);
        let slow = k % 23 == 0;
        let flapping = (900..960).contains(&minutes_ago);
        let search = if flapping && k % 2 == 0 {
            "critical"
        } else {
            "ok"
        };
        xml.push_str(&format!(
            r#"<probe name="chat-frontend" host="web-1" time="{t}" interval="{interval}s">
  <check name="login" status="ok" duration="{:.3}">logged in as probe user</check>
  <check name="send-message" status="{}" duration="{}">{}</check>
  <metric name="online_users" value="{}"/>
</probe>
<probe name="shop-api" host="web-2" time="{t}" interval="{interval}s">
  <check name="checkout" status="{}" duration="{:.2}">{}</check>
</probe>
<probe name="search" host="web-3" time="{t}" interval="{interval}s">
  <check name="query" status="{search}" duration="{:.3}">{}</check>
</probe>
<probe name="batch-report" host="batch-1" time="{t}" interval="{interval}s">
  <check name="export" status="ok" duration="1.5">exported 1000 rows</check>
</probe>
"#,
            0.04 + 0.02 * wave,
            if send_failed { "critical" } else { "ok" },
            if send_failed { "5.0" } else { "0.3" },
            if send_failed {
                "timeout after 5s"
            } else {
                "delivered"
            },
            (1300.0 + 400.0 * wave) as u64,
            if slow { "warning" } else { "ok" },
            if slow { 2.4 } else { 0.18 + 0.05 * wave },
            if slow { "slow: 2.4 s" } else { "order placed" },
            0.2 + 0.08 * wave,
            if search == "ok" {
                "42 hits"
            } else {
                "index unavailable"
            },
        ));
    }
    xml.push_str("</results>\n");
    xml
}

/// Runs the demo until SIGINT/SIGTERM; `listen` overrides 127.0.0.1:9180.
pub fn run(listen: Option<String>) -> anyhow::Result<ExitCode> {
    let work = tempfile::Builder::new()
        .prefix("probewatch-demo-")
        .tempdir()
        .context("creating the demo directory")?;
    let spool = work.path().join("spool");
    std::fs::create_dir_all(&spool)?;
    let rules = work.path().join("demo-rules.yml");
    std::fs::write(&rules, RULES)?;
    let file = ConfigFile {
        data_dir: Some(work.path().join("data")),
        spools: vec![SpoolFile {
            name: Some("demo".into()),
            path: spool.clone(),
            // The demo writes many small files; do not keep them.
            after_ingest: Some("delete".into()),
            ..SpoolFile::default()
        }],
        rule_files: vec![rules.display().to_string()],
        ..ConfigFile::default()
    };
    let config = Config::resolve(
        file,
        &Overrides {
            listen,
            ..Overrides::default()
        },
    )?;
    crate::telemetry::init_logging(config.log_format);
    println!(
        "demo: four example probes write into {} every {ROUND_SECONDS} s; \
         batch-report falls silent after {} s",
        spool.display(),
        SILENT_AFTER.as_secs()
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    publish(&spool, "history.xml", &history(now)).context("writing the demo history")?;
    let started = Instant::now();
    std::thread::Builder::new()
        .name("pw-demo-probes".into())
        .spawn(move || {
            for round in 0.. {
                if let Err(e) = write_round(&spool, round, started) {
                    tracing::warn!(error = %e, "demo probe could not write");
                }
                std::thread::sleep(Duration::from_secs(ROUND_SECONDS));
            }
        })?;
    crate::daemon::run(config, crate::shutdown::Shutdown::new())?;
    drop(work);
    Ok(ExitCode::SUCCESS)
}
