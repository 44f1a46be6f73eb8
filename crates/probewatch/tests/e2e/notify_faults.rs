//! Receivers that misbehave: one that never answers, one that answers an error with a
//! gigabyte body, a command that never reads its input and leaves a child behind. None may
//! delay a healthy receiver, hold the daemon's memory, or outlive its timeout; a refusal is
//! recorded as failed instead of retried for days.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// Accepts connections and never answers (keeps them open).
fn hanging_receiver() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

/// Answers 400 with a 1.5 GB body, written for as long as the client reads; counts the bytes
/// it managed to send.
fn huge_error_receiver() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = read_request(&stream);
            let total: u64 = 1_500_000_000;
            let _ = write!(
                stream,
                "HTTP/1.1 400 Bad Request\r\nContent-Length: {total}\r\n\r\nno such route. "
            );
            let chunk = vec![b'x'; 1 << 20];
            let mut written = 0u64;
            while written < total {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                written += chunk.len() as u64;
                counter.store(written, Ordering::SeqCst);
            }
        }
    });
    (url, sent)
}

const RULES: &str = r#"
groups:
  - name: probes
    interval: 1h
    rules:
      - alert: LoginCritical
        expr: probe_check_status{check="login"} == 2
"#;

const GROUPS: usize = 20;

#[test]
fn a_misbehaving_receiver_delays_no_other_and_is_bounded() {
    let env = Env::new();
    let good = Webhook::start(0);
    let good_url = good.url.clone();
    let hang_url = hanging_receiver();
    let (huge_url, huge_sent) = huge_error_receiver();
    let pids = env.dir.path().join("pids");
    let rules = env.dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).expect("rules");
    // The command never reads its input, starts a child that would outlive it, and sleeps.
    let script = format!(
        "echo $$ >> {p}; sleep 600 & echo $! >> {p}; sleep 600",
        p = pids.display()
    );
    let config = format!(
        r#"rule_files = [{rules:?}]
[[receiver]]
name = "good"
url = {good_url:?}
[[receiver]]
name = "hang"
url = {hang_url:?}
timeout = "5s"
[[receiver]]
name = "huge"
url = {huge_url:?}
[[receiver]]
name = "script"
command = ["sh", "-c", {script:?}]
timeout = "2s"
[[route]]
receiver = "good"
group_by = ["probe"]
continue = true
[[route]]
receiver = "hang"
group_by = ["probe"]
continue = true
[[route]]
receiver = "huge"
group_by = ["probe"]
continue = true
[[route]]
receiver = "script"
group_by = ["probe"]
[[spool]]
path = {spool:?}
"#,
        rules = rules.display().to_string(),
        spool = env.spool().display().to_string(),
    );
    let daemon = env.start_with_config(&config);
    let written = Instant::now();
    for i in 0..GROUPS {
        std::fs::write(
            env.spool().join(format!("p{i}.xml")),
            format!(
                r#"<probe name="p{i}" host="h" time="{}"><check name="login" status="critical"/></probe>"#,
                epoch_secs()
            ),
        )
        .expect("write");
    }
    // Delivered one after another, the hanging receiver alone would hold the healthy one's
    // 20 groups back by 20 x 5 s; in lanes of their own they arrive as if it were not there.
    let deadline = Instant::now() + Duration::from_secs(60);
    while good.received().len() < GROUPS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let arrived = good.received().len();
    assert_eq!(arrived, GROUPS, "the healthy receiver got {arrived} groups");
    let last = good
        .bodies
        .lock()
        .expect("lock")
        .iter()
        .map(|(t, _)| *t)
        .max();
    let took = last.map(|t| t - written).unwrap_or_default();
    eprintln!("healthy receiver: all {GROUPS} groups within {took:?} of the files");
    assert!(
        took < Duration::from_secs(30),
        "the healthy receiver waited {took:?}: something delays it"
    );

    // The 400 with a huge body: refused for good, recorded as failed, body not read.
    daemon.wait_until("the huge answer recorded", Duration::from_secs(60), |d| {
        let outbox = d.get("/api/v1/notifications");
        outbox["data"].as_array().is_some_and(|items| {
            items
                .iter()
                .filter(|n| n["receiver"] == "huge")
                .any(|n| n["state"] == "failed")
        })
    });
    let outbox = daemon.get("/api/v1/notifications");
    let huge: Vec<&Value> = outbox["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|n| n["receiver"] == "huge")
        .collect();
    let failed = huge
        .iter()
        .find(|n| n["state"] == "failed")
        .expect("failed");
    let error = failed["lastError"].as_str().expect("error");
    assert!(
        error.contains("400") && error.contains("no such route"),
        "{error}"
    );
    assert!(error.len() < 1_000, "only a prefix of the answer is kept");
    assert_eq!(failed["attempts"], 1, "a 4xx is not retried");
    let peak_kb = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmHWM");
    assert!(peak_kb < 500_000, "peak RSS {peak_kb} kB");
    assert!(
        huge_sent.load(Ordering::SeqCst) < 1_000_000_000,
        "the error body was read to its end"
    );

    // The command: timed out, retried later, and nothing of it left running.
    daemon.wait_until("the command timed out", Duration::from_secs(60), |d| {
        d.log()
            .contains("timed out after 2s; killed its process group")
    });
    std::thread::sleep(Duration::from_millis(500));
    let listed = std::fs::read_to_string(&pids).expect("pids");
    // The first run's shell and its child; the lane has gone on to the next groups since.
    for pid in listed.split_whitespace().take(2) {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie awaiting its (dead) parent's reaper.
        assert!(
            state.is_empty() || state.contains(") Z "),
            "process {pid} of the timed-out command still runs: {state}"
        );
    }

    // The stop does not wait for the receiver that never answers.
    let stopping = Instant::now();
    daemon.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(25),
        "stop took {:?}",
        stopping.elapsed()
    );
}
