//! Faults and hostile input against the real daemon: queries that used to abort it or eat
//! its memory, a client that goes away, signals, a second daemon on the same data, a
//! database deleted or locked under it, bad settings, and names that try to forge log lines.
//! Each must end in a clear error, with the daemon still serving and nothing lost.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// GET with a client timeout: (status code, body text).
fn get_raw(daemon: &Daemon, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client");
    let url = format!("{}{path}", daemon.base);
    let response = client.get(&url).send().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().map_err(|e| e.to_string())?))
}

fn query(daemon: &Daemon, expr: &str) -> (u16, Value) {
    let (status, body) = get_raw(
        daemon,
        &format!("/api/v1/query?query={}&time=1700000100", enc(expr)),
        Duration::from_secs(60),
    )
    .expect("query answered");
    (status, serde_json::from_str(&body).expect("json"))
}

/// Peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

fn config_with(env: &Env, extra: &str) -> String {
    format!(
        "[[spool]]\npath = {:?}\n{extra}\n",
        env.spool().display().to_string()
    )
}

/// Runs `probewatch ARGS` that must fail; returns (exit code, stderr).
fn run_failing(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
                .expect("read stderr");
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("probewatch {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hostile_queries_get_a_clear_error_and_the_daemon_lives() {
    let env = Env::new();
    std::fs::write(env.spool().join("r.xml"), result_xml(1)).expect("write");
    let daemon = env.start_with_config(&config_with(
        &env,
        "[query]\ntimeout = \"5s\"\nmax_samples = 2000000",
    ));
    daemon.wait_files(1, Duration::from_secs(30));

    for (expr, says) in [
        (
            format!("{}1{}", "(".repeat(2_500), ")".repeat(2_500)),
            "nests brackets 2500 deep",
        ),
        (
            format!("{}vector(1){}", "abs(".repeat(2_000), ")".repeat(2_000)),
            "nests brackets 2001 deep",
        ),
        (vec!["1"; 20_000].join("+"), "19999 operators"),
        ("up offset 1000000y".into(), "out of range"),
    ] {
        // Sent as a form body: the expressions are longer than a URL may be.
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/query", daemon.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("query={}", enc(&expr)))
            .send()
            .expect("POST");
        assert_eq!(response.status().as_u16(), 400, "{says}");
        let body: Value = response.json().expect("json");
        assert_eq!(body["errorType"], "bad_data");
        let error = body["error"].as_str().expect("error");
        assert!(error.contains(says), "{error:?} should say {says:?}");
    }

    let (status, body) = get_raw(
        &daemon,
        "/api/v1/query_range?query=vector(1)&start=-9e15&end=9e15&step=1",
        Duration::from_secs(30),
    )
    .expect("answered");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("out of range"), "{body}");
    // Found by the generated requests below: a step of 1e300 s overflowed the step loop.
    let (status, body) = get_raw(
        &daemon,
        "/api/v1/query_range?query=-Inf&start=1700000010.123456&end=1700000010.123456&step=1e300",
        Duration::from_secs(30),
    )
    .expect("answered");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("step"), "{body}");

    // A subquery of 86 billion steps: stopped by the sample budget (or the timeout).
    let started = Instant::now();
    let (status, body) = query(&daemon, "count_over_time(vector(1)[1000d:1ms])");
    assert!(
        matches!(
            (status, body["errorType"].as_str()),
            (422, Some("execution")) | (503, Some("timeout"))
        ),
        "{status} {body}"
    );
    eprintln!(
        "runaway subquery stopped after {:?}: {body}",
        started.elapsed()
    );

    // Still alive, still answering, memory bounded.
    let (status, body) = query(&daemon, "sum(online_users)");
    assert_eq!(
        (status, &body["data"]["result"][0]["value"][1]),
        (200, &Value::from("1"))
    );
    assert_eq!(daemon.get_text("/healthz"), "ok\n");
    let peak = peak_rss_kb(daemon.child.id());
    assert!(peak < 1_000_000, "peak RSS {peak} kB");
}

#[test]
fn a_client_that_goes_away_frees_its_query_slot() {
    let env = Env::new();
    // One query at a time, and long enough a timeout that only cancellation frees the slot.
    let daemon = env.start_with_config(&config_with(
        &env,
        "[query]\ntimeout = \"10m\"\nmax_concurrency = 1\nmax_samples = 2000000000",
    ));
    let heavy = format!(
        "/api/v1/query?query={}&time=1700000100",
        enc("count_over_time(vector(1)[1000d:1ms])")
    );
    let gone = get_raw(&daemon, &heavy, Duration::from_millis(500));
    assert!(gone.is_err(), "the client gave up: {gone:?}");
    // The next query gets the slot once the first notices its client left.
    let (status, body) = get_raw(
        &daemon,
        "/api/v1/query?query=vector(7)",
        Duration::from_secs(60),
    )
    .expect("the slot was freed");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"7\""), "{body}");
}

#[test]
fn sighup_is_survived_and_readiness_reports_ready() {
    let env = Env::new();
    let daemon = env.start(&[]);
    Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    daemon.wait_until("SIGHUP logged", Duration::from_secs(10), |d| {
        d.log().contains("SIGHUP received")
    });
    let (status, body) = get_raw(&daemon, "/-/ready", Duration::from_secs(10)).expect("ready");
    assert_eq!((status, body.as_str()), (200, "probewatch is Ready.\n"));
    let (status, _) = get_raw(&daemon, "/-/healthy", Duration::from_secs(10)).expect("healthy");
    assert_eq!(status, 200);
    let metrics = daemon.get_text("/metrics");
    for name in [
        "probewatch_ingest_backlog_files 0",
        "probewatch_ingest_oldest_waiting_seconds 0",
        "probewatch_store_errors_total{op=\"commit\"} 0",
    ] {
        assert!(metrics.contains(name), "{name} in:\n{metrics}");
    }
    daemon.stop();
}

#[test]
fn a_second_daemon_on_the_same_data_directory_refuses_to_start() {
    let env = Env::new();
    let first = env.start(&[]);
    let data = env.data().display().to_string();
    let spool = env.spool().display().to_string();
    let (code, stderr) = run_failing(&[
        "run",
        "--spool",
        &spool,
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    let expected = format!(
        "another probewatch (pid {}) is using {data}",
        first.child.id()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    first.stop();
}

#[test]
fn a_deleted_database_stops_ingest_and_no_spool_file_is_deleted() {
    let env = Env::without_postgres();
    let daemon = env.start_with_config(&config_with(&env, "after_ingest = \"delete\""));
    let first = env.spool().join("first.xml");
    std::fs::write(&first, result_xml(1)).expect("write");
    daemon.wait_until(
        "first file ingested and deleted",
        Duration::from_secs(30),
        |_| !first.exists(),
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(env.data().join(format!("probewatch.db{suffix}")));
    }
    let second = env.spool().join("second.xml");
    std::fs::write(&second, result_xml(2)).expect("write");
    daemon.wait_until("readiness to fail", Duration::from_secs(30), |d| {
        get_raw(d, "/-/ready", Duration::from_secs(10)).is_ok_and(|(s, _)| s == 503)
    });
    let (_, body) = get_raw(&daemon, "/-/ready", Duration::from_secs(10)).expect("ready");
    assert!(
        body.contains("probewatch.db") && body.contains("restart probewatch"),
        "{body}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        second.exists(),
        "a file whose commit reached no database was deleted"
    );
    assert!(daemon.log().contains("ingest stopped"), "{}", daemon.log());
    assert!(daemon.metric("probewatch_store_errors_total{op=\"check_files\"}") >= 1.0);
}

#[test]
fn a_locked_store_fails_readiness_and_the_stop_stays_bounded() {
    let env = Env::without_postgres();
    let daemon = env.start(&[]);
    // Another writer holds the database's write lock: every commit times out.
    let blocker = rusqlite::Connection::open(env.data().join("probewatch.db")).expect("open");
    blocker.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    let file = env.spool().join("waiting.xml");
    std::fs::write(&file, result_xml(3)).expect("write");
    daemon.wait_until("readiness to fail", Duration::from_secs(60), |d| {
        get_raw(d, "/-/ready", Duration::from_secs(10))
            .is_ok_and(|(s, b)| s == 503 && b.contains("commits fail") && b.contains("locked"))
    });
    assert!(daemon.metric("probewatch_store_errors_total{op=\"commit\"}") >= 1.0);
    let stopping = Instant::now();
    let mut daemon = daemon;
    Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status()
        .expect("kill");
    let status = loop {
        if let Some(status) = daemon.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(45),
            "the stop is not bounded:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("stopped in {:?} with {status}", stopping.elapsed());
    assert!(file.exists(), "the uncommitted file is still in the spool");
    drop(blocker);
    // Nothing was lost: the next start ingests the file, once.
    let daemon = env.start(&[]);
    daemon.wait_files(1, Duration::from_secs(30));
    assert_eq!(daemon.stats()["files_ingested"], 1);
}

#[test]
fn settings_that_would_destroy_data_or_spin_are_refused_at_start() {
    let env = Env::new();
    for (setting, says) in [
        (
            "retention = \"0s\"",
            "retention = \"0s\" is too short: it must be at least 1m",
        ),
        (
            "prune_interval = \"0s\"",
            "prune_interval = \"0s\" is too short",
        ),
    ] {
        let path = env.dir.path().join("bad.toml");
        std::fs::write(
            &path,
            config_with(&env, "").replace("[[spool]]", &format!("{setting}\n[[spool]]")),
        )
        .expect("write");
        let data = env.data().display().to_string();
        let (code, stderr) = run_failing(&[
            "run",
            "--config",
            path.to_str().expect("utf-8"),
            "--data",
            &data,
        ]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

#[test]
fn a_newline_in_a_file_name_cannot_forge_a_log_line() {
    let env = Env::new();
    let daemon = env.start(&[]);
    std::fs::write(
        env.spool().join("evil\nERROR forged line.xml"),
        "<probe name=\"x\"><check name=\"c\" status=\"fine\"/></probe>",
    )
    .expect("write");
    daemon.wait_files(1, Duration::from_secs(30));
    let log = daemon.stop();
    assert!(log.contains("evil\\nERROR forged line.xml"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR forged")),
        "a forged line:\n{log}"
    );
}

#[test]
fn an_alert_whose_save_failed_still_notifies_once_the_store_recovers() {
    let env = Env::without_postgres();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: LoginCritical\n        \
         expr: probe_check_status{check=\"login\"} == 2\n        for: 4s\n",
    )
    .expect("rules");
    let config = format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"ops\"\nurl = {:?}\n[[route]]\nreceiver = \"ops\"\n{}",
        rules.display().to_string(),
        hook.url,
        config_with(&env, "")
    );
    let daemon = env.start_with_config(&config);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    std::fs::write(
        env.spool().join("web.xml"),
        format!(r#"<probe name="web" host="h" time="{now}"><check name="login" status="critical"/></probe>"#),
    )
    .expect("write");
    daemon.wait_until("the alert pending", Duration::from_secs(30), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"][0]["state"] == "pending"
    });
    // The store cannot save when the alert turns firing.
    let blocker = rusqlite::Connection::open(env.data().join("probewatch.db")).expect("open");
    blocker.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    daemon.wait_until("a failed save", Duration::from_secs(60), |d| {
        d.log().contains("saving alert state failed")
    });
    // Readers see what is stored: still pending, and no notification was sent.
    assert_eq!(
        daemon.get("/api/v1/alerts")["data"]["alerts"][0]["state"],
        "pending"
    );
    assert!(hook.received().is_empty());
    drop(blocker);
    // The next evaluation makes the change again and queues the notification: it is not
    // held back until repeat_interval (4 h).
    let got = hook.wait_for(1, Duration::from_secs(60));
    assert_eq!(got[0]["status"], "firing", "{}", got[0]);
    assert_eq!(got[0]["alerts"][0]["labels"]["alertname"], "LoginCritical");
}

#[test]
fn a_spool_deleted_under_the_daemon_fails_readiness_and_heals_when_back() {
    let env = Env::new();
    let daemon = env.start(&[]);
    std::fs::remove_dir_all(env.spool()).expect("delete the spool");
    daemon.wait_until("readiness to fail", Duration::from_secs(30), |d| {
        get_raw(d, "/-/ready", Duration::from_secs(10))
            .is_ok_and(|(s, b)| s == 503 && b.contains("is missing"))
    });
    assert_eq!(daemon.metric("probewatch_spools_not_watched"), 1.0);
    std::fs::create_dir(env.spool()).expect("recreate");
    std::fs::write(env.spool().join("back.xml"), result_xml(5)).expect("write");
    daemon.wait_files(1, Duration::from_secs(30));
    daemon.wait_until("ready again", Duration::from_secs(30), |d| {
        get_raw(d, "/-/ready", Duration::from_secs(10)).is_ok_and(|(s, _)| s == 200)
    });
    assert!(daemon.metric("probewatch_spool_rewatches_total") >= 1.0);
    let log = daemon.stop();
    assert!(log.contains("watching it again and rescanning it"), "{log}");
}

#[test]
fn a_spool_that_is_a_symlink_is_refused_at_start() {
    let env = Env::new();
    let real = env.dir.path().join("real");
    std::fs::create_dir(&real).expect("real");
    let link = env.dir.path().join("linked");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let data = env.data().display().to_string();
    let (code, stderr) = run_failing(&[
        "run",
        "--spool",
        link.to_str().expect("utf-8"),
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("is a symbolic link") && stderr.contains(real.to_str().expect("utf-8")),
        "{stderr}"
    );
}

/// Generated requests to every query endpoint of one daemon: each gets an answer in
/// Prometheus's shape with a status that says what happened, the daemon never panics or
/// dies, and its memory stays bounded.
#[test]
fn the_query_api_answers_generated_requests_and_survives() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let env = Env::new();
    for n in 0..5 {
        std::fs::write(env.spool().join(format!("r{n}.xml")), result_xml(n)).expect("write");
    }
    let daemon = env.start_with_config(&config_with(
        &env,
        "[query]\ntimeout = \"3s\"\nmax_samples = 5000000",
    ));
    daemon.wait_files(5, Duration::from_secs(30));
    let token = prop::sample::select(vec![
        "online_users",
        "queue_depth{queue=~\"q.*\"}",
        "probe_check_status",
        "{__name__=~\".+\"}",
        "(",
        ")",
        "[5m]",
        "[1h:1ms]",
        "[10000d:1s]",
        "offset 1h",
        "@ 1700000000",
        "rate",
        "sum",
        "by (probe)",
        "topk(2,",
        "+",
        "/",
        "==",
        "or",
        "and on(probe)",
        "count_over_time",
        "1",
        "-Inf",
        "NaN",
        "\"x\"",
        ",",
        "label_replace(",
        "histogram_quantile(0.9,",
        "vector(1)",
        "time()",
        "\u{202E}",
        "%",
        "^",
        "{",
        "}",
        "absent(",
        "sort_desc(",
    ]);
    let query = proptest::collection::vec(token, 1..16).prop_map(|t| t.join(" "));
    let time = prop::sample::select(vec![
        "1700000010",
        "0",
        "-1",
        "-9e15",
        "9e15",
        "1e400",
        "NaN",
        "2023-11-14T22:13:30Z",
        "x",
        "1700000010.123456",
    ]);
    let step = prop::sample::select(vec!["15", "0", "-1", "1e-9", "0.001", "1e300", "5m", "x"]);
    let request = (0usize..5, query, time.clone(), time, step);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(300);
    let sent = std::sync::atomic::AtomicU32::new(0);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
    .run(&request, |(endpoint, q, a, b, step)| {
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = match endpoint {
            0 => format!("/api/v1/query?query={}&time={}", enc(&q), enc(a)),
            1 => format!(
                "/api/v1/query_range?query={}&start={}&end={}&step={}",
                enc(&q),
                enc(a),
                enc(b),
                enc(step)
            ),
            2 => format!("/api/v1/series?match[]={}&start={}", enc(&q), enc(a)),
            3 => format!("/api/v1/labels?match[]={}&end={}", enc(&q), enc(b)),
            _ => format!("/api/v1/label/{}/values?match[]={}", enc(&q), enc(&q)),
        };
        let response = client
            .get(format!("{}{path}", daemon.base))
            .send()
            .unwrap_or_else(|e| panic!("{path}: no answer: {e}\n{}", daemon.log()));
        let status = response.status().as_u16();
        assert!(
            matches!(status, 200 | 400 | 404 | 422 | 503),
            "{path}: status {status}"
        );
        if status != 404 {
            let body: Value = response.json().expect("json answer");
            assert!(
                body["status"] == "success" || body["errorType"].is_string(),
                "{body}"
            );
        }
        Ok(())
    })
    .expect("every generated request is answered");
    assert_eq!(daemon.get_text("/healthz"), "ok\n");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    let peak = peak_rss_kb(daemon.child.id());
    assert!(peak < 1_500_000, "peak RSS {peak} kB");
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent >= cases, "{sent} of {cases} requests sent");
    eprintln!("{sent} generated requests answered; daemon peak RSS {peak} kB");
}

#[test]
fn a_file_that_cannot_be_opened_is_listed_and_retried() {
    use std::os::fd::AsFd;
    let env = Env::new();
    let daemon = env.start(&[]);
    // A directory path just under PATH_MAX and a long name in it: the event names a file
    // whose full path no open(2) accepts (root can read anything, so EACCES cannot be used).
    let mut dir = env.spool();
    while dir.as_os_str().len() < 3_900 {
        dir = dir.join("d".repeat(200));
    }
    let name = format!("{}.xml", "f".repeat(240));
    assert!(
        dir.as_os_str().len() + 1 + name.len() > 4_096,
        "longer than PATH_MAX"
    );
    std::fs::create_dir_all(&dir).expect("deep directory");
    daemon.wait_until("the deep directory watched", Duration::from_secs(30), |d| {
        d.metric("probewatch_watched_directories") >= 20.0
    });
    let parent = std::fs::File::open(&dir).expect("open the deep directory");
    let file = rustix::fs::openat(
        parent.as_fd(),
        name.as_str(),
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .expect("create the long-named file");
    rustix::io::write(&file, result_xml(1).as_bytes()).expect("write");
    drop(file);
    daemon.wait_until(
        "the file listed as unreadable",
        Duration::from_secs(30),
        |d| {
            d.get("/api/v1/files?status=unreadable")["files"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
        },
    );
    let listed = daemon.get("/api/v1/files?status=unreadable");
    let entry = &listed["files"][0];
    assert!(
        entry["path"].as_str().is_some_and(|p| p.ends_with(&name)),
        "{listed}"
    );
    assert!(
        entry["error"]
            .as_str()
            .is_some_and(|e| e.contains("PATH_MAX")),
        "{listed}"
    );
    // Tried again with backoff: 1 s, then 2 s.
    daemon.wait_until("a second attempt", Duration::from_secs(30), |d| {
        d.get("/api/v1/files?status=unreadable")["files"][0]["attempts"]
            .as_u64()
            .is_some_and(|a| a >= 2)
    });
    assert_eq!(
        daemon.metric("probewatch_files_unreadable_total"),
        1.0,
        "counted once"
    );
    let page = daemon.get_text("/ingest");
    assert!(
        page.contains("Files that cannot be read") && page.contains("PATH_MAX"),
        "{page}"
    );
    // Gone: no longer listed.
    rustix::fs::unlinkat(parent.as_fd(), name.as_str(), rustix::fs::AtFlags::empty())
        .expect("unlink");
    daemon.wait_until("the file no longer listed", Duration::from_secs(30), |d| {
        d.get("/api/v1/files?status=unreadable")["files"]
            .as_array()
            .is_some_and(|f| f.is_empty())
    });
}

/// Opens `n` connections that send half a request and then nothing.
fn half_open(addr: &str, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(addr).ok()?;
            let _ = s.write_all(b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n");
            Some(s)
        })
        .collect()
}

#[test]
fn half_open_requests_time_out_and_health_stays_reachable() {
    let env = Env::new();
    let daemon = env.start(&[]);
    let addr = daemon.base.trim_start_matches("http://").to_string();
    // More half-open requests than the daemon serves at once (512).
    let held = half_open(&addr, 600);
    assert!(held.len() > 512, "opened {}", held.len());
    let started = Instant::now();
    let (status, body) = get_raw(&daemon, "/healthz", Duration::from_secs(60))
        .expect("/healthz answers once the header-read timeout drops the idle requests");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    eprintln!(
        "/healthz answered after {:?} behind 600 half-open requests",
        started.elapsed()
    );
    // The server closed the ones it had accepted: a read sees the end.
    let mut first = held.into_iter().next().expect("one");
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    let n = std::io::Read::read(&mut first, &mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[test]
fn running_out_of_file_descriptors_heals_by_itself() {
    let env = Env::new();
    // A hard limit the daemon cannot raise: 40 descriptors, about 20 to spare.
    let daemon = Daemon::spawn_wrapped(
        &["prlimit", "--nofile=40:40", "--"],
        &[
            "run".to_string(),
            "--spool".into(),
            env.spool().display().to_string(),
            "--data".into(),
            env.data().display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
    );
    let addr = daemon.base.trim_start_matches("http://").to_string();
    let held = half_open(&addr, 60);
    daemon.wait_until("accept to back off", Duration::from_secs(30), |d| {
        d.log()
            .contains("cannot accept HTTP connections; backing off")
    });
    std::fs::write(env.spool().join("starved.xml"), result_xml(7)).expect("write");
    daemon.wait_until("the open to fail", Duration::from_secs(30), |d| {
        d.log().contains("cannot read result file; trying again")
    });
    // Descriptors come back: the file is read at its next attempt, HTTP serves again.
    drop(held);
    daemon.wait_files(1, Duration::from_secs(60));
    assert_eq!(daemon.stats()["files_ingested"], 1);
    assert_eq!(daemon.metric("probewatch_files_unreadable_total"), 1.0);
    assert!(
        daemon.get("/api/v1/files?status=unreadable")["files"]
            .as_array()
            .is_some_and(|f| f.is_empty()),
        "no longer listed once read"
    );
    assert!(
        daemon.log().contains("Too many open files"),
        "{}",
        daemon.log()
    );
}

#[test]
fn the_daemon_exits_non_zero_when_its_http_server_fails() {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    let env = Env::new();
    let mut daemon = env.start(&[]);
    let port: u16 = daemon
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    // Take a copy of the daemon's listening socket (root may) and shut it for reading:
    // its accept() then fails for good (EINVAL), as a broken listener would.
    let pid = rustix::process::Pid::from_raw(i32::try_from(daemon.child.id()).expect("pid"))
        .expect("pid");
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).expect("pidfd_open");
    let mut broken = false;
    for entry in std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id())).expect("fds") {
        let entry = entry.expect("entry");
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        let Some(n) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !is_socket {
            continue;
        }
        let Ok(fd) = pidfd_getfd(&pidfd, n, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let listening = rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false);
        let ours = std::net::TcpListener::from(fd.try_clone().expect("dup"))
            .local_addr()
            .is_ok_and(|a| a.port() == port);
        if listening && ours {
            rustix::net::shutdown(&fd, rustix::net::Shutdown::Read).expect("shutdown");
            broken = true;
            break;
        }
    }
    assert!(broken, "found the listening socket");
    // A connection makes the blocked accept() return its error.
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(status) = daemon.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(status.code(), Some(2), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("HTTP server failed"), "{log}");
}
