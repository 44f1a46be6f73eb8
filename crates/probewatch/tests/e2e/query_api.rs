//! The Prometheus-compatible query API over real ingested files, read with a real HTTP
//! client: the shapes Grafana's Prometheus data source relies on.

use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const T0: i64 = 1_700_000_000;

fn ingested(files: u64) -> (Env, Daemon) {
    let env = Env::new();
    for n in 0..files {
        std::fs::write(env.spool().join(format!("r{n:03}.xml")), result_xml(n)).expect("write");
    }
    let daemon = env.start(&[]);
    daemon.wait_files(files, Duration::from_secs(30));
    (env, daemon)
}

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// GET that may fail: (status code, body).
fn get_any(daemon: &Daemon, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", daemon.base);
    let response = reqwest::blocking::get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().expect("json body"))
}

#[test]
fn instant_and_range_queries_answer_in_prometheus_shape() {
    let (_env, daemon) = ingested(30);
    // The newest result of probe p1 (n = 29, written at T0 + 29).
    let body = daemon.get(&format!(
        "/api/v1/query?query={}&time={}",
        enc(r#"online_users{probe="p1"}"#),
        T0 + 29
    ));
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "vector");
    let result = &body["data"]["result"];
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(result[0]["metric"]["__name__"], "online_users");
    assert_eq!(result[0]["metric"]["probe"], "p1");
    assert_eq!(result[0]["metric"]["host"], "h1");
    assert_eq!(result[0]["value"][0], T0 + 29);
    assert_eq!(result[0]["value"][1], "29");

    // An aggregation over checks, and a scalar.
    let body = daemon.get(&format!(
        "/api/v1/query?query={}&time={}",
        enc("count(probe_check_status == 2)"),
        T0 + 29
    ));
    // Critical results are n = 0, 5, …, 25; the newest per probe is critical for p4 (25),
    // p6 (20), p1? no: p1's newest is 29 (ok). Newest per probe: p0 28, p1 29, p2 23, p3 24,
    // p4 25, p5 26, p6 27 → only p4 (25) is critical.
    assert_eq!(body["data"]["result"][0]["value"][1], "1", "{body}");
    let body = daemon.get(&format!("/api/v1/query?query={}&time={}", enc("1 + 2"), T0));
    assert_eq!(body["data"]["resultType"], "scalar");
    assert_eq!(body["data"]["result"][1], "3");

    // A range query: the sum of every probe's newest value, second by second.
    let body = daemon.get(&format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=1s",
        enc("sum(online_users)"),
        T0,
        T0 + 3
    ));
    assert_eq!(body["data"]["resultType"], "matrix");
    let values = &body["data"]["result"][0]["values"];
    let got: Vec<(f64, String)> = values
        .as_array()
        .expect("values")
        .iter()
        .map(|p| {
            (
                p[0].as_f64().expect("time"),
                p[1].as_str().expect("value").to_string(),
            )
        })
        .collect();
    let want: Vec<(f64, String)> = [(0, "0"), (1, "1"), (2, "3"), (3, "6")]
        .iter()
        .map(|(d, v)| ((T0 + d) as f64, v.to_string()))
        .collect();
    assert_eq!(got, want);

    // POST with a form body, as Grafana sends it.
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/query", daemon.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "query={}&time={}",
            enc("max(online_users)"),
            T0 + 29
        ))
        .send()
        .expect("POST");
    let body: Value = response.json().expect("json");
    assert_eq!(body["data"]["result"][0]["value"][1], "29", "{body}");
    daemon.stop();
}

#[test]
fn series_labels_and_errors() {
    let (_env, daemon) = ingested(14);
    let body = daemon.get(&format!("/api/v1/series?match[]={}", enc("online_users")));
    let series = body["data"].as_array().expect("series");
    assert_eq!(series.len(), 7, "{body}");
    assert!(series.iter().all(|s| s["__name__"] == "online_users"));
    // Outside the time the samples cover, no series.
    let body = daemon.get(&format!(
        "/api/v1/series?match[]={}&start={}&end={}",
        enc("online_users"),
        T0 - 100,
        T0 - 1
    ));
    assert_eq!(body["data"].as_array().map(Vec::len), Some(0), "{body}");

    let body = daemon.get("/api/v1/labels");
    let names: Vec<&str> = body["data"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in ["__name__", "check", "host", "probe", "queue"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let body = daemon.get("/api/v1/label/probe/values");
    let values: Vec<&str> = body["data"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(values, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    // The files' four metrics (and, once the 2023 results count as silent, the daemon's
    // probe_check_stale).
    let body = daemon.get("/api/v1/label/__name__/values");
    let names: Vec<&str> = body["data"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(Value::as_str)
        .filter(|n| *n != "probe_check_stale")
        .collect();
    assert_eq!(names.len(), 4, "{body}");

    // Errors in Prometheus's shape: a syntax error, and an evaluation error.
    let (status, body) = get_any(&daemon, &format!("/api/v1/query?query={}", enc("sum(")));
    assert_eq!(status, 400);
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "bad_data");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    let (status, body) = get_any(
        &daemon,
        &format!(
            "/api/v1/query?query={}&time={}",
            enc(r#"label_replace(online_users, "probe", "x", "", "")"#),
            T0 + 13
        ),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution");
    let (status, body) = get_any(
        &daemon,
        &format!(
            "/api/v1/query_range?query=up&start={T0}&end={}&step=0",
            T0 + 1
        ),
    );
    assert_eq!(
        (status, &body["errorType"]),
        (400, &Value::from("bad_data"))
    );
    daemon.stop();
}
