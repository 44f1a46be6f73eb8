//! Result formats other than XML through the real binary: a JSON spool, an `auto` spool that
//! takes XML and JSON side by side, and `probewatch check` on JSON files.

use std::time::Duration;

use crate::util::*;

fn json_result(n: u64) -> String {
    format!(
        r#"{{"probe": "api", "host": "h1", "time": {time}, "interval": "60s",
 "checks": [{{"name": "login", "status": "{status}", "duration": 0.25, "message": "result {n}"}}],
 "metrics": [{{"name": "queue_depth", "value": {n}, "labels": {{"queue": "in"}}}}]}}"#,
        time = 1_700_000_000 + n,
        status = if n.is_multiple_of(4) {
            "critical"
        } else {
            "ok"
        },
    )
}

#[test]
fn a_json_spool_is_ingested_like_xml_and_bad_json_is_rejected_with_its_place() {
    let env = Env::new();
    let daemon = env.start_with_config(&format!(
        "[[spool]]\npath = {:?}\nformat = \"json\"\n",
        env.spool().display().to_string()
    ));
    for n in 0..20u64 {
        write_renamed(&env.spool().join(format!("r{n:02}.json")), &json_result(n));
    }
    std::fs::write(
        env.spool().join("bad.json"),
        "{\"probe\": \"api\",\n \"checks\": [{\"name\": \"x\", \"status\": \"PASS\"}]}",
    )
    .expect("write");
    // Not a JSON spool's file: left alone.
    std::fs::write(env.spool().join("other.xml"), result_xml(1)).expect("write");
    daemon.wait_files(21, Duration::from_secs(60));
    let stats = daemon.stats();
    assert_eq!(stats["files_ingested"], 20, "{stats}");
    assert_eq!(stats["files_rejected"], 1, "{stats}");
    let rejected = daemon.get("/api/v1/files?status=rejected");
    let error = rejected["files"][0]["error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        error.contains("line 2") && error.contains("checks[0].status") && error.contains("PASS"),
        "{rejected}"
    );
    let q = daemon.get("/api/v1/query?query=queue_depth{queue=\"in\",host=\"h1\"}&time=1700000019");
    assert_eq!(q["data"]["result"][0]["value"][1], "19", "{q}");
    let status =
        daemon.get("/api/v1/query?query=probe_check_status{probe=\"api\"}&time=1700000016");
    assert_eq!(status["data"]["result"][0]["value"][1], "2", "{status}");
    daemon.stop();
}

#[test]
fn an_auto_spool_reads_xml_and_json_side_by_side() {
    let env = Env::new();
    let daemon = env.start_with_config(&format!(
        "[[spool]]\npath = {:?}\nformat = \"auto\"\n",
        env.spool().display().to_string()
    ));
    std::fs::write(env.spool().join("a.xml"), result_xml(3)).expect("write");
    std::fs::write(env.spool().join("b.json"), json_result(5)).expect("write");
    daemon.wait_files(2, Duration::from_secs(60));
    assert_eq!(daemon.stats()["files_ingested"], 2);
    daemon.stop();
}

#[test]
fn check_validates_json_files_and_names_the_place_of_an_error() {
    let env = Env::new();
    let good = env.spool().join("good.json");
    std::fs::write(&good, json_result(1)).expect("write");
    let bad = env.spool().join("bad.json");
    std::fs::write(&bad, "[{\"probe\": \"p\"}, {\"probe\": \"q\", \"metrics\": [{\"name\": \"a.b\", \"value\": 1}]}]").expect("write");
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg(env.spool())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok   ") && stdout.contains("good.json"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL")
            && stdout.contains("[1].metrics[0].name")
            && stdout.contains("column"),
        "{stdout}"
    );
}

#[test]
fn a_node_exporter_textfile_directory_feeds_probewatch_unchanged() {
    let env = Env::new();
    let daemon = env.start_with_config(&format!(
        "[[spool]]\npath = {:?}\nformat = \"prometheus\"\nlabels = {{ host = \"web-7\" }}\n",
        env.spool().display().to_string()
    ));
    // As textfile scripts write them: a temporary name, then a rename.
    write_renamed(
        &env.spool().join("apt.prom"),
        "# HELP apt_upgrades_pending Apt packages pending updates by origin.\n\
         # TYPE apt_upgrades_pending gauge\n\
         apt_upgrades_pending{origin=\"stable-security\",arch=\"amd64\"} 3\n\
         apt_upgrades_pending{origin=\"stable\",arch=\"amd64\"} 12\n\
         node_reboot_required 1\n",
    );
    write_renamed(
        &env.spool().join("broken.prom"),
        "ok_metric 1\nbad metric name 2\n",
    );
    daemon.wait_files(2, Duration::from_secs(60));
    let q =
        daemon.get("/api/v1/query?query=sum(apt_upgrades_pending{probe=\"apt\",host=\"web-7\"})");
    assert_eq!(q["data"]["result"][0]["value"][1], "15", "{q}");
    let rejected = daemon.get("/api/v1/files?status=rejected");
    let error = rejected["files"][0]["error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(error.contains("line 2"), "{rejected}");
    // The file is rewritten with new values: the newest are what an instant query sees.
    std::thread::sleep(Duration::from_millis(1100));
    write_renamed(
        &env.spool().join("apt.prom"),
        "apt_upgrades_pending{origin=\"stable\",arch=\"amd64\"} 2\nnode_reboot_required 0\n",
    );
    daemon.wait_files(3, Duration::from_secs(60));
    let q = daemon.get("/api/v1/query?query=node_reboot_required{probe=\"apt\"}");
    assert_eq!(q["data"]["result"][0]["value"][1], "0", "{q}");
    daemon.stop();
}
