//! The one-shot commands and the HTTP API's shapes.

use std::process::Command;
use std::time::Duration;

use crate::util::*;

#[test]
fn check_reports_each_bad_file_and_exits_nonzero() {
    let env = Env::new();
    let good = env.spool().join("good.xml");
    let bad = env.spool().join("bad.xml");
    std::fs::write(&good, result_xml(1)).expect("write");
    std::fs::write(
        &bad,
        "<probe name=\"p\">\n  <check name=\"c\" status=\"maybe\"/>\n</probe>",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success());
    let out = Command::new(BIN)
        .arg("check")
        .arg(env.spool())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("ok   {}", good.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "FAIL {}: line 2, column 3: check \"c\": unknown status \"maybe\"",
            bad.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 file(s) checked, 1 ok, 1 bad"),
        "{stdout}"
    );
}

#[test]
fn ingest_imports_once_through_the_ledger() {
    let env = Env::new();
    for n in 0..20u64 {
        std::fs::write(env.spool().join(format!("i{n}.xml")), result_xml(n)).expect("write");
    }
    let run = || {
        Command::new(BIN)
            .arg("ingest")
            .arg("--data")
            .arg(env.data())
            .arg(env.spool())
            .output()
            .expect("run")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("20 file(s)") && stdout.contains("20 ingested, 0 rejected"),
        "{stdout}"
    );
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 ingested, 0 rejected, 20 already known"),
        "{stdout}"
    );
    // A bad file makes the import exit 1 and is listed.
    std::fs::write(env.spool().join("bad.xml"), "").expect("write");
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("bad.xml: file is empty"), "{stdout}");
    // The daemon on the same data sees the imported results.
    let daemon = env.start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], 20);
    assert_eq!(stats["files_rejected"], 1);
}

#[test]
fn api_shapes_and_metrics() {
    let env = Env::new();
    let daemon = env.start(&[]);
    assert_eq!(daemon.get_text("/healthz"), "ok\n");
    for n in [1u64, 2, 5] {
        // p1, p2 and p5 (n % 7); n = 5 is critical
        std::fs::write(env.spool().join(format!("r{n}.xml")), result_xml(n)).expect("write");
    }
    daemon.wait_files(3, Duration::from_secs(10));
    let stats = daemon.stats();
    for key in [
        "files_ingested",
        "files_rejected",
        "check_results",
        "samples",
        "series",
    ] {
        assert!(stats[key].is_u64(), "{key} missing: {stats}");
    }
    assert_eq!(stats["check_results"], 3);
    let checks = daemon.get("/api/v1/checks");
    let p5 = checks["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["probe"] == "p5")
        .expect("p5")
        .clone();
    assert_eq!(p5["status"], "critical");
    assert_eq!(p5["check"], "login");
    assert_eq!(p5["host"], "h1");
    assert_eq!(p5["message"], "result 5");
    assert_eq!(p5["time"], "2023-11-14T22:13:25Z");
    let history = daemon
        .get("/api/v1/checks/history?probe=p5&check=login&from=1700000000&to=2023-11-15T00:00:00Z");
    assert_eq!(history["results"].as_array().expect("results").len(), 1);
    let empty =
        daemon.get("/api/v1/checks/history?probe=p5&check=login&from=1700000010&to=1700000020");
    assert_eq!(empty["results"].as_array().expect("results").len(), 0);
    let bad = reqwest::blocking::get(format!("{}/api/v1/checks/history?probe=p5", daemon.base))
        .expect("get");
    assert_eq!(bad.status(), 400);
    let metrics = daemon.get_text("/metrics");
    for name in [
        "probewatch_files_ingested_total",
        "probewatch_files_rejected_total",
        "probewatch_ingest_latency_seconds_bucket",
        "probewatch_inotify_overflows_total",
        "probewatch_rescans_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert_eq!(
        daemon.metric("probewatch_ingest_latency_seconds_count"),
        3.0
    );
    daemon.stop();
}

#[test]
fn json_logs_and_clean_shutdown() {
    let env = Env::new();
    let daemon = env.start(&["--log-format", "json"]);
    std::fs::write(env.spool().join("bad.xml"), "").expect("write");
    daemon.wait_files(1, Duration::from_secs(10));
    let log = daemon.stop();
    let line = log
        .lines()
        .find(|l| l.contains("rejected "))
        .expect("rejection logged");
    let json: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(json["level"], "WARN");
    assert_eq!(json["reason"], "empty");
    assert!(log.contains("stopped"));
    // A lone server giving its lease up as it stops is not "another server" taking it.
    assert!(!log.contains("another server holds the lease"), "{log}");
}
