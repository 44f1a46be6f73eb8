//! Grafana's Prometheus data source, replayed: the requests Grafana 11 sends when a data
//! source is saved and tested, when Explore opens and runs a query, when the metrics browser
//! lists names, labels and values, and when dashboard variables are resolved (method, path,
//! form body and headers as Grafana sends them). Each answer must be what Grafana can use;
//! where Debian's `prometheus` is installed (.ci/run installs it) the same requests go to a
//! real Prometheus too, and every field Prometheus answers with must be in ours, of the same
//! JSON type, and equal where the answer does not depend on stored data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::util::{Daemon, Env, free_port, wait_ready};

/// Debian's Prometheus on a free loopback port, with nothing to scrape; killed when dropped.
struct RealPrometheus {
    child: std::process::Child,
    base: String,
}

impl RealPrometheus {
    fn start(dir: &std::path::Path) -> Option<RealPrometheus> {
        let bin = std::path::Path::new("/usr/bin/prometheus");
        if !bin.exists() {
            eprintln!(
                "SKIPPED the Prometheus half: no /usr/bin/prometheus (Debian package prometheus)"
            );
            return None;
        }
        let port = free_port();
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").expect("config");
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prom = RealPrometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        wait_ready(&prom.base, "prometheus");
        Some(prom)
    }
}

impl Drop for RealPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as Grafana sends it.
struct Call {
    post: bool,
    path: String,
    form: Vec<(&'static str, String)>,
    /// Whether the answer is the same whatever is stored (then it must equal Prometheus's).
    data_free: bool,
}

fn get(path: impl Into<String>) -> Call {
    Call {
        post: false,
        path: path.into(),
        form: Vec::new(),
        data_free: false,
    }
}

fn post(path: &str, form: Vec<(&'static str, String)>) -> Call {
    Call {
        post: true,
        path: path.to_string(),
        form,
        data_free: false,
    }
}

fn data_free(mut call: Call) -> Call {
    call.data_free = true;
    call
}

fn send(base: &str, call: &Call) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let url = format!("{base}{}", call.path);
    let request = if call.post {
        let mut encoded = reqwest::Url::parse("http://form.invalid/").expect("url");
        encoded
            .query_pairs_mut()
            .extend_pairs(call.form.iter().map(|(k, v)| (*k, v.as_str())));
        client
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(encoded.query().unwrap_or_default().to_string())
    } else {
        client.get(url)
    };
    let response = request
        .header("User-Agent", "Grafana/11.3.0")
        .header("X-Grafana-Org-Id", "1")
        .header("Accept", "application/json, text/plain, */*")
        .timeout(Duration::from_secs(60))
        .send()
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Every field of Prometheus's answer is in ours with the same JSON type (arrays compared
/// element by element where both have elements).
fn covers(ours: &Value, theirs: &Value, at: &str) -> Result<(), String> {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                let Some(mine) = a.get(key) else {
                    return Err(format!("{at}: no field {key:?}"));
                };
                covers(mine, value, &format!("{at}.{key}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) => {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                covers(x, y, &format!("{at}[0]"))?;
            }
            Ok(())
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Null, Value::Null) => Ok(()),
        _ => Err(format!("{at}: {ours} is not of the type of {theirs}")),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn start_probewatch(env: &Env) -> Daemon {
    start_probewatch_on(env, &[])
}

/// [`start_probewatch`] with more command-line arguments (a store).
fn start_probewatch_on(env: &Env, args: &[&str]) -> Daemon {
    let daemon = env.start(args);
    for (probe, status) in [("web", "ok"), ("shop", "critical")] {
        std::fs::write(
            env.spool().join(format!("{probe}.xml")),
            format!(
                r#"<probe name="{probe}" host="h1" time="{}">
  <check name="login" status="{status}" duration="0.25">login</check>
  <metric name="queue_depth" value="3"/>
</probe>"#,
                now()
            ),
        )
        .expect("write");
    }
    daemon.wait_files(2, Duration::from_secs(30));
    daemon
}

#[test]
fn grafanas_request_sequence_gets_prometheus_shaped_answers() {
    grafanas_request_sequence(&[]);
}

/// The same sequence against a server on PostgreSQL: the series index, label values and
/// status pages come from the other back end, and Grafana must not tell.
#[test]
fn grafanas_request_sequence_gets_the_same_answers_from_postgresql() {
    let Some(pg) = probewatch_testpg::TestPostgres::start() else {
        return;
    };
    let url = pg.create_database("probewatch");
    grafanas_request_sequence(&["--store", &url]);
}

fn grafanas_request_sequence(args: &[&str]) {
    let env = Env::new();
    let daemon = start_probewatch_on(&env, args);
    let prometheus = RealPrometheus::start(env.dir.path());
    let (end, start) = (now() + 60, now() - 3600);
    let range = || vec![("start", start.to_string()), ("end", end.to_string())];
    let with = |mut base: Vec<(&'static str, String)>, more: &[(&'static str, &str)]| {
        base.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
        base
    };
    let calls = vec![
        // Save & test: build info, then `1+1`.
        data_free(get("/api/v1/status/buildinfo")),
        data_free(post(
            "/api/v1/query",
            vec![("query", "1+1".into()), ("time", end.to_string())],
        )),
        // Explore opens: metric names, metadata, label names.
        get(format!(
            "/api/v1/label/__name__/values?start={start}&end={end}"
        )),
        get("/api/v1/metadata"),
        get(format!("/api/v1/labels?start={start}&end={end}")),
        // Metrics browser: labels and values of one metric, series with Grafana's limit.
        post(
            "/api/v1/labels",
            with(range(), &[("match[]", "probe_check_status")]),
        ),
        get(format!(
            "/api/v1/label/probe/values?start={start}&end={end}&match%5B%5D=probe_check_status"
        )),
        get(format!(
            "/api/v1/series?start={start}&end={end}&match%5B%5D=probe_check_status&limit=40000"
        )),
        // Running a query in Explore: range, exemplars, instant.
        post(
            "/api/v1/query_range",
            with(range(), &[("query", "probe_check_status"), ("step", "15")]),
        ),
        post(
            "/api/v1/query_exemplars",
            with(range(), &[("query", "probe_check_status")]),
        ),
        post(
            "/api/v1/query",
            vec![
                ("query", "sum by (probe) (probe_check_status)".into()),
                ("time", end.to_string()),
            ],
        ),
        data_free(post(
            "/api/v1/query_range",
            with(range(), &[("query", "vector(1) * 2"), ("step", "600")]),
        )),
        // The query editor's format button.
        data_free(get(
            "/api/v1/format_query?query=sum(rate(probe_check_status%5B5m%5D))%20by%20(probe)",
        )),
        // Variables: label_values(probe_check_status, probe) and query_result(...).
        get(format!(
            "/api/v1/label/probe/values?match%5B%5D=probe_check_status&start={start}&end={end}"
        )),
        post(
            "/api/v1/query",
            vec![
                ("query", "count by (probe) (probe_check_status)".into()),
                ("time", end.to_string()),
            ],
        ),
        // Status pages and what Grafana's alerting view lists.
        get("/api/v1/status/runtimeinfo"),
        get("/api/v1/status/flags"),
        get("/api/v1/status/config"),
        get("/api/v1/status/tsdb"),
        get("/api/v1/targets"),
        data_free(get("/api/v1/alertmanagers")),
        get("/api/v1/rules"),
        get("/api/v1/alerts"),
    ];
    let mut answers = Vec::new();
    for call in &calls {
        let (status, body) = send(&daemon.base, call);
        assert_eq!(status, 200, "{}: {body}", call.path);
        assert_eq!(body["status"], "success", "{}: {body}", call.path);
        if let Some(prometheus) = &prometheus {
            let (their_status, theirs) = send(&prometheus.base, call);
            assert_eq!(their_status, 200, "prometheus {}: {theirs}", call.path);
            // Flags are each server's own names: the answer need only be a map of strings.
            let theirs = if call.path == "/api/v1/status/flags" {
                serde_json::json!({"status": "success", "data": {}})
            } else {
                theirs
            };
            if let Err(e) = covers(&body, &theirs, "") {
                panic!("{}: {e}\nours: {body}\ntheirs: {theirs}", call.path);
            }
            if call.data_free && call.path != "/api/v1/status/buildinfo" {
                assert_eq!(body["data"], theirs["data"], "{}", call.path);
            }
        }
        answers.push(body);
    }
    // What Grafana reads from them.
    let version = answers[0]["data"]["version"].as_str().expect("version");
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("major");
    assert!(
        major >= 3,
        "a version Grafana uses the fast label calls for: {version}"
    );
    assert_eq!(answers[1]["data"]["result"][1], "2", "{}", answers[1]);
    let names = &answers[2]["data"];
    for name in [
        "probe_check_status",
        "probe_check_duration_seconds",
        "queue_depth",
    ] {
        assert!(
            names
                .as_array()
                .expect("names")
                .contains(&Value::from(name)),
            "{names}"
        );
    }
    let metadata = &answers[3]["data"];
    assert_eq!(
        metadata["probe_check_status"][0]["type"], "gauge",
        "{metadata}"
    );
    assert_eq!(metadata["queue_depth"][0]["type"], "unknown", "{metadata}");
    assert_eq!(answers[6]["data"], serde_json::json!(["shop", "web"]));
    assert_eq!(answers[7]["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(answers[8]["data"]["resultType"], "matrix");
    assert_eq!(answers[9]["data"], serde_json::json!([]));
    assert_eq!(
        answers[12]["data"],
        "sum by (probe) (rate(probe_check_status[5m]))"
    );
    assert!(
        answers[16]["data"]
            .as_object()
            .is_some_and(|flags| flags.values().all(Value::is_string)
                && flags["storage.tsdb.retention.time"] == "90d"),
        "{}",
        answers[16]
    );
    let tsdb = &answers[18]["data"];
    assert!(tsdb["headStats"]["numSeries"].as_u64() >= Some(5), "{tsdb}");
    assert!(tsdb["headStats"]["minTime"].as_i64() <= tsdb["headStats"]["maxTime"].as_i64());
    daemon.stop();
}

/// `limit` on series, labels and label values cuts the answer and says so, as Prometheus
/// does; a bad limit is a 400 naming the parameter.
#[test]
fn limit_cuts_series_labels_and_values_with_a_warning() {
    let env = Env::new();
    let daemon = start_probewatch(&env);
    for path in [
        "/api/v1/series?match%5B%5D=probe_check_status&limit=1",
        "/api/v1/labels?limit=1",
        "/api/v1/label/probe/values?limit=1",
    ] {
        let (status, body) = send(&daemon.base, &get(path));
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            body["data"].as_array().map(Vec::len),
            Some(1),
            "{path}: {body}"
        );
        assert_eq!(
            body["warnings"][0], "results truncated due to limit",
            "{path}"
        );
    }
    let (_, body) = send(&daemon.base, &get("/api/v1/label/probe/values?limit=2"));
    assert!(body.get("warnings").is_none(), "nothing was cut: {body}");
    let (status, body) = send(&daemon.base, &get("/api/v1/labels?limit=-1"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorType"], "bad_data");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("limit")),
        "{body}"
    );
    daemon.stop();
}
