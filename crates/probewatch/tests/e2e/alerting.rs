//! Alerting end to end: real rule files, the real binary, a real HTTP webhook receiver.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::util::*;

const RULES: &str = r#"
groups:
  - name: probes
    interval: 1h
    rules:
      - alert: LoginCritical
        expr: probe_check_status{check="login"} == 2
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.probe }} login is critical"
      - alert: BothFail
        expr: probe_check_status{check="login"} == 2 and on (probe, host) probe_check_status{check="search"} == 2
        labels:
          severity: page
      - record: probe:login_critical:count
        expr: count(probe_check_status{check="login"} == 2)
"#;

fn result(probe: &str, login: &str, search: &str) -> String {
    format!(
        r#"<probe name="{probe}" host="h1" time="{}">
  <check name="login" status="{login}">login</check>
  <check name="search" status="{search}">search</check>
</probe>"#,
        epoch_secs()
    )
}

fn config(env: &Env, hook: &Webhook) -> String {
    let rules = env.data().join("rules.yml");
    std::fs::create_dir_all(env.data()).expect("data dir");
    std::fs::write(&rules, RULES).expect("rules");
    format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"ops\"\nurl = {:?}\n[[route]]\nreceiver = \"ops\"\ngroup_by = [\"alertname\"]\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        hook.url,
        env.spool().display().to_string()
    )
}

fn alert_names(body: &Value) -> Vec<String> {
    body["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["labels"]["alertname"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn failing_result_fires_then_resolves() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let daemon = env.start_with_config(&config(&env, &hook));
    std::fs::write(env.spool().join("a.xml"), result("web", "critical", "ok")).expect("write");
    // How fast it arrives is measured by `probewatch bench-alert`, not here: a test only
    // waits for the event, with a deadline generous enough for a loaded CI machine.
    let got = hook.wait_for(1, Duration::from_secs(60));
    let body = &got[0];
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "ops");
    assert_eq!(alert_names(body), ["LoginCritical"]);
    assert_eq!(body["alerts"][0]["labels"]["probe"], "web");
    assert_eq!(body["alerts"][0]["labels"]["severity"], "page");
    assert_eq!(
        body["alerts"][0]["annotations"]["summary"],
        "web login is critical"
    );
    assert_eq!(
        hook.user_agents.lock().expect("lock")[0],
        format!("probewatch/{}", env!("CARGO_PKG_VERSION")),
        "every outgoing request says who sends it"
    );
    let alerts = daemon.get("/api/v1/alerts");
    assert_eq!(alerts["data"]["alerts"][0]["state"], "firing", "{alerts}");
    // The recording rule wrote its series back to the store, where queries find it.
    let recorded = daemon.get("/api/v1/query?query=probe:login_critical:count");
    assert_eq!(recorded["data"]["result"][0]["value"][1], "1", "{recorded}");

    // A later good result: the alert resolves.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(env.spool().join("b.xml"), result("web", "ok", "ok")).expect("write");
    let got = hook.wait_for(2, Duration::from_secs(10));
    assert_eq!(got[1]["status"], "resolved", "{:?}", got[1]);
    assert_eq!(alert_names(&got[1]), ["LoginCritical"]);
    let rules = daemon.get("/api/v1/rules");
    let rule = &rules["data"]["groups"][0]["rules"][0];
    assert_eq!(
        (
            rule["name"].as_str(),
            rule["health"].as_str(),
            rule["state"].as_str()
        ),
        (Some("LoginCritical"), Some("ok"), Some("inactive")),
        "{rules}"
    );
    daemon.stop();
}

#[test]
fn combined_rule_restart_and_a_receiver_that_is_down_for_a_while() {
    let env = Env::new();
    // The receiver refuses the first two deliveries; the outbox retries until it accepts.
    let hook = Webhook::start(2);
    let cfg = config(&env, &hook);
    let daemon = env.start_with_config(&cfg);
    std::fs::write(
        env.spool().join("a.xml"),
        result("shop", "critical", "critical"),
    )
    .expect("write");
    let got = hook.wait_for(2, Duration::from_secs(20));
    let mut names: Vec<String> = got.iter().flat_map(alert_names).collect();
    names.sort();
    assert_eq!(names, ["BothFail", "LoginCritical"]);
    let outbox = daemon.get("/api/v1/notifications");
    let attempts: u64 = outbox["data"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| n["attempts"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        attempts >= 4,
        "two refusals should have cost retries: {outbox}"
    );
    // Every attempt is on record with the receiver's answer.
    let log: Vec<&Value> = outbox["data"]
        .as_array()
        .expect("notifications")
        .iter()
        .flat_map(|n| n["attemptLog"].as_array().into_iter().flatten())
        .collect();
    assert!(
        log.iter().filter(|a| a["ok"] == false).count() >= 2,
        "{outbox}"
    );
    assert!(
        log.iter()
            .any(|a| a["detail"].as_str().is_some_and(|d| d.contains("503"))),
        "{outbox}"
    );
    assert!(
        outbox["data"]
            .as_array()
            .is_some_and(|a| a.iter().all(|n| n["delivered"] == true))
    );

    // Restart: the alerts are still firing and nobody is notified again.
    daemon.stop();
    let daemon = env.start_with_config(&cfg);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.received().len(), 2, "a restart must not re-notify");
    let alerts = daemon.get("/api/v1/alerts");
    assert_eq!(
        alerts["data"]["alerts"].as_array().map(Vec::len),
        Some(2),
        "{alerts}"
    );
    daemon.stop();
}

#[test]
fn rules_test_runs_promtool_format_tests_and_fails_on_a_wrong_expectation() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/rules/probes_test.yml"
    );
    let ok = std::process::Command::new(BIN)
        .args(["rules", "test", example])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && stdout.contains("SUCCESS (2 tests)"),
        "{stdout}"
    );

    // A test file in the usual promtool layout, next to its rules, with one wrong value.
    let env = Env::new();
    std::fs::create_dir_all(env.data()).expect("dir");
    std::fs::write(
        env.data().join("up.yml"),
        "groups:\n  - name: up\n    rules:\n      - alert: Down\n        expr: up == 0\n        for: 2m\n        labels:\n          severity: page\n        annotations:\n          summary: '{{ $labels.instance }} down'\n",
    )
    .expect("rules");
    let test = "rule_files: [up.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n      - series: 'up{job=\"node\", instance=\"a:9100\"}'\n        values: '1 1 0 0 0 0'\n    alert_rule_test:\n      - eval_time: 5m\n        alertname: Down\n        exp_alerts:\n          - exp_labels: {severity: page, job: node, instance: 'a:9100'}\n            exp_annotations: {summary: 'a:9100 down'}\n    promql_expr_test:\n      - expr: sum(up)\n        eval_time: 1m\n        exp_samples:\n          - labels: '{}'\n            value: 7\n";
    let path = env.data().join("up_test.yml");
    std::fs::write(&path, test).expect("test file");
    let out = std::process::Command::new(BIN)
        .args(["rules", "test"])
        .arg(&path)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAILED") && stdout.contains("sum(up)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("alertname: Down"),
        "the alert expectation holds: {stdout}"
    );
}

#[test]
fn rules_check_reports_the_example_rules_and_a_broken_file() {
    let ok = std::process::Command::new(BIN)
        .args([
            "rules",
            "check",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../examples/rules/probes.yml"
            ),
        ])
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let env = Env::new();
    let bad = env.data().join("bad.yml");
    std::fs::create_dir_all(env.data()).expect("dir");
    std::fs::write(
        &bad,
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m]\n",
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .args(["rules", "check"])
        .arg(&bad)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("bad.yml") && stdout.contains("rule 1 (A)"),
        "{stdout}"
    );
}

#[test]
fn a_silence_suppresses_and_needs_the_token() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let cfg = format!("api_token = \"s3cret\"\n{}", config(&env, &hook));
    let daemon = env.start_with_config(&cfg);
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/api/v1/silences", daemon.base);
    let body = r#"{"matchers": ["probe=\"web\""], "duration": "1h", "createdBy": "test", "comment": "maintenance"}"#;
    // Without the token, or with a wrong one: refused.
    let refused = client.post(&url).body(body).send().expect("POST");
    assert_eq!(refused.status().as_u16(), 401);
    let wrong = client
        .post(&url)
        .bearer_auth("guess")
        .body(body)
        .send()
        .expect("POST");
    assert_eq!(wrong.status().as_u16(), 401);
    let created: Value = client
        .post(&url)
        .bearer_auth("s3cret")
        .body(body)
        .send()
        .expect("POST")
        .json()
        .expect("json");
    let id = created["data"]["silenceID"].as_i64().expect("id");

    // The alert fires but nobody is notified.
    std::fs::write(env.spool().join("a.xml"), result("web", "critical", "ok")).expect("write");
    daemon.wait_until("alert firing", Duration::from_secs(10), |d| {
        d.get("/api/v1/alerts")["data"]["alerts"][0]["state"] == "firing"
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        hook.received().is_empty(),
        "silenced, yet notified: {:?}",
        hook.received()
    );
    let list = daemon.get("/api/v1/silences");
    assert_eq!(list["data"][0]["status"], "active", "{list}");

    // Expire it (with the token); the next evaluation announces the alert.
    let expired = client
        .delete(format!("{url}/{id}"))
        .bearer_auth("s3cret")
        .send()
        .expect("DELETE");
    assert!(expired.status().is_success());
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(env.spool().join("b.xml"), result("web", "critical", "ok")).expect("write");
    let got = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(got[0]["status"], "firing");
    assert_eq!(
        daemon.get("/api/v1/silences")["data"][0]["status"],
        "expired"
    );
    daemon.stop();

    // The CLI writes to the same store; the changes are recorded.
    let out = std::process::Command::new(BIN)
        .args(["silence", "add", "--data"])
        .arg(env.data())
        .args(env.store_args(&[]))
        .args([
            "-m",
            "check=\"login\"",
            "--duration",
            "30m",
            "--comment",
            "deploy",
            "--author",
            "ops",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(BIN)
        .args(["silence", "list", "--data"])
        .arg(env.data())
        .args(env.store_args(&[]))
        .output()
        .expect("run");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("check=\"login\"") && listing.contains("active"),
        "{listing}"
    );
    let silences = env.store().silences().expect("silences");
    assert_eq!(silences.len(), 2, "created, expired, created: {silences:?}");
    assert_eq!(
        silences
            .iter()
            .filter(|s| s.expired_at_ms.is_some())
            .count(),
        1,
        "{silences:?}"
    );
}

#[test]
fn a_probe_that_stops_reporting_raises_an_absence_alert() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.data().join("rules.yml");
    std::fs::create_dir_all(env.data()).expect("dir");
    std::fs::write(
        &rules,
        r#"
groups:
  - name: silence
    interval: 500ms
    rules:
      - alert: ProbeSilent
        expr: absent_over_time(probe_check_status{probe="gone"}[3s])
"#,
    )
    .expect("rules");
    let cfg = format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"ops\"\nurl = {:?}\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        hook.url,
        env.spool().display().to_string()
    );
    // It reports once (stamped with the current second), then falls silent.
    let stamped = epoch_secs();
    std::fs::write(env.spool().join("a.xml"), result("gone", "ok", "ok")).expect("write");
    let daemon = env.start_with_config(&cfg);
    let got = hook.wait_for(1, Duration::from_secs(15));
    let received = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    assert_eq!(alert_names(&got[0]), ["ProbeSilent"]);
    assert_eq!(got[0]["alerts"][0]["labels"]["probe"], "gone");
    // Not while the result was within the 3 s window (rules wait for the startup scan's
    // files, so the result was seen before the first evaluation).
    assert!(
        received >= stamped as f64 + 3.0,
        "fired {:.1} s after the result's time",
        received - stamped as f64
    );
    daemon.stop();
}

#[test]
fn alerts_are_pushed_to_an_external_alertmanager() {
    let env = Env::new();
    let am = Webhook::start(0);
    let base = am.url.trim_end_matches("/hook").to_string();
    let rules = env.data().join("rules.yml");
    std::fs::create_dir_all(env.data()).expect("dir");
    std::fs::write(&rules, RULES).expect("rules");
    let cfg = format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = {base:?}\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&cfg);
    std::fs::write(env.spool().join("a.xml"), result("web", "critical", "ok")).expect("write");
    let got = am.wait_for(1, Duration::from_secs(10));
    assert_eq!(
        am.requests.lock().expect("lock")[0],
        "POST /api/v2/alerts HTTP/1.1"
    );
    let alert = &got[0][0];
    assert_eq!(alert["labels"]["alertname"], "LoginCritical", "{got:?}");
    let starts = alert["startsAt"].as_str().expect("startsAt");
    let ends = alert["endsAt"].as_str().expect("endsAt");
    let span = ends.parse::<jiff::Timestamp>().expect("time")
        - starts.parse::<jiff::Timestamp>().expect("time");
    let span = span.as_secs_f64();
    assert!(
        (230.0..=250.0).contains(&span),
        "a firing alert is valid four re-send intervals (4 min) on: {alert}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(env.spool().join("b.xml"), result("web", "ok", "ok")).expect("write");
    let got = am.wait_for(2, Duration::from_secs(10));
    assert!(
        got[1][0]["endsAt"]
            .as_str()
            .is_some_and(|e| e.starts_with("20")),
        "{:?}",
        got[1]
    );
    daemon.stop();
}

/// A minimal SMTP server: accepts every message and keeps its DATA.
fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let keep = messages.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let _ = stream.write_all(b"220 sink ESMTP\r\n");
            let mut data: Option<String> = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(body) = &mut data {
                    if line == ".\r\n" {
                        keep.lock().expect("lock").push(std::mem::take(body));
                        data = None;
                        let _ = stream.write_all(b"250 queued\r\n");
                    } else {
                        body.push_str(&line);
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250-sink\r\n250 8BITMIME\r\n",
                    "DATA" => {
                        data = Some(String::new());
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        let _ = stream.write_all(b"221 bye\r\n");
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                let _ = stream.write_all(reply);
            }
        }
    });
    (port, messages)
}

#[test]
fn an_email_receiver_sends_through_smtp() {
    let env = Env::new();
    let (port, messages) = smtp_sink();
    let rules = env.data().join("rules.yml");
    std::fs::create_dir_all(env.data()).expect("dir");
    std::fs::write(&rules, RULES).expect("rules");
    let cfg = format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"mail\"\ntype = \"email\"\nsmarthost = \"127.0.0.1:{port}\"\nsmtp_security = \"none\"\nfrom = \"probewatch@example.com\"\nto = [\"ops@example.com\"]\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&cfg);
    std::fs::write(env.spool().join("a.xml"), result("web", "critical", "ok")).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while messages.lock().expect("lock").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mail = messages
        .lock()
        .expect("lock")
        .first()
        .cloned()
        .unwrap_or_default();
    assert!(mail.contains("Subject: [FIRING:1] LoginCritical"), "{mail}");
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(mail.contains("web login is critical"), "{mail}");
    let outbox = daemon.get("/api/v1/notifications");
    assert_eq!(outbox["data"][0]["delivered"], true, "{outbox}");
    // Every attempt of a notification carries its idempotency key as the Message-ID.
    let id = outbox["data"][0]["id"].as_i64().expect("notification id");
    let message_id = format!("Message-ID: <probewatch-{id}@example.com>");
    assert!(mail.contains(&message_id), "{message_id} not in {mail}");
    daemon.stop();
}

#[test]
fn group_wait_collects_alerts_of_a_group_into_one_notification() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let cfg = config(&env, &hook).replace(
        "group_by = [\"alertname\"]",
        "group_by = [\"probe\"]\ngroup_wait = \"2s\"",
    );
    let daemon = env.start_with_config(&cfg);
    let written = Instant::now();
    // Two rules fire for probe "shop": one group, so one notification after group_wait.
    std::fs::write(
        env.spool().join("a.xml"),
        result("shop", "critical", "critical"),
    )
    .expect("write");
    let got = hook.wait_for(1, Duration::from_secs(10));
    let waited = hook.bodies.lock().expect("lock")[0].0 - written;
    assert!(
        waited >= Duration::from_millis(1900),
        "sent after {waited:?}, before group_wait"
    );
    let mut names = alert_names(&got[0]);
    names.sort();
    assert_eq!(names, ["BothFail", "LoginCritical"], "{:?}", got[0]);
    assert_eq!(got[0]["groupLabels"]["probe"], "shop");
    assert_eq!(got[0]["commonLabels"]["probe"], "shop");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(hook.received().len(), 1, "one notification for the group");
    daemon.stop();
}

/// `rules check` agrees with the real promtool (Debian's `prometheus` package; .ci/run
/// installs it) on rule files with nothing in them, and on two that both refuse.
#[test]
fn rules_check_agrees_with_promtool_on_empty_and_broken_files() {
    let promtool = std::path::Path::new("/usr/bin/promtool");
    let env = Env::new();
    std::fs::create_dir_all(env.data()).expect("dir");
    let mut cases: Vec<(String, bool)> = probewatch_alerting::rulefile::EMPTY_RULE_FILES
        .iter()
        .map(|t| (t.to_string(), true))
        .collect();
    cases.push(("groups:\n  - rules: []\n".into(), false));
    cases.push(("groups:\n  - name: a\n  - name: a\n".into(), false));
    for (i, (text, valid)) in cases.iter().enumerate() {
        let file = env.data().join(format!("r{i}.yml"));
        std::fs::write(&file, text).expect("write");
        let ours = std::process::Command::new(BIN)
            .args(["rules", "check"])
            .arg(&file)
            .output()
            .expect("run");
        assert_eq!(
            ours.status.success(),
            *valid,
            "{text:?}: {}",
            String::from_utf8_lossy(&ours.stdout)
        );
        if promtool.exists() {
            let theirs = std::process::Command::new(promtool)
                .args(["check", "rules"])
                .arg(&file)
                .output()
                .expect("promtool");
            assert_eq!(theirs.status.success(), *valid, "promtool on {text:?}");
        }
    }
    if !promtool.exists() {
        eprintln!("SKIPPED the promtool half: no /usr/bin/promtool (Debian package prometheus)");
    }
}

/// The example rules for agents (absence without a rule per probe, one alert per offline
/// agent), for probes (one generic ProbeSilent over probe_check_stale) and for watching
/// probewatch itself pass their promtool-format tests in probewatch
/// and in the real promtool alike.
#[test]
fn the_example_rules_pass_their_tests_in_probewatch_and_promtool() {
    for (file, tests) in [
        ("agents_test.yml", 2),
        ("probewatch_test.yml", 1),
        ("probes_test.yml", 2),
    ] {
        let path = format!("{}/../../examples/rules/{file}", env!("CARGO_MANIFEST_DIR"));
        let ours = std::process::Command::new(BIN)
            .args(["rules", "test", &path])
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&ours.stdout);
        assert!(
            ours.status.success() && stdout.contains(&format!("SUCCESS ({tests} test")),
            "{file}: {stdout}"
        );
        let promtool = std::path::Path::new("/usr/bin/promtool");
        if !promtool.exists() {
            eprintln!(
                "SKIPPED the promtool half: no /usr/bin/promtool (Debian package prometheus)"
            );
            continue;
        }
        let theirs = std::process::Command::new(promtool)
            .args(["test", "rules", &path])
            .output()
            .expect("promtool");
        assert!(
            theirs.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&theirs.stdout),
            String::from_utf8_lossy(&theirs.stderr)
        );
    }
}

/// The real Alertmanager (Debian's prometheus-alertmanager; .ci/run installs it) on a free
/// loopback port, with its data in `dir`; killed when dropped.
struct RealAlertmanager {
    child: std::process::Child,
    base: String,
}

impl RealAlertmanager {
    fn start(dir: &std::path::Path) -> Option<RealAlertmanager> {
        Self::start_with(dir, free_port(), "", "")
    }

    /// Starts one on `port` with `global` settings (YAML lines under `global:`) and `tail`
    /// (more top-level YAML, such as `inhibit_rules`), keeping its data under `dir`.
    fn start_with(
        dir: &std::path::Path,
        port: u16,
        global: &str,
        tail: &str,
    ) -> Option<RealAlertmanager> {
        let bin = std::path::Path::new("/usr/bin/prometheus-alertmanager");
        if !bin.exists() {
            eprintln!(
                "SKIPPED: no {} (Debian package prometheus-alertmanager)",
                bin.display()
            );
            return None;
        }
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n{global}\nroute:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n{tail}"
            ),
        )
        .expect("config");
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.join(format!("am-data-{port}")).display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let am = RealAlertmanager {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        wait_ready(&am.base, "alertmanager");
        Some(am)
    }

    fn alerts(&self) -> Vec<Value> {
        reqwest::blocking::get(format!("{}/api/v2/alerts", self.base))
            .and_then(|r| r.json::<Vec<Value>>())
            .unwrap_or_default()
    }
}

impl Drop for RealAlertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_alertmanager_computes_the_same_fingerprint() {
    let env = Env::new();
    std::fs::create_dir_all(env.data()).expect("dir");
    let Some(am) = RealAlertmanager::start(env.dir.path()) else {
        return;
    };
    let hook = Webhook::start(0);
    let rules = env.data().join("rules.yml");
    std::fs::write(&rules, RULES).expect("rules");
    let cfg = format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = {:?}\n\
         [[receiver]]\nname = \"hook\"\nurl = {:?}\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        am.base,
        hook.url,
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&cfg);
    std::fs::write(env.spool().join("a.xml"), result("web", "critical", "ok")).expect("write");
    let ours = hook.wait_for(1, Duration::from_secs(30));
    let ours = &ours[0]["alerts"][0];
    let deadline = Instant::now() + Duration::from_secs(30);
    let theirs = loop {
        let alerts = am.alerts();
        if let Some(a) = alerts
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "LoginCritical")
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "the alert never reached alertmanager"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(theirs["labels"], ours["labels"], "the same alert");
    assert_eq!(
        theirs["fingerprint"], ours["fingerprint"],
        "Alertmanager's fingerprint is ours"
    );
    daemon.stop();
}

/// Inhibition as Alertmanager decides it, on the same alerts and the same rules: the alerts
/// probewatch notifies are exactly those the real Alertmanager does not mark inhibited. The
/// rules include Alertmanager's subtle case, a rule whose two sides overlap: alerts matching
/// both sides never mute each other, while one matching only the source side mutes them.
#[test]
fn inhibition_mutes_what_a_real_alertmanager_mutes_on_the_same_alerts() {
    let env = Env::new();
    std::fs::create_dir_all(env.data()).expect("dir");
    let inhibit = [
        (
            r#"alertname="HostDown""#,
            r#"severity="warning""#,
            r#"["host"]"#,
        ),
        (
            r#"severity=~"warning|info""#,
            r#"severity="warning""#,
            r#"["check"]"#,
        ),
    ];
    let am_rules: String = inhibit
        .iter()
        .map(|(source, target, equal)| {
            format!(
                "  - source_matchers: ['{source}']\n    target_matchers: ['{target}']\n    equal: {equal}\n"
            )
        })
        .collect();
    let Some(am) = RealAlertmanager::start_with(
        env.dir.path(),
        free_port(),
        "",
        &format!("inhibit_rules:\n{am_rules}"),
    ) else {
        return;
    };
    let ours: String = inhibit
        .iter()
        .map(|(source, target, equal)| {
            format!(
                "[[inhibit]]\nsource_matchers = ['{source}']\ntarget_matchers = ['{target}']\nequal = {equal}\n"
            )
        })
        .collect();
    let hook = Webhook::start(0);
    let rules = env.data().join("rules.yml");
    std::fs::write(
        &rules,
        r#"groups:
  - name: hosts
    rules:
      - alert: HostDown
        expr: probe_check_status{check="ping"} == 2
        labels: {severity: critical}
      - alert: CheckCritical
        expr: probe_check_status{check!="ping"} == 2
        for: 2s
        labels: {severity: warning}
      - alert: CheckWarning
        expr: probe_check_status == 1
        labels: {severity: info}
"#,
    )
    .expect("rules");
    let daemon = env.start_with_config(&format!(
        "evaluation_interval = \"1s\"\nrule_files = [{:?}]\n{ours}\
         [[receiver]]\nname = \"ops\"\nurl = {:?}\n\
         [[route]]\nreceiver = \"ops\"\ngroup_by = [\"alertname\", \"host\", \"check\"]\n\
         [[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        hook.url,
        env.spool().display().to_string()
    ));
    let now = crate::util::epoch_secs();
    let report = |host: &str, checks: &[(&str, &str)]| {
        crate::util::write_renamed(
            &env.spool().join(format!("{host}.xml")),
            &crate::util::result_at("app", host, now, "1h", checks),
        );
    };
    // The host is down: its warning is muted by the first rule.
    report("db-1", &[("ping", "critical"), ("login", "critical")]);
    // An info alert (source side only) mutes the warning on the same check.
    report("web-3", &[("disk", "critical")]);
    report("web-4", &[("disk", "warning")]);
    // Warnings on the same check of two hosts: each matches both sides of the second
    // rule, so the one firing first does not mute the other when it comes.
    report("web-1", &[("login", "critical")]);
    hook.wait_for(3, Duration::from_secs(30));
    report("web-2", &[("login", "critical")]);
    // All six alerts fire in probewatch.
    let deadline = Instant::now() + Duration::from_secs(30);
    let firing = loop {
        let alerts: Value =
            serde_json::from_str(&daemon.get_text("/api/v1/alerts")).expect("alerts json");
        let firing: Vec<Value> = alerts["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .collect();
        if firing.len() == 6 {
            break firing;
        }
        assert!(Instant::now() < deadline, "six alerts fire: {alerts}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let key = |labels: &Value| {
        format!(
            "{} {} {}",
            labels["alertname"].as_str().unwrap_or(""),
            labels["host"].as_str().unwrap_or(""),
            labels["check"].as_str().unwrap_or("")
        )
    };
    // Alertmanager is given every firing alert, as a Prometheus would send them.
    let posted: Vec<Value> = firing
        .iter()
        .map(|a| json!({"labels": a["labels"], "annotations": a["annotations"]}))
        .collect();
    let client = reqwest::blocking::Client::new();
    let answer = client
        .post(format!("{}/api/v2/alerts", am.base))
        .json(&posted)
        .send()
        .expect("post to alertmanager");
    assert!(answer.status().is_success(), "{:?}", answer.text());
    // Its inhibitor reads new alerts asynchronously: wait until its answer is steady.
    let mut last = BTreeSet::new();
    let mut steady = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let theirs_notified = loop {
        let alerts = am.alerts();
        let active: BTreeSet<String> = alerts
            .iter()
            .filter(|a| {
                a["status"]["inhibitedBy"]
                    .as_array()
                    .is_none_or(|v| v.is_empty())
            })
            .map(|a| key(&a["labels"]))
            .collect();
        if alerts.len() == 6 && active == last {
            steady += 1;
            if steady == 5 {
                break active;
            }
        } else {
            steady = 0;
        }
        last = active;
        assert!(
            Instant::now() < deadline,
            "alertmanager settles: {alerts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    hook.wait_for(theirs_notified.len(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let ours_notified: BTreeSet<String> = hook
        .received()
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| key(&a["labels"]))
        .collect();
    assert_eq!(
        ours_notified, theirs_notified,
        "probewatch notifies exactly what Alertmanager leaves uninhibited"
    );
    assert_eq!(
        theirs_notified,
        [
            "CheckCritical web-1 login",
            "CheckCritical web-2 login",
            "CheckWarning web-4 disk",
            "HostDown db-1 ping",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<BTreeSet<String>>(),
        "the case this test is about happened"
    );
    daemon.stop();
}

/// Prometheus's contract with Alertmanager: a firing alert is re-sent every re-send interval
/// with an end a few intervals ahead, so Alertmanager keeps it active for as long as it fires
/// (here many times its `resolve_timeout`), an Alertmanager that restarts learns of it again,
/// and a resolved alert ends at once.
#[test]
fn a_real_alertmanager_keeps_a_firing_alert_active_until_it_resolves() {
    let env = Env::new();
    std::fs::create_dir_all(env.data()).expect("dir");
    let port = free_port();
    let Some(am) = RealAlertmanager::start_with(env.dir.path(), port, "  resolve_timeout: 2s", "")
    else {
        return;
    };
    let rules = env.data().join("rules.yml");
    std::fs::write(&rules, RULES).expect("rules");
    let cfg = format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = {:?}\n\
         resend_interval = \"1s\"\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        am.base,
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&cfg);
    std::fs::write(env.spool().join("a.xml"), result("web", "critical", "ok")).expect("write");
    let login_critical = |am: &RealAlertmanager| {
        am.alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "LoginCritical")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while login_critical(&am).is_none() {
        assert!(
            Instant::now() < deadline,
            "the alert never reached alertmanager"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Five resolve timeouts: without re-sends Alertmanager would have resolved it after one.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(10) {
        let alert = login_critical(&am);
        let state = alert.as_ref().map(|a| a["status"]["state"].clone());
        assert_eq!(
            state,
            Some(Value::from("active")),
            "still firing in probewatch after {:?}: {alert:?}",
            watched.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // A fresh Alertmanager in its place (no state) hears of the alert at the next re-send.
    drop(am);
    let am = RealAlertmanager::start_with(env.dir.path(), port, "  resolve_timeout: 2s", "")
        .expect("alertmanager again");
    let deadline = Instant::now() + Duration::from_secs(30);
    while login_critical(&am).is_none() {
        assert!(
            Instant::now() < deadline,
            "the restarted alertmanager never heard of it"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Resolved: sent with its end, so Alertmanager drops it without waiting for a timeout.
    std::fs::write(env.spool().join("b.xml"), result("web", "ok", "ok")).expect("write");
    let deadline = Instant::now() + Duration::from_secs(30);
    while login_critical(&am).is_some() {
        assert!(
            Instant::now() < deadline,
            "the resolved alert stayed active"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop();
}

/// A recording-rule chain (`r2 = r1 + 1`) gives this evaluation's r1 + 1, as in
/// Prometheus: the same promtool-format test passes under the real promtool and under
/// `probewatch rules test`.
#[test]
fn a_recording_rule_chain_agrees_with_promtool() {
    let env = Env::new();
    let dir = env.dir.path();
    std::fs::write(
        dir.join("chain.yml"),
        "groups:\n  - name: chain\n    rules:\n      - record: r1\n        expr: m * 2\n      \
         - record: r2\n        expr: r1 + 1\n",
    )
    .expect("rules");
    let test = dir.join("chain_test.yml");
    std::fs::write(
        &test,
        "rule_files: [chain.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    \
         input_series:\n      - series: m\n        values: \"3 4 5\"\n    promql_expr_test:\n      \
         - expr: r2\n        eval_time: 0m\n        exp_samples:\n          - labels: r2\n            \
         value: 7\n      - expr: r2\n        eval_time: 2m\n        exp_samples:\n          \
         - labels: r2\n            value: 11\n",
    )
    .expect("test");
    passes_under_probewatch_and_promtool(&test);
}

/// `ALERTS` and `ALERTS_FOR_STATE` are written as Prometheus writes them, and end with a stale
/// marker when the alert resolves (no 5-minute echo): the same test passes under the real
/// promtool and `probewatch rules test`.
#[test]
fn alerts_series_agree_with_promtool() {
    let env = Env::new();
    let dir = env.dir.path();
    std::fs::write(
        dir.join("down.yml"),
        r#"groups:
  - name: g
    rules:
      - alert: Down
        expr: up == 0
        for: 2m
        labels:
          severity: page
      - record: down:alerts
        expr: count(ALERTS{alertname="Down", alertstate="firing"})
"#,
    )
    .expect("rules");
    let test = dir.join("down_test.yml");
    std::fs::write(
        &test,
        r#"rule_files: [down.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="a"}'
        values: "0 0 0 0 1 1 1"
    promql_expr_test:
      - expr: ALERTS
        eval_time: 1m
        exp_samples:
          - labels: 'ALERTS{alertname="Down",alertstate="pending",job="a",severity="page"}'
            value: 1
      - expr: ALERTS
        eval_time: 3m
        exp_samples:
          - labels: 'ALERTS{alertname="Down",alertstate="firing",job="a",severity="page"}'
            value: 1
      - expr: ALERTS_FOR_STATE
        eval_time: 3m
        exp_samples:
          - labels: 'ALERTS_FOR_STATE{alertname="Down",job="a",severity="page"}'
            value: 0
      - expr: down:alerts
        eval_time: 3m
        exp_samples:
          - labels: 'down:alerts'
            value: 1
      - expr: ALERTS
        eval_time: 5m
        exp_samples: []
      - expr: down:alerts
        eval_time: 5m
        exp_samples: []
"#,
    )
    .expect("test");
    passes_under_probewatch_and_promtool(&test);
}

/// Alerting rules whose expression is a scalar (`expr: 1`) or a literal vector fire, as in
/// Prometheus: the same test passes under the real promtool and `probewatch rules test`.
#[test]
fn scalar_alert_expressions_fire_as_under_promtool() {
    let env = Env::new();
    let dir = env.dir.path();
    std::fs::write(
        dir.join("s.yml"),
        "groups:\n  - name: s\n    rules:\n      - alert: Always\n        expr: 1\n      \
         - alert: AlsoVector\n        expr: vector(1)\n        labels:\n          severity: low\n",
    )
    .expect("rules");
    let test = dir.join("s_test.yml");
    std::fs::write(
        &test,
        "rule_files: [s.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    \
         input_series: []\n    alert_rule_test:\n      - eval_time: 1m\n        alertname: Always\n        \
         exp_alerts:\n          - exp_labels: {}\n      - eval_time: 1m\n        alertname: AlsoVector\n        \
         exp_alerts:\n          - exp_labels:\n              severity: low\n",
    )
    .expect("test");
    passes_under_probewatch_and_promtool(&test);
}

/// Runs a promtool-format rule test file under `probewatch rules test` and, where Debian's
/// promtool is installed (.ci/run installs it), under promtool; both must pass.
fn passes_under_probewatch_and_promtool(test: &std::path::Path) {
    agrees_with_promtool(test, true);
}

/// The names of the rules the daemon runs now.
fn rule_names(daemon: &Daemon) -> Vec<String> {
    let rules = daemon.get("/api/v1/rules");
    rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect()
}

/// Rules, receivers and routes reload without a restart, on SIGHUP and on `POST /-/reload`;
/// a broken rule file is refused with its reason while the running rules go on, and a
/// firing alert keeps its state across reloads.
#[test]
fn rules_and_receivers_reload_on_sighup_and_post_and_a_bad_file_keeps_the_old() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let daemon = env.start_with_config(&config(&env, &hook));
    let rules = env.data().join("rules.yml");
    std::fs::write(env.spool().join("a.xml"), result("web", "critical", "ok")).expect("write");
    hook.wait_for(1, Duration::from_secs(30));
    assert_eq!(
        daemon.metric("probewatch_config_last_reload_successful"),
        1.0
    );

    // SIGHUP: one more rule.
    std::fs::write(
        &rules,
        format!("{RULES}      - alert: SearchCritical\n        expr: probe_check_status{{check=\"search\"}} == 2\n"),
    )
    .expect("rules");
    daemon.sighup();
    daemon.wait_until("the new rule", Duration::from_secs(30), |d| {
        rule_names(d).contains(&"SearchCritical".to_string())
    });
    let alerts = daemon.get("/api/v1/alerts");
    assert_eq!(
        alerts["data"]["alerts"][0]["state"], "firing",
        "the firing alert kept its state: {alerts}"
    );

    // A broken file: refused, with the file and the reason; the old rules keep running.
    std::fs::write(
        &rules,
        "groups:\n  - name: probes\n    rules:\n      - alert: Bad\n        expr: sum(\n",
    )
    .expect("rules");
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/-/reload", daemon.base))
        .send()
        .expect("reload");
    assert_eq!(answer.status().as_u16(), 500);
    let text = answer.text().expect("text");
    assert!(text.contains("rules.yml"), "names the file: {text}");
    assert!(rule_names(&daemon).contains(&"SearchCritical".to_string()));
    assert_eq!(
        daemon.metric("probewatch_config_last_reload_successful"),
        0.0
    );
    let page = daemon.get_text("/rules");
    assert!(page.contains("Configuration reload failed"), "{page}");

    // Fixed, and the receiver now points elsewhere: the next notification goes there.
    std::fs::write(&rules, RULES).expect("rules");
    let other = Webhook::start(0);
    std::fs::write(env.dir.path().join("probewatch.toml"), config(&env, &other)).expect("config");
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/-/reload", daemon.base))
        .send()
        .expect("reload");
    assert_eq!(answer.status().as_u16(), 200, "{:?}", answer.text());
    assert_eq!(
        daemon.metric("probewatch_config_last_reload_successful"),
        1.0
    );
    assert!(!rule_names(&daemon).contains(&"SearchCritical".to_string()));
    assert!(
        !daemon
            .get_text("/rules")
            .contains("Configuration reload failed")
    );
    std::fs::write(env.spool().join("b.xml"), result("web", "ok", "ok")).expect("write");
    let got = other.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0]["status"], "resolved", "{got:?}");
    assert_eq!(
        hook.received().len(),
        1,
        "the old receiver is no longer used"
    );
    daemon.stop();
}

/// Annotation and label templates render as Prometheus renders them — Go's text/template
/// with Prometheus's functions (`query`, `with`, `range`, variables, `$labels` as a whole
/// map, humanize*, `$externalLabels`, …): the same test file, whose expectations are
/// promtool's output, passes under the real promtool and `probewatch rules test`.
#[test]
fn templates_render_as_promtool_renders_them() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/data");
    passes_under_probewatch_and_promtool(&data.join("templates_test.yml"));
}

/// Runs a rule test under probewatch and (when installed) promtool; both must give `pass`.
fn agrees_with_promtool(test: &std::path::Path, pass: bool) {
    let ours = std::process::Command::new(BIN)
        .args(["rules", "test"])
        .arg(test)
        .output()
        .expect("run");
    assert_eq!(
        ours.status.success(),
        pass,
        "probewatch: {}",
        String::from_utf8_lossy(&ours.stdout)
    );
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        eprintln!("SKIPPED the promtool half: no /usr/bin/promtool (Debian package prometheus)");
        return;
    }
    let theirs = std::process::Command::new(promtool)
        .args(["test", "rules"])
        .arg(test)
        .output()
        .expect("promtool");
    assert_eq!(
        theirs.status.success(),
        pass,
        "promtool: {}",
        String::from_utf8_lossy(&theirs.stdout)
    );
}

/// promtool's test-file details: `labels` may be left out of `exp_samples`, `eval_time`
/// defaults to 0, `input_series` may be empty, a group's `interval` defaults to the file's
/// `evaluation_interval`, `group_eval_order` orders groups, and a rule that fails to evaluate
/// (a many-to-many match) fails the test instead of passing.
#[test]
fn rule_test_files_are_read_as_promtool_reads_them() {
    let env = Env::new();
    let dir = env.dir.path();
    std::fs::write(
        dir.join("r.yml"),
        r#"groups:
  - name: second
    rules:
      - record: b
        expr: a + 1
  - name: first
    rules:
      - record: a
        expr: vector(10)
"#,
    )
    .expect("rules");
    // `a` is recorded by group "first"; evaluated first, `b` sees this evaluation's `a`.
    let ordered = dir.join("ordered_test.yml");
    std::fs::write(
        &ordered,
        r#"rule_files: [r.yml]
evaluation_interval: 30s
group_eval_order: [first, second]
tests:
  - input_series: []
    promql_expr_test:
      - expr: b
        exp_samples:
          - labels: b
            value: 11
      - expr: count(a)
        eval_time: 30s
        exp_samples:
          - value: 1
"#,
    )
    .expect("test");
    agrees_with_promtool(&ordered, true);
    // Without the order, probewatch runs groups in file order, so "second" sees no `a` at 0
    // and the same test fails (promtool's order is then random: Go map iteration).
    let unordered = dir.join("unordered_test.yml");
    std::fs::write(
        &unordered,
        std::fs::read_to_string(&ordered)
            .expect("read")
            .replace("group_eval_order: [first, second]\n", ""),
    )
    .expect("test");
    let ours = std::process::Command::new(BIN)
        .args(["rules", "test"])
        .arg(&unordered)
        .output()
        .expect("run");
    assert!(
        !ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stdout)
    );
    // A rule whose evaluation fails (many-to-many matching) fails the test.
    std::fs::write(
        dir.join("m.yml"),
        r#"groups:
  - name: m
    rules:
      - record: joined
        expr: x * on (job) y
"#,
    )
    .expect("rules");
    let failing = dir.join("many_test.yml");
    std::fs::write(
        &failing,
        r#"rule_files: [m.yml]
tests:
  - interval: 1m
    input_series:
      - series: 'x{job="a",i="1"}'
        values: '1'
      - series: 'x{job="a",i="2"}'
        values: '1'
      - series: 'y{job="a",k="1"}'
        values: '1'
      - series: 'y{job="a",k="2"}'
        values: '1'
    promql_expr_test:
      - expr: vector(1)
        exp_samples:
          - value: 1
"#,
    )
    .expect("test");
    agrees_with_promtool(&failing, false);
}

/// `external_labels` reach receivers (an alert's own label wins, as Prometheus sends them to
/// Alertmanager) and templates (`$externalLabels`), and `query` in a template runs over the
/// store.
#[test]
fn external_labels_and_template_queries_reach_the_webhook() {
    let env = Env::new();
    let hook = Webhook::start(0);
    std::fs::create_dir_all(env.data()).expect("data dir");
    let rules = env.data().join("rules.yml");
    std::fs::write(
        &rules,
        r#"groups:
  - name: probes
    rules:
      - alert: LoginCritical
        expr: probe_check_status{check="login"} == 2
        labels:
          site: rule-wins
        annotations:
          where: '{{ $externalLabels.site }}/{{ $externalLabels.region }}'
          failing: '{{ with query "count(probe_check_status == 2)" }}{{ . | first | value }}{{ end }}'
"#,
    )
    .expect("rules");
    let cfg = format!(
        "rule_files = [{:?}]\nexternal_labels = {{ site = \"eu1\", region = \"west\" }}\n\
         [[receiver]]\nname = \"ops\"\nurl = {:?}\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        hook.url,
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&cfg);
    std::fs::write(
        env.spool().join("a.xml"),
        result("web", "critical", "critical"),
    )
    .expect("write");
    let got = hook.wait_for(1, Duration::from_secs(60));
    let alert = &got[0]["alerts"][0];
    assert_eq!(alert["labels"]["region"], "west", "{alert}");
    assert_eq!(alert["labels"]["site"], "rule-wins", "{alert}");
    assert_eq!(alert["annotations"]["where"], "eu1/west", "{alert}");
    assert_eq!(alert["annotations"]["failing"], "2", "{alert}");
    daemon.stop();
}

/// A command receiver gets the payload on stdin and the notification's idempotency key in
/// `PROBEWATCH_IDEMPOTENCY_KEY`; a webhook gets it as a header and in its JSON (same key
/// for the same notification, whatever the receiver type).
#[test]
fn receivers_get_the_idempotency_key() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.data().join("rules.yml");
    std::fs::create_dir_all(env.data()).expect("data dir");
    std::fs::write(&rules, RULES).expect("rules");
    let out = env.dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let script = format!(
        "cat > {dir}/payload.json; printf %s \"$PROBEWATCH_IDEMPOTENCY_KEY\" > {dir}/key.tmp && mv {dir}/key.tmp {dir}/key",
        dir = out.display()
    );
    let config = format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"ops\"\nurl = {:?}\n\
         [[receiver]]\nname = \"script\"\ntype = \"command\"\ncommand = [\"sh\", \"-c\", {script:?}]\n\
         [[route]]\nreceiver = \"ops\"\ncontinue = true\n[[route]]\nreceiver = \"script\"\n\
         [[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        hook.url,
        env.spool().display().to_string()
    );
    let daemon = env.start_with_config(&config);
    std::fs::write(env.spool().join("a.xml"), result("web", "critical", "ok")).expect("write");
    let got = hook.wait_for(1, Duration::from_secs(60));
    let webhook_key = got[0]["idempotencyKey"]
        .as_str()
        .expect("key in the JSON")
        .to_string();
    assert!(webhook_key.starts_with("probewatch-"), "{webhook_key}");
    assert_eq!(
        hook.keys.lock().expect("lock").first(),
        Some(&webhook_key),
        "the same key in the Idempotency-Key header"
    );
    daemon.wait_until("the command's key", Duration::from_secs(60), |_| {
        out.join("key").exists()
    });
    let command_key = std::fs::read_to_string(out.join("key")).expect("key");
    assert!(command_key.starts_with("probewatch-"), "{command_key}");
    let payload: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("payload.json")).expect("payload"))
            .expect("JSON on stdin");
    assert_eq!(payload["receiver"], "script");
    daemon.stop();
}

/// `/metrics` watches the alerter: per rule group its evaluations, failures and last
/// duration; per receiver the notifications waiting and the oldest one's age.
#[test]
fn metrics_show_failing_rules_and_a_stuck_receiver() {
    let env = Env::new();
    // The receiver refuses everything: notifications wait in the outbox.
    let hook = Webhook::start(1_000);
    let rules = env.data().join("self.yml");
    std::fs::create_dir_all(env.data()).expect("data dir");
    std::fs::write(
        &rules,
        r#"
groups:
  - name: self
    interval: 1s
    rules:
      - alert: LoginCritical
        expr: probe_check_status{check="login"} == 2
      # Two series on each side matched on nothing: many-to-many, fails at every evaluation.
      - record: broken
        expr: probe_check_status + on() probe_check_status
"#,
    )
    .expect("rules");
    let daemon = env.start_with_config(&format!(
        "rule_files = [{:?}]\n[[receiver]]\nname = \"ops\"\nurl = {:?}\n[[route]]\nreceiver = \"ops\"\ngroup_wait = \"0s\"\n[[spool]]\npath = {:?}\n",
        rules.display().to_string(),
        hook.url,
        env.spool().display().to_string()
    ));
    std::fs::write(env.spool().join("a.xml"), result("web", "critical", "ok")).expect("write");
    daemon.wait_until(
        "a failing rule and a waiting notification",
        Duration::from_secs(60),
        |d| {
            d.metric("probewatch_rule_evaluation_failures_total") >= 1.0
                && d.metric("probewatch_notifications_queued") >= 1.0
        },
    );
    let text = daemon.get_text("/metrics");
    let group = format!("rule_group=\"{};self\"", rules.display());
    assert!(
        text.lines().any(
            |l| l.starts_with("probewatch_rule_group_last_duration_seconds{") && l.contains(&group)
        ),
        "{text}"
    );
    assert!(
        text.contains("probewatch_notifications_queued{receiver=\"ops\"}"),
        "{text}"
    );
    daemon.wait_until(
        "the oldest notification to age",
        Duration::from_secs(30),
        |d| d.metric("probewatch_notifications_oldest_queued_age_seconds") >= 1.0,
    );
    // The pages say it too: a banner where the alerts are, and the notifications page.
    for page in ["/", "/alerts", "/notifications"] {
        let html = daemon.get_text(page);
        assert!(
            html.contains("id=\"failing-receivers\"") && html.contains("<strong>ops</strong>"),
            "{page}: {html}"
        );
        assert!(html.contains("503"), "{page} shows the receiver's error");
    }
    let page = daemon.get_text("/notifications");
    assert!(page.contains("status-warning\">retrying"), "{page}");
    daemon.stop();
}

/// Groups due together are read from the store once, but a group that reads what an
/// earlier group wrote in the same round reads again: a rule over another group's recorded
/// `time()` sees this round's value, never the round before's.
#[test]
fn a_rule_on_another_groups_recording_sees_the_same_round() {
    let env = Env::new();
    let hook = Webhook::start(0);
    let rules = env.dir.path().join("chain.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: record\n    rules:\n      - record: t\n        expr: time()\n  \
         - name: alert\n    rules:\n      - alert: Behind\n        expr: time() - t > 0.5\n",
    )
    .expect("rules");
    let daemon = start_with_rules(&env, &hook, &rules, "");
    // Rounds a second apart: wait for five recorded values.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recorded = daemon.get("/api/v1/query?query=t%5B1h%5D");
        let values = recorded["data"]["result"][0]["values"]
            .as_array()
            .map_or(0, Vec::len);
        if values >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "rounds did not run: {recorded}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let behind = daemon.get("/api/v1/query?query=ALERTS%7Balertname%3D%22Behind%22%7D%5B1h%5D");
    assert_eq!(
        behind["data"]["result"].as_array().map(Vec::len),
        Some(0),
        "the alert group read a recorded value from an earlier round: {behind}"
    );
    daemon.stop();
}
