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
    let daemon = env.start_with_spool_format("json");
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
    let daemon = env.start_with_spool_format("auto");
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
    // HELP and TYPE feed the metadata API, as Grafana asks for it.
    let meta = daemon.get("/api/v1/metadata?metric=apt_upgrades_pending");
    assert_eq!(
        meta["data"]["apt_upgrades_pending"][0]["type"], "gauge",
        "{meta}"
    );
    assert_eq!(
        meta["data"]["apt_upgrades_pending"][0]["help"], "Apt packages pending updates by origin.",
        "{meta}"
    );
    // The file is rewritten with new values: the newest are what an instant query sees.
    std::thread::sleep(Duration::from_millis(1100));
    write_renamed(
        &env.spool().join("apt.prom"),
        "apt_upgrades_pending{origin=\"stable\",arch=\"amd64\"} 2\nnode_reboot_required 0\n",
    );
    daemon.wait_files(3, Duration::from_secs(60));
    let q = daemon.get("/api/v1/query?query=node_reboot_required{probe=\"apt\"}");
    assert_eq!(q["data"]["result"][0]["value"][1], "0", "{q}");
    // The series the rewrite dropped is stale at once, as Prometheus marks a scrape's
    // vanished series; the one it kept has its new value.
    let q = daemon.get("/api/v1/query?query=apt_upgrades_pending{probe=\"apt\"}");
    let result = q["data"]["result"].as_array().expect("result");
    assert_eq!(result.len(), 1, "{q}");
    assert_eq!(result[0]["metric"]["origin"], "stable", "{q}");
    assert_eq!(result[0]["value"][1], "2", "{q}");
    daemon.stop();
}

/// Debian's monitoring-plugins-basic, which `.ci/run` installs; `None` (SKIPPED) elsewhere.
fn plugins() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from("/usr/lib/nagios/plugins");
    if dir.join("check_dummy").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI installs monitoring-plugins-basic; the plugin tests must not be skipped"
    );
    eprintln!("SKIPPED: no /usr/lib/nagios/plugins (Debian package monitoring-plugins-basic)");
    None
}

fn exec(
    spool: &std::path::Path,
    probe: &str,
    check: &str,
    extra: &[&str],
    command: &[&str],
) -> String {
    let out = std::process::Command::new(BIN)
        .args(["exec", "--probe", probe, "--check", check, "--spool"])
        .arg(spool)
        .args(extra)
        .arg("--")
        .args(command)
        .output()
        .expect("run probewatch exec");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exec_runs_real_nagios_plugins_into_a_spool_and_the_daemon_ingests_them() {
    let Some(plugins) = plugins() else {
        return;
    };
    let env = Env::new();
    let daemon = env.start(&[]);
    let spool = env.spool();
    let p = |name: &str| plugins.join(name).display().to_string();
    // check_dummy: the status and text it is told.
    exec(
        &spool,
        "dummy",
        "warn",
        &[],
        &[&p("check_dummy"), "1", "slow but fine"],
    );
    // check_disk: perfdata in bytes, with thresholds and limits.
    exec(
        &spool,
        "disk",
        "root",
        &["--interval", "60s"],
        &[&p("check_disk"), "-w", "10%", "-c", "5%", "-p", "/"],
    );
    // check_tcp against a listener of ours, and against a closed port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    exec(
        &spool,
        "tcp",
        "open",
        &[],
        &[&p("check_tcp"), "-H", "127.0.0.1", "-p", &port],
    );
    drop(listener);
    exec(
        &spool,
        "tcp",
        "closed",
        &[],
        &[&p("check_tcp"), "-H", "127.0.0.1", "-p", &port],
    );
    // A plugin that hangs, one with garbage perfdata, one that writes 100 MB, one missing.
    exec(
        &spool,
        "hang",
        "sleep",
        &["--timeout", "1s"],
        &["sh", "-c", "sleep 30"],
    );
    exec(
        &spool,
        "junk",
        "perf",
        &[],
        &["sh", "-c", "echo 'OK - fine|ok=1s junk ==;; x=1zz'; exit 0"],
    );
    exec(
        &spool,
        "big",
        "out",
        &[],
        &[
            "sh",
            "-c",
            "head -c 100000000 /dev/zero | tr '\\0' a; exit 2",
        ],
    );
    exec(
        &spool,
        "none",
        "missing",
        &[],
        &["/nonexistent/check_nothing"],
    );
    daemon.wait_files(8, Duration::from_secs(60));
    assert_eq!(daemon.stats()["files_rejected"], 0, "{}", daemon.log());
    let status = |probe: &str, check: &str| -> (String, String) {
        let h = daemon.get(&format!(
            "/api/v1/checks/history?probe={probe}&check={check}&from=0&to=9999999999"
        ));
        (
            h["results"][0]["status"].as_str().unwrap_or("").to_string(),
            h["results"][0]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    assert_eq!(
        status("dummy", "warn"),
        ("warning".into(), "WARNING: slow but fine".into())
    );
    assert_eq!(status("tcp", "open").0, "ok");
    assert_eq!(status("tcp", "closed").0, "critical");
    let (s, m) = status("hang", "sleep");
    assert!(
        s == "unknown" && m.contains("timed out after 1s"),
        "{s} {m}"
    );
    let (s, m) = status("junk", "perf");
    assert!(
        s == "ok" && m.contains("perfdata not understood") && m.contains("x=1zz"),
        "{s} {m}"
    );
    let (s, m) = status("big", "out");
    assert!(
        s == "critical" && m.contains("output cut at"),
        "{s} {}",
        m.len()
    );
    let (s, m) = status("none", "missing");
    assert!(s == "unknown" && m.contains("cannot run"), "{s} {m}");
    // Perfdata: check_disk's used bytes on / and its maximum, in bytes; check_tcp's time in
    // seconds.
    let disk = daemon.get("/api/v1/query?query=nagios_perf_value{probe=\"disk\",unit=\"bytes\"}");
    let used: f64 = disk["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0.0);
    assert!(used > 1e6, "{disk}");
    let max = daemon.get("/api/v1/query?query=nagios_perf_max{probe=\"disk\"}");
    assert!(
        max["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{max}"
    );
    let tcp = daemon
        .get("/api/v1/query?query=nagios_perf_value{probe=\"tcp\",perf=\"time\",unit=\"seconds\"}");
    assert!(
        tcp["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{tcp}"
    );
    daemon.stop();
}

#[test]
fn a_nagios_check_result_path_is_a_spool() {
    let env = Env::new();
    let daemon = env.start_with_spool_format("nagios");
    // As Nagios Core and its passive-check feeders write them: cXXXXXX, then an empty .ok.
    let result = "### Active Check Result File ###\nfile_time=1700000000\n\n\
                  ### Nagios Service Check Result ###\nhost_name=web-1\n\
                  service_description=HTTP\ncheck_type=1\nreturn_code=2\n\
                  start_time=1700000000.0\nfinish_time=1700000000.5\n\
                  output=HTTP CRITICAL - 503 Service Unavailable|time=0.500000s;1.0;2.0;0.0\\nbody: down\n";
    std::fs::write(env.spool().join("cA1b2C3"), result).expect("write");
    std::fs::write(env.spool().join("cA1b2C3.ok"), "").expect("write");
    std::fs::write(env.spool().join("cBroken"), "host_name=x\nno equals here\n").expect("write");
    daemon.wait_files(2, Duration::from_secs(60));
    let stats = daemon.stats();
    assert_eq!(
        (
            stats["files_ingested"].as_u64(),
            stats["files_rejected"].as_u64()
        ),
        (Some(1), Some(1)),
        "the .ok marker is not a result: {stats}"
    );
    let h = daemon
        .get("/api/v1/checks/history?probe=nagios&check=HTTP&host=web-1&from=0&to=9999999999");
    assert_eq!(h["results"][0]["status"], "critical", "{h}");
    assert_eq!(
        h["results"][0]["message"], "HTTP CRITICAL - 503 Service Unavailable\nbody: down",
        "{h}"
    );
    let t = daemon
        .get("/api/v1/query?query=nagios_perf_value{host=\"web-1\",perf=\"time\"}&time=1700000001");
    assert_eq!(t["data"]["result"][0]["value"][1], "0.5", "{t}");
    daemon.stop();
}

#[test]
fn a_spool_of_foreign_xml_is_read_through_the_mapping_in_its_config() {
    let env = Env::new();
    // The issue's example, as written in a config file.
    let daemon = env.start_with_config(&format!(
        r#"
[[spool]]
name = "foreign"
path = {:?}
format = "mapping"
[spool.mapping]
probe = "/report/@service"
host = "/report/@machine"
time = "/report/@at"
checks = "/report/item"
check_name = "@id"
check_status = "@result"
check_message = "."
status_map = {{ "PASS" = "ok", "WARN" = "warning", "FAIL" = "critical" }}
"#,
        env.spool().display().to_string()
    ));
    std::fs::write(
        env.spool().join("shop.xml"),
        r#"<report service="shop" machine="web-3" at="1700000000">
  <item id="login" result="PASS">logged in</item>
  <item id="checkout" result="FAIL">payment timeout</item>
</report>"#,
    )
    .expect("write");
    std::fs::write(
        env.spool().join("odd.xml"),
        r#"<report machine="web-3"><item id="login" result="PASS"/></report>"#,
    )
    .expect("write");
    // The same mapping reads a JSON report of the same shape (keys for elements and
    // attributes).
    std::fs::write(
        env.spool().join("shop2.json"),
        r#"{"report": {"service": "shop2", "machine": "web-4", "at": 1700000000,
            "item": [{"id": "login", "result": "FAIL"}]}}"#,
    )
    .expect("write");
    daemon.wait_files(3, Duration::from_secs(60));
    let q = daemon.get("/api/v1/query?query=probe_check_status{probe=\"shop2\",host=\"web-4\",check=\"login\"}&time=1700000000");
    assert_eq!(q["data"]["result"][0]["value"][1], "2", "{q}");
    let q = daemon.get("/api/v1/query?query=probe_check_status{probe=\"shop\",host=\"web-3\",check=\"checkout\"}&time=1700000000");
    assert_eq!(q["data"]["result"][0]["value"][1], "2", "{q}");
    let rejected = daemon.get("/api/v1/files?status=rejected");
    let error = rejected["files"][0]["error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        error.contains("/report/@service") && error.contains("found nothing"),
        "{rejected}"
    );
    daemon.stop();
}

#[test]
fn a_bad_mapping_is_refused_at_start_naming_the_field() {
    let env = Env::new();
    let config = env.dir.path().join("bad.toml");
    std::fs::write(
        &config,
        format!(
            "[[spool]]\npath = {:?}\nformat = \"mapping\"\n[spool.mapping]\nprobe = \"count(/a)\"\nchecks = \"/a/b\"\ncheck_name = \"@n\"\ncheck_status = \"@s\"\n",
            env.spool().display().to_string()
        ),
    )
    .expect("config");
    let stderr = crate::util::refused_start(&env, &config);
    assert!(
        stderr.contains("mapping probe") && stderr.contains("count(/a)"),
        "{stderr}"
    );
}

#[test]
fn a_textfile_without_a_host_label_is_this_machines_and_auto_reads_txt_and_nagios() {
    let env = Env::new();
    let daemon = env.start_with_config(&format!(
        "[[spool]]\npath = {:?}\nformat = \"prometheus\"\n\
         [[spool]]\nname = \"mixed\"\npath = {:?}\nformat = \"auto\"\ninclude = [\"*\"]\n",
        env.spool().display().to_string(),
        env.dir.path().join("mixed").display().to_string()
    ));
    std::fs::write(env.spool().join("local.prom"), "local_thing 1\n").expect("write");
    let mixed = env.dir.path().join("mixed");
    std::fs::write(mixed.join("textfile.txt"), "mixed_thing 2\n").expect("write");
    std::fs::write(
        mixed.join("cQ1w2E3"),
        "host_name=db-9\nservice_description=Disk\nreturn_code=1\noutput=WARNING - 91% used\n",
    )
    .expect("write");
    daemon.wait_files(3, Duration::from_secs(60));
    assert_eq!(daemon.stats()["files_rejected"], 0, "{}", daemon.log());
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string();
    let q = daemon.get("/api/v1/query?query=local_thing");
    assert_eq!(
        q["data"]["result"][0]["metric"]["host"],
        hostname.as_str(),
        "{q}"
    );
    let q = daemon.get("/api/v1/query?query=mixed_thing");
    assert_eq!(q["data"]["result"][0]["value"][1], "2", "{q}");
    let h =
        daemon.get("/api/v1/checks/history?probe=nagios&check=Disk&host=db-9&from=0&to=9999999999");
    assert_eq!(h["results"][0]["status"], "warning", "{h}");
    daemon.stop();
}

#[test]
fn check_validates_a_mapping_spools_files_with_its_mapping() {
    let env = Env::new();
    let config = env.dir.path().join("probewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[[spool]]\nname = \"legacy\"\npath = {:?}\nformat = \"mapping\"\n[spool.mapping]\n\
             probe = \"/report/@service\"\nchecks = \"/report/item\"\ncheck_name = \"@id\"\n\
             check_status = \"@result\"\nstatus_map = {{ \"PASS\" = \"ok\" }}\n",
            env.spool().display().to_string()
        ),
    )
    .expect("config");
    std::fs::write(
        env.spool().join("good.xml"),
        "<report service='shop'><item id='a' result='PASS'/></report>",
    )
    .expect("write");
    std::fs::write(
        env.spool().join("bad.xml"),
        "<report><item id='a' result='PASS'/></report>",
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .args(["--spool", "legacy"])
        .arg(env.spool())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok   ") && stdout.contains("good.xml: 1 probe result(s), 1 check(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL") && stdout.contains("/report/@service"),
        "{stdout}"
    );
}
